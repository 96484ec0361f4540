//! The compliance audit report: what was checked, when, against which cluster, with which
//! result, for every covered object. The report is built only from labels, fingerprints,
//! hashes, counts and object names: it never contains a key or a secret value.

pub mod attest;
pub mod audit;
mod build;
pub mod checks;
pub mod controls;
pub mod diff;
pub mod findings;
pub mod fleet;
pub mod html;
pub mod lifecycle;
pub mod markdown;
pub mod oscal;
pub mod overview;
pub mod policy;
mod text;

use crate::model::time::Time;
use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub use build::{ReportInputs, build};
pub use policy::{Policy, PolicyError};
pub use text::checks_result_line;
pub(crate) use text::{old_copies_sections, sample_evidence};

use crate::cluster::drill::DrillResult;
use crate::config::lint_file_mode;
use crate::config::{LoadedConfig, Severity};
use crate::keys::archive::ArchivedKey;
use crate::kube::converge::Convergence;
use crate::model::census::Scope;
use crate::model::census::{
    BackupFile, EtcdInfo, FreePages, HistoryReport, MemberDb, ResourceReport, ScanReport,
    SnapshotSection,
};
use crate::model::{KeyLabel, covered_resources};
use crate::state::{KeyRecord, Rotation};
use lifecycle::{CustodyView, KeyLifecycle, LogLine};

/// The JSON schema name and version; fields are stable within a version. v2 (atrest 0.2)
/// replaced v1's per-state name lists with exact counts per verdict and key plus capped samples,
/// and added per-resource coverage by policy; `report diff` still reads v1 files.
pub const SCHEMA: &str = "atrest.report/v2";

/// The result of a check, and of the report.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Status {
    /// The check holds.
    #[default]
    #[serde(rename = "PASS")]
    Pass,
    /// Holds, with a reservation (a discouraged provider, something not checked).
    #[serde(rename = "WARN")]
    Warn,
    /// Does not hold.
    #[serde(rename = "FAIL")]
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    /// `PASS`, `WARN`, `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check of the audit.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// Stable id (`ATR-C01` …).
    pub id: String,
    /// What the check asserts.
    pub title: String,
    /// Its result.
    pub status: Status,
    /// What was seen: counts, hashes, object names. Never data or keys.
    pub evidence: Vec<String>,
    /// The controls it gives evidence for ([`controls`]), CIS numbered per the report's
    /// benchmark.
    #[serde(default)]
    pub controls: Vec<controls::Control>,
}

/// One key of a resource's provider list, as the report shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyView {
    /// `aescbc:key1`, `kms:v2:vault`, `identity`.
    pub label: String,
    /// `aescbc`, `kms`, `identity`, …
    pub provider: String,
    /// `sha256:` + 16 hex digits of the key bytes (local keys only).
    pub fingerprint: Option<String>,
    /// When atrest added it (from the rotation state).
    #[serde(default, with = "crate::model::time::rfc3339_opt")]
    pub added: Option<Time>,
    /// When atrest made it the write key.
    #[serde(default, with = "crate::model::time::rfc3339_opt")]
    pub promoted: Option<Time>,
}

/// A covered resource's config.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceConfigView {
    /// The group resource.
    pub resource: String,
    /// The rule that covers it, if any.
    pub rule: Option<String>,
    /// What new writes get.
    pub write_key: KeyLabel,
    /// Keys in the order the apiserver tries them.
    pub keys: Vec<KeyView>,
}

/// The config file and what it says per covered resource.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigInfo {
    /// Where it is.
    pub path: PathBuf,
    /// The apiserver's config hash (`sha256:` + hex of the file bytes).
    pub sha256: String,
    /// File mode, octal.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Per covered resource.
    pub resources: Vec<ResourceConfigView>,
}

