//! Reading etcd: connection (etcdctl's flags and `ETCDCTL_*`), the key layout, and the
//! read-only scan. atrest never writes etcd.

pub mod bolt;
pub mod copies;
pub mod dbfile;
pub mod history;
pub mod layout;
pub mod mvcc;
pub mod scan;
mod tls;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::codec::KmsFailure;
use crate::fsutil::permission_hint;
use crate::model::census::{EtcdInfo, EtcdMember};

/// Why etcd could not be read. atrest only reads etcd, so none of these changed anything.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The etcd server is older than the oldest release atrest is proven against.
    #[error(
        "etcd at {endpoints} runs {version}; atrest supports etcd 3.5 to 3.7 (the version matrix proves 3.5.21, 3.6.8 and 3.7.0): upgrade etcd first"
    )]
    TooOld {
        /// The endpoint URLs asked, comma-separated.
        endpoints: String,
        /// The version etcd's status reported.
        version: String,
    },
    /// A TLS file given by flag, environment or manifest could not be read.
    #[error("cannot read {what} {path}: {source}{}", permission_hint(source))]
    File {
        /// Which file it is (`CA certificate (--cacert)`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A file atrest writes (its etcd snapshot) could not be written; nothing partial is left.
    #[error("cannot write {what} {path}: {source}{}", permission_hint(source))]
    Write {
        /// Which file (`snapshot file`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why writing failed.
        source: std::io::Error,
    },
    /// Too little room for the snapshot; nothing was written.
    #[error(transparent)]
    NoRoom(#[from] crate::fsutil::NoRoom),
    /// Only one of `--cert` and `--key` was given; client certificate authentication needs both.
    #[error("--cert and --key must be given together (client certificate authentication)")]
    HalfIdentity,
    /// The TLS handshake with etcd failed for a reason an admin can name: the CA, a
    /// certificate's dates or name, or a key that does not match its certificate.
    #[error("cannot connect to etcd at {endpoints}: {problem}")]
    Tls {
        /// The endpoint URLs tried, comma-separated.
        endpoints: String,
        /// What is wrong, in one sentence naming the files.
        problem: String,
        /// What the TLS library said (shown with -v).
        raw: String,
    },
    /// No endpoint answered, or TLS or authentication failed; nothing was read yet.
    #[error("cannot connect to etcd at {endpoints}: {message}")]
    Connect {
        /// The endpoint URLs tried, comma-separated.
        endpoints: String,
        /// What failed, with a hint for TLS and authentication errors.
        message: String,
    },
    /// etcd refused a read, for example for lack of permission.
    #[error("etcd refused the request: {message}{hint}")]
    Request {
        /// etcd's own message.
        message: String,
        /// What to check, such as the etcd user's read permission on the prefix; may be empty.
        hint: &'static str,
    },
    /// etcd compacted away the revision the scan is pinned to, so the scan cannot finish
    /// consistently; a new scan pins a newer revision.
    #[error(
        "etcd revision {revision} was compacted during the scan; run the scan again (it pins a new revision)"
    )]
    Compacted {
        /// The revision the scan was pinned at.
        revision: i64,
    },
    /// A TLS file does not hold what it should.
    #[error("{what} {path} does not hold {expected}")]
    NotPem {
        /// Which file (`client certificate (--cert)`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
    },
    /// A KMS plugin failed while values were being classified.
    #[error(transparent)]
    Kms(KmsFailure),
    /// etcd stayed unreachable for longer than the scan's patience; the scan stopped part way.
    #[error(
        "etcd did not answer for {waited:?} (last error: {message}); the scan stopped at {resource}"
    )]
    Unavailable {
        /// How long atrest retried.
        waited: Duration,
        /// The last error etcd gave.
        message: String,
        /// The resource being read when it gave up.
        resource: String,
    },
}

