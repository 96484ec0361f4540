//! The test bed: a real etcd and a real kube-apiserver (built by `scripts/k8s/build.sh`) on
//! loopback, one per test, each in its own temporary folder with its own ports. Processes are
//! killed when the [`ControlPlane`] is dropped (also on panic) and when the test process dies
//! (`PR_SET_PDEATHSIG`). Nothing here imitates etcd or the apiserver.
#![allow(dead_code)]

pub mod scan_json;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client as EtcdClient, ConnectOptions, GetOptions, TlsOptions};

pub const K8S_VERSION: &str = "v1.37.2";
pub const ETCD_PREFIX: &str = "/registry";

/// The folder holding the built binaries, or a panic that says how to build them.
pub fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("ATREST_K8S_BIN") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("atrest/k8s").join(K8S_VERSION)
        }
    };
    for b in [
        "kube-apiserver",
        "kubectl",
        "etcd",
        "etcdctl",
        "etcdutl",
        "kms-plugin",
    ] {
        if !dir.join(b).is_file() {
            panic!(
                "the test bed needs the real Kubernetes binaries, but {} is missing.\n\
                 Build them with: scripts/k8s/build.sh   (or run scripts/test.sh, which does it)",
                dir.join(b).display()
            );
        }
    }
    dir
}

/// A free TCP port on 127.0.0.1. The listener is dropped just before use; the random pick
/// by the kernel keeps parallel tests apart.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that dies with its guard and with the test process.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Encryption config to start with; `None` for `identity` on secrets.
    pub config_yaml: Option<String>,
    /// Serve etcd over TLS with client-certificate authentication.
    pub etcd_tls: bool,
    /// Extra kube-apiserver flags.
    pub apiserver_args: Vec<String>,
}

/// etcd TLS material (files in the test folder).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct ApiServer {
    pub url: String,
    pub port: u16,
    pub proc: Option<Proc>,
    pub args: Vec<String>,
    /// Run in its own UTS namespace with this hostname (its apiserver identity differs).
    pub hostname: Option<String>,
}

pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub bins: PathBuf,
    pub etcd_endpoint: String,
    pub etcd_prefix: String,
    pub etcd_tls: Option<EtcdTls>,
    pub config_path: PathBuf,
    pub kubeconfig: PathBuf,
    pub readonly_kubeconfig: PathBuf,
    pub admin_token: String,
    pub readonly_token: String,
    pub apiservers: Vec<ApiServer>,
    etcd_args: Vec<String>,
    etcd: Option<Proc>,
}

pub const IDENTITY_CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - identity: {}
";

fn random_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

