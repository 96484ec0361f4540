//! Rotation on a schedule: whether a write key is due (`atrest rotate run --if-older-than`), and
//! the lock that keeps two runs (a timer firing while an admin runs a step) from ever working
//! on one state folder at once.

use std::collections::BTreeSet;
use std::fs::TryLockError;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::State;
use crate::GroupResource;
use crate::config::EncryptionConfig;
use crate::keys::KeyProvider;
use crate::model::{KeyLabel, covered_resources};

/// One write key and why it is (or is not) due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDue {
    /// The write key.
    pub label: KeyLabel,
    /// It must be rotated now.
    pub due: bool,
    /// In words, for the admin's log: its age and, for aesgcm, its write estimate.
    pub why: String,
}

/// What the limits say of the write keys a rotation would replace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Each distinct write key of the covered resources.
    pub keys: Vec<KeyDue>,
}

impl Schedule {
    /// Any key is due.
    pub fn due(&self) -> bool {
        self.keys.iter().any(|k| k.due)
    }
}

/// The limits a scheduled rotation holds the write keys to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A write key older than this is due.
    pub max_age: std::time::Duration,
    /// An aesgcm write key with more writes than this (estimated) is due.
    pub aesgcm_max_writes: u64,
}

/// Which write keys of `resources` (empty: every resource the config names, and secrets) are
/// due under `limits`, at `now` and etcd revision `revision`. Age is measured as everywhere
/// else ([`super::state::key_in_use_since`]); a key the state has no date for is of unknown age
/// and counts as due, as does an identity write key (nothing is encrypted). The aesgcm write
/// estimate is the etcd revisions since promote recorded (an upper bound: every etcd write
/// counts).
pub fn schedule(
    config: &EncryptionConfig,
    resources: &[GroupResource],
    state: &State,
    limits: Limits,
    now: DateTime<Utc>,
    revision: i64,
) -> Schedule {
    let labels: BTreeSet<KeyLabel> = covered_resources(config.named_resources(), resources)
        .iter()
        .map(|gr| config.resolve(gr).write_key())
        .collect();
    let max_age = chrono::Duration::from_std(limits.max_age).unwrap_or(chrono::Duration::MAX);
    let keys = labels
        .into_iter()
        .map(|label| {
            if !label.encrypts() {
                return KeyDue {
                    why: "identity is the write key: nothing is encrypted".into(),
                    due: true,
                    label,
                };
            }
            let record = state.keys.get(&label);
            let mut why = Vec::new();
            let mut due = false;
            match record.and_then(|r| r.in_use_since()) {
                Some(since) => {
                    let age = now - since;
                    due |= age > max_age;
                    why.push(format!(
                        "write key for {} (limit {})",
                        days(age),
                        days(max_age)
                    ));
                }
                None => {
                    due = true;
                    why.push(
                        "age unknown (not promoted by atrest, or no rotation state): treated as old"
                            .into(),
                    );
                }
            }
            let aesgcm = matches!(
                label,
                KeyLabel::Key {
                    provider: KeyProvider::Aesgcm,
                    ..
                }
            );
            if aesgcm && let Some(base) = record.and_then(|r| r.promoted_revision) {
                let writes = revision.saturating_sub(base).max(0) as u64;
                due |= writes > limits.aesgcm_max_writes;
                why.push(format!(
                    "at most {writes} writes since promote (limit {})",
                    limits.aesgcm_max_writes
                ));
            }
            KeyDue {
                label,
                due,
                why: why.join("; "),
            }
        })
        .collect();
    Schedule { keys }
}

fn days(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs >= 86_400 {
        format!("{:.1} days", secs as f64 / 86_400.0)
    } else {
        format!("{:.1} hours", secs as f64 / 3600.0)
    }
}

/// The lock file in the state folder.
pub const LOCK_FILE: &str = "rotate.lock";

/// Held while a rotation step runs; released when dropped (and by the kernel when the process
/// dies, so a killed run never leaves it stuck).
#[derive(Debug)]
pub struct RotationLock {
    _file: std::fs::File,
}

/// Another atrest holds the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another rotate step runs on this state folder.
    #[error(
        "another `atrest rotate` is running on {path} ({holder}); nothing was started: run this again once it has finished"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl RotationLock {
    /// Takes the state folder's lock without waiting (creating the folder, 0700 when new).
    pub fn acquire(state_dir: &Path) -> Result<RotationLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if !state_dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(io)?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "holder unknown".into());
                return Err(LockError::Busy { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message of the one refused (no secret in it).
        file.set_len(0).map_err(io)?;
        write!(
            file,
            "pid {} since {}",
            std::process::id(),
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .map_err(io)?;
        Ok(RotationLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotate::KeyRecord;

    fn config(yaml_providers: &str) -> EncryptionConfig {
        let yaml = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{yaml_providers}"
        );
        crate::config::parse_str(Path::new("enc.yaml"), &yaml).unwrap()
    }

    const AESGCM: &str = "      - aesgcm:\n          keys:\n            - name: k1\n              secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n      - identity: {}\n";

    fn state(promoted: DateTime<Utc>, revision: i64) -> State {
        let mut st = State::default();
        st.keys.insert(
            "aesgcm:k1".parse().unwrap(),
            KeyRecord {
                promoted: Some(promoted),
                promoted_revision: Some(revision),
                ..Default::default()
            },
        );
        st
    }

    const LIMITS: Limits = Limits {
        max_age: std::time::Duration::from_secs(7 * 86_400),
        aesgcm_max_writes: 200_000,
    };

    #[test]
    fn a_young_key_below_the_write_limit_is_not_due() {
        let now = Utc::now();
        let s = schedule(
            &config(AESGCM),
            &[],
            &state(now - chrono::Duration::days(2), 100),
            LIMITS,
            now,
            1100,
        );
        assert_eq!(s.keys.len(), 1);
        assert!(!s.due(), "{s:?}");
        assert!(s.keys[0].why.contains("at most 1000 writes"), "{s:?}");
    }

    #[test]
    fn an_old_key_is_due() {
        let now = Utc::now();
        let s = schedule(
            &config(AESGCM),
            &[],
            &state(now - chrono::Duration::days(8), 100),
            LIMITS,
            now,
            200,
        );
        assert!(s.due(), "{s:?}");
    }

    #[test]
    fn an_aesgcm_key_past_its_write_limit_is_due_however_young() {
        let now = Utc::now();
        let s = schedule(
            &config(AESGCM),
            &[],
            &state(now - chrono::Duration::hours(1), 100),
            LIMITS,
            now,
            200_101,
        );
        assert!(s.due(), "{s:?}");
    }

    #[test]
    fn a_key_of_unknown_age_and_identity_are_due() {
        let now = Utc::now();
        let s = schedule(&config(AESGCM), &[], &State::default(), LIMITS, now, 1);
        assert!(s.due());
        let s = schedule(
            &config("      - identity: {}\n"),
            &[],
            &State::default(),
            LIMITS,
            now,
            1,
        );
        assert!(s.due());
    }

    #[test]
    fn the_lock_refuses_a_second_holder_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = RotationLock::acquire(dir.path()).unwrap();
        let second = RotationLock::acquire(dir.path()).unwrap_err();
        assert!(
            second
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        drop(first);
        // Another test of this process forking a command can hold an inherited copy of the
        // descriptor until its exec closes it: wait for that, not for a fixed time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match RotationLock::acquire(dir.path()) {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::yield_now();
                }
                Err(e) => panic!("the lock was not released: {e}"),
            }
        }
    }
}
