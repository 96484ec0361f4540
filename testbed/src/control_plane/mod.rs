//! The control plane: a real etcd and real kube-apiservers (built by `scripts/k8s/build.sh`) on
//! loopback, one per test, in its own temporary folder with its own ports. Processes are killed
//! when the [`ControlPlane`] is dropped (also on panic; the folder and its logs are then kept)
//! and when the test process dies. Nothing here imitates etcd or the apiserver.
//!
//! One concern per file, each with at most one `impl ControlPlane`: this file (the struct,
//! start, teardown), `etcd.rs`, `apiserver.rs`, `controller_manager.rs`, `config.rs` (the encryption config the
//! apiservers load), `access.rs` (kubeconfigs, clients, kubectl) and `run.rs` (atrest aimed at
//! this cluster, with the leak check after every run).

mod access;
mod apiserver;
pub mod cluster3;
mod config;
mod controller_manager;
mod etcd;
mod run;

use std::path::{Path, PathBuf};

use crate::files::write_private;
use crate::leak;
use crate::proc::{Proc, bin_dir, free_port};
use crate::tls::{EtcdTls, make_etcd_tls, make_serving_tls};

pub use apiserver::ApiServer;

/// The etcd key prefix the apiservers store under.
pub const ETCD_PREFIX: &str = "/registry";

/// A config with identity for secrets: the default when a test gives none.
pub const IDENTITY_CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - identity: {}
";

/// How a test wants its control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Encryption config to start with; `None` for `identity` on secrets.
    pub config_yaml: Option<String>,
    /// Serve etcd over TLS with client-certificate authentication.
    pub etcd_tls: bool,
    /// Extra kube-apiserver flags.
    pub apiserver_args: Vec<String>,
}

/// A real etcd and one or more real kube-apiservers in a temporary folder, stopped on drop.
pub struct ControlPlane {
    /// The folder holding every file of this control plane.
    pub dir: tempfile::TempDir,
    /// Where the kube-apiserver, etcd and kubectl binaries are.
    pub bins: PathBuf,
    /// etcd's client URL.
    pub etcd_endpoint: String,
    /// The etcd key prefix ([`ETCD_PREFIX`]).
    pub etcd_prefix: String,
    /// etcd's CA and client certificate, when it serves TLS.
    pub etcd_tls: Option<EtcdTls>,
    /// The encryption config file the apiservers read.
    pub config_path: PathBuf,
    /// A kubeconfig with the admin token.
    pub kubeconfig: PathBuf,
    /// A kubeconfig whose user may only read.
    pub readonly_kubeconfig: PathBuf,
    /// The admin's bearer token.
    pub admin_token: String,
    /// The read-only user's bearer token.
    pub readonly_token: String,
    /// A kubeconfig for user `atrest-controller-manager`, who has no rights until a test
    /// grants some (to run kube-controller-manager with less than the admin's).
    pub controller_manager_kubeconfig: PathBuf,
    /// The apiservers, first one first.
    pub apiservers: Vec<ApiServer>,
    etcd_args: Vec<String>,
    etcd: Option<Proc>,
    /// kube-controller-manager, when a test started it.
    controller_manager: Option<Proc>,
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

impl ControlPlane {
    /// Starts etcd and one apiserver, and waits until the apiserver is ready.
    pub async fn start(opts: Options) -> ControlPlane {
        let bins = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("atrest-cp.")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        let config_path = d.join("encryption-config.yaml");
        let config_yaml = opts.config_yaml.as_deref().unwrap_or(IDENTITY_CONFIG);
        leak::register_config(config_yaml, "the initial encryption config");
        write_private(&config_path, config_yaml.as_bytes());

        // Service-account signing key (ECDSA P-256; the apiserver signs tokens with ES256).
        let sa = rcgen::KeyPair::generate().unwrap();
        write_private(&d.join("sa.key"), sa.serialize_pem().as_bytes());
        write_private(&d.join("sa.pub"), sa.public_key_pem().as_bytes());

        let admin_token = random_token();
        let readonly_token = random_token();
        let controller_manager_token = random_token();
        write_private(
            &d.join("tokens.csv"),
            format!(
                "{admin_token},atrest-admin,uid-admin,system:masters\n{readonly_token},atrest-readonly,uid-readonly\n{controller_manager_token},atrest-controller-manager,uid-controller-manager\n"
            )
            .as_bytes(),
        );

        let etcd_tls = opts.etcd_tls.then(|| make_etcd_tls(&d));
        make_serving_tls(&d);
        let (client_port, peer_port) = (free_port(), free_port());
        let scheme = if etcd_tls.is_some() { "https" } else { "http" };
        let etcd_endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let mut etcd_args: Vec<String> = vec![
            "--name=atrest-test".into(),
            format!("--data-dir={}", d.join("etcd").display()),
            format!("--listen-client-urls={etcd_endpoint}"),
            format!("--advertise-client-urls={etcd_endpoint}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=atrest-test=http://127.0.0.1:{peer_port}"),
            "--log-level=warn".into(),
            "--quota-backend-bytes=8589934592".into(),
        ];
        if let Some(t) = &etcd_tls {
            etcd_args.extend([
                format!("--cert-file={}", d.join("etcd-server.crt").display()),
                format!("--key-file={}", d.join("etcd-server.key").display()),
                format!("--trusted-ca-file={}", t.ca.display()),
                "--client-cert-auth=true".into(),
            ]);
        }
        // Benchmarks that profile etcd add `--enable-pprof` here.
        if let Ok(extra) = std::env::var("ATREST_ETCD_EXTRA_ARGS") {
            etcd_args.extend(extra.split_whitespace().map(String::from));
        }
        let mut cp = ControlPlane {
            dir,
            bins,
            etcd_endpoint,
            etcd_prefix: ETCD_PREFIX.to_string(),
            etcd_tls,
            config_path,
            kubeconfig: d.join("kubeconfig"),
            readonly_kubeconfig: d.join("kubeconfig-readonly"),
            admin_token,
            readonly_token,
            controller_manager_kubeconfig: d.join("kubeconfig-controller-manager"),
            apiservers: Vec::new(),
            etcd_args,
            etcd: None,
            controller_manager: None,
        };
        cp.start_etcd().await;
        cp.add_apiserver("127.0.0.1", &opts.apiserver_args).await;
        cp.write_kubeconfigs(&controller_manager_token);
        cp.grant_readonly().await;
        cp
    }

    /// The test folder (configs, certificates, logs, etcd data, atrest's state folders).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_controller_manager();
        for a in &mut self.apiservers {
            if let Some(mut p) = a.proc.take() {
                p.kill();
            }
        }
        self.stop_etcd();
        if std::thread::panicking() {
            // Keep the logs of a failed test where they can be read.
            let keep = self.dir.path().to_path_buf();
            eprintln!("test bed logs kept in {}", keep.display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
        }
    }
}