/// The etcd password is a secret: held apart, never printed.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The etcd user (`--user`, `ETCDCTL_USER`).
    pub user: String,
    /// The password; zeroed when dropped and shown as `REDACTED` by `Debug`.
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
    /// Endpoints as etcdctl takes them: `host:port` or a URL.
    pub endpoints: Vec<String>,
    /// CA bundle that signs the etcd server certificates; given, it turns on TLS.
    pub cacert: Option<PathBuf>,
    /// Client certificate (with `key`), as the apiserver's `--etcd-certfile`.
    pub cert: Option<PathBuf>,
    /// Key of the client certificate, as the apiserver's `--etcd-keyfile`.
    pub key: Option<PathBuf>,
    /// etcd user and password, when etcd uses password authentication.
    pub credentials: Option<Credentials>,
    /// The apiserver's `--etcd-prefix`: every resource's keys start with it.
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

    /// The endpoint URLs as atrest will dial them, for messages and reports.
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
        let connect_error = |e: etcd_client::Error| match self.tls_problem(&e) {
            Some(problem) => {
                tracing::info!("etcd TLS failure, as the TLS library says it: {e:?}");
                EtcdError::Tls {
                    endpoints: endpoints.clone(),
                    problem,
                    raw: format!("{e:?}"),
                }
            }
            None => EtcdError::Connect {
                endpoints: endpoints.clone(),
                message: explain(&e),
            },
        };
        let mut client = Client::connect(self.urls(), Some(opts))
            .await
            .map_err(connect_error)?;
        let status = client.status().await.map_err(connect_error)?;
        if !supported_etcd(status.version()) {
            return Err(EtcdError::TooOld {
                endpoints,
                version: status.version().to_string(),
            });
        }
        Ok(client)
    }
}

/// Reads a PEM file and checks that it holds what it should (`CERTIFICATE` or a `PRIVATE KEY`),
/// so that a wrong or garbled file is named here rather than failing later as a TLS error.
fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, EtcdError> {
    let bytes = std::fs::read(path).map_err(|source| EtcdError::File {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let expected = if what.contains("key") {
        "PRIVATE KEY-----"
    } else {
        "-----BEGIN CERTIFICATE-----"
    };
    if !text.contains(expected) {
        return Err(EtcdError::NotPem {
            what,
            path: path.to_path_buf(),
            expected: if what.contains("key") {
                "a PEM private key (-----BEGIN ... PRIVATE KEY-----)"
            } else {
                "PEM certificates (-----BEGIN CERTIFICATE-----)"
            },
        });
    }
    Ok(bytes)
}

/// A message an admin can act on, from an etcd client error.
pub(crate) fn explain(e: &etcd_client::Error) -> String {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        // The innermost cause is the TLS library's own sentence; the chain above it is
        // transport wrapping (all of it is logged with -v).
        let mut inner = text.clone();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            inner = s.to_string();
            source = s.source();
        }
        tracing::info!("etcd TLS failure, as the TLS library says it: {e:?}");
        format!("the TLS handshake failed ({inner}); check --cacert, --cert and --key")
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

/// Whether an etcd server version (`3.5.21`) is one atrest supports: 3.5 or newer. A version
/// that does not parse is let through (a vendor build); what atrest reads is proven anyway.
pub fn supported_etcd(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (3, 5),
        _ => true,
    }
}

/// The etcd cluster a census read — ID, version, members — for a report's evidence; what cannot be
/// asked stays empty (a report is still written when etcd answers only some requests).
pub async fn cluster_info(client: &Client, target: &EtcdTarget) -> EtcdInfo {
    let mut info = EtcdInfo {
        endpoints: vec![target.describe()],
        ..Default::default()
    };
    let mut c = client.clone();
    if let Ok(st) = c.status().await {
        info.version = st.version().to_string();
        info.cluster_id = st
            .header()
            .map(|h| format!("{:x}", h.cluster_id()))
            .unwrap_or_default();
    }
    if let Ok(m) = c.member_list().await {
        info.members = m
            .members()
            .iter()
            .map(|m| EtcdMember {
                id: format!("{:x}", m.id()),
                name: m.name().to_string(),
                client_urls: m.client_urls().to_vec(),
            })
            .collect();
    }
    info
}

/// The version the etcd server behind `client` reports in its status.
pub async fn server_version(client: &mut Client) -> Result<String, EtcdError> {
    let s = client.status().await.map_err(|e| EtcdError::Request {
        message: e.to_string(),
        hint: "",
    })?;
    Ok(s.version().to_string())
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn etcd_3_5_and_newer_are_supported() {
        assert!(super::supported_etcd("3.5.21"));
        assert!(super::supported_etcd("3.6.8"));
        assert!(super::supported_etcd("3.7.0"));
        assert!(!super::supported_etcd("3.4.34"));
        assert!(!super::supported_etcd("2.3.8"));
        assert!(super::supported_etcd("vendor-build"));
    }
}
