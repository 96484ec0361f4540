//! Human tables and JSON documents. Nothing here ever sees key material: keys are shown by
//! label and fingerprint only.

use std::fmt::Write;

use atrest::GroupResource;
use atrest::config::{Finding, LoadedConfig, Provider, Resolved, key_label};
use atrest::etcd::scan::ScanReport;
use atrest::settings::{Setting, Settings};

pub fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

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
                label: key_label(*provider, k.name()),
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

/// The resources a summary lists: every one the config names, and secrets always.
fn summary_resources(loaded: &LoadedConfig) -> Vec<GroupResource> {
    let mut v = loaded.config.named_resources();
    if !v.contains(&GroupResource::secrets()) {
        v.insert(0, GroupResource::secrets());
    }
    v
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

pub fn scan_table(report: &ScanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "etcd revision {} · {}",
        report.revision,
        if report.verified {
            "every value decrypted (--verify)"
        } else {
            "classified by prefix, key name and shape (add --verify to decrypt)"
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<36} {:<26} {:>8}  STORED AS",
        "RESOURCE", "WRITE KEY", "TOTAL"
    );
    for r in &report.resources {
        let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let name = match &r.rule {
            Some(rule) if *rule != r.resource => format!("{} (via {rule})", r.resource),
            _ => r.resource.clone(),
        };
        let _ = writeln!(
            out,
            "{:<36} {:<26} {:>8}  {}",
            name,
            r.write_key,
            r.total,
            if counts.is_empty() {
                "-".to_string()
            } else {
                counts.join(", ")
            }
        );
        for (state, n) in &r.states {
            if !matches!(state.as_str(), "plaintext" | "encrypted-ok" | "kms") {
                let _ = writeln!(out, "{:<36} {:<26} {:>8}  {state}", "", "", n);
            }
        }
    }
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
    let attention: Vec<_> = report
        .resources
        .iter()
        .filter(|r| r.findings() > 0)
        .collect();
    let _ = writeln!(out);
    if attention.is_empty() {
        let _ = writeln!(out, "Every stored object is on its resource's write key.");
        return out;
    }
    let _ = writeln!(out, "Needs attention:");
    for r in attention {
        for (what, list) in [
            ("plaintext, but the config wants encryption", &r.plaintext),
            ("stale: on a read key, not the write key", &r.stale),
            (
                "undecryptable: no configured key opens it",
                &r.undecryptable,
            ),
            (
                "unknown key: a provider or key the config does not have",
                &r.unknown_key,
            ),
            ("corrupt: malformed stored value", &r.corrupt),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {} — {} {}:", r.resource, list.len(), what);
            for name in list.iter().take(50) {
                let _ = writeln!(out, "    {name}");
            }
            if list.len() > 50 {
                let _ = writeln!(out, "    … {} more (use -o json for all)", list.len() - 50);
            }
        }
        if r.lists_truncated {
            let _ = writeln!(
                out,
                "  {} — more objects than --max-list; counts above are complete",
                r.resource
            );
        }
    }
    out
}

fn provenance<T: std::fmt::Debug>(
    out: &mut String,
    name: &str,
    s: Option<&Setting<T>>,
    show: impl Fn(&T) -> String,
) {
    match s {
        Some(s) => {
            let _ = writeln!(
                out,
                "  {:<16} {:<60} from {}",
                name,
                show(&s.value),
                s.source
            );
        }
        None => {
            let _ = writeln!(out, "  {name:<16} (not set)");
        }
    }
}

/// What `atrest status` adds beyond settings, config and scan.
pub struct StatusExtra {
    pub state_path: std::path::PathBuf,
    pub state: Option<atrest::rotate::State>,
    pub archived: Vec<atrest::keys::archive::ArchivedKey>,
    pub convergence: Result<atrest::kube::Convergence, String>,
}

