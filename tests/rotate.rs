//! `atrest rotate` on a real control plane: full rotations (key, provider, on, off), two
//! apiservers that must both follow, SIGKILL at every stage, the prune proof, and a pre-rotation
//! snapshot that still opens with the key archive.

use atrest_testbed as support;
use support::{aescbc, key1_cluster, secrets_and_configmaps};

use std::process::Command;
use std::time::Duration;

use kube::api::{Api, PostParams};
use serde_json::Value;
use support::{
    ControlPlane, Options, create_namespace, create_secrets, random_key_b64, resource, text,
};

/// Objects of every field seeded beside the plain ones (see `create_rich_objects`).
const RICH: usize = 4;
/// Secrets in the cluster after `seed`: 30 plain and the rich ones.
const SEEDED_SECRETS: u64 = 30 + RICH as u64;

async fn seed(cp: &ControlPlane) {
    let client = cp.client().await;
    create_namespace(&client, "r").await;
    let names: Vec<String> = (0..30).map(|i| format!("s-{i:03}")).collect();
    create_secrets(&client, "r", &names, "rotate-me").await;
    support::create_rich_objects(&client, "r", RICH).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "r");
    for i in 0..10 {
        cms.create(&PostParams::default(), &serde_json::from_value(serde_json::json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": format!("v{i}")}})).unwrap()).await.unwrap();
    }
}

/// Every secret and configmap of namespace `r`, whole (API and opened etcd bytes): what every
/// rotation must keep byte for byte.
async fn data(cp: &ControlPlane) -> support::Objects {
    cp.objects("r", &[support::SECRETS, support::CONFIGMAPS])
        .await
}

use support::scan_json::{stored, verdict};

/// Scans with --verify, checks the exit code is `exit` and returns the JSON document.
fn scan(cp: &ControlPlane, extra: &[&str], exit: i32) -> Value {
    let mut args = vec!["scan", "--verify", "-o", "json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cp.atrest(&args);
    assert_eq!(code, exit, "scan {extra:?}: {stderr}\n{stdout}");
    serde_json::from_str(&stdout).unwrap()
}

/// Every value of secrets and configmaps is on `write_key`, and nothing is unreadable.
fn assert_all_on(doc: &Value, write_key: &str) {
    for name in ["secrets", "configmaps"] {
        let r = resource(doc, name);
        assert_eq!(r["write_key"], write_key, "{name}: {r:#}");
        assert_eq!(
            stored(r).into_keys().collect::<Vec<_>>(),
            [write_key],
            "{name} uses only the write key: {r:#}"
        );
        assert_eq!(r["needs_rewrite"], 0, "{name}: {r:#}");
        for v in ["stale", "undecryptable", "unknown_key", "corrupt"] {
            assert_eq!(verdict(r, v), 0, "{name}.{v}: {r:#}");
        }
    }
}

/// The providers of the secrets rule, as labels.
fn config_labels(cp: &ControlPlane) -> Vec<String> {
    let loaded = atrest::config::load(&cp.config_path).unwrap();
    loaded
        .config
        .resolve(&atrest::GroupResource::secrets())
        .read_keys()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_key_provider_on_and_off() {
    // Turning encryption on: identity -> aescbc.
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_and_configmaps("[{identity: {}}]")),
        ..Default::default()
    })
    .await;
    seed(&cp).await;
    let before = data(&cp).await;
    // Each rotation ends with only its target in the config, every value on it, data unchanged.
    for (args, label) in [
        (&["--provider=aescbc", "--key-name=key1"][..], "aescbc:key1"),
        (&["--provider=aescbc", "--key-name=key2"][..], "aescbc:key2"),
        (
            &["--provider=secretbox", "--key-name=sb1"][..],
            "secretbox:sb1",
        ),
        (&["--provider=identity"][..], "identity"),
    ] {
        let out = cp.run_restarting(cp.rotate_command("run", args)).await;
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        assert_eq!(config_labels(&cp), [label], "only what is needed is left");
        if label == "identity" {
            // Encryption turned off: every secret and configmap back to plaintext, and
            // plaintext secrets are a finding (exit 1).
            let doc = scan(&cp, &[], 1);
            for name in ["secrets", "configmaps"] {
                let r = resource(&doc, name);
                assert_eq!(
                    stored(r).into_keys().collect::<Vec<_>>(),
                    ["identity"],
                    "{name}: {r:#}"
                );
                assert_eq!(r["total"], r["verdicts"]["plaintext"], "{name}: {r:#}");
            }
            assert_eq!(
                stored(resource(&doc, "secrets"))["identity"],
                SEEDED_SECRETS
            );
        } else {
            assert_all_on(&scan(&cp, &[], 0), label);
        }
        before.assert_kept(&data(&cp).await, label);
        if label == "secretbox:sb1" {
            // The report knows when the write key was added and promoted, from the state file.
            let state_dir = cp.path().join("state");
            let (_, stdout, stderr) = cp.atrest(&[
                "report",
                "--format",
                "json",
                "--kubeconfig",
                cp.kubeconfig.to_str().unwrap(),
                "--state-dir",
                state_dir.to_str().unwrap(),
            ]);
            let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stderr}"));
            let key = &resource(&r["config"], "secrets")["keys"][0];
            assert_eq!(key["label"], "secretbox:sb1");
            assert!(
                key["added"].is_string() && key["promoted"].is_string(),
                "{key:#}"
            );
            let c07 = r["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == "ATR-C07")
                .unwrap();
            assert_eq!(c07["status"], "PASS", "{c07:#}");
            assert!(
                r["rotation"]["last_finished"].is_string(),
                "{:#}",
                r["rotation"]
            );
        }
    }

    // Every retired key is archived, and status lists them (never their material).
    let archive = cp.path().join("state/key-archive.yaml");
    let listed = atrest::keys::archive::list(&archive).unwrap();
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["key1", "key2", "sb1"]);
    let (code, stdout, _) = cp.atrest(&[
        "status",
        "--no-scan",
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
        "--state-dir",
        cp.path().join("state").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("Archived keys:")
            && stdout.contains("aescbc:key1")
            && stdout.contains("every apiserver runs the file"),
        "{stdout}"
    );
    for k in atrest::keys::archive::load(&archive).unwrap() {
        assert!(!stdout.contains(k.secret_base64().as_str()));
    }
}