/// The rotation state, as far as an auditor needs it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RotationInfo {
    /// The state file.
    pub state_file: PathBuf,
    /// The stage of the rotation in progress.
    pub stage: Option<String>,
    /// Its target (`aescbc`, `kms:v2:vault`).
    pub target: Option<KeyLabel>,
    /// When the last rotation finished.
    #[serde(default, with = "crate::model::time::rfc3339_opt")]
    pub last_finished: Option<Time>,
    /// The etcd snapshot taken before the rotation (path, sha256, revision).
    pub snapshot: Option<String>,
    /// The snapshot was skipped on request.
    pub snapshot_skipped: bool,
}

/// One apiserver and the config hash it reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiserverView {
    /// `url (lease)`.
    pub name: String,
    /// The hash it reports in `last_config_info`, if any.
    pub config_hash: Option<String>,
    /// Its hash, or why there is none.
    pub reported: String,
    /// Its Kubernetes release (`v1.34.4`), when it answered `/version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What the apiservers said (the caller surveys them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiserverSurvey {
    /// Every apiserver reached.
    pub apiservers: Vec<ApiserverView>,
    /// Names of the apiserver identity leases.
    pub leases: Vec<String>,
    /// Every apiserver reports the file's hash, and none is missing.
    pub converged: bool,
    /// Identity leases no apiserver asked answered for.
    pub unreached: Vec<String>,
}

impl ApiserverSurvey {
    /// What every apiserver reported, as reports and the exporter show it.
    pub fn of(c: &Convergence) -> Self {
        Self {
            apiservers: c
                .apiservers
                .iter()
                .map(|s| ApiserverView {
                    name: s.name(),
                    config_hash: s.config_hash.clone(),
                    reported: s.reported(),
                    version: s.version.clone(),
                })
                .collect(),
            leases: c.leases.clone(),
            converged: c.converged(),
            unreached: c.unreached.clone(),
        }
    }
}

/// How a resource's stored values stand against the policy: the report's headline measure
/// is `allowed` (encrypted with an allowed provider); plaintext always counts against it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Coverage {
    /// Encrypted (and readable) with a provider the policy allows.
    pub allowed: u64,
    /// Encrypted with a provider the policy discourages.
    pub discouraged: u64,
    /// Encrypted with a provider the policy neither allows nor discourages.
    pub disallowed: u64,
    /// Stored unencrypted.
    pub plaintext: u64,
    /// Undecryptable, unknown key or corrupt.
    pub unreadable: u64,
    /// Encrypted with the resource's write key (the second measure).
    pub on_write_key: u64,
}

impl Coverage {
    /// Counts a resource's stored values against `policy`.
    pub fn of(r: &ResourceReport, policy: &Policy) -> Coverage {
        let mut c = Coverage {
            plaintext: r.verdicts.plaintext,
            unreadable: r.verdicts.unreadable(),
            on_write_key: r.verdicts.on_write_key,
            ..Default::default()
        };
        for (label, counts) in &r.keys {
            let n = counts.encrypted();
            match policy.judge(label) {
                Status::Pass => c.allowed += n,
                Status::Warn => c.discouraged += n,
                Status::Fail => c.disallowed += n,
            }
        }
        c
    }

    /// `part` of `total` as a percentage with one decimal; 0 stored values is 100 %.
    pub fn percent(part: u64, total: u64) -> f64 {
        if total == 0 {
            100.0
        } else {
            part as f64 * 100.0 / total as f64
        }
    }
}

/// Per resource: the scan's exact counts and samples, whether the policy requires it to be
/// encrypted, and its coverage.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceResult {
    /// The scan's counts and samples.
    #[serde(flatten)]
    pub scan: ResourceReport,
    /// The policy lists it in `requiredResources`.
    pub required: bool,
    /// Stored values against the policy.
    pub coverage: Coverage,
}

impl ResourceResult {
    /// Plaintext here is a finding: the config encrypts it, or the policy requires it.
    pub fn plaintext_is_finding(&self) -> bool {
        crate::model::plaintext_is_finding(self.scan.encrypts, self.required)
    }
}

impl std::ops::Deref for ResourceResult {
    type Target = ResourceReport;
    fn deref(&self) -> &ResourceReport {
        &self.scan
    }
}

