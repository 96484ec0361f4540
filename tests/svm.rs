//! `atrest reencrypt --engine svm` against a real kube-apiserver and kube-controller-manager:
//! StorageVersionMigration rewrites, atrest proves object by object, falls back where the
//! migrator fails, waits for a migration someone else started, and refuses before any write
//! where the API or its controller is missing.

use atrest_testbed as support;
use support::aescbc;
use support::promises_b::stored;

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use serde_json::Value;
use support::{
    ControlPlane, GADGETS, Options, create_namespace, create_secrets, gadget_ar, names,
    random_key_b64,
};

const IDENTITY: &str = "[{identity: {}}]";

fn config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets, configmaps, gadgets.atrest.test]\n  providers: {providers}\n"
    )
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn run(cp: &ControlPlane, extra: &[&str]) -> (i32, String, String) {
    let out = cp.output(cp.atrest_command(&["reencrypt"]).args(extra));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A cluster under identity with secrets, configmaps and gadgets in namespace `m`, then switched
/// to aescbc key1 (identity still readable): every object is stale.
async fn stale_cluster(n: usize) -> ControlPlane {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config(IDENTITY)),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "m").await;
    cp.install_crd("atrest.test", "gadgets", "Gadget");
    create_secrets(&client, "m", &names("s", n), "secret-data").await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "m");
    for name in names("cm", n) {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": name}, "data": {"k": name}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "m", &gadget_ar());
    for name in names("g", 5) {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({"apiVersion": "atrest.test/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": {"n": name}})).unwrap();
        gadgets.create(&PostParams::default(), &obj).await.unwrap();
    }
    let k1 = random_key_b64();
    let on = format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)]));
    cp.write_config(&config(&on));
    cp.restart_apiserver(0).await;
    cp
}

/// Every StorageVersionMigration in the cluster: (name, resource, labelled as atrest's).
fn migrations(cp: &ControlPlane) -> Vec<(String, String, bool)> {
    let out = cp.kubectl(&["get", "storageversionmigrations", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["metadata"]["name"].as_str().unwrap().to_string(),
                m["spec"]["resource"]["resource"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "atrest",
            )
        })
        .collect()
}

async fn all_on_key1(cp: &ControlPlane) {
    for prefix in [
        "/registry/secrets/m/",
        "/registry/configmaps/m/",
        "/registry/atrest.test/gadgets/m/",
    ] {
        let s = stored(cp, prefix).await;
        assert!(!s.is_empty(), "{prefix}");
        assert!(
            s.values()
                .all(|(l, _)| l.starts_with("k8s:enc:aescbc:v1:key1")),
            "{prefix}: {s:?}"
        );
    }
}

