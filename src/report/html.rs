//! The report as one self-contained HTML file: no external assets, readable on screen and on
//! paper, with a coverage bar per resource. Written as a maud template: every value inserted is
//! escaped by the template, so no name, message or path from the cluster can add markup.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::controls::cited;
use super::lifecycle::when;
use super::{Coverage, Report, ResourceResult, RotationInfo, Status};

/// Text of one or more lines: the first as text, the rest (a rule to restore, a list of
/// objects) in a `<pre>`, so their indentation survives.
fn lines(text: &str) -> Markup {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let rest: Vec<&str> = lines.collect();
    html! {
        (first)
        @if !rest.is_empty() {
            pre { (rest.join("\n")) }
        }
    }
}

/// The CSS class that colours a status.
fn class(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "fail",
    }
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:70rem;color:#1b1f23;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;font-size:.9rem}
.verdict{display:inline-block;font-size:1.4rem;font-weight:700;padding:.3rem 1rem;border-radius:.4rem;margin:.8rem 0}
.pass{background:#dafbe1;color:#116329}.warn{background:#fff8c5;color:#7d4e00}.fail{background:#ffebe9;color:#a40e26}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} code{font-size:.85rem}
.bar{background:#ffebe9;height:1rem;width:100%;border-radius:.2rem;overflow:hidden;min-width:10rem}
.bar{display:flex}.bar>span{display:block;height:100%}.bar>.ok{background:#2da44e}.bar>.amber{background:#d4a72c}
.note{color:#a40e26;font-size:.85rem}
.badge{font-weight:600;padding:0 .4rem;border-radius:.3rem}
ul.evidence{margin:.2rem 0 .2rem 1rem;padding:0;font-size:.85rem}
pre{font-size:.8rem;white-space:pre-wrap;margin:.2rem 0}
@media print{body{margin:0;max-width:none}.bar{border:1px solid #999;-webkit-print-color-adjust:exact;print-color-adjust:exact}
.verdict,.badge{-webkit-print-color-adjust:exact;print-color-adjust:exact} h2{break-after:avoid} tr{break-inside:avoid}}
";

/// The whole report as one HTML document.
pub fn render(r: &Report) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Encryption at rest audit — " (r.result) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (heading(r))
                (scope(r))
                (findings(r))
                (coverage(r))
                (checks(r))
                (key_lifecycle(r))
                (cluster(r))
                (config(r))
                (old_copies(r))
                (lint(r))
                (policy(r))
            }
        }
    }
    .into_string()
}

/// The title, when and by which atrest the report was made, and the verdict.
fn heading(r: &Report) -> Markup {
    html! {
        h1 { "Kubernetes encryption at rest audit" }
        div class="meta" {
            "Generated " (r.generated_at) " by atrest " (r.atrest_version) " on " (r.host)
            " · schema " (r.schema) " · etcd revision " (r.etcd.revision)
        }
        div id="verdict" class={ "verdict " (class(r.outcome)) } data-warnings=(r.warnings) {
            "Verdict: " (r.result)
        }
    }
}

/// What was read: the same lines as every other format.
fn scope(r: &Report) -> Markup {
    html! {
        h2 { "Scope" }
        ul id="scope" {
            @for l in r.scope.lines() {
                li { (l) }
            }
        }
    }
}

/// The scan's findings with what to do, when there are any.
fn findings(r: &Report) -> Markup {
    html! {
        @if !r.findings.is_empty() {
            h2 { "Findings" }
            ul id="findings" {
                @for f in &r.findings {
                    li data-kind=(f.kind.as_str()) {
                        span class={ "badge " (f.level.as_str()) } { (f.level.tag()) }
                        " " (lines(&f.message))
                    }
                }
            }
        }
    }
}

/// The coverage table: one row and bar per resource.
fn coverage(r: &Report) -> Markup {
    html! {
        h2 { "Coverage" }
        p class="meta" {
            "Encrypted with an allowed provider (green), a discouraged one (amber), or not at all, with a disallowed provider or unreadable (red); and, as a second measure, encrypted with the write key."
        }
        table id="coverage" {
            tr {
                th { "resource" }
                th { "write key" }
                th { "encrypted with an allowed provider" }
                th {}
                th { "on the write key" }
                th { "stored as" }
            }
            @for res in &r.resources {
                (coverage_row(res))
            }
        }
    }
}

/// One resource's coverage: counts, notes on what is not allowed, the bar, the keys stored
/// under. The `data-` attributes let a reader (and the tests) take the numbers back.
fn coverage_row(res: &ResourceResult) -> Markup {
    let c = &res.coverage;
    let pct = format!("{:.1}", Coverage::percent(c.allowed, res.total));
    let amber = format!("{:.1}", Coverage::percent(c.discouraged, res.total));
    let write_pct = format!("{:.1}", Coverage::percent(c.on_write_key, res.total));
    let notes = coverage_notes(c);
    html! {
        tr class="coverage-row" data-resource=(res.resource) data-percent=(pct)
            data-plaintext=(c.plaintext) data-write-key-percent=(write_pct) {
            td { code { (res.resource) } }
            td { code { (res.write_key) } }
            td {
                (c.allowed) "/" (res.total) " (" (pct) "%)"
                @if !notes.is_empty() {
                    br;
                    span class="note" { (notes.join(", ")) }
                }
            }
            td {
                div class="bar" {
                    span class="ok" style={ "width:" (pct) "%" } {}
                    span class="amber" style={ "width:" (amber) "%" } {}
                }
            }
            td { (c.on_write_key) "/" (res.total) " (" (write_pct) "%)" }
            td {
                @for (i, (k, n)) in res.keys.iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (k) } " " (n.total())
                }
            }
        }
    }
}

