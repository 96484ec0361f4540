//! `atrest reencrypt` against a real control plane: the minimal PATCH, full migrations with
//! byte-identical data, kill and resume, concurrent writers, a killed apiserver, RBAC refusal.

use atrest_testbed as support;

use std::collections::BTreeMap;
use std::time::Duration;

use atrest::kube::ApiPath;
use atrest::kube::rewrite::{Outcome, patch};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use support::{ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64};

fn config(secrets_providers: &str, configmaps_providers: &str, crd_providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers: {secrets_providers}\n\
         - resources: [configmaps]\n  providers: {configmaps_providers}\n\
         - resources: [gadgets.atrest.test]\n  providers: {crd_providers}\n"
    )
}

fn aescbc(keys: &[(&str, &str)]) -> String {
    let list: Vec<String> = keys
        .iter()
        .map(|(n, s)| format!("{{name: {n}, secret: {s}}}"))
        .collect();
    format!("{{aescbc: {{keys: [{}]}}}}", list.join(", "))
}

const IDENTITY: &str = "[{identity: {}}]";

/// Every object's data as served by the apiserver: what must survive a migration byte for byte.
async fn snapshot(cp: &ControlPlane, ns: &str) -> BTreeMap<String, Value> {
    let client = cp.client().await;
    let mut out = BTreeMap::new();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    for s in secrets.list(&ListParams::default()).await.unwrap() {
        out.insert(
            format!("secret/{}", s.metadata.name.clone().unwrap()),
            serde_json::to_value(&s.data).unwrap(),
        );
    }
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
    for c in cms.list(&ListParams::default()).await.unwrap() {
        out.insert(
            format!("configmap/{}", c.metadata.name.clone().unwrap()),
            serde_json::to_value(&c.data).unwrap(),
        );
    }
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client, ns, &gadget_ar());
    if let Ok(list) = gadgets.list(&ListParams::default()).await {
        for g in list {
            out.insert(
                format!("gadget/{}", g.metadata.name.clone().unwrap()),
                g.data["spec"].clone(),
            );
        }
    }
    out
}

fn gadget_ar() -> ApiResource {
    ApiResource {
        group: "atrest.test".into(),
        version: "v1".into(),
        api_version: "atrest.test/v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    }
}

fn install_crd(cp: &ControlPlane) {
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.atrest.test"},
        "spec": {"group": "atrest.test", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }));
    let out = cp.kubectl(&[
        "wait",
        "--for=condition=established",
        "crd/gadgets.atrest.test",
        "--timeout=60s",
    ]);
    assert!(out.status.success());
}

/// Every stored value under `prefix` with its etcd version (writes since creation).
async fn stored(cp: &ControlPlane, prefix: &str) -> BTreeMap<String, (String, i64)> {
    let mut etcd = cp.etcd().await;
    let resp = etcd
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            let v = kv.value();
            let label = if v.starts_with(b"k8s:enc:") {
                String::from_utf8_lossy(&v[..v.len().min(30)]).into_owned()
            } else {
                "plaintext".to_string()
            };
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (label, kv.version()),
            )
        })
        .collect()
}

