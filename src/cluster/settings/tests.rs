//! Unit tests, kept apart so the module reads as its one responsibility.

use super::*;

#[test]
fn reads_kubeadm_manifest_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kube-apiserver.yaml");
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\nspec:\n  containers:\n  - name: kube-apiserver\n    image: x\n    command:\n    - kube-apiserver\n    - --etcd-servers=https://127.0.0.1:2379\n    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt\n    - --encryption-provider-config\n    - /etc/kubernetes/enc/enc.yaml\n    - --encryption-provider-config-automatic-reload=true\n    - --etcd-prefix=/custom\n",
    )
    .unwrap();
    let m = read_manifest(&p).unwrap();
    assert_eq!(m.etcd_servers.as_deref(), Some("https://127.0.0.1:2379"));
    assert_eq!(
        m.encryption_provider_config.as_deref(),
        Some("/etc/kubernetes/enc/enc.yaml")
    );
    assert_eq!(
        m.etcd_cafile.as_deref(),
        Some("/etc/kubernetes/pki/etcd/ca.crt")
    );
    assert_eq!(m.etcd_prefix.as_deref(), Some("/custom"));
    assert_eq!(m.automatic_reload, Some(true));

    let flags = Flags {
        apiserver_manifest: Some(p.clone()),
        etcd_prefix: Some("/flag".into()),
        ..Default::default()
    };
    let s = resolve(&flags).unwrap();
    assert_eq!(s.etcd_prefix.value, "/flag");
    assert_eq!(s.etcd_prefix.source, Source::Flag("--etcd-prefix".into()));
    assert_eq!(s.cacert.unwrap().source, Source::Manifest(p));
}

#[test]
fn manifest_paths_map_through_hostpath_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kube-apiserver.yaml");
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt\n    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt\n    - --etcd-keyfile=/srv/client.key\n    volumeMounts:\n    - {name: enc, mountPath: /etc/kubernetes/enc, readOnly: true}\n    - {name: pki, mountPath: /etc/kubernetes/pki}\n    - {name: etcd-pki, mountPath: /etc/kubernetes/pki/etcd}\n    - {name: key, mountPath: /srv/client.key, subPath: tls.key}\n    - {name: empty, mountPath: /tmp}\n  volumes:\n  - {name: enc, hostPath: {path: /etc/kubernetes/encryption, type: DirectoryOrCreate}}\n  - {name: pki, hostPath: {path: /host/pki}}\n  - {name: etcd-pki, hostPath: {path: /host/etcd-pki}}\n  - {name: key, hostPath: {path: /host/keys}}\n  - {name: empty, emptyDir: {}}\n",
    )
    .unwrap();
    let s = resolve(&Flags {
        apiserver_manifest: Some(p.clone()),
        ..Default::default()
    })
    .unwrap();
    let config = s.config.unwrap();
    assert_eq!(
        config.value,
        PathBuf::from("/etc/kubernetes/encryption/enc.yaml")
    );
    assert_eq!(
        config.source,
        Source::ManifestVolume {
            manifest: p.clone(),
            container: "/etc/kubernetes/enc/enc.yaml".into(),
            volume: "enc".into(),
        }
    );
    // The nested mount (etcd-pki inside pki) wins for the CA; the outer one for the cert.
    assert_eq!(
        s.cacert.unwrap().value,
        PathBuf::from("/host/etcd-pki/ca.crt")
    );
    assert_eq!(
        s.cert.unwrap().value,
        PathBuf::from("/host/pki/apiserver-etcd-client.crt")
    );
    // A file mounted with subPath.
    assert_eq!(s.key.unwrap().value, PathBuf::from("/host/keys/tls.key"));
    // Not under any hostPath mount: taken as written.
    let m = read_manifest(&p).unwrap();
    assert!(m.host_path(Path::new("/var/run/x")).is_none());
    assert!(
        m.host_path(Path::new("/tmp/x")).is_none(),
        "emptyDir is not on the host"
    );
    // A prefix that is not a whole path component does not match.
    assert!(m.host_path(Path::new("/etc/kubernetes/encx/y")).is_none());
}

