//! Control-plane node layouts: paths in a static-pod manifest are what the apiserver container
//! sees; atrest finds the host files through the pod's `volumeMounts` and `hostPath` volumes, as
//! on a kubeadm node whose encryption config lives in a folder of its own.

use std::path::Path;

use atrest_testbed as support;
use serde_json::Value;
use support::{ControlPlane, Options, resource};

/// A kubeadm-style manifest for `cp`'s apiserver: the config is passed as
/// `/etc/kubernetes/enc/<file>` and the etcd TLS files as `/etc/kubernetes/pki/etcd/<file>`,
/// each folder a hostPath volume of the folder the file really is in (`enc_host`).
fn kubeadm_manifest(cp: &ControlPlane, enc_host: &Path) -> String {
    let tls = cp.etcd_tls.as_ref().expect("etcd with client certificates");
    let config_name = cp.config_path.file_name().unwrap().to_str().unwrap();
    let pki_host = tls.ca.parent().unwrap();
    let container = |flag: &str, dir: &str, file: &Path| {
        format!(
            "{flag}={dir}/{}",
            file.file_name().unwrap().to_str().unwrap()
        )
    };
    let mut args = Vec::new();
    for a in &cp.apiservers[0].args {
        let arg = match a.split_once('=') {
            Some(("--encryption-provider-config", _)) => {
                format!("--encryption-provider-config=/etc/kubernetes/enc/{config_name}")
            }
            Some(("--etcd-cafile", _)) => {
                container("--etcd-cafile", "/etc/kubernetes/pki/etcd", &tls.ca)
            }
            Some(("--etcd-certfile", _)) => {
                container("--etcd-certfile", "/etc/kubernetes/pki/etcd", &tls.cert)
            }
            Some(("--etcd-keyfile", _)) => {
                container("--etcd-keyfile", "/etc/kubernetes/pki/etcd", &tls.key)
            }
            _ => a.clone(),
        };
        args.push(format!("    - {}", serde_json::to_string(&arg).unwrap()));
    }
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  containers:\n  - name: kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.37.2\n    command:\n    - kube-apiserver\n{}\n    volumeMounts:\n    - {{mountPath: /etc/kubernetes/pki, name: k8s-certs, readOnly: true}}\n    - {{mountPath: /etc/kubernetes/pki/etcd, name: etcd-certs, readOnly: true}}\n    - {{mountPath: /etc/kubernetes/enc, name: enc, readOnly: true}}\n  volumes:\n  - {{hostPath: {{path: /nonexistent/pki, type: DirectoryOrCreate}}, name: k8s-certs}}\n  - {{hostPath: {{path: {}, type: DirectoryOrCreate}}, name: etcd-certs}}\n  - {{hostPath: {{path: {}, type: DirectoryOrCreate}}, name: enc}}\n",
        args.join("\n"),
        pki_host.display(),
        enc_host.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_paths_are_found_through_hostpath_volumes() {
    let cp = ControlPlane::start(Options {
        etcd_tls: true,
        ..Default::default()
    })
    .await;
    let manifest = cp.path().join("kube-apiserver.yaml");
    std::fs::write(
        &manifest,
        kubeadm_manifest(&cp, cp.config_path.parent().unwrap()),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();

    // No flag but the manifest: the config and the etcd client certificate are the host files.
    let (code, stdout, stderr) =
        support::atrest(&["scan", "--apiserver-manifest", m, "-o", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(resource(&doc, "secrets")["write_key"], "identity");

    // status says how each path was found: the container path and the volume.
    let (code, stdout, stderr) =
        support::atrest(&["status", "--apiserver-manifest", m, "--no-scan"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let config_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("config "))
        .unwrap_or_else(|| panic!("no config line in {stdout}"));
    assert!(
        config_line.contains(cp.config_path.to_str().unwrap())
            && config_line.contains("/etc/kubernetes/enc/")
            && config_line.contains("hostPath volume enc"),
        "{config_line}"
    );
    let ca_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("etcd CA"))
        .unwrap();
    assert!(
        ca_line.contains("/etc/kubernetes/pki/etcd/")
            && ca_line.contains("hostPath volume etcd-certs"),
        "the nested mount wins over /etc/kubernetes/pki: {ca_line}"
    );

    // A volume pointing at a folder without the file: both paths named, the override said, and
    // the OS error once.
    let broken = cp.path().join("broken.yaml");
    let missing = cp.path().join("no-such-folder");
    std::fs::write(&broken, kubeadm_manifest(&cp, &missing)).unwrap();
    let (code, _, stderr) = support::atrest(
        &["scan", "--apiserver-manifest", broken.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    for want in [
        missing.to_str().unwrap(),
        "/etc/kubernetes/enc/",
        "hostPath volume enc",
        "--config",
    ] {
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
    }
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the OS error once: {stderr}"
    );

    // A garbled certificate is named, with what it should hold (not "transport error").
    let garbage = cp.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let (code, _, stderr) = support::atrest(
        &[
            "scan",
            "--apiserver-manifest",
            m,
            "--cert",
            garbage.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "client certificate (--cert) {} does not hold PEM certificates",
            garbage.display()
        )),
        "{stderr}"
    );
}
