//! The re-encryption checkpoint: where each key range is done up to, and the counters. Range
//! reads are ordered by key, so "every key up to here is done" is the whole cursor. It holds no
//! object data and no key material: key labels, etcd keys and numbers only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::KeyLabel;
use crate::model::time::{Time, rfc3339};
use crate::{GroupResource, fsutil};

/// The checkpoint format this atrest writes and reads; another version is refused rather than
/// misread.
pub const CHECKPOINT_VERSION: u32 = 1;

/// What happened to the targeted objects, per resource or in total. The same numbers appear in
/// `atrest reencrypt` output and the checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Objects the scan found not on their write key.
    pub targeted: u64,
    /// Rewrite requests sent (each attempt), PUT or PATCH.
    pub writes: u64,
    /// Of `writes`, the protobuf PUTs of the stored object (the rest are merge PATCHes).
    #[serde(default)]
    pub put_writes: u64,
    /// Rewritten by the apiserver (resourceVersion moved).
    pub rewritten: u64,
    /// Of `rewritten`, by a protobuf PUT (the rest by a merge PATCH).
    #[serde(default)]
    pub rewritten_by_put: u64,
    /// Found already on the write key when re-checked after a conflict.
    pub already_current: u64,
    /// 409 answers, each re-checked in etcd.
    pub conflicts: u64,
    /// Deleted before they could be rewritten.
    pub gone: u64,
    /// Accepted by the apiserver without a write (it did not see them as stale).
    pub unchanged: u64,
    /// Given up after the maximum attempts or a permanent refusal.
    pub given_up: u64,
}

impl Counters {
    /// Adds another set of counters to this one (to total the resources).
    pub fn add(&mut self, o: &Counters) {
        self.targeted += o.targeted;
        self.writes += o.writes;
        self.put_writes += o.put_writes;
        self.rewritten += o.rewritten;
        self.rewritten_by_put += o.rewritten_by_put;
        self.already_current += o.already_current;
        self.conflicts += o.conflicts;
        self.gone += o.gone;
        self.unchanged += o.unchanged;
        self.given_up += o.given_up;
    }
}

/// The saved progress of a re-encryption run, as JSON. Written atomically, so a crash leaves the
/// previous save, never half a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// The config file this run re-encrypts for, and its `sha256:` hash.
    pub config_path: PathBuf,
    /// `sha256:` of the config file's bytes; a resume under another config is refused.
    pub config_hash: String,
    /// Resource → its write key label when the run started (`aescbc:key2`).
    pub write_keys: BTreeMap<GroupResource, KeyLabel>,
    /// Range start (an etcd key prefix) → the last etcd key done in it.
    pub cursors: BTreeMap<String, String>,
    /// Resource → counters.
    pub counters: BTreeMap<GroupResource, Counters>,
    /// Objects given up on (namespace/name and why), capped.
    pub given_up: Vec<String>,
    /// When the first run of this checkpoint started.
    #[serde(with = "rfc3339")]
    pub started: Time,
    /// When it was last saved.
    #[serde(with = "rfc3339")]
    pub updated: Time,
    /// The last run read every range to the end, not interrupted or stopped by an error.
    pub finished: bool,
}

/// Why a checkpoint could not be used or saved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint file could not be read (with `--resume`, it must exist).
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        /// The checkpoint path.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// Not JSON of an atrest checkpoint, or of another checkpoint version.
    #[error("checkpoint {path} is not an atrest checkpoint: {message}")]
    Parse {
        /// The checkpoint path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The config changed since the checkpoint was made, so its cursors may skip objects that now
    /// need the new write key.
    #[error(
        "checkpoint {path} was made for config {old_hash}, but {config} is now {new_hash}: the write keys may have changed, so its progress no longer applies.\n  Start a new pass instead (already re-encrypted objects are skipped: only what etcd shows is not on the write key is rewritten)."
    )]
    ConfigChanged {
        /// The checkpoint path.
        path: PathBuf,
        /// The config file read now.
        config: PathBuf,
        /// The config hash stored in the checkpoint.
        old_hash: String,
        /// The hash of the config file now.
        new_hash: String,
    },
    /// The checkpoint could not be written.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    /// Too little room to keep the checkpoint: refused before the first rewrite.
    #[error(transparent)]
    NoRoom(#[from] fsutil::NoRoom),
}

impl Checkpoint {
    /// Reads a checkpoint to resume from; refuses another format version.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| CheckpointError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "version {} (this atrest reads {CHECKPOINT_VERSION})",
                    cp.version
                ),
            });
        }
        Ok(cp)
    }

    /// Refuses a checkpoint made for another config.
    pub fn check_config(
        &self,
        path: &Path,
        config: &Path,
        hash: &str,
    ) -> Result<(), CheckpointError> {
        if self.config_hash != hash {
            return Err(CheckpointError::ConfigChanged {
                path: path.to_path_buf(),
                config: config.to_path_buf(),
                old_hash: self.config_hash.clone(),
                new_hash: hash.to_string(),
            });
        }
        Ok(())
    }

    /// Saves atomically, creating the directory if needed; a new file gets mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| fsutil::WriteError {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(|e| CheckpointError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(path, &text, 0o600)?;
        Ok(())
    }

    /// Before a resumed run: keeps what earlier runs finished (rewritten, already current, gone)
    /// and forgets the objects they did not (given up, in flight at a stop, accepted without a
    /// write). The cursor never passed those, so the resumed run targets and counts them again;
    /// `targeted` counts each object once. `writes` and `conflicts` keep adding up.
    pub fn forget_unfinished(&mut self) {
        for c in self.counters.values_mut() {
            c.targeted = c.rewritten + c.already_current + c.gone;
            c.given_up = 0;
            c.unchanged = 0;
        }
        self.given_up.clear();
    }

    /// The counters of all resources added up.
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for c in self.counters.values() {
            t.add(c);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint written before its maps and times were typed (times with nanoseconds and
    /// `+00:00`, resources by name) still loads, and is saved back in the same JSON shape.
    #[test]
    fn an_older_checkpoint_still_loads_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let old = r#"{"version":1,"config_path":"/etc/enc.yaml","config_hash":"sha256:00",
            "write_keys":{"secrets":"aescbc:key2","deployments.apps":"identity"},
            "cursors":{"/registry/secrets/":"/registry/secrets/a/b"},
            "counters":{"secrets":{"targeted":3,"writes":2,"rewritten":2,"already_current":1,
                "conflicts":0,"gone":0,"unchanged":0,"given_up":0}},
            "given_up":[],"started":"2026-12-01T10:00:00.123456789+00:00",
            "updated":"2026-12-01T10:05:00+00:00","finished":false}"#;
        std::fs::write(&path, old).unwrap();
        let cp = Checkpoint::load(&path).unwrap();
        assert_eq!(
            cp.write_keys[&GroupResource::secrets()],
            "aescbc:key2".parse::<KeyLabel>().unwrap()
        );
        assert!(
            cp.write_keys
                .contains_key(&GroupResource::parse("deployments.apps"))
        );
        assert_eq!(cp.counters[&GroupResource::secrets()].rewritten, 2);
        assert_eq!(cp.started.timestamp(), 1_796_119_200);
        cp.save(&path).unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["write_keys"]["secrets"], "aescbc:key2");
        assert_eq!(saved["started"], "2026-12-01T10:00:00Z");
        let damaged = old.replace("2026-12-01T10:05:00+00:00", "yesterday");
        std::fs::write(&path, damaged).unwrap();
        assert!(Checkpoint::load(&path).is_err());
    }
}
