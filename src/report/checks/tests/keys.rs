//! The checks of keys: age, KMS key IDs, custody, the restore drill.

use super::*;

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
