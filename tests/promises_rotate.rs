//! README promises of `atrest rotate` on a real control plane that had no test yet: abort before
//! and after promote, a config changed behind atrest's back stops the next step, config edits
//! keep mode and owner and leave timestamped backups, an apiserver left out of `--apiserver` is
//! named by its identity lease, and the canary refuses an apiserver that writes with another key.

use atrest_testbed as support;
use support::{aescbc, key1_cluster, secrets_and_configmaps};

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::Value;
use sha2::Digest;
use support::promises_a::{add_key_after, identity_lease_of, key_secret, swap_keys};
use support::scan_json::{stored, verdict};
use support::{
    ControlPlane, Options, create_namespace, create_secrets, random_key_b64, resource, text,
};

async fn seed(cp: &ControlPlane) {
    let client = cp.client().await;
    create_namespace(&client, "r").await;
    let names: Vec<String> = (0..10).map(|i| format!("s-{i:03}")).collect();
    create_secrets(&client, "r", &names, "rotate-me-please").await;
}

/// The providers of the secrets rule of a config file, as labels.
fn labels_of(path: &Path) -> Vec<String> {
    atrest::config::load(path)
        .unwrap()
        .config
        .resolve(&atrest::GroupResource::secrets())
        .read_keys()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn config_labels(cp: &ControlPlane) -> Vec<String> {
    labels_of(&cp.config_path)
}

fn state_file(cp: &ControlPlane) -> PathBuf {
    cp.state_dir().join("rotation.json")
}

fn state(cp: &ControlPlane) -> Value {
    serde_json::from_str(&std::fs::read_to_string(state_file(cp)).unwrap()).unwrap()
}

/// `atrest status --no-scan` (text), with extra flags; exit code checked to be 0.
fn status(cp: &ControlPlane, extra: &[String]) -> String {
    let out = cp.output(cp.atrest_command(&["status", "--no-scan"]).args(extra));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stored prefix of a secret, read straight from etcd.
async fn stored_prefix(cp: &ControlPlane, ns: &str, name: &str) -> String {
    let (v, _) = cp
        .raw(&format!("/registry/secrets/{ns}/{name}"))
        .await
        .unwrap_or_else(|| panic!("{ns}/{name} is not in etcd"));
    let s = String::from_utf8_lossy(&v);
    s.split(':').take(5).collect::<Vec<_>>().join(":")
}

/// The documented fingerprint (`sha256:` + 16 hex of SHA-256 of the raw key), computed here.
fn fingerprint(secret_b64: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .unwrap();
    format!("sha256:{}", &hex::encode(sha2::Sha256::digest(raw))[..16])
}

/// If the apiserver has not loaded the file on disk (its automatic reload polls once a minute),
/// restart it so the next step does not wait for the poll.
async fn reload_if_needed(cp: &mut ControlPlane, index: usize) {
    if cp.loaded_config_hash(index).await != Some(cp.config_hash()) {
        cp.restart_apiserver(index).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_abort_before_and_after_promote() {
    let mut cp = key1_cluster().await;
    seed(&cp).await;
    let original_layout =
        atrest::config::layout(&atrest::config::load(&cp.config_path).unwrap().config);

    // --- Abort before promote: the new key is removed, once a scan shows nothing uses it.
    cp.run_restarting_expect(
        cp.rotate_command("prepare", &["--provider=aescbc", "--key-name=key2"]),
        0,
    )
    .await;
    assert_eq!(
        config_labels(&cp),
        ["aescbc:key1", "aescbc:key2", "identity"]
    );
    let s = status(&cp, &[]);
    assert!(
        s.contains("to aescbc:key2") && !s.contains("no rotation in progress"),
        "{s}"
    );

    // One secret stored under key2, written by the real apiserver while it ran a key2-first
    // copy of the prepared config (as a node that promoted early would): abort must refuse.
    let copy = cp.path().join("key2-first.yaml");
    let prepared = std::fs::read_to_string(&cp.config_path).unwrap();
    support::write_private(&copy, swap_keys(&prepared, "key1", "key2").as_bytes());
    cp.apiservers[0]
        .args
        .push(format!("--encryption-provider-config={}", copy.display()));
    cp.restart_apiserver(0).await;
    create_secrets(
        &cp.client().await,
        "r",
        &["on-key2".into()],
        "written-with-key2",
    )
    .await;
    cp.apiservers[0].args.pop();
    cp.restart_apiserver(0).await;
    assert_eq!(
        stored_prefix(&cp, "r", "on-key2").await,
        "k8s:enc:aescbc:v1:key2"
    );
    let before = std::fs::read(&cp.config_path).unwrap();
    // Refused before any change, so nothing needs restarting.
    let out = cp.output(&mut cp.rotate_command("abort", &["--timeout=5"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("abort refused") && err.contains("aescbc:key2") && err.contains("on-key2"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&cp.config_path).unwrap(),
        before,
        "nothing removed"
    );
    assert_eq!(state(&cp)["rotation"]["stage"], "prepared");

    // Once nothing uses key2 (the apiserver reads it: it is a read key), abort removes it.
    let secrets: Api<Secret> = Api::namespaced(cp.client().await, "r");
    secrets
        .delete("on-key2", &Default::default())
        .await
        .unwrap();
    assert!(cp.raw("/registry/secrets/r/on-key2").await.is_none());
    let out = cp
        .run_restarting_expect(cp.rotate_command("abort", &[]), 0)
        .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no rotation in progress"),
        "{}",
        text(&out)
    );
    assert_eq!(config_labels(&cp), ["aescbc:key1", "identity"]);
    assert_eq!(
        atrest::config::layout(&atrest::config::load(&cp.config_path).unwrap().config),
        original_layout,
        "the same keys (fingerprints) as before the rotation"
    );
    let st = state(&cp);
    assert!(st["rotation"].is_null(), "stage cleared: {st:#}");
    let last = st["history"].as_array().unwrap().last().unwrap();
    assert!(
        last["aborted"] == true && last["target"] == "aescbc:key2",
        "{st:#}"
    );
    let s = status(&cp, &[]);
    assert!(
        s.contains("no rotation in progress") && !s.contains("to aescbc:key2"),
        "{s}"
    );

    // --- Abort after promote: the previous write key writes again; reencrypt and prune then
    // remove the new key and every value ends on the old one.
    for (step, extra) in [
        ("prepare", &["--provider=aescbc", "--key-name=key3"][..]),
        ("promote", &[][..]),
    ] {
        let out = cp.run_restarting(cp.rotate_command(step, extra)).await;
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
    }
    assert_eq!(config_labels(&cp)[0], "aescbc:key3");
    let client = cp.client().await;
    create_secrets(&client, "r", &["while-promoted".into()], "written-on-key3").await;
    assert_eq!(
        stored_prefix(&cp, "r", "while-promoted").await,
        "k8s:enc:aescbc:v1:key3"
    );
    cp.run_restarting_expect(cp.rotate_command("abort", &[]), 0)
        .await;
    assert_eq!(
        config_labels(&cp),
        ["aescbc:key1", "aescbc:key3", "identity"],
        "the old key writes again, the new one stays readable"
    );
    let st = state(&cp);
    assert!(
        st["rotation"]["stage"] == "promoted" && st["rotation"]["aborted"] == true,
        "{st:#}"
    );
    create_secrets(&client, "r", &["after-abort".into()], "written-on-key1").await;
    assert_eq!(
        stored_prefix(&cp, "r", "after-abort").await,
        "k8s:enc:aescbc:v1:key1",
        "the apiserver writes with the previous key again"
    );
    for step in ["reencrypt", "prune"] {
        let out = cp.run_restarting(cp.rotate_command(step, &[])).await;
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
    }
    assert_eq!(config_labels(&cp), ["aescbc:key1"], "key3 removed");
    let (code, stdout, stderr) = cp.atrest(&["scan", "--verify", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["schema"], "atrest.scan/v2");
    let r = resource(&doc, "secrets");
    let in_etcd = cp.count_prefix("/registry/secrets/").await as u64;
    assert!(in_etcd >= 12, "{in_etcd}");
    assert_eq!(r["write_key"], "aescbc:key1", "{r:#}");
    assert_eq!(verdict(r, "on_write_key"), in_etcd, "{r:#}");
    assert_eq!(
        stored(r).into_iter().collect::<Vec<_>>(),
        [("aescbc:key1".to_string(), in_etcd)],
        "{r:#}"
    );
    assert_eq!(r["keys"]["aescbc:key1"]["on_write_key"], in_etcd, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_changed_behind_atrests_back_stops_the_next_step() {
    let mut cp = key1_cluster().await;
    seed(&cp).await;
    cp.run_restarting_expect(
        cp.rotate_command("prepare", &["--provider=aescbc", "--key-name=key2"]),
        0,
    )
    .await;
    let written = std::fs::read_to_string(&cp.config_path).unwrap();
    let (fp1, fp2) = (
        fingerprint(&key_secret(&written, "key1")),
        fingerprint(&key_secret(&written, "key2")),
    );
    let state_before = std::fs::read(state_file(&cp)).unwrap();

    // Each edit an admin might make by hand: a key added, the keys reordered (key2 made the
    // write key outside atrest). promote refuses each, changes nothing, and says what differs.
    let k3 = random_key_b64();
    let added = add_key_after(&written, "key1", "key3", &k3);
    let reordered = swap_keys(&written, "key1", "key2");
    let cases: [(&str, &str, Vec<String>); 2] = [
        (
            "a key added",
            &added,
            vec![format!("aescbc:key3 ({}) was added", fingerprint(&k3))],
        ),
        (
            "keys reordered",
            &reordered,
            vec![
                "provider order changed".into(),
                format!("aescbc:key1 ({fp1})"),
                format!("aescbc:key2 ({fp2})"),
            ],
        ),
    ];
    for (case, edited, expected) in cases {
        cp.write_config(edited);
        let out = cp.output(&mut cp.rotate_command("promote", &["--timeout=5"]));
        assert_eq!(out.status.code(), Some(2), "{case}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("changed behind atrest's back"),
            "{case}: {}",
            text(&out)
        );
        for e in &expected {
            assert!(
                err.contains(e.as_str()),
                "{case}: wants {e:?} in {}",
                text(&out)
            );
        }
        for secret in [
            key_secret(edited, "key1"),
            key_secret(edited, "key2"),
            k3.clone(),
        ] {
            assert!(!err.contains(&secret), "{case}: a key in stderr");
        }
        assert_eq!(
            std::fs::read_to_string(&cp.config_path).unwrap(),
            edited,
            "{case}: the file is left as the admin wrote it"
        );
        assert_eq!(
            std::fs::read(state_file(&cp)).unwrap(),
            state_before,
            "{case}: rotation.json unchanged"
        );
    }

    // atrest's own file back in place: promote goes on (the refusals were the edits alone).
    cp.write_config(&written);
    reload_if_needed(&mut cp, 0).await;
    cp.run_restarting_expect(cp.rotate_command("promote", &[]), 0)
        .await;
    assert_eq!(config_labels(&cp)[0], "aescbc:key2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edits_keep_mode_and_owner_and_leave_timestamped_backups() {
    let mut cp = key1_cluster().await;
    seed(&cp).await;
    std::fs::set_permissions(&cp.config_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&cp.config_path, Some(1234), Some(1234)).unwrap();
    let original = std::fs::read(&cp.config_path).unwrap();

    cp.run_restarting_expect(
        cp.rotate_command("run", &["--provider=aescbc", "--key-name=key2"]),
        0,
    )
    .await;
    assert_eq!(config_labels(&cp), ["aescbc:key2"]);

    let meta = std::fs::metadata(&cp.config_path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640, "mode kept");
    assert_eq!((meta.uid(), meta.gid()), (1234, 1234), "owner kept");

    // One backup per config write (prepare, promote, prune), each 0600, named by a UTC time,
    // each the version that write replaced.
    let dir = cp.state_dir().join("backups");
    let mut backups: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    backups.sort();
    assert_eq!(backups.len(), 3, "{backups:?}");
    let mut stamps = Vec::new();
    for b in &backups {
        let m = std::fs::metadata(b).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600, "{}", b.display());
        let name = b.file_name().unwrap().to_str().unwrap();
        let stamp = name
            .strip_prefix("encryption-config.yaml.")
            .unwrap_or_else(|| panic!("{name}"));
        stamps.push(
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ")
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert_eq!(
        std::fs::read(&backups[0]).unwrap(),
        original,
        "the first backup is the original file, byte for byte"
    );
    assert_eq!(
        labels_of(&backups[1]),
        ["aescbc:key1", "aescbc:key2", "identity"],
        "the prepared config, replaced by promote"
    );
    assert_eq!(
        labels_of(&backups[2]),
        ["aescbc:key2", "aescbc:key1", "identity"],
        "the promoted config, replaced by prune"
    );

    // A config file atrest creates (no CLI command does: every one reads an existing config;
    // the library's journal does when the file is missing) is 0600.
    let scratch = tempfile::tempdir().unwrap();
    let new_path = scratch.path().join("new-encryption-config.yaml");
    let journal = atrest::rotate::Journal {
        config_path: &new_path,
        state_dir: &scratch.path().join("state"),
        sync: None,
    };
    let mut st = journal.load_state().unwrap();
    let cfg = atrest::config::parse_str(&new_path, support::IDENTITY_CONFIG).unwrap();
    let w = journal
        .write(&mut st, atrest::state::Step::Prepare, &cfg, None)
        .unwrap();
    assert_eq!(w.backup, None);
    assert_eq!(std::fs::metadata(&new_path).unwrap().mode() & 0o7777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_left_out_of_apiserver_is_named_by_its_identity_lease() {
    let mut cp = key1_cluster().await;
    let b = cp.add_apiserver_as("127.0.0.2", Some("node-b"), &[]).await;
    let lease_b = identity_lease_of(&cp, "node-b").await;
    let host_a = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lease_a = identity_lease_of(&cp, host_a.trim()).await;
    assert_ne!(lease_a, lease_b);
    let a_url = cp.apiservers[0].url.clone();
    let b_url = cp.apiservers[b].url.clone();
    let only_a = vec![format!("--apiserver={a_url}")];
    let both = vec![
        format!("--apiserver={a_url}"),
        format!("--apiserver={b_url}"),
    ];
    let with = |urls: &[String], extra: &[&str]| -> Vec<String> {
        urls.iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };

    let args = with(&both, &["--provider=aescbc", "--key-name=key2"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cp.run_restarting_expect(cp.rotate_command("prepare", &args), 0)
        .await;

    // status: with both URLs nobody is missing; with only A, B is named by its lease.
    let s = status(&cp, &both);
    assert!(
        !s.contains("not reached") && s.contains("every apiserver runs the file"),
        "{s}"
    );
    let s = status(&cp, &only_a);
    assert!(
        s.contains(&format!("identity lease {lease_b}: not reached"))
            && s.contains("NOT converged")
            && !s.contains(&format!("identity lease {lease_a}: not reached")),
        "only B is missing: {s}"
    );

    // A rotate step given only A refuses, names B's lease, and changes nothing.
    let before = std::fs::read(&cp.config_path).unwrap();
    let args = with(&only_a, &["--timeout=3"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cp
        .run_restarting_expect(cp.rotate_command("promote", &args), 2)
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "apiserver with identity lease {lease_b}: not reached"
        )) && !err.contains(&format!("identity lease {lease_a}: not reached"))
            && err.contains("Pass --apiserver URL"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&cp.config_path).unwrap(), before);
    assert_eq!(state(&cp)["rotation"]["stage"], "prepared");

    // Given both, the same step goes on.
    let args = with(&both, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cp.run_restarting_expect(cp.rotate_command("promote", &args), 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_on_the_wrong_key_is_refused() {
    let (k1, k2) = (random_key_b64(), random_key_b64());
    let cluster_yaml = secrets_and_configmaps(&format!(
        "[{}, {{identity: {{}}}}]",
        aescbc(&[("key1", &k1), ("key2", &k2)])
    ));
    let other_yaml = secrets_and_configmaps(&format!(
        "[{}, {{identity: {{}}}}]",
        aescbc(&[("key2", &k2), ("key1", &k1)])
    ));
    let cp = ControlPlane::start(Options {
        config_yaml: Some(cluster_yaml.clone()),
        ..Default::default()
    })
    .await;
    create_namespace(&cp.client().await, "canary").await;
    let api = atrest::kube::connect(Some(&cp.kubeconfig)).await.unwrap();
    let apiservers = atrest::kube::Apiservers {
        base: api,
        explicit: vec![cp.url().to_string()],
    };
    let etcd = cp.etcd().await;
    let path = Path::new("passed-config.yaml");

    // The apiserver writes with key1; a config that says key2 writes is refused.
    let says_key2 = atrest::config::parse_str(path, &other_yaml).unwrap();
    match atrest::rotate::canary::check_write_key(
        &apiservers,
        "canary",
        &etcd,
        &cp.etcd_prefix,
        &says_key2,
    )
    .await
    {
        Err(atrest::rotate::canary::CanaryError::WrongKey { url, got, want }) => {
            assert_eq!(url, cp.url());
            assert_eq!(got, "aescbc:key1");
            assert_eq!(want, "aescbc:key2");
        }
        other => panic!("expected WrongKey, got {other:?}"),
    }

    // The config the apiserver runs passes, stored as its write key.
    let says_key1 = atrest::config::parse_str(path, &cluster_yaml).unwrap();
    let writes = atrest::rotate::canary::check_write_key(
        &apiservers,
        "canary",
        &etcd,
        &cp.etcd_prefix,
        &says_key1,
    )
    .await
    .unwrap();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].url, cp.url());
    assert_eq!(writes[0].stored_as, "aescbc:key1");

    // Both canaries were deleted again, the refused one too.
    let left: Api<Secret> = Api::namespaced(cp.client().await, "canary");
    let left = left.list(&ListParams::default()).await.unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);
}
