//! `scan`: exact counts per resource, key and verdict, and capped samples of names.

use std::fmt::Write;

use atrest::model::Verdict;
use atrest::model::census::{ResourceReport, ScanReport};

/// How many names of each verdict a table lists (JSON has the whole sample).
const TABLE_NAMES: usize = 50;

/// What the command that prints a table offers for more detail: the hints name only flags the
/// running command has.
pub(crate) struct Hints {
    /// How to decrypt every value.
    pub verify: &'static str,
    /// How to see more names.
    pub more_names: &'static str,
}

/// Hints for `atrest scan`.
pub(crate) const SCAN_HINTS: Hints = Hints {
    verify: "add --verify to decrypt",
    more_names: "-o json lists up to --max-list",
};

/// Hints for `atrest status`.
pub(crate) const STATUS_HINTS: Hints = Hints {
    verify: "`atrest scan --verify` decrypts every value",
    more_names: "`atrest scan` lists more",
};

/// The scan as a table: per resource its write key, exact counts per stored key and verdict,
/// then the objects that need attention (capped, always with `showing N of M`).
pub(crate) fn scan_table(report: &ScanReport, hints: &Hints) -> String {
    let mut out = current_table(report, hints);
    out.push_str(&super::old_copies::old_copies_sections(report));
    out.push_str(&findings_section(report));
    out
}

/// A resource's name as the table shows it: with the rule that covers it, when that is another.
fn shown_name(r: &ResourceReport) -> String {
    match &r.rule {
        Some(rule) if *rule != r.resource => format!("{} (via {rule})", r.resource),
        _ => r.resource.clone(),
    }
}

/// What the current values are: how they were read, one row per resource, KMS key IDs, the
/// totals, and the objects that need attention.
fn current_table(report: &ScanReport, hints: &Hints) -> String {
    let mut out = String::new();
    scan_heading(&mut out, report, hints);
    resource_table(&mut out, report);
    kms_key_ids(&mut out, report);
    totals_line(&mut out, report);
    let attention: Vec<_> = report.resources.iter().filter(|r| !r.clean()).collect();
    if !attention.is_empty() {
        let _ = writeln!(out, "Needs attention:");
        for r in attention {
            attention_rows(&mut out, r, hints);
        }
    }
    out
}

/// The revision read, whether values were decrypted, and what was read.
fn scan_heading(out: &mut String, report: &ScanReport, hints: &Hints) {
    let _ = writeln!(
        out,
        "etcd revision {} · {}",
        report.revision,
        if report.verified {
            "every value decrypted (--verify)"
        } else {
            "classified by prefix, key name and shape"
        }
    );
    let _ = writeln!(out, "Scope: {}", report.scope.describe());
    if !report.verified {
        let _ = writeln!(out, "({})", hints.verify);
    }
    let _ = writeln!(out);
}

/// One row per resource (more for each further key it is stored under), columns sized to
/// their content.
fn resource_table(out: &mut String, report: &ScanReport) {
    let name_w = report
        .resources
        .iter()
        .map(|r| shown_name(r).len())
        .chain(["RESOURCE".len()])
        .max()
        .unwrap_or(8);
    let key_w = report
        .resources
        .iter()
        .map(|r| r.write_key.to_string().len())
        .chain(["WRITE KEY".len()])
        .max()
        .unwrap_or(9);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<key_w$}  {:>8}  STORED AS (exact counts)",
        "RESOURCE", "WRITE KEY", "TOTAL"
    );
    for r in &report.resources {
        resource_rows(out, r, name_w, key_w);
    }
}

/// Each KMS v2 plugin's current key ID, and the key IDs each resource's values carry.
fn kms_key_ids(out: &mut String, report: &ScanReport) {
    for (provider, key_id) in &report.kms_current_key_ids {
        let _ = writeln!(
            out,
            "KMS v2 provider {provider}: the plugin's current key ID is {key_id}"
        );
    }
    for r in report
        .resources
        .iter()
        .filter(|r| !r.kms_key_ids.is_empty())
    {
        let ids: Vec<String> = r
            .kms_key_ids
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "{}: KMS v2 key IDs: {}", r.resource, ids.join(", "));
    }
}

/// The exact counts over every resource.
fn totals_line(out: &mut String, report: &ScanReport) {
    let t = report.totals();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "In all: {} stored values in {} resources; {} on the write key, {} stale, {} plaintext, {} undecryptable, {} unknown key, {} corrupt.",
        t.total(),
        report.resources.iter().filter(|r| r.total > 0).count(),
        t.on_write_key,
        t.stale,
        t.plaintext,
        t.undecryptable,
        t.unknown_key,
        t.corrupt
    );
}

/// The findings and the result line, the same words in `scan` and `status`.
pub(crate) fn findings_section(report: &ScanReport) -> String {
    let mut out = String::new();
    if !report.findings.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Findings:");
        for f in &report.findings {
            let tag = f.level.tag();
            let mut lines = f.message.lines();
            let _ = writeln!(out, "  {tag} {}", lines.next().unwrap_or(""));
            for l in lines {
                let _ = writeln!(out, "       {l}");
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Result: {}", report.result);
    out
}

fn resource_rows(out: &mut String, r: &ResourceReport, name_w: usize, key_w: usize) {
    let name = shown_name(r);
    let keys: Vec<String> = r
        .keys
        .iter()
        .map(|(k, c)| {
            let parts: Vec<String> = c
                .nonzero()
                .map(|(v, n)| format!("{n} {}", v.short()))
                .collect();
            format!("{k}: {}", parts.join(", "))
        })
        .collect();
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<key_w$}  {:>8}  {}",
        name,
        r.write_key.to_string(),
        r.total,
        keys.first().map(String::as_str).unwrap_or("-")
    );
    for k in keys.iter().skip(1) {
        let _ = writeln!(out, "{:<name_w$}  {:<key_w$}  {:>8}  {k}", "", "", "");
    }
    if r.unverified > 0 && r.unverified < r.verdicts.encrypted() {
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<key_w$}  {:>8}  ({} encrypted values not decrypted: no plugin to ask)",
            "", "", "", r.unverified
        );
    }
}

fn attention_rows(out: &mut String, r: &ResourceReport, hints: &Hints) {
    for v in Verdict::ALL {
        if v == Verdict::OnWriteKey {
            continue;
        }
        let Some(s) = r.sample(v).filter(|s| s.total > 0) else {
            continue;
        };
        let what = match v {
            Verdict::Plaintext if r.encrypts => "plaintext, but the config wants encryption",
            // Plaintext under an identity write key is what the config asks for.
            Verdict::Plaintext => continue,
            other => other.describe(),
        };
        let shown = s.objects.len().min(TABLE_NAMES);
        let showing = atrest::model::showing(shown, s.total, hints.more_names);
        let _ = writeln!(out, "  {} — {} {what}{showing}:", r.resource, s.total);
        for o in s.objects.iter().take(TABLE_NAMES) {
            let _ = writeln!(out, "    {} ({})", o.name, o.stored_as);
        }
    }
}
