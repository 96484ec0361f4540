use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::model::census::{ResourceReport, ScanReport};
use crate::model::{KeyCounts, VerdictCounts};
use crate::report::ApiserverView;

fn counts(on: u64, stale: u64, plain: u64) -> VerdictCounts {
    VerdictCounts {
        on_write_key: on,
        stale,
        plaintext: plain,
        ..Default::default()
    }
}

fn resource(name: &str, write: &str, keys: &[(&str, VerdictCounts)]) -> ResourceReport {
    let mut kc = KeyCounts::new();
    let mut verdicts = VerdictCounts::default();
    for (l, c) in keys {
        kc.insert(l.parse().unwrap(), *c);
        verdicts.merge(c);
    }
    let write_key: KeyLabel = write.parse().unwrap();
    ResourceReport {
        resource: name.into(),
        rule: Some(name.into()),
        encrypts: write_key.encrypts(),
        write_key,
        read_keys: vec![],
        total: verdicts.total(),
        needs_rewrite: 0,
        unverified: 0,
        verdicts,
        keys: kc,
        outside_config: 0,
        sensitive: None,
        residue: 0,
        kms_key_ids: BTreeMap::new(),
        samples: BTreeMap::new(),
    }
}

fn scan(resources: Vec<ResourceReport>) -> GoodScan {
    GoodScan {
        report: ScanReport::new(5000, false, resources),
        config_hash: "sha256:abc".into(),
        duration_seconds: 0.25,
        finished: Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap(),
    }
}

/// The value of the one sample whose name and labels are exactly these (labels in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            continue;
        }
        let mut got: Vec<(String, String)> = rest
            .trim_end_matches('}')
            .split("\",")
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        if got == want {
            assert!(found.is_none(), "{name}{labels:?} twice");
            found = Some(value.parse().unwrap());
        }
    }
    found
}

fn inputs<'a>(
    s: Option<&'a GoodScan>,
    keys: &'a BTreeMap<KeyLabel, KeyRecord>,
    seen: &'a BTreeMap<KeyLabel, FirstSeen>,
    policy: &'a Policy,
) -> SeriesInputs<'a> {
    SeriesInputs {
        scan: s,
        apiservers: None,
        keys,
        first_seen: seen,
        policy,
        scan_failures: Some(3),
        scan_in_progress: Some(false),
    }
}

#[test]
fn stored_objects_are_the_scans_exact_counts_per_key_and_state() {
    let s = scan(vec![
        resource(
            "secrets",
            "aescbc:k2",
            &[
                ("aescbc:k2", counts(7, 0, 0)),
                ("aescbc:k1", counts(0, 4, 0)),
                ("identity", counts(0, 0, 2)),
            ],
        ),
        resource("configmaps", "identity", &[("identity", counts(0, 0, 9))]),
    ]);
    let (keys, seen, policy) = (BTreeMap::new(), BTreeMap::new(), Policy::default());
    let text = render(&inputs(Some(&s), &keys, &seen, &policy));
    let so = |r, k, st| {
        sample(
            &text,
            "atrest_stored_objects",
            &[("resource", r), ("key", k), ("state", st)],
        )
    };
    assert_eq!(so("secrets", "aescbc:k2", "on_write_key"), Some(7.0));
    assert_eq!(so("secrets", "aescbc:k1", "stale"), Some(4.0));
    assert_eq!(so("secrets", "identity", "plaintext"), Some(2.0));
    // Zeros are present, so a series falls to 0 instead of vanishing.
    assert_eq!(so("secrets", "aescbc:k1", "on_write_key"), Some(0.0));
    assert_eq!(so("secrets", "aescbc:k2", "corrupt"), Some(0.0));
    assert_eq!(so("configmaps", "identity", "plaintext"), Some(9.0));
    let n = |name, l: &[(&str, &str)]| sample(&text, name, l);
    assert_eq!(
        n(
            "atrest_write_key_info",
            &[("resource", "secrets"), ("key", "aescbc:k2")]
        ),
        Some(1.0)
    );
    // secrets encrypts; configmaps is identity and not required by the default policy.
    assert_eq!(
        n("atrest_encryption_expected", &[("resource", "secrets")]),
        Some(1.0)
    );
    assert_eq!(
        n("atrest_encryption_expected", &[("resource", "configmaps")]),
        Some(0.0)
    );
    assert_eq!(n("atrest_scan_revision", &[]), Some(5000.0));
    assert_eq!(n("atrest_scan_duration_seconds", &[]), Some(0.25));
    assert_eq!(n("atrest_scan_failures_total", &[]), Some(3.0));
    assert_eq!(n("atrest_scan_in_progress", &[]), Some(0.0));
    assert_eq!(
        n("atrest_last_scan_success_timestamp_seconds", &[]),
        Some(s.finished.timestamp() as f64)
    );
    assert_eq!(
        n("atrest_policy_max_key_age_seconds", &[]),
        Some(90.0 * 86400.0)
    );
    assert_eq!(n("atrest_policy_aesgcm_max_writes", &[]), Some(200_000.0));
    assert_eq!(
        n("atrest_config_info", &[("hash", "sha256:abc")]),
        Some(1.0)
    );
}

