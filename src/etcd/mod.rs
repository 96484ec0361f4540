//! Reading etcd: connection (etcdctl's flags and `ETCDCTL_*`), the key layout, and the
//! read-only scan. atrest never writes etcd.

pub mod layout;
pub mod scan;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--cert and --key must be given together (client certificate authentication)")]
    HalfIdentity,
    #[error(
        "cannot connect to etcd at {endpoints}: {message}\n  hint: check --endpoints (or ETCDCTL_ENDPOINTS), and for TLS --cacert/--cert/--key; on a control-plane node atrest reads them from the kube-apiserver manifest"
    )]
    Connect { endpoints: String, message: String },
    #[error("etcd refused the request: {message}{hint}")]
    Request { message: String, hint: &'static str },
    #[error(
        "etcd revision {revision} was compacted during the scan; run the scan again (it pins a new revision)"
    )]
    Compacted { revision: i64 },
    #[error(transparent)]
    Kms(#[from] crate::kms::KmsError),
    #[error(
        "etcd did not answer for {waited:?} (last error: {message}); the scan stopped at {resource}"
    )]
    Unavailable {
        waited: Duration,
        message: String,
        resource: String,
    },
}

/// The etcd password is a secret: held apart, never printed.
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: String,
    pub password: zeroize::Zeroizing<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: REDACTED }}",
            self.user
        )
    }
}

/// How to reach etcd, from resolved settings.
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    pub prefix: String,
}

impl EtcdTarget {
    fn uses_tls(&self) -> bool {
        self.cacert.is_some()
            || self.cert.is_some()
            || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// etcdctl accepts `host:port`; the scheme follows from whether TLS files are given.
    fn urls(&self) -> Vec<String> {
        let scheme = if self.uses_tls() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect()
    }

    pub fn describe(&self) -> String {
        self.urls().join(",")
    }

    /// Connects and checks that etcd answers (`Status`), so a wrong endpoint or certificate
    /// fails here with a clear message rather than mid-scan.
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if self.uses_tls() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read(
                    ca,
                    "CA certificate (--cacert)",
                )?));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(
                        read(c, "client certificate (--cert)")?,
                        read(k, "client key (--key)")?,
                    ));
                }
                (None, None) => {}
                _ => return Err(EtcdError::HalfIdentity),
            }
            opts = opts.with_tls(tls);
        }
        if let Some(c) = &self.credentials {
            opts = opts.with_user(c.user.clone(), c.password.to_string());
        }
        let endpoints = self.describe();
        let mut client = Client::connect(self.urls(), Some(opts))
            .await
            .map_err(|e| EtcdError::Connect {
                endpoints: endpoints.clone(),
                message: explain(&e),
            })?;
        client.status().await.map_err(|e| EtcdError::Connect {
            endpoints,
            message: explain(&e),
        })?;
        Ok(client)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A message an admin can act on, from an etcd client error.
pub(crate) fn explain(e: &etcd_client::Error) -> String {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        format!("TLS failed ({text}); check --cacert, --cert and --key")
    } else if lower.contains("authentication failed")
        || lower.contains("invalid auth token")
        || lower.contains("user name is empty")
    {
        format!("authentication failed ({text}); check --user / ETCDCTL_USER and ETCDCTL_PASSWORD")
    } else if lower.contains("permission denied") {
        format!("permission denied ({text}); the etcd user needs read access to the prefix")
    } else {
        text
    }
}

/// True for errors worth retrying (etcd restarting, leader change, network blip).
pub(crate) fn is_transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
            ) && !s.message().contains("compacted")
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}
