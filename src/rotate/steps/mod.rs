//! One module per rotation step; each is a method of [`super::Rotator`].

mod abort;
mod prepare;
mod promote;
mod prune;
mod reencrypt;
mod run;
