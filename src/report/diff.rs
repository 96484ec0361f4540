//! What changed between two audits (two JSON reports).

use std::collections::BTreeSet;

use super::Report;

/// One line per difference, in the order an auditor reads them.
pub fn diff(a: &Report, b: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if a.verdict != b.verdict {
        out.push(format!(
            "verdict: {} -> {}",
            a.verdict.as_str(),
            b.verdict.as_str()
        ));
    }
    if a.config.sha256 != b.config.sha256 {
        out.push(format!(
            "config {}: {} -> {}",
            b.config.path.display(),
            a.config.sha256,
            b.config.sha256
        ));
    }
    for c in &b.checks {
        match a.checks.iter().find(|x| x.id == c.id) {
            Some(old) if old.status != c.status => out.push(format!(
                "check {} ({}): {} -> {}",
                c.id,
                c.title,
                old.status.as_str(),
                c.status.as_str()
            )),
            None => out.push(format!(
                "check {} ({}): new, {}",
                c.id,
                c.title,
                c.status.as_str()
            )),
            _ => {}
        }
    }
    for v in &b.config.resources {
        match a.config.resources.iter().find(|x| x.resource == v.resource) {
            Some(old) if old.write_key != v.write_key => out.push(format!(
                "{}: write key {} -> {}",
                v.resource, old.write_key, v.write_key
            )),
            None => out.push(format!(
                "{}: newly covered, write key {}",
                v.resource, v.write_key
            )),
            _ => {}
        }
    }
    let keys = |r: &Report| -> BTreeSet<String> {
        r.config
            .resources
            .iter()
            .flat_map(|v| {
                v.keys.iter().map(|k| {
                    format!(
                        "{}{}",
                        k.label,
                        k.fingerprint
                            .as_ref()
                            .map(|f| format!(" ({f})"))
                            .unwrap_or_default()
                    )
                })
            })
            .collect()
    };
    let (ka, kb) = (keys(a), keys(b));
    for k in kb.difference(&ka) {
        out.push(format!("key added: {k}"));
    }
    for k in ka.difference(&kb) {
        out.push(format!("key removed: {k}"));
    }
    for r in &b.resources {
        let old = a.resources.iter().find(|x| x.resource == r.resource);
        let (ot, ow) = old.map(|o| (o.total, o.on_write_key)).unwrap_or((0, 0));
        if old.is_none()
            || ot != r.total
            || ow != r.on_write_key
            || old.map(|o| &o.counts) != Some(&r.counts)
        {
            out.push(format!(
                "{}: on write key {ow}/{ot} -> {}/{}; stored as {:?}",
                r.resource, r.on_write_key, r.total, r.counts
            ));
        }
    }
    for r in &a.resources {
        if !b.resources.iter().any(|x| x.resource == r.resource) {
            out.push(format!("{}: no longer reported", r.resource));
        }
    }
    out
}
