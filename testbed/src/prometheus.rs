//! A real Prometheus (Debian's `prometheus` package) on loopback with a temporary data folder,
//! scraping given targets every second and evaluating given rule files every second; and the
//! small HTTP/1.1 GET the tests use to read it and the exporter (loopback, no TLS).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proc::{Proc, free_port};

/// `GET http://<addr><path>` over HTTP/1.1 with `Connection: close`: (status, body). Every
/// answer (the exporter's `/metrics` and `/healthz`, Prometheus's API) goes through the leak
/// check.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer from {addr}: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line from {addr}: {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    crate::leak::check_bytes(buf.as_slice(), &format!("GET http://{addr}{path}"));
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query parameter.
pub fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One sample of an instant query: labels (without `__name__`) and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("prometheus");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "prometheus not found: install Debian's package (`apt-get install -y prometheus`; scripts/test.sh does this)"
    );
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, job `atrest`) and evaluating
    /// `rule_files`, both every second; returns once it is ready.
    pub async fn start(targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let bin = binary();
        let dir = tempfile::Builder::new()
            .prefix("atrest-prom.")
            .tempdir()
            .unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": rule_files,
            "scrape_configs": [{"job_name": "atrest", "static_configs": [{"targets": targets}]}],
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let mut proc = Proc::spawn("prometheus", cmd, dir.path().join("prometheus.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_get(&addr, "/-/ready").await {
                break;
            }
            assert!(
                proc.exited().is_none() && Instant::now() < deadline,
                "prometheus not ready:\n{}",
                proc.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Prometheus {
            addr,
            proc,
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(&self.addr, path)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.proc.log_tail()));
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    /// An instant query's samples.
    pub async fn query(&self, q: &str) -> Vec<Sample> {
        let v = self
            .api(&format!("/api/v1/query?query={}", encode_query(q)))
            .await;
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| *k != "__name__")
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// Active alerts: (labels, state `pending`/`firing`).
    pub async fn alerts(&self) -> Vec<(BTreeMap<String, String>, String)> {
        let v = self.api("/api/v1/alerts").await;
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let labels = a["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (labels, a["state"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// Polls `q` until `ok` holds for its samples (or panics after `timeout`, with the last
    /// answer); returns those samples.
    pub async fn wait_for(
        &self,
        q: &str,
        timeout: Duration,
        ok: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.query(q).await;
            if ok(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{q}: still {got:?} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
