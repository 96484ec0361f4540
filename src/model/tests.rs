//! Unit tests, kept apart so the module reads as its one responsibility.

use super::*;

#[test]
fn key_labels_round_trip_with_colons_in_names() {
    for s in [
        "identity",
        "aescbc:key1",
        "aesgcm:a:b:c",
        "secretbox:k",
        "kms:v1:old:name",
        "kms:v2:vault",
        "unknown:zzz",
    ] {
        let l: KeyLabel = s.parse().unwrap();
        assert_eq!(l.to_string(), s);
    }
    assert_eq!(
        "aescbc:a:b".parse::<KeyLabel>().unwrap(),
        KeyLabel::key(KeyProvider::Aescbc, "a:b")
    );
    for bad in ["", "aescbc", "aescbc:", "kms:v3:x", "kms:v2:", "rot13:k"] {
        assert!(bad.parse::<KeyLabel>().is_err(), "{bad}");
    }
    let json = serde_json::to_string(&KeyLabel::kms(KmsVersion::V2, "v")).unwrap();
    assert_eq!(json, "\"kms:v2:v\"");
    assert_eq!(
        serde_json::from_str::<KeyLabel>(&json)
            .unwrap()
            .provider_kind(),
        "kms-v2"
    );
}

#[test]
fn verdict_of_every_state() {
    use State::*;
    let cases = [
        (Plaintext, true, Verdict::Plaintext, false),
        (Plaintext, false, Verdict::Plaintext, true),
        (EncryptedOk, true, Verdict::OnWriteKey, false),
        (EncryptedOk, false, Verdict::Stale, true),
        (Kms, true, Verdict::OnWriteKey, false),
        (Kms, false, Verdict::Stale, true),
        (Undecryptable, false, Verdict::Undecryptable, false),
        (UnknownKey, false, Verdict::UnknownKey, false),
        (Corrupt, false, Verdict::Corrupt, false),
    ];
    for (state, current, verdict, rewrite) in cases {
        assert_eq!(
            Verdict::of(state, current, true),
            verdict,
            "{state:?} {current}"
        );
        assert_eq!(
            needs_rewrite(state, current, true),
            rewrite,
            "{state:?} {current}"
        );
    }
    // Only a key outside the resource's config (the archive, another rule) opens it: the
    // apiserver cannot read it, so it is under an unknown key and cannot be rewritten.
    for state in [EncryptedOk, Kms] {
        assert_eq!(Verdict::of(state, false, false), Verdict::UnknownKey);
        assert!(!needs_rewrite(state, false, false));
    }
}

#[test]
fn counts_are_exact_and_samples_capped() {
    let mut c = VerdictCounts::default();
    let mut s = Sample::default();
    for i in 0..1500 {
        c.add(Verdict::Stale);
        s.push(20, || i);
    }
    c.add(Verdict::Plaintext);
    assert_eq!((c.stale, c.total(), c.encrypted()), (1500, 1501, 1500));
    assert_eq!((s.total, s.shown()), (1500, 20));
    assert_eq!(s.showing(), " (showing 20 of 1500)");
    let mut sum = VerdictCounts::default();
    sum.merge(&c);
    sum.merge(&c);
    assert_eq!(sum.stale, 3000);
    assert_eq!(
        c.nonzero().collect::<Vec<_>>(),
        vec![(Verdict::Stale, 1500), (Verdict::Plaintext, 1)]
    );
}

#[test]
fn secrets_are_always_covered_unless_resources_are_named() {
    let cm = GroupResource::parse("configmaps");
    assert_eq!(
        covered_resources(vec![cm.clone()], &[]),
        vec![GroupResource::secrets(), cm.clone()]
    );
    assert_eq!(
        covered_resources(vec![cm.clone(), GroupResource::secrets()], &[]),
        vec![cm.clone(), GroupResource::secrets()]
    );
    assert_eq!(
        covered_resources(vec![], std::slice::from_ref(&cm)),
        vec![cm]
    );
}
