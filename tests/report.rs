//! `atrest report` on a real control plane: PASS for a compliant cluster, the right failing
//! checks with evidence for each failure, no key or secret value in any format, the HTML
//! rendered by a real headless Chromium, and `report diff`.

use atrest_testbed as support;
use support::check;
use support::secrets_only;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{ControlPlane, Options, create_namespace, create_secrets};

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn key_bytes(fill: u8) -> Vec<u8> {
    (0..32u8)
        .map(|i| i.wrapping_mul(31).wrapping_add(fill))
        .collect()
}

fn secretbox(keys: &[(&str, &[u8])]) -> String {
    let list: Vec<String> = keys
        .iter()
        .map(|(n, k)| format!("{{name: {n}, secret: {}}}", b64(k)))
        .collect();
    format!("{{secretbox: {{keys: [{}]}}}}", list.join(", "))
}

fn status(r: &Value, id: &str) -> String {
    check(r, id)["status"].as_str().unwrap().to_string()
}

fn evidence(r: &Value, id: &str) -> String {
    check(r, id)["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// No key (base64, raw, hex) and no secret value (plain or base64) in any produced file: the
/// test bed's shared leak check (which also runs after every atrest run), with this test's
/// keys and values named explicitly.
fn assert_no_leak(files: &[PathBuf], keys: &[Vec<u8>], values: &[&str]) {
    for k in keys {
        support::register_key_bytes(k, "a report test key");
    }
    for v in values {
        support::register_value(v);
    }
    for f in files {
        support::check_file(f);
    }
}

fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "the HTML report test needs a real headless Chromium: install Debian's package with `apt-get install chromium` (scripts/test.sh does)"
    );
}

fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &format!("--user-data-dir={}", profile.display()),
    ]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliant_cluster_passes_and_renders_in_chromium() {
    let k1 = key_bytes(1);
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_only(&format!("[{}]", secretbox(&[("sb1", &k1)])))),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "audit").await;
    let names: Vec<String> = (0..5).map(|i| format!("db-{i}")).collect();
    create_secrets(&client, "audit", &names, "s3cr3t-value-one").await;

    let p = cp.reports("pass", 0, &[]);
    assert_eq!(p.code, 0, "{:#}", p.json["checks"]);
    assert_eq!(p.json["verdict"], "PASS");
    assert_eq!(p.json["schema"], "atrest.report/v2");
    for id in [
        "ATR-C01", "ATR-C02", "ATR-C03", "ATR-C04", "ATR-C05", "ATR-C06", "ATR-C08", "ATR-C09",
    ] {
        assert_eq!(
            status(&p.json, id),
            "PASS",
            "{id}: {}",
            evidence(&p.json, id)
        );
    }
    assert_eq!(
        status(&p.json, "ATR-C07"),
        "WARN",
        "key age unknown without a rotation state"
    );
    assert!(p.json["etcd"]["cluster_id"].as_str().unwrap().len() > 4);
    assert!(p.json["etcd"]["revision"].as_i64().unwrap() > 0);
    assert_eq!(p.json["config"]["sha256"], cp.config_hash());
    assert_eq!(p.json["config"]["mode"], "0600");
    let secrets = p.json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "secrets")
        .unwrap();
    assert_eq!(
        (
            secrets["total"].as_u64(),
            secrets["coverage"]["on_write_key"].as_u64(),
            secrets["coverage"]["allowed"].as_u64(),
            secrets["coverage"]["plaintext"].as_u64(),
        ),
        (Some(5), Some(5), Some(5), Some(0))
    );
    assert_no_leak(&p.files, std::slice::from_ref(&k1), &["s3cr3t-value-one"]);

    // The HTML report in a real headless Chromium: it renders, with verdict and coverage.
    let html = p
        .files
        .iter()
        .find(|f| f.extension().unwrap() == "html")
        .unwrap();
    let text = std::fs::read_to_string(html).unwrap();
    for external in [" src=", " href=", "@import", "url(", "<link", "<script"] {
        assert!(!text.contains(external), "self-contained: found {external}");
    }
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(profile.path())
        .args(["--dump-dom", &format!("file://{}", html.display())])
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"verdict\"") && dom.contains("Verdict: PASS"),
        "{dom}"
    );
    assert!(
        dom.contains("id=\"coverage\"")
            && dom.contains("data-resource=\"secrets\" data-percent=\"100.0\""),
        "{dom}"
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    // One file per version pair: the matrix runs this test on two pairs at once.
    let shot = artifacts.join(format!(
        "report-pass-{}-etcd-{}.png",
        support::kube_apiserver_version(),
        support::etcd_version()
    ));
    let _ = std::fs::remove_file(&shot);
    let out = headless(profile.path())
        .args([
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600",
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && shot.exists() && std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_fails_the_right_check_with_evidence() {
    let (k1, k2) = (key_bytes(1), key_bytes(2));
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_only("[{identity: {}}]")),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "audit").await;
    create_secrets(
        &client,
        "audit",
        &["plain-1".to_string()],
        "plaintext-value-x",
    )
    .await;

    // sb1 first: plain-1 stays plaintext.
    cp.write_config(&secrets_only(&format!(
        "[{}, {{identity: {{}}}}]",
        secretbox(&[("sb1", &k1)])
    )));
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_secrets(&client, "audit", &["on-sb1".to_string()], "value-on-sb1").await;
    let a = cp.reports("plaintext", 1, &[]);
    assert_eq!((a.code, a.json["verdict"].as_str()), (1, Some("FAIL")));
    assert_eq!(status(&a.json, "ATR-C05"), "FAIL");
    assert!(
        evidence(&a.json, "ATR-C05").contains("audit/plain-1"),
        "{}",
        evidence(&a.json, "ATR-C05")
    );
    assert_eq!(status(&a.json, "ATR-C04"), "FAIL");
    assert_eq!(status(&a.json, "ATR-C06"), "PASS");

    // sb2 first: on-sb1 is stale.
    cp.write_config(&secrets_only(&format!(
        "[{}, {{identity: {{}}}}]",
        secretbox(&[("sb2", &k2), ("sb1", &k1)])
    )));
    cp.restart_apiserver(0).await;
    let b = cp.reports("stale", 1, &[]);
    assert_eq!(status(&b.json, "ATR-C04"), "FAIL");
    let ev = evidence(&b.json, "ATR-C04");
    assert!(ev.contains("audit/on-sb1") && ev.contains("stale"), "{ev}");

    // An object under a key the config does not have.
    let stranger =
        atrest::keys::Key::generate("sb9", atrest::model::KeyProvider::Secretbox).unwrap();
    cp.plant(
        "/registry/secrets/audit/foreign",
        atrest::codec::encrypt_value(&stranger, b"/registry/secrets/audit/foreign", b"k8s\x00x"),
    )
    .await;
    let c = cp.reports("unknown", 1, &[]);
    assert_eq!(status(&c.json, "ATR-C06"), "FAIL");
    assert!(
        evidence(&c.json, "ATR-C06").contains("audit/foreign"),
        "{}",
        evidence(&c.json, "ATR-C06")
    );
    cp.etcd()
        .await
        .delete("/registry/secrets/audit/foreign", None)
        .await
        .unwrap();

    // Identity first.
    cp.write_config(&secrets_only(&format!(
        "[{{identity: {{}}}}, {}]",
        secretbox(&[("sb2", &k2), ("sb1", &k1)])
    )));
    cp.restart_apiserver(0).await;
    let d = cp.reports("identity-first", 1, &[]);
    assert_eq!(status(&d.json, "ATR-C02"), "FAIL");
    assert!(
        evidence(&d.json, "ATR-C02").contains("secrets: writes with identity"),
        "{}",
        evidence(&d.json, "ATR-C02")
    );
    assert_eq!(status(&d.json, "ATR-C08"), "FAIL");
    assert_eq!(
        status(&d.json, "ATR-C09"),
        "FAIL",
        "lint AR001 is an error for secrets"
    );

    // Two apiservers on different configs.
    cp.write_config(&secrets_only(&format!(
        "[{}, {{identity: {{}}}}]",
        secretbox(&[("sb2", &k2), ("sb1", &k1)])
    )));
    cp.restart_apiserver(0).await;
    let other = cp.path().join("other-node.yaml");
    std::fs::write(
        &other,
        secrets_only(&format!(
            "[{}, {{identity: {{}}}}]",
            secretbox(&[("sb1", &k1), ("sb2", &k2)])
        )),
    )
    .unwrap();
    let second = cp.add_node("127.0.0.3", "other-node", &other).await;
    let a1 = format!("--apiserver={}", cp.apiservers[0].url);
    let a2 = format!("--apiserver={}", cp.apiservers[second].url);
    let e = cp.reports("split", 1, &[&a1, &a2]);
    assert_eq!(status(&e.json, "ATR-C03"), "FAIL");
    let ev = evidence(&e.json, "ATR-C03");
    assert!(
        ev.contains(&cp.apiservers[second].url)
            && ev.contains(&atrest::config::config_hash(
                &std::fs::read(&other).unwrap()
            )),
        "{ev}"
    );

    // No report, in any format, holds a key or a secret value.
    let all: Vec<PathBuf> = [&a, &b, &c, &d, &e]
        .iter()
        .flat_map(|p| p.files.clone())
        .collect();
    assert_no_leak(&all, &[k1, k2], &["plaintext-value-x", "value-on-sb1"]);

    // report diff: what changed between two audits.
    let (code, stdout, _) = support::atrest(
        &[
            "report",
            "diff",
            a.files[0].to_str().unwrap(),
            e.files[0].to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "a check went to FAIL: a regression\n{stdout}");
    assert!(
        stdout.contains("REGRESSION check ATR-C03") && stdout.contains("key added: secretbox:sb2"),
        "{stdout}"
    );
    // Nothing regressed (the same report): exit 0; --fail-on-change still passes when equal.
    for extra in [&[][..], &["--fail-on-change"][..]] {
        let mut args = vec![
            "report",
            "diff",
            e.files[0].to_str().unwrap(),
            e.files[0].to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = support::atrest(&args, &[]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("no differences"), "{stdout}");
    }

    // From a finished scan, without scanning again; a policy file changes the verdict inputs.
    let scan_file = cp.path().join("scan.json");
    let (_, scan_json, _) = cp.atrest(&["scan", "-o", "json"]);
    std::fs::write(&scan_file, scan_json).unwrap();
    let policy = cp.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "allowedProviders: [kms-v2]\ndiscouragedProviders: []\n",
    )
    .unwrap();
    let f = cp.reports(
        "from-scan",
        1,
        &[
            "--from-scan",
            scan_file.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            &a1,
        ],
    );
    assert_eq!(
        status(&f.json, "ATR-C02"),
        "FAIL",
        "secretbox is not allowed by this policy"
    );
    assert_eq!(
        f.json["policy"]["allowedProviders"],
        serde_json::json!(["kms-v2"])
    );
}
