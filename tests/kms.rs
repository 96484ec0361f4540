//! KMS v2 with the real kube-apiserver and the test plugin: rotating to and from KMS v2, key ID
//! changes moving only the old values, verifying values through the plugin, and a stopped plugin.

use atrest_testbed as support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use support::{ControlPlane, Options, create_namespace, create_secrets, text};

fn rotate(cp: &ControlPlane, step: &str, extra: &[&str]) -> Command {
    cp.rotate_command(step, &[&["--timeout=90"], extra].concat())
}

/// Every secret of namespace `k`, whole, as the API serves it (`secrets/<name>`); the stored
/// bytes need the plugin to open, so only the API form is compared here.
async fn data(cp: &ControlPlane) -> BTreeMap<String, Value> {
    cp.objects("k", &[support::SECRETS]).await.api
}

fn scan(cp: &ControlPlane, verify: bool) -> (i32, Value, String) {
    let mut args = vec!["scan", "-o", "json", "--resource", "secrets"];
    if verify {
        args.push("--verify");
    }
    let (code, stdout, stderr) = cp.atrest(&args);
    let doc = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (code, doc, stderr)
}

use support::scan_json::{sample_names, stored, verdict};

/// Every secret's etcd key and the revision it was last written at.
async fn secret_revisions(cp: &ControlPlane) -> Vec<(Vec<u8>, i64)> {
    let resp = cp
        .etcd()
        .await
        .get(
            "/registry/secrets/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
        .collect()
}

fn secrets(doc: &Value) -> &Value {
    doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "secrets")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_kms_v2_key_id_change_and_back() {
    let mut cp = support::key1_secrets_cluster().await;
    let mut plugin = cp.start_kms_plugin("vault", "key-1").await;
    let client = cp.client().await;
    create_namespace(&client, "k").await;
    let names: Vec<String> = (0..20).map(|i| format!("s-{i:02}")).collect();
    create_secrets(&client, "k", &names, "kms-protected").await;
    let before = data(&cp).await;

    // aescbc -> KMS v2.
    let endpoint = plugin.endpoint();
    let out = cp
        .run_restarting_expect(
            rotate(
                &cp,
                "run",
                &[
                    "--provider=kms",
                    "--kms-name=vault",
                    &format!("--kms-endpoint={endpoint}"),
                ],
            ),
            0,
        )
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/readyz/kms-providers: ok"),
        "{}",
        text(&out)
    );
    let (code, doc, stderr) = scan(&cp, true);
    assert_eq!(code, 0, "{stderr}");
    let s = secrets(&doc);
    assert_eq!(s["write_key"], "kms:v2:vault");
    assert_eq!(stored(s)["kms:v2:vault"], 20, "{s:#}");
    assert_eq!(verdict(s, "on_write_key"), 20, "{s:#}");
    assert_eq!(
        s["unverified"], 0,
        "every value opened through the plugin: {s:#}"
    );
    assert_eq!(s["kms_key_ids"]["key-1"], 20);
    assert_eq!(doc["kms_current_key_ids"]["vault"], "key-1");
    // The apiserver had the plugin wrap its DEK seed (32 bytes): the leak check knows it.
    let wrapped = plugin.wrapped();
    assert!(
        !wrapped.is_empty() && wrapped.iter().all(|k| k.len() == 32),
        "the plugin logs each seed it wraps: {} logged",
        wrapped.len()
    );
    assert_eq!(data(&cp).await, before);

    // The KMS rotates its key: new writes use key-2 (after the apiserver's next Status), the
    // scan shows the split, and reencrypt moves only the values on key-1.
    plugin.set_key_id("key-2");
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_secrets(
        &client,
        "k",
        &["new-0".into(), "new-1".into()],
        "after-rotation",
    )
    .await;
    let (code, doc, _) = scan(&cp, false);
    assert_eq!(code, 1, "values on the old key ID are stale");
    let s = secrets(&doc);
    assert_eq!(
        (
            s["kms_key_ids"]["key-1"].as_u64(),
            s["kms_key_ids"]["key-2"].as_u64()
        ),
        (Some(20), Some(2)),
        "{s:#}"
    );
    assert_eq!(verdict(s, "stale"), 20);
    assert_eq!(sample_names(s, "stale").len(), 20);
    let c10 = |cp: &ControlPlane, exit: i32| -> Value {
        let (code, stdout, stderr) = cp.atrest(&[
            "report",
            "--verify",
            "--format",
            "json",
            "--kubeconfig",
            cp.kubeconfig.to_str().unwrap(),
        ]);
        assert_eq!(code, exit, "{stderr}");
        let r: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(r["kms_current_key_ids"]["vault"], "key-2");
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "ATR-C10")
            .unwrap()
            .clone()
    };
    let c = c10(&cp, 1);
    assert_eq!(c["status"], "FAIL", "{c:#}");
    assert!(
        c["evidence"]
            .to_string()
            .contains("20 values on a key ID other than the current one"),
        "{c:#}"
    );
    cp.run_restarting_expect(rotate(&cp, "reencrypt", &[]), 0)
        .await;
    let cpf: Value = serde_json::from_str(
        &std::fs::read_to_string(cp.path().join("state/reencrypt-checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cpf["counters"]["secrets"]["targeted"], 20,
        "only the key-1 values: {cpf:#}"
    );
    let (code, doc, _) = scan(&cp, true);
    assert_eq!(code, 0);
    assert_eq!(
        secrets(&doc)["kms_key_ids"],
        serde_json::json!({"key-2": 22})
    );
    assert_eq!(c10(&cp, 0)["status"], "PASS");

    // The plugin freezes (SIGSTOP: its socket accepts, nothing answers): --verify stops with
    // exit 2 naming it and the wait, never calling its values undecryptable; without --verify
    // the scan still classifies them.
    let pid = plugin.pid().unwrap();
    support::proc::signal(pid, libc::SIGSTOP);
    let (code, _, stderr) = scan(&cp, true);
    let (code_unverified, doc_unverified, _) = scan(&cp, false);
    support::proc::signal(pid, libc::SIGCONT);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("KMS plugin of provider \"vault\"")
            && stderr.contains("no answer within 10 s"),
        "{stderr}"
    );
    assert_eq!(code_unverified, 0);
    assert_eq!(secrets(&doc_unverified)["unverified"], 22);

    // The plugin stops: without --verify the scan still classifies; with --verify it says the
    // plugin is unreachable (exit 2) and writes nothing.
    plugin.stop();
    let revisions_before = secret_revisions(&cp).await;
    let (code, doc, stderr) = scan(&cp, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("unreachable"),
        "a warning names the plugin: {stderr}"
    );
    assert_eq!(secrets(&doc)["unverified"], 22);
    let (code, _, stderr) = scan(&cp, true);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("KMS plugin of provider \"vault\"") && stderr.contains("unreachable"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert_eq!(
        secret_revisions(&cp).await,
        revisions_before,
        "no secret was written (every mod_revision unchanged)"
    );

    // KMS v2 -> aescbc.
    plugin.start().await;
    cp.restart_apiserver(0).await;
    cp.run_restarting_expect(
        rotate(&cp, "run", &["--provider=aescbc", "--key-name=back"]),
        0,
    )
    .await;
    let (code, doc, _) = scan(&cp, true);
    assert_eq!(code, 0);
    assert_eq!(
        stored(secrets(&doc)),
        BTreeMap::from([("aescbc:back".to_string(), 22)])
    );
    let loaded = atrest::config::load(&cp.config_path).unwrap();
    assert_eq!(
        loaded
            .config
            .resolve(&atrest::GroupResource::secrets())
            .read_keys(),
        ["aescbc:back"],
        "the KMS provider is pruned"
    );
    let mut expected = before.clone();
    for n in ["new-0", "new-1"] {
        let d = data(&cp).await;
        let n = format!("secrets/{n}");
        expected.insert(n.clone(), d[&n].clone());
    }
    assert_eq!(data(&cp).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_v1_values_are_unwrapped_through_the_v1_api() {
    let mut cp = ControlPlane::start(Options {
        apiserver_args: vec!["--feature-gates=KMSv1=true".into()],
        ..Default::default()
    })
    .await;
    let mut plugin = cp.start_kms_plugin("legacy", "unused").await;
    cp.write_config(&format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: [{{kms: {{name: legacy, endpoint: '{}', cachesize: 100}}}}, {{identity: {{}}}}]\n",
        plugin.endpoint()
    ));
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_namespace(&client, "k").await;
    let names: Vec<String> = (0..5).map(|i| format!("v1-{i}")).collect();
    create_secrets(&client, "k", &names, "under-kms-v1").await;
    let (value, _) = cp.raw("/registry/secrets/k/v1-0").await.unwrap();
    assert!(value.starts_with(b"k8s:enc:kms:v1:legacy:"));

    // With the plugin: every v1 value opens (GCM data under a DEK the plugin unwraps).
    let (code, doc, stderr) = scan(&cp, true);
    assert_eq!(code, 0, "{stderr}");
    let s = secrets(&doc);
    assert_eq!(stored(s)["kms:v1:legacy"], 5, "{s:#}");
    assert_eq!(
        s["unverified"], 0,
        "verified through the v1beta1 API: {s:#}"
    );

    // Without it: classified by prefix and envelope; --verify says the plugin is unreachable.
    plugin.stop();
    let (code, doc, _) = scan(&cp, false);
    assert_eq!(code, 0);
    assert_eq!(secrets(&doc)["unverified"], 5);
    let (code, _, stderr) = scan(&cp, true);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");

    // The report decrypts by default; a plugin it cannot ask does not stop it: ATR-C06 warns,
    // counting the values not decrypted and naming the plugin, and the scope says so.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let out = file.to_str().unwrap();
    let (code, _, stderr) =
        cp.atrest(&["report", "--format", "json", "--out", out, "--no-history"]);
    assert!(file.exists(), "no report written (exit {code}): {stderr}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let c06 = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "ATR-C06")
        .unwrap();
    assert_eq!(c06["status"], "WARN", "{c06:#}");
    let evidence: Vec<&str> = c06["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let evidence = evidence.join("\n");
    assert!(
        evidence.contains("5 encrypted values were NOT decrypted (5 secrets)")
            && evidence.contains("\"legacy\"")
            && evidence.contains("unreachable"),
        "{evidence}"
    );
    assert_eq!(doc["scope"]["decrypted"], true, "{:#}", doc["scope"]);
    assert_eq!(doc["scope"]["not_decrypted"], 5, "{:#}", doc["scope"]);
    let result = doc["result"].as_str().unwrap();
    assert!(
        result != "PASS",
        "no plain PASS over values nobody opened: {result}"
    );
}
