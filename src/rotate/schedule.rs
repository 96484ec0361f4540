//! Rotation on a schedule: whether a write key is due (`atrest rotate run --if-older-than`). The
//! lock that keeps two runs from working on one state folder at once is
//! [`crate::state::RotationLock`].

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::GroupResource;
use crate::config::EncryptionConfig;
use crate::model::KeyProvider;
use crate::model::{KeyLabel, covered_resources};
use crate::state::{Rotation, RotationState};

use super::{RotateError, Rotator};
use crate::state::Stage;

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

/// What `rotate run --if-older-than` decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// A rotation is in progress: it is resumed whatever the keys' ages.
    InProgress(Box<Rotation>),
    /// No rotation in progress: what the limits say of each write key.
    Scheduled(Schedule),
}

impl Due {
    /// The rotation runs.
    pub fn due(&self) -> bool {
        match self {
            Due::InProgress(_) => true,
            Due::Scheduled(s) => s.due(),
        }
    }
}

impl Rotator<'_> {
    /// Whether `rotate run --if-older-than` runs now: a rotation in progress is resumed;
    /// otherwise only when a write key of `resources` it would replace is past `limits`.
    pub async fn due(
        &self,
        config: &EncryptionConfig,
        resources: &[GroupResource],
        limits: Limits,
    ) -> Result<Due, RotateError> {
        let st = RotationState::load(&self.state_dir, &self.config_path)?;
        if let Some(r) = st.rotation {
            return Ok(Due::InProgress(Box::new(r)));
        }
        let revision = super::snapshot::current_revision(self.etcd).await?;
        Ok(Due::Scheduled(schedule(
            config,
            resources,
            &st,
            limits,
            Utc::now(),
            revision,
        )))
    }

    /// `prune --remove-snapshots` with nothing to prune (no rotation in progress, or one not
    /// yet re-encrypted) only removes snapshots: those of finished rotations, never the restore
    /// point of the rotation in progress.
    pub fn prune_only_removes_snapshots(&self) -> Result<bool, RotateError> {
        Ok(RotationState::load(&self.state_dir, &self.config_path)?
            .rotation
            .is_none_or(|r| r.stage != Stage::Reencrypted))
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
/// else ([`crate::state::key_in_use_since`]); a key the state has no date for is of unknown age
/// and counts as due, as does an identity write key (nothing is encrypted). The aesgcm write
/// estimate is the etcd revisions since promote recorded (an upper bound: every etcd write
/// counts).
pub fn schedule(
    config: &EncryptionConfig,
    resources: &[GroupResource],
    state: &RotationState,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::state::KeyRecord;

    fn config(yaml_providers: &str) -> EncryptionConfig {
        let yaml = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{yaml_providers}"
        );
        crate::config::parse_str(Path::new("enc.yaml"), &yaml).unwrap()
    }

    const AESGCM: &str = "      - aesgcm:\n          keys:\n            - name: k1\n              secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n      - identity: {}\n";

    fn state(promoted: DateTime<Utc>, revision: i64) -> RotationState {
        let mut st = RotationState::default();
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
        let s = schedule(
            &config(AESGCM),
            &[],
            &RotationState::default(),
            LIMITS,
            now,
            1,
        );
        assert!(s.due());
        let s = schedule(
            &config("      - identity: {}\n"),
            &[],
            &RotationState::default(),
            LIMITS,
            now,
            1,
        );
        assert!(s.due());
    }
}
