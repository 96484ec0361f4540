//! The key lifecycle and the rotation log of a report: for each key atrest knows (the config,
//! the rotation state, the key archive) what happened to it and when, its age against the
//! cryptoperiod and, for aesgcm, its write budget; for each rotation step when, who, where and
//! what it proved. What was not recorded is said to be missing, never inferred.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Policy, ResourceConfigView};
use crate::keys::archive::ArchivedKey;
use crate::model::time::{Time, rfc3339, rfc3339_opt};
use crate::model::{KeyLabel, KeyProvider};
use crate::state::{KeyRecord, RotationState, Step, key_in_use_since};

/// One key's life, as far as atrest recorded it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyLifecycle {
    /// `aescbc:key1`, `kms:v2:vault`.
    pub label: String,
    /// `sha256:…` of a local key's material.
    pub fingerprint: Option<String>,
    /// Where atrest found it: `config`, `state`, `archive` (any of them).
    pub found_in: Vec<String>,
    /// It is the write key of a covered resource now.
    pub write_key: bool,
    /// When a rotation added it (read key).
    #[serde(default, with = "rfc3339_opt")]
    pub added: Option<Time>,
    /// When it became the write key (first used to write).
    #[serde(default, with = "rfc3339_opt")]
    pub promoted: Option<Time>,
    /// When another key replaced it as the write key.
    #[serde(default, with = "rfc3339_opt")]
    pub demoted: Option<Time>,
    /// When prune removed it from the config.
    #[serde(default, with = "rfc3339_opt")]
    pub retired: Option<Time>,
    /// When prune archived it.
    #[serde(default, with = "rfc3339_opt")]
    pub archived: Option<Time>,
    /// Archived, but the key archive no longer holds it: removed by hand (atrest only appends
    /// to the archive, so when is not recorded). Backups that need it no longer open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed_from_archive: bool,
    /// Where atrest keeps it, when retired: `sealed …` or `plaintext key-archive.yaml (0600)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// Days it has been in use (write key: since promoted, else added), when recorded.
    pub age_days: Option<i64>,
    /// The policy's cryptoperiod (`maxKeyAgeDays`).
    pub cryptoperiod_days: u32,
    /// An aesgcm write key's writes so far (an upper bound: etcd revisions since promote), when
    /// promote recorded the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm_writes: Option<i64>,
    /// The policy's aesgcm write budget, for aesgcm write keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm_budget: Option<u64>,
}

/// Where the state folder keeps retired keys and config backups: sealed to custodians or in
/// plaintext (mode 0600). Counts and fingerprints only.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CustodyView {
    /// `sealed 2 of 3 custodians (sha256:…, …)`, when the state folder has a custody file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// The custodians' recipient fingerprints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Shares needed to open (1: any custodian).
    #[serde(default)]
    pub threshold: usize,
    /// The keys of the sealed archive, as the custody file records them (no material).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed_keys: Vec<ArchivedKey>,
    /// Keys in the plaintext `key-archive.yaml`.
    #[serde(default)]
    pub plaintext_archive_keys: usize,
    /// Config backups sealed (`backups/*.age`).
    #[serde(default)]
    pub sealed_backups: usize,
    /// Config backups in plaintext (mode 0600): each holds every key of its time.
    #[serde(default)]
    pub plaintext_backups: usize,
}

impl CustodyView {
    /// Nothing kept at all (no archive, no backup, no custody file).
    pub fn is_empty(&self) -> bool {
        self.sealed.is_none()
            && self.plaintext_archive_keys == 0
            && self.plaintext_backups == 0
            && self.sealed_backups == 0
    }

    /// Something holds keys in plaintext.
    pub fn plaintext(&self) -> bool {
        self.plaintext_archive_keys > 0 || self.plaintext_backups > 0
    }

    /// One line per place, the same in every format.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = &self.sealed {
            out.push(format!(
                "key archive: {} retired keys {s}",
                self.sealed_keys.len()
            ));
        }
        if self.plaintext_archive_keys > 0 {
            out.push(format!(
                "key archive: {} retired keys in plaintext key-archive.yaml (mode 0600): whoever copies the state folder reads them",
                self.plaintext_archive_keys
            ));
        }
        out.push(format!(
            "config backups: {} sealed, {} in plaintext (mode 0600)",
            self.sealed_backups, self.plaintext_backups
        ));
        out
    }
}

/// One step of a rotation, from the state's log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// The rotation (its start time, `YYYYMMDDTHHMMSSZ`).
    pub rotation: String,
    /// What it moved to.
    pub target: KeyLabel,
    /// The step.
    pub step: Step,
    /// When.
    #[serde(with = "rfc3339")]
    pub at: Time,
    /// Who ran it.
    pub user: String,
    /// Where.
    pub host: String,
    /// What it proved or recorded.
    pub proof: String,
}

/// Every step the state logs, oldest rotation first; rotations from before atrest kept a log
/// have no lines (the report says so).
pub fn rotation_log(state: &RotationState) -> Vec<LogLine> {
    state
        .history
        .iter()
        .chain(state.rotation.iter())
        .flat_map(|r| {
            r.log.iter().map(|s| LogLine {
                rotation: r.id.clone(),
                target: r.target.clone(),
                step: s.step,
                at: s.at,
                user: s.user.clone(),
                host: s.host.clone(),
                proof: s.proof.clone(),
            })
        })
        .collect()
}