/// Writes a file atomically with mode 0600 (the apiserver reloads from what it reads; a torn
/// write would be a test-bed bug).
pub fn write_private(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(contents).unwrap();
        f.sync_all().unwrap();
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl ControlPlane {
    pub async fn start(opts: Options) -> ControlPlane {
        let bins = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("atrest-cp.")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        let config_path = d.join("encryption-config.yaml");
        write_private(
            &config_path,
            opts.config_yaml
                .as_deref()
                .unwrap_or(IDENTITY_CONFIG)
                .as_bytes(),
        );

        // Service-account signing key (ECDSA P-256; the apiserver signs tokens with ES256).
        let sa = rcgen::KeyPair::generate().unwrap();
        write_private(&d.join("sa.key"), sa.serialize_pem().as_bytes());
        write_private(&d.join("sa.pub"), sa.public_key_pem().as_bytes());

        let admin_token = random_token();
        let readonly_token = random_token();
        write_private(
            &d.join("tokens.csv"),
            format!(
                "{admin_token},atrest-admin,uid-admin,system:masters\n{readonly_token},atrest-readonly,uid-readonly\n"
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
            apiservers: Vec::new(),
            etcd_args,
            etcd: None,
        };
        cp.start_etcd().await;
        cp.add_apiserver("127.0.0.1", &opts.apiserver_args).await;
        cp.write_kubeconfigs();
        cp.grant_readonly().await;
        cp
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) etcd on its data folder and waits until it answers.
    pub async fn start_etcd(&mut self) {
        let mut cmd = Command::new(self.bins.join("etcd"));
        cmd.args(&self.etcd_args);
        let log = self.path().join("etcd.log");
        let mut p = Proc::spawn("etcd", cmd, log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = p.exited() {
                panic!("etcd exited with {status}:\n{}", p.log_tail());
            }
            if let Ok(mut c) = self.etcd_client_once().await
                && c.status().await.is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not ready after 30 s:\n{}",
                p.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.etcd = Some(p);
    }

    pub fn stop_etcd(&mut self) {
        if let Some(mut p) = self.etcd.take() {
            p.kill();
        }
    }

    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.as_ref().map(|p| p.pid())
    }

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

    pub fn apiserver_pid(&self, index: usize) -> Option<u32> {
        self.apiservers[index].proc.as_ref().map(|p| p.pid())
    }

    pub fn url(&self) -> &str {
        &self.apiservers[0].url
    }

    /// The CA that signed every apiserver's serving certificate.
    pub fn ca_path(&self, _index: usize) -> PathBuf {
        self.path().join("apiserver-ca.crt")
    }

    fn write_kubeconfigs(&self) {
        for (path, user, token) in [
            (&self.kubeconfig, "atrest-admin", &self.admin_token),
            (
                &self.readonly_kubeconfig,
                "atrest-readonly",
                &self.readonly_token,
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
    async fn grant_readonly(&self) {
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

    /// The config hash an apiserver reports in `last_config_info`.
    pub async fn loaded_config_hash(&self, index: usize) -> Option<String> {
        let text = self
            .get_text(&self.apiservers[index].url, "/metrics")
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("apiserver_encryption_config_controller_last_config_info{"))
            .and_then(|l| {
                l.split(",hash=\"")
                    .nth(1)
                    .or_else(|| l.split("{hash=\"").nth(1))
            })
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
    }

    /// Replaces the encryption config file (atomically, mode 0600).
    pub fn write_config(&self, yaml: &str) {
        write_private(&self.config_path, yaml.as_bytes());
    }

    pub fn config_hash(&self) -> String {
        atrest::config::config_hash(&std::fs::read(&self.config_path).unwrap())
    }

    /// Waits until apiserver `index` reports the current file's hash (automatic reload polls
    /// once a minute, so allow a little over that).
    pub async fn wait_config_loaded(&self, index: usize, timeout: Duration) {
        let want = self.config_hash();
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.loaded_config_hash(index).await;
            if got.as_deref() == Some(want.as_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apiserver {index} did not load config {want} within {timeout:?} (reports {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn etcd_client_once(&self) -> Result<EtcdClient, etcd_client::Error> {
        let mut opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        if let Some(t) = &self.etcd_tls {
            let ca = std::fs::read(&t.ca).unwrap();
            let cert = std::fs::read(&t.cert).unwrap();
            let key = std::fs::read(&t.key).unwrap();
            opts = opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(ca))
                    .identity(etcd_client::Identity::from_pem(cert, key)),
            );
        }
        EtcdClient::connect([self.etcd_endpoint.as_str()], Some(opts)).await
    }

    /// A raw etcd client (tests read stored values with it; the product never writes etcd).
    pub async fn etcd(&self) -> EtcdClient {
        self.etcd_client_once()
            .await
            .expect("connect to the test etcd")
    }

    /// The stored value and mod_revision of a key, read straight from etcd.
    pub async fn raw(&self, key: &str) -> Option<(Vec<u8>, i64)> {
        let mut c = self.etcd().await;
        let resp = c.get(key, None).await.unwrap();
        resp.kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision()))
    }

    /// Test-only: plant a value in etcd, as an attacker or a bug would.
    pub async fn plant(&self, key: &str, value: Vec<u8>) {
        let mut c = self.etcd().await;
        c.put(key, value, None).await.unwrap();
    }

    pub async fn count_prefix(&self, prefix: &str) -> i64 {
        let mut c = self.etcd().await;
        c.get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count()
    }

    /// Runs kubectl against this cluster with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.bins.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap()
    }

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

    /// The etcd flags atrest takes (`--endpoints`, and the TLS files when on).
    pub fn etcd_flags(&self) -> Vec<String> {
        let mut v = vec![format!("--endpoints={}", self.etcd_endpoint)];
        if let Some(t) = &self.etcd_tls {
            v.push(format!("--cacert={}", t.ca.display()));
            v.push(format!("--cert={}", t.cert.display()));
            v.push(format!("--key={}", t.key.display()));
        }
        v
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

impl Drop for ControlPlane {
    fn drop(&mut self) {
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

/// Every certificate of a PEM bundle, as DER (the apiserver's self-signed file holds the
/// serving certificate and its CA).
fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            current = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            if let Some(b64) = current.take() {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                );
            }
        } else if let Some(c) = current.as_mut() {
            c.push_str(line.trim());
        }
    }
    out
}

/// A CA and one serving certificate for every loopback address the test bed uses.
fn make_serving_tls(d: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "atrest-test-apiserver-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut names: Vec<String> = (1..=9).map(|i| format!("127.0.0.{i}")).collect();
    names.extend([
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
    ]);
    let key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(names).unwrap();
    sp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = sp.signed_by(&key, &issuer).unwrap();
    write_private(&d.join("apiserver-ca.crt"), ca.pem().as_bytes());
    write_private(&d.join("apiserver.crt"), cert.pem().as_bytes());
    write_private(&d.join("apiserver.key"), key.serialize_pem().as_bytes());
}

/// A CA, an etcd serving certificate for 127.0.0.1, and a client certificate.
fn make_etcd_tls(d: &Path) -> EtcdTls {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "atrest-test-etcd-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut sp =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "etcd");
    sp.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server = sp.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver-etcd-client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &issuer).unwrap();

    let files = [
        ("etcd-ca.crt", ca.pem()),
        ("etcd-server.crt", server.pem()),
        ("etcd-server.key", server_key.serialize_pem()),
        ("etcd-client.crt", client.pem()),
        ("etcd-client.key", client_key.serialize_pem()),
    ];
    for (name, text) in files {
        write_private(&d.join(name), text.as_bytes());
    }
    EtcdTls {
        ca: d.join("etcd-ca.crt"),
        cert: d.join("etcd-client.crt"),
        key: d.join("etcd-client.key"),
    }
}

/// A random 32-byte key in base64, for configs written by tests.
pub fn random_key_b64() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `secrets` with the given providers (YAML list items, already indented by 6) then identity.
pub fn secrets_config(providers_yaml: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers_yaml}"
    )
}

/// An aescbc provider block with the named keys, in order.
pub fn aescbc_block(keys: &[(&str, &str)]) -> String {
    let mut s = String::from("      - aescbc:\n          keys:\n");
    for (name, secret) in keys {
        s.push_str(&format!(
            "            - name: {name:?}\n              secret: {secret}\n"
        ));
    }
    s
}

/// Creates secrets `names` in `ns` through the API, 16 at a time; each holds `data` under
/// key `value`.
pub async fn create_secrets(client: &kube::Client, ns: &str, names: &[String], data: &str) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            let body: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name}, "stringData": {"value": data}
            }))
            .unwrap();
            async move {
                api.create(&Default::default(), &body)
                    .await
                    .unwrap_or_else(|e| panic!("create secret {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

pub async fn create_namespace(client: &kube::Client, ns: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let body: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    api.create(&Default::default(), &body).await.unwrap();
}

/// Runs the atrest binary; returns (exit code, stdout, stderr).
pub fn atrest(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    // Cargo sets this for integration tests; examples (which include this module) look beside
    // their own executable's folder.
    let bin: PathBuf = option_env!("CARGO_BIN_EXE_atrest")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().join("atrest")
        });
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for var in [
        "ETCDCTL_ENDPOINTS",
        "ETCDCTL_CACERT",
        "ETCDCTL_CERT",
        "ETCDCTL_KEY",
        "ETCDCTL_USER",
        "ETCDCTL_PASSWORD",
        "ATREST_CONFIG",
        "KUBECONFIG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run atrest");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl ControlPlane {
    /// atrest's flags for this cluster: the config file and etcd.
    pub fn atrest_flags(&self) -> Vec<String> {
        let mut v = vec![format!("--config={}", self.config_path.display())];
        v.extend(self.etcd_flags());
        v
    }

    /// Runs atrest with this cluster's flags after `args`.
    pub fn atrest(&self, args: &[&str]) -> (i32, String, String) {
        let flags = self.atrest_flags();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        atrest(&all, &[])
    }
}

impl ControlPlane {
    /// The encryption config file apiserver `index` reads (the last flag wins, as in pflag).
    pub fn config_file_of(&self, index: usize) -> PathBuf {
        self.apiservers[index]
            .args
            .iter()
            .rev()
            .find_map(|a| a.strip_prefix("--encryption-provider-config="))
            .map(PathBuf::from)
            .unwrap_or_else(|| self.config_path.clone())
    }

    /// Runs `cmd` to completion, restarting each apiserver whose config file changes (the
    /// restart path of a reload: an admin restarting it, or a static pod being recreated), so
    /// that tests do not wait for the one-minute automatic reload poll.
    pub async fn run_restarting(&mut self, mut cmd: std::process::Command) -> std::process::Output {
        let hash = |p: &Path| {
            std::fs::read(p)
                .map(|b| atrest::config::config_hash(&b))
                .unwrap_or_default()
        };
        let mut seen: Vec<String> = (0..self.apiservers.len())
            .map(|i| hash(&self.config_file_of(i)))
            .collect();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out_pipe = child.stdout.take().unwrap();
        let err_pipe = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut { out_pipe }, &mut v).unwrap();
            v
        });
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut { err_pipe }, &mut v).unwrap();
            v
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            for (i, seen_hash) in seen.iter_mut().enumerate() {
                let now = hash(&self.config_file_of(i));
                if now != *seen_hash && self.apiservers[i].proc.is_some() {
                    *seen_hash = now;
                    self.restart_apiserver(i).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        std::process::Output {
            status,
            stdout: out_reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
        }
    }
}

