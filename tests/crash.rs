//! Crashes injected at every durable write (issue 24): the test build of atrest aborts at a
//! named crash point (`fsutil::crash_point`, `ATREST_CRASH_AT`), as a power cut or SIGKILL
//! would, between two durable steps of a rotation or a re-encryption; a rerun must finish, every
//! object must stay readable and byte-identical, and no write may be doubled. Files atrest
//! keeps that are truncated, empty or garbage must stop it with exit 2, named, and be left as
//! they are.

use atrest_testbed as support;
use support::{aescbc, secrets_and_configmaps};

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

use serde_json::Value;
use support::scan_json::verdict;
use support::{
    ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64, resource, text,
};

/// [`support::key1_cluster`] with 30 secrets and a few rich objects in namespace `c`.
async fn seeded_cluster() -> ControlPlane {
    let cp = support::key1_cluster().await;
    let client = cp.client().await;
    create_namespace(&client, "c").await;
    create_secrets(&client, "c", &names("s", 30), "crash-test-value").await;
    support::create_rich_objects(&client, "c", 4).await;
    cp
}

async fn objects(cp: &ControlPlane) -> support::Objects {
    cp.objects("c", &[support::SECRETS, support::CONFIGMAPS])
        .await
}

/// `rotate run` to aescbc `key`, crashing at `point` when given.
fn rotate_run(cp: &ControlPlane, key: &str, point: Option<&str>) -> Command {
    let mut cmd = cp.atrest_command(&[
        "rotate",
        "run",
        "--provider=aescbc",
        &format!("--key-name={key}"),
        "--timeout=60",
    ]);
    if let Some(p) = point {
        cmd.env(atrest::fsutil::CRASH_AT_ENV, p);
    }
    cmd
}

/// After a crash the apiserver may not have been restarted on the last config written: do it,
/// as the node's kubelet or the automatic reload would.
async fn settle(cp: &mut ControlPlane) {
    if cp.loaded_config_hash(0).await.as_deref() != Some(cp.config_hash().as_str()) {
        cp.restart_apiserver(0).await;
    }
}

