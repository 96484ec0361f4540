//! Control-plane node layouts: paths in a static-pod manifest are what the apiserver container
//! sees; atrest finds the host files through the pod's `volumeMounts` and `hostPath` volumes, as
//! on a kubeadm node whose encryption config lives in a folder of its own. RKE2 and k3s nodes
//! are built as directory trees below `ATREST_HOST_ROOT`, holding the real test control plane's
//! files at the distribution's paths; atrest is run with no flag at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atrest_testbed as support;
use serde_json::Value;
use support::{ControlPlane, Options, resource};

/// A kubeadm-style manifest for `cp`'s apiserver: the config is passed as
/// `/etc/kubernetes/enc/<file>` and the etcd TLS files as `/etc/kubernetes/pki/etcd/<file>`,
/// each folder a hostPath volume of the folder the file really is in (`enc_host`).
fn kubeadm_manifest(cp: &ControlPlane, enc_host: &Path, pki_host: Option<&Path>) -> String {
    let tls = cp.etcd_tls.as_ref().expect("etcd with client certificates");
    let config_name = cp.config_path.file_name().unwrap().to_str().unwrap();
    let pki_host = pki_host.unwrap_or_else(|| tls.ca.parent().unwrap());
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
        kubeadm_manifest(&cp, cp.config_path.parent().unwrap(), None),
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
    std::fs::write(&broken, kubeadm_manifest(&cp, &missing, None)).unwrap();
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

    // The same for an etcd client certificate folder.
    let broken_pki = cp.path().join("broken-pki.yaml");
    std::fs::write(
        &broken_pki,
        kubeadm_manifest(&cp, cp.config_path.parent().unwrap(), Some(&missing)),
    )
    .unwrap();
    let (code, _, stderr) = support::atrest(
        &["scan", "--apiserver-manifest", broken_pki.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    for want in [
        missing.to_str().unwrap(),
        "/etc/kubernetes/pki/etcd/",
        "hostPath volume etcd-certs",
        "--cacert, --cert and --key",
    ] {
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
    }
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
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

/// The root prefix atrest takes every default path below.
const HOST_ROOT: &str = "ATREST_HOST_ROOT";

/// A control plane with etcd client certificates, whose apiserver reads a JSON
/// EncryptionConfiguration (as RKE2 and k3s write it) with a secretbox key, and three secrets.
async fn json_control_plane() -> ControlPlane {
    let yaml = support::secrets_config(&format!(
        "      - secretbox:\n          keys:\n            - name: sb1\n              secret: {}\n      - identity: {{}}\n",
        support::random_key_b64()
    ));
    let doc: Value = serde_saphyr::from_str(&yaml).unwrap();
    let cp = ControlPlane::start(Options {
        etcd_tls: true,
        config_yaml: Some(serde_json::to_string_pretty(&doc).unwrap()),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    support::create_namespace(&client, "layouts").await;
    support::create_secrets(
        &client,
        "layouts",
        &support::names("s", 3),
        "a layout test secret value",
    )
    .await;
    cp
}

/// Copies `from` to `root` + `node_path` (an absolute path on the node).
fn place(root: &Path, node_path: &str, from: &Path) -> PathBuf {
    let to = root.join(node_path.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {from:?} to {to:?}: {e}"));
    to
}

/// The etcd client TLS files of `cp` at `dir` on the node, as both distributions name them.
fn place_etcd_tls(cp: &ControlPlane, root: &Path, dir: &str) {
    let tls = cp.etcd_tls.as_ref().expect("etcd with client certificates");
    place(root, &format!("{dir}/server-ca.crt"), &tls.ca);
    place(root, &format!("{dir}/client.crt"), &tls.cert);
    place(root, &format!("{dir}/client.key"), &tls.key);
}

/// Every file below `root` with its bytes, to prove a refused step changed nothing.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The `status` settings line for `name`.
fn setting_line<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no {name} line in {status}"))
}

/// scan, status and report with `env` only (no flag) read the real cluster; returns the
/// `status` table.
fn scan_status_report_work(env: &[(&str, &str)], distribution: &str) -> String {
    let (code, stdout, stderr) = support::atrest(&["scan", "-o", "json"], env);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let secrets = resource(&doc, "secrets");
    assert_eq!(secrets["write_key"], "secretbox:sb1", "{secrets:#}");
    assert_eq!(
        support::scan_json::verdict(secrets, "on_write_key"),
        3,
        "the secrets created through the apiserver are found in etcd: {secrets:#}"
    );

    let (code, status, stderr) = support::atrest(&["status"], env);
    assert_eq!(code, 0, "{status}{stderr}");
    assert!(
        status.contains("every apiserver runs the file"),
        "the kubeconfig reached the apiserver, and it runs the very file: {status}"
    );
    assert!(
        status.contains(&format!("distribution     {distribution} (it manages the encryption config itself: rotate with `{distribution} secrets-encrypt rotate-keys`)")),
        "status names the distribution: {status}"
    );
    let (code, stdout, stderr) = support::atrest(&["status", "-o", "json", "--no-scan"], env);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["settings"]["distribution"], distribution, "{doc:#}");

    let (code, stdout, stderr) = support::atrest(&["report", "--format", "json"], env);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(
        (code, &doc["verdict"]),
        (0, &Value::from("PASS")),
        "{doc:#}"
    );
    assert_eq!(resource(&doc, "secrets")["total"], 3, "{doc:#}");
    status
}

/// Every rotate step that writes (the config, a key, a backup, the state folder, a canary, a
/// rewrite) with `env` only exits 2, names the distribution's own command, and leaves every file
/// of the node as it was: the distribution rewrites the file from its own state, so no step of
/// atrest's runbook may start there, not only `prepare`.
fn every_rotate_step_refuses(root: &Path, env: &[(&str, &str)], command: &str) {
    let before = tree(root);
    for step in [
        "prepare",
        "run",
        "promote",
        "reencrypt",
        "prune",
        "abort",
        "adopt",
    ] {
        let (code, stdout, stderr) = support::atrest(&["rotate", step], env);
        assert_eq!(code, 2, "rotate {step}: {stdout}{stderr}");
        assert!(
            stderr.contains(command) && stderr.contains("`atrest reencrypt`"),
            "rotate {step}: {command:?} (and the hint) not in {stderr}"
        );
        assert_eq!(
            tree(root),
            before,
            "a refused `rotate {step}` writes nothing: no key, backup or state folder"
        );
    }
    // What the refusal's hint offers instead still works there (nothing is stale here).
    let (code, stdout, stderr) = support::atrest(&["reencrypt", "--progress=none"], env);
    assert_eq!(code, 0, "atrest reencrypt: {stdout}{stderr}");
    assert!(
        stdout.contains("0 targeted") && stdout.contains("every object is on its write key"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rke2_layout_is_found_with_no_flags_and_rotation_is_left_to_rke2() {
    let cp = json_control_plane().await;
    let root = tempfile::tempdir().unwrap();
    // The static pod as RKE2 writes it: the config and the etcd client TLS files under
    // /var/lib/rancher/rke2/server, mounted into the container at the same paths. The etcd
    // endpoint is the test bed's (RKE2's apiserver names 127.0.0.1:2379).
    let cred = "/var/lib/rancher/rke2/server/cred";
    let etcd_tls = "/var/lib/rancher/rke2/server/tls/etcd";
    let mut args = Vec::new();
    for a in &cp.apiservers[0].args {
        let arg = match a.split_once('=') {
            Some(("--encryption-provider-config", _)) => {
                format!("--encryption-provider-config={cred}/encryption-config.json")
            }
            Some(("--etcd-cafile", _)) => format!("--etcd-cafile={etcd_tls}/server-ca.crt"),
            Some(("--etcd-certfile", _)) => format!("--etcd-certfile={etcd_tls}/client.crt"),
            Some(("--etcd-keyfile", _)) => format!("--etcd-keyfile={etcd_tls}/client.key"),
            _ => a.clone(),
        };
        args.push(format!("    - {}", serde_json::to_string(&arg).unwrap()));
    }
    let manifest = root
        .path()
        .join("var/lib/rancher/rke2/agent/pod-manifests/kube-apiserver.yaml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n{}\n    volumeMounts:\n    - {{mountPath: {cred}, name: dir0}}\n    - {{mountPath: /var/lib/rancher/rke2/server/tls, name: dir1}}\n  volumes:\n  - {{hostPath: {{path: {cred}, type: DirectoryOrCreate}}, name: dir0}}\n  - {{hostPath: {{path: /var/lib/rancher/rke2/server/tls, type: DirectoryOrCreate}}, name: dir1}}\n",
            args.join("\n")
        ),
    )
    .unwrap();
    let config = place(
        root.path(),
        &format!("{cred}/encryption-config.json"),
        &cp.config_path,
    );
    place_etcd_tls(&cp, root.path(), etcd_tls);
    let kubeconfig = place(root.path(), "/etc/rancher/rke2/rke2.yaml", &cp.kubeconfig);
    let env = [(HOST_ROOT, root.path().to_str().unwrap())];

    let status = scan_status_report_work(&env, "rke2");
    let config_line = setting_line(&status, "config ");
    assert!(
        config_line.contains(config.to_str().unwrap())
            && config_line.contains(manifest.to_str().unwrap())
            && config_line.contains("hostPath volume dir0"),
        "{config_line}"
    );
    let kubeconfig_line = setting_line(&status, "kubeconfig ");
    assert!(
        kubeconfig_line.contains(kubeconfig.to_str().unwrap())
            && kubeconfig_line.contains("from rke2 default"),
        "{kubeconfig_line}"
    );
    assert!(
        setting_line(&status, "etcd CA ").contains(&format!("{etcd_tls}/server-ca.crt")),
        "{status}"
    );

    every_rotate_step_refuses(root.path(), &env, "rke2 secrets-encrypt rotate-keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_layout_is_found_with_no_flags_and_rotation_is_left_to_k3s() {
    let cp = json_control_plane().await;
    let root = tempfile::tempdir().unwrap();
    // k3s runs its apiserver in-process: no manifest, only its files.
    let config = place(
        root.path(),
        "/var/lib/rancher/k3s/server/cred/encryption-config.json",
        &cp.config_path,
    );
    let etcd_tls = "/var/lib/rancher/k3s/server/tls/etcd";
    place_etcd_tls(&cp, root.path(), etcd_tls);
    let kubeconfig = place(root.path(), "/etc/rancher/k3s/k3s.yaml", &cp.kubeconfig);
    let root_env = (HOST_ROOT, root.path().to_str().unwrap());

    // With nothing else, atrest aims at k3s's embedded etcd on 127.0.0.1:2379.
    let (code, status, stderr) = support::atrest(&["status", "--no-scan"], &[root_env]);
    assert_eq!(code, 0, "{stderr}");
    for (name, want) in [
        ("config ", config.to_str().unwrap().to_string()),
        ("etcd endpoints ", "https://127.0.0.1:2379".to_string()),
        ("etcd CA ", format!("{etcd_tls}/server-ca.crt")),
        ("etcd cert ", format!("{etcd_tls}/client.crt")),
        ("etcd key ", format!("{etcd_tls}/client.key")),
        ("kubeconfig ", kubeconfig.to_str().unwrap().to_string()),
    ] {
        let line = setting_line(&status, name);
        assert!(
            line.contains(&want) && line.contains("from k3s default"),
            "{line}"
        );
    }

    // The test bed's etcd listens on a random loopback port, not on 2379: the endpoint comes
    // from ETCDCTL_ENDPOINTS (which wins over any default); everything else from the layout.
    let env = [root_env, ("ETCDCTL_ENDPOINTS", cp.etcd_endpoint.as_str())];
    let status = scan_status_report_work(&env, "k3s");
    assert!(
        setting_line(&status, "etcd endpoints ").contains("from environment ETCDCTL_ENDPOINTS"),
        "{status}"
    );
    assert!(
        setting_line(&status, "etcd cert ").contains("from k3s default"),
        "{status}"
    );

    // The JSON config is checked as the apiserver reads it.
    let (code, stdout, stderr) = support::atrest(&["config", "check", "-o", "json"], &[root_env]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["file"], config.to_str().unwrap(), "{doc:#}");

    every_rotate_step_refuses(root.path(), &env, "k3s secrets-encrypt rotate-keys");
}

#[test]
fn k3s_without_secrets_encryption_names_the_missing_file_and_the_k3s_command() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/rancher/k3s/server/tls/etcd")).unwrap();
    let (code, _, stderr) =
        support::atrest(&["scan"], &[(HOST_ROOT, root.path().to_str().unwrap())]);
    assert_eq!(code, 2, "{stderr}");
    let missing = root
        .path()
        .join("var/lib/rancher/k3s/server/cred/encryption-config.json");
    for want in [
        missing.to_str().unwrap(),
        "k3s secrets-encrypt status",
        "--config",
    ] {
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
    }
}
