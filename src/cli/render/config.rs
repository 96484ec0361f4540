//! `config check`: the config per covered resource, and lint findings.

use std::fmt::Write;

use atrest::config::{Finding, LoadedConfig, Provider, Resolved};
use atrest::model::{KeyLabel, covered_resources};

#[derive(serde::Serialize)]
pub struct KeyView {
    /// `aescbc:key1`, `identity`, `kms:v2:name`.
    pub label: String,
    pub provider: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Every key a resource can read, in the order the apiserver tries them.
pub fn key_views(resolved: &Resolved) -> Vec<KeyView> {
    if resolved.entries.is_empty() {
        return vec![KeyView {
            label: "identity".into(),
            provider: "identity",
            fingerprint: None,
            endpoint: None,
        }];
    }
    let mut out = Vec::new();
    for p in resolved.providers() {
        match p {
            Provider::Identity => out.push(KeyView {
                label: "identity".into(),
                provider: "identity",
                fingerprint: None,
                endpoint: None,
            }),
            Provider::Keys { provider, keys } => out.extend(keys.iter().map(|k| KeyView {
                label: KeyLabel::key(*provider, k.name()).to_string(),
                provider: provider.name(),
                fingerprint: Some(k.fingerprint().to_string()),
                endpoint: None,
            })),
            Provider::Kms(k) => out.push(KeyView {
                label: p.write_label(),
                provider: "kms",
                fingerprint: None,
                endpoint: Some(k.endpoint.clone()),
            }),
        }
    }
    out
}

/// The resources a summary lists: the ones a scan covers.
fn summary_resources(loaded: &LoadedConfig) -> Vec<atrest::GroupResource> {
    covered_resources(loaded.config.named_resources(), &[])
}

pub fn config_json(loaded: &LoadedConfig, findings: &[Finding]) -> serde_json::Value {
    let resources: Vec<serde_json::Value> = summary_resources(loaded)
        .iter()
        .map(|gr| {
            let r = loaded.config.resolve(gr);
            serde_json::json!({
                "resource": gr.config_name(),
                "rule": r.rule_name,
                "matched_by": r.matched_by,
                "write_key": r.write_label(),
                "providers": r.providers().map(|p| p.kind()).collect::<Vec<_>>(),
                "read_keys": key_views(&r),
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

pub fn config_table(loaded: &LoadedConfig, findings: &[Finding]) -> String {
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
        let reads: Vec<String> = key_views(&r)
            .into_iter()
            .map(|k| match k.fingerprint {
                Some(f) => format!("{} ({f})", k.label),
                None => k.label,
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
            r.write_label(),
            reads.join(", ")
        );
    }
    let _ = writeln!(out);
    out.push_str(&findings_table(findings));
    out
}

pub fn findings_table(findings: &[Finding]) -> String {
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
