//! The report as one self-contained HTML file: no external assets, readable on screen and on
//! paper, with a coverage bar per resource.

use std::fmt::Write;

use super::{Report, Status};

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
.bar>span{display:block;height:100%;background:#2da44e}
.badge{font-weight:600;padding:0 .4rem;border-radius:.3rem}
ul.evidence{margin:.2rem 0 .2rem 1rem;padding:0;font-size:.85rem}
@media print{body{margin:0;max-width:none}.bar{border:1px solid #999;-webkit-print-color-adjust:exact;print-color-adjust:exact}
.verdict,.badge{-webkit-print-color-adjust:exact;print-color-adjust:exact} h2{break-after:avoid} tr{break-inside:avoid}}
";

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Encryption at rest audit — {}</title><style>{STYLE}</style></head><body>\n",
        r.verdict.as_str()
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
        "<div id=\"verdict\" class=\"verdict {}\">Verdict: {}</div>",
        class(r.verdict),
        r.verdict.as_str()
    );

    let _ = writeln!(
        o,
        "<h2>Coverage</h2>\n<table id=\"coverage\"><tr><th>resource</th><th>write key</th><th>on write key</th><th></th><th>stored as</th></tr>"
    );
    for res in &r.resources {
        let pct = if res.total == 0 {
            100.0
        } else {
            res.on_write_key as f64 * 100.0 / res.total as f64
        };
        let counts: Vec<String> = res
            .counts
            .iter()
            .map(|(k, n)| format!("{} {n}", esc(k)))
            .collect();
        let _ = writeln!(
            o,
            "<tr class=\"coverage-row\" data-resource=\"{}\" data-percent=\"{pct:.1}\"><td><code>{}</code></td><td><code>{}</code></td><td>{}/{} ({pct:.1}%)</td><td><div class=\"bar\"><span style=\"width:{pct:.1}%\"></span></div></td><td>{}</td></tr>",
            esc(&res.resource),
            esc(&res.resource),
            esc(&res.write_key),
            res.on_write_key,
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
            .map(|e| format!("<li>{}</li>", esc(e)))
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
            esc(&a.name()),
            esc(&a.reported())
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
                    s.push_str(&format!(" added {}", esc(a)));
                }
                s
            })
            .collect();
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&v.resource),
            esc(v.rule.as_deref().unwrap_or("—")),
            esc(&v.write_key),
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
            esc(rot.target.as_deref().unwrap_or("—")),
            esc(rot.last_finished.as_deref().unwrap_or("—")),
            if rot.snapshot_skipped {
                ", snapshot skipped"
            } else {
                ""
            }
        );
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
