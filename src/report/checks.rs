//! The audit's checks: one function each, run in id order from one table. Every check reads
//! exact counts; names are samples and say so (`showing N of M`).

use chrono::{DateTime, Utc};

use super::{Check, Inputs, ResourceConfigView, ResourceResult, Status, sample_evidence};
use crate::GroupResource;
use crate::config::{Finding, Severity};
use crate::model::{KeyLabel, Verdict};

/// What every check reads.
pub struct CheckInput<'a> {
    /// The report's inputs.
    pub inp: &'a Inputs<'a>,
    /// Per covered resource, with coverage.
    pub resources: &'a [ResourceResult],
    /// The config per covered resource.
    pub cfg_views: &'a [ResourceConfigView],
    /// Lint findings (config and file mode).
    pub lint: &'a [Finding],
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
            })
        })
        .collect()
}

fn config_in_use(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let inp = c.inp;
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
    ev.push(format!("{} identity leases", s.leases.len()));
    Some((
        if s.converged {
            Status::Pass
        } else {
            Status::Fail
        },
        ev,
    ))
}

fn on_write_key(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    let mut off = 0u64;
    for r in c.resources {
        if !r.plaintext_is_finding() {
            ev.push(format!(
                "{}: not checked: written as {} by the config, and not required by the policy",
                r.resource, r.write_key
            ));
            continue;
        }
        // Plaintext counts against it even under an identity write key: an encrypted or
        // required resource must be encrypted with its write key. Unreadable values are C06's.
        let good = r.verdicts.on_write_key;
        off += r.verdicts.stale + r.verdicts.plaintext;
        ev.push(format!(
            "{}: {}/{} encrypted with the write key {} ({} stale, {} plaintext, {} unreadable)",
            r.resource,
            good,
            r.total,
            r.write_key,
            r.verdicts.stale,
            r.verdicts.plaintext,
            r.verdicts.unreadable()
        ));
        ev.extend(sample_evidence(
            r,
            Verdict::Stale,
            "not on the write key (stale)",
        ));
    }
    Some((if off == 0 { Status::Pass } else { Status::Fail }, ev))
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
    if plain == 0 {
        ev.push(
            "no plaintext object where the config encrypts or the policy requires encryption"
                .into(),
        );
    } else {
        ev.insert(
            0,
            format!("{plain} plaintext objects where encryption is configured or required"),
        );
    }
    Some((
        if plain == 0 {
            Status::Pass
        } else {
            Status::Fail
        },
        ev,
    ))
}

fn readable(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    let mut bad = 0u64;
    for r in c.resources {
        bad += r.verdicts.unreadable();
        for (v, what) in [
            (Verdict::Undecryptable, "undecryptable"),
            (Verdict::UnknownKey, "under an unknown key"),
            (Verdict::Corrupt, "corrupt"),
        ] {
            ev.extend(sample_evidence(r, v, what));
        }
    }
    if bad == 0 {
        let total: u64 = c.resources.iter().map(|r| r.total).sum();
        ev.push(format!(
            "0 undecryptable, 0 unknown-key, 0 corrupt among {total} stored values"
        ));
    }
    if !c.inp.scan.verified {
        ev.push(
            "values were classified by prefix and key name; run with --verify to decrypt each"
                .into(),
        );
    }
    Some((if bad == 0 { Status::Pass } else { Status::Fail }, ev))
}