/// Nothing unreadable: every stored secret and configmap opens with the config on disk.
fn assert_readable(cp: &ControlPlane, when: &str) {
    let (code, stdout, stderr) = cp.atrest(&["scan", "--verify", "-o", "json"]);
    assert_ne!(code, 2, "{when}: scan could not check: {stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    for name in ["secrets", "configmaps"] {
        let r = resource(&doc, name);
        for v in ["undecryptable", "unknown_key", "corrupt"] {
            assert_eq!(verdict(r, v), 0, "{when}: {name}.{v}: {r:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_aborted_at_every_crash_point_finishes_on_rerun_and_keeps_every_object() {
    let mut cp = seeded_cluster().await;
    let before = objects(&cp).await;
    let config = cp
        .config_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // In the order a rotation first reaches them: prepare (snapshot, state, journal: intent,
    // backup, config, apiservers loaded), reencrypt (checkpoint), prune (key archive).
    let points: Vec<String> = [
        "snapshot:before-rename",
        "snapshot:after-rename",
        "write:rotation.json:before-rename",
        "write:rotation.json:after-rename",
        "journal:after-intent",
        "write:backup:before-rename",
        "write:backup:after-rename",
        "journal:after-backup",
        "write:CONFIG:before-rename",
        "write:CONFIG:after-rename",
        "journal:after-config",
        "journal:after-sync",
        "write:reencrypt-checkpoint.json:before-rename",
        "write:reencrypt-checkpoint.json:after-rename",
        "write:key-archive.yaml:before-rename",
        "write:key-archive.yaml:after-rename",
    ]
    .iter()
    .map(|p| p.replace("CONFIG", &config))
    .collect();
    let mut key = 2;
    let mut crashed = Vec::new();
    for point in &points {
        // A point the rest of this rotation no longer reaches is tried once more in the next.
        let mut hit = false;
        for _ in 0..2 {
            let out = cp
                .run_restarting(rotate_run(&cp, &format!("key{key}"), Some(point)))
                .await;
            if out.status.signal() == Some(SIGABRT) {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains(&format!("crash point {point}: aborting")),
                    "aborted elsewhere than at {point}: {}",
                    text(&out)
                );
                hit = true;
                break;
            }
            assert_eq!(
                out.status.code(),
                Some(0),
                "{point}: neither the crash nor a finished rotation: {}",
                text(&out)
            );
            key += 1;
        }
        assert!(hit, "crash point {point} is never reached by a rotation");
        crashed.push(point.clone());
        settle(&mut cp).await;
        assert_readable(&cp, &format!("after the crash at {point}"));
        before.assert_kept(&objects(&cp).await, &format!("after the crash at {point}"));
    }
    assert_eq!(crashed, points);
    // The rerun finishes the rotation in progress: only its key is left, every value on it.
    cp.run_restarting_expect(rotate_run(&cp, &format!("key{key}"), None), 0)
        .await;
    let loaded = atrest::config::load(&cp.config_path).unwrap();
    let labels = loaded
        .config
        .resolve(&atrest::GroupResource::secrets())
        .read_keys();
    assert_eq!(labels, [format!("aescbc:key{key}").as_str()]);
    let (code, stdout, stderr) = cp.atrest(&["scan", "--verify", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    for name in ["secrets", "configmaps"] {
        let r = resource(&doc, name);
        assert_eq!(
            support::scan_json::stored(r)
                .into_keys()
                .collect::<Vec<_>>(),
            [format!("aescbc:key{key}")],
            "{name}: {r:#}"
        );
    }
    before.assert_kept(&objects(&cp).await, "after the rerun");
}

/// The signal `abort()` raises.
const SIGABRT: i32 = 6;

/// A plaintext cluster with `n` secrets in `big`, and a config that encrypts them with key1.
async fn plaintext_then_key1(n: usize) -> ControlPlane {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_and_configmaps("[{identity: {}}]")),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "big").await;
    create_secrets(&client, "big", &names("b", n), "crash-reencrypt-value").await;
    let k1 = random_key_b64();
    cp.write_config(&secrets_and_configmaps(&format!(
        "[{}, {{identity: {{}}}}]",
        aescbc(&[("key1", &k1)])
    )));
    cp.restart_apiserver(0).await;
    cp
}

/// etcd's version of every key under `prefix`: how many times each object was written.
async fn versions(cp: &ControlPlane, prefix: &str) -> Vec<i64> {
    let mut etcd = cp.etcd().await;
    let resp = etcd
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs().iter().map(|kv| kv.version()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reencrypt_aborted_at_its_checkpoint_writes_resumes_and_writes_each_object_once() {
    const N: usize = 600;
    let cp = plaintext_then_key1(N).await;
    let before = cp.objects("big", &[support::SECRETS]).await;
    let run = |point: Option<&str>, resume: bool| {
        let mut cmd = cp.atrest_command(&["reencrypt", "--concurrency=2", "--qps=200"]);
        if resume {
            cmd.arg("--resume");
        }
        if let Some(p) = point {
            cmd.env(atrest::fsutil::CRASH_AT_ENV, p);
        }
        cp.output(&mut cmd)
    };
    let checkpoint = cp.state_dir().join("reencrypt-checkpoint.json");
    for (point, saved) in [
        // The first save dies before its rename: no checkpoint yet, a fresh run starts over
        // (every object already on key1 is current and skipped).
        ("write:reencrypt-checkpoint.json:before-rename", false),
        // A save dies after its rename: the checkpoint is there and `--resume` continues.
        ("write:reencrypt-checkpoint.json:after-rename", true),
    ] {
        let out = run(Some(point), checkpoint.exists());
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{point}: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("crash point {point}")),
            "{}",
            text(&out)
        );
        assert_eq!(checkpoint.exists(), saved, "after the crash at {point}");
        assert_readable(&cp, point);
    }
    let out = run(None, true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Created once, rewritten once: no object written twice across the crashed runs.
    let v = versions(&cp, "/registry/secrets/big/").await;
    assert_eq!(v.len(), N);
    assert!(v.iter().all(|&v| v == 2), "versions: {v:?}");
    before.assert_kept(
        &cp.objects("big", &[support::SECRETS]).await,
        "after the resume",
    );
}

/// The kinds of damage a file can suffer: cut in half, emptied, overwritten with garbage.
fn damaged(original: &[u8]) -> [(&'static str, Vec<u8>); 3] {
    [
        ("truncated", original[..original.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"\x00\xffnot what atrest wrote\n{[".to_vec()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_checkpoint_and_archive_exit_2_name_the_file_and_are_left_as_they_are() {
    let mut cp = seeded_cluster().await;
    let state = cp.state_dir();
    // A finished rotation leaves rotation.json and the key archive.
    cp.run_restarting_expect(rotate_run(&cp, "key2", None), 0)
        .await;
    let before = objects(&cp).await;

    let rotation = state.join("rotation.json");
    each_damage_is_refused(
        &cp,
        &rotation,
        &[
            &["rotate", "run", "--provider=aescbc", "--key-name=key3"],
            &["status"],
        ],
    );
    let archive = state.join("key-archive.yaml");
    each_damage_is_refused(
        &cp,
        &archive,
        &[&["scan", "--key-archive", archive.to_str().unwrap()]],
    );
    // The checkpoint a re-encryption keeps, damaged.
    let out = cp.output(&mut cp.atrest_command(&["reencrypt"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let checkpoint = state.join("reencrypt-checkpoint.json");
    each_damage_is_refused(&cp, &checkpoint, &[&["reencrypt", "--resume"]]);
    before.assert_kept(&objects(&cp).await, "after every refused run");
    // With the files restored, atrest works again: every value on the write key.
    let out = cp.output(&mut cp.atrest_command(&["status"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Each damage of `file` (then restored) makes every run of `runs` exit 2 naming the file, and
/// leaves the file and the config as they were.
fn each_damage_is_refused(cp: &ControlPlane, file: &std::path::Path, runs: &[&[&str]]) {
    let original = std::fs::read(file).unwrap();
    let config_before = std::fs::read(&cp.config_path).unwrap();
    let name = file.display().to_string();
    for (kind, bytes) in damaged(&original) {
        std::fs::write(file, &bytes).unwrap();
        for args in runs {
            let out = cp.output(&mut cp.atrest_command(args));
            let what = format!("{kind} {name}, {args:?}");
            assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&name),
                "{what}: the file is named: {stderr}"
            );
            assert_eq!(
                std::fs::read(file).unwrap(),
                bytes,
                "{what}: left as it was"
            );
            assert_eq!(
                std::fs::read(&cp.config_path).unwrap(),
                config_before,
                "{what}: config untouched"
            );
        }
    }
    std::fs::write(file, &original).unwrap();
}
