//! `config check`: the config per covered resource, and lint findings.

use std::fmt::Write;

use atrest::config::{Finding, LoadedConfig};
use atrest::model::covered_resources;

/// The resources a summary lists: the ones a scan covers.
fn summary_resources(loaded: &LoadedConfig) -> Vec<atrest::GroupResource> {
    covered_resources(loaded.config.named_resources(), &[])
}

pub(crate) fn config_json(loaded: &LoadedConfig, findings: &[Finding]) -> serde_json::Value {
    let resources: Vec<serde_json::Value> = summary_resources(loaded)
        .iter()
        .map(|gr| {
            let r = loaded.config.resolve(gr);
            serde_json::json!({
                "resource": gr.config_name(),
                "rule": r.rule_name,
                "matched_by": r.matched_by,
                "write_key": r.write_key(),
                "providers": r.providers().map(|p| p.kind()).collect::<Vec<_>>(),
                "read_keys": r.keys_in_order(),
            })
        })
        .collect();
    serde_json::json!({
        "file": loaded.path,
        "hash": loaded.hash,
        "mode": format!("{:04o}", loaded.file.mode),
        "valid": true,
        "resources": resources,
        "findings": findings,
    })
}

pub(crate) fn config_table(loaded: &LoadedConfig, findings: &[Finding]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid ({})", loaded.path.display(), loaded.hash);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<32} {:<28} READ KEYS (in the order the apiserver tries them)",
        "RESOURCE", "WRITE KEY"
    );
    for gr in summary_resources(loaded) {
        let r = loaded.config.resolve(&gr);
        let reads: Vec<String> = r
            .keys_in_order()
            .into_iter()
            .map(|k| match k.fingerprint {
                Some(f) => format!("{} ({f})", k.label),
                None => k.label.to_string(),
            })
            .collect();
        let name = match &r.rule_name {
            Some(rule) if *rule != gr.config_name() => format!("{} (via {rule})", gr.config_name()),
            Some(_) => gr.config_name(),
            None => format!("{} (not covered)", gr.config_name()),
        };
        let _ = writeln!(
            out,
            "{:<32} {:<28} {}",
            name,
            r.write_key(),
            reads.join(", ")
        );
    }
    let _ = writeln!(out);
    out.push_str(&findings_table(findings));
    out
}

pub(crate) fn findings_table(findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        let _ = writeln!(out, "No lint findings.");
    } else {
        let _ = writeln!(out, "Lint findings:");
        for f in findings {
            let _ = writeln!(out, "  {f}");
        }
    }
    out
}