fn key_age(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let policy = c.inp.policy;
    let mut ev = Vec::new();
    let mut st = Status::Pass;
    let mut seen = std::collections::BTreeSet::new();
    for v in c.cfg_views {
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
                let days = (c.inp.now - t.with_timezone(&Utc)).num_days();
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
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::{FileInfo, LoadedConfig, parse_str};
    use crate::etcd::scan::{ObjectRef, ResourceReport, ScanReport};
    use crate::model::VerdictCounts;
    use crate::report::{ApiserverSurvey, ApiserverView, EtcdInfo, KeyAge, Policy, build};

    const KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

    fn loaded(providers: &str, mode: u32) -> LoadedConfig {
        let yaml = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: {providers}\n"
        );
        LoadedConfig {
            path: "/etc/kubernetes/enc.yaml".into(),
            hash: "sha256:file".into(),
            config: parse_str(Path::new("enc.yaml"), &yaml).unwrap(),
            file: FileInfo {
                mode,
                uid: 0,
                gid: 0,
                size: 1,
            },
        }
    }

    fn secretbox() -> String {
        format!("[{{secretbox: {{keys: [{{name: sb1, secret: {KEY}}}]}}}}, {{identity: {{}}}}]")
    }

    /// A secrets result: `(label, verdict, count)` rows; samples hold every name.
    fn secrets(write: &str, encrypts: bool, rows: &[(&str, Verdict, u64)]) -> ResourceReport {
        let mut r = ResourceReport {
            resource: "secrets".into(),
            rule: Some("secrets".into()),
            write_key: write.parse().unwrap(),
            read_keys: vec![write.parse().unwrap()],
            encrypts,
            total: 0,
            needs_rewrite: 0,
            unverified: 0,
            verdicts: VerdictCounts::default(),
            keys: BTreeMap::new(),
            kms_key_ids: BTreeMap::new(),
            samples: BTreeMap::new(),
        };
        for (label, v, n) in rows {
            let label: KeyLabel = label.parse().unwrap();
            for i in 0..*n {
                r.total += 1;
                r.verdicts.add(*v);
                r.keys.entry(label.clone()).or_default().add(*v);
                if *v == Verdict::Stale || (*v == Verdict::Plaintext && encrypts) {
                    r.needs_rewrite += 1;
                }
                if *v != Verdict::OnWriteKey {
                    r.samples.entry(*v).or_default().push(1000, || ObjectRef {
                        name: format!("ns/{v}-{i}"),
                        key: format!("/registry/secrets/ns/{v}-{i}"),
                        mod_revision: 7,
                        stored_as: label.clone(),
                        detail: None,
                    });
                }
            }
        }
        r
    }

    struct Fixture {
        config: LoadedConfig,
        scan: ScanReport,
        apiservers: Option<ApiserverSurvey>,
        manifest: Option<bool>,
        ages: BTreeMap<String, KeyAge>,
        policy: Policy,
    }

    impl Fixture {
        fn new(config: LoadedConfig, resource: ResourceReport) -> Self {
            Fixture {
                config,
                scan: ScanReport {
                    schema: crate::etcd::scan::SCAN_SCHEMA.into(),
                    revision: 42,
                    verified: true,
                    resources: vec![resource],
                    kms_current_key_ids: BTreeMap::new(),
                },
                apiservers: Some(ApiserverSurvey {
                    apiservers: vec![ApiserverView {
                        name: "https://10.0.0.1:6443".into(),
                        config_hash: Some("sha256:file".into()),
                        reported: "sha256:file".into(),
                    }],
                    leases: vec!["apiserver-a".into()],
                    converged: true,
                }),
                manifest: Some(true),
                ages: BTreeMap::new(),
                policy: Policy::default(),
            }
        }

        /// Status and evidence (one string) of every check, by id.
        fn run(&self) -> BTreeMap<String, (Status, String)> {
            let report = build(&Inputs {
                config: &self.config,
                scan: &self.scan,
                etcd: EtcdInfo::default(),
                apiservers: self.apiservers.clone(),
                manifest_sets_config: self.manifest,
                rotation: None,
                key_ages: self.ages.clone(),
                policy: &self.policy,
                now: "2026-06-01T00:00:00Z".parse().unwrap(),
            });
            report
                .checks
                .into_iter()
                .map(|c| (c.id, (c.status, c.evidence.join(" | "))))
                .collect()
        }
    }

    fn compliant() -> Fixture {
        let mut f = Fixture::new(
            loaded(&secretbox(), 0o600),
            secrets(
                "secretbox:sb1",
                true,
                &[("secretbox:sb1", Verdict::OnWriteKey, 5)],
            ),
        );
        f.ages.insert(
            "secretbox:sb1".into(),
            KeyAge {
                added: Some("2026-05-01T00:00:00Z".into()),
                promoted: Some("2026-05-02T00:00:00Z".into()),
            },
        );
        f
    }

    #[test]
    fn a_compliant_cluster_passes_every_check() {
        let got = compliant().run();
        for (id, (st, ev)) in &got {
            assert_eq!(*st, Status::Pass, "{id}: {ev}");
        }
        assert_eq!(got.len(), 9, "C10 applies only when KMS v2 values exist");
    }

    #[test]
    fn c01_and_c03_follow_the_apiservers_and_manifest() {
        let mut f = compliant();
        f.apiservers = None;
        f.manifest = None;
        let got = f.run();
        assert_eq!(got["ATR-C01"].0, Status::Warn);
        assert_eq!(got["ATR-C03"].0, Status::Warn);
        f.manifest = Some(false);
        assert_eq!(f.run()["ATR-C01"].0, Status::Fail);
        let mut f = compliant();
        if let Some(s) = f.apiservers.as_mut() {
            s.converged = false;
            s.apiservers[0].config_hash = Some("sha256:other".into());
            s.apiservers[0].reported = "sha256:other".into();
        }
        let got = f.run();
        assert_eq!(got["ATR-C03"].0, Status::Fail);
        assert!(
            got["ATR-C03"].1.contains("sha256:other"),
            "{}",
            got["ATR-C03"].1
        );
    }

    #[test]
    fn identity_write_key_with_plaintext_fails_c02_c04_c05_c08_with_exact_counts() {
        let f = Fixture::new(
            loaded("[{identity: {}}]", 0o600),
            secrets("identity", false, &[("identity", Verdict::Plaintext, 1500)]),
        );
        let got = f.run();
        for id in ["ATR-C02", "ATR-C04", "ATR-C05", "ATR-C08"] {
            assert_eq!(got[id].0, Status::Fail, "{id}: {}", got[id].1);
        }
        assert!(
            got["ATR-C05"]
                .1
                .contains("secrets: 1500 stored as plaintext")
        );
        assert!(got["ATR-C05"].1.contains("(showing 20 of 1500)"));
        assert!(
            got["ATR-C04"]
                .1
                .contains("secrets: 0/1500 encrypted with the write key identity (0 stale, 1500 plaintext, 0 unreadable)"),
            "{}",
            got["ATR-C04"].1
        );
    }

    #[test]
    fn plaintext_of_a_resource_neither_encrypted_nor_required_is_not_a_finding() {
        let mut f = Fixture::new(
            loaded("[{identity: {}}]", 0o600),
            secrets("identity", false, &[("identity", Verdict::Plaintext, 3)]),
        );
        f.policy.required_resources = vec!["configmaps".into()];
        let got = f.run();
        assert_eq!(got["ATR-C04"].0, Status::Pass, "{}", got["ATR-C04"].1);
        assert_eq!(got["ATR-C05"].0, Status::Pass, "{}", got["ATR-C05"].1);
    }

    #[test]
    fn stale_values_fail_c04_only() {
        let f = Fixture::new(
            loaded(&secretbox(), 0o600),
            secrets(
                "secretbox:sb1",
                true,
                &[
                    ("secretbox:sb1", Verdict::OnWriteKey, 2),
                    ("secretbox:old", Verdict::Stale, 30),
                ],
            ),
        );
        let got = f.run();
        assert_eq!(got["ATR-C04"].0, Status::Fail);
        assert!(
            got["ATR-C04"]
                .1
                .contains("secrets: 2/32 encrypted with the write key")
        );
        assert!(got["ATR-C04"].1.contains("(showing 20 of 30)"));
        assert_eq!(got["ATR-C05"].0, Status::Pass);
        assert_eq!(got["ATR-C06"].0, Status::Pass);
    }

    #[test]
    fn unreadable_values_fail_c06_with_names() {
        let f = Fixture::new(
            loaded(&secretbox(), 0o600),
            secrets(
                "secretbox:sb1",
                true,
                &[
                    ("secretbox:sb1", Verdict::Undecryptable, 1),
                    ("aescbc:k9", Verdict::UnknownKey, 2),
                    ("secretbox:sb1", Verdict::Corrupt, 1),
                ],
            ),
        );
        let got = f.run();
        let (st, ev) = &got["ATR-C06"];
        assert_eq!(*st, Status::Fail);
        for want in [
            "secrets: 1 undecryptable: ns/undecryptable-0",
            "secrets: 2 under an unknown key",
            "secrets: 1 corrupt",
        ] {
            assert!(ev.contains(want), "{want} in {ev}");
        }
    }

    #[test]
    fn c07_key_age_against_the_policy() {
        let mut f = compliant();
        f.policy.max_key_age_days = 10;
        let got = f.run();
        assert_eq!(got["ATR-C07"].0, Status::Fail, "{}", got["ATR-C07"].1);
        assert!(
            got["ATR-C07"]
                .1
                .contains("secretbox:sb1: write key for 30 days (maximum 10)")
        );
        f.ages.clear();
        assert_eq!(f.run()["ATR-C07"].0, Status::Warn);
    }

    #[test]
    fn c02_warns_for_a_discouraged_provider_and_c09_for_lint() {
        let f = Fixture::new(
            loaded(
                &format!("[{{aescbc: {{keys: [{{name: k1, secret: {KEY}}}]}}}}]"),
                0o644,
            ),
            secrets("aescbc:k1", true, &[("aescbc:k1", Verdict::OnWriteKey, 1)]),
        );
        let got = f.run();
        assert_eq!(got["ATR-C02"].0, Status::Warn, "{}", got["ATR-C02"].1);
        assert_ne!(got["ATR-C09"].0, Status::Pass, "{}", got["ATR-C09"].1);
        assert!(got["ATR-C09"].1.contains("config file mode 0644"));
    }

    #[test]
    fn c10_kms_key_ids() {
        let mut f = compliant();
        f.scan.resources[0].kms_key_ids = BTreeMap::from([("k-1".into(), 3), ("k-2".into(), 1)]);
        assert_eq!(f.run()["ATR-C10"].0, Status::Warn, "plugin not reachable");
        f.scan.kms_current_key_ids = BTreeMap::from([("vault".into(), "k-2".into())]);
        let got = f.run();
        assert_eq!(got["ATR-C10"].0, Status::Fail);
        assert!(
            got["ATR-C10"]
                .1
                .contains("3 values on a key ID other than the current one")
        );
        f.policy.allow_old_kms_key_ids = true;
        assert_eq!(f.run()["ATR-C10"].0, Status::Pass);
    }
}
