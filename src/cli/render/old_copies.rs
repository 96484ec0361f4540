//! The old-copies part of a scan table: the db file and the keys it needs, history, free pages,
//! members' db sizes, and the etcdctl commands that drop what was found.

use std::fmt::Write;

use atrest::model::census::{
    BackupFile, FreePages, HistoryReport, MemberDb, ScanReport, SnapshotSection,
};
use atrest::model::showing;

/// How many names of each residue group a table lists (JSON has the whole sample).
const TABLE_NAMES: usize = 10;

/// The sections for what `report` holds beyond current values; empty when it holds none.
pub(crate) fn old_copies_sections(report: &ScanReport) -> String {
    let mut out = String::new();
    if let Some(s) = &report.snapshot {
        data_file_section(&mut out, report, s);
    }
    if let Some(h) = &report.history {
        history_section(&mut out, report, h);
    }
    if let Some(f) = &report.free_pages {
        free_pages_section(&mut out, f);
    }
    if let Some(members) = &report.members {
        members_section(&mut out, members);
    }
    if report.snapshot.is_some() {
        file_residue_lines(&mut out, report);
    }
    if let Some(backups) = &report.backups {
        backups_section(&mut out, backups);
    }
    if !report.cleanup.is_empty() {
        cleanup_section(&mut out, &report.cleanup);
    }
    out
}

/// `compacted at N`, or `never compacted` (revision 0).
fn compaction(revision: i64) -> String {
    if revision > 0 {
        format!("compacted at {revision}")
    } else {
        "never compacted".to_string()
    }
}

/// The db file read (`scan --snapshot`): size, hash, revisions, and the keys its values need.
fn data_file_section(out: &mut String, report: &ScanReport, s: &SnapshotSection) {
    let f = &s.file;
    let _ = writeln!(out);
    let _ = writeln!(out, "Data file {} — {} bytes, {}", f.path, f.size, f.sha256);
    let compacted = compaction(f.compact_revision);
    let _ = writeln!(
        out,
        "  revision {}; revisions {}..{} in the file ({} in all), {compacted}",
        f.revision, f.oldest_revision, f.revision, f.revisions
    );
    let _ = writeln!(out, "Keys its values are stored under:");
    for k in &s.keys_needed {
        let where_ = k.source.describe();
        let fp = if k.fingerprints.is_empty() {
            "-".to_string()
        } else {
            k.fingerprints.join(" ")
        };
        let older = if report.history.is_some() {
            format!(", {} older", k.older_values)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<28} {:<24} {} current{older} — {where_}",
            k.label.to_string(),
            fp,
            k.current_values
        );
    }
}

/// Older revisions still kept: how far history was read, and each group of older values with
/// a capped list of the residue ones.
fn history_section(out: &mut String, report: &ScanReport, h: &HistoryReport) {
    let _ = writeln!(out);
    let from = if report.snapshot.is_some() {
        format!(
            "every revision in the file, {}..{}",
            h.from_revision, h.to_revision
        )
    } else if h.from_revision > 0 {
        format!(
            "compacted at {}, read up to {}",
            h.from_revision, h.to_revision
        )
    } else {
        format!("never compacted, read up to {}", h.to_revision)
    };
    let _ = writeln!(
        out,
        "History ({from}): {} older values, {} of them residue.",
        h.older_values, h.residue
    );
    for g in &h.groups {
        let _ = writeln!(out, "  {}", g.summary());
        if g.residue.is_some() {
            let shown = g.sample.objects.len().min(TABLE_NAMES);
            let _ = writeln!(
                out,
                "    {}",
                g.sample
                    .objects
                    .iter()
                    .take(TABLE_NAMES)
                    .map(|o| format!("{}@{}", o.key, o.revision))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let more = showing(shown, g.sample.total, "-o json lists up to --max-list");
            if !more.is_empty() {
                let _ = writeln!(out, "   {more}");
            }
        }
    }
}

/// What the db file's free pages still hold.
fn free_pages_section(out: &mut String, f: &FreePages) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Free pages: {} of {} pages are free; {} still read as pages of stored values, with {} value copies, {} of them residue.",
        f.free_pages,
        f.pages,
        f.leaf_pages,
        f.values.iter().map(|g| g.copies).sum::<u64>(),
        f.residue
    );
    for g in &f.values {
        let _ = writeln!(out, "  {}", g.summary());
    }
    if !f.patterns.is_empty() {
        let p: Vec<String> = f.patterns.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "  other free pages, by byte pattern: {}", p.join(", "));
    }
}