/// A lint finding, as the report shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LintFinding {
    /// Stable id.
    pub id: String,
    /// How bad.
    pub severity: Severity,
    /// The field path, when one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The audit report.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// RFC 3339.
    pub generated_at: String,
    /// atrest's version.
    pub atrest_version: String,
    /// The host it ran on.
    pub host: String,
    /// FAIL when any check fails, else PASS (`verdict` in the JSON, as auditors call it).
    #[serde(rename = "verdict")]
    pub outcome: Status,
    /// Checks that warn.
    #[serde(default)]
    pub warnings: u64,
    /// `PASS`, `PASS with N warnings`, `FAIL (N of M checks)`: the outcome as every format
    /// prints it.
    #[serde(default)]
    pub result: String,
    /// What was read: the census of etcd (or the resources asked for), whether history was
    /// read, which backup files were surveyed, whether the apiservers were asked.
    #[serde(default)]
    pub scope: ReportScope,
    /// The etcd cluster read.
    pub etcd: EtcdInfo,
    /// What each apiserver reported.
    pub apiservers: Vec<ApiserverView>,
    /// The apiserver identity leases.
    pub apiserver_leases: Vec<String>,
    /// The config file.
    pub config: ConfigInfo,
    /// The rotation state, when there is one.
    pub rotation: Option<RotationInfo>,
    /// Lint findings of the config.
    pub lint: Vec<LintFinding>,
    /// The policy the checks applied.
    pub policy: Policy,
    /// Every check, in id order.
    pub checks: Vec<Check>,
    /// What the scan found, judged by the config and the policy, with what to do (the same
    /// findings `atrest scan` prints and exits by).
    #[serde(default)]
    pub findings: Vec<crate::model::Finding>,
    /// Every value was decrypted.
    pub verified: bool,
    /// KMS v2 provider → the key ID its plugin reported.
    #[serde(default)]
    pub kms_current_key_ids: BTreeMap<String, String>,
    /// Per covered resource.
    pub resources: Vec<ResourceResult>,
    /// The db file audited instead of a live etcd (`report --snapshot`): which file, and the
    /// keys needed to open it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<SnapshotSection>,
    /// Old copies (`--history`): etcd history, free pages, members' db sizes, and the etcdctl
    /// commands that drop them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residue: Option<ResidueView>,
    /// The CIS Kubernetes Benchmark that applies to the cluster's release (its numbers are the
    /// checks' CIS controls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cis_benchmark: Option<controls::CisBenchmark>,
    /// Every key atrest knows (config, rotation state, key archive) and its life.
    #[serde(default)]
    pub key_lifecycle: Vec<KeyLifecycle>,
    /// Every rotation step the state logs: when, who, where, what it proved.
    #[serde(default)]
    pub rotation_log: Vec<LogLine>,
    /// Where retired keys and config backups are kept (sealed to custodians or plaintext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custody: Option<CustodyView>,
    /// The restore drill attached with `--drill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillResult>,
}

/// What a report read, for its scope section.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReportScope {
    /// What the scan read.
    pub scan: Scope,
    /// etcd's history and the members' db sizes were read (not with `--no-history`).
    pub history: bool,
    /// Backup files surveyed (the state folder's snapshots, rotation records, `--backup-dir`).
    pub backup_files: Option<usize>,
    /// The apiservers were asked which config they run.
    pub apiservers: bool,
    /// Values were decrypted (not `--no-verify`).
    #[serde(default)]
    pub decrypted: bool,
    /// Encrypted values that were not decrypted: all of them with `--no-verify`, else those
    /// whose KMS plugin could not be asked.
    #[serde(default)]
    pub not_decrypted: u64,
    /// The KMS plugins that could not be asked, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kms_not_asked: Vec<String>,
}

/// The old copies a report found, as the scan read them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResidueView {
    /// Residue in all ([`ScanReport::residue`]).
    pub total: u64,
    /// Older revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryReport>,
    /// Free pages of the db file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_pages: Option<FreePages>,
    /// Each member's db size against its size in use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberDb>,
    /// The commands that drop it; atrest never runs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup: Vec<String>,
    /// Every backup file surveyed, with what it still holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupFile>,
}
