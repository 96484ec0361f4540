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
            in_progress: None,
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
    // An identity write key is "not encrypted", never "0/N encrypted with the write key
    // identity"; C07 says there is no key to age rather than passing on nothing.
    assert!(
        got["ATR-C04"].1.contains(
            "secrets: NOT encrypted: its write key is identity; 1500 of 1500 stored as plaintext"
        ),
        "{}",
        got["ATR-C04"].1
    );
    assert!(!got["ATR-C04"].1.contains("with the write key identity"));
    assert!(
        got["ATR-C07"]
            .1
            .contains("secrets: not encrypted (the write key is identity): no key to age"),
        "{}",
        got["ATR-C07"].1
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
        "secrets: 2 under a key its config does not have",
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
fn c06_warns_and_says_what_was_not_decrypted() {
    let mut f = compliant();
    f.scan.verified = false;
    let got = f.run();
    assert_eq!(got["ATR-C06"].0, Status::Warn, "{}", got["ATR-C06"].1);
    assert!(
        got["ATR-C06"].1.contains("--no-verify"),
        "{}",
        got["ATR-C06"].1
    );

    // Decrypting, but a KMS v1 plugin could not be asked: its values are counted and named.
    let mut f = compliant();
    f.scan.resources[0].unverified = 3;
    f.scan.kms_not_asked =
        vec!["the KMS plugin of provider \"legacy\" at unix:///kms.sock is unreachable".into()];
    let got = f.run();
    assert_eq!(got["ATR-C06"].0, Status::Warn, "{}", got["ATR-C06"].1);
    assert!(
        got["ATR-C06"]
            .1
            .contains("3 encrypted values were NOT decrypted (3 secrets)"),
        "{}",
        got["ATR-C06"].1
    );
    assert!(
        got["ATR-C06"].1.contains("\"legacy\""),
        "{}",
        got["ATR-C06"].1
    );
    let report = f.report();
    assert_eq!(report.scope.not_decrypted, 3);
    assert!(
        report.scope.values().contains("except 3 encrypted values"),
        "{}",
        report.scope.values()
    );
}

#[test]
fn c13_fails_plaintext_custody_only_when_the_policy_asks_sealed() {
    use crate::report::lifecycle::CustodyView;
    let mut f = compliant();
    assert!(
        !f.run().contains_key("ATR-C13"),
        "nothing kept, no rule: no check"
    );
    f.custody = Some(CustodyView {
        plaintext_archive_keys: 2,
        plaintext_backups: 3,
        ..Default::default()
    });
    assert_eq!(
        f.run()["ATR-C13"].0,
        Status::Pass,
        "the default policy allows plaintext"
    );
    f.policy.custody = CustodyRule::Sealed;
    let got = f.run();
    assert_eq!(got["ATR-C13"].0, Status::Fail);
    assert!(
        got["ATR-C13"].1.contains("2 retired keys in plaintext"),
        "{}",
        got["ATR-C13"].1
    );
    f.custody = Some(CustodyView {
        sealed: Some("sealed 2 of 3 custodians (sha256:aa, sha256:bb, sha256:cc)".into()),
        sealed_backups: 3,
        ..Default::default()
    });
    let got = f.run();
    assert_eq!(got["ATR-C13"].0, Status::Pass, "{}", got["ATR-C13"].1);
    assert!(
        got["ATR-C13"].1.contains("sealed 2 of 3"),
        "{}",
        got["ATR-C13"].1
    );
}

#[test]
fn c14_follows_the_drill() {
    use crate::cluster::drill::{DRILL_SCHEMA, DrillKey, DrillResult};
    use crate::model::census::{DbInfo, KeySource};
    let mut f = compliant();
    assert!(!f.run().contains_key("ATR-C14"));
    let mut d = DrillResult {
        schema: DRILL_SCHEMA.into(),
        at: "2026-06-01T00:00:00Z".into(),
        snapshot: DbInfo {
            path: "/backup/snap.db".into(),
            size: 1,
            sha256: "sha256:ab".into(),
            revision: 9,
            oldest_revision: 1,
            compact_revision: 0,
            revisions: 1,
            page_size: 4096,
            pages: 1,
        },
        restored_with: "etcdutl (3.6)".into(),
        values: 7,
        unopened: 0,
        keys: vec![DrillKey {
            label: "aescbc:key1".parse().unwrap(),
            values: 7,
            unopened: 0,
            source: KeySource::Archive,
            fingerprints: Vec::new(),
        }],
        unopened_sample: Vec::new(),
        result: "PASS".into(),
    };
    f.drill = Some(d.clone());
    assert_eq!(f.run()["ATR-C14"].0, Status::Pass);
    d.unopened = 7;
    d.keys[0].unopened = 7;
    f.drill = Some(d);
    let got = f.run();
    assert_eq!(got["ATR-C14"].0, Status::Fail);
    assert!(
        got["ATR-C14"]
            .1
            .contains("aescbc:key1: 7 values, 7 did not open"),
        "{}",
        got["ATR-C14"].1
    );
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

/// A resource no rule covers, with values under a key of the secrets rule: what a hand edit
/// that dropped its rule leaves.
fn uncovered_configmaps(n: u64) -> ResourceReport {
    let mut r = secrets(
        "identity",
        false,
        &[("secretbox:sb1", Verdict::UnknownKey, n)],
    );
    r.resource = "configmaps".into();
    r.rule = None;
    r.outside_config = n;
    r
}

#[test]
fn a_resource_dropped_from_the_config_fails_c06_naming_the_key_and_the_rule() {
    let mut f = compliant();
    f.scan.resources.push(uncovered_configmaps(41));
    f.scan.unknown_keys = vec![KnownKey {
        label: "secretbox:sb1".parse().unwrap(),
        fingerprint: Some("sha256:0123456789abcdef".into()),
        source: "the config, rule resources[0] (secrets)".into(),
        endpoint: None,
    }];
    let got = f.run();
    let (st, ev) = &got["ATR-C06"];
    assert_eq!(*st, Status::Fail);
    for want in [
        "configmaps: 41 values are encrypted under a key the config does not give configmaps (no rule of the config covers configmaps)",
        "secretbox:sb1: 41 values — sha256:0123456789abcdef, the config, rule resources[0] (secrets)",
        "41 of them open with a key atrest found",
        "- resources: [configmaps]",
        "  - secretbox:",
        "      - name: sb1",
        "secret: <the secret of secretbox:sb1 sha256:0123456789abcdef: the config, rule resources[0] (secrets)>",
        "  - identity: {}",
    ] {
        assert!(ev.contains(want), "{want:?} in {ev}");
    }
    // Never the key itself.
    assert!(!ev.contains(KEY), "{ev}");
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

#[test]
fn warnings_make_pass_with_warnings_and_a_failing_check_fail() {
    let report = compliant_report();
    assert_eq!(report.outcome, Status::Pass);
    assert_eq!(report.warnings, 1, "key age unknown: {:#?}", report.checks);
    assert_eq!(report.result, "PASS with 1 warning");
    assert_eq!(checks_result_line(0, 2, 12), "PASS with 2 warnings");
    assert_eq!(
        checks_result_line(1, 2, 12),
        "FAIL (1 of 12 checks fail; 2 warnings)"
    );
    assert_eq!(checks_result_line(0, 0, 12), "PASS");
}

#[test]
fn stale_values_only_warn_while_a_rotation_in_progress_rewrites_them() {
    let f = Fixture::new(
        loaded(&secretbox(), 0o600),
        secrets(
            "secretbox:sb1",
            true,
            &[("secretbox:old", Verdict::Stale, 4)],
        ),
    );
    assert_eq!(f.run()["ATR-C04"].0, Status::Fail);
    let rotation: Rotation = serde_json::from_value(serde_json::json!({
        "id": "20260601T000000Z", "target": "secretbox:sb1", "target_fingerprint": null,
        "rules": [0], "resources": ["secrets"], "previous_write_keys": {},
        "stage": "promoted", "started": "2026-06-01T00:00:00Z", "prepared_at": null,
        "promoted_at": null, "reencrypted_at": null, "finished_at": null, "snapshot": null,
        "snapshot_skipped": false, "aborted": false, "retired": []
    }))
    .unwrap();
    let report = build(&ReportInputs {
        config: &f.config,
        scan: &f.scan,
        etcd: EtcdInfo::default(),
        apiservers: f.apiservers.clone(),
        manifest_sets_config: f.manifest,
        rotation: None,
        in_progress: Some(rotation),
        key_records: BTreeMap::new(),
        archived: Some(Vec::new()),
        custody: None,
        drill: None,
        rotation_log: Vec::new(),
        policy: &f.policy,
        now: "2026-06-01T00:00:00Z".parse().unwrap(),
    });
    let c04 = report.checks.iter().find(|c| c.id == "ATR-C04").unwrap();
    assert_eq!(c04.status, Status::Warn, "{:#?}", c04.evidence);
    assert!(
        c04.evidence.iter().any(
            |e| e.contains("the rotation in progress rewrites them: `atrest rotate reencrypt`")
        ),
        "{:#?}",
        c04.evidence
    );
}

fn compliant_report() -> Report {
    let f = compliant();
    build(&ReportInputs {
        config: &f.config,
        scan: &f.scan,
        etcd: EtcdInfo::default(),
        apiservers: f.apiservers.clone(),
        manifest_sets_config: f.manifest,
        rotation: None,
        in_progress: None,
        key_records: BTreeMap::new(),
        archived: Some(Vec::new()),
        custody: None,
        drill: None,
        rotation_log: Vec::new(),
        policy: &f.policy,
        now: "2026-06-01T00:00:00Z".parse().unwrap(),
    })
}

#[test]
fn every_check_gives_evidence_for_mapped_controls() {
    let report = compliant_report();
    let cis = cis_benchmark(Some(34));
    let mapped: Vec<&str> = mapped_checks().collect();
    for c in &report.checks {
        assert!(
            mapped.contains(&c.id.as_str()),
            "{} has no control mapping",
            c.id
        );
        assert!(!crate::report::controls::controls(&c.id, &cis).is_empty());
    }
}

#[test]
fn a_signed_report_verifies_and_any_changed_byte_fails() {
    use crate::keys::signing::SigningKey;
    use crate::report::attest::{self, AttestError};
    let report = compliant_report();
    let dir = tempfile::tempdir().unwrap();
    let file = std::path::PathBuf::from("report.json");
    std::fs::write(dir.path().join(&file), serde_json::to_vec(&report).unwrap()).unwrap();
    let key = SigningKey::generate().unwrap();
    let env = attest::sign(&report, dir.path(), std::slice::from_ref(&file), &key).unwrap();
    let env_path = dir.path().join("report.json.intoto.json");
    std::fs::write(&env_path, serde_json::to_vec(&env).unwrap()).unwrap();
    let statement = attest::verify(&env_path, &key.public()).unwrap();
    assert_eq!(statement.subject[0].name, "report.json");
    assert_eq!(statement.predicate["result"], "WARNED");
    assert_eq!(
        statement.predicate["warnedTests"],
        serde_json::json!(["ATR-C07"])
    );
    // Another key: refused.
    let other = SigningKey::generate().unwrap();
    assert!(matches!(
        attest::verify(&env_path, &other.public()),
        Err(AttestError::BadSignature { .. })
    ));
    // One byte of the report changed: refused, naming the file.
    let mut bytes = std::fs::read(dir.path().join(&file)).unwrap();
    bytes[10] ^= 1;
    std::fs::write(dir.path().join(&file), &bytes).unwrap();
    let err = attest::verify(&env_path, &key.public()).unwrap_err();
    assert!(matches!(err, AttestError::Subject { .. }), "{err}");
    bytes[10] ^= 1;
    std::fs::write(dir.path().join(&file), &bytes).unwrap();
    attest::verify(&env_path, &key.public()).unwrap();
    // One byte of the signed payload changed: refused.
    let mut tampered = env.clone();
    let mut payload = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &tampered.payload,
    )
    .unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 1;
    tampered.payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &payload);
    std::fs::write(&env_path, serde_json::to_vec(&tampered).unwrap()).unwrap();
    assert!(matches!(
        attest::verify(&env_path, &key.public()),
        Err(AttestError::BadSignature { .. })
    ));
}
