//! Where old copies of values live besides the current ones, and what opens a db file: the
//! keys a backup needs, and each member's db size against the size in use (the defragmentation
//! indicator: freed pages keep old values until `etcdctl defrag`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::dbfile::DbInfo;
use super::scan::ScanReport;
use super::{EtcdError, EtcdTarget, explain};
use crate::GroupResource;
use crate::config::EncryptionConfig;
use crate::keys::Key;
use crate::model::{KeyLabel, State};

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

/// The keys the values of `report` (current and, when read, history) are stored under.
pub fn keys_needed(
    report: &ScanReport,
    config: &EncryptionConfig,
    archive: &[Arc<Key>],
) -> Vec<KeyNeeded> {
    let mut counts: BTreeMap<String, (KeyLabel, u64, u64, bool)> = BTreeMap::new();
    let mut configured: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &report.resources {
        let resolved = config.resolve(&GroupResource::parse(&r.resource));
        for k in resolved.keys_in_order() {
            let e = configured.entry(k.label.to_string()).or_default();
            if let Some(f) = k.fingerprint
                && !e.contains(&f)
            {
                e.push(f);
            }
        }
        for (label, c) in &r.keys {
            let e = counts
                .entry(label.to_string())
                .or_insert_with(|| (label.clone(), 0, 0, false));
            e.1 += c.total();
            e.3 |= c.unknown_key > 0;
        }
    }
    if let Some(h) = &report.history {
        for g in &h.groups {
            let e = counts
                .entry(g.stored_as.to_string())
                .or_insert_with(|| (g.stored_as.clone(), 0, 0, false));
            e.2 += g.values;
            e.3 |= g.state == State::UnknownKey;
        }
    }
    counts
        .into_values()
        .map(|(label, current, older, unknown)| {
            let archived: Vec<String> = match &label {
                KeyLabel::Key { provider, name } => archive
                    .iter()
                    .filter(|k| k.provider() == *provider && k.name() == name)
                    .map(|k| k.fingerprint().to_string())
                    .collect(),
                _ => Vec::new(),
            };
            let in_config = configured.get(&label.to_string());
            let (source, fingerprints) = match &label {
                KeyLabel::Identity => (KeySource::None, Vec::new()),
                KeyLabel::Kms { .. } => (KeySource::Kms, Vec::new()),
                _ if in_config.is_some() && !unknown => {
                    (KeySource::Config, in_config.cloned().unwrap_or_default())
                }
                _ if !archived.is_empty() => (KeySource::Archive, archived),
                _ => (KeySource::Missing, Vec::new()),
            };
            KeyNeeded {
                label,
                fingerprints,
                source,
                current_values: current,
                older_values: older,
            }
        })
        .collect()
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

/// Every member's db size and size in use, asked of each member through its client URL with
/// the same TLS settings (`Status` is a read).
pub async fn member_sizes(
    client: &etcd_client::Client,
    target: &EtcdTarget,
) -> Result<Vec<MemberDb>, EtcdError> {
    let request = |e: etcd_client::Error| EtcdError::Request {
        message: explain(&e),
        hint: "",
    };
    let members = client
        .cluster_client()
        .member_list()
        .await
        .map_err(request)?;
    let mut out = Vec::new();
    for m in members.members() {
        let Some(url) = m.client_urls().first() else {
            continue;
        };
        let one = EtcdTarget {
            endpoints: vec![url.clone()],
            ..target.clone()
        };
        let c = one.connect().await?;
        let s = c.maintenance_client().status().await.map_err(request)?;
        out.push(MemberDb {
            name: m.name().to_string(),
            endpoint: url.clone(),
            db_size: s.db_size(),
            db_size_in_use: s.raft_used_db_size(),
        });
    }
    Ok(out)
}

/// The etcdctl commands that drop residue from a live cluster: one compaction past every
/// residue revision (cluster-wide, `--physical` so that its pages are freed before the next
/// step), then a defragmentation of each member with free pages, one member at a time (it
/// blocks that member while it runs). atrest prints them and never runs them.
pub fn cleanup_commands(
    target: &EtcdTarget,
    history: Option<&super::history::HistoryReport>,
    members: &[MemberDb],
) -> Vec<String> {
    let mut flags = String::new();
    for (flag, path) in [
        ("--cacert", &target.cacert),
        ("--cert", &target.cert),
        ("--key", &target.key),
    ] {
        if let Some(p) = path {
            flags.push_str(&format!(" {flag}={}", p.display()));
        }
    }
    if let Some(c) = &target.credentials {
        flags.push_str(&format!(" --user={}", c.user));
    }
    let mut out = Vec::new();
    let compact = history.and_then(|h| h.compact_to_drop_residue);
    if let Some(rev) = compact {
        out.push(format!(
            "etcdctl --endpoints={}{flags} compact {rev} --physical",
            target.describe()
        ));
    }
    for m in members {
        if compact.is_some() || m.free_bytes() > 0 {
            out.push(format!("etcdctl --endpoints={}{flags} defrag", m.endpoint));
        }
    }
    out
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

/// What a file that is not a readable etcd data file is, from its first bytes: `None` for a
/// file that is no backup at all (a checksum, a note), which the survey leaves out.
pub fn backup_kind(path: &std::path::Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 32];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    if head.len() >= 24 && head[16..20] == 0xED0C_DAEDu32.to_le_bytes() {
        Some("an etcd data file")
    } else if head.starts_with(b"PK\x03\x04") {
        Some(
            "a zip archive (a compressed snapshot: unzip it and run `atrest scan --snapshot FILE`)",
        )
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some("a gzip file (a compressed snapshot: gunzip it and run `atrest scan --snapshot FILE`)")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(
            "a zstd file (a compressed snapshot: decompress it and run `atrest scan --snapshot FILE`)",
        )
    } else {
        None
    }
}
