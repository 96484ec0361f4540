//! Evidence an auditor can accept without trusting the operator (issue #26): a report signed
//! with the key `atrest keys signing-key` made verifies with `atrest report verify` and with an
//! independent verifier (securesystemslib's DSSE, the library in-toto verifies with); one
//! changed byte of the report or of the envelope fails both. The signing key never shows in any
//! output (the leak check runs after every atrest run, with the key registered).

use atrest_testbed as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ControlPlane, Options, create_namespace, create_secrets, secrets_only};

/// The Python with securesystemslib and compliance-trestle that `scripts/test.sh` installs.
fn python() -> PathBuf {
    let p = std::env::var_os("ATREST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/atrest/venv/bin/python")
        });
    assert!(
        p.exists(),
        "the evidence tests need a Python with the independent verifiers: run scripts/test.sh, \
         or `python3 -m venv ~/.cache/atrest/venv && ~/.cache/atrest/venv/bin/pip install \
         securesystemslib cryptography compliance-trestle` (or set ATREST_PYTHON)"
    );
    p
}

/// The independent verifier's exit code and output.
fn independent_verify(envelope: &Path, public: &Path) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/evidence/verify_dsse.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(envelope)
        .arg(public)
        .output()
        .expect("run the Python verifier");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What compliance-trestle read back from an OSCAL document (exit code, its JSON summary).
fn trestle_read(doc: &Path) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/evidence/validate_oscal.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(doc)
        .output()
        .expect("run compliance-trestle");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The private key's 32-byte seed, registered with the leak check in every form.
