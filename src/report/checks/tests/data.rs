//! The checks of what etcd stores, with fixture inputs.

use super::*;

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

/// A resource no rule covers, with values under a key of the secrets rule: what a hand edit
/// that dropped its rule leaves.
pub(super) fn uncovered_configmaps(n: u64) -> ResourceReport {
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
fn stale_values_only_warn_while_a_rotation_in_progress_rewrites_them() {
    let mut f = Fixture::new(
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
    f.in_progress = Some(rotation);
    let report = f.report();
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
