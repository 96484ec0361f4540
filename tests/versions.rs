//! The version matrix's own tests (scripts/matrix.sh runs them with the core set against every
//! pair of scripts/k8s/matrix): atrest names the kube-apiserver and etcd releases it talks to,
//! and `rotate run` follows each release's automatic reload — proven through the per-apiserver
//! `last_config_info` metric since 1.34, refused before anything is written on an older one.

use atrest_testbed as support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{
    ControlPlane, Options, aescbc_block, create_namespace, create_secrets, names, random_key_b64,
    secrets_config, text,
};

/// A control plane whose secrets are on aescbc key1, with 12 secrets.
async fn key1_cluster() -> ControlPlane {
    let k1 = random_key_b64();
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_config(
            &(aescbc_block(&[("key1", &k1)]) + "      - identity: {}\n"),
        )),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "ver").await;
    create_secrets(&client, "ver", &names("v", 12), "matrix-value").await;
    cp
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Per key label, the stored secrets of namespace `ver` as `atrest scan -o json` counts them.
fn secret_keys(cp: &ControlPlane) -> BTreeMap<String, u64> {
    let (code, out, err) = cp.atrest(&["scan", "-o", "json", "--resource=secrets"]);
    assert_eq!(code, 0, "scan: every secret on its write key\n{out}\n{err}");
    support::scan_json::stored(&support::resource(&json(&out), "secrets").clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_apiserver_and_etcd_releases_and_proves_the_loaded_config() {
    let release = support::kube_apiserver_version();
    let etcd = support::etcd_version();
    let cp = key1_cluster().await;
    let mut cmd = cp.atrest_command(&["status", "-o", "json"]);
    let out = cp.output(&mut cmd);
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    let apiservers = doc["apiservers"]["apiservers"]
        .as_array()
        .expect("apiservers");
    assert_eq!(apiservers.len(), 1, "{doc:#}");
    assert_eq!(apiservers[0]["version"], release.as_str(), "{doc:#}");
    assert_eq!(doc["etcd_version"], etcd.as_str(), "{doc:#}");
    if support::kube_minor() >= 34 {
        // The per-apiserver metric shows the hash of the exact file: converged.
        assert_eq!(
            apiservers[0]["config_hash"],
            cp.config_hash().as_str(),
            "{doc:#}"
        );
        assert_eq!(doc["converged"], true, "{doc:#}");
    } else {
        assert_eq!(apiservers[0]["config_hash"], Value::Null, "{doc:#}");
        assert_eq!(doc["converged"], false, "{doc:#}");
        // The table says why: the release predates the metric.
        let mut cmd = cp.atrest_command(&["status", "--no-scan"]);
        let table = String::from_utf8_lossy(&cp.output(&mut cmd).stdout).to_string();
        assert!(
            table.contains(&format!(
                "kube-apiserver {release} predates apiserver_encryption_config_controller_last_config_info"
            )),
            "{table}"
        );
    }
}

/// `rotate run` with the apiserver's automatic reload (no restart): each step waits until the
/// apiserver reports the new file's hash. Before 1.34 it is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_run_follows_the_automatic_reload_or_refuses_an_apiserver_without_the_metric() {
    let release = support::kube_apiserver_version();
    let cp = key1_cluster().await;
    let pid = cp.apiserver_pid(0);
    let before_config = std::fs::read(&cp.config_path).unwrap();
    assert_eq!(secret_keys(&cp).get("aescbc:key1"), Some(&12));

    let mut cmd = cp.atrest_command(&[
        "rotate",
        "run",
        "--provider=aescbc",
        "--key-name=key2",
        "--timeout=240",
    ]);
    let out = cp.output(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if support::kube_minor() >= 34 {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            stderr.contains("automatic reload polls once a minute"),
            "{stderr}"
        );
        assert_eq!(cp.apiserver_pid(0), pid, "the apiserver was not restarted");
        assert_eq!(
            cp.loaded_config_hash(0).await.as_deref(),
            Some(cp.config_hash().as_str()),
            "the apiserver reports the file atrest wrote last"
        );
        let keys = secret_keys(&cp);
        assert_eq!(keys.get("aescbc:key2"), Some(&12), "{keys:?}");
        assert_eq!(keys.get("aescbc:key1"), None, "{keys:?}");
    } else {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            stderr.contains(&format!("refusing to rotate: {}", cp.url()))
                && stderr.contains(&format!(
                    "kube-apiserver {release} predates apiserver_encryption_config_controller_last_config_info (added in Kubernetes 1.34)"
                )),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(&cp.config_path).unwrap(),
            before_config,
            "nothing written"
        );
        assert_eq!(secret_keys(&cp).get("aescbc:key1"), Some(&12));
    }
}
