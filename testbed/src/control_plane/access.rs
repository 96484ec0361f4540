//! Access to the control plane as its admin or a read-only auditor: kubeconfigs, kube clients,
//! raw GETs and kubectl.

use std::io::Write;
use std::process::{Command, Stdio};

use super::ControlPlane;
use crate::files::write_private;
use crate::tls::pem_certs;

impl ControlPlane {
    pub(super) fn write_kubeconfigs(&self, controller_manager_token: &str) {
        for (path, user, token) in [
            (&self.kubeconfig, "atrest-admin", self.admin_token.as_str()),
            (
                &self.readonly_kubeconfig,
                "atrest-readonly",
                self.readonly_token.as_str(),
            ),
            (
                &self.controller_manager_kubeconfig,
                "atrest-controller-manager",
                controller_manager_token,
            ),
        ] {
            let text = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: atrest-test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: atrest-test\n  context:\n    cluster: atrest-test\n    user: {user}\ncurrent-context: atrest-test\n",
                self.url(),
                self.ca_path(0).display()
            );
            write_private(path, text.as_bytes());
        }
    }

    /// Read-only access for auditors: get/list/watch everything, and /metrics.
    pub(super) async fn grant_readonly(&self) {
        let role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "atrest-readonly"},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                {"nonResourceURLs": ["/metrics", "/readyz", "/readyz/*", "/healthz", "/healthz/*"], "verbs": ["get"]}
            ]
        });
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "atrest-readonly"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "atrest-readonly"},
            "subjects": [{"kind": "User", "name": "atrest-readonly", "apiGroup": "rbac.authorization.k8s.io"}]
        });
        self.kubectl_apply(&role);
        self.kubectl_apply(&binding);
    }

    /// A kube client for the admin (system:masters) token.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// A kube client aimed at one apiserver directly, with the admin token.
    pub async fn client_for(&self, index: usize) -> kube::Client {
        let mut cfg = kube::Config::new(self.apiservers[index].url.parse().unwrap());
        cfg.root_cert = Some(pem_certs(&std::fs::read(self.ca_path(index)).unwrap()));
        cfg.auth_info.token = Some(self.admin_token.clone().into());
        kube::Client::try_from(cfg).unwrap()
    }

    /// GET a path on one apiserver URL with the admin token.
    pub async fn get_text(&self, url: &str, path: &str) -> Result<String, String> {
        let index = self
            .apiservers
            .iter()
            .position(|a| a.url == url)
            .unwrap_or(0);
        if !self.ca_path(index).exists() {
            return Err("serving certificate not written yet".into());
        }
        let client = self.client_for(index).await;
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        client.request_text(req).await.map_err(|e| e.to_string())
    }

    /// Runs kubectl against this cluster with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.bins.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// `kubectl apply` of one object with the admin kubeconfig; panics with kubectl's output on failure.
    pub fn kubectl_apply(&self, obj: &serde_json::Value) {
        let mut child = Command::new(self.bins.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(obj.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl ControlPlane {
    /// Installs a namespaced CRD `<plural>.<group>` (version v1, any fields) and waits until
    /// it is established.
    pub fn install_crd(&self, group: &str, plural: &str, kind: &str) {
        let singular = kind.to_ascii_lowercase();
        self.kubectl_apply(&serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"plural": plural, "singular": singular, "kind": kind},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }));
        let out = self.kubectl(&[
            "wait",
            "--for=condition=established",
            &format!("crd/{plural}.{group}"),
            "--timeout=60s",
        ]);
        assert!(
            out.status.success(),
            "CRD {plural}.{group} not established: {}",
            crate::text(&out)
        );
    }
}
