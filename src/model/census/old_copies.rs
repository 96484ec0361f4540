//! The old copies a census finds beyond the current values: in a db file's keys, etcd's
//! history, free pages, members' unused space and backup files.

use std::collections::BTreeMap;

use crate::model::{KeyLabel, Residue, Sample, State};

/// Where a key that values of a db file are stored under can be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    /// In the EncryptionConfiguration given.
    Config,
    /// Only in the key archive given (`--key-archive`).
    Archive,
    /// In neither: the values under it cannot be opened with what was given.
    Missing,
    /// Held by a KMS plugin (ask the KMS for it).
    Kms,
    /// Plaintext: no key.
    None,
}

impl KeySource {
    /// The words every output uses.
    pub fn describe(self) -> &'static str {
        match self {
            KeySource::Config => "in the config",
            KeySource::Archive => "only in the key archive",
            KeySource::Missing => "MISSING: neither in the config nor in a key archive given",
            KeySource::Kms => "held by the KMS plugin",
            KeySource::None => "plaintext, no key",
        }
    }
}

/// A key a db file needs to be read, by label and fingerprint (never its material).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyNeeded {
    /// `aescbc:key1`, `identity`, `kms:v2:vault`.
    pub label: KeyLabel,
    /// Fingerprints of the local keys with that provider and name (`sha256:…`), from the config
    /// or the archive; empty when missing or not a local key.
    pub fingerprints: Vec<String>,
    /// Where it was found.
    pub source: KeySource,
    /// Current values stored under it.
    pub current_values: u64,
    /// Older values (history) stored under it, when history was read.
    pub older_values: u64,
}

/// The db file section of an offline scan.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotSection {
    /// Which file, its sha256 and revision.
    pub file: DbInfo,
    /// Every key its values are stored under, and where that key was found.
    pub keys_needed: Vec<KeyNeeded>,
}

/// One etcd member's db file: its size and the part in use.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberDb {
    /// The member's name.
    pub name: String,
    /// The client URL asked.
    pub endpoint: String,
    /// Bytes of its db file.
    pub db_size: i64,
    /// Bytes in use by the current tree; the rest is free pages that may still hold old
    /// values until `etcdctl defrag`.
    pub db_size_in_use: i64,
}

impl MemberDb {
    /// Bytes a defragmentation gives back (and old copies it wipes).
    pub fn free_bytes(&self) -> i64 {
        (self.db_size - self.db_size_in_use).max(0)
    }
}

/// A backup file atrest found (its own snapshots folder, a snapshot a rotation recorded, a
/// `--backup-dir`), and what it still holds, judged by the current config.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackupFile {
    /// The file.
    pub path: std::path::PathBuf,
    /// Where it was found.
    pub found_in: FoundIn,
    /// The rotation that took it, when one records it (`2026…Z, finished` / `…, in progress`);
    /// `None`: no rotation record names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<String>,
    /// It is the restore point of the rotation in progress: never removed.
    #[serde(default)]
    pub in_progress: bool,
    /// It is on disk.
    pub exists: bool,
    /// Its size in bytes.
    #[serde(default)]
    pub size: u64,
    /// The etcd revision of its newest values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Current values in it stored as plaintext where the config now encrypts.
    #[serde(default)]
    pub plaintext: u64,
    /// Current values in it under a key the config no longer has for their resource.
    #[serde(default)]
    pub retired_key: u64,
    /// Why it could not be read, when it could not (a compressed or damaged file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackupFile {
    /// Copies in it that are residue ([`crate::model::Residue`]).
    pub fn residue(&self) -> u64 {
        self.plaintext + self.retired_key
    }

    /// `FILE (revision N, found in …; taken by rotation …)`: how every output names it.
    pub fn describe(&self) -> String {
        let rev = self
            .revision
            .map(|r| format!("revision {r}, "))
            .unwrap_or_default();
        let whose = match &self.recorded_by {
            Some(r) => format!("taken by rotation {r}"),
            None => "no rotation record names it".to_string(),
        };
        format!(
            "{} ({rev}{} bytes, found in {}; {whose})",
            self.path.display(),
            self.size,
            self.found_in
        )
    }

    /// What it holds, in words.
    pub fn holds(&self) -> String {
        if !self.exists {
            return "no longer on disk".to_string();
        }
        if let Some(e) = &self.error {
            return format!("could not be read: {e}");
        }
        format!(
            "{} values stored as plaintext where the config now encrypts, {} under keys the config no longer has",
            self.plaintext, self.retired_key
        )
    }
}

/// Where a backup file was found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FoundIn {
    /// atrest's own snapshots folder (`<state dir>/snapshots`).
    SnapshotsFolder,
    /// A rotation record names it (written where `rotate prepare --snapshot FILE` said).
    RotationRecord,
    /// A folder of backups taken elsewhere (`--backup-dir`).
    BackupDir {
        /// The folder.
        dir: std::path::PathBuf,
    },
}

impl std::fmt::Display for FoundIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FoundIn::SnapshotsFolder => f.write_str("atrest's snapshots folder"),
            FoundIn::RotationRecord => f.write_str("a rotation record"),
            FoundIn::BackupDir { dir } => write!(f, "--backup-dir {}", dir.display()),
        }
    }
}