/// The stored values that count against the headline measure, by why.
fn coverage_notes(c: &Coverage) -> Vec<String> {
    let mut notes = Vec::new();
    if c.plaintext > 0 {
        notes.push(format!("{} plaintext", c.plaintext));
    }
    if c.discouraged > 0 {
        notes.push(format!("{} with a discouraged provider", c.discouraged));
    }
    if c.disallowed > 0 {
        notes.push(format!("{} with a disallowed provider", c.disallowed));
    }
    if c.unreadable > 0 {
        notes.push(format!("{} unreadable", c.unreadable));
    }
    notes
}

/// Every check with its result and evidence.
fn checks(r: &Report) -> Markup {
    html! {
        h2 { "Checks" }
        @if let Some(cis) = &r.cis_benchmark {
            p class="meta" { (cis.statement()) "." }
        }
        table id="checks" {
            tr {
                th { "id" }
                th { "check" }
                th { "result" }
                th { "evidence" }
                th { "controls" }
            }
            @for c in &r.checks {
                tr {
                    td { (c.id) }
                    td { (c.title) }
                    td { span class={ "badge " (class(c.status)) } { (c.status.as_str()) } }
                    td {
                        ul class="evidence" {
                            @for e in &c.evidence {
                                li { (lines(e)) }
                            }
                        }
                    }
                    td { (cited(&c.controls)) }
                }
            }
        }
    }
}

/// Every key's life, then the rotation log.
fn key_lifecycle(r: &Report) -> Markup {
    html! {
        h2 { "Key lifecycle" }
        table id="key-lifecycle" {
            tr {
                th { "key" } th { "fingerprint" } th { "found in" } th { "added" }
                th { "first write" } th { "demoted" } th { "retired" } th { "archived" }
                th { "standing" }
            }
            @for k in &r.key_lifecycle {
                tr {
                    td { code { (k.label) } @if k.write_key { " (write key)" } }
                    td { code { (k.fingerprint.as_deref().unwrap_or("—")) } }
                    td { (k.found_in.join(", ")) }
                    td { (when(k.added)) }
                    td { (when(k.promoted)) }
                    td { (when(k.demoted)) }
                    td { (when(k.retired)) }
                    td { (k.archived_text()) }
                    td { (k.standing()) }
                }
            }
        }
        h2 { "Rotation log" }
        @if r.rotation_log.is_empty() {
            p { "No rotation step is logged in the state folder." }
        } @else {
            table id="rotation-log" {
                tr {
                    th { "when" } th { "rotation" } th { "step" } th { "user" } th { "host" }
                    th { "proof" }
                }
                @for l in &r.rotation_log {
                    tr {
                        td { (crate::model::time::format(&l.at)) }
                        td { (l.rotation) " → " code { (l.target.to_string()) } }
                        td { (l.step.as_str()) }
                        td { (l.user) }
                        td { (l.host) }
                        td { (l.proof) }
                    }
                }
            }
        }
    }
}