/// The KMS v2 test plugin (`scripts/k8s/kube/kmsplugin`): a real gRPC KeyManagementService on a
/// unix socket, whose current key ID a test changes by rewriting a file.
pub struct KmsPlugin {
    pub name: String,
    pub socket: PathBuf,
    pub key_id_file: PathBuf,
    state_dir: PathBuf,
    bin: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl KmsPlugin {
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn set_key_id(&self, id: &str) {
        write_private(&self.key_id_file, id.as_bytes());
    }

    pub async fn start(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--key-id-file={}", self.key_id_file.display()))
            .arg(format!("--state-dir={}", self.state_dir.display()));
        let mut p = Proc::spawn("kms-plugin", cmd, self.log.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            if let Some(status) = p.exited() {
                panic!("kms-plugin exited with {status}:\n{}", p.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "kms-plugin socket not ready:\n{}",
                p.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.proc = Some(p);
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl ControlPlane {
    /// Starts a KMS v2 test plugin named `name` with current key ID `key_id`.
    pub async fn start_kms_plugin(&self, name: &str, key_id: &str) -> KmsPlugin {
        let mut p = KmsPlugin {
            name: name.to_string(),
            socket: self.path().join(format!("kms-{name}.sock")),
            key_id_file: self.path().join(format!("kms-{name}.key-id")),
            state_dir: self.path().join(format!("kms-{name}-state")),
            bin: self.bins.join("kms-plugin"),
            log: self.path().join(format!("kms-{name}.log")),
            proc: None,
        };
        p.set_key_id(key_id);
        p.start().await;
        p
    }
}

/// `prefix-00000`, `prefix-00001`, …
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// The entry for `name` in the `resources` list of a scan or report JSON document.
pub fn resource<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources in {doc:#}"))
        .iter()
        .find(|r| r["resource"] == name)
        .unwrap_or_else(|| panic!("no resource {name} in {doc:#}"))
}

/// A command's exit code and output, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl ControlPlane {
    /// `atrest <args…>` aimed at this cluster: config, etcd, kubeconfig and a state folder in
    /// the test folder, with no setting leaking in from the environment.
    pub fn atrest_command(&self, args: &[&str]) -> Command {
        let bin: PathBuf = option_env!("CARGO_BIN_EXE_atrest")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let exe = std::env::current_exe().unwrap();
                exe.parent().and_then(Path::parent).unwrap().join("atrest")
            });
        let mut cmd = Command::new(bin);
        cmd.args(args).args(self.atrest_flags());
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        cmd.arg(format!(
            "--state-dir={}",
            self.path().join("state").display()
        ));
        for v in [
            "KUBECONFIG",
            "ETCDCTL_ENDPOINTS",
            "ETCDCTL_CACERT",
            "ETCDCTL_CERT",
            "ETCDCTL_KEY",
            "ATREST_CONFIG",
        ] {
            cmd.env_remove(v);
        }
        cmd
    }
}
