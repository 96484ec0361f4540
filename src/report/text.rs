//! The words every format of the report shares (text of Markdown and HTML alike): the verdict
//! line, the scope section, the backup and residue sections, samples of names.

use super::{Report, ReportScope};
use crate::model::Verdict;
use crate::model::census::ResourceReport;

impl ReportScope {
    /// One line per fact, the same in every format.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("read: {}", self.scan.describe())];
        out.push(if self.history {
            "etcd history and each member's db size: read".to_string()
        } else {
            "etcd history: NOT read (--no-history): residue in history and free pages is not checked".to_string()
        });
        out.push(match self.backup_files {
            Some(n) => format!(
                "backup files: {n} surveyed (atrest's snapshots folder, rotation records, --backup-dir)"
            ),
            None => "backup files: not surveyed".to_string(),
        });
        out.push(self.values());
        out.push(if self.apiservers {
            "apiservers: asked which config each runs".to_string()
        } else {
            "apiservers: NOT asked (no kubeconfig, or an audit of a backup file)".to_string()
        });
        out
    }
}

impl ReportScope {
    /// Whether values were decrypted, and which were not: no PASS reads as more than this.
    pub fn values(&self) -> String {
        if !self.decrypted {
            "values: NOT decrypted (--no-verify): classified by prefix and key name only, none shown to open".to_string()
        } else if self.not_decrypted == 0 {
            "values: each encrypted value decrypted with its key, each proven to open".to_string()
        } else {
            let why = if self.kms_not_asked.is_empty() {
                "their KMS plugin does not serve the API that opens them".to_string()
            } else {
                self.kms_not_asked.join("; ")
            };
            format!(
                "values: decrypted, except {} encrypted values classified by prefix, provider and key ID only: {why}",
                self.not_decrypted
            )
        }
    }
}

/// The names of one verdict's sample, `showing N of M` when capped; `None` when there are none.
pub(crate) fn sample_evidence(r: &ResourceReport, v: Verdict, what: &str) -> Option<String> {
    let s = r.sample(v).filter(|s| s.total > 0)?;
    let names: Vec<&str> = s.objects.iter().take(20).map(|o| o.name.as_str()).collect();
    let more = crate::model::showing(names.len(), s.total, "");
    Some(format!(
        "{}: {} {what}: {}{more}",
        r.resource,
        s.total,
        names.join(", ")
    ))
}

/// The backup and residue sections as (heading, lines), the same words in every format.
pub(crate) fn old_copies_sections(r: &Report) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    if let Some(b) = &r.backup {
        let f = &b.file;
        let compacted = match f.compact_revision {
            0 => "never compacted".to_string(),
            c => format!("compacted at {c}"),
        };
        let mut lines = vec![format!(
            "{}: {} bytes, {}, revision {} (revisions {}..{} in the file; {compacted})",
            f.path, f.size, f.sha256, f.revision, f.oldest_revision, f.revision
        )];
        for k in &b.keys_needed {
            let fp = if k.fingerprints.is_empty() {
                String::new()
            } else {
                format!(" ({})", k.fingerprints.join(" "))
            };
            let source = k.source.describe();
            lines.push(format!(
                "key {}{fp}: {source}; {} current values, {} older values",
                k.label, k.current_values, k.older_values
            ));
        }
        out.push(("Backup", lines));
    }
    if let Some(res) = &r.residue {
        let mut lines = vec![format!("{} residue copies in all", res.total)];
        if let Some(h) = &res.history {
            lines.push(format!(
                "history, revisions {}..{}: {} older values, {} residue",
                h.from_revision, h.to_revision, h.older_values, h.residue
            ));
            lines.extend(h.groups.iter().map(|g| g.summary()));
        }
        if let Some(f) = &res.free_pages {
            lines.push(format!(
                "free pages: {} of {} free, {} value copies that are residue",
                f.free_pages, f.pages, f.residue
            ));
        }
        for m in &res.members {
            lines.push(format!(
                "member {} ({}): db {} bytes, {} in use, {} free until defragmented",
                m.name,
                m.endpoint,
                m.db_size,
                m.db_size_in_use,
                m.free_bytes()
            ));
        }
        for b in &res.backups {
            lines.push(format!("backup {}: {}", b.describe(), b.holds()));
        }
        for c in &res.cleanup {
            lines.push(format!("to drop: {c}"));
        }
        out.push(("Residue", lines));
    }
    out
}

/// `PASS`, `PASS with 2 warnings`, `FAIL (3 of 12 checks fail, 1 warns)`.
pub fn checks_result_line(failed: usize, warnings: usize, checks: usize) -> String {
    let warn = match warnings {
        1 => "1 warning".to_string(),
        n => format!("{n} warnings"),
    };
    match (failed, warnings) {
        (0, 0) => "PASS".to_string(),
        (0, _) => format!("PASS with {warn}"),
        (f, 0) => format!("FAIL ({f} of {checks} checks fail)"),
        (f, _) => format!("FAIL ({f} of {checks} checks fail; {warn})"),
    }
}