fn all_start_with(map: &BTreeMap<String, (String, i64)>, prefix: &str) -> bool {
    map.values().all(|(l, _)| l.starts_with(prefix))
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_patch_rewrites_stale_and_leaves_current_untouched() {
    let k1 = random_key_b64();
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config(
            &format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)])),
            IDENTITY,
            IDENTITY,
        )),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_secrets(&client, "default", &["stale".into()], "v").await;
    let k2 = random_key_b64();
    cp.write_config(&config(
        &format!(
            "[{}, {{identity: {{}}}}]",
            aescbc(&[("key2", &k2), ("key1", &k1)])
        ),
        IDENTITY,
        IDENTITY,
    ));
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_secrets(&client, "default", &["current".into()], "v").await;
    let api = atrest::kube::connect(Some(&cp.kubeconfig)).await.unwrap();
    let path = ApiPath {
        group: String::new(),
        version: "v1".into(),
        plural: "secrets".into(),
        namespaced: true,
    };

    let (_, rev_current) = cp.raw("/registry/secrets/default/current").await.unwrap();
    assert_eq!(
        patch(&api, &path, Some("default"), "current", rev_current, None).await,
        Outcome::Unchanged
    );
    let (_, rev_after) = cp.raw("/registry/secrets/default/current").await.unwrap();
    assert_eq!(rev_after, rev_current, "a current object is not written");

    let (_, rev_stale) = cp.raw("/registry/secrets/default/stale").await.unwrap();
    assert_eq!(
        patch(&api, &path, Some("default"), "stale", rev_stale - 1, None).await,
        Outcome::Conflict,
        "resourceVersion is a precondition"
    );
    assert_eq!(
        patch(
            &api,
            &path,
            Some("default"),
            "stale",
            rev_stale,
            Some("not-the-uid")
        )
        .await,
        Outcome::Conflict,
        "uid is a precondition"
    );
    let outcome = patch(&api, &path, Some("default"), "stale", rev_stale, None).await;
    let (value, rev_new) = cp.raw("/registry/secrets/default/stale").await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Rewritten {
            resource_version: rev_new
        }
    );
    assert!(value.starts_with(b"k8s:enc:aescbc:v1:key2:"));
    assert_eq!(
        patch(&api, &path, Some("default"), "gone", 1, None).await,
        Outcome::Gone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_to_aescbc_then_key1_to_key2_keeps_every_byte() {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config(IDENTITY, IDENTITY, IDENTITY)),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "m").await;
    install_crd(&cp);
    create_secrets(&client, "m", &names("s", 40), "secret-data").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "m");
    for n in names("cm", 10) {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": n}, "data": {"k": n}}))
                .unwrap(),
        )
        .await
        .unwrap();
    }
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "m", &gadget_ar());
    for n in names("g", 5) {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({"apiVersion": "atrest.test/v1", "kind": "Gadget", "metadata": {"name": n}, "spec": {"n": n}})).unwrap();
        gadgets.create(&PostParams::default(), &obj).await.unwrap();
    }
    let before = snapshot(&cp, "m").await;
    assert_eq!(before.len(), 55);

    // Turn encryption on: aescbc key1 first, identity kept to read the old values.
    let k1 = random_key_b64();
    let on = format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)]));
    cp.write_config(&config(&on, &on, &on));
    cp.restart_apiserver(0).await;

    let (code, stdout, stderr) = cp.atrest(&[
        "reencrypt",
        "--dry-run",
        "-o",
        "json",
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    let dry = json(&stdout);
    assert!(dry["total"]["targeted"].as_u64().unwrap() >= 55, "{dry:#}");
    assert_eq!(dry["total"]["writes"], 0);
    assert!(
        all_start_with(&stored(&cp, "/registry/secrets/m/").await, "plaintext"),
        "dry run writes nothing"
    );

    let state = cp.path().join("state");
    let (code, stdout, stderr) = reencrypt(&cp, &["-o", "json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&stdout);
    assert_eq!(r["remaining"], 0);
    assert_eq!(r["total"]["given_up"], 0);
    assert!(r["resources"]["secrets"]["rewritten"].as_u64().unwrap() >= 40);
    assert_eq!(
        r["resources"]["configmaps"]["targeted"].as_u64().unwrap(),
        r["resources"]["configmaps"]["rewritten"].as_u64().unwrap()
    );
    assert_eq!(r["resources"]["gadgets.atrest.test"]["rewritten"], 5);
    assert!(state.join("reencrypt-checkpoint.json").exists());
    for prefix in [
        "/registry/secrets/m/",
        "/registry/configmaps/m/",
        "/registry/atrest.test/gadgets/m/",
    ] {
        assert!(
            all_start_with(&stored(&cp, prefix).await, "k8s:enc:aescbc:v1:key1"),
            "{prefix}"
        );
    }
    assert_eq!(
        snapshot(&cp, "m").await,
        before,
        "data byte-identical after identity -> aescbc"
    );

    // Rotate: key2 first, key1 still readable.
    let k2 = random_key_b64();
    let rotated = format!(
        "[{}, {{identity: {{}}}}]",
        aescbc(&[("key2", &k2), ("key1", &k1)])
    );
    cp.write_config(&config(&rotated, &rotated, &rotated));
    cp.restart_apiserver(0).await;
    let (code, stdout, stderr) = reencrypt(&cp, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("every object is on its write key"),
        "{stdout}"
    );
    for prefix in [
        "/registry/secrets/m/",
        "/registry/configmaps/m/",
        "/registry/atrest.test/gadgets/m/",
    ] {
        let s = stored(&cp, prefix).await;
        assert!(
            all_start_with(&s, "k8s:enc:aescbc:v1:key2"),
            "{prefix}: {s:?}"
        );
        assert!(
            s.values().all(|(_, version)| *version == 3),
            "{prefix}: each object written exactly once per pass: {s:?}"
        );
    }
    assert_eq!(
        snapshot(&cp, "m").await,
        before,
        "data byte-identical after key1 -> key2"
    );

    // A second run on the finished cluster writes nothing.
    let (code, stdout, _) = reencrypt(&cp, &["-o", "json"]);
    assert_eq!(code, 0);
    let r = json(&stdout);
    assert_eq!(
        (
            r["total"]["targeted"].as_u64(),
            r["total"]["writes"].as_u64()
        ),
        (Some(0), Some(0))
    );

    // The apiserver lagging behind the file: refused before any write.
    let k3 = random_key_b64();
    let next = format!(
        "[{}, {{identity: {{}}}}]",
        aescbc(&[("key3", &k3), ("key2", &k2), ("key1", &k1)])
    );
    cp.write_config(&config(&next, &next, &next));
    let (code, _, stderr) = reencrypt(&cp, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("not every apiserver has loaded it yet"),
        "{stderr}"
    );

    // A read-only identity may not PATCH: stop, and name the rule needed.
    cp.restart_apiserver(0).await;
    let (code, _, stderr) = cp.atrest(&[
        "reencrypt",
        "--resource",
        "secrets",
        "--kubeconfig",
        cp.readonly_kubeconfig.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refused to PATCH secrets")
            && stderr.contains("verbs: [\"patch\"]")
            && stderr.contains("resources: [\"secrets\"]"),
        "{stderr}"
    );
}

/// `atrest reencrypt <extra>` with the admin kubeconfig and the test's state folder.
fn reencrypt(cp: &ControlPlane, extra: &[&str]) -> (i32, String, String) {
    let out = cp.output(cp.atrest_command(&["reencrypt"]).args(extra));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Seeds `n` secrets under identity and switches to aescbc key1 (identity still readable).
async fn plaintext_cluster(n: usize) -> (ControlPlane, Vec<String>) {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config(IDENTITY, IDENTITY, IDENTITY)),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "big").await;
    let all = names("s", n);
    create_secrets(&client, "big", &all, "initial").await;
    let k1 = random_key_b64();
    cp.write_config(&config(
        &format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)])),
        IDENTITY,
        IDENTITY,
    ));
    cp.restart_apiserver(0).await;
    (cp, all)
}

