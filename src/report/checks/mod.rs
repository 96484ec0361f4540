//! The audit's checks: one function each, run in id order from one table. Every check reads
//! exact counts; names are samples and say so (`showing N of M`).

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

fn on_write_key(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    let mut unchecked = Vec::new();
    for r in c.resources {
        if !r.plaintext_is_finding() {
            if r.verdicts.stale > 0 {
                ev.push(format!(
                    "{}: {} stale (on a read key, not the write key {})",
                    r.resource, r.verdicts.stale, r.write_key
                ));
            } else {
                unchecked.push(r.resource.as_str());
            }
            continue;
        }
        // Plaintext counts against it even under an identity write key: an encrypted or
        // required resource must be encrypted with its write key. Unreadable values are C06's.
        if !r.encrypts {
            ev.push(format!(
                "{}: NOT encrypted: its write key is identity; {} of {} stored as plaintext",
                r.resource, r.verdicts.plaintext, r.total
            ));
        } else {
            ev.push(format!(
                "{}: {}/{} encrypted with the write key {} ({} stale, {} plaintext, {} unreadable)",
                r.resource,
                r.verdicts.on_write_key,
                r.total,
                r.write_key,
                r.verdicts.stale,
                r.verdicts.plaintext,
                r.verdicts.unreadable()
            ));
        }
        ev.extend(sample_evidence(
            r,
            Verdict::Stale,
            "not on the write key (stale)",
        ));
    }
    if !unchecked.is_empty() {
        ev.push(format!(
            "{} other resources are written as plaintext by the config and not required by the policy (their stored values are counted in coverage): {}",
            unchecked.len(),
            unchecked.join(", ")
        ));
    }
    ev.extend(
        c.of(&[FindingKind::Stale, FindingKind::Plaintext])
            .map(|f| f.message.clone()),
    );
    Some((
        c.status_of(&[FindingKind::Stale, FindingKind::Plaintext]),
        ev,
    ))
}

fn no_plaintext(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    let mut plain = 0u64;
    for r in c.resources.iter().filter(|r| r.plaintext_is_finding()) {
        plain += r.verdicts.plaintext;
        ev.extend(sample_evidence(
            r,
            Verdict::Plaintext,
            "stored as plaintext",
        ));
    }
    let wanted = c
        .resources
        .iter()
        .filter(|r| r.plaintext_is_finding())
        .count();
    if plain == 0 {
        ev.push(format!(
            "no plaintext object in the {wanted} resources the config encrypts or the policy requires encrypted"
        ));
    } else {
        ev.insert(
            0,
            format!("{plain} plaintext objects where encryption is configured or required"),
        );
    }
    Some((c.status_of(&[FindingKind::Plaintext]), ev))
}

fn readable(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    for r in c.resources {
        for (v, what) in [
            (Verdict::Undecryptable, "undecryptable"),
            (Verdict::UnknownKey, "under a key its config does not have"),
            (Verdict::Corrupt, "corrupt"),
        ] {
            ev.extend(sample_evidence(r, v, what));
        }
    }
    let kinds = [FindingKind::UnknownKey, FindingKind::Unreadable];
    ev.extend(c.of(&kinds).map(|f| f.message.clone()));
    if c.of(&kinds).next().is_none() {
        let total: u64 = c.resources.iter().map(|r| r.total).sum();
        ev.push(format!(
            "0 undecryptable, 0 unknown-key, 0 corrupt among {total} stored values of {} resources",
            c.resources.len()
        ));
    }
    let mut status = c.status_of(&kinds);
    let unverified = c.inp.scan.unverified();
    if c.inp.scan.verified && unverified > 0 {
        let per: Vec<String> = c
            .resources
            .iter()
            .filter(|r| r.unverified > 0)
            .map(|r| format!("{} {}", r.unverified, r.resource))
            .collect();
        let why = if c.inp.scan.kms_not_asked.is_empty() {
            "their KMS plugin does not serve the API that opens them".to_string()
        } else {
            c.inp.scan.kms_not_asked.join("; ")
        };
        ev.push(format!(
            "{unverified} encrypted values were NOT decrypted ({}): {why}; they are classified by prefix, provider and key ID only, so this check cannot show that they open",
            per.join(", ")
        ));
        status = status.max(Status::Warn);
    }
    if !c.inp.scan.verified {
        ev.push(
            "values were classified by prefix and key name only (--no-verify): none was decrypted, so this check cannot show that they open"
                .into(),
        );
        // No PASS covers more than was read.
        status = status.max(Status::Warn);
    }
    Some((status, ev))
}