fn rotation_table(out: &mut String, extra: &StatusExtra) {
    let _ = writeln!(out, "Rotation ({}):", extra.state_path.display());
    match extra.state.as_ref().and_then(|s| s.rotation.as_ref()) {
        None => {
            let _ = writeln!(
                out,
                "  no rotation in progress; start one with `atrest rotate prepare` or `atrest rotate run`"
            );
        }
        Some(r) => {
            let _ = writeln!(
                out,
                "  to {} (rules {:?}: {}), stage {:?}{}",
                r.target,
                r.rules,
                r.resources.join(", "),
                r.stage,
                if r.aborted { " (aborted)" } else { "" }
            );
            let _ = writeln!(out, "  next: {}", r.stage.next_command());
            match &r.snapshot {
                Some(snap) => {
                    let _ = writeln!(
                        out,
                        "  snapshot: {} ({} bytes, {}, revision {})",
                        snap.path.display(),
                        snap.size,
                        snap.sha256,
                        snap.revision
                    );
                }
                None if r.snapshot_skipped => {
                    let _ = writeln!(out, "  snapshot: skipped (--no-snapshot)");
                }
                None => {}
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Apiservers:");
    match &extra.convergence {
        Err(e) => {
            let _ = writeln!(out, "  not checked: {e}");
        }
        Ok(c) => {
            for a in &c.apiservers {
                let verdict = match &a.config_hash {
                    Some(h) if *h == c.want => " (the file)".to_string(),
                    Some(_) => format!(" (NOT the file: {})", c.want),
                    None => String::new(),
                };
                let _ = writeln!(out, "  {} {}{verdict}", a.name(), a.reported());
            }
            for l in &c.unreached {
                let _ = writeln!(
                    out,
                    "  identity lease {l}: not reached (pass --apiserver URL)"
                );
            }
            let _ = writeln!(
                out,
                "  {}",
                if c.converged() {
                    "every apiserver runs the file"
                } else {
                    "NOT converged"
                }
            );
        }
    }
    if !extra.archived.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Archived keys:");
        for k in &extra.archived {
            let _ = writeln!(
                out,
                "  {}:{} ({}) retired {}",
                k.provider, k.name, k.fingerprint, k.retired
            );
        }
    }
    let _ = writeln!(out);
}

pub fn status_table(
    s: &Settings,
    loaded: &LoadedConfig,
    findings: &[Finding],
    scan: Option<&anyhow::Result<ScanReport>>,
    extra: &StatusExtra,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Settings:");
    provenance(&mut out, "config", s.config.as_ref(), |p| {
        p.display().to_string()
    });
    provenance(&mut out, "etcd endpoints", Some(&s.endpoints), |v| {
        v.join(",")
    });
    provenance(&mut out, "etcd CA", s.cacert.as_ref(), |p| {
        p.display().to_string()
    });
    provenance(&mut out, "etcd cert", s.cert.as_ref(), |p| {
        p.display().to_string()
    });
    provenance(&mut out, "etcd key", s.key.as_ref(), |p| {
        p.display().to_string()
    });
    provenance(&mut out, "etcd user", s.user.as_ref(), |u| u.clone());
    provenance(&mut out, "etcd prefix", Some(&s.etcd_prefix), |p| p.clone());
    provenance(&mut out, "kubeconfig", s.kubeconfig.as_ref(), |p| {
        p.display().to_string()
    });
    let _ = writeln!(out);
    let _ = writeln!(out, "Config:");
    indent(&mut out, &config_table(loaded, findings));
    let _ = writeln!(out);
    rotation_table(&mut out, extra);
    match scan {
        None => {
            let _ = writeln!(out, "Scan: skipped (--no-scan)");
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "Scan: could not complete: {e:#}");
        }
        Some(Ok(r)) => {
            let _ = writeln!(out, "Scan:");
            indent(&mut out, &scan_table(r));
        }
    }
    out
}

pub fn status_json(
    s: &Settings,
    loaded: &LoadedConfig,
    findings: &[Finding],
    scan: Option<&anyhow::Result<ScanReport>>,
    extra: &StatusExtra,
) -> serde_json::Value {
    serde_json::json!({
        "settings": s,
        "config": config_json(loaded, findings),
        "state_file": extra.state_path,
        "rotation": extra.state.as_ref().and_then(|s| s.rotation.as_ref()),
        "next": extra.state.as_ref().and_then(|s| s.rotation.as_ref()).map(|r| r.stage.next_command()),
        "apiservers": match &extra.convergence {
            Ok(c) => serde_json::to_value(c).unwrap_or_default(),
            Err(e) => serde_json::json!({"error": e}),
        },
        "converged": extra.convergence.as_ref().map(|c| c.converged()).unwrap_or(false),
        "archived_keys": extra.archived,
        "scan": match scan {
            None => serde_json::Value::Null,
            Some(Ok(r)) => serde_json::to_value(r).unwrap_or_default(),
            Some(Err(e)) => serde_json::json!({"error": format!("{e:#}")}),
        },
    })
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "  {line}");
        }
    }
}

pub fn reencrypt_table(r: &atrest::migrate::ReencryptReport) -> String {
    let mut out = String::new();
    let t = &r.total;
    if r.dry_run {
        let _ = writeln!(
            out,
            "dry run at etcd revision {}: {} objects would be rewritten",
            r.revision, t.targeted
        );
        for name in &r.would_rewrite {
            let _ = writeln!(out, "  {name}");
        }
        if (r.would_rewrite.len() as u64) < t.targeted {
            let _ = writeln!(
                out,
                "  … {} more",
                t.targeted - r.would_rewrite.len() as u64
            );
        }
        return out;
    }
    let _ = writeln!(
        out,
        "reencrypt{}: {} targeted, {} rewritten, {} already current, {} conflicts re-checked, {} gone, {} given up, {} PATCH requests ({:.1} s)",
        if r.resumed { " (resumed)" } else { "" },
        t.targeted,
        t.rewritten,
        t.already_current,
        t.conflicts,
        t.gone,
        t.given_up,
        t.writes,
        r.elapsed_seconds
    );
    if r.resources.len() > 1 {
        for (res, c) in &r.resources {
            let _ = writeln!(
                out,
                "  {res}: {} targeted, {} rewritten, {} already current, {} gone, {} given up",
                c.targeted, c.rewritten, c.already_current, c.gone, c.given_up
            );
        }
    }
    if t.unchanged > 0 {
        let _ = writeln!(
            out,
            "{} objects were accepted without a write: the apiserver did not see them as stale (has it loaded the config?)",
            t.unchanged
        );
    }
    for g in &r.given_up {
        let _ = writeln!(out, "  given up: {g}");
    }
    if r.interrupted {
        let _ = writeln!(
            out,
            "interrupted: progress saved in {}; run again with --resume",
            r.checkpoint.display()
        );
        return out;
    }
    if r.remaining == 0 {
        let _ = writeln!(
            out,
            "proof: etcd read again: every object is on its write key"
        );
    } else {
        let _ = writeln!(
            out,
            "proof: etcd read again: {} objects are still not on their write key:",
            r.remaining
        );
        for name in &r.remaining_objects {
            let _ = writeln!(out, "  {name}");
        }
    }
    out
}
