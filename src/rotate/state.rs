//! The rotation state file (`rotation.json` in the state folder): where a rotation stands, the
//! config hash atrest expects, and when each key was added, promoted and retired. Labels,
//! fingerprints, hashes and times only: never key material.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::RuleLayout;
use crate::fsutil;

pub const STATE_FILE: &str = "rotation.json";
pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The new key is a read key everywhere the rotation touches.
    Prepared,
    /// The new key is the write key.
    Promoted,
    /// Every object of the rotation's resources was rewritten and proven in etcd.
    Reencrypted,
}

impl Stage {
    /// The name as serialized in the state file and reports: `prepared`, `promoted`,
    /// `reencrypted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prepared => "prepared",
            Stage::Promoted => "promoted",
            Stage::Reencrypted => "reencrypted",
        }
    }

    pub fn next_command(self) -> &'static str {
        match self {
            Stage::Prepared => "atrest rotate promote",
            Stage::Promoted => "atrest rotate reencrypt",
            Stage::Reencrypted => "atrest rotate prune",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An etcd snapshot taken before the first change of a rotation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRecord {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub revision: i64,
    pub taken: String,
}

/// A config write that was started: if atrest stops between writing the file and recording
/// it, the next run finds the file at `hash` and completes the step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingWrite {
    pub hash: String,
    pub stage: Option<Stage>,
    pub layout: Vec<RuleLayout>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    pub id: String,
    /// What the rotation moves to: `aescbc:key-…`, `kms:v2:name`, `identity`.
    pub target: String,
    pub target_fingerprint: Option<String>,
    /// The rules (`resources[i]`) it edits, and every resource those rules name.
    pub rules: Vec<usize>,
    pub resources: Vec<String>,
    /// Rule index → its write key before the rotation (for abort).
    pub previous_write_keys: BTreeMap<usize, String>,
    pub stage: Stage,
    pub started: String,
    pub prepared_at: Option<String>,
    pub promoted_at: Option<String>,
    pub reencrypted_at: Option<String>,
    pub finished_at: Option<String>,
    pub snapshot: Option<SnapshotRecord>,
    pub snapshot_skipped: bool,
    /// Abort demoted the target again; finishing removes it.
    pub aborted: bool,
    /// Labels removed by prune.
    pub retired: Vec<String>,
}

/// When a key was added, promoted and retired (for key-age checks in reports).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    pub fingerprint: Option<String>,
    pub added: Option<String>,
    pub promoted: Option<String>,
    pub retired: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub version: u32,
    pub config_path: PathBuf,
    /// The hash of the config file as atrest last wrote (or accepted) it.
    pub expected_hash: Option<String>,
    pub expected_layout: Vec<RuleLayout>,
    pub pending: Option<PendingWrite>,
    pub rotation: Option<Rotation>,
    pub history: Vec<Rotation>,
    /// Key label → record.
    pub keys: BTreeMap<String, KeyRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read rotation state {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state in `dir`, or a fresh one when there is none yet.
    pub fn load(dir: &Path, config_path: &Path) -> Result<State, StateError> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let s: State = serde_json::from_str(&text).map_err(|e| StateError::Read {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                if s.version != STATE_VERSION {
                    return Err(StateError::Read {
                        path,
                        message: format!(
                            "version {} (this atrest reads {STATE_VERSION})",
                            s.version
                        ),
                    });
                }
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: STATE_VERSION,
                config_path: config_path.to_path_buf(),
                ..Default::default()
            }),
            Err(e) => Err(StateError::Read {
                path,
                message: e.to_string(),
            }),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        std::fs::create_dir_all(dir).map_err(|source| fsutil::WriteError {
            path: dir.to_path_buf(),
            source,
        })?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| StateError::Read {
            path: Self::path(dir),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(&Self::path(dir), &text, 0o600)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_its_serde_names() {
        for stage in [Stage::Prepared, Stage::Promoted, Stage::Reencrypted] {
            assert_eq!(
                serde_json::to_value(stage).unwrap(),
                serde_json::Value::from(stage.as_str())
            );
            assert_eq!(stage.to_string(), stage.as_str());
        }
    }
}