fn register_signing_key(pem_path: &Path) {
    use base64::Engine;
    let pem = std::fs::read_to_string(pem_path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    // PKCS#8 for Ed25519: a 16-byte header, then the 32-byte seed.
    assert_eq!(
        &der[12..16],
        &[0x04, 0x22, 0x04, 0x20],
        "PKCS#8 Ed25519 layout"
    );
    support::register_key_bytes(&der[16..48], "the report signing key");
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_report_verifies_with_atrest_and_an_independent_verifier() {
    python();
    let provider = format!(
        "[{{secretbox: {{keys: [{{name: sb1, secret: {}}}]}}}}]",
        support::b64(32, 7)
    );
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_only(&provider)),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "audit").await;
    let names: Vec<String> = (0..3).map(|i| format!("db-{i}")).collect();
    create_secrets(&client, "audit", &names, "s3cr3t-evidence-value").await;

    let dir = cp.path().join("evidence");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("signing.pem");
    let (code, stdout, stderr) = support::atrest(
        &["keys", "signing-key", "--out", key.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    register_signing_key(&key);
    assert!(stdout.starts_with("-----BEGIN PUBLIC KEY-----"), "{stdout}");
    let public = dir.join("signing.pub");
    std::fs::write(&public, &stdout).unwrap();
    // Never overwritten.
    let (code, _, stderr) = support::atrest(
        &["keys", "signing-key", "--out", key.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("never overwrites"), "{stderr}");

    let report = dir.join("report.json");
    let (code, _, stderr) = cp.atrest(&[
        "report",
        "--format",
        "json",
        "--out",
        report.to_str().unwrap(),
        "--sign",
        key.to_str().unwrap(),
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
    ]);
    assert!(code == 0 || code == 1, "{stderr}");
    let envelope = dir.join("report.json.intoto.json");
    assert!(envelope.exists(), "{stderr}");

    let verify = |paths: &[&Path]| {
        let mut args = vec!["report", "verify", "--key", public.to_str().unwrap()];
        args.extend(paths.iter().map(|p| p.to_str().unwrap()));
        support::atrest(&args, &[])
    };
    let (code, stdout, stderr) = verify(&[&dir]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("OK ") && stdout.contains("report.json"),
        "{stdout}"
    );
    let (code, out) = independent_verify(&envelope, &public);
    assert_eq!(code, 0, "independent verifier: {out}");

    // One byte of the report: both verifiers refuse; restored, both accept again.
    flip_byte(&report, 100);
    let (code, stdout, _) = verify(&[&envelope]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("report.json") && stdout.contains("changed"),
        "{stdout}"
    );
    assert_eq!(independent_verify(&envelope, &public).0, 1);
    flip_byte(&report, 100);
    assert_eq!(verify(&[&envelope]).0, 0);
    assert_eq!(independent_verify(&envelope, &public).0, 0);

    // One byte of the signed payload inside the envelope: both refuse.
    let original = std::fs::read(&envelope).unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let payload = env["payload"].as_str().unwrap().to_string();
    let mut chars: Vec<char> = payload.chars().collect();
    let at = chars.len() / 2;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    env["payload"] = serde_json::Value::from(chars.into_iter().collect::<String>());
    std::fs::write(&envelope, serde_json::to_vec(&env).unwrap()).unwrap();
    let (code, stdout, _) = verify(&[&envelope]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("signature does not verify"), "{stdout}");
    assert_eq!(independent_verify(&envelope, &public).0, 1);

    // Another key: refused.
    std::fs::write(&envelope, &original).unwrap();
    let other = dir.join("other.pem");
    let (_, other_pub, _) = support::atrest(
        &["keys", "signing-key", "--out", other.to_str().unwrap()],
        &[],
    );
    register_signing_key(&other);
    let other_public = dir.join("other.pub");
    std::fs::write(&other_public, other_pub).unwrap();
    let (code, _, _) = support::atrest(
        &[
            "report",
            "verify",
            "--key",
            other_public.to_str().unwrap(),
            envelope.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(independent_verify(&envelope, &other_public).0, 1);
    for f in [&report, &envelope] {
        support::check_file(f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oscal_document_validates_with_trestle_and_round_trips_its_findings() {
    python();
    // Plaintext secrets under an identity write key: checks fail, so findings are not all
    // satisfied.
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_only("[{identity: {}}]")),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "audit").await;
    let names: Vec<String> = (0..4).map(|i| format!("db-{i}")).collect();
    create_secrets(&client, "audit", &names, "s3cr3t-oscal-value").await;
    let dir = cp.path().join("oscal");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for format in ["json", "oscal"] {
        let out = dir.join(match format {
            "oscal" => "report.oscal.json".to_string(),
            _ => format!("report.{format}"),
        });
        let (code, _, stderr) = cp.atrest(&[
            "report",
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
            "--kubeconfig",
            cp.kubeconfig.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "a plaintext cluster fails: {stderr}");
        files.push(out);
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let (code, out) = trestle_read(&files[1]);
    assert_eq!(code, 0, "compliance-trestle: {out}");
    let read: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(read["oscal_version"], "1.1.2");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(read["observations"].as_u64(), Some(checks.len() as u64));
    // Each control's state is what atrest's checks say: not satisfied when a check mapped to it
    // fails.
    let versions: Vec<String> = report["apiservers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["version"].as_str().map(str::to_string))
        .collect();
    assert!(
        !versions.is_empty(),
        "the apiserver's release is in the report"
    );
    let minor = atrest::kube::version::major_minor(&versions[0]).map(|(_, m)| m);
    let cis = atrest::report::controls::cis_benchmark(minor);
    let mut expected = std::collections::BTreeMap::new();
    for c in checks {
        let failed = c["status"] == "FAIL";
        for control in atrest::report::controls::controls(c["id"].as_str().unwrap(), &cis) {
            let id = atrest::report::oscal::control_id(&control, &cis);
            let e = expected.entry(id).or_insert("satisfied");
            if failed {
                *e = "not-satisfied";
            }
        }
    }
    let found: std::collections::BTreeMap<String, String> = read["findings"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let expected: std::collections::BTreeMap<String, String> = expected
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(
        found.get("sc-28").map(String::as_str),
        Some("not-satisfied")
    );
    assert!(
        found.contains_key(&format!("{}-1.2.27", cis.version)),
        "{found:?}"
    );
    // A damaged document is refused by the validator (it is a real one).
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    doc["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] =
        serde_json::Value::from("maybe");
    let bad = dir.join("bad.oscal.json");
    std::fs::write(&bad, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert_eq!(trestle_read(&bad).0, 1);
    for f in &files {
        support::check_file(f);
    }
}

/// A signed JSON report of a fresh cluster whose secrets are written with `providers`.
async fn signed_report(name: &str, providers: &str, key: &Path, dir: &Path) -> PathBuf {
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_only(providers)),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "fleet").await;
    let names: Vec<String> = (0..2).map(|i| format!("{name}-{i}")).collect();
    create_secrets(&client, "fleet", &names, "s3cr3t-fleet-value").await;
    let out = dir.join(format!("{name}.json"));
    let (code, _, stderr) = cp.atrest(&[
        "report",
        "--format",
        "json",
        "--out",
        out.to_str().unwrap(),
        "--sign",
        key.to_str().unwrap(),
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
    ]);
    assert!(code == 0 || code == 1, "{stderr}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_summary_of_three_clusters_verifies_each_and_fails_on_findings() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    let (code, public_pem, stderr) = support::atrest(
        &["keys", "signing-key", "--out", key.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    register_signing_key(&key);
    let public = dir.path().join("signing.pub");
    std::fs::write(&public, public_pem).unwrap();
    let secretbox = format!(
        "[{{secretbox: {{keys: [{{name: sb1, secret: {}}}]}}}}]",
        support::b64(32, 9)
    );
    let a = signed_report("alpha", &secretbox, &key, dir.path()).await;
    let b = signed_report("bravo", "[{identity: {}}]", &key, dir.path()).await;
    let c = signed_report("charlie", &secretbox, &key, dir.path()).await;

    let merge = |reports: &[&Path], extra: &[&str]| {
        let mut args = vec!["report", "merge", "--key", public.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(reports.iter().map(|p| p.to_str().unwrap()));
        support::atrest(&args, &[])
    };
    let (code, stdout, stderr) = merge(&[&a, &b, &c], &["--format", "json"]);
    assert_eq!(code, 1, "bravo stores plaintext: {stderr}");
    let fleet: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let clusters = fleet["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 3);
    assert_eq!(fleet["with_findings"], 1);
    assert!(clusters.iter().all(|c| c["signature_verified"] == true));
    assert_eq!(clusters[1]["outcome"], "FAIL");
    assert!(clusters[1]["findings"].as_u64().unwrap() > 0);
    assert_eq!(clusters[0]["outcome"], "PASS");
    // Distinct clusters, each named by its etcd cluster ID.
    let ids: std::collections::BTreeSet<&str> = clusters
        .iter()
        .map(|c| c["etcd_cluster_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);

    // The two compliant clusters: exit 0; the HTML page has the three columns' sorter.
    let html = dir.path().join("fleet.html");
    let (code, _, stderr) = merge(&[&a, &c], &["--out", html.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<tr>").count(), 3, "a header and two clusters");
    assert!(page.contains("addEventListener('click'"));

    // A changed report no longer verifies: named, and the merge fails.
    let mut bytes = std::fs::read(&c).unwrap();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b' ' { b'\t' } else { b' ' };
    std::fs::write(&c, bytes).unwrap();
    let (code, _, stderr) = merge(&[&a, &c], &["--format", "md"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("charlie.json: not verified"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_after_a_rotation_shows_each_keys_life_and_the_logged_steps() {
    let mut cp = support::key1_cluster().await;
    let client = cp.client().await;
    create_namespace(&client, "life").await;
    create_secrets(
        &client,
        "life",
        &support::names("s", 5),
        "s3cr3t-lifecycle-value",
    )
    .await;
    // Restarting the apiserver on each config write: no one-minute reload poll to wait for.
    let rotate = cp.rotate_command(
        "run",
        &["--provider=secretbox", "--key-name=sb2", "--progress=none"],
    );
    cp.run_restarting_expect(rotate, 0).await;
    let dir = cp.path().join("life");
    std::fs::create_dir_all(&dir).unwrap();
    let mut docs = Vec::new();
    for format in ["json", "md", "html"] {
        let file = dir.join(format!("report.{format}"));
        let mut report = cp.atrest_command(&[
            "report",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
        ]);
        let out = cp.output(&mut report);
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        docs.push(std::fs::read_to_string(&file).unwrap());
    }
    let report: serde_json::Value = serde_json::from_str(&docs[0]).unwrap();
    // The rotation log: each committed step, with who, where and its proof.
    let log = report["rotation_log"].as_array().unwrap();
    let steps: Vec<&str> = log.iter().map(|l| l["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        ["prepare", "promote", "reencrypt", "prune"],
        "{log:#?}"
    );
    for l in log {
        for field in ["user", "host", "proof", "at"] {
            assert!(!l[field].as_str().unwrap().is_empty(), "{field}: {l}");
        }
        assert_eq!(l["target"], "secretbox:sb2");
    }
    assert!(log[2]["proof"].as_str().unwrap().contains("proven in etcd"));
    // Each key's life: the old one demoted, retired and archived; the new one the write key.
    let life = report["key_lifecycle"].as_array().unwrap();
    let key = |label: &str| {
        life.iter()
            .find(|k| k["label"] == label)
            .unwrap_or_else(|| panic!("{label} in {life:#?}"))
    };
    let old = key("aescbc:key1");
    assert!(
        old["demoted"].is_string() && old["retired"].is_string() && old["archived"].is_string(),
        "{old}"
    );
    assert_eq!(old["write_key"], false);
    assert!(
        old["found_in"]
            .as_array()
            .unwrap()
            .contains(&serde_json::Value::from("archive"))
    );
    assert!(
        old["added"].is_null(),
        "key1 predates atrest: its adding is not recorded, not guessed"
    );
    let new = key("secretbox:sb2");
    assert_eq!(new["write_key"], true);
    assert!(
        new["promoted"].is_string() && new["demoted"].is_null(),
        "{new}"
    );
    assert_eq!(new["age_days"], 0);
    // Every check cites its controls; the benchmark is named.
    assert!(
        report["cis_benchmark"]["version"]
            .as_str()
            .unwrap()
            .starts_with("cis-")
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["controls"].as_array().unwrap().is_empty())
    );
    for (doc, name) in [(&docs[1], "Markdown"), (&docs[2], "HTML")] {
        for want in [
            "Key lifecycle",
            "Rotation log",
            "not recorded",
            "NIST SC-28",
            "CIS Kubernetes Benchmark",
        ] {
            assert!(doc.contains(want), "{name} lacks {want:?}");
        }
    }
    // An admin removes the retired key from the archive by hand: the lifecycle says it is gone
    // (atrest only appends to the archive, so when is not recorded).
    let archive = cp.state_dir().join("key-archive.yaml");
    let text = std::fs::read_to_string(&archive).unwrap();
    let head: String = text
        .lines()
        .take_while(|l| !l.starts_with("keys:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&archive, format!("{head}keys: []\n")).unwrap();
    let file = dir.join("after-removal.json");
    let mut report = cp.atrest_command(&[
        "report",
        "--format",
        "json",
        "--out",
        file.to_str().unwrap(),
    ]);
    let out = cp.output(&mut report);
    assert!(file.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let old = report["key_lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "aescbc:key1")
        .unwrap();
    assert_eq!(old["removed_from_archive"], true, "{old}");
    assert!(
        old["archived"].is_string(),
        "its archiving stays recorded: {old}"
    );
}
