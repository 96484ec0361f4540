//! `atrest reencrypt` against a real control plane: the minimal PATCH and the protobuf PUT, full
//! migrations with byte-identical data, kill and resume, concurrent writers, a killed apiserver, RBAC refusal.

use atrest_testbed as support;
use support::aescbc;
use support::promises_b::{
    assert_versions, checkpoint, checkpoint_path, code_and_json, count_labelled,
    interrupt_reencrypt, reencrypt_command, resume_to_the_end, stored, wait_for, wait_rewritten,
};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atrest::codec::ProviderTable;
use atrest::codec::object::put_body;
use atrest::kube::ApiPath;
use atrest::kube::rewrite::{Outcome, patch, put};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::Value;
use support::{
    ControlPlane, GADGETS, Options, create_namespace, create_secrets, gadget_ar, names,
    random_key_b64,
};

fn config(secrets_providers: &str, configmaps_providers: &str, crd_providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers: {secrets_providers}\n\
         - resources: [configmaps]\n  providers: {configmaps_providers}\n\
         - resources: [gadgets.atrest.test]\n  providers: {crd_providers}\n"
    )
}

const IDENTITY: &str = "[{identity: {}}]";

/// Every object of namespace `ns`, whole (API and opened etcd bytes): what must survive a
/// migration byte for byte.
async fn snapshot(cp: &ControlPlane, ns: &str) -> support::Objects {
    cp.objects(ns, &[support::SECRETS, support::CONFIGMAPS, GADGETS])
        .await
}