/// Prepare, promote and reencrypt to aescbc key2, each step exiting 0: the rotation waits for
/// its prune.
async fn to_reencrypted_on_key2(cp: &mut ControlPlane) {
    for step in ["prepare", "promote", "reencrypt"] {
        let extra: &[&str] = if step == "prepare" {
            &["--provider=aescbc", "--key-name=key2"]
        } else {
            &[]
        };
        let out = cp.run_restarting(cp.rotate_command(step, extra)).await;
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_needs_proof_and_the_snapshot_still_opens_with_the_archive() {
    let mut cp = key1_cluster().await;
    seed(&cp).await;
    let (old_value, _) = cp.raw("/registry/secrets/r/s-007").await.unwrap();
    assert!(old_value.starts_with(b"k8s:enc:aescbc:v1:key1:"));

    to_reencrypted_on_key2(&mut cp).await;
    // Steps out of order are refused and say what comes next.
    let out = cp.run_restarting(cp.rotate_command("promote", &[])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("atrest rotate prune"),
        "{}",
        text(&out)
    );

    // One object back on the old key (as a restore or a lagging writer would leave it).
    cp.plant("/registry/secrets/r/s-007", old_value).await;
    let out = cp.run_restarting(cp.rotate_command("prune", &[])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prune refused") && err.contains("r/s-007") && err.contains("aescbc:key1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        config_labels(&cp),
        ["aescbc:key2", "aescbc:key1", "identity"],
        "nothing removed"
    );

    cp.run_restarting_expect(cp.rotate_command("reencrypt", &[]), 0)
        .await;
    cp.run_restarting_expect(cp.rotate_command("prune", &[]), 0)
        .await;
    assert_eq!(config_labels(&cp), ["aescbc:key2"]);

    // The snapshot taken before the rotation, restored into a scratch etcd, opens with the
    // current config plus the key archive.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(cp.path().join("state/rotation.json")).unwrap(),
    )
    .unwrap();
    let snap = state["history"][0]["snapshot"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let record = &state["history"][0]["snapshot"];
    assert!(record["revision"].as_i64().unwrap() > 0, "{record:#}");
    assert!(record["sha256"].as_str().unwrap().starts_with("sha256:"));
    assert!(record["size"].as_u64().unwrap() > 0);
    let restored = cp.path().join("restored");
    let out = Command::new(cp.bins.join("etcdutl"))
        .args([
            "snapshot",
            "restore",
            &snap,
            "--data-dir",
            restored.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let port = support::free_port();
    let peer = support::free_port();
    let mut scratch = Command::new(cp.bins.join("etcd"));
    scratch.args([
        "--name=atrest-test",
        &format!("--data-dir={}", restored.display()),
        &format!("--listen-client-urls=http://127.0.0.1:{port}"),
        &format!("--advertise-client-urls=http://127.0.0.1:{port}"),
        &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        &format!("--initial-cluster=atrest-test=http://127.0.0.1:{peer}"),
    ]);
    scratch
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut scratch = scratch.spawn().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let archive = cp.path().join("state/key-archive.yaml");
    let config = cp.config_path.to_str().unwrap().to_string();
    let mut result = None;
    for _ in 0..50 {
        let (code, stdout, stderr) = support::atrest(
            &[
                "scan",
                "--verify",
                "-o",
                "json",
                "--config",
                &config,
                "--endpoints",
                &endpoint,
                "--key-archive",
                archive.to_str().unwrap(),
            ],
            &[],
        );
        if code != 2 {
            // The same snapshot without the archive: the old key's values do not open.
            let (code, bare, stderr) = support::atrest(
                &[
                    "scan",
                    "--verify",
                    "-o",
                    "json",
                    "--config",
                    &config,
                    "--endpoints",
                    &endpoint,
                ],
                &[],
            );
            assert_eq!(code, 1, "findings without the archive: {stderr}");
            result = Some((stdout, bare));
            break;
        }
        assert!(stderr.contains("cannot connect"), "{stderr}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = scratch.kill();
    let _ = scratch.wait();
    let (stdout, bare) = result.expect("the scratch etcd answered");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    // Today's config does not have the retired key (so the apiserver could not read these
    // values: unknown key), but every one of them opens with the archive's copy of it.
    for name in ["secrets", "configmaps"] {
        let r = resource(&doc, name);
        for v in ["undecryptable", "corrupt"] {
            assert_eq!(verdict(r, v), 0, "{name}.{v}: {r:#}");
        }
        assert_eq!(
            r["outside_config"].as_u64().unwrap_or(0),
            verdict(r, "unknown_key"),
            "{name}: every value under a retired key opens with the archive: {r:#}"
        );
    }
    assert_eq!(resource(&doc, "secrets")["outside_config"], SEEDED_SECRETS);
    assert_eq!(
        stored(resource(&doc, "secrets"))["aescbc:key1"],
        SEEDED_SECRETS,
        "the old key from the archive opens them"
    );
    // Without the archive, those values are unreadable: the archive is what keeps snapshots useful.
    let bare: Value = serde_json::from_str(&bare).unwrap();
    let s = resource(&bare, "secrets");
    assert_eq!(
        verdict(s, "unknown_key") + verdict(s, "undecryptable"),
        SEEDED_SECRETS,
        "without the archive the old key's values do not open: {s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_stage_then_rerun_completes() {
    let mut cp = key1_cluster().await;
    seed(&cp).await;
    let before = data(&cp).await;
    let state_dir = cp.path().join("state");
    let read_state = |dir: &std::path::Path| -> Value {
        std::fs::read_to_string(dir.join("rotation.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    // Each round kills `rotate run` the moment it reaches a point: mid-prepare (snapshot taken,
    // config not yet written), prepared, promoted, mid-reencrypt, reencrypted, mid-prune.
    type Point = fn(&std::path::Path, &Value) -> bool;
    let points: [(&str, Point); 6] = [
        ("snapshot taken", |dir, _| {
            std::fs::read_dir(dir.join("snapshots"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        }),
        ("prepared", |_, st| st["rotation"]["stage"] == "prepared"),
        ("promoted", |_, st| st["rotation"]["stage"] == "promoted"),
        ("mid-reencrypt", |dir, _| {
            std::fs::read_to_string(dir.join("reencrypt-checkpoint.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|c| c["counters"]["secrets"]["writes"].as_u64().unwrap_or(0) >= 3)
        }),
        ("reencrypted", |_, st| {
            st["rotation"]["stage"] == "reencrypted"
        }),
        ("archive written (mid-prune)", |dir, _| {
            dir.join("key-archive.yaml").exists()
        }),
    ];
    // The stage the state file records right after each kill: the kill landed mid-rotation.
    let mut stages_killed_in = Vec::new();
    for (rounds, (point, reached)) in points.iter().enumerate() {
        let mut cmd = cp.rotate_command(
            "run",
            &[
                "--provider=aescbc",
                "--key-name=key2",
                "--qps=10",
                "--concurrency=1",
            ],
        );
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let start = std::time::Instant::now();
        let mut seen = cp.config_hash();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {rounds}: rotate run ended ({status}) before reaching {point}");
            }
            if reached(&state_dir, &read_state(&state_dir)) {
                child.kill().unwrap();
                // The killed run's output goes through the leak check like any other.
                cp.wait(&cmd, child);
                let stage = read_state(&state_dir)["rotation"]["stage"].clone();
                stages_killed_in.push((*point, stage));
                break;
            }
            // A cap that only stops a hang; the kill above is triggered by the observed state.
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "round {rounds}: {point} never reached"
            );
            if cp.config_hash() != seen {
                seen = cp.config_hash();
                cp.restart_apiserver(0).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if cp.config_hash() != cp.loaded_config_hash(0).await.unwrap_or_default() {
            cp.restart_apiserver(0).await;
        }
        // Never unreadable: every value opens with the config on disk, and the apiserver serves all.
        // Exit 0: stale values only warn while the rotation that will rewrite them is open
        // (the scan reads that from the rotation's state folder).
        let doc = scan(
            &cp,
            &[
                "--resource",
                "secrets",
                "--state-dir",
                state_dir.to_str().unwrap(),
            ],
            0,
        );
        let r = resource(&doc, "secrets");
        assert!(
            verdict(r, "undecryptable") == 0 && verdict(r, "unknown_key") == 0,
            "round {rounds} ({point}): {r:#}"
        );
        before.assert_kept(&data(&cp).await, &format!("round {rounds} ({point})"));
    }
    eprintln!("killed at stages: {stages_killed_in:?}");
    // Each kill lands at the stage its point names. The first round's may come before or after
    // prepare's state write, and the last one's before or after prune's commit (prune records
    // the rotation finished, then waits for the apiservers: the run was still going). The exact
    // windows between durable writes are hit by the crash points of tests/crash.rs.
    let want = [
        None,
        Some("prepared"),
        Some("promoted"),
        Some("promoted"),
        Some("reencrypted"),
        None,
    ];
    for ((point, stage), want) in stages_killed_in.iter().zip(want) {
        if let Some(want) = want {
            assert_eq!(stage, want, "killed at {point}: {stages_killed_in:?}");
        }
    }
    cp.run_restarting_expect(
        cp.rotate_command("run", &["--provider=aescbc", "--key-name=key2"]),
        0,
    )
    .await;
    assert_eq!(config_labels(&cp), ["aescbc:key2"]);
    assert_all_on(&scan(&cp, &[], 0), "aescbc:key2");
    before.assert_kept(&data(&cp).await, "after the rerun");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_must_both_follow_before_promote() {
    let mut cp = key1_cluster().await;
    // The second control-plane node: its own copy of the config, its own hostname (identity).
    let copy = cp.path().join("node-b-encryption-config.yaml");
    std::fs::copy(&cp.config_path, &copy).unwrap();
    let b = cp.add_node("127.0.0.2", "node-b", &copy).await;
    seed(&cp).await;
    let a_url = cp.apiservers[0].url.clone();
    let b_url = cp.apiservers[b].url.clone();
    let urls = [
        format!("--apiserver={a_url}"),
        format!("--apiserver={b_url}"),
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        urls.iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect()
    };

    // prepare writes node A's file; node B keeps the old one: the wait fails and names B.
    let args = with(&["--provider=aescbc", "--key-name=key2", "--timeout=8"]);
    let out = cp
        .run_restarting_expect(cp.rotate_command("prepare", &args), 2)
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&b_url) && err.contains("not every apiserver runs"),
        "{}",
        text(&out)
    );
    assert!(
        err.contains("copy") && err.contains("every control-plane node"),
        "{}",
        text(&out)
    );

    // promote refuses while B lags, and names it.
    let args = with(&["--timeout=5"]);
    let out = cp
        .run_restarting_expect(cp.rotate_command("promote", &args), 2)
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains(&b_url));
    assert_eq!(
        config_labels(&cp),
        ["aescbc:key1", "aescbc:key2", "identity"],
        "not promoted"
    );

    // The admin syncs node B's file with node A's from now on (here: a symlink) and restarts
    // it; promote now waits for both, and its canary proves each one writes with key2.
    std::fs::remove_file(&copy).unwrap();
    std::os::unix::fs::symlink(&cp.config_path, &copy).unwrap();
    cp.restart_apiserver(b).await;
    let args = with(&["--timeout=60"]);
    let out = cp
        .run_restarting_expect(cp.rotate_command("promote", &args), 0)
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("canary through {a_url}"))
            && err.contains(&format!("canary through {b_url}")),
        "{}",
        text(&out)
    );
    let status = cp.output(
        cp.atrest_command(&["status", "--no-scan", "-o", "json"])
            .args(&urls),
    );
    let doc: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["converged"], true, "{doc:#}");
    assert_eq!(doc["apiservers"]["apiservers"].as_array().unwrap().len(), 2);
    assert_eq!(doc["rotation"]["stage"], "promoted");
    // Both apiservers write with key2 now: a write through each lands on key2.
    for (i, url) in [(0usize, &a_url), (b, &b_url)] {
        let client = cp.client_for(i).await;
        create_secrets(&client, "r", &[format!("via-{i}")], "x").await;
        let (v, _) = cp
            .raw(&format!("/registry/secrets/r/via-{i}"))
            .await
            .unwrap();
        assert!(v.starts_with(b"k8s:enc:aescbc:v1:key2:"), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_automatic_reload_atrest_says_what_to_restart() {
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_and_configmaps("[{identity: {}}]")),
        ..Default::default()
    })
    .await;
    // The manifest of an apiserver that runs without --encryption-provider-config-automatic-reload.
    let manifest = cp.path().join("kube-apiserver.yaml");
    cp.write_manifest(&manifest);
    let text_of = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text_of.replace(
            "\"--encryption-provider-config-automatic-reload=true\"",
            "\"--v=0\"",
        ),
    )
    .unwrap();
    // Nothing restarts the apiserver here: the wait times out and says what to restart.
    let out = cp.output(&mut cp.rotate_command(
        "prepare",
        &[
            "--provider=aescbc",
            "--no-snapshot",
            "--timeout=3",
            &format!("--apiserver-manifest={}", manifest.display()),
        ],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs without --encryption-provider-config-automatic-reload: restart every kube-apiserver"), "{}", text(&out));
    assert!(
        err.contains("Restart the lagging kube-apiservers"),
        "{}",
        text(&out)
    );
    // The step was recorded: the next run of the same step does not start over.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(cp.path().join("state/rotation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["rotation"]["stage"], "prepared");
    assert_eq!(state["rotation"]["snapshot_skipped"], true);
}

/// Prune refuses while any value of the rotation's resources is not on the new write key,
/// whoever holds it: a configmap or a custom resource on the old key, a value no key opens, a
/// value under a key the config never had; and the prune inside `rotate run` refuses the same
/// way. Nothing is removed from the config until every holder is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_for_every_kind_of_holder_and_inside_rotate_run() {
    let k1 = random_key_b64();
    let rule = |providers: &str| {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, configmaps, gadgets.atrest.test]\n  providers: {providers}\n"
        )
    };
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(rule(&format!(
            "[{}, {{identity: {{}}}}]",
            aescbc(&[("key1", &k1)])
        ))),
        ..Default::default()
    })
    .await;
    cp.install_crd("atrest.test", "gadgets", "Gadget");
    seed(&cp).await;
    let gadgets: Api<kube::api::DynamicObject> = Api::namespaced_with(
        cp.client().await,
        "r",
        &kube::discovery::ApiResource {
            group: "atrest.test".into(),
            version: "v1".into(),
            api_version: "atrest.test/v1".into(),
            kind: "Gadget".into(),
            plural: "gadgets".into(),
        },
    );
    let g: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "atrest.test/v1", "kind": "Gadget",
        "metadata": {"name": "g-0"}, "spec": {"token": "gadget-token-value-0"}
    }))
    .unwrap();
    support::register_value("gadget-token-value-0");
    gadgets.create(&PostParams::default(), &g).await.unwrap();
    let cm_key = "/registry/configmaps/r/cm-3";
    let gadget_key = "/registry/atrest.test/gadgets/r/g-0";
    let (old_cm, _) = cp.raw(cm_key).await.unwrap();
    let (old_gadget, _) = cp.raw(gadget_key).await.unwrap();
    assert!(old_cm.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    assert!(old_gadget.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    let before = data(&cp).await;

    to_reencrypted_on_key2(&mut cp).await;
    let stranger = atrest::keys::Key::generate("key9", atrest::model::KeyProvider::Aescbc).unwrap();
    let broken_key = "/registry/secrets/r/broken";
    let stranger_key = "/registry/secrets/r/stranger";
    let mut broken = b"k8s:enc:aescbc:v1:key2:".to_vec();
    broken.extend_from_slice(&[7u8; 48]);
    // (what is planted, where, the name prune must give, the key the value is under)
    let holders: Vec<(&str, &str, Vec<u8>, &str, &str)> = vec![
        (
            "an old-key configmap",
            cm_key,
            old_cm.clone(),
            "r/cm-3",
            "aescbc:key1",
        ),
        (
            "an old-key custom resource",
            gadget_key,
            old_gadget,
            "r/g-0",
            "aescbc:key1",
        ),
        (
            "a value no key opens",
            broken_key,
            broken,
            "r/broken",
            "aescbc:key2",
        ),
        (
            "a value under an unknown key",
            stranger_key,
            atrest::codec::encrypt_value(&stranger, stranger_key.as_bytes(), b"k8s\x00x"),
            "r/stranger",
            "aescbc:key9",
        ),
    ];
    for (what, key, value, name, label) in holders {
        let current = cp.raw(key).await.map(|(v, _)| v);
        cp.plant(key, value).await;
        let out = cp.run_restarting(cp.rotate_command("prune", &[])).await;
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("prune refused") && err.contains(name) && err.contains(label),
            "{what}: {}",
            text(&out)
        );
        assert_eq!(
            config_labels(&cp),
            ["aescbc:key2", "aescbc:key1", "identity"],
            "{what}: nothing removed"
        );
        match current {
            Some(v) => cp.plant(key, v).await,
            None => {
                cp.etcd().await.delete(key, None).await.unwrap();
            }
        }
    }

    // The prune inside `rotate run` is the same step: refused while the configmap is back on
    // the old key.
    cp.plant(cm_key, old_cm).await;
    let out = cp
        .run_restarting_expect(
            cp.rotate_command("run", &["--provider=aescbc", "--key-name=key2"]),
            2,
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prune refused") && err.contains("r/cm-3"),
        "{}",
        text(&out)
    );
    assert_eq!(
        config_labels(&cp),
        ["aescbc:key2", "aescbc:key1", "identity"]
    );

    // Rewritten, the last holder is gone: prune removes key1 and identity.
    cp.run_restarting_expect(cp.rotate_command("reencrypt", &[]), 0)
        .await;
    cp.run_restarting_expect(cp.rotate_command("prune", &[]), 0)
        .await;
    assert_eq!(config_labels(&cp), ["aescbc:key2"]);
    before.assert_kept(&data(&cp).await, "after the refused prunes");
}
