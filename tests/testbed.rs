//! The test bed itself, proven against the real kube-apiserver and etcd: encryption config,
//! stored prefixes, automatic reload seen through `/metrics`, and the apiserver's stale rule.

use atrest_testbed as support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use support::{ControlPlane, Options, aescbc_block, random_key_b64, secrets_config};

/// Caps on waits for observed state: generous, so that only a state never reached fails a test.
const LOAD_CAP: Duration = Duration::from_secs(120);
/// The automatic reload polls the file once a minute.
const RELOAD_CAP: Duration = Duration::from_secs(240);

fn secret(name: &str, value: &str) -> Secret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"value": value}
    }))
    .unwrap()
}

async fn unchanged_put(api: &Api<Secret>, name: &str) {
    let current = api.get(name).await.unwrap();
    api.replace(name, &PostParams::default(), &current)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_with_the_configured_key_and_rotate_on_an_unchanged_put() {
    let key1 = random_key_b64();
    let config1 = secrets_config(&(aescbc_block(&[("key1", &key1)]) + "      - identity: {}\n"));
    let cp = ControlPlane::start(Options {
        config_yaml: Some(config1),
        ..Default::default()
    })
    .await;
    // At startup the apiserver reports the hash of the file it loaded (waited for as observed in
    // /metrics; the cap only catches an apiserver that never reports it).
    cp.wait_config_loaded(0, LOAD_CAP).await;

    let api: Api<Secret> = Api::namespaced(cp.client().await, "default");
    api.create(&PostParams::default(), &secret("first", "one"))
        .await
        .unwrap();
    let (value, _) = cp
        .raw("/registry/secrets/default/first")
        .await
        .expect("stored");
    assert!(
        value.starts_with(b"k8s:enc:aescbc:v1:key1:"),
        "stored as {:?}",
        String::from_utf8_lossy(&value[..30.min(value.len())])
    );

    // key2 first, key1 still readable: wait for the automatic reload (polled once a minute), seen
    // in /metrics.
    let key2 = random_key_b64();
    cp.write_config(&secrets_config(
        &(aescbc_block(&[("key2", &key2), ("key1", &key1)]) + "      - identity: {}\n"),
    ));
    cp.wait_config_loaded(0, RELOAD_CAP).await;

    api.create(&PostParams::default(), &secret("second", "two"))
        .await
        .unwrap();
    let (value, rev_second) = cp.raw("/registry/secrets/default/second").await.unwrap();
    assert!(value.starts_with(b"k8s:enc:aescbc:v1:key2:"));

    // An unchanged PUT of a stale object re-encrypts it with the new first key…
    let (_, rev_before) = cp.raw("/registry/secrets/default/first").await.unwrap();
    unchanged_put(&api, "first").await;
    let (value, rev_after) = cp.raw("/registry/secrets/default/first").await.unwrap();
    assert!(value.starts_with(b"k8s:enc:aescbc:v1:key2:"));
    assert!(rev_after > rev_before, "the stale object was rewritten");

    // …and an unchanged PUT of an object already on key2 writes nothing.
    unchanged_put(&api, "second").await;
    let (_, rev_again) = cp.raw("/registry/secrets/default/second").await.unwrap();
    assert_eq!(rev_again, rev_second, "a current object is left untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loads_config_at_once_and_tls_etcd_works() {
    let cp0 = ControlPlane::start(Options {
        etcd_tls: true,
        ..Default::default()
    })
    .await;
    let mut cp = cp0;
    let api: Api<Secret> = Api::namespaced(cp.client().await, "default");
    api.create(&PostParams::default(), &secret("plain", "p"))
        .await
        .unwrap();
    let (value, _) = cp.raw("/registry/secrets/default/plain").await.unwrap();
    assert!(
        value.starts_with(b"k8s\x00"),
        "identity stores protobuf plaintext"
    );

    let key = random_key_b64();
    cp.write_config(&secrets_config(
        &(aescbc_block(&[("k:with:colons", &key)]) + "      - identity: {}\n"),
    ));
    cp.restart_apiserver(0).await;
    // At once: the first write after the restart is ready is already under the new key (an
    // automatic reload would take up to a minute).
    let api: Api<Secret> = Api::namespaced(cp.client().await, "default");
    api.create(&PostParams::default(), &secret("enc", "e"))
        .await
        .unwrap();
    let (value, _) = cp.raw("/registry/secrets/default/enc").await.unwrap();
    assert!(value.starts_with(b"k8s:enc:aescbc:v1:k:with:colons:"));
    // And /metrics reports the new file's hash (what atrest's convergence checks read).
    cp.wait_config_loaded(0, LOAD_CAP).await;
}

/// The leak check end to end: the keys of the config the test bed wrote and the values it
/// seeded are known, and the check after a real atrest run walks the state folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_atrest_run_is_checked_for_the_keys_and_values_in_scope() {
    use base64::Engine;
    let key = random_key_b64();
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_config(
            &(aescbc_block(&[("key1", &key)]) + "      - identity: {}\n"),
        )),
        ..Default::default()
    })
    .await;
    let value = "a-distinctive-secret-value";
    support::create_secrets(&cp.client().await, "default", &["s".into()], value).await;
    let (code, _, stderr) = cp.atrest(&["scan", "--verify"]);
    assert_eq!(code, 0, "{stderr}");

    // Something that should not be there, in a file of the state folder: the next run fails.
    let material = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .unwrap();
    let state = cp.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    for planted in [hex::encode(&material), value.to_string()] {
        std::fs::write(state.join("rotation.json"), &planted).unwrap();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cp.atrest(&["scan", "--verify"])
        }));
        let msg = run.expect_err("the leak check fails the run");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("rotation.json") && msg.contains("leak check"),
            "{msg}"
        );
        assert!(
            !msg.contains(&hex::encode(&material)) && !msg.contains(&key),
            "the check never prints a key"
        );
    }
    std::fs::remove_file(state.join("rotation.json")).unwrap();
    cp.check_state_dirs();
}
