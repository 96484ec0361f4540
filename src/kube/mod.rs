//! The Kubernetes API side: a client from kubeconfig, finding a group resource's API path,
//! the minimal write that makes the apiserver re-encrypt, reading what each apiserver loaded
//! (convergence), and the canary that proves which key an apiserver writes with.

pub mod converge;
pub mod metrics;
pub mod rewrite;
pub mod svm;
pub mod version;

pub use converge::{Agreement, ApiserverStatus, Apiservers, Convergence, NotConverged};

use std::path::Path;

use http_body_util::BodyExt;
use kube::Client;

use crate::GroupResource;

/// Why the Kubernetes API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig given (or the kubeadm admin.conf) cannot be read or used.
    #[error("cannot load kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// No kubeconfig was found anywhere atrest looks, or its client (or an apiserver URL)
    /// cannot be built.
    #[error("no Kubernetes API access: {0}")]
    NoConfig(String),
    /// API discovery does not find the resource in any served version, so atrest cannot write it.
    #[error("the apiserver at {url} does not serve {resource}: {message}")]
    Discovery {
        /// The apiserver asked.
        url: String,
        /// The group resource looked for.
        resource: String,
        /// What discovery answered.
        message: String,
    },
    /// A request failed on the way (connection, TLS, credentials) or was refused.
    #[error("request to the apiserver at {url} failed: {message}")]
    Request {
        /// The apiserver asked.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// A client plus the URL it talks to (for messages) and its config (to reach one apiserver of
/// several directly with the same credentials).
#[derive(Clone)]
pub struct Api {
    /// The client, with the kubeconfig's credentials.
    pub client: Client,
    /// The same credentials without the client's own retries of 429/503/504: rewrites retry in
    /// atrest's engine, which counts every attempt, honours `Retry-After`, paces with `--qps` and
    /// stops at `--max-attempts`.
    pub writer: Client,
    /// The apiserver URL, without a trailing `/`; names the apiserver in messages.
    pub url: String,
    config: kube::Config,
}

/// How long an apiserver may take to accept a connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an apiserver may take to answer a request (every request atrest sends is small: a
/// rewrite, a metrics page, a lease list). A connection that accepts and never answers (a
/// frozen apiserver) fails after this, instead of hanging.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Deadlines on every request: connect, send, and the answer, counted from when each request
/// was sent.
fn with_deadlines(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.reset_reader_on_write = true;
    config
}

/// kubeconfig from the given path, else kube's usual chain (KUBECONFIG, ~/.kube/config,
/// in-cluster), else the kubeadm admin.conf of a control-plane node.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Api, KubeError> {
    let config = with_deadlines(match kubeconfig {
        Some(p) => load_kubeconfig(p).await?,
        // No file: in-cluster config (settings already looked for the usual kubeconfig files).
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::NoConfig(e.to_string()))?,
    });
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let client =
        Client::try_from(config.clone()).map_err(|e| KubeError::NoConfig(e.to_string()))?;
    let writer = writer(&config)?;
    Ok(Api {
        client,
        writer,
        url,
        config,
    })
}

/// A client for rewrites: no retries of its own (the engine's count and pace every attempt).
fn writer(config: &kube::Config) -> Result<Client, KubeError> {
    let mut c = config.clone();
    c.default_retry = false;
    Client::try_from(c).map_err(|e| KubeError::NoConfig(e.to_string()))
}

async fn load_kubeconfig(path: &Path) -> Result<kube::Config, KubeError> {
    let err = |message: String| KubeError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(e.to_string()))
}

impl Api {
    /// The same credentials, aimed at one apiserver URL directly (bypassing a load balancer).
    pub fn for_url(&self, url: &str) -> Result<Api, KubeError> {
        let mut c = self.config.clone();
        c.cluster_url = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| KubeError::NoConfig(format!("{url}: {e}")))?;
        let client = Client::try_from(c.clone()).map_err(|e| KubeError::NoConfig(e.to_string()))?;
        let writer = writer(&c)?;
        Ok(Api {
            client,
            writer,
            url: url.trim_end_matches('/').to_string(),
            config: c,
        })
    }

    /// GET a path; returns status and body text.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String), KubeError> {
        let req = http::Request::get(path)
            .body(kube::client::Body::empty())
            .map_err(|e| self.err(e))?;
        let resp = self.client.send(req).await.map_err(|e| self.err(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.err(e))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn err(&self, e: impl std::fmt::Display) -> KubeError {
        KubeError::Request {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }
}

/// Where a group resource lives in the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPath {
    /// The API group; empty for the core group (`/api`).
    pub group: String,
    /// The version atrest writes through: the group's preferred one when it serves the resource.
    pub version: String,
    /// The resource name in the URL (`secrets`).
    pub plural: String,
    /// Whether objects live in a namespace (and the URL names it).
    pub namespaced: bool,
}

impl ApiPath {
    /// The `apiVersion` objects at this path carry: `v1`, `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `/api/v1/namespaces/ns/secrets/name` or `/apis/g/v/plural/name`.
    pub fn object_url(&self, namespace: Option<&str>, name: &str) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!(
                "{base}/namespaces/{}/{}/{}",
                encode(ns),
                self.plural,
                encode(name)
            ),
            _ => format!("{base}/{}/{}", self.plural, encode(name)),
        }
    }
}

/// Percent-encodes a path segment (object names may hold `:` and, for some kinds, more).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The versions an `APIGroup` discovery document (`GET /apis/<group>`) lists.
pub(crate) fn group_versions(group: &serde_json::Value) -> Vec<String> {
    group["versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["version"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Finds the preferred version of a group resource through API discovery.
pub async fn discover(api: &Api, gr: &GroupResource) -> Result<ApiPath, KubeError> {
    let fail = |message: String| KubeError::Discovery {
        url: api.url.clone(),
        resource: gr.to_string(),
        message,
    };
    // events.k8s.io events are stored as core events; write them through the core API.
    let group = if gr.group == "events.k8s.io" {
        ""
    } else {
        gr.group.as_str()
    };
    let versions: Vec<String> = if group.is_empty() {
        vec!["v1".to_string()]
    } else {
        let (status, body) = api.get_text(&format!("/apis/{group}")).await?;
        if status != 200 {
            return Err(fail(format!("GET /apis/{group} answered {status}")));
        }
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| fail(e.to_string()))?;
        let preferred = v["preferredVersion"]["version"]
            .as_str()
            .map(str::to_string);
        let mut all = group_versions(&v);
        if let Some(p) = preferred {
            all.retain(|x| *x != p);
            all.insert(0, p);
        }
        all
    };
    for version in versions {
        let path = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let (status, body) = api.get_text(&path).await?;
        if status != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| fail(e.to_string()))?;
        if let Some(r) = v["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == gr.resource.as_str()))
        {
            return Ok(ApiPath {
                group: group.to_string(),
                version,
                plural: gr.resource.clone(),
                namespaced: r["namespaced"].as_bool().unwrap_or(true),
            });
        }
    }
    Err(fail("no served version lists it".into()))
}