/// The etcd cluster and its members, each apiserver's config, how values were read.
fn cluster(r: &Report) -> Markup {
    html! {
        h2 { "Cluster" }
        table {
            tr {
                th { "etcd cluster" }
                td { (r.etcd.cluster_id) " (version " (r.etcd.version) ")" }
            }
            @for m in &r.etcd.members {
                tr {
                    th { "member" }
                    td { (m.id) " " code { (m.name) } " " (m.client_urls.join(", ")) }
                }
            }
            @for a in &r.apiservers {
                tr {
                    th { "apiserver" }
                    td { (a.name) " — config " (a.reported) }
                }
            }
        }
    }
}

/// The config file, its keys per resource, and the rotation state when there is one.
fn config(r: &Report) -> Markup {
    let cfg = &r.config;
    html! {
        h2 { "Config" }
        p {
            code { (cfg.path.display()) } " " (cfg.sha256) " · mode " (cfg.mode)
            " · owner " (cfg.uid) ":" (cfg.gid)
        }
        table {
            tr {
                th { "resource" }
                th { "rule" }
                th { "write key" }
                th { "keys in order" }
            }
            @for v in &cfg.resources {
                tr {
                    td { code { (v.resource) } }
                    td { (v.rule.as_deref().unwrap_or("—")) }
                    td { code { (v.write_key) } }
                    td {
                        @for (i, k) in v.keys.iter().enumerate() {
                            @if i > 0 { br; }
                            code { (k.label) }
                            @if let Some(f) = &k.fingerprint { " " (f) }
                            @if let Some(a) = &k.added { " added " (crate::model::time::format(a)) }
                        }
                    }
                }
            }
        }
        @if let Some(rot) = &r.rotation {
            (rotation(rot))
        }
    }
}

/// The rotation state: stage, target, when the last one finished.
fn rotation(rot: &RotationInfo) -> Markup {
    let target = rot
        .target
        .as_ref()
        .map_or("—".to_string(), ToString::to_string);
    let last_finished = rot
        .last_finished
        .map_or("—".to_string(), |t| crate::model::time::format(&t));
    html! {
        p {
            "Rotation state " code { (rot.state_file.display()) }
            ": stage " (rot.stage.as_deref().unwrap_or("none"))
            ", target " (target) ", last finished " (last_finished)
            @if rot.snapshot_skipped { ", snapshot skipped" }
        }
    }
}

/// The backup and residue sections, the same words as every other format.
fn old_copies(r: &Report) -> Markup {
    html! {
        @for (heading, lines) in super::old_copies_sections(r) {
            h2 { (heading) }
            ul {
                @for l in lines {
                    li { (l) }
                }
            }
        }
    }
}

/// The config's lint findings, when there are any.
fn lint(r: &Report) -> Markup {
    html! {
        @if !r.lint.is_empty() {
            h2 { "Lint" }
            ul {
                @for f in &r.lint {
                    li { (f.id) " " (f.severity) ": " (f.message) }
                }
            }
        }
    }
}

/// The policy the checks applied.
fn policy(r: &Report) -> Markup {
    let p = &r.policy;
    html! {
        h2 { "Policy" }
        p {
            "allowed providers " (p.allowed_providers.join(", "))
            "; discouraged " (p.discouraged_providers.join(", "))
            "; maximum key age " (p.max_key_age_days) " days; required resources "
            (p.required_resources.join(", "))
        }
    }
}
