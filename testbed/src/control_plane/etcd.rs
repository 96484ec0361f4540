//! etcd of the control plane: start, stop, and raw reads and writes that only tests make.

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client as EtcdClient, ConnectOptions, GetOptions, TlsOptions};

use super::ControlPlane;
use crate::proc::Proc;

impl ControlPlane {
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

    /// Stops etcd (SIGKILL) and waits for it to exit.
    pub fn stop_etcd(&mut self) {
        if let Some(mut p) = self.etcd.take() {
            p.kill();
        }
    }

    /// The pid of etcd, while it runs.
    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.as_ref().map(|p| p.pid())
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

    /// How many keys etcd holds under `prefix` (a count-only range read).
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

    /// Runs this cluster's `etcdctl <args…>` against its etcd and asserts it succeeded; its
    /// stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new(self.bins.join("etcdctl"))
            .args(self.etcd_flags())
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            crate::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl snapshot save` into `<cluster folder>/<name>.db`; its path.
    pub fn save_snapshot(&self, name: &str) -> std::path::PathBuf {
        let path = self.path().join(format!("{name}.db"));
        self.etcdctl(&["snapshot", "save", path.to_str().unwrap()]);
        path
    }
}
