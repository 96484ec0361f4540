//! The rotation state file (`rotation.json` in the state folder): where a rotation stands, the
//! config hash atrest expects, and when each key was added, promoted and retired. Labels,
//! fingerprints, hashes and times only: never key material.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::STATE_FILE;
use crate::config::RuleLayout;
use crate::model::KeyLabel;
use crate::model::time::{Time, rfc3339, rfc3339_opt};
use crate::{GroupResource, fsutil};

/// The state file format this atrest reads and writes; another version is refused rather than
/// guessed at.
pub const STATE_VERSION: u32 = 1;

/// The stage a rotation is in; each step refuses to run out of order.
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

    /// The command that moves a rotation at this stage on, as the admin would type it.
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
    /// Where the snapshot file was written (0600).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the file, to check it before a restore.
    pub sha256: String,
    /// The etcd revision when it was taken: it holds at least every write up to this one.
    pub revision: i64,
    /// When it was taken.
    #[serde(with = "rfc3339")]
    pub taken: Time,
    /// When `rotate prune --remove-snapshots` deleted it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub removed: Option<Time>,
}

/// A config write that was started: if atrest stops between writing the file and recording
/// it (or the sync command failed in between), the next run finds the file at `hash`, runs the
/// sync command again and completes the step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingWrite {
    /// `sha256:<hex>` of the file being written.
    pub hash: String,
    /// The step that writes it; a rerun of that step finishes it and goes on from there
    /// (`None` in state files written before atrest recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// The stage the write completes (`None`: it finishes the rotation).
    pub stage: Option<Stage>,
    /// The new file's keys per rule, expected once the write is committed.
    pub layout: Vec<RuleLayout>,
}

/// A rotation command, named in errors so the admin knows which step refused, and in a pending
/// config write so that a rerun of that step finishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// `atrest rotate prepare`: the new key becomes a read key everywhere.
    Prepare,
    /// `atrest rotate promote`: the new key becomes the write key.
    Promote,
    /// `atrest rotate reencrypt`: every object is rewritten with the write key.
    Reencrypt,
    /// `atrest rotate prune`: keys no stored value uses are removed and archived.
    Prune,
    /// `atrest rotate abort`: the rotation is undone as far as it safely can be.
    Abort,
    /// `atrest rotate adopt`: a config edited by hand during a rotation becomes the one it
    /// continues from.
    Adopt,
}

impl Step {
    /// The subcommand name, as typed after `atrest rotate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Prepare => "prepare",
            Step::Promote => "promote",
            Step::Reencrypt => "reencrypt",
            Step::Prune => "prune",
            Step::Abort => "abort",
            Step::Adopt => "adopt",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rotation, from prepare until prune (or abort) finishes it; then it moves to the history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    /// When it started, `YYYYMMDDTHHMMSSZ`; also names its default snapshot file.
    pub id: String,
    /// What the rotation moves to: `aescbc:key-…`, `kms:v2:name`, `identity`.
    pub target: KeyLabel,
    /// The new key's fingerprint (local keys only), to recognise it later without its material.
    pub target_fingerprint: Option<String>,
    /// The rules (`resources[i]`) it edits, and every resource those rules name.
    pub rules: Vec<usize>,
    /// Every resource those rules name: they share keys, so all of them are rewritten.
    pub resources: Vec<GroupResource>,
    /// Rule index → its write key before the rotation (for abort).
    pub previous_write_keys: BTreeMap<usize, KeyLabel>,
    /// Where it stands; the next step must start from here.
    pub stage: Stage,
    /// When prepare began.
    #[serde(with = "rfc3339")]
    pub started: Time,
    /// When the new key became a read key.
    #[serde(default, with = "rfc3339_opt")]
    pub prepared_at: Option<Time>,
    /// When the new key became the write key.
    #[serde(default, with = "rfc3339_opt")]
    pub promoted_at: Option<Time>,
    /// When every object was proven rewritten.
    #[serde(default, with = "rfc3339_opt")]
    pub reencrypted_at: Option<Time>,
    /// When the last config write of the rotation (prune, or abort before promote) was
    /// committed.
    #[serde(default, with = "rfc3339_opt")]
    pub finished_at: Option<Time>,
    /// The etcd snapshot taken before the first change, to restore from if all else fails.
    pub snapshot: Option<SnapshotRecord>,
    /// The admin chose `--no-snapshot`; reports show there was nothing to restore from.
    pub snapshot_skipped: bool,
    /// Abort demoted the target again; finishing removes it.
    pub aborted: bool,
    /// Labels removed by prune.
    pub retired: Vec<KeyLabel>,
    /// The config file as it was before prepare (a copy in the backups folder): abort before
    /// promote puts these exact bytes back, and any later write whose keys are the same as
    /// theirs writes them, so the admin's comments and formatting survive a round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<ConfigBefore>,
    /// Every step that moved the rotation on: when, who, where, and what it proved (the
    /// rotation log auditors ask for). Empty in states written before atrest kept it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<StepRecord>,
}