/// What identifies a data file in a report: enough to find the same file again and to tell it
/// was not changed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DbInfo {
    /// The path as given.
    pub path: String,
    /// Bytes in the file.
    pub size: u64,
    /// `sha256:` + hex of the whole file.
    pub sha256: String,
    /// The store's revision: the newest revision in the file (or the compaction mark, when
    /// newer).
    pub revision: i64,
    /// The oldest revision in the file.
    pub oldest_revision: i64,
    /// The last finished compaction recorded in the file (0: never compacted).
    pub compact_revision: i64,
    /// Revisions (values and tombstones) of every key in the file.
    pub revisions: u64,
    /// Bytes per page.
    pub page_size: u32,
    /// Pages in use or free (the bbolt high-water mark).
    pub pages: u64,
}

/// An older revision of an object, by name (never its data).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryRef {
    /// The etcd key.
    pub key: String,
    /// The revision of this copy.
    pub revision: i64,
}

/// Older values of one resource under one key, in one state.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryGroup {
    /// The group resource.
    pub resource: String,
    /// The key the copies are under (`identity` for plaintext).
    pub stored_as: KeyLabel,
    /// How they are stored.
    pub state: State,
    /// Why they matter, when they do ([`Residue::of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residue: Option<Residue>,
    /// How many older values (exact).
    pub values: u64,
    /// The oldest of their revisions.
    pub first_revision: i64,
    /// The newest of their revisions.
    pub last_revision: i64,
    /// `etcdctl compact` at this revision (or later) drops every one of them: each was
    /// superseded, by a newer write or a delete, at or before it.
    pub dropped_by_compaction_at: i64,
    /// Which objects, capped; `total` equals `values`.
    pub sample: Sample<HistoryRef>,
}

impl HistoryGroup {
    /// `secrets identity plaintext: 120 older values, revisions 213..332, dropped by a
    /// compaction at 461 — residue (plaintext)`: the one line every output shows for a group.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {}: {} older values, revisions {}..{}, dropped by a compaction at {}{}",
            self.resource,
            self.stored_as,
            self.state.as_str(),
            self.values,
            self.first_revision,
            self.last_revision,
            self.dropped_by_compaction_at,
            residue_tag(self.residue)
        )
    }
}

/// ` — residue (plaintext)`, or nothing: how every line marks residue.
pub fn residue_tag(residue: Option<Residue>) -> String {
    residue
        .map(|r| format!(" — residue ({})", r.as_str()))
        .unwrap_or_default()
}

/// What etcd's history holds besides the current values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryReport {
    /// The oldest revision read: etcd's compaction revision live (0: never compacted), the
    /// oldest revision of a db file.
    pub from_revision: i64,
    /// The revision the history was read up to.
    pub to_revision: i64,
    /// Older values (superseded by a newer write or a delete) of the covered resources.
    pub older_values: u64,
    /// Of those, copies that are residue: plaintext where the config encrypts, or under a key
    /// the config no longer has.
    pub residue: u64,
    /// The smallest compaction revision that drops every residue copy; `None` without residue.
    pub compact_to_drop_residue: Option<i64>,
    /// Per resource, key and state.
    pub groups: Vec<HistoryGroup>,
}

impl HistoryReport {
    /// The residue groups only.
    pub fn residue_groups(&self) -> impl Iterator<Item = &HistoryGroup> {
        self.groups.iter().filter(|g| g.residue.is_some())
    }
}

/// Copies of stored values of one resource under one key, in one state, found in free pages.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FreeGroup {
    /// The group resource.
    pub resource: String,
    /// The key the copies are under (`identity` for plaintext).
    pub stored_as: KeyLabel,
    /// How they are stored (read by prefix and key name; never decrypted).
    pub state: State,
    /// Why they matter, when they do ([`Residue::of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residue: Option<Residue>,
    /// Copies found (a value freed several times is counted each time).
    pub copies: u64,
}

impl FreeGroup {
    /// `secrets identity plaintext: 40 copies — residue (plaintext)`.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {}: {} copies{}",
            self.resource,
            self.stored_as,
            self.state.as_str(),
            self.copies,
            residue_tag(self.residue)
        )
    }
}

/// What the free pages of a db file still hold.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FreePages {
    /// Pages in the file (bbolt's high-water mark).
    pub pages: u64,
    /// Pages outside the current tree: what `etcdctl defrag` would give back.
    pub free_pages: u64,
    /// Free pages that still parse as leaf pages of etcd's `key` bucket.
    pub leaf_pages: u64,
    /// Value copies in those leaf pages, per resource, key and state.
    pub values: Vec<FreeGroup>,
    /// Of those copies, residue: plaintext where the config encrypts, or under a key the config
    /// does not have.
    pub residue: u64,
    /// In the other free pages: how often byte patterns of stored values occur
    /// (`plaintext-protobuf` for `k8s\0`, `encrypted:<provider>` for `k8s:enc:<provider>:`,
    /// `json:<kind>` for a JSON object's kind).
    pub patterns: BTreeMap<String, u64>,
}
