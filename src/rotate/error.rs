//! What can stop a rotation step, with the context an admin needs: which step, which stage was
//! expected and found, which provider or apiserver.

use std::fmt;
use std::path::PathBuf;

use super::journal::JournalError;
use super::state::{self, Stage};
use crate::config::{ConfigError, EditError};
use crate::etcd::EtcdError;
use crate::fsutil;
use crate::keys::{self, archive};
use crate::kube::KubeError;
use crate::kube::canary::CanaryError;
use crate::kube::converge::{ConvergeError, NotConverged};
use crate::migrate::MigrateError;

/// A rotation command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Prepare,
    Promote,
    Reencrypt,
    Prune,
    Abort,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Prepare => "prepare",
            Step::Promote => "promote",
            Step::Reencrypt => "reencrypt",
            Step::Prune => "prune",
            Step::Abort => "abort",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("no rotation in progress (state {})", .state.display())]
    NoRotation { step: Step, state: PathBuf },
    #[error(
        "`atrest rotate {step}` needs stage {expected}, but the rotation to {target} is at {found}"
    )]
    WrongStage {
        step: Step,
        expected: Stage,
        found: Stage,
        target: String,
    },
    #[error("a rotation to {target} is already at stage {stage}")]
    AlreadyRotating { target: String, stage: Stage },
    /// The requested end state is already there (a re-run after the rotation finished).
    #[error("{label} is already the write key of every rule it would touch: nothing to rotate")]
    NothingToDo { label: String },
    #[error("a key named {name} already exists for {label}")]
    KeyNameTaken { name: String, label: String },
    #[error(
        "KMS plugin {provider} at {endpoint} reports healthz {healthz:?}, not \"ok\": not promoting"
    )]
    KmsUnhealthy {
        provider: String,
        endpoint: String,
        healthz: String,
    },
    #[error("{url}/readyz/kms-providers answers {status}: {body}: not promoting")]
    KmsNotReady {
        url: String,
        status: u16,
        body: String,
    },
    #[error(transparent)]
    NotConverged(NotConverged),
    #[error(
        "prune refused: {count} stored objects are not on their write key, so their keys are still needed:\n{}",
        .objects.iter().map(|o| format!("  - {o}")).collect::<Vec<_>>().join("\n")
    )]
    PruneRefused { count: u64, objects: Vec<String> },
    #[error(
        "abort refused: {count} stored objects already use {target}, so it cannot be removed: {}",
        .objects.join("; ")
    )]
    TargetInUse {
        target: String,
        count: u64,
        objects: Vec<String>,
    },
    #[error(
        "reencrypt did not finish: {given_up} objects given up, {remaining} still not on their write key: {}",
        .sample.join("; ")
    )]
    Incomplete {
        given_up: u64,
        remaining: u64,
        /// At most 20 of them.
        sample: Vec<String>,
    },
    #[error("interrupted; run the same command again to continue")]
    Interrupted,
    #[error(transparent)]
    Canary(Box<CanaryError>),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Migrate(Box<MigrateError>),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Kms(#[from] crate::kms::KmsError),
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
}

impl From<MigrateError> for RotateError {
    fn from(e: MigrateError) -> Self {
        RotateError::Migrate(Box::new(e))
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
            target: "aescbc:k2".into(),
        };
        assert_eq!(
            e.to_string(),
            "`atrest rotate prune` needs stage reencrypted, but the rotation to aescbc:k2 is at promoted"
        );
    }
}
