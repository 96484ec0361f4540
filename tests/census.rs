//! The scope of every proof is what etcd holds, not what the config names: a resource dropped
//! from the config, a custom resource under a removed wildcard, backups nobody recorded and
//! etcd's history are all found, named and judged — and `scan`, `status` and `report` agree on
//! every exit code. Real etcd and kube-apiserver throughout.

use atrest_testbed as support;
use support::check;

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use support::{ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64};

/// A config whose rules start at column 0, so a printed rule can be appended as it is.
fn config(rules: &[&str]) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{}",
        rules.concat()
    )
}

/// A rule for `resources` with aescbc keys in order, then identity.
fn aescbc_rule(resources: &str, keys: &[(&str, &str)]) -> String {
    let mut s = format!("- resources: {resources}\n  providers:\n  - aescbc:\n      keys:\n");
    for (name, secret) in keys {
        s.push_str(&format!("      - name: {name}\n        secret: {secret}\n"));
    }
    s.push_str("  - identity: {}\n");
    s
}

fn fingerprint(secret_b64: &str) -> String {
    let bytes = atrest::keys::decode_secret(secret_b64).unwrap();
    atrest::keys::fingerprint(&bytes)
}

/// `atrest <args…>` with config, etcd, kubeconfig and state folder: (exit, stdout, stderr).
fn run(cp: &ControlPlane, args: &[&str]) -> (i32, String, String) {
    support::cli::split(cp.output(&mut cp.atrest_command(args)))
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

async fn create_configmaps(cp: &ControlPlane, ns: &str, names: &[String], data: Value) {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(cp.client().await, ns);
    for n in names {
        let body =
            serde_json::from_value(serde_json::json!({"metadata": {"name": n}, "data": data}))
                .unwrap();
        api.create(&PostParams::default(), &body).await.unwrap();
    }
}

/// Restarts the apiserver on the file as it is now (it loads it at once) and waits for it.
async fn reload(cp: &mut ControlPlane) {
    cp.restart_apiserver(0).await;
    cp.wait_config_loaded(0, std::time::Duration::from_secs(30))
        .await;
}

/// The findings of a scan or report JSON of one kind.
fn findings<'a>(doc: &'a Value, kind: &str) -> Vec<&'a Value> {
    doc["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array in {doc:#}"))
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn evidence(report: &Value, id: &str) -> String {
    check(report, id)["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `report --format json --out FILE`: (exit, the report).
fn report(cp: &ControlPlane, file: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "report",
        "--format",
        "json",
        "--out",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = run(cp, &args);
    // Shown when a test fails: why a run stopped (exit 2) is in it.
    eprintln!("atrest {}: exit {code}\n{err}", args.join(" "));
    assert!(file.exists(), "no report written: {err}");
    (code, json(&std::fs::read_to_string(file).unwrap()))
}

/// The rule a finding prints to restore a key, with the secret filled in by the test (atrest
/// names it by fingerprint and where it is kept, never shows it).
fn printed_rule(message: &str, secret: &str) -> String {
    let mut lines = message
        .lines()
        .skip_while(|l| !l.contains("restore the key as a read key"))
        .skip(1);
    let mut out = String::new();
    for l in lines.by_ref() {
        let l = l.strip_prefix("    ").unwrap_or(l);
        if l.trim_start().starts_with('#') {
            continue;
        }
        let l = match l.split_once("secret: <") {
            Some((head, _)) => format!("{head}secret: {secret}"),
            None => l.to_string(),
        };
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_dropped_from_the_config_is_a_finding_until_its_printed_rule_is_back() {
    let key1 = random_key_b64();
    let both = config(&[&aescbc_rule("[secrets, configmaps]", &[("key1", &key1)])]);
    let secrets_only = config(&[&aescbc_rule("[secrets]", &[("key1", &key1)])]);
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(both),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "census").await;
    create_secrets(&client, "census", &names("s", 20), "census-secret-one").await;
    create_configmaps(
        &cp,
        "census",
        &names("c", 60),
        serde_json::json!({"app.properties": "mode=fast"}),
    )
    .await;
    let before = cp.path().join("before.json");
    let (code, r) = report(&cp, &before, &[]);
    assert_eq!(code, 0, "{:#}", r["findings"]);

    // The admin removes the configmaps rule by hand; the apiserver loads it.
    cp.write_config(&secrets_only);
    reload(&mut cp).await;
    let got = cp.kubectl(&["-n", "census", "get", "configmap", "c-00000"]);
    assert!(
        String::from_utf8_lossy(&got.stderr)
            .contains("identity transformer tried to read encrypted data"),
        "kubectl: {}",
        support::text(&got)
    );
    let stored = cp.count_prefix("/registry/configmaps/").await as u64;
    assert!(stored >= 60, "{stored}");

    // scan: exit 1, the resource, its exact count, the key with its fingerprint and the rule.
    let (code, out, _) = run(&cp, &["scan", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let scan = json(&out);
    let cm = support::resource(&scan, "configmaps");
    assert_eq!(cm["verdicts"]["unknown_key"], stored, "{cm:#}");
    assert_eq!(cm["total"], stored);
    let f = findings(&scan, "unknown_key");
    assert_eq!(f.len(), 1, "{:#}", scan["findings"]);
    assert_eq!(f[0]["resource"], "configmaps");
    assert_eq!(f[0]["count"], stored);
    assert_eq!(f[0]["level"], "fail");
    let message = f[0]["message"].as_str().unwrap();
    for want in [
        "aescbc:key1",
        fingerprint(&key1).as_str(),
        "no rule of the config covers configmaps",
        "- resources: [configmaps]",
    ] {
        assert!(message.contains(want), "{want} in {message}");
    }
    assert_eq!(scan["scope"]["census"], true);

    // status and report: the same finding, exit 1.
    let (code, out, _) = run(&cp, &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "configmaps: {stored} values are encrypted under a key"
        )),
        "{out}"
    );
    let after = cp.path().join("after.json");
    let (code, r) = report(&cp, &after, &[]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "ATR-C06")["status"], "FAIL");
    assert!(evidence(&r, "ATR-C06").contains(&fingerprint(&key1)));
    let (code, out, _) = support::atrest(
        &[
            "report",
            "diff",
            before.to_str().unwrap(),
            after.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REGRESSION configmaps: "), "{out}");

    // The printed rule, with the secret filled in, makes every check pass again.
    let rule = printed_rule(message, &key1);
    assert!(rule.starts_with("- resources: [configmaps]"), "{rule}");
    cp.write_config(&format!("{secrets_only}{rule}"));
    reload(&mut cp).await;
    let got = cp.kubectl(&["-n", "census", "get", "configmap", "c-00000"]);
    assert!(got.status.success(), "{}", support::text(&got));
    // Anything written as plaintext while the rule was gone is rewritten.
    let (code, out, err) = run(&cp, &["reencrypt", "--progress=none"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&cp, &["scan"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(&cp, &["status"]);
    assert_eq!(code, 0, "{out}");
    let restored = cp.path().join("restored.json");
    let (code, r) = report(&cp, &restored, &[]);
    assert_eq!(code, 0, "{:#}", r["findings"]);
    let (code, out, _) = support::atrest(
        &[
            "report",
            "diff",
            after.to_str().unwrap(),
            restored.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
}

fn gadget_ar() -> ApiResource {
    ApiResource {
        group: "census.test".into(),
        version: "v1".into(),
        api_version: "census.test/v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    }
}

fn install_gadgets(cp: &ControlPlane) {
    cp.install_crd("census.test", "gadgets", "Gadget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_under_a_removed_wildcard_rule_is_a_finding() {
    let key1 = random_key_b64();
    let with_wildcard = config(&[
        &aescbc_rule("[secrets]", &[("key1", &key1)]),
        &aescbc_rule("[\"*.census.test\"]", &[("key1", &key1)]),
    ]);
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(with_wildcard.clone()),
        ..Default::default()
    })
    .await;
    install_gadgets(&cp);
    create_namespace(&cp.client().await, "census").await;
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client().await, "census", &gadget_ar());
    for n in names("g", 12) {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "census.test/v1", "kind": "Gadget", "metadata": {"name": n}, "spec": {"size": 1}
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
    let (code, out, _) = run(&cp, &["scan", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let doc = json(&out);
    let g = support::resource(&doc, "gadgets.census.test");
    assert_eq!(g["rule"], "*.census.test");
    assert_eq!(g["verdicts"]["on_write_key"], 12, "{g:#}");

    cp.write_config(&config(&[&aescbc_rule("[secrets]", &[("key1", &key1)])]));
    reload(&mut cp).await;
    for args in [&["scan", "-o", "json"][..], &["status", "-o", "json"][..]] {
        let (code, out, _) = run(&cp, args);
        assert_eq!(code, 1, "{args:?}: {out}");
        let doc = json(&out);
        let doc = if args[0] == "status" {
            &doc["scan"]
        } else {
            &doc
        };
        let f = findings(doc, "unknown_key");
        assert_eq!(f.len(), 1, "{:#}", doc["findings"]);
        assert_eq!(f[0]["resource"], "gadgets.census.test");
        assert_eq!(f[0]["count"], 12);
        assert!(
            f[0]["message"]
                .as_str()
                .unwrap()
                .contains("- resources: [gadgets.census.test]")
        );
    }
    let (code, r) = report(&cp, &cp.path().join("r.json"), &[]);
    assert_eq!(code, 1);
    assert!(evidence(&r, "ATR-C06").contains("gadgets.census.test: 12 values"));

    cp.write_config(&with_wildcard);
    reload(&mut cp).await;
    let (code, out, _) = run(&cp, &["scan"]);
    assert_eq!(code, 0, "{out}");
}

/// An etcd snapshot of the cluster now, written by etcdctl (as an admin's backup job would).
fn etcdctl_snapshot(cp: &ControlPlane, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let out = std::process::Command::new(cp.bins.join("etcdctl"))
        .args([
            &format!("--endpoints={}", cp.etcd_endpoint),
            "snapshot",
            "save",
            to.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::text(&out));
}

fn backup<'a>(doc: &'a Value, path: &Path) -> &'a Value {
    doc.pointer("/residue/backups")
        .or_else(|| doc.get("backups"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no backups in {doc:#}"))
        .iter()
        .find(|b| b["path"] == path.to_str().unwrap())
        .unwrap_or_else(|| panic!("{} not surveyed", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_nobody_recorded_are_surveyed_and_removed_only_from_the_snapshots_folder() {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "census").await;
    create_secrets(&client, "census", &names("s", 30), "census-backup-value").await;
    let plaintext = cp.count_prefix("/registry/secrets/").await as u64;
    // A copy of a snapshot in atrest's snapshots folder with no rotation record (rotation.json
    // moved away), and a nightly backup taken elsewhere.
    let orphan = cp.state_dir().join("snapshots").join("copied-by-hand.db");
    let backups = cp.path().join("etcd-backups");
    let nightly = backups.join("nightly.db");
    etcdctl_snapshot(&cp, &orphan);
    etcdctl_snapshot(&cp, &nightly);
    std::fs::write(backups.join("nightly.db.sha256"), "not a backup\n").unwrap();

    // Encryption turns on; every secret is rewritten: both files now hold plaintext the
    // config would not leave there.
    let sb = random_key_b64();
    cp.write_config(&config(&[&format!(
        "- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - name: sb1\n        secret: {sb}\n  - identity: {{}}\n"
    )]));
    reload(&mut cp).await;
    let (code, out, err) = run(&cp, &["reencrypt", "--progress=none"]);
    assert_eq!(code, 0, "{out}{err}");

    let dir = backups.to_str().unwrap();
    let (code, r) = report(&cp, &cp.path().join("r.json"), &["--backup-dir", dir]);
    assert_eq!(code, 0, "residue warns by default: {:#}", r["findings"]);
    for f in [&orphan, &nightly] {
        let b = backup(&r, f);
        assert_eq!(b["plaintext"], plaintext, "{b:#}");
    }
    assert_eq!(backup(&r, &orphan)["found_in"]["kind"], "snapshots-folder");
    assert!(backup(&r, &orphan).get("recorded_by").is_none());
    assert_eq!(backup(&r, &nightly)["found_in"]["kind"], "backup-dir");
    let listed = r["residue"]["backups"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        2,
        "the checksum file is no backup: {listed:#?}"
    );
    assert_eq!(check(&r, "ATR-C11")["status"], "WARN");
    assert!(
        r["result"].as_str().unwrap().starts_with("PASS with "),
        "{}",
        r["result"]
    );

    let (code, out, _) = run(
        &cp,
        &["scan", "--history", "--backup-dir", dir, "-o", "json"],
    );
    assert_eq!(code, 0, "{out}");
    let scan = json(&out);
    for f in [&orphan, &nightly] {
        assert_eq!(backup(&scan, f)["plaintext"], plaintext);
    }
    assert!(!findings(&scan, "residue").is_empty());

    // --remove-snapshots lists both, removes the unrecorded copy in atrest's folder, never the
    // backup taken elsewhere.
    let (code, out, err) = run(
        &cp,
        &["rotate", "prune", "--remove-snapshots", "--backup-dir", dir],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("removed {}", orphan.display())),
        "{out}"
    );
    assert!(out.contains(&nightly.display().to_string()), "{out}");
    assert!(!orphan.exists());
    assert!(nightly.exists());
}

/// Runs one of the printed etcdctl commands against the test etcd.
fn run_printed(cp: &ControlPlane, command: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .env(
            "PATH",
            format!("{}:{}", cp.bins.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {}", support::text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_report_shows_the_residue_of_a_rotation_until_it_is_dropped() {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "census").await;
    create_secrets(&client, "census", &names("s", 40), "census-residue-value").await;
    cp.run_restarting_expect(
        cp.atrest_command(&[
            "rotate",
            "run",
            "--provider=secretbox",
            "--timeout=60",
            "--progress=none",
        ]),
        0,
    )
    .await;

    let file = cp.path().join("r.json");
    let (code, r) = report(&cp, &file, &[]);
    assert_eq!(code, 0, "{:#}", r["findings"]);
    assert_eq!(r["scope"]["history"], true);
    assert!(
        r["residue"]["history"]["residue"].as_u64().unwrap() >= 40,
        "{:#}",
        r["residue"]
    );
    let snapshots: Vec<&Value> = r["residue"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["plaintext"].as_u64() >= Some(40))
        .collect();
    assert_eq!(
        snapshots.len(),
        1,
        "the rotation's own snapshot: {:#}",
        r["residue"]
    );
    assert_eq!(check(&r, "ATR-C11")["status"], "WARN");
    let warnings = r["warnings"].as_u64().unwrap();
    assert_eq!(
        r["result"],
        format!(
            "PASS with {warnings} warning{}",
            if warnings == 1 { "" } else { "s" }
        )
    );
    let policy = cp.path().join("policy.yaml");
    std::fs::write(&policy, "residue: fail\n").unwrap();
    let (code, strict) = report(&cp, &file, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(check(&strict, "ATR-C11")["status"], "FAIL");
    let (code, _, _) = run(
        &cp,
        &["scan", "--history", "--policy", policy.to_str().unwrap()],
    );
    assert_eq!(code, 1, "scan agrees with the report on residue");

    // The printed commands drop it: compact, defragment, remove the snapshot.
    let cleanup: Vec<String> = r["residue"]["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(
        cleanup.iter().any(|c| c.contains(" compact ")),
        "{cleanup:?}"
    );
    for c in &cleanup {
        run_printed(&cp, c);
    }
    let (code, out, err) = run(&cp, &["rotate", "prune", "--remove-snapshots"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, r) = report(&cp, &file, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{:#}", r["findings"]);
    assert_eq!(
        check(&r, "ATR-C11")["status"],
        "PASS",
        "{}",
        evidence(&r, "ATR-C11")
    );
    assert!(findings(&r, "residue").is_empty());
}

/// The exit codes of scan, status and report for the same cluster state.
fn codes(cp: &ControlPlane, extra: &[&str]) -> [i32; 3] {
    let with =
        |cmd: &[&str]| -> Vec<String> { cmd.iter().chain(extra).map(|s| s.to_string()).collect() };
    let file = cp.path().join("codes.json");
    let _ = std::fs::remove_file(&file);
    let mut out = [0; 3];
    for (i, cmd) in [
        with(&["scan"]),
        with(&["status"]),
        with(&[
            "report",
            "--no-history",
            "--format",
            "json",
            "--out",
            file.to_str().unwrap(),
        ]),
    ]
    .iter()
    .enumerate()
    {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        out[i] = run(cp, &args).0;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_status_and_report_agree_on_every_exit_code() {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "census").await;
    create_secrets(&client, "census", &names("s", 10), "census-exit-value").await;

    // All plaintext under identity, with secrets required by the (default) policy.
    assert_eq!(
        codes(&cp, &[]),
        [1, 1, 1],
        "plaintext where the policy requires encryption"
    );

    // Stale after a rotation finished (no rotation in progress): key2 writes, all on key1.
    let (k1, k2) = (random_key_b64(), random_key_b64());
    cp.write_config(&config(&[&aescbc_rule("[secrets]", &[("key1", &k1)])]));
    reload(&mut cp).await;
    let (code, out, err) = run(&cp, &["reencrypt", "--progress=none"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(codes(&cp, &[]), [0, 0, 0], "everything on its write key");
    cp.write_config(&config(&[&aescbc_rule(
        "[secrets]",
        &[("key2", &k2), ("key1", &k1)],
    )]));
    reload(&mut cp).await;
    assert_eq!(codes(&cp, &[]), [1, 1, 1], "stale, no rotation in progress");
    let (code, out, err) = run(&cp, &["reencrypt", "--progress=none"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(codes(&cp, &[]), [0, 0, 0]);

    // Unreadable: a value no configured key opens.
    let key = "/registry/secrets/census/planted";
    cp.plant(
        key,
        b"k8s:enc:aescbc:v1:key2:not a real ciphertext".to_vec(),
    )
    .await;
    assert_eq!(codes(&cp, &[]), [1, 1, 1], "a corrupt value");
    let mut etcd = cp.etcd().await;
    etcd.delete(key, None).await.unwrap();
    assert_eq!(codes(&cp, &[]), [0, 0, 0]);

    // Apiservers disagreeing: a second node runs a copy of the config that differs.
    let copy: PathBuf = cp.path().join("node-b-encryption-config.yaml");
    let mut differing = std::fs::read_to_string(&cp.config_path).unwrap();
    differing.push_str("# node b's copy, edited by hand\n");
    support::write_private(&copy, differing.as_bytes());
    let b = cp.add_node("127.0.0.2", "node-b", &copy).await;
    let a_url = format!("--apiserver={}", cp.apiservers[0].url);
    let b_url = format!("--apiserver={}", cp.apiservers[b].url);
    assert_eq!(
        codes(&cp, &[&a_url, &b_url]),
        [1, 1, 1],
        "an apiserver runs another config"
    );
    std::fs::copy(&cp.config_path, &copy).unwrap();
    cp.restart_apiserver(b).await;
    assert_eq!(
        codes(&cp, &[&a_url, &b_url]),
        [0, 0, 0],
        "both run the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_looking_plaintext_is_named_by_field_never_by_value() {
    let key1 = random_key_b64();
    let cp = ControlPlane::start(Options {
        config_yaml: Some(config(&[&aescbc_rule("[secrets]", &[("key1", &key1)])])),
        ..Default::default()
    })
    .await;
    install_gadgets(&cp);
    create_namespace(&cp.client().await, "census").await;
    // A real PEM private key: the test bed's service-account signing key (ECDSA).
    let pem = std::fs::read_to_string(cp.path().join("sa.key")).unwrap();
    assert!(
        pem.contains("PRIVATE KEY-----"),
        "{}",
        pem.lines().next().unwrap_or("")
    );
    let password = "census-gadget-password-7f3a";
    // Every output atrest writes is searched for both (the key's body line by line).
    support::register_value(password);
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        support::register_value(line);
    }
    // 200 ordinary configmaps, one holding a private key.
    let ordinary = serde_json::json!({
        "app.properties": "mode=fast\noauth.tokenUrl=https://login.example.com/token\n",
        "values.yaml": "existingSecret: db-credentials\nsecretName: tls-cert\n",
        "nginx.conf": "server { listen 8080; location / { proxy_pass http://backend:8080; } }",
    });
    create_configmaps(&cp, "census", &names("plain", 200), ordinary).await;
    create_configmaps(
        &cp,
        "census",
        &["tls-copy".to_string()],
        serde_json::json!({"tls.key": pem}),
    )
    .await;
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client().await, "census", &gadget_ar());
    for (name, spec) in [
        (
            "db",
            serde_json::json!({"host": "db.example.com", "password": password}),
        ),
        (
            "ordinary",
            serde_json::json!({"size": 3, "secretRef": {"name": "db"}}),
        ),
    ] {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "census.test/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    }

    let (code, out, _) = run(&cp, &["scan", "-o", "json"]);
    assert_eq!(code, 0, "sensitive plaintext warns by default: {out}");
    let scan = json(&out);
    let mut found: Vec<(String, String, String, String)> = Vec::new();
    for r in scan["resources"].as_array().unwrap() {
        for o in r["sensitive"]["objects"].as_array().into_iter().flatten() {
            for h in o["hits"].as_array().unwrap() {
                found.push((
                    r["resource"].as_str().unwrap().to_string(),
                    o["name"].as_str().unwrap().to_string(),
                    h["path"].as_str().unwrap().to_string(),
                    h["rule"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "configmaps".into(),
                "census/tls-copy".into(),
                "data.tls.key".into(),
                "pem-private-key".into()
            ),
            (
                "gadgets.census.test".into(),
                "census/db".into(),
                "spec.password".into(),
                "field-name".into()
            ),
        ],
        "exactly the two, by field path, among 200 ordinary configmaps: {:#}",
        scan["findings"]
    );
    let f = findings(&scan, "sensitive_plaintext");
    assert_eq!(f.len(), 2, "{:#}", scan["findings"]);
    assert!(f.iter().all(|f| f["level"] == "warn" && f["count"] == 1));

    // The report: ATR-C12 warns, names both; with `sensitivePlaintext: fail` it fails, and
    // scan and status agree.
    let (code, r) = report(&cp, &cp.path().join("r.json"), &["--no-history"]);
    assert_eq!(code, 0, "{:#}", r["findings"]);
    assert_eq!(check(&r, "ATR-C12")["status"], "WARN");
    let ev = evidence(&r, "ATR-C12");
    assert!(
        ev.contains("census/tls-copy: data.tls.key (pem-private-key)")
            && ev.contains("census/db: spec.password (field-name)"),
        "{ev}"
    );
    let policy = cp.path().join("policy.yaml");
    std::fs::write(&policy, "sensitivePlaintext: fail\n").unwrap();
    let p = policy.to_str().unwrap();
    let (code, r) = report(
        &cp,
        &cp.path().join("r.json"),
        &["--no-history", "--policy", p],
    );
    assert_eq!(code, 1);
    assert_eq!(check(&r, "ATR-C12")["status"], "FAIL");
    assert_eq!(run(&cp, &["scan", "--policy", p]).0, 1);
    assert_eq!(run(&cp, &["status", "--policy", p]).0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_turns_encryption_on_and_off_for_a_resource_by_name() {
    let key1 = random_key_b64();
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config(&[&aescbc_rule("[secrets]", &[("key1", &key1)])])),
        ..Default::default()
    })
    .await;
    install_gadgets(&cp);
    let client = cp.client().await;
    create_namespace(&client, "census").await;
    create_secrets(&client, "census", &names("s", 10), "census-by-name").await;
    create_configmaps(
        &cp,
        "census",
        &names("c", 30),
        serde_json::json!({"mode": "fast"}),
    )
    .await;
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client().await, "census", &gadget_ar());
    for n in names("g", 8) {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "census.test/v1", "kind": "Gadget", "metadata": {"name": n}, "spec": {"size": 1}
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    }

    // A resource the apiserver does not serve (a typo) is refused before anything is written.
    let before = std::fs::read(&cp.config_path).unwrap();
    let (code, _, err) = run(
        &cp,
        &[
            "rotate",
            "prepare",
            "--timeout=60",
            "--resource",
            "configmap",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not serve configmap"), "{err}");
    assert_eq!(std::fs::read(&cp.config_path).unwrap(), before);

    // Encryption on for configmaps and a custom resource, by name: a rule each, the whole
    // guarded runbook; secrets (not asked for) keep their key.
    let rotate_run = |cp: &ControlPlane, args: &[&str]| {
        let mut cmd = cp.atrest_command(&["rotate", "run", "--timeout=60", "--progress=none"]);
        cmd.args(args);
        cmd
    };
    let out = cp
        .run_restarting_expect(
            rotate_run(
                &cp,
                &[
                    "--provider=secretbox",
                    "--key-name=sb1",
                    "--resource",
                    "configmaps",
                    "--resource",
                    "gadgets.census.test",
                ],
            ),
            0,
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("configmaps is not covered by any rule: adding a rule for configmaps"),
        "{err}"
    );
    let (code, out, _) = run(&cp, &["scan", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let scan = json(&out);
    for (name, write) in [
        ("configmaps", "secretbox:sb1"),
        ("gadgets.census.test", "secretbox:sb1"),
        ("secrets", "aescbc:key1"),
    ] {
        let r = support::resource(&scan, name);
        assert_eq!(r["write_key"], write, "{r:#}");
        assert_eq!(r["verdicts"]["on_write_key"], r["total"], "{r:#}");
    }
    let got = cp.kubectl(&["-n", "census", "get", "configmap", "c-00000"]);
    assert!(got.status.success(), "{}", support::text(&got));

    // And off again for configmaps only: decrypted, its key removed; the others untouched.
    cp.run_restarting_expect(
        rotate_run(&cp, &["--provider=identity", "--resource", "configmaps"]),
        0,
    )
    .await;
    let (code, out, _) = run(&cp, &["scan", "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let scan = json(&out);
    let cm = support::resource(&scan, "configmaps");
    assert_eq!(cm["write_key"], "identity");
    assert_eq!(cm["verdicts"]["plaintext"], cm["total"], "{cm:#}");
    assert_eq!(
        support::resource(&scan, "gadgets.census.test")["write_key"],
        "secretbox:sb1"
    );
    assert_eq!(
        support::resource(&scan, "secrets")["write_key"],
        "aescbc:key1"
    );
}
