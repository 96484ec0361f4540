//! The report as one self-contained HTML file: no external assets, readable on screen and on
//! paper, with a coverage bar per resource.

use std::fmt::Write;

use super::{Coverage, Report, Status};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Text of one or more lines: the first as text, the rest (a rule to restore, a list of
/// objects) in a `<pre>`, so their indentation survives.
fn lines_html(text: &str) -> String {
    let mut lines = text.lines();
    let first = esc(lines.next().unwrap_or(""));
    let rest: Vec<String> = lines.map(esc).collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first}<pre>{}</pre>", rest.join("\n"))
    }
}

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
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Encryption at rest audit — {}</title><style>{STYLE}</style></head><body>\n",
        esc(&r.result)
    );
    let _ = writeln!(o, "<h1>Kubernetes encryption at rest audit</h1>");
    let _ = writeln!(
        o,
        "<div class=\"meta\">Generated {} by atrest {} on {} · schema {} · etcd revision {}</div>",
        esc(&r.generated_at),
        esc(&r.atrest_version),
        esc(&r.host),
        esc(&r.schema),
        r.etcd.revision
    );
    let _ = writeln!(
        o,
        "<div id=\"verdict\" class=\"verdict {}\" data-warnings=\"{}\">Verdict: {}</div>",
        class(r.verdict),
        r.warnings,
        esc(&r.result)
    );
    let _ = writeln!(o, "<h2>Scope</h2><ul id=\"scope\">");
    for l in r.scope.lines() {
        let _ = writeln!(o, "<li>{}</li>", esc(&l));
    }
    let _ = writeln!(o, "</ul>");
    if !r.findings.is_empty() {
        let _ = writeln!(o, "<h2>Findings</h2><ul id=\"findings\">");
        for f in &r.findings {
            let (cls, tag) = (f.level.as_str(), f.level.tag());
            let _ = writeln!(
                o,
                "<li data-kind=\"{}\"><span class=\"badge {cls}\">{tag}</span> {}</li>",
                f.kind.as_str(),
                lines_html(&f.message)
            );
        }
        let _ = writeln!(o, "</ul>");
    }

    let _ = writeln!(
        o,
        "<h2>Coverage</h2>\n<p class=\"meta\">Encrypted with an allowed provider (green), a discouraged one (amber), or not at all, with a disallowed provider or unreadable (red); and, as a second measure, encrypted with the write key.</p>\n<table id=\"coverage\"><tr><th>resource</th><th>write key</th><th>encrypted with an allowed provider</th><th></th><th>on the write key</th><th>stored as</th></tr>"
    );
    for res in &r.resources {
        let c = &res.coverage;
        let pct = Coverage::percent(c.allowed, res.total);
        let amber = Coverage::percent(c.discouraged, res.total);
        let write_pct = Coverage::percent(c.on_write_key, res.total);
        let counts: Vec<String> = res
            .keys
            .iter()
            .map(|(k, n)| format!("<code>{}</code> {}", esc(&k.to_string()), n.total()))
            .collect();
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
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("<br><span class=\"note\">{}</span>", esc(&notes.join(", ")))
        };
        let _ = writeln!(
            o,
            "<tr class=\"coverage-row\" data-resource=\"{}\" data-percent=\"{pct:.1}\" data-plaintext=\"{}\" data-write-key-percent=\"{write_pct:.1}\"><td><code>{}</code></td><td><code>{}</code></td><td>{}/{} ({pct:.1}%){notes}</td><td><div class=\"bar\"><span class=\"ok\" style=\"width:{pct:.1}%\"></span><span class=\"amber\" style=\"width:{amber:.1}%\"></span></div></td><td>{}/{} ({write_pct:.1}%)</td><td>{}</td></tr>",
            esc(&res.resource),
            c.plaintext,
            esc(&res.resource),
            esc(&res.write_key.to_string()),
            c.allowed,
            res.total,
            c.on_write_key,
            res.total,
            counts.join(", ")
        );
    }
    let _ = writeln!(o, "</table>");

    let _ = writeln!(
        o,
        "<h2>Checks</h2>\n<table id=\"checks\"><tr><th>id</th><th>check</th><th>result</th><th>evidence</th></tr>"
    );
    for c in &r.checks {
        let ev: String = c
            .evidence
            .iter()
            .map(|e| format!("<li>{}</li>", lines_html(e)))
            .collect();
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td><td><ul class=\"evidence\">{ev}</ul></td></tr>",
            esc(&c.id),
            esc(&c.title),
            class(c.status),
            c.status.as_str()
        );
    }
    let _ = writeln!(o, "</table>");

    let _ = writeln!(
        o,
        "<h2>Cluster</h2><table><tr><th>etcd cluster</th><td>{} (version {})</td></tr>",
        esc(&r.etcd.cluster_id),
        esc(&r.etcd.version)
    );
    for m in &r.etcd.members {
        let _ = writeln!(
            o,
            "<tr><th>member</th><td>{} <code>{}</code> {}</td></tr>",
            esc(&m.id),
            esc(&m.name),
            esc(&m.client_urls.join(", "))
        );
    }
    for a in &r.apiservers {
        let _ = writeln!(
            o,
            "<tr><th>apiserver</th><td>{} — config {}</td></tr>",
            esc(&a.name),
            esc(&a.reported)
        );
    }
    let _ = writeln!(
        o,
        "<tr><th>values</th><td>{}</td></tr></table>",
        if r.verified {
            "decrypted one by one (--verify)"
        } else {
            "classified by prefix and key name"
        }
    );

    let _ = writeln!(
        o,
        "<h2>Config</h2><p><code>{}</code> {} · mode {} · owner {}:{}</p><table><tr><th>resource</th><th>rule</th><th>write key</th><th>keys in order</th></tr>",
        esc(&r.config.path.display().to_string()),
        esc(&r.config.sha256),
        esc(&r.config.mode),
        r.config.uid,
        r.config.gid
    );
    for v in &r.config.resources {
        let keys: Vec<String> = v
            .keys
            .iter()
            .map(|k| {
                let mut s = format!("<code>{}</code>", esc(&k.label));
                if let Some(f) = &k.fingerprint {
                    s.push_str(&format!(" {}", esc(f)));
                }
                if let Some(a) = &k.added {
                    s.push_str(&format!(" added {}", crate::model::time::format(a)));
                }
                s
            })
            .collect();
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&v.resource),
            esc(v.rule.as_deref().unwrap_or("—")),
            esc(&v.write_key.to_string()),
            keys.join("<br>")
        );
    }
    let _ = writeln!(o, "</table>");
    if let Some(rot) = &r.rotation {
        let _ = writeln!(
            o,
            "<p>Rotation state <code>{}</code>: stage {}, target {}, last finished {}{}</p>",
            esc(&rot.state_file.display().to_string()),
            esc(rot.stage.as_deref().unwrap_or("none")),
            esc(&rot
                .target
                .as_ref()
                .map_or("—".to_string(), ToString::to_string)),
            rot.last_finished
                .map_or("—".to_string(), |t| crate::model::time::format(&t)),
            if rot.snapshot_skipped {
                ", snapshot skipped"
            } else {
                ""
            }
        );
    }
    for (heading, lines) in super::old_copies_sections(r) {
        let _ = writeln!(o, "<h2>{}</h2><ul>", esc(heading));
        for l in lines {
            let _ = writeln!(o, "<li>{}</li>", esc(&l));
        }
        let _ = writeln!(o, "</ul>");
    }
    if !r.lint.is_empty() {
        let _ = writeln!(o, "<h2>Lint</h2><ul>");
        for f in &r.lint {
            let _ = writeln!(
                o,
                "<li>{} {}: {}</li>",
                esc(&f.id),
                f.severity,
                esc(&f.message)
            );
        }
        let _ = writeln!(o, "</ul>");
    }
    let _ = writeln!(
        o,
        "<h2>Policy</h2><p>allowed providers {}; discouraged {}; maximum key age {} days; required resources {}</p>",
        esc(&r.policy.allowed_providers.join(", ")),
        esc(&r.policy.discouraged_providers.join(", ")),
        r.policy.max_key_age_days,
        esc(&r.policy.required_resources.join(", "))
    );
    let _ = writeln!(o, "</body></html>");
    o
}