/// The whole run: the migrator rewrites secrets and configmaps (atrest's engine then finds
/// nothing left there), fails on gadgets because its user may not patch them, and atrest's
/// engine rewrites those; every object is proven on key1, byte-identical, and the migrations
/// atrest created are recorded and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svm_rewrites_secrets_and_configmaps_atrest_falls_back_on_what_it_cannot_and_proves_all() {
    let mut cp = stale_cluster(30).await;
    let before = cp
        .objects("m", &[support::SECRETS, support::CONFIGMAPS, GADGETS])
        .await;
    // The controller manager's own user: everything but a write to gadgets.
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "atrest-test-controller-manager"},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets", "configmaps", "events"], "verbs": ["patch", "update", "create"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
            {"apiGroups": ["storagemigration.k8s.io"], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions/status"], "verbs": ["patch", "update"]}
        ]
    });
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "atrest-test-controller-manager"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "atrest-test-controller-manager"},
        "subjects": [{"kind": "User", "name": "atrest-controller-manager", "apiGroup": "rbac.authorization.k8s.io"}]
    });
    cp.kubectl_apply(&role);
    cp.kubectl_apply(&binding);
    let kubeconfig = cp.controller_manager_kubeconfig.clone();
    cp.start_controller_manager_with(&kubeconfig);
    let out = cp.output(&mut cp.atrest_command(&["status", "--no-scan", "-o", "json"]));
    let st = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(st["storage_version_migration"]["served"], "yes", "{st:#}");

    let (code, stdout, stderr) = run(&cp, &["--engine", "svm", "-o", "json"]);
    assert_eq!(
        code,
        0,
        "{stdout}\n{stderr}\n{}",
        cp.controller_manager_log()
    );
    let r = json(&stdout);
    let engines = r["engines"].as_array().expect("the engines section");
    let of = |res: &str| {
        engines
            .iter()
            .find(|e| e["resource"] == res)
            .unwrap_or_else(|| panic!("{res} in {r:#}"))
    };
    for res in ["secrets", "configmaps"] {
        let e = of(res);
        assert_eq!(e["engine"], "svm", "{e:#}");
        assert_eq!(e["migration"]["phase"]["state"], "succeeded", "{e:#}");
        assert_eq!(e["migration"]["deleted"], true, "{e:#}");
        // The migrator rewrote them all: atrest's engine found none left.
        assert_eq!(
            r["resources"][res]["targeted"].as_u64().unwrap_or(0),
            0,
            "{res}: {r:#}"
        );
    }
    let g = of("gadgets.atrest.test");
    assert_eq!(g["engine"], "svm", "{g:#}");
    assert_eq!(g["migration"]["phase"]["state"], "failed", "{g:#}");
    assert_eq!(g["stale"], 5);
    // The fallback: atrest's engine rewrote the gadgets the migrator could not.
    assert_eq!(
        r["resources"]["gadgets.atrest.test"]["rewritten"], 5,
        "{r:#}"
    );
    assert_eq!(r["remaining"], 0);
    all_on_key1(&cp).await;
    before.assert_kept(
        &cp.objects("m", &[support::SECRETS, support::CONFIGMAPS, GADGETS])
            .await,
        "whole objects byte-identical after the migrator and the fallback",
    );
    assert!(
        migrations(&cp).iter().all(|(_, _, ours)| !ours),
        "atrest removed the migrations it created: {:?}",
        migrations(&cp)
    );
    cp.check_state_dirs();
}

