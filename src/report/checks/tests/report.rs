//! The report the checks make: its result line, controls and signature.

use super::*;

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

/// A compliant cluster whose key ages are unknown: one warning.
fn compliant_report() -> Report {
    let mut f = compliant();
    f.ages.clear();
    f.report()
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
