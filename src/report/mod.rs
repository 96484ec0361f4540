//! The compliance audit report: what was checked, when, against which cluster, with which
//! result, for every covered object. The report is built only from labels, fingerprints,
//! hashes, counts and object names: it never contains a key or a secret value.

pub mod diff;
pub mod html;
pub mod markdown;
pub mod policy;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub use policy::{Policy, PolicyError};

use crate::GroupResource;
use crate::config::{Finding, LoadedConfig, Provider, Severity};
use crate::etcd::scan::{ResourceReport, ScanReport};
use crate::kube::{ApiserverStatus, Convergence};
use crate::rotate::State;

/// The JSON schema name and version; fields are stable within a version.
pub const SCHEMA: &str = "atrest.report/v1";

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// Stable id (`ATR-C01` …).
    pub id: String,
    pub title: String,
    pub status: Status,
    /// What was seen: counts, hashes, object names. Never data or keys.
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EtcdMember {
    pub id: String,
    pub name: String,
    pub client_urls: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EtcdInfo {
    pub endpoints: Vec<String>,
    pub cluster_id: String,
    pub version: String,
    pub members: Vec<EtcdMember>,
    /// The revision the scan was pinned at.
    pub revision: i64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyView {
    pub label: String,
    pub provider: String,
    pub fingerprint: Option<String>,
    pub added: Option<String>,
    pub promoted: Option<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceConfigView {
    pub resource: String,
    pub rule: Option<String>,
    pub write_key: String,
    /// Keys in the order the apiserver tries them.
    pub keys: Vec<KeyView>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigInfo {
    pub path: PathBuf,
    pub sha256: String,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub resources: Vec<ResourceConfigView>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RotationInfo {
    pub state_file: PathBuf,
    pub stage: Option<String>,
    pub target: Option<String>,
    pub last_finished: Option<String>,
    pub snapshot: Option<String>,
    pub snapshot_skipped: bool,
}

/// Per resource: the scan's counts and offending objects (names only), and how many are on the
/// write key.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceResult {
    #[serde(flatten)]
    pub scan: ResourceReport,
    pub on_write_key: u64,
}

impl std::ops::Deref for ResourceResult {
    type Target = ResourceReport;
    fn deref(&self) -> &ResourceReport {
        &self.scan
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LintFinding {
    pub id: String,
    pub severity: Severity,
    pub field: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub schema: String,
    pub generated_at: String,
    pub atrest_version: String,
    pub host: String,
    pub verdict: Status,
    pub etcd: EtcdInfo,
    pub apiservers: Vec<ApiserverStatus>,
    pub apiserver_leases: Vec<String>,
    pub config: ConfigInfo,
    pub rotation: Option<RotationInfo>,
    pub lint: Vec<LintFinding>,
    pub policy: Policy,
    pub checks: Vec<Check>,
    pub verified: bool,
    /// KMS v2 provider → the key ID its plugin reported.
    #[serde(default)]
    pub kms_current_key_ids: BTreeMap<String, String>,
    pub resources: Vec<ResourceResult>,
}

/// Everything a report is made from.
pub struct Inputs<'a> {
    pub config: &'a LoadedConfig,
    pub scan: &'a ScanReport,
    pub etcd: EtcdInfo,
    pub convergence: Option<&'a Convergence>,
    /// The apiserver manifest says `--encryption-provider-config` is set.
    pub manifest_sets_config: Option<bool>,
    pub state: Option<(&'a State, PathBuf)>,
    pub policy: &'a Policy,
    pub now: DateTime<Utc>,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Builds the report and its verdict.
pub fn build(inp: &Inputs<'_>) -> Report {
    let cfg = &inp.config.config;
    let keys_state = inp.state.as_ref().map(|(s, _)| &s.keys);
    let mut names = cfg.named_resources();
    if !names.contains(&GroupResource::secrets()) {
        names.insert(0, GroupResource::secrets());
    }
    let resources_cfg: Vec<ResourceConfigView> = names
        .iter()
        .map(|gr| {
            let r = cfg.resolve(gr);
            let mut keys = Vec::new();
            for p in r.providers() {
                let entries: Vec<(String, Option<String>)> = match p {
                    Provider::Keys { provider, keys } => keys
                        .iter()
                        .map(|k| {
                            (
                                crate::config::key_label(*provider, k.name()),
                                Some(k.fingerprint().to_string()),
                            )
                        })
                        .collect(),
                    other => vec![(other.write_label(), None)],
                };
                for (label, fingerprint) in entries {
                    let rec = keys_state.and_then(|k| k.get(&label));
                    keys.push(KeyView {
                        provider: p.kind().to_string(),
                        fingerprint,
                        added: rec.and_then(|r| r.added.clone()),
                        promoted: rec.and_then(|r| r.promoted.clone()),
                        label,
                    });
                }
            }
            if keys.is_empty() {
                keys.push(KeyView {
                    label: "identity".into(),
                    provider: "identity".into(),
                    fingerprint: None,
                    added: None,
                    promoted: None,
                });
            }
            ResourceConfigView {
                resource: gr.config_name(),
                rule: r.rule_name.clone(),
                write_key: r.write_label(),
                keys,
            }
        })
        .collect();

    let mut lint = crate::config::lint(cfg);
    lint.extend(crate::config::lint_file_mode(inp.config.file.mode));

    let resources: Vec<ResourceResult> = inp
        .scan
        .resources
        .iter()
        .map(|r| ResourceResult {
            on_write_key: r.total.saturating_sub(r.findings()),
            scan: r.clone(),
        })
        .collect();

    let checks = checks(inp, &resources, &resources_cfg, &lint);
    let verdict = if checks.iter().any(|c| c.status == Status::Fail) {
        Status::Fail
    } else {
        Status::Pass
    };
    Report {
        schema: SCHEMA.to_string(),
        generated_at: inp.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        atrest_version: env!("CARGO_PKG_VERSION").to_string(),
        host: host(),
        verdict,
        etcd: inp.etcd.clone(),
        apiservers: inp
            .convergence
            .map(|c| c.apiservers.clone())
            .unwrap_or_default(),
        apiserver_leases: inp
            .convergence
            .map(|c| c.leases.clone())
            .unwrap_or_default(),
        config: ConfigInfo {
            path: inp.config.path.clone(),
            sha256: inp.config.hash.clone(),
            mode: format!("{:04o}", inp.config.file.mode),
            uid: inp.config.file.uid,
            gid: inp.config.file.gid,
            resources: resources_cfg,
        },
        rotation: inp.state.as_ref().map(|(s, path)| RotationInfo {
            state_file: path.clone(),
            stage: s
                .rotation
                .as_ref()
                .map(|r| format!("{:?}", r.stage).to_lowercase()),
            target: s.rotation.as_ref().map(|r| r.target.clone()),
            last_finished: s.history.last().and_then(|r| r.finished_at.clone()),
            snapshot: s
                .rotation
                .as_ref()
                .or(s.history.last())
                .and_then(|r| r.snapshot.as_ref())
                .map(|x| {
                    format!(
                        "{} ({}, revision {})",
                        x.path.display(),
                        x.sha256,
                        x.revision
                    )
                }),
            snapshot_skipped: s
                .rotation
                .as_ref()
                .or(s.history.last())
                .is_some_and(|r| r.snapshot_skipped),
        }),
        lint: lint
            .iter()
            .map(|f| LintFinding {
                id: f.id.to_string(),
                severity: f.severity,
                field: f.field.clone(),
                message: f.message.clone(),
            })
            .collect(),
        policy: inp.policy.clone(),
        checks,
        verified: inp.scan.verified,
        kms_current_key_ids: inp.scan.kms_current_key_ids.clone(),
        resources,
    }
}

fn check(id: &str, title: &str, status: Status, evidence: Vec<String>) -> Check {
    Check {
        id: id.into(),
        title: title.into(),
        status,
        evidence,
    }
}

fn names_evidence(out: &mut Vec<String>, resource: &str, what: &str, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let shown: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
    let more = if names.len() > 20 {
        format!(" … and {} more", names.len() - 20)
    } else {
        String::new()
    };
    out.push(format!(
        "{resource}: {} {what}: {}{more}",
        names.len(),
        shown.join(", ")
    ));
}

fn checks(
    inp: &Inputs<'_>,
    resources: &[ResourceResult],
    cfg_views: &[ResourceConfigView],
    lint: &[Finding],
) -> Vec<Check> {
    let mut out = Vec::new();
    let policy = inp.policy;

    // C01: the apiserver runs with an encryption config.
    let mut ev = Vec::new();
    let reported: Vec<&ApiserverStatus> = inp
        .convergence
        .map(|c| {
            c.apiservers
                .iter()
                .filter(|a| a.config_hash.is_some())
                .collect()
        })
        .unwrap_or_default();
    for a in &reported {
        ev.push(format!(
            "{} reports encryption config {}",
            a.url,
            a.config_hash.as_deref().unwrap_or("")
        ));
    }
    if let Some(set) = inp.manifest_sets_config {
        ev.push(format!(
            "kube-apiserver manifest {} --encryption-provider-config",
            if set { "sets" } else { "does NOT set" }
        ));
    }
    let c01 = if !reported.is_empty() || inp.manifest_sets_config == Some(true) {
        Status::Pass
    } else if inp.convergence.is_none() && inp.manifest_sets_config.is_none() {
        ev.push("not checked: no apiserver access and no manifest".into());
        Status::Warn
    } else {
        Status::Fail
    };
    out.push(check(
        "ATR-C01",
        "The apiserver runs with an encryption provider config",
        c01,
        ev,
    ));

    // C02: providers appropriate for the required resources.
    let mut ev = Vec::new();
    let mut c02 = Status::Pass;
    for req in &policy.required_resources {
        let gr = GroupResource::parse(req);
        let view = cfg_views
            .iter()
            .find(|v| GroupResource::parse(&v.resource) == gr);
        let write = match view {
            Some(v) => v.write_key.clone(),
            None => inp.config.config.resolve(&gr).write_label(),
        };
        let provider = provider_of(&write);
        let st = if provider == "identity" {
            Status::Fail
        } else if policy.allowed_providers.contains(&provider) {
            Status::Pass
        } else if policy.discouraged_providers.contains(&provider) {
            Status::Warn
        } else {
            Status::Fail
        };
        ev.push(format!("{req}: writes with {write} ({})", st.as_str()));
        c02 = c02.max(st);
    }
    out.push(check(
        "ATR-C02",
        "Required resources are written with an allowed provider (not identity)",
        c02,
        ev,
    ));

    // C03: every apiserver on the same config, the file's.
    let (c03, ev) = match inp.convergence {
        None => (
            Status::Warn,
            vec!["not checked: no apiserver access".to_string()],
        ),
        Some(c) => {
            let mut ev: Vec<String> = c
                .apiservers
                .iter()
                .map(|a| format!("{}: {}", a.name(), a.reported()))
                .collect();
            ev.push(format!(
                "config file {}: {}",
                inp.config.path.display(),
                inp.config.hash
            ));
            ev.push(format!("{} identity leases", c.leases.len()));
            (
                if c.converged() {
                    Status::Pass
                } else {
                    Status::Fail
                },
                ev,
            )
        }
    };
    out.push(check(
        "ATR-C03",
        "Every apiserver runs the same config (the file's)",
        c03,
        ev,
    ));

    // C04: every stored object of every covered resource on its write key.
    let mut ev = Vec::new();
    let mut off = 0usize;
    for r in resources {
        off += r.plaintext.len() + r.stale.len();
        names_evidence(
            &mut ev,
            &r.resource,
            "not on the write key (stale)",
            &r.stale,
        );
        ev.push(format!(
            "{}: {}/{} on {}",
            r.resource, r.on_write_key, r.total, r.write_key
        ));
    }
    out.push(check(
        "ATR-C04",
        "Every stored object of every covered resource is on its write key",
        if off == 0 { Status::Pass } else { Status::Fail },
        ev,
    ));

    // C05: no plaintext where encryption is configured.
    let mut ev = Vec::new();
    let mut plain = 0;
    for r in resources {
        plain += r.plaintext.len();
        names_evidence(&mut ev, &r.resource, "stored as plaintext", &r.plaintext);
    }
    if plain == 0 {
        ev.push("no plaintext object where the config wants encryption".into());
    }
    out.push(check(
        "ATR-C05",
        "No plaintext object where encryption is configured",
        if plain == 0 {
            Status::Pass
        } else {
            Status::Fail
        },
        ev,
    ));

    // C06: nothing unreadable.
    let mut ev = Vec::new();
    let mut bad = 0;
    for r in resources {
        bad += r.undecryptable.len() + r.unknown_key.len() + r.corrupt.len();
        names_evidence(&mut ev, &r.resource, "undecryptable", &r.undecryptable);
        names_evidence(&mut ev, &r.resource, "under an unknown key", &r.unknown_key);
        names_evidence(&mut ev, &r.resource, "corrupt", &r.corrupt);
    }
    if bad == 0 {
        let total: u64 = resources.iter().map(|r| r.total).sum();
        ev.push(format!(
            "0 undecryptable, 0 unknown-key, 0 corrupt among {total} stored values"
        ));
    }
    if !inp.scan.verified {
        ev.push(
            "values were classified by prefix and key name; run with --verify to decrypt each"
                .into(),
        );
    }
    out.push(check(
        "ATR-C06",
        "No undecryptable, unknown-key or corrupt object",
        if bad == 0 { Status::Pass } else { Status::Fail },
        ev,
    ));

    // C07: key age.
    let mut ev = Vec::new();
    let mut c07 = Status::Pass;
    let mut seen = std::collections::BTreeSet::new();
    for v in cfg_views {
        let Some(k) = v.keys.first() else { continue };
        if k.provider == "identity" || !seen.insert(k.label.clone()) {
            continue;
        }
        let since = k
            .promoted
            .as_ref()
            .or(k.added.as_ref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        match since {
            Some(t) => {
                let days = (inp.now - t.with_timezone(&Utc)).num_days();
                let st = if days > policy.max_key_age_days as i64 {
                    Status::Fail
                } else {
                    Status::Pass
                };
                ev.push(format!(
                    "{}: write key for {days} days (maximum {})",
                    k.label, policy.max_key_age_days
                ));
                c07 = c07.max(st);
            }
            None => {
                ev.push(format!(
                    "{}: age unknown (not created by atrest, or no state file)",
                    k.label
                ));
                c07 = c07.max(Status::Warn);
            }
        }
    }
    out.push(check(
        "ATR-C07",
        "Write keys are younger than the maximum key age",
        c07,
        ev,
    ));

    // C08: the required resources are covered by an encrypting rule.
    let mut ev = Vec::new();
    let mut c08 = Status::Pass;
    for req in &policy.required_resources {
        let r = inp.config.config.resolve(&GroupResource::parse(req));
        let ok = r.encrypts();
        ev.push(format!(
            "{req}: {} ({})",
            r.rule_name
                .clone()
                .map(|n| format!("rule {n}"))
                .unwrap_or_else(|| "no rule".into()),
            if ok { "encrypts" } else { "does not encrypt" }
        ));
        if !ok {
            c08 = Status::Fail;
        }
    }
    out.push(check(
        "ATR-C08",
        "Required resources are covered by an encrypting rule",
        c08,
        ev,
    ));

    // C09: lint and the config file itself.
    let mut ev: Vec<String> = lint.iter().map(|f| f.to_string()).collect();
    let c09 = if lint.iter().any(|f| f.severity == Severity::Error) {
        Status::Fail
    } else if lint.iter().any(|f| f.severity == Severity::Warning) {
        Status::Warn
    } else {
        Status::Pass
    };
    ev.push(format!(
        "config file mode {:04o}, owner {}:{}",
        inp.config.file.mode, inp.config.file.uid, inp.config.file.gid
    ));
    out.push(check(
        "ATR-C09",
        "The config passes lint (file mode, provider choices)",
        c09,
        ev,
    ));

    // C10: KMS v2 values on the plugin's current key ID (only when KMS v2 values exist).
    let kms: Vec<&ResourceResult> = resources
        .iter()
        .filter(|r| !r.kms_key_ids.is_empty())
        .collect();
    if !kms.is_empty() {
        let current: Vec<&String> = inp.scan.kms_current_key_ids.values().collect();
        let mut ev: Vec<String> = inp
            .scan
            .kms_current_key_ids
            .iter()
            .map(|(p, k)| format!("KMS provider {p}: the plugin's current key ID is {k}"))
            .collect();
        let mut old = 0u64;
        for r in &kms {
            let ids: Vec<String> = r
                .kms_key_ids
                .iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect();
            ev.push(format!("{}: key IDs {}", r.resource, ids.join(", ")));
            old += r
                .kms_key_ids
                .iter()
                .filter(|(k, _)| !current.contains(k))
                .map(|(_, n)| n)
                .sum::<u64>();
        }
        let st = if current.is_empty() {
            ev.push("the plugin's current key ID is unknown (plugin not reachable)".into());
            Status::Warn
        } else if old > 0 && !policy.allow_old_kms_key_ids {
            ev.push(format!(
                "{old} values on a key ID other than the current one"
            ));
            Status::Fail
        } else {
            Status::Pass
        };
        out.push(check(
            "ATR-C10",
            "KMS v2 values are on the plugin's current key ID",
            st,
            ev,
        ));
    }
    out
}

/// `aescbc:key1` → `aescbc`; `kms:v2:name` → `kms-v2`.
fn provider_of(label: &str) -> String {
    match label.split(':').collect::<Vec<_>>().as_slice() {
        ["kms", v, ..] => format!("kms-{v}"),
        [p, ..] => p.to_string(),
        [] => String::new(),
    }
}

/// The exit code of a report: 0 PASS, 1 FAIL.
pub fn exit_code(r: &Report) -> i32 {
    match r.verdict {
        Status::Fail => 1,
        _ => 0,
    }
}
