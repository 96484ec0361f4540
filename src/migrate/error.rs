//! Why a re-encryption run stops, each with what to do next.

use std::path::PathBuf;
use std::time::Duration;

use super::{CheckpointError, PreflightRefusal};
use crate::etcd::EtcdError;
use crate::kube::KubeError;
use crate::model::KeyLabel;

/// Why a re-encryption run stopped. Progress up to the failure is in the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading etcd failed (after retrying transient errors for the run's patience).
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// Talking to the apiserver failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The checkpoint could not be read, does not match the config, or could not be saved.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The check before the first write refused, for example because an apiserver has not loaded
    /// the config.
    #[error(transparent)]
    Preflight(PreflightRefusal),
    /// The apiserver's RBAC does not let atrest PATCH this resource; the message names the rule to
    /// grant.
    #[error(
        "the apiserver refused to PATCH {resource} {object}: {message}\n  atrest needs this RBAC rule: apiGroups: [\"{group}\"], resources: [\"{plural}\"], verbs: [\"patch\"]\n  (with \"update\" as well, atrest rewrites built-in objects with the cheaper protobuf PUT)\n  Progress is saved in {checkpoint}; grant the rule and run again."
    )]
    Forbidden {
        /// The resource, as the config names it (`secrets`, `deployments.apps`).
        resource: String,
        /// The object refused, `namespace/name`.
        object: String,
        /// The API group the RBAC rule must name (empty for the core group).
        group: String,
        /// The resource (plural, as in the URL) the RBAC rule must name.
        plural: String,
        /// The apiserver's own message.
        message: String,
        /// Where progress was saved, so the next run resumes there.
        checkpoint: PathBuf,
    },
    /// An apiserver wrote the object with a key other than the write key: it is still on an older
    /// config. Carrying on would only rewrite objects to the old key.
    #[error(
        "the apiserver at {url} wrote {resource} {object} but etcd still shows it under {stored_as}, not the write key {write_key}: that apiserver has not loaded this config (it reports config hash {reported}; the file {config} is {file_hash}).\n  Wait until every apiserver reports the file's hash (automatic reload polls once a minute; without it, restart them), then run again."
    )]
    NotLoaded {
        /// The apiserver that handled the write.
        url: String,
        /// The resource, as the config names it (`secrets`, `deployments.apps`).
        resource: String,
        /// The object, `namespace/name`.
        object: String,
        /// The key label etcd shows after the write.
        stored_as: String,
        /// The key label the config says new writes use.
        write_key: KeyLabel,
        /// The config hash that apiserver reports loading (from its metrics).
        reported: String,
        /// The config file atrest read.
        config: PathBuf,
        /// The `sha256:` hash of that file, which every apiserver should report.
        file_hash: String,
    },
    /// The apiserver answered no request (connection errors, 429, 5xx) for the whole patience:
    /// an outage, not a failure of the objects, so none was given up. The objects not finished
    /// are left for the next run, and the checkpoint's cursor stops before them.
    #[error(
        "apiserver unreachable: {url} answered no request for {} s (last error: {last_error}).\n  No object was given up; progress is saved in {checkpoint}.",
        .waited.as_secs()
    )]
    ApiserverUnreachable {
        /// The apiserver written to.
        url: String,
        /// How long nothing was answered before the run stopped.
        waited: Duration,
        /// The last failure seen.
        last_error: String,
        /// Where progress was saved, so the next run resumes there.
        checkpoint: PathBuf,
    },
}