/// A migration someone else created for secrets is still pending (no controller yet): atrest
/// reports it, waits for it once the controller starts, creates none of its own for secrets,
/// and leaves the other one in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_someone_else_started_is_waited_for_never_duplicated_nor_deleted() {
    let mut cp = stale_cluster(10).await;
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "storagemigration.k8s.io/v1", "kind": "StorageVersionMigration",
        "metadata": {"name": "someone-elses-secrets"},
        "spec": {"resource": {"group": "", "resource": "secrets"}}
    }));
    let mut cmd = cp.atrest_command(&[
        "reencrypt",
        "--engine",
        "svm",
        "--resource",
        "secrets",
        "--progress",
        "lines",
        "-o",
        "json",
    ]);
    let err_path = cp.path().join("svm-wait.stderr");
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let child = cmd.spawn().unwrap();
    // atrest is following the other migration before any controller runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&err_path)
        .unwrap_or_default()
        .contains("StorageVersionMigration someone-elses-secrets: Pending")
    {
        assert!(
            Instant::now() < deadline,
            "atrest never waited for the other migration:\n{}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cp.start_controller_manager();
    let out = cp.wait(&cmd, child);
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let r = json(&stdout);
    let e = &r["engines"][0];
    assert_eq!(e["resource"], "secrets", "{r:#}");
    assert_eq!(e["waited_for"][0], "someone-elses-secrets", "{e:#}");
    assert!(e["migration"].is_null(), "none created: {e:#}");
    assert_eq!(r["remaining"], 0);
    let left = migrations(&cp);
    assert_eq!(
        left,
        vec![(
            "someone-elses-secrets".to_string(),
            "secrets".to_string(),
            false
        )],
        "the other migration stays, and it is the only one"
    );
    let s = stored(&cp, "/registry/secrets/m/").await;
    assert!(
        s.values()
            .all(|(l, _)| l.starts_with("k8s:enc:aescbc:v1:key1"))
    );
}

/// The API served but no controller answers: the migration atrest created gets no status, is
/// deleted, and the run exits 2 naming kube-controller-manager, with nothing rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svm_without_a_controller_exits_2_deletes_its_migration_and_writes_nothing() {
    let cp = stale_cluster(5).await;
    let before = stored(&cp, "/registry/secrets/").await;
    let (code, stdout, stderr) = run(&cp, &["--engine", "svm", "--svm-patience", "3"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no storage version migrator answered within 3 s")
            && stderr.contains("kube-controller-manager"),
        "{stderr}"
    );
    assert!(migrations(&cp).is_empty(), "{:?}", migrations(&cp));
    assert_eq!(
        stored(&cp, "/registry/secrets/").await,
        before,
        "no secret was written"
    );
}

/// Where the API is not served (Kubernetes 1.34-1.36 without the gate; on 1.37 turned off with
/// --runtime-config), `--engine svm` exits 2 before any write, naming what is missing; `auto`
/// falls back to atrest's engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svm_where_the_api_is_not_served_exits_2_before_any_write() {
    let minor = support::proc::kube_minor();
    let mut args = Vec::new();
    if minor >= 37 {
        args.push("--runtime-config=storagemigration.k8s.io/v1=false".to_string());
    }
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config(IDENTITY)),
        apiserver_args: args,
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "m").await;
    create_secrets(&client, "m", &names("s", 5), "v").await;
    let k1 = random_key_b64();
    let on = format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)]));
    cp.write_config(&config(&on));
    cp.restart_apiserver(0).await;
    let before = stored(&cp, "/registry/secrets/").await;
    // status says so before anyone tries.
    let out = cp.output(&mut cp.atrest_command(&["status", "--no-scan", "-o", "json"]));
    let st = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(st["storage_version_migration"]["served"], "no", "{st:#}");
    let (code, stdout, stderr) = run(&cp, &["--engine", "svm"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("StorageVersionMigration is not served")
            && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert_eq!(
        stored(&cp, "/registry/secrets/").await,
        before,
        "no secret was written"
    );
    let (code, stdout, stderr) = run(&cp, &["--engine", "auto", "-o", "json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r = json(&stdout);
    assert_eq!(r["engines"][0]["engine"], "atrest", "{r:#}");
    assert_eq!(r["resources"]["secrets"]["rewritten"], 5, "{r:#}");
}

/// `rotate run --engine svm`: the migrator rewrites secrets and configmaps onto the new key,
/// atrest proves them, and the rotation's journal records each migration atrest created
/// before atrest deleted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_with_the_migrator_journals_each_migration_before_deleting_it() {
    let mut cp = support::key1_cluster().await;
    let client = cp.client().await;
    create_namespace(&client, "m").await;
    create_secrets(&client, "m", &names("s", 20), "v").await;
    cp.start_controller_manager();
    cp.run_restarting_expect(
        cp.rotate_command(
            "run",
            &["--provider=aescbc", "--key-name=key2", "--engine=svm"],
        ),
        0,
    )
    .await;
    let s = stored(&cp, "/registry/secrets/m/").await;
    assert!(
        s.values()
            .all(|(l, _)| l.starts_with("k8s:enc:aescbc:v1:key2")),
        "{s:?}"
    );
    let state = std::fs::read_to_string(cp.state_dir().join("rotation.json")).unwrap();
    for res in ["secrets", "configmaps"] {
        assert!(
            state.contains(&format!("StorageVersionMigration atrest-{res}-"))
                && state.contains(&format!("of {res}: Succeeded")),
            "{res} in the journal: {state}"
        );
    }
    assert!(
        migrations(&cp).iter().all(|(_, _, ours)| !ours),
        "{:?}",
        migrations(&cp)
    );
}

/// A user who may read but not create migrations: `--engine svm` stops (exit 2) with the
/// apiserver's own refusal, which names the verb and the resource, and rewrites nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_not_create_migrations_is_refused_naming_the_verb() {
    let cp = stale_cluster(3).await;
    let before = stored(&cp, "/registry/secrets/").await;
    let state = cp.path().join("readonly-state");
    let (code, stdout, stderr) = cp.atrest(&[
        "reencrypt",
        "--engine",
        "svm",
        "--kubeconfig",
        cp.readonly_kubeconfig.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot create resource \"storageversionmigrations\""),
        "{stderr}"
    );
    assert!(migrations(&cp).is_empty());
    assert_eq!(stored(&cp, "/registry/secrets/").await, before);
}
