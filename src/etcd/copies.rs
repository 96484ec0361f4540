//! Where old copies of values live besides the current ones, and what opens a db file: the
//! keys a backup needs, and each member's db size against the size in use (the defragmentation
//! indicator: freed pages keep old values until `etcdctl defrag`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{EtcdError, EtcdTarget, explain};
use crate::GroupResource;
use crate::config::EncryptionConfig;
use crate::keys::Key;
use crate::model::census::{HistoryReport, KeyNeeded, KeySource, MemberDb, ScanReport};
use crate::model::{KeyLabel, State};

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
    history: Option<&HistoryReport>,
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
