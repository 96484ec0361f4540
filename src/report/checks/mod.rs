//! The audit's checks: one function each, run in id order from one table. Every check reads
//! exact counts; names are samples and say so (`showing N of M`).

mod data;
mod keys;

use data::{no_plaintext, on_write_key, readable, residue, sensitive};
use keys::{custody, drill, key_age, kms_key_ids};

use super::policy::CustodyRule;
use super::{Check, ReportInputs, ResourceConfigView, ResourceResult, Status, sample_evidence};
use crate::GroupResource;
use crate::config::{Finding, Severity};
use crate::model::{FindingKind, KeyLabel, Level, Verdict};
use crate::state::key_in_use_since;

/// What every check reads.
pub struct CheckInput<'a> {
    /// The report's inputs.
    pub inp: &'a ReportInputs<'a>,
    /// Per covered resource, with coverage.
    pub resources: &'a [ResourceResult],
    /// The config per covered resource.
    pub cfg_views: &'a [ResourceConfigView],
    /// Lint findings (config and file mode).
    pub lint: &'a [Finding],
    /// What the scan found ([`crate::report::findings::assess`]): the data checks take their
    /// status from these, so the report fails exactly where `atrest scan` exits 1.
    pub findings: &'a [crate::model::Finding],
}

impl CheckInput<'_> {
    /// The findings of these kinds.
    fn of(&self, kinds: &[FindingKind]) -> impl Iterator<Item = &crate::model::Finding> {
        let kinds = kinds.to_vec();
        self.findings
            .iter()
            .filter(move |f| kinds.contains(&f.kind))
    }

    /// FAIL when one of these findings fails, WARN when one warns, else PASS.
    fn status_of(&self, kinds: &[FindingKind]) -> Status {
        match self.of(kinds).map(|f| f.level).max() {
            Some(Level::Fail) => Status::Fail,
            Some(Level::Warn) => Status::Warn,
            None => Status::Pass,
        }
    }
}

type CheckFn = fn(&CheckInput<'_>) -> Option<(Status, Vec<String>)>;

/// Every check: id, title, function (`None` when the check does not apply).
pub const CHECKS: &[(&str, &str, CheckFn)] = &[
    (
        "ATR-C01",
        "The apiserver runs with an encryption provider config",
        config_in_use,
    ),
    (
        "ATR-C02",
        "Required resources are written with an allowed provider (not identity)",
        required_write_provider,
    ),
    (
        "ATR-C03",
        "Every apiserver runs the same config (the file's)",
        converged,
    ),
    (
        "ATR-C04",
        "Every stored object of every encrypted or required resource is encrypted with its write key",
        on_write_key,
    ),
    (
        "ATR-C05",
        "No plaintext object where encryption is configured or required",
        no_plaintext,
    ),
    (
        "ATR-C06",
        "No undecryptable, unknown-key or corrupt object",
        readable,
    ),
    (
        "ATR-C07",
        "Write keys are younger than the maximum key age",
        key_age,
    ),
    (
        "ATR-C08",
        "Required resources are covered by an encrypting rule",
        required_covered,
    ),
    (
        "ATR-C09",
        "The config passes lint (file mode, provider choices)",
        lint_clean,
    ),
    (
        "ATR-C10",
        "KMS v2 values are on the plugin's current key ID",
        kms_key_ids,
    ),
    (
        "ATR-C11",
        "No plaintext or retired-key copies left in etcd history, free pages or backup files",
        residue,
    ),
    (
        "ATR-C12",
        "No secret-looking data stored as plaintext in resources the config does not encrypt",
        sensitive,
    ),
    (
        "ATR-C13",
        "Retired keys and config backups are kept as the policy's custody rule asks",
        custody,
    ),
    (
        "ATR-C14",
        "A restore drill opened every value of a backup with the keys in custody",
        drill,
    ),
];

/// Runs every check that applies, in id order.
pub fn run(c: &CheckInput<'_>) -> Vec<Check> {
    CHECKS
        .iter()
        .filter_map(|(id, title, f)| {
            f(c).map(|(status, evidence)| Check {
                id: id.to_string(),
                title: title.to_string(),
                status,
                evidence,
                controls: Vec::new(),
            })
        })
        .collect()
}

fn config_in_use(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let inp = c.inp;
    // A backup's audit is about the file, not about a running apiserver.
    inp.scan.snapshot.as_ref().map_or(Some(()), |_| None)?;
    let mut ev = Vec::new();
    let reported: Vec<_> = inp
        .apiservers
        .iter()
        .flat_map(|s| &s.apiservers)
        .filter(|a| a.config_hash.is_some())
        .collect();
    for a in &reported {
        ev.push(format!(
            "{} reports encryption config {}",
            a.name,
            a.config_hash.as_deref().unwrap_or("")
        ));
    }
    if let Some(set) = inp.manifest_sets_config {
        ev.push(format!(
            "kube-apiserver manifest {} --encryption-provider-config",
            if set { "sets" } else { "does NOT set" }
        ));
    }
    let st = if !reported.is_empty() || inp.manifest_sets_config == Some(true) {
        Status::Pass
    } else if inp.apiservers.is_none() && inp.manifest_sets_config.is_none() {
        ev.push("not checked: no apiserver access and no manifest".into());
        Status::Warn
    } else {
        Status::Fail
    };
    Some((st, ev))
}

fn required_write_provider(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let inp = c.inp;
    let mut ev = Vec::new();
    let mut st = Status::Pass;
    for req in &inp.policy.required_resources {
        let write: KeyLabel = inp
            .config
            .config
            .resolve(&GroupResource::parse(req))
            .write_key();
        let s = inp.policy.judge(&write);
        ev.push(format!("{req}: writes with {write} ({})", s.as_str()));
        st = st.max(s);
    }
    Some((st, ev))
}

fn converged(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let inp = c.inp;
    inp.scan.snapshot.as_ref().map_or(Some(()), |_| None)?;
    let Some(s) = &inp.apiservers else {
        return Some((
            Status::Warn,
            vec!["not checked: no apiserver access".to_string()],
        ));
    };
    let mut ev: Vec<String> = s
        .apiservers
        .iter()
        .map(|a| format!("{}: {}", a.name, a.reported))
        .collect();
    ev.push(format!(
        "config file {}: {}",
        inp.config.path.display(),
        inp.config.hash
    ));
    ev.push(format!("apiserver identity leases: {}", s.leases.len()));
    ev.extend(
        c.of(&[FindingKind::ApiserversDisagree])
            .map(|f| f.message.clone()),
    );
    Some((c.status_of(&[FindingKind::ApiserversDisagree]), ev))
}

fn required_covered(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    let mut st = Status::Pass;
    for req in &c.inp.policy.required_resources {
        let r = c.inp.config.config.resolve(&GroupResource::parse(req));
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
            st = Status::Fail;
        }
    }
    Some((st, ev))
}

fn lint_clean(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let lint = c.lint;
    let file = &c.inp.config.file;
    let mut ev: Vec<String> = lint.iter().map(|f| f.to_string()).collect();
    let st = if lint.iter().any(|f| f.severity == Severity::Error) {
        Status::Fail
    } else if lint.iter().any(|f| f.severity == Severity::Warning) {
        Status::Warn
    } else {
        Status::Pass
    };
    ev.push(format!(
        "config file mode {:04o}, owner {}:{}",
        file.mode, file.uid, file.gid
    ));
    Some((st, ev))
}

/// Only when KMS v2 values exist.
#[cfg(test)]
mod tests;
