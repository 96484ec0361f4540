//! What can stop a rotation step, with the context an admin needs: which step, which stage was
//! expected and found, which provider or apiserver.

use std::path::PathBuf;

use super::canary::CanaryError;
use super::journal::JournalError;
use crate::config::{ConfigError, EditError};
use crate::etcd::EtcdError;
use crate::fsutil;
use crate::keys::{self, archive, custody};
use crate::kms::KmsError;
use crate::kube::KubeError;
use crate::kube::converge::{ConvergeError, NotConverged};
use crate::migrate::MigrateError;
use crate::model::KeyLabel;
use crate::state::{self, Stage, Step};

/// Why a rotation step stopped. Config writes go through the journal, so the config and the
/// state stay consistent: once the cause is fixed, the same command can be run again.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The encryption config cannot be read, or the apiserver would refuse it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Loading or writing the config through the journal failed; this includes a config file
    /// changed behind atrest's back since it last wrote it.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A step other than prepare ran while the state file records no rotation in progress.
    #[error("no rotation in progress (state {})", .state.display())]
    NoRotation {
        /// The command that was run.
        step: Step,
        /// The state file that was read.
        state: PathBuf,
    },
    /// A step was run out of order: the rotation is at another stage than the step needs.
    #[error(
        "`atrest rotate {step}` needs stage {expected}, but the rotation to {target} is at {found}"
    )]
    WrongStage {
        /// The command that was run.
        step: Step,
        /// The stage that command starts from.
        expected: Stage,
        /// The stage the rotation is at; its next command is the one to run.
        found: Stage,
        /// What the rotation moves to, as a key label.
        target: KeyLabel,
    },
    /// `prepare` ran while another rotation is in progress: finish or abort that one first.
    #[error("a rotation to {target} is already at stage {stage}")]
    AlreadyRotating {
        /// What the rotation in progress moves to, as a key label.
        target: KeyLabel,
        /// The stage it is at.
        stage: Stage,
    },
    /// The requested end state is already there (a re-run after the rotation finished).
    #[error("{label} is already the write key of every rule it would touch: nothing to rotate")]
    NothingToDo {
        /// The key label the rotation would move to.
        label: KeyLabel,
    },
    /// `prepare` was asked for a new key whose name a rule it edits already has for that
    /// provider; two keys with one name could not be told apart in stored values.
    #[error("a key named {name} already exists for {label}")]
    KeyNameTaken {
        /// The requested key name.
        name: String,
        /// Its key label, already in the config.
        label: KeyLabel,
    },
    /// Before a KMS provider is promoted, its plugin's `Status` did not answer healthz `ok`:
    /// writes through it would fail.
    #[error(
        "KMS plugin {provider} at {endpoint} reports healthz {healthz:?}, not \"ok\": not promoting"
    )]
    KmsUnhealthy {
        /// The KMS provider name in the config.
        provider: String,
        /// The plugin's socket.
        endpoint: String,
        /// What the plugin answered.
        healthz: String,
    },
    /// Before a KMS provider is promoted, an apiserver's `/readyz/kms-providers` check did not
    /// pass: that apiserver cannot use the plugin yet.
    #[error("{url}/readyz/kms-providers answers {status}: {body}: not promoting")]
    KmsNotReady {
        /// The apiserver asked.
        url: String,
        /// Its HTTP status.
        status: u16,
        /// Its answer, trimmed: which KMS check failed.
        body: String,
    },
    /// An apiserver runs a Kubernetes release atrest cannot prove a config on (before 1.34 it
    /// does not export `last_config_info`); refused before anything is written.
    #[error(
        "refusing to rotate: {}",
        .apiservers.join("; ")
    )]
    UnsupportedApiserver {
        /// One line per such apiserver: its URL (and lease) and why.
        apiservers: Vec<String>,
    },
    /// Within the wait timeout, not every apiserver loaded the config atrest wrote (or saw the
    /// KMS plugins' current key IDs); it names the ones that lag.
    #[error(transparent)]
    NotConverged(NotConverged),
    /// `prune` found stored objects not on their write key, or values of a resource whose own
    /// rule lacks a key prune would remove: the keys it would remove still open them. Reencrypt
    /// again (or give that resource its rule back), then prune.
    #[error(
        "prune refused: {count} stored objects are not on their write key or still need a key prune would remove:\n{}",
        .objects.iter().map(|o| format!("  - {o}")).collect::<Vec<_>>().join("\n")
    )]
    PruneRefused {
        /// How many objects the scan found (all are counted).
        count: u64,
        /// The first of them, with their key and state.
        objects: Vec<String>,
    },
    /// `abort` of a prepared rotation found objects already stored with the new key; removing
    /// it would leave them unreadable.
    #[error(
        "abort refused: {count} stored objects already use {target}, so it cannot be removed: {}",
        .objects.join("; ")
    )]
    TargetInUse {
        /// The new key's label.
        target: KeyLabel,
        /// How many objects use it (all are counted).
        count: u64,
        /// The first of them, by name.
        objects: Vec<String>,
    },
    /// `adopt` found that the edited config would lose what the rotation or the stored data
    /// needs; nothing was changed.
    #[error("adopt refused: {reason}{}", objects_list(.objects))]
    AdoptRefused {
        /// What the edit breaks.
        reason: String,
        /// Objects it would leave unreadable, when that is the reason (the first few).
        objects: Vec<String>,
    },
    /// `abort` before promote would restore the config as it was before prepare, but some
    /// stored values need a key that file does not have (written since, with a key added by
    /// hand): nothing was changed.
    #[error(
        "abort refused: {count} stored values need a key the config before prepare ({}) does not have:{}",
        .before.display(),
        objects_list(.objects)
    )]
    RestoreRefused {
        /// The copy of the config before prepare.
        before: PathBuf,
        /// How many values (all are counted).
        count: u64,
        /// The first of them.
        objects: Vec<String>,
    },
    /// `reencrypt` finished its pass, but some objects were given up (refused, or still failing
    /// after retries) or etcd still shows objects not on their write key.
    #[error(
        "reencrypt did not finish: {given_up} objects given up, {remaining} still not on their write key: {}",
        .sample.join("; ")
    )]
    Incomplete {
        /// Objects the pass stopped retrying.
        given_up: u64,
        /// Objects etcd still shows not on their write key after the pass.
        remaining: u64,
        /// At most 20 of them.
        sample: Vec<String>,
    },
    /// `reencrypt` was stopped (a signal such as Ctrl-C) before it finished; the checkpoint lets
    /// the same command continue where it stopped.
    #[error("interrupted; run the same command again to continue")]
    Interrupted,
    /// After promote, a canary written through an apiserver was not stored with the new write
    /// key, or could not be written at all.
    #[error(transparent)]
    Canary(Box<CanaryError>),
    /// The config edit a step needs was refused (a rule that is gone, a key that is not a read
    /// key, or a write key that would be removed).
    #[error(transparent)]
    Edit(#[from] EditError),
    /// Reading etcd failed: a proof scan, the snapshot, or a canary read-back.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// A request to the Kubernetes API failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The re-encryption pass failed before it could finish.
    #[error(transparent)]
    Migrate(Box<MigrateError>),
    /// StorageVersionMigration (`--engine svm`) could not be used or followed.
    #[error(transparent)]
    Svm(Box<crate::migrate::svm::SvmError>),
    /// The rotation state file cannot be read or written.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Retired keys could not be added to the key archive; prune stops before the config
    /// forgets them.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// The state folder seals retired keys, and sealing failed (the config still has them).
    #[error(transparent)]
    Custody(#[from] custody::CustodyError),
    /// A KMS plugin the config names cannot be reached.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// A file atrest writes could not be written.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    /// The new key could not be generated.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
}

fn objects_list(objects: &[String]) -> String {
    objects.iter().map(|o| format!("\n  - {o}")).collect()
}

impl From<MigrateError> for RotateError {
    fn from(e: MigrateError) -> Self {
        RotateError::Migrate(Box::new(e))
    }
}

impl From<crate::migrate::svm::SvmError> for RotateError {
    fn from(e: crate::migrate::svm::SvmError) -> Self {
        RotateError::Svm(Box::new(e))
    }
}

impl From<CanaryError> for RotateError {
    fn from(e: CanaryError) -> Self {
        RotateError::Canary(Box::new(e))
    }
}

impl From<ConvergeError> for RotateError {
    fn from(e: ConvergeError) -> Self {
        match e {
            ConvergeError::Kube(k) => RotateError::Kube(k),
            ConvergeError::NotConverged(n) => RotateError::NotConverged(n),
        }
    }
}

impl From<NotConverged> for RotateError {
    fn from(e: NotConverged) -> Self {
        RotateError::NotConverged(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_stage_names_the_step_and_both_stages() {
        let e = RotateError::WrongStage {
            step: Step::Prune,
            expected: Stage::Reencrypted,
            found: Stage::Promoted,
            target: "aescbc:k2".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "`atrest rotate prune` needs stage reencrypted, but the rotation to aescbc:k2 is at promoted"
        );
    }
}
