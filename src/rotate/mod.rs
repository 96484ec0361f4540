//! The key-rotation runbook as a guarded state machine: prepare (new key readable everywhere)
//! → promote (new key writes) → reencrypt (every object rewritten, proven in etcd) → prune (old
//! keys removed only after a fresh scan shows nothing uses them, and archived). Each step checks
//! that every apiserver runs the config it expects, records where it is, and can be re-run
//! after a crash at any point.
//!
//! - [`state`]: the state file; [`journal`]: crash-safe config writes;
//! - [`steps`]: one module per step; [`guard`]: what the apiservers and KMS plugins must show
//!   before a step goes on; [`proof`]: the etcd scans that prove what is stored where.

mod error;
mod guard;
pub mod journal;
mod proof;
pub mod snapshot;
pub mod state;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{RotateError, Step};
pub use journal::{ConfigChanged, Journal, JournalError};
pub use state::{KeyRecord, PendingWrite, Rotation, SnapshotRecord, Stage, State};

use crate::GroupResource;
use crate::config::EncryptionConfig;
use crate::keys::KeyProvider;
use crate::kube::Apiservers;
use crate::migrate::ReencryptOptions;

pub const ARCHIVE_FILE: &str = "key-archive.yaml";
pub const CHECKPOINT_FILE: &str = "reencrypt-checkpoint.json";

/// What `prepare` moves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Key(KeyProvider),
    KmsV2 {
        name: String,
        endpoint: String,
        timeout: Option<String>,
    },
    Identity,
}

#[derive(Clone, Debug)]
pub enum SnapshotChoice {
    /// In the state folder.
    Default,
    Path(PathBuf),
    Skip,
}

#[derive(Clone, Debug)]
pub struct PrepareRequest {
    pub target: TargetSpec,
    pub key_name: Option<String>,
    /// Empty: every resource the config names (and secrets).
    pub resources: Vec<GroupResource>,
    pub snapshot: SnapshotChoice,
}

/// Where the rotation runs and how patient it is.
pub struct Rotator<'a> {
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub etcd: &'a etcd_client::Client,
    pub etcd_prefix: String,
    pub apiservers: Apiservers,
    pub wait_timeout: Duration,
    /// From the manifest: whether the apiserver reloads the config by itself.
    pub automatic_reload: Option<bool>,
    pub canary_namespace: String,
    /// Template for the re-encryption pass (concurrency, QPS, stop flag).
    pub reencrypt: ReencryptOptions,
    /// Progress messages for the admin (stderr in the CLI).
    pub say: &'a (dyn Fn(&str) + Sync),
}

impl Rotator<'_> {
    fn journal(&self) -> Journal<'_> {
        Journal {
            config_path: &self.config_path,
            state_dir: &self.state_dir,
        }
    }

    fn load_state(&self) -> Result<State, RotateError> {
        Ok(self.journal().load_state()?)
    }

    /// The config, checked to be the file atrest last wrote (see [`Journal::load_checked`]).
    fn load_checked(&self, st: &mut State) -> Result<crate::config::LoadedConfig, RotateError> {
        Ok(self.journal().load_checked(st)?)
    }

    /// Writes a new config through the journal and says where the previous one went.
    fn write_config(
        &self,
        st: &mut State,
        new: &EncryptionConfig,
        stage: Option<Stage>,
    ) -> Result<String, RotateError> {
        let w = self.journal().write(st, new, stage)?;
        if let Some(b) = &w.backup {
            (self.say)(&format!("backup of the previous config: {}", b.display()));
        }
        (self.say)(&format!(
            "wrote {} ({})",
            self.config_path.display(),
            w.hash
        ));
        Ok(w.hash)
    }

    fn rotation<'s>(&self, st: &'s State, step: Step) -> Result<&'s Rotation, RotateError> {
        st.rotation.as_ref().ok_or_else(|| RotateError::NoRotation {
            step,
            state: State::path(&self.state_dir),
        })
    }

    fn require_stage(&self, st: &State, step: Step, expected: Stage) -> Result<(), RotateError> {
        let r = self.rotation(st, step)?;
        if r.stage != expected {
            return Err(RotateError::WrongStage {
                step,
                expected,
                found: r.stage,
                target: r.target.clone(),
            });
        }
        Ok(())
    }
}
