//! One module per rotation step; each is a method of [`super::Rotator`].

mod abort;
mod adopt;
mod prepare;
mod promote;
mod prune;
mod reencrypt;
mod run;