/// One step of a rotation as the log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub step: Step,
    /// When it was committed.
    #[serde(with = "rfc3339")]
    pub at: Time,
    /// Who ran it: the user behind sudo when there is one, else the process's user.
    pub user: String,
    /// The host it ran on.
    pub host: String,
    /// What it recorded as proof: the config hash it wrote, or the objects it rewrote and proved.
    pub proof: String,
}

impl StepRecord {
    /// A record of `step` now, by this process's user on this host.
    pub fn now(step: Step, proof: String) -> StepRecord {
        StepRecord {
            step,
            at: crate::model::time::now(),
            user: operator(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            proof,
        }
    }
}

/// Who runs atrest: `SUDO_USER` (the person behind sudo), else the name of the process's user
/// in /etc/passwd, else its uid.
fn operator() -> String {
    if let Ok(u) = std::env::var("SUDO_USER")
        && !u.is_empty()
    {
        return u;
    }
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
    });
    name.unwrap_or_else(|| format!("uid {uid}"))
}

/// A copy of the config file as it was before a rotation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigBefore {
    /// The copy (in the state folder's backups, 0600).
    pub path: PathBuf,
    /// `sha256:<hex>` of its bytes: the hash the apiservers reported before the rotation.
    pub hash: String,
}

/// When a key was added, promoted and retired (for key-age checks in reports).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    /// The key's fingerprint (local keys only; KMS and identity have none).
    pub fingerprint: Option<String>,
    /// When a rotation added it as a read key.
    #[serde(default, with = "rfc3339_opt")]
    pub added: Option<Time>,
    /// When it became the write key.
    #[serde(default, with = "rfc3339_opt")]
    pub promoted: Option<Time>,
    /// When prune removed it from the config.
    #[serde(default, with = "rfc3339_opt")]
    pub retired: Option<Time>,
    /// etcd's revision when promote wrote the config that made it the write key: every write
    /// since then has a higher revision (the basis of the aesgcm write estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_revision: Option<i64>,
    /// When another key replaced it as the write key.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub demoted: Option<Time>,
    /// When prune put it in the key archive (local keys only).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub archived: Option<Time>,
}

impl KeyRecord {
    /// Since when the key has been in use: see [`key_in_use_since`].
    pub fn in_use_since(&self) -> Option<Time> {
        key_in_use_since(self.promoted, self.added)
    }
}

/// The one rule for a key's age (report check ATR-C07, the exporter's `atrest_key_age_seconds`,
/// `rotate run --if-older-than`): measured from when it became the write key, else from when it
/// was added.
pub fn key_in_use_since(promoted: Option<Time>, added: Option<Time>) -> Option<Time> {
    promoted.or(added)
}

/// Everything `rotation.json` records: the config atrest expects, the rotation in progress,
/// the finished ones, and each key's dates.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RotationState {
    /// The file format ([`STATE_VERSION`]).
    pub version: u32,
    /// The encryption config file this state belongs to.
    pub config_path: PathBuf,
    /// The hash of the config file as atrest last wrote (or accepted) it.
    pub expected_hash: Option<String>,
    /// The keys per rule of that file, to tell the admin what differs when it changed.
    pub expected_layout: Vec<RuleLayout>,
    /// A config write started but not yet committed; the next run completes or drops it.
    pub pending: Option<PendingWrite>,
    /// The rotation in progress, if any.
    pub rotation: Option<Rotation>,
    /// Finished and aborted rotations, oldest first.
    pub history: Vec<Rotation>,
    /// Key label → record.
    pub keys: BTreeMap<KeyLabel, KeyRecord>,
}

/// Why the rotation state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file is unreadable, not valid JSON, or of another format version.
    #[error("cannot read rotation state {path}: {message}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The state folder or file could not be written.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
}

impl RotationState {
    /// Whether atrest recorded anything here: a config it expects or a finished rotation.
    pub fn records_anything(&self) -> bool {
        self.expected_hash.is_some() || !self.history.is_empty()
    }

    /// The last rotation finished (pruned, not aborted) and none is in progress.
    pub fn finished(&self) -> bool {
        self.rotation.is_none() && self.history.last().is_some_and(|r| !r.aborted)
    }

    /// The state file of the state folder `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state in `dir`, or a fresh one when there is none yet.
    pub fn load(dir: &Path, config_path: &Path) -> Result<RotationState, StateError> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let s: RotationState =
                    serde_json::from_str(&text).map_err(|e| StateError::Read {
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RotationState {
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

    /// Writes the state to `dir` atomically (0600), creating the folder if needed.
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