fn write(root: &Path, node_path: &str, text: &str) -> PathBuf {
    let p = root.join(node_path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn rke2_manifest_is_probed_after_kubeadms_and_its_paths_are_below_the_host_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot(Some(dir.path().to_path_buf()));
    let manifest = write(
        dir.path(),
        RKE2_MANIFEST,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --encryption-provider-config=/var/lib/rancher/rke2/server/cred/encryption-config.json\n    - --etcd-servers=https://127.0.0.1:2379\n    - --etcd-cafile=/var/lib/rancher/rke2/server/tls/etcd/server-ca.crt\n    volumeMounts:\n    - {name: dir0, mountPath: /var/lib/rancher/rke2/server/cred}\n  volumes:\n  - {name: dir0, hostPath: {path: /var/lib/rancher/rke2/server/cred}}\n",
    );
    let kubeconfig = write(dir.path(), RKE2_KUBECONFIG, "apiVersion: v1\n");
    let s = resolve_in(&Flags::default(), root.clone()).unwrap();
    assert_eq!(s.distribution, Some(Distribution::Rke2));
    assert_eq!(s.manifest.as_deref(), Some(manifest.as_path()));
    let config = s.config.clone().unwrap();
    assert_eq!(config.value, root.join(RKE2_CONFIG));
    assert!(matches!(config.source, Source::ManifestVolume { .. }));
    // Not under a hostPath mount: the path as written, on the node.
    assert_eq!(
        s.cacert.clone().unwrap().value,
        root.join("/var/lib/rancher/rke2/server/tls/etcd/server-ca.crt")
    );
    let k = s.kubeconfig.clone().unwrap();
    assert_eq!(
        (k.value, k.source.to_string()),
        (kubeconfig, "rke2 default".to_string())
    );
    assert_eq!(s.config_managed_by(), Some(Distribution::Rke2));

    // kubeadm's manifest wins when both are there.
    write(
        dir.path(),
        DEFAULT_MANIFEST,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command: [kube-apiserver]\n",
    );
    let s = resolve_in(&Flags::default(), root).unwrap();
    assert_eq!(s.distribution, None);
    assert!(s.config.is_none());
}

#[test]
fn k3s_server_folder_gives_k3s_defaults_and_flags_still_win() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot(Some(dir.path().to_path_buf()));
    let config = write(dir.path(), K3S_CONFIG, "{}");
    let s = resolve_in(&Flags::default(), root.clone()).unwrap();
    assert_eq!(s.distribution, Some(Distribution::K3s));
    assert!(s.manifest.is_none());
    let k3s = Source::Distribution(Distribution::K3s);
    assert_eq!(s.config.clone().unwrap().value, config);
    assert_eq!(s.endpoints.value, [K3S_ENDPOINT]);
    for (setting, file) in [
        (&s.cacert, "server-ca.crt"),
        (&s.cert, "client.crt"),
        (&s.key, "client.key"),
    ] {
        let setting = setting.clone().unwrap();
        assert_eq!(
            setting.value,
            root.join(format!("{K3S_ETCD_TLS_DIR}/{file}"))
        );
        assert_eq!(setting.source, k3s);
    }
    assert_eq!(k3s.to_string(), "k3s default");
    assert!(s.kubeconfig.is_none(), "k3s.yaml is absent");
    assert_eq!(s.config_managed_by(), Some(Distribution::K3s));

    // Another file by flag is the admin's own: atrest may edit it. The same file by flag
    // is still k3s's.
    let other = dir.path().join("mine.yaml");
    std::fs::write(&other, "{}").unwrap();
    let flags = Flags {
        config: Some(other.clone()),
        endpoints: Some("https://10.0.0.1:2379".into()),
        ..Default::default()
    };
    let s = resolve_in(&flags, root.clone()).unwrap();
    assert_eq!(s.config.clone().unwrap().value, other);
    assert_eq!(s.endpoints.value, ["https://10.0.0.1:2379"]);
    assert_eq!(s.config_managed_by(), None);
    let flags = Flags {
        config: Some(config),
        ..Default::default()
    };
    let s = resolve_in(&flags, root).unwrap();
    assert_eq!(s.config_managed_by(), Some(Distribution::K3s));
}
