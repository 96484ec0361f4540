//! Resolved settings: flags, environment and the apiserver's static-pod manifest merged into
//! one value that remembers where each setting came from.