#[test]
fn an_identity_write_key_on_a_required_resource_still_expects_encryption() {
    let s = scan(vec![resource(
        "secrets",
        "identity",
        &[("identity", counts(0, 0, 1))],
    )]);
    let (keys, seen, policy) = (BTreeMap::new(), BTreeMap::new(), Policy::default());
    let text = render(&inputs(Some(&s), &keys, &seen, &policy));
    assert_eq!(
        sample(
            &text,
            "atrest_encryption_expected",
            &[("resource", "secrets")]
        ),
        Some(1.0)
    );
}

#[test]
fn before_the_first_good_scan_only_health_series_are_shown() {
    let (keys, seen, policy) = (BTreeMap::new(), BTreeMap::new(), Policy::default());
    let text = render(&inputs(None, &keys, &seen, &policy));
    assert!(!text.contains("atrest_stored_objects"), "{text}");
    assert!(!text.contains("atrest_last_scan_success"), "{text}");
    assert_eq!(sample(&text, "atrest_scan_failures_total", &[]), Some(3.0));
}

#[test]
fn key_age_comes_from_the_rotation_state_else_from_first_sight() {
    let s = scan(vec![
        resource("secrets", "aesgcm:new", &[("aesgcm:new", counts(1, 0, 0))]),
        resource(
            "configmaps",
            "secretbox:sb",
            &[("secretbox:sb", counts(1, 0, 0))],
        ),
    ]);
    let promoted = s.finished - Duration::days(10);
    let mut keys = BTreeMap::new();
    keys.insert(
        "aesgcm:new".parse().unwrap(),
        KeyRecord {
            added: Some(promoted - Duration::days(1)),
            promoted: Some(promoted),
            promoted_revision: Some(1000),
            ..Default::default()
        },
    );
    let mut seen = BTreeMap::new();
    seen.insert(
        "secretbox:sb".parse().unwrap(),
        FirstSeen {
            at: s.finished - Duration::hours(1),
            revision: 4000,
        },
    );
    let policy = Policy::default();
    let text = render(&inputs(Some(&s), &keys, &seen, &policy));
    assert_eq!(
        sample(&text, "atrest_key_age_seconds", &[("key", "aesgcm:new")]),
        Some(10.0 * 86400.0)
    );
    assert_eq!(
        sample(&text, "atrest_key_age_seconds", &[("key", "secretbox:sb")]),
        Some(3600.0)
    );
    // Revisions since the promote: 5000 - 1000.
    assert_eq!(
        sample(
            &text,
            "atrest_aesgcm_writes_estimate",
            &[("key", "aesgcm:new"), ("basis", "promote_revision")]
        ),
        Some(4000.0)
    );
    // Only aesgcm keys get an estimate.
    assert!(!text.contains("atrest_aesgcm_writes_estimate{key=\"secretbox"));
}

#[test]
fn apiserver_series_name_each_apiserver_and_its_hash() {
    let survey = ApiserverSurvey {
        apiservers: vec![
            ApiserverView {
                name: "https://127.0.0.1:6443 (kube-apiserver-a)".into(),
                config_hash: Some("sha256:abc".into()),
                reported: String::new(),
                version: None,
            },
            ApiserverView {
                name: "https://127.0.0.1:6444".into(),
                config_hash: None,
                reported: String::new(),
                version: None,
            },
        ],
        leases: vec![],
        converged: false,
        unreached: Vec::new(),
    };
    let (keys, seen, policy) = (BTreeMap::new(), BTreeMap::new(), Policy::default());
    let mut inp = inputs(None, &keys, &seen, &policy);
    inp.apiservers = Some(&survey);
    let text = render(&inp);
    assert_eq!(
        sample(
            &text,
            "atrest_apiserver_config_info",
            &[
                ("apiserver", "https://127.0.0.1:6443 (kube-apiserver-a)"),
                ("hash", "sha256:abc")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "atrest_apiserver_config_info",
            &[("apiserver", "https://127.0.0.1:6444"), ("hash", "")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "atrest_apiservers_converged", &[]), Some(0.0));
}

#[test]
fn the_textfile_form_has_no_counter_and_no_progress_gauge() {
    let (keys, seen, policy) = (BTreeMap::new(), BTreeMap::new(), Policy::default());
    let mut inp = inputs(None, &keys, &seen, &policy);
    inp.scan_failures = None;
    inp.scan_in_progress = None;
    let text = render(&inp);
    assert!(!text.contains("atrest_scan_failures"), "{text}");
    assert!(!text.contains("atrest_scan_in_progress"), "{text}");
}

#[test]
fn every_help_text_ends_in_one_period() {
    let scan = scan(vec![resource(
        "secrets",
        "aescbc:k1",
        &[("aescbc:k1", counts(3, 0, 0))],
    )]);
    let text = render(&SeriesInputs {
        scan: Some(&scan),
        apiservers: None,
        keys: &BTreeMap::new(),
        first_seen: &BTreeMap::new(),
        policy: &Policy::default(),
        scan_failures: Some(0),
        scan_in_progress: Some(false),
    });
    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
    assert!(helps.len() > 10, "{text}");
    for h in helps {
        assert!(h.ends_with('.') && !h.ends_with(".."), "{h}");
    }
}