fn install_crd(cp: &ControlPlane) {
    cp.install_crd("atrest.test", "gadgets", "Gadget");
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

/// The PUT path (`kube::rewrite::put`) keeps the same promises as the PATCH: a current object
/// is not written, resourceVersion and uid are preconditions, a deleted object is gone, and a
/// rewrite stores the very same object bytes (managedFields, labels, annotations, finalizers,
/// data) under the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protobuf_put_rewrites_stale_keeps_every_stored_byte_and_leaves_current_untouched() {
    let k1 = random_key_b64();
    let on_key1 = config(
        &format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)])),
        IDENTITY,
        IDENTITY,
    );
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(on_key1),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "default");
    for name in ["stale", "recreated"] {
        let s = serde_json::json!({
            "metadata": {"name": name, "labels": {"app": "web"},
                         "annotations": {"note": "kept"}, "finalizers": ["atrest.test/keep"]},
            "type": "Opaque", "immutable": true,
            "data": {"password": "aHVudGVyMg=="}});
        secrets
            .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }
    let k2 = random_key_b64();
    let rotated = config(
        &format!(
            "[{}, {{identity: {{}}}}]",
            aescbc(&[("key2", &k2), ("key1", &k1)])
        ),
        IDENTITY,
        IDENTITY,
    );
    cp.write_config(&rotated);
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    create_secrets(&client, "default", &["current".into()], "v").await;
    let table = ProviderTable::new(
        &atrest::config::parse_str(std::path::Path::new("c.yaml"), &rotated)
            .unwrap()
            .resolve(&atrest::GroupResource::parse("secrets")),
    );
    // The object as etcd holds it, opened: (plaintext, revision, stored prefix).
    let read = async |name: &str| {
        let key = format!("/registry/secrets/default/{name}");
        let (value, rev) = cp.raw(&key).await.unwrap();
        let plaintext = table.open(key.as_bytes(), &value).unwrap();
        (plaintext.to_vec(), rev, value[..23].to_vec())
    };
    let api = atrest::kube::connect(Some(&cp.kubeconfig)).await.unwrap();
    let path = ApiPath {
        group: String::new(),
        version: "v1".into(),
        plural: "secrets".into(),
        namespaced: true,
    };
    let body = |plaintext: &[u8], rev: i64| {
        let (api_version, body) = put_body(plaintext, rev).unwrap();
        assert_eq!(api_version, path.api_version());
        body
    };

    let (plain, rev, _) = read("current").await;
    assert_eq!(
        put(
            &api,
            &path,
            Some("default"),
            "current",
            rev,
            body(&plain, rev)
        )
        .await,
        Outcome::Unchanged
    );
    assert_eq!(
        read("current").await.1,
        rev,
        "a current object is not written"
    );

    let (plain, rev, prefix) = read("stale").await;
    assert!(prefix.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    assert_eq!(
        put(
            &api,
            &path,
            Some("default"),
            "stale",
            rev - 1,
            body(&plain, rev - 1)
        )
        .await,
        Outcome::Conflict,
        "resourceVersion is a precondition"
    );
    let outcome = put(
        &api,
        &path,
        Some("default"),
        "stale",
        rev,
        body(&plain, rev),
    )
    .await;
    let (after, rev_new, prefix) = read("stale").await;
    assert_eq!(
        outcome,
        Outcome::Rewritten {
            resource_version: rev_new
        }
    );
    assert!(prefix.starts_with(b"k8s:enc:aescbc:v1:key2:"));
    assert!(
        after == plain,
        "the stored object is byte-identical: only the key changed"
    );

    // Deleted and created again under the same name: the old body (old uid) is refused even
    // with the new object's resourceVersion.
    let (old, old_rev, _) = read("recreated").await;
    let finalizers_off = serde_json::json!({"metadata": {"finalizers": null}});
    secrets
        .patch(
            "recreated",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&finalizers_off),
        )
        .await
        .unwrap();
    secrets
        .delete("recreated", &Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cp
        .raw("/registry/secrets/default/recreated")
        .await
        .is_some()
    {
        assert!(Instant::now() < deadline, "recreated was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        put(
            &api,
            &path,
            Some("default"),
            "recreated",
            old_rev,
            body(&old, old_rev)
        )
        .await,
        Outcome::Gone
    );
    create_secrets(&client, "default", &["recreated".into()], "new").await;
    let (_, rev, _) = read("recreated").await;
    assert_eq!(
        put(
            &api,
            &path,
            Some("default"),
            "recreated",
            rev,
            body(&old, rev)
        )
        .await,
        Outcome::Conflict,
        "uid is a precondition"
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
    support::create_rich_objects(&client, "m", 12).await;
    let before = snapshot(&cp, "m").await;
    assert_eq!(before.api.len(), 55 + 2 * 12);
    assert!(before.stored.is_some(), "plaintext opens without a key");
    // Everything the run targets, counted in etcd: every secret, configmap and gadget.
    let mut in_etcd = 0;
    for prefix in [
        "/registry/secrets/",
        "/registry/configmaps/",
        "/registry/atrest.test/gadgets/",
    ] {
        in_etcd += cp.count_prefix(prefix).await as u64;
    }

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
    assert_eq!(dry["total"]["targeted"], in_etcd, "{dry:#}");
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
    assert_eq!(
        r["resources"]["secrets"]["rewritten"].as_u64(),
        Some(cp.count_prefix("/registry/secrets/").await as u64),
        "every secret of the cluster: {r:#}"
    );
    assert_eq!(
        r["resources"]["configmaps"]["targeted"].as_u64().unwrap(),
        r["resources"]["configmaps"]["rewritten"].as_u64().unwrap()
    );
    assert_eq!(r["resources"]["gadgets.atrest.test"]["rewritten"], 5);
    // Which request each resource took: built-in protobuf objects the stored object PUT back,
    // the custom resource (stored as JSON) the merge PATCH.
    for res in ["secrets", "configmaps"] {
        assert_eq!(
            r["resources"][res]["rewritten_by_put"], r["resources"][res]["rewritten"],
            "{res}: {r:#}"
        );
    }
    assert_eq!(r["resources"]["gadgets.atrest.test"]["rewritten_by_put"], 0);
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
    before.assert_kept(
        &snapshot(&cp, "m").await,
        "whole objects byte-identical after identity -> aescbc",
    );

    // Rotate: key2 first, key1 still readable.
    let k2 = random_key_b64();
    let rotated = format!(
        "[{}, {{identity: {{}}}}]",
        aescbc(&[("key2", &k2), ("key1", &k1)])
    );
    cp.write_config(&config(&rotated, &rotated, &rotated));
    cp.restart_apiserver(0).await;
    // This pass with the merge PATCH only, for every resource: the same promises.
    let (code, stdout, stderr) = reencrypt(&cp, &["--request", "patch"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("every object is on its write key")
            && stdout.contains("rewritten (0 by protobuf PUT, "),
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
    before.assert_kept(
        &snapshot(&cp, "m").await,
        "whole objects byte-identical after key1 -> key2",
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
    let (mut cp, all) = identity_cluster(n).await;
    secrets_to_key1(&mut cp).await;
    (cp, all)
}

/// A control plane on identity with `n` secrets (`s-…`, value `initial`) in namespace `big`.
async fn identity_cluster(n: usize) -> (ControlPlane, Vec<String>) {
    let cp = ControlPlane::start(Options {
        config_yaml: Some(config(IDENTITY, IDENTITY, IDENTITY)),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "big").await;
    let all = names("s", n);
    create_secrets(&client, "big", &all, "initial").await;
    (cp, all)
}

/// Switches secrets to aescbc key1 (random; identity still readable) and restarts the apiserver.
async fn secrets_to_key1(cp: &mut ControlPlane) {
    let k1 = random_key_b64();
    cp.write_config(&config(
        &format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)])),
        IDENTITY,
        IDENTITY,
    ));
    cp.restart_apiserver(0).await;
}

const BIG: &str = "/registry/secrets/big/";

const KEY1: &str = "k8s:enc:aescbc:v1:key1:";

/// Every object of `big` on aescbc key1, each written exactly twice since creation (etcd
/// version 2).
async fn assert_all_on_key1_written_twice(cp: &ControlPlane) {
    assert!(all_start_with(
        &stored(cp, BIG).await,
        "k8s:enc:aescbc:v1:key1"
    ));
    assert_versions(cp, BIG, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_resume_completes_without_double_writes() {
    let (cp, _) = plaintext_cluster(1500).await;
    // 2 in flight, 150 writes per second: 10 s for the whole pass.
    let mut cmd = reencrypt_command(&cp, &["--concurrency=2", "--qps=150"]);
    let mut child = cmd.spawn().unwrap();
    // Kill the moment a checkpoint recording progress has been saved.
    wait_for(&mut child, "a checkpoint with 100 rewrites", async || {
        checkpoint(&cp)
            .is_some_and(|c| c["counters"]["secrets"]["rewritten"].as_u64().unwrap_or(0) >= 100)
    })
    .await;
    child.kill().unwrap();
    // The killed run's output goes through the leak check like any other.
    let killed = cp.wait(&cmd, child);
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "{}",
        support::text(&killed)
    );
    let done = count_labelled(&cp, BIG, KEY1).await;
    assert!(
        (100..1500).contains(&done),
        "killed half-way ({done} of 1500 done)"
    );
    let text = std::fs::read_to_string(checkpoint_path(&cp)).unwrap();
    assert!(
        !text.contains("initial") && !text.contains("aW5pdGlhbA"),
        "no secret data in the checkpoint"
    );

    resume_to_the_end(&cp);
    // Created once, rewritten once: etcd version 2 for every object, killed run or not.
    assert_all_on_key1_written_twice(&cp).await;
}

/// The apiserver compacts etcd every 5 minutes, so a long run outlives the revision it started
/// reading at (at a million objects a run stopped after 7 minutes with "compacted"). Here the
/// test compacts mid-run, past every page not yet read: the run reads on at etcd's current
/// revision, and finishes with every object on its write key, each written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_mid_run_is_read_past_and_the_run_finishes() {
    let (cp, _) = plaintext_cluster(600).await;
    let mut cmd = reencrypt_command(&cp, &["--concurrency=1", "--qps=100", "--page-keys=20"]);
    let mut child = cmd.spawn().unwrap();
    // 100 of 30 pages of 20 keys: the reader is a few pages ahead, far from the end.
    wait_rewritten(&mut child, &cp, BIG, KEY1, 100).await;
    let mut etcd = cp.etcd().await;
    let now = etcd
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(
        now,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let out = cp.wait(&cmd, child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("etcd compacted past revision"),
        "the run said it read on: {stderr}"
    );
    assert_eq!(count_labelled(&cp, BIG, KEY1).await, 600);
    // Created once, rewritten once.
    assert_versions(&cp, BIG, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_a_checkpoint_and_exits_3() {
    let (mut cp, _) = plaintext_cluster(1500).await;
    let done = interrupt_reencrypt(&cp, BIG, KEY1, libc::SIGTERM, 1500).await;
    let cp_json = checkpoint(&cp).expect("a checkpoint");
    assert_eq!(cp_json["finished"], false);
    assert!(
        cp_json["cursors"]["/registry/secrets/"]
            .as_str()
            .unwrap()
            .starts_with("/registry/secrets/big/s-")
    );
    // Saved on the signal, after the write in flight finished: it counts every rewrite etcd shows
    // (a periodic save from up to 2 s before would count fewer).
    assert_eq!(
        cp_json["counters"]["secrets"]["rewritten"].as_u64(),
        Some(done as u64),
        "{cp_json:#}"
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
    let (cp, all) = plaintext_cluster(200).await;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cp.client().await, "big");
    // One write at a time, 20 per second, in key order: about 10 s from s-00000 to s-00199.
    let mut cmd = reencrypt_command(&cp, &["--concurrency=1", "--qps=20", "-o", "json"]);
    let mut child = cmd.spawn().unwrap();
    // The targeting scan is pinned and writes have begun.
    wait_rewritten(&mut child, &cp, BIG, KEY1, 5).await;
    // atrest frozen (SIGSTOP) while the writer changes the last 20 objects, from the end, each
    // still plaintext in etcd: atrest's PATCH for it carries the scanned resourceVersion, so it
    // must get 409, re-check etcd, and leave the writer's value alone.
    support::proc::signal(child.id(), libc::SIGSTOP);
    let mut written = Vec::new();
    for n in all.iter().rev().take(20) {
        let (value, _) = cp.raw(&format!("{BIG}{n}")).await.unwrap();
        assert!(
            !value.starts_with(b"k8s:enc:"),
            "{n} rewritten while atrest was frozen"
        );
        let patch = serde_json::json!({"stringData": {"value": format!("writer-{n}")}});
        api.patch(
            n,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
        written.push(n.clone());
    }
    support::proc::signal(child.id(), libc::SIGCONT);
    assert_eq!(written.len(), 20);
    let out = cp.wait(&cmd, child);
    let (code, r) = code_and_json(&out);
    assert_eq!(code, Some(0), "{r:#}");
    let t = &r["total"];
    // Each written object: one 409, then found on the write key (the writer's own write was
    // encrypted with key1), so atrest never wrote it.
    assert_eq!(t["conflicts"].as_u64(), Some(written.len() as u64), "{r:#}");
    assert_eq!(
        t["already_current"].as_u64(),
        Some(written.len() as u64),
        "{r:#}"
    );
    assert_eq!(
        t["rewritten"].as_u64().unwrap() + t["already_current"].as_u64().unwrap(),
        t["targeted"].as_u64().unwrap(),
        "{r:#}"
    );
    assert_eq!(t["given_up"], 0, "{r:#}");
    assert_eq!(r["remaining"], 0, "{r:#}");
    // Every update survived: the writer's value where it wrote, the original elsewhere.
    for n in &all {
        let s = api.get(n).await.unwrap();
        let v = String::from_utf8(s.data.unwrap()["value"].0.clone()).unwrap();
        let want = if written.contains(n) {
            format!("writer-{n}")
        } else {
            "initial".to_string()
        };
        assert_eq!(v, want, "{n}");
    }
    // And everything is on the write key, each object written once (by atrest or the writer).
    assert_all_on_key1_written_twice(&cp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apiserver_is_waited_for() {
    let (mut cp, _) = plaintext_cluster(1000).await;
    // Enough attempts (backoff up to ~13 s each) to outlast an apiserver restart.
    let mut cmd = reencrypt_command(
        &cp,
        &[
            "--concurrency=4",
            "--qps=100",
            "--max-attempts=30",
            "-o",
            "json",
        ],
    );
    let mut child = cmd.spawn().unwrap();
    wait_rewritten(&mut child, &cp, BIG, KEY1, 100).await;
    cp.stop_apiserver(0); // SIGKILL, and reaped
    let done = count_labelled(&cp, BIG, KEY1).await;
    assert!(done < 1000, "killed mid-run ({done} of 1000 done)");
    cp.start_apiserver(0).await;
    let out = cp.wait(&cmd, child);
    let (code, r) = code_and_json(&out);
    assert_eq!(code, Some(0), "{r:#}");
    let t = &r["total"];
    assert_eq!(t["targeted"], 1000, "{r:#}");
    assert_eq!(t["given_up"], 0, "{r:#}");
    assert_eq!(r["remaining"], 0, "{r:#}");
    // The outage was met and waited out: attempts failed and were retried.
    assert!(
        t["writes"].as_u64().unwrap() > 1000,
        "no PATCH was retried: {r:#}"
    );
    // A PATCH applied just before the kill, whose answer was lost, is found current on retry.
    assert_eq!(
        t["rewritten"].as_u64().unwrap() + t["already_current"].as_u64().unwrap(),
        1000,
        "{r:#}"
    );
    assert_all_on_key1_written_twice(&cp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_down_past_the_patience_exits_2_gives_up_nothing_and_resume_finishes() {
    const N: usize = 600;
    let (mut cp, _) = plaintext_cluster(N).await;
    let mut cmd = reencrypt_command(
        &cp,
        &[
            "--concurrency=4",
            "--qps=100",
            "--apiserver-patience=10",
            "-o",
            "json",
        ],
    );
    let mut child = cmd.spawn().unwrap();
    wait_rewritten(&mut child, &cp, BIG, KEY1, 100).await;
    cp.stop_apiserver(0); // SIGKILL, and reaped; it stays down until atrest has stopped
    let out = cp.wait(&cmd, child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("apiserver unreachable")
            && stderr.contains("No object was given up")
            && stderr.contains("--resume"),
        "{stderr}"
    );
    let done = count_labelled(&cp, BIG, KEY1).await;
    assert!(done < N, "stopped mid-run ({done} of {N} done)");
    let saved = checkpoint(&cp).expect("the checkpoint is saved");
    assert_eq!(saved["finished"], false, "{saved:#}");
    let c = &saved["counters"]["secrets"];
    assert_eq!(c["given_up"], 0, "{saved:#}");
    assert_eq!(saved["given_up"].as_array().map(Vec::len), Some(0));
    // Every object etcd shows on key1 is counted once, as rewritten or (a PATCH applied as the
    // apiserver died, whose answer was lost, re-checked in etcd) already current.
    let finished = c["rewritten"].as_u64().unwrap() + c["already_current"].as_u64().unwrap();
    assert_eq!(finished, done as u64, "{saved:#}");

    // The apiserver is back: --resume targets everything not on key1, and counts each object
    // once across both runs.
    cp.start_apiserver(0).await;
    let out = cp.output(&mut reencrypt_command(&cp, &["--resume", "-o", "json"]));
    let (code, r) = code_and_json(&out);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["resumed"], true);
    let t = &r["total"];
    assert_eq!(t["given_up"], 0, "{r:#}");
    assert_eq!(r["remaining"], 0, "{r:#}");
    assert_eq!(t["targeted"].as_u64(), Some(N as u64), "{r:#}");
    assert_eq!(
        t["rewritten"].as_u64().unwrap() + t["already_current"].as_u64().unwrap(),
        N as u64,
        "{r:#}"
    );
    assert_all_on_key1_written_twice(&cp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_failing_while_others_succeed_are_given_up_exit_1_and_resume_retargets_them() {
    const N: usize = 200;
    let (mut cp, all) = identity_cluster(N).await;
    // Every 20th secret is refused by a webhook that cannot be reached (failurePolicy Fail: the
    // apiserver answers 500 for those only).
    let failing: Vec<String> = all.iter().step_by(20).cloned().collect();
    let mut args = vec!["label", "secrets", "-n", "big"];
    args.extend(failing.iter().map(String::as_str));
    args.push("atrest-test=refuse");
    let out = cp.kubectl(&args);
    assert!(out.status.success(), "{out:?}");
    secrets_to_key1(&mut cp).await;
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "atrest-test-refuse"},
        "webhooks": [{"name": "refuse.atrest.test", "failurePolicy": "Fail",
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 2,
            "clientConfig": {"url": "https://127.0.0.1:1/refuse"},
            "objectSelector": {"matchLabels": {"atrest-test": "refuse"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                "resources": ["secrets"]}]}]
    }));

    let out = cp.output(&mut reencrypt_command(
        &cp,
        &["--concurrency=4", "--max-attempts=2", "-o", "json"],
    ));
    let (code, r) = code_and_json(&out);
    assert_eq!(code, Some(1), "{r:#}");
    let t = &r["total"];
    assert_eq!(t["targeted"].as_u64(), Some(N as u64), "{r:#}");
    assert_eq!(t["given_up"].as_u64(), Some(failing.len() as u64), "{r:#}");
    assert_eq!(
        t["rewritten"].as_u64(),
        Some((N - failing.len()) as u64),
        "{r:#}"
    );
    assert_eq!(r["remaining"].as_u64(), Some(failing.len() as u64), "{r:#}");
    let mut listed: Vec<String> = r["given_up"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let g = g.as_str().unwrap();
            assert!(g.contains("500") || g.contains("webhook"), "{g}");
            g.strip_prefix("secrets big/")
                .and_then(|g| g.split(':').next())
                .unwrap()
                .to_string()
        })
        .collect();
    listed.sort();
    assert_eq!(listed, failing, "{r:#}");

    // The webhook removed, --resume targets exactly the objects given up, and counts each
    // object once across both runs.
    let out = cp.kubectl(&[
        "delete",
        "validatingwebhookconfiguration",
        "atrest-test-refuse",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = cp.output(&mut reencrypt_command(&cp, &["--resume", "-o", "json"]));
    let (code, again) = code_and_json(&out);
    assert_eq!(code, Some(0), "{again:#}");
    let t = &again["total"];
    assert_eq!(t["targeted"].as_u64(), Some(N as u64), "{again:#}");
    assert_eq!(t["rewritten"].as_u64(), Some(N as u64), "{again:#}");
    assert_eq!(t["given_up"], 0, "{again:#}");
    assert_eq!(again["remaining"], 0, "{again:#}");
    let s = stored(&cp, BIG).await;
    assert!(all_start_with(&s, "k8s:enc:aescbc:v1:key1"), "{s:?}");
    // Created once, labelled once (the failing ones), rewritten once.
    for (key, (_, version)) in &s {
        let name = key.strip_prefix(BIG).unwrap();
        let want = if failing.iter().any(|f| f == name) {
            3
        } else {
            2
        };
        assert_eq!(*version, want, "{key}");
    }
}