fn key_age(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let policy = c.inp.policy;
    let mut ev = Vec::new();
    let mut st = Status::Pass;
    let mut seen = std::collections::BTreeSet::new();
    for v in c.cfg_views {
        let Some(k) = v.keys.first() else { continue };
        if k.provider == "identity" {
            ev.push(format!(
                "{}: not encrypted (the write key is identity): no key to age",
                v.resource
            ));
            continue;
        }
        if !seen.insert(k.label.clone()) {
            continue;
        }
        let since = key_in_use_since(k.promoted, k.added);
        match since {
            Some(t) => {
                let days = (c.inp.now - t).num_days();
                if days > policy.max_key_age_days as i64 {
                    st = Status::Fail;
                }
                ev.push(format!(
                    "{}: write key for {days} days (maximum {})",
                    k.label, policy.max_key_age_days
                ));
            }
            None => {
                ev.push(format!(
                    "{}: age unknown (not created by atrest, or no state file)",
                    k.label
                ));
                st = st.max(Status::Warn);
            }
        }
    }
    Some((st, ev))
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
fn kms_key_ids(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let scan = c.inp.scan;
    let kms: Vec<&ResourceResult> = c
        .resources
        .iter()
        .filter(|r| !r.kms_key_ids.is_empty())
        .collect();
    if kms.is_empty() {
        return None;
    }
    let current: Vec<&String> = scan.kms_current_key_ids.values().collect();
    let mut ev: Vec<String> = scan
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
    } else if old > 0 && !c.inp.policy.allow_old_kms_key_ids {
        ev.push(format!(
            "{old} values on a key ID other than the current one"
        ));
        Status::Fail
    } else {
        Status::Pass
    };
    Some((st, ev))
}

#[cfg(test)]
mod tests;

/// Applies when history, a db file or backup files were read: residue warns or fails as the
/// policy says.
fn residue(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let scan = c.inp.scan;
    if scan.history.is_none() && scan.snapshot.is_none() && scan.backups.is_none() {
        return None;
    }
    let mut ev = Vec::new();
    if let Some(s) = &scan.snapshot {
        let backup: u64 = scan.resources.iter().map(|r| r.residue).sum();
        ev.push(format!(
            "backup {} ({}, revision {}): {backup} current values are plaintext where the config encrypts or under a key it no longer has",
            s.file.path, s.file.sha256, s.file.revision
        ));
    }
    if let Some(h) = &scan.history {
        ev.push(format!(
            "history (revisions {}..{}): {} older values, {} residue",
            h.from_revision, h.to_revision, h.older_values, h.residue
        ));
        ev.extend(h.residue_groups().map(|g| g.summary()));
    } else if scan.snapshot.is_none() {
        ev.push("etcd history was not read (--no-history)".into());
    }
    if let Some(f) = &scan.free_pages {
        ev.push(format!(
            "free pages: {} of {} pages free, {} value copies that are residue",
            f.free_pages, f.pages, f.residue
        ));
    }
    for m in scan.members.iter().flatten() {
        ev.push(format!(
            "member {}: db {} bytes, {} in use ({} free until defragmented)",
            m.name,
            m.db_size,
            m.db_size_in_use,
            m.free_bytes()
        ));
    }
    match &scan.backups {
        Some(b) if b.is_empty() => ev.push(
            "backup files: none in atrest's snapshots folder, none recorded, none in a --backup-dir"
                .into(),
        ),
        Some(b) => ev.extend(
            b.iter()
                .map(|b| format!("backup {}: {}", b.describe(), b.holds())),
        ),
        None => {}
    }
    for cmd in &scan.cleanup {
        ev.push(format!("to drop: {cmd}"));
    }
    Some((c.status_of(&[FindingKind::Residue]), ev))
}

/// Secret-looking data stored as plaintext outside the encrypted resources.
fn sensitive(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev: Vec<String> = c
        .of(&[FindingKind::SensitivePlaintext])
        .map(|f| f.message.clone())
        .collect();
    if ev.is_empty() {
        let (objects, resources) = c
            .resources
            .iter()
            .filter(|r| !r.encrypts && r.resource != "secrets")
            .fold((0u64, 0usize), |(o, n), r| {
                (o + r.verdicts.plaintext, n + 1)
            });
        ev.push(format!(
            "no secret-looking data in the {objects} plaintext objects of the {resources} resources the config does not encrypt (PEM private keys, kubeconfigs, tokens, cloud credentials, fields named like passwords and keys)"
        ));
    }
    Some((c.status_of(&[FindingKind::SensitivePlaintext]), ev))
}

fn custody(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let sealed_rule = c.inp.policy.custody == CustodyRule::Sealed;
    let view = match &c.inp.custody {
        Some(v) => v.clone(),
        None if sealed_rule => Default::default(),
        None => return None,
    };
    let mut ev = view.lines();
    let status = if sealed_rule && view.plaintext() {
        ev.push(
            "the policy asks `custody: sealed`: seal them with `atrest keys seal --seal-to RECIPIENT` (one per custodian)"
                .into(),
        );
        Status::Fail
    } else {
        if view.plaintext() {
            ev.push("plaintext is allowed by the policy (`custody: any`)".into());
        }
        Status::Pass
    };
    Some((status, ev))
}

fn drill(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let d = c.inp.drill.as_ref()?;
    let mut ev = vec![format!(
        "{}: snapshot {} ({}, revision {}) restored with {}; {} of {} values opened",
        d.at,
        d.snapshot.path,
        d.snapshot.sha256,
        d.snapshot.revision,
        d.restored_with,
        d.values - d.unopened,
        d.values
    )];
    for k in &d.keys {
        ev.push(format!(
            "{}: {} values, {} did not open (key: {})",
            k.label,
            k.values,
            k.unopened,
            k.source.describe()
        ));
    }
    Some((
        if d.passed() {
            Status::Pass
        } else {
            Status::Fail
        },
        ev,
    ))
}
