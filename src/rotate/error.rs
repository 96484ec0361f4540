//! What can stop a rotation step, with the context an admin needs: which step, which stage was
//! expected and found, which provider or apiserver.

use std::fmt;
use std::path::{Path, PathBuf};

use super::journal::JournalError;
use super::state::{self, Stage};
use crate::config::{ConfigError, EditError};
use crate::etcd::EtcdError;
use crate::fsutil;
use crate::keys::{self, archive};
use crate::kube::KubeError;
use crate::kube::canary::CanaryError;
use crate::kube::converge::{Awaited, ConvergeError, NotConverged};
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
    #[error("no rotation in progress (state {}): `atrest rotate {step}` continues one", .state.display())]
    NoRotation { step: Step, state: PathBuf },
    #[error(
        "`atrest rotate {step}` needs stage {expected}, but the rotation to {target} is at {found}: the next step is `{}`",
        .found.next_command()
    )]
    WrongStage {
        step: Step,
        expected: Stage,
        found: Stage,
        target: String,
    },
    #[error(
        "a rotation to {target} is already at stage {stage}: its next step is `{}`",
        .stage.next_command()
    )]
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
    #[error("{}", not_converged(.source, *.automatic_reload, .config_path))]
    NotConverged {
        #[source]
        source: NotConverged,
        /// From the manifest: whether the apiservers reload the config by themselves.
        automatic_reload: Option<bool>,
        config_path: PathBuf,
    },
    #[error(
        "prune refused: {count} stored objects are not on their write key, so their keys are still needed:\n{}\n  Run `atrest rotate reencrypt` again (or `atrest reencrypt`), then prune.",
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

impl RotateError {
    pub(super) fn from_converge(
        e: ConvergeError,
        automatic_reload: Option<bool>,
        config_path: &Path,
    ) -> Self {
        match e {
            ConvergeError::Kube(k) => RotateError::Kube(k),
            ConvergeError::NotConverged(source) => RotateError::NotConverged {
                source,
                automatic_reload,
                config_path: config_path.to_path_buf(),
            },
        }
    }
}

/// The wait's outcome and what to do about it.
fn not_converged(e: &NotConverged, automatic_reload: Option<bool>, path: &Path) -> String {
    let mut out = e.to_string();
    if !e.unreached.is_empty() {
        out.push_str(
            "\n  Pass --apiserver URL for every apiserver that atrest does not find by itself.",
        );
    }
    out.push('\n');
    out.push_str(&match (&e.awaited, automatic_reload) {
        (Awaited::KmsKeyIds, _) => "  kube-apiserver asks the plugin's Status about once a minute; wait, then run the same command again.".to_string(),
        (Awaited::Config { .. }, Some(false)) => "  Restart the lagging kube-apiservers so they load the file, then run the same command again.".to_string(),
        (Awaited::Config { .. }, _) => format!("  Make sure {} is the same on every control-plane node; a reload failure shows in apiserver_encryption_config_controller_automatic_reloads_total{{status=\"failure\"}}. Then run the same command again.", path.display()),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_stage_names_the_step_both_stages_and_the_next_command() {
        let e = RotateError::WrongStage {
            step: Step::Prune,
            expected: Stage::Reencrypted,
            found: Stage::Promoted,
            target: "aescbc:k2".into(),
        };
        assert_eq!(
            e.to_string(),
            "`atrest rotate prune` needs stage reencrypted, but the rotation to aescbc:k2 is at promoted: the next step is `atrest rotate reencrypt`"
        );
    }
}
