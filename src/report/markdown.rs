//! The report as Markdown, for tickets and wikis.

use std::fmt::Write;

use super::controls::cited;
use super::lifecycle::when;
use super::{Coverage, Report, RotationInfo, Status};
use crate::model::Level;

fn mark(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅ PASS",
        Status::Warn => "⚠️ WARN",
        Status::Fail => "❌ FAIL",
    }
}

/// A list item; the lines after the first (a rule to restore, a list of objects) as a code
/// block inside it, so their indentation survives.
fn bullet(o: &mut String, text: &str) {
    let mut lines = text.lines();
    let _ = writeln!(o, "- {}", lines.next().unwrap_or(""));
    let rest: Vec<&str> = lines.collect();
    if !rest.is_empty() {
        let _ = writeln!(o, "\n  ```");
        for l in rest {
            let _ = writeln!(o, "  {l}");
        }
        let _ = writeln!(o, "  ```");
    }
}

/// The whole report as Markdown.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    heading(&mut o, r);
    scope(&mut o, r);
    findings(&mut o, r);
    cluster(&mut o, r);
    config(&mut o, r);
    checks(&mut o, r);
    key_lifecycle(&mut o, r);
    stored_objects(&mut o, r);
    old_copies(&mut o, r);
    lint(&mut o, r);
    o
}

/// The title with the verdict, and when and by which atrest the report was made.
fn heading(o: &mut String, r: &Report) {
    let mark_text = mark(r.outcome);
    let _ = writeln!(
        o,
        "# Encryption at rest audit: {mark_text}{}\n",
        r.result.strip_prefix(r.outcome.as_str()).unwrap_or("")
    );
    let _ = writeln!(
        o,
        "Generated {} by atrest {} on {} (`{}`).\n",
        r.generated_at, r.atrest_version, r.host, r.schema
    );
}

/// What was read: the same lines as every other format.
fn scope(o: &mut String, r: &Report) {
    let _ = writeln!(o, "## Scope\n");
    for l in r.scope.lines() {
        let _ = writeln!(o, "- {l}");
    }
}

/// The scan's findings with what to do, when there are any.
fn findings(o: &mut String, r: &Report) {
    if r.findings.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n## Findings\n");
    for f in &r.findings {
        let level = match f.level {
            Level::Fail => "❌ FAIL",
            Level::Warn => "⚠️ WARN",
        };
        bullet(o, &format!("{level} {}", f.message));
    }
}

/// The etcd cluster and its members, each apiserver's config.
fn cluster(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\n## Cluster\n");
    let _ = writeln!(
        o,
        "- etcd cluster {} (version {}), scan pinned at revision {}",
        r.etcd.cluster_id, r.etcd.version, r.etcd.revision
    );
    for m in &r.etcd.members {
        let _ = writeln!(
            o,
            "  - member {} `{}` {}",
            m.id,
            m.name,
            m.client_urls.join(", ")
        );
    }
    for a in &r.apiservers {
        let _ = writeln!(o, "- apiserver {}: config {}", a.name, a.reported);
    }
}

/// The config file, its keys per resource, and the rotation state when there is one.
fn config(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\n## Config\n");
    let _ = writeln!(
        o,
        "`{}` {} mode {} owner {}:{}\n",
        r.config.path.display(),
        r.config.sha256,
        r.config.mode,
        r.config.uid,
        r.config.gid
    );
    let _ = writeln!(
        o,
        "| resource | rule | write key | keys in order (fingerprint) |\n|---|---|---|---|"
    );
    for v in &r.config.resources {
        let keys: Vec<String> = v
            .keys
            .iter()
            .map(|k| match &k.fingerprint {
                Some(f) => format!("{} ({f})", k.label),
                None => k.label.clone(),
            })
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            v.resource,
            v.rule.as_deref().unwrap_or("—"),
            v.write_key,
            keys.join(", ")
        );
    }
    if let Some(rot) = &r.rotation {
        rotation(o, rot);
    }
}

