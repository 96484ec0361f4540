//! atrest's test bed: a real etcd and real kube-apiservers per test (never imitations), the one
//! way to run the atrest binary, and the leak check every run goes through.
//!
//! | module | concern |
//! |---|---|
//! | [`proc`] | the real binaries, free ports, [`Proc`] (killed on drop, on panic, with the test process) |
//! | [`files`] | private (0600) atomic writes |
//! | [`tls`] | apiserver and etcd certificates |
//! | [`control_plane`] | [`ControlPlane`]: etcd, apiservers, config, access, atrest runs |
//! | [`kms`] | the KMS v2 test plugin |
//! | [`age`] | the reference age tool: keys, encryption and decryption by an implementation not atrest's |
//! | [`fixtures`] | keys, configs, namespaces, secrets, names |
//! | [`cli`] | finding and running atrest: one environment scrub, one check after each run |
//! | [`prometheus`] | a real Prometheus on loopback, and a plain HTTP GET |
//! | [`leak`] | keys and secret values that must never appear in atrest's output or files |
//! | [`objects`] | whole objects (API and opened etcd bytes) before and after: "nothing lost" |
//! | [`corpus`] | config cases shared by the parser tests and the apiserver-as-oracle test |
//! | [`webhook`] | a real admission webhook server that denies updates, and its configuration |
//! | [`promises_b`] | the engine promises: stored labels, APF throttling (real 429s), KMS `Decrypt` counts |
//!
//! Run atrest with `ControlPlane::atrest` (config and etcd flags), `ControlPlane::atrest_command`
//! (plus kubeconfig and state folder) then `output`/`wait`/`run_restarting`, or, for runs not
//! aimed at a control plane, [`atrest()`](cli::atrest). Each checks stdout, stderr, `--out`
//! files and the state folders against [`leak`]'s list.

pub mod age;
pub mod cli;
pub mod control_plane;
pub mod corpus;
pub mod files;
pub mod fixtures;
pub mod kms;
pub mod leak;
pub mod objects;
pub mod proc;
pub mod prometheus;
pub mod promises_a;
pub mod promises_b;
pub mod reports;
pub mod scan_json;
pub mod tls;
pub mod webhook;

pub use cli::{atrest, check, resource, text};
pub use control_plane::{ApiServer, ControlPlane, ETCD_PREFIX, IDENTITY_CONFIG, Options};
pub use files::write_private;
pub use fixtures::{
    aescbc, aescbc_block, b64, create_namespace, create_secrets, encryption_config, key1_cluster,
    key1_secrets_cluster, names, random_key_b64, secrets_and_configmaps, secrets_config,
    secrets_only,
};
pub use kms::KmsPlugin;
pub use leak::{check_file, check_state_dir, register_key, register_key_bytes, register_value};
pub use objects::{CONFIGMAPS, GADGETS, Objects, SECRETS, create_rich_objects, gadget_ar};
pub use proc::{
    K8S_VERSION, Proc, bin_dir, etcd_minor, etcd_version, free_port, kube_apiserver_version,
    kube_minor,
};
pub use reports::Reports;
pub use tls::EtcdTls;
