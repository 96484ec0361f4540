//! Every check with fixture inputs: no cluster needed.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::{FileInfo, LoadedConfig, parse_str};
use crate::model::census::{ObjectRef, ResourceReport, ScanReport};
use crate::model::{KnownKey, VerdictCounts};
use crate::report::controls::{cis_benchmark, mapped_checks};
use crate::report::{ApiserverSurvey, ApiserverView, EtcdInfo, Policy, build};
use crate::report::{Report, checks_result_line};
use crate::state::KeyRecord;
use crate::state::Rotation;

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
        outside_config: 0,
        sensitive: None,
        residue: 0,
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
    /// A rotation in progress, as the state folder records it.
    in_progress: Option<Rotation>,
    custody: Option<crate::report::lifecycle::CustodyView>,
    drill: Option<crate::cluster::drill::DrillResult>,
    config: LoadedConfig,
    scan: ScanReport,
    apiservers: Option<ApiserverSurvey>,
    manifest: Option<bool>,
    ages: BTreeMap<KeyLabel, KeyRecord>,
    policy: Policy,
}

impl Fixture {
    fn new(config: LoadedConfig, resource: ResourceReport) -> Self {
        Fixture {
            in_progress: None,
            custody: None,
            drill: None,
            config,
            scan: ScanReport::new(42, true, vec![resource]),
            apiservers: Some(ApiserverSurvey {
                apiservers: vec![ApiserverView {
                    name: "https://10.0.0.1:6443".into(),
                    config_hash: Some("sha256:file".into()),
                    reported: "sha256:file".into(),
                    version: None,
                }],
                leases: vec!["apiserver-a".into()],
                converged: true,
                unreached: Vec::new(),
            }),
            manifest: Some(true),
            ages: BTreeMap::new(),
            policy: Policy::default(),
        }
    }

    /// The report of these inputs.
    fn report(&self) -> Report {
        build(&ReportInputs {
            config: &self.config,
            scan: &self.scan,
            etcd: EtcdInfo::default(),
            apiservers: self.apiservers.clone(),
            manifest_sets_config: self.manifest,
            rotation: None,
            in_progress: self.in_progress.clone(),
            key_records: self.ages.clone(),
            archived: Some(Vec::new()),
            custody: self.custody.clone(),
            drill: self.drill.clone(),
            rotation_log: Vec::new(),
            policy: &self.policy,
            now: "2026-06-01T00:00:00Z".parse().unwrap(),
        })
    }

    /// Status and evidence (one string) of every check, by id.
    fn run(&self) -> BTreeMap<String, (Status, String)> {
        self.report()
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
        "secretbox:sb1".parse().unwrap(),
        KeyRecord {
            added: crate::model::time::parse("2026-05-01T00:00:00Z"),
            promoted: crate::model::time::parse("2026-05-02T00:00:00Z"),
            ..Default::default()
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
    assert_eq!(
        got.len(),
        10,
        "C10 applies only when KMS v2 values exist, C11 only when history or backups were read"
    );
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
fn no_check_passes_on_empty_evidence() {
    let mut fixtures = vec![
        compliant(),
        Fixture::new(
            loaded("[{identity: {}}]", 0o600),
            secrets("identity", false, &[("identity", Verdict::Plaintext, 3)]),
        ),
    ];
    let mut f = compliant();
    f.scan.resources.push(uncovered_configmaps(2));
    fixtures.push(f);
    for f in fixtures {
        for (id, (st, ev)) in f.run() {
            assert!(!ev.trim().is_empty(), "{id} is {st:?} with no evidence");
        }
    }
}

mod data;
use data::uncovered_configmaps;
mod keys;
mod report;