/// The rotation state: stage, target, when the last one finished.
fn rotation(o: &mut String, rot: &RotationInfo) {
    let _ = writeln!(
        o,
        "\nRotation state `{}`: stage {}, target {}, last finished {}{}",
        rot.state_file.display(),
        rot.stage.as_deref().unwrap_or("none"),
        rot.target
            .as_ref()
            .map_or("—".to_string(), ToString::to_string),
        rot.last_finished
            .map_or("—".to_string(), |t| crate::model::time::format(&t)),
        if rot.snapshot_skipped {
            ", snapshot skipped"
        } else {
            ""
        }
    );
}

/// Every check in a table, then each with its evidence.
fn checks(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\n## Checks\n");
    if let Some(cis) = &r.cis_benchmark {
        let _ = writeln!(o, "{}.\n", cis.statement());
    }
    let _ = writeln!(o, "| id | check | result | controls |\n|---|---|---|---|");
    for c in &r.checks {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            c.id,
            c.title,
            mark(c.status),
            cited(&c.controls)
        );
    }
    for c in &r.checks {
        let _ = writeln!(o, "\n### {} {} — {}\n", c.id, c.title, c.status.as_str());
        for e in &c.evidence {
            bullet(o, e);
        }
    }
}

/// Every key's life and the rotation log.
fn key_lifecycle(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\n## Key lifecycle\n");
    let _ = writeln!(
        o,
        "| key | fingerprint | found in | added | first write | demoted | retired | archived | standing |\n|---|---|---|---|---|---|---|---|---|"
    );
    for k in &r.key_lifecycle {
        let _ = writeln!(
            o,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
            k.label,
            if k.write_key { " (write key)" } else { "" },
            k.fingerprint.as_deref().unwrap_or("—"),
            k.found_in.join(", "),
            when(k.added),
            when(k.promoted),
            when(k.demoted),
            when(k.retired),
            k.archived_text(),
            k.standing()
        );
    }
    let _ = writeln!(o, "\n## Rotation log\n");
    if r.rotation_log.is_empty() {
        let _ = writeln!(o, "No rotation step is logged in the state folder.");
        return;
    }
    let _ = writeln!(
        o,
        "| when | rotation | step | user | host | proof |\n|---|---|---|---|---|---|"
    );
    for l in &r.rotation_log {
        let _ = writeln!(
            o,
            "| {} | {} → {} | {} | {} | {} | {} |",
            crate::model::time::format(&l.at),
            l.rotation,
            l.target,
            l.step,
            l.user,
            l.host,
            l.proof
        );
    }
}

/// The coverage table: per resource, counts against the policy and the write key, and the
/// keys its values are stored under.
fn stored_objects(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\n## Stored objects\n");
    let _ = writeln!(
        o,
        "| resource | write key | encrypted, allowed provider | plaintext | on the write key | total | stored as |\n|---|---|---:|---:|---:|---:|---|"
    );
    for res in &r.resources {
        let c = &res.coverage;
        let counts: Vec<String> = res
            .keys
            .iter()
            .map(|(k, n)| format!("{k}: {}", n.total()))
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {}/{} ({:.1}%) | {} | {}/{} ({:.1}%) | {} | {} |",
            res.resource,
            res.write_key,
            c.allowed,
            res.total,
            Coverage::percent(c.allowed, res.total),
            c.plaintext,
            c.on_write_key,
            res.total,
            Coverage::percent(c.on_write_key, res.total),
            res.total,
            counts.join(", ")
        );
    }
}

/// The backup and residue sections, the same words as every other format.
fn old_copies(o: &mut String, r: &Report) {
    for (heading, lines) in super::old_copies_sections(r) {
        let _ = writeln!(o, "\n## {heading}\n");
        for l in lines {
            let _ = writeln!(o, "- {l}");
        }
    }
}

/// The config's lint findings, when there are any.
fn lint(o: &mut String, r: &Report) {
    if r.lint.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n## Lint\n");
    for f in &r.lint {
        let _ = writeln!(o, "- {} {}: {}", f.id, f.severity, f.message);
    }
}
