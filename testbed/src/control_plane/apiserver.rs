//! The kube-apiservers of the control plane: one or more against the same etcd, each startable,
//! stoppable and restartable, optionally with its own hostname (its own identity Lease).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::ControlPlane;
use crate::proc::{Proc, free_port};

/// One kube-apiserver of the control plane.
pub struct ApiServer {
    /// Its `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its secure port.
    pub port: u16,
    /// The running process; `None` while stopped.
    pub proc: Option<Proc>,
    /// The flags it was started with (reused on restart).
    pub args: Vec<String>,
    /// Run in its own UTS namespace with this hostname (its apiserver identity differs).
    pub hostname: Option<String>,
}

impl ControlPlane {
    fn apiserver_args(&self, bind: &str, port: u16) -> Vec<String> {
        let d = self.path();
        let mut args = vec![
            format!("--etcd-servers={}", self.etcd_endpoint),
            format!("--etcd-prefix={}", self.etcd_prefix),
            format!("--bind-address={bind}"),
            format!("--advertise-address={bind}"),
            format!("--secure-port={port}"),
            // One CA for every apiserver of the test bed, as in a real control plane.
            format!("--tls-cert-file={}", d.join("apiserver.crt").display()),
            format!(
                "--tls-private-key-file={}",
                d.join("apiserver.key").display()
            ),
            format!("--service-account-key-file={}", d.join("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--token-auth-file={}", d.join("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            format!(
                "--encryption-provider-config={}",
                self.config_path.display()
            ),
            "--encryption-provider-config-automatic-reload=true".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // Loopback addresses are not valid endpoints of the kubernetes Service.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
        ];
        // Benchmarks that must not see the apiserver's 5-minute compaction add
        // `--etcd-compaction-interval=0` here.
        if let Ok(extra) = std::env::var("ATREST_APISERVER_EXTRA_ARGS") {
            args.extend(extra.split_whitespace().map(String::from));
        }
        if let Some(t) = &self.etcd_tls {
            args.extend([
                format!("--etcd-cafile={}", t.ca.display()),
                format!("--etcd-certfile={}", t.cert.display()),
                format!("--etcd-keyfile={}", t.key.display()),
            ]);
        }
        args
    }

    /// Starts one more kube-apiserver on `bind` (a loopback address) against the same etcd.
    pub async fn add_apiserver(&mut self, bind: &str, extra: &[String]) -> usize {
        self.add_apiserver_as(bind, None, extra).await
    }

    /// Like [`Self::add_apiserver`], in its own UTS namespace with `hostname`, so that its
    /// identity Lease differs from the others'.
    pub async fn add_apiserver_as(
        &mut self,
        bind: &str,
        hostname: Option<&str>,
        extra: &[String],
    ) -> usize {
        let port = free_port();
        let index = self.apiservers.len();
        let mut args = self.apiserver_args(bind, port);
        args.extend(extra.iter().cloned());
        self.apiservers.push(ApiServer {
            url: format!("https://{bind}:{port}"),
            port,
            proc: None,
            args,
            hostname: hostname.map(str::to_string),
        });
        self.start_apiserver(index).await;
        index
    }

    /// Another control-plane node: an apiserver on `bind` in its own UTS namespace with
    /// `hostname` ([`Self::add_apiserver_as`]), reading its own config file `config`.
    pub async fn add_node(&mut self, bind: &str, hostname: &str, config: &Path) -> usize {
        self.add_apiserver_as(
            bind,
            Some(hostname),
            &[format!("--encryption-provider-config={}", config.display())],
        )
        .await
    }

    /// (Re)starts apiserver `index` with its flags and waits until `/readyz` answers.
    pub async fn start_apiserver(&mut self, index: usize) {
        let a = &self.apiservers[index];
        let mut cmd = match &a.hostname {
            None => Command::new(self.bins.join("kube-apiserver")),
            Some(h) => {
                let mut c = Command::new("unshare");
                c.args([
                    "--uts",
                    "sh",
                    "-c",
                    &format!("hostname {h} && exec \"$0\" \"$@\""),
                ]);
                c.arg(self.bins.join("kube-apiserver"));
                c
            }
        };
        cmd.args(&a.args);
        let log = self.path().join(format!("apiserver-{index}.log"));
        let mut p = Proc::spawn("kube-apiserver", cmd, log);
        let url = a.url.clone();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = p.exited() {
                panic!("kube-apiserver exited with {status}:\n{}", p.log_tail());
            }
            if self
                .get_text(&url, "/readyz")
                .await
                .is_ok_and(|t| t.trim() == "ok")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 90 s:\n{}",
                p.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.apiservers[index].proc = Some(p);
    }

    /// Stops apiserver `index` (SIGKILL) and waits for it to exit.
    pub fn stop_apiserver(&mut self, index: usize) {
        if let Some(mut p) = self.apiservers[index].proc.take() {
            p.kill();
        }
    }

    /// A restarted apiserver loads the config file at once (no one-minute poll).
    pub async fn restart_apiserver(&mut self, index: usize) {
        self.stop_apiserver(index);
        self.start_apiserver(index).await;
    }

    /// The pid of apiserver `index`, while it runs.
    pub fn apiserver_pid(&self, index: usize) -> Option<u32> {
        self.apiservers[index].proc.as_ref().map(|p| p.pid())
    }

    /// The first apiserver's URL.
    pub fn url(&self) -> &str {
        &self.apiservers[0].url
    }

    /// The CA that signed every apiserver's serving certificate.
    pub fn ca_path(&self, _index: usize) -> PathBuf {
        self.path().join("apiserver-ca.crt")
    }

    /// A kube-apiserver static-pod manifest with this cluster's flags, as kubeadm writes one.
    pub fn write_manifest(&self, path: &Path) {
        let mut text = String::from(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  containers:\n  - name: kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.37.2\n    command:\n    - kube-apiserver\n",
        );
        for a in &self.apiservers[0].args {
            text.push_str(&format!("    - {}\n", serde_json::to_string(a).unwrap()));
        }
        std::fs::write(path, text).unwrap();
    }
}