/// Every key of the config, the state's records and the archive (`None`: unreadable), with its
/// life.
pub fn lifecycle(
    views: &[ResourceConfigView],
    records: &BTreeMap<KeyLabel, KeyRecord>,
    archive: Option<&[ArchivedKey]>,
    custody: Option<&CustodyView>,
    policy: &Policy,
    etcd_revision: i64,
    now: DateTime<Utc>,
) -> Vec<KeyLifecycle> {
    let mut out: BTreeMap<String, KeyLifecycle> = BTreeMap::new();
    let blank = |label: String, fingerprint: Option<String>| KeyLifecycle {
        label,
        fingerprint,
        found_in: Vec::new(),
        write_key: false,
        added: None,
        promoted: None,
        demoted: None,
        retired: None,
        archived: None,
        removed_from_archive: false,
        kept: None,
        age_days: None,
        cryptoperiod_days: policy.max_key_age_days,
        aesgcm_writes: None,
        aesgcm_budget: None,
    };
    let mut seen = |label: String, fingerprint: Option<String>, source: &str| {
        let k = out
            .entry(label.clone())
            .or_insert_with(|| blank(label, fingerprint.clone()));
        if k.fingerprint.is_none() {
            k.fingerprint = fingerprint;
        }
        if !k.found_in.iter().any(|s| s == source) {
            k.found_in.push(source.to_string());
        }
    };
    let mut write_keys = Vec::new();
    for v in views {
        for (i, k) in v.keys.iter().enumerate() {
            if k.provider != "identity" {
                seen(k.label.clone(), k.fingerprint.clone(), "config");
                if i == 0 {
                    write_keys.push(k.label.clone());
                }
            }
        }
    }
    for (label, r) in records {
        seen(label.to_string(), r.fingerprint.clone(), "state");
    }
    for a in archive.unwrap_or_default() {
        let label = KeyLabel::key(a.provider, &a.name).to_string();
        seen(label, Some(a.fingerprint.clone()), "archive");
    }
    for a in custody
        .map(|c| c.sealed_keys.as_slice())
        .unwrap_or_default()
    {
        let label = KeyLabel::key(a.provider, &a.name).to_string();
        seen(label, Some(a.fingerprint.clone()), "sealed archive");
    }
    for (label, k) in out.iter_mut() {
        k.write_key = write_keys.contains(label);
        let found = |s: &str| k.found_in.iter().any(|f| f == s);
        k.kept = match (found("sealed archive"), found("archive")) {
            (true, _) => custody.and_then(|c| c.sealed.clone()),
            (false, true) => Some("plaintext key-archive.yaml (mode 0600)".into()),
            _ => None,
        };
        let record = records.iter().find(|(l, _)| l.to_string() == *label);
        if let Some((l, r)) = record {
            k.record(l, r, archive.is_some(), policy, etcd_revision, now);
        }
    }
    out.into_values().collect()
}

/// A time as reports print it, or that it was not recorded.
pub fn when(t: Option<Time>) -> String {
    t.map(|t| crate::model::time::format(&t))
        .unwrap_or_else(|| "not recorded".into())
}

impl KeyLifecycle {
    /// What the rotation state recorded of it: its dates, age and, for an aesgcm write key,
    /// the writes since promote. `archive_read`: the archive was read, so a key archived but
    /// kept nowhere now was removed from it.
    fn record(
        &mut self,
        label: &KeyLabel,
        r: &KeyRecord,
        archive_read: bool,
        policy: &Policy,
        etcd_revision: i64,
        now: DateTime<Utc>,
    ) {
        self.added = r.added;
        self.promoted = r.promoted;
        self.demoted = r.demoted;
        self.retired = r.retired;
        self.archived = r.archived;
        self.removed_from_archive = r.archived.is_some() && archive_read && self.kept.is_none();
        self.age_days = key_in_use_since(r.promoted, r.added).map(|t| (now - t).num_days());
        let aesgcm = matches!(
            label,
            KeyLabel::Key {
                provider: KeyProvider::Aesgcm,
                ..
            }
        );
        if self.write_key && aesgcm {
            self.aesgcm_budget = Some(policy.aesgcm_max_writes);
            self.aesgcm_writes = r.promoted_revision.map(|p| (etcd_revision - p).max(0));
        }
    }

    /// When it was archived, and whether the archive still holds it.
    pub fn archived_text(&self) -> String {
        match (&self.kept, self.removed_from_archive) {
            (_, true) => format!(
                "{}; REMOVED from the archive since (by hand: when is not recorded)",
                when(self.archived)
            ),
            (Some(kept), false) => format!("{}; {kept}", when(self.archived)),
            (None, false) => when(self.archived),
        }
    }

    /// Its age against the cryptoperiod, and its aesgcm writes against the budget.
    pub fn standing(&self) -> String {
        let mut s = match self.age_days {
            Some(d) if d > i64::from(self.cryptoperiod_days) => format!(
                "{d} days in use: PAST the {}-day cryptoperiod",
                self.cryptoperiod_days
            ),
            Some(d) => format!(
                "{d} days in use of a {}-day cryptoperiod",
                self.cryptoperiod_days
            ),
            None => "age not recorded (not added by atrest)".into(),
        };
        if let Some(budget) = self.aesgcm_budget {
            match self.aesgcm_writes {
                Some(w) => s.push_str(&format!("; at most {w} of {budget} aesgcm writes")),
                None => s.push_str(&format!("; aesgcm writes not recorded (budget {budget})")),
            }
        }
        s
    }
}
