//! atrest: prove how a Kubernetes cluster stores its Secrets in etcd, and move it safely from one
//! encryption state to another.
//!
//! The layers are described in `docs/design.md`; dependencies point one way: commands → engines
//! (`migrate`, `rotate`, `report`, `exporter`) → `cluster` → sources (`etcd`, `kube`, `kms`) →
//! `codec` → `config` → `keys`, with `model` (the words every layer shares) below them all. The
//! design document lists, from the code, the three places that still cross these lines.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod codec;
pub mod config;
pub mod etcd;
pub mod exporter;
pub mod fsutil;
pub mod keys;
pub mod kms;
pub mod kube;
pub mod migrate;
pub mod model;
pub mod report;
pub mod rotate;
pub mod state;

/// Kubernetes' group/resource pair, as the apiserver's `schema.GroupResource`.
mod group_resource;
pub use group_resource::{GroupResource, join as join_resources};