/// Each member's db size against its size in use: free pages may hold old values.
fn members_section(out: &mut String, members: &[MemberDb]) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "etcd members (free pages may hold old values until defragmented):"
    );
    for m in members {
        let _ = writeln!(
            out,
            "  {:<20} {:<28} db {} bytes, {} in use, {} free",
            m.name,
            m.endpoint,
            m.db_size,
            m.db_size_in_use,
            m.free_bytes()
        );
    }
}

/// The residue a db file holds in all, and that only deleting the file drops it.
fn file_residue_lines(out: &mut String, report: &ScanReport) {
    let current: u64 = report.resources.iter().map(|r| r.residue).sum();
    let _ = writeln!(
        out,
        "\nResidue in this file: {} copies in all; {current} current values stored as plaintext where the config encrypts or under a key it does not have{}{}.",
        report.residue(),
        report
            .history
            .as_ref()
            .map(|h| format!(", {} older values", h.residue))
            .unwrap_or_default(),
        report
            .free_pages
            .as_ref()
            .map(|f| format!(", {} copies in free pages", f.residue))
            .unwrap_or_default(),
    );
    if report.residue() > 0 {
        let _ = writeln!(
            out,
            "This file keeps its residue for as long as it exists: once the cluster is clean (compact, defrag), take a new snapshot and delete this one."
        );
    }
}

/// The backup files surveyed, judged by the current config.
fn backups_section(out: &mut String, backups: &[BackupFile]) {
    let _ = writeln!(out);
    let _ = writeln!(out, "Backup files (judged by the current config):");
    for line in backup_lines(backups, false) {
        let _ = writeln!(out, "  {line}");
    }
}

/// The etcdctl commands that drop the old copies found; atrest never runs them.
fn cleanup_section(out: &mut String, cleanup: &[String]) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "To drop old copies (atrest never runs these; defragment one member at a time, it blocks that member while it runs):"
    );
    for c in cleanup {
        let _ = writeln!(out, "  {c}");
    }
}

/// The backup files a survey found, one line each, with what each still holds.
pub(crate) fn backup_lines(backups: &[BackupFile], removing: bool) -> Vec<String> {
    if backups.is_empty() {
        return vec![
            "backup files: none in atrest's snapshots folder, none recorded, none in a --backup-dir"
                .to_string(),
        ];
    }
    let removable = atrest::cluster::survey::removable(backups);
    backups
        .iter()
        .map(|b| {
            let note = if b.in_progress {
                " — the restore point of the rotation in progress: kept"
            } else if removable.iter().any(|r| r.path == b.path) {
                if removing {
                    " — removing it"
                } else {
                    " — `atrest rotate prune --remove-snapshots` removes it"
                }
            } else {
                ""
            };
            format!("backup {}: {}{note}", b.describe(), b.holds())
        })
        .collect()
}

/// What is left after a rotation, and the commands that drop it.
pub(crate) fn after_rotation(live: &ScanReport, removing: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Old copies left after the rotation (atrest never compacts or defragments etcd):"
    );
    if let Some(h) = &live.history {
        let since = compaction(h.from_revision);
        let _ = writeln!(
            out,
            "  etcd history ({since}, read up to {}): {} older values, {} of them residue",
            h.to_revision, h.older_values, h.residue
        );
        for g in h.residue_groups() {
            let _ = writeln!(out, "    {}", g.summary());
        }
    }
    for m in live.members.iter().flatten() {
        let _ = writeln!(
            out,
            "  etcd member {} ({}): db {} bytes, {} in use, {} free — free pages may still hold old values until defragmented",
            m.name,
            m.endpoint,
            m.db_size,
            m.db_size_in_use,
            m.free_bytes()
        );
    }
    let backups = live.backups.clone().unwrap_or_default();
    for line in backup_lines(&backups, removing) {
        let _ = writeln!(out, "  {line}");
    }
    let removable = !atrest::cluster::survey::removable(&backups).is_empty();
    if live.cleanup.is_empty() && !removable {
        let _ = writeln!(out, "Nothing to drop.");
        return out;
    }
    let _ = writeln!(out, "To drop them:");
    for c in &live.cleanup {
        let _ = writeln!(out, "  {c}");
    }
    if !live.cleanup.is_empty() {
        let _ = writeln!(
            out,
            "  (defragment one member at a time: it blocks that member while it runs)"
        );
    }
    if removable && !removing {
        let _ = writeln!(
            out,
            "  atrest rotate prune --remove-snapshots   # deletes atrest's snapshots listed above; copy any you must keep first"
        );
    }
    let _ = writeln!(
        out,
        "Backups taken elsewhere before the rotation hold the same old data: check them with `atrest scan --history --backup-dir DIR` or `atrest scan --snapshot FILE --history`."
    );
    out
}
