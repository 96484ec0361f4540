//! `status`: settings and their source, config, rotation, apiservers, scan summary.

use std::fmt::Write;

use atrest::cluster::settings::{Setting, Settings};
use atrest::config::{Finding, LoadedConfig};
use atrest::keys::archive::ArchivedKey;
use atrest::kube::Convergence;
use atrest::model::census::ScanReport;
use atrest::report::overview::Overview;
use atrest::state::Rotation;

use super::config::{config_json, config_table};
use super::indent;
use super::scan::{STATUS_HINTS, scan_table};

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

/// The rotation state, what each apiserver runs, and the archived keys: what `status` adds to
/// settings, config and scan.
fn rotation_table(out: &mut String, extra: &Overview) {
    rotation_section(out, extra);
    let _ = writeln!(out);
    apiservers_section(out, &extra.convergence);
    if let Ok(served) = &extra.svm {
        let _ = writeln!(
            out,
            "  StorageVersionMigration (reencrypt --engine svm): {served}"
        );
    }
    if !extra.archived.is_empty() {
        archived_keys_section(out, &extra.archived);
    }
    let _ = writeln!(out);
}

/// The state file, what of it could not be read, and the rotation in progress if any; nothing
/// after the heading when the state is unknown.
fn rotation_section(out: &mut String, extra: &Overview) {
    let _ = writeln!(out, "Rotation ({}):", extra.state_path.display());
    for e in &extra.unreadable {
        let _ = writeln!(out, "  UNKNOWN: {e}");
    }
    match extra.state.as_ref().and_then(|s| s.rotation.as_ref()) {
        None if extra.state.is_none() => {}
        None => {
            let _ = writeln!(
                out,
                "  no rotation in progress; start one with `atrest rotate prepare` or `atrest rotate run`"
            );
        }
        Some(r) => rotation_in_progress(out, r),
    }
}

/// The rotation in progress: target, stage, the next command (or the undo, when aborted), and
/// the snapshot taken before it.
fn rotation_in_progress(out: &mut String, r: &Rotation) {
    let _ = writeln!(
        out,
        "  to {} (rules {:?}: {}), stage {}",
        r.target,
        r.rules,
        atrest::join_resources(&r.resources),
        r.stage,
    );
    if r.aborted {
        let _ = writeln!(
            out,
            "  ABORTED: the previous write key writes again; atrest is undoing the rotation. To finish the undo: {}",
            r.stage.next_command()
        );
    } else {
        let _ = writeln!(out, "  next: {}", r.stage.next_command());
    }
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

/// Which config each apiserver runs against the file, the identity leases not reached, and
/// whether they all agree.
fn apiservers_section(out: &mut String, convergence: &Result<Convergence, String>) {
    let _ = writeln!(out, "Apiservers:");
    let c = match convergence {
        Err(e) => {
            let _ = writeln!(out, "  not checked: {e}");
            return;
        }
        Ok(c) => c,
    };
    for a in &c.apiservers {
        let verdict = match &a.config_hash {
            Some(h) if *h == c.want => " (the file)".to_string(),
            Some(_) => format!(" (NOT the file: {})", c.want),
            None => String::new(),
        };
        let version = a
            .version
            .as_deref()
            .map(|v| format!(" [{v}]"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {}{version} {}{verdict}", a.name(), a.reported());
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

/// The keys retired into the archive, by label and fingerprint.
fn archived_keys_section(out: &mut String, archived: &[ArchivedKey]) {
    let _ = writeln!(out);
    let _ = writeln!(out, "Archived keys:");
    for k in archived {
        let _ = writeln!(
            out,
            "  {}:{} ({}) retired {}",
            k.provider, k.name, k.fingerprint, k.retired
        );
    }
}

pub(crate) fn status_table(
    s: &Settings,
    loaded: &LoadedConfig,
    findings: &[Finding],
    scan: Option<&anyhow::Result<ScanReport>>,
    extra: &Overview,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Settings:");
    if let Some(d) = &s.distribution {
        let _ = writeln!(
            out,
            "  {:<16} {d} (it manages the encryption config itself: rotate with `{}`)",
            "distribution",
            d.rotate_command()
        );
    }
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
    if let Some(v) = &extra.etcd_version {
        let _ = writeln!(out, "  etcd version: {v}");
    }
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
            if let Some(r) = &extra.without_scan {
                out.push_str(&super::scan::findings_section(r));
            }
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "Scan: could not complete: {e:#}");
        }
        Some(Ok(r)) => {
            let _ = writeln!(out, "Scan:");
            indent(&mut out, &scan_table(r, &STATUS_HINTS));
        }
    }
    out
}

pub(crate) fn status_json(
    s: &Settings,
    loaded: &LoadedConfig,
    findings: &[Finding],
    scan: Option<&anyhow::Result<ScanReport>>,
    extra: &Overview,
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
        "storage_version_migration": match &extra.svm {
            Ok(s) => serde_json::to_value(s).unwrap_or_default(),
            Err(e) => serde_json::json!({"error": e}),
        },
        "archived_keys": extra.archived,
        "unreadable": extra.unreadable,
        "etcd_version": extra.etcd_version,
        "scan": match scan {
            None => serde_json::Value::Null,
            Some(Ok(r)) => serde_json::to_value(r).unwrap_or_default(),
            Some(Err(e)) => serde_json::json!({"error": format!("{e:#}")}),
        },
        "findings": match (scan, &extra.without_scan) {
            (Some(Ok(r)), _) | (None, Some(r)) => serde_json::to_value(&r.findings).unwrap_or_default(),
            _ => serde_json::Value::Null,
        },
        "result": match (scan, &extra.without_scan) {
            (Some(Ok(r)), _) | (None, Some(r)) => serde_json::Value::from(r.result.clone()),
            _ => serde_json::Value::Null,
        },
    })
}