fn reencrypt_command(cp: &ControlPlane, extra: &[&str]) -> std::process::Command {
    let mut cmd = cp.atrest_command(&["reencrypt"]);
    cmd.args(extra);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_resume_completes_without_double_writes() {
    let (cp, _) = plaintext_cluster(1500).await;
    // Slow enough to be killed half-way: 2 in flight, 150 writes per second.
    let mut child = reencrypt_command(&cp, &["--concurrency=2", "--qps=150"])
        .spawn()
        .unwrap();
    let wait_ms = 2500 + (std::process::id() % 3000) as u64;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    child.kill().unwrap();
    let _ = child.wait();
    let mid = stored(&cp, "/registry/secrets/big/").await;
    let done = mid
        .values()
        .filter(|(l, _)| l.starts_with("k8s:enc:aescbc"))
        .count();
    assert!(done > 0 && done < 1500, "killed half-way ({done} done)");
    let cpfile = cp.path().join("state/reencrypt-checkpoint.json");
    assert!(cpfile.exists(), "a checkpoint was saved while running");
    let text = std::fs::read_to_string(&cpfile).unwrap();
    assert!(
        !text.contains("initial") && !text.contains("aW5pdGlhbA"),
        "no secret data in the checkpoint"
    );

    let out = cp.output(&mut reencrypt_command(&cp, &["--resume", "-o", "json"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["resumed"], true);
    assert_eq!(r["remaining"], 0);
    let after = stored(&cp, "/registry/secrets/big/").await;
    assert!(all_start_with(&after, "k8s:enc:aescbc:v1:key1"));
    // Created once, rewritten once: etcd version 2 for every object, killed run or not.
    let twice: Vec<_> = after.iter().filter(|(_, (_, v))| *v != 2).collect();
    assert!(
        twice.is_empty(),
        "objects written more than once: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_a_checkpoint_and_exits_3() {
    let (mut cp, _) = plaintext_cluster(1500).await;
    let mut cmd = reencrypt_command(&cp, &["--concurrency=1", "--qps=200"]);
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = cp.wait(&cmd, child);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--resume"));
    let cp_json: Value = serde_json::from_str(
        &std::fs::read_to_string(cp.path().join("state/reencrypt-checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cp_json["finished"], false);
    assert!(
        cp_json["cursors"]["/registry/secrets/"]
            .as_str()
            .unwrap()
            .starts_with("/registry/secrets/big/s-")
    );

    // A changed config invalidates the checkpoint: refused with an explanation.
    let text = std::fs::read_to_string(&cp.config_path).unwrap();
    cp.write_config(&(text + "\n"));
    cp.restart_apiserver(0).await;
    let out = cp.output(&mut reencrypt_command(&cp, &["--resume"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was made for config"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_writer_never_loses_an_update() {
    let (cp, all) = plaintext_cluster(800).await;
    let writer_names: Vec<String> = all.iter().step_by(10).cloned().collect();
    let client = cp.client().await;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "big");
    let writer = {
        let names = writer_names.clone();
        let api = api.clone();
        tokio::spawn(async move {
            for round in 0..5 {
                for n in &names {
                    let patch =
                        serde_json::json!({"stringData": {"value": format!("writer-{round}")}});
                    api.patch(
                        n,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await
                    .unwrap();
                }
            }
        })
    };
    let out = cp.output(&mut reencrypt_command(
        &cp,
        &["--concurrency=4", "--qps=300", "-o", "json"],
    ));
    writer.await.unwrap();
    let code = out.status.code();
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert!(
        code == Some(0) || code == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["total"]["given_up"], 0, "{r:#}");
    // Every object ends with the writer's last value.
    for n in &writer_names {
        let s = api.get(n).await.unwrap();
        let v = s.data.unwrap()["value"].0.clone();
        assert_eq!(String::from_utf8(v).unwrap(), "writer-4", "{n}");
    }
    // And everything is on the write key (the writer's own writes re-encrypted too).
    assert!(all_start_with(
        &stored(&cp, "/registry/secrets/big/").await,
        "k8s:enc:aescbc:v1:key1"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apiserver_is_waited_for_or_resumed() {
    let (mut cp, _) = plaintext_cluster(1000).await;
    let mut cmd = reencrypt_command(
        &cp,
        &[
            "--concurrency=4",
            "--qps=200",
            "--max-attempts=8",
            "-o",
            "json",
        ],
    );
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = cp.apiserver_pid(0).unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.restart_apiserver(0).await;
    let out = cp.wait(&cmd, child);
    let code = out.status.code().unwrap();
    if code != 0 {
        // Objects given up while the apiserver was down are listed; a resume (a new pass) finishes.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            code == 1 || code == 2,
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = cp.output(&mut reencrypt_command(&cp, &["-o", "json"]));
        assert_eq!(
            again.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
    }
    assert!(all_start_with(
        &stored(&cp, "/registry/secrets/big/").await,
        "k8s:enc:aescbc:v1:key1"
    ));
}
