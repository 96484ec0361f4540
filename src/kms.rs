//! KMS v2 plugins: gRPC over the unix socket named in the config. atrest asks a plugin for its
//! current key ID (`Status`, for the apiserver's stale rule) and, when verifying, to unwrap
//! each distinct DEK source once (`Decrypt`); the data itself is decrypted locally.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use crate::codec::KmsUnwrap;
use crate::codec::kms::pb::key_management_service_client::KeyManagementServiceClient;
use crate::codec::kms::pb::{DecryptRequest, StatusRequest};
use crate::codec::kms::{EncryptedObject, parse_v2};
use crate::config::{EncryptionConfig, KmsVersion, Provider};

/// The stored-value prefix of every KMS v2 provider.
pub const V2_PREFIX: &[u8] = b"k8s:enc:kms:v2:";

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error(
        "the KMS plugin of provider {provider:?} at {endpoint} is unreachable: {message}\n  without --verify, KMS values are still classified by provider and key ID"
    )]
    Unreachable {
        provider: String,
        endpoint: String,
        message: String,
    },
    #[error("KMS plugin {provider:?}: {message}")]
    Refused { provider: String, message: String },
}

/// What a plugin's `Status` said.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PluginStatus {
    pub provider: String,
    pub endpoint: String,
    pub version: String,
    pub healthz: String,
    pub key_id: String,
}

/// Connects to a unix-socket gRPC endpoint (`unix:///path`, or `unix:///@name` for a Linux
/// abstract socket, as `util.ParseEndpoint` reads them).
async fn channel(endpoint: &str) -> Result<Channel, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .ok_or_else(|| format!("{endpoint}: only unix:// endpoints are supported"))?
        .to_string();
    Endpoint::try_from("http://kms.local")
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(connect_unix(&path)?)) }
        }))
        .await
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })
}

fn connect_unix(path: &str) -> std::io::Result<tokio::net::UnixStream> {
    let std_stream = match path.strip_prefix("/@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            std::os::unix::net::UnixStream::connect_addr(&addr)?
        }
        None => std::os::unix::net::UnixStream::connect(path)?,
    };
    std_stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(std_stream)
}

struct Plugin {
    endpoint: String,
    client: KeyManagementServiceClient<Channel>,
}

/// (provider, key ID, encrypted DEK source) → the unwrapped source, or why the plugin refused.
type SourceKey = (String, String, Vec<u8>);
type Unwrapped = Result<Zeroizing<Vec<u8>>, String>;

/// Every KMS v2 plugin of a config, with a cache of unwrapped DEK sources.
pub struct KmsPlugins {
    plugins: HashMap<String, Plugin>,
    /// Provider → endpoint, also for plugins that could not be reached.
    endpoints: HashMap<String, String>,
    status: HashMap<String, PluginStatus>,
    cache: Mutex<HashMap<SourceKey, Unwrapped>>,
}

impl KmsPlugins {
    /// The KMS v2 providers of a config: provider name → endpoint.
    pub fn providers(config: &EncryptionConfig) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for rule in &config.rules {
            for p in &rule.providers {
                if let Provider::Kms(k) = p
                    && k.version == KmsVersion::V2
                {
                    out.insert(k.name.clone(), k.endpoint.clone());
                }
            }
        }
        out
    }

    /// Connects to every KMS v2 plugin and asks its `Status`. Unreachable plugins are returned
    /// as errors beside the (partial) set, so a caller decides whether that is fatal.
    pub async fn connect(config: &EncryptionConfig) -> (KmsPlugins, Vec<KmsError>) {
        let endpoints = Self::providers(config);
        let mut plugins = HashMap::new();
        let mut status = HashMap::new();
        let mut errors = Vec::new();
        for (provider, endpoint) in &endpoints {
            let unreachable = |message: String| KmsError::Unreachable {
                provider: provider.clone(),
                endpoint: endpoint.clone(),
                message,
            };
            let ch = match channel(endpoint).await {
                Ok(c) => c,
                Err(m) => {
                    errors.push(unreachable(m));
                    continue;
                }
            };
            let mut client = KeyManagementServiceClient::new(ch);
            match client.status(StatusRequest {}).await {
                Ok(r) => {
                    let r = r.into_inner();
                    status.insert(
                        provider.clone(),
                        PluginStatus {
                            provider: provider.clone(),
                            endpoint: endpoint.clone(),
                            version: r.version,
                            healthz: r.healthz,
                            key_id: r.key_id,
                        },
                    );
                    plugins.insert(
                        provider.clone(),
                        Plugin {
                            endpoint: endpoint.clone(),
                            client,
                        },
                    );
                }
                Err(e) => errors.push(unreachable(e.message().to_string())),
            }
        }
        (
            KmsPlugins {
                plugins,
                endpoints,
                status,
                cache: Mutex::new(HashMap::new()),
            },
            errors,
        )
    }

    /// Provider → the key ID its plugin reports now.
    pub fn current_key_ids(&self) -> HashMap<String, String> {
        self.status
            .iter()
            .map(|(p, s)| (p.clone(), s.key_id.clone()))
            .collect()
    }

    pub fn status(&self) -> Vec<PluginStatus> {
        let mut v: Vec<PluginStatus> = self.status.values().cloned().collect();
        v.sort_by(|a, b| a.provider.cmp(&b.provider));
        v
    }

    /// Unwraps the DEK source of a stored KMS v2 value once (later values with the same source
    /// hit the cache). Connection failures are errors; a plugin refusing one source is not
    /// (that value is reported undecryptable).
    pub async fn prefetch(&self, value: &[u8]) -> Result<(), KmsError> {
        let Some(rest) = value.strip_prefix(V2_PREFIX) else {
            return Ok(());
        };
        let Some(colon) = rest.iter().position(|b| *b == b':') else {
            return Ok(());
        };
        let provider = String::from_utf8_lossy(&rest[..colon]).into_owned();
        let Ok(obj) = parse_v2(&rest[colon + 1..]) else {
            return Ok(());
        };
        let key: SourceKey = (
            provider.clone(),
            obj.key_id.clone(),
            obj.encrypted_dek_source.clone(),
        );
        if self
            .cache
            .lock()
            .map(|c| c.contains_key(&key))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let Some(plugin) = self.plugins.get(&provider) else {
            return match self.endpoints.get(&provider) {
                Some(endpoint) => Err(KmsError::Unreachable {
                    provider,
                    endpoint: endpoint.clone(),
                    message: "not connected".into(),
                }),
                // A provider the config does not have: the classifier reports the value.
                None => Ok(()),
            };
        };
        let mut client = plugin.client.clone();
        let req = DecryptRequest {
            ciphertext: obj.encrypted_dek_source.clone(),
            uid: String::new(),
            key_id: obj.key_id.clone(),
            annotations: obj.annotations.clone(),
        };
        let result = match client.decrypt(req).await {
            Ok(r) => Ok(Zeroizing::new(r.into_inner().plaintext)),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                return Err(KmsError::Unreachable {
                    provider,
                    endpoint: plugin.endpoint.clone(),
                    message: s.message().to_string(),
                });
            }
            Err(s) => Err(s.message().to_string()),
        };
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, result);
        }
        Ok(())
    }

    /// How many distinct DEK sources were unwrapped.
    pub fn unwrapped(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }
}

impl KmsUnwrap for KmsPlugins {
    fn unwrap_v2(
        &self,
        provider: &str,
        obj: &EncryptedObject,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let key: SourceKey = (
            provider.to_string(),
            obj.key_id.clone(),
            obj.encrypted_dek_source.clone(),
        );
        match self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            Some(r) => r,
            None => Err("the DEK source was not unwrapped".into()),
        }
    }

    fn unwrap_v1(&self, _provider: &str, _encrypted_dek: &[u8]) -> Option<Unwrapped> {
        // KMS v1 (off by default since 1.29) is classified, not unwrapped: atrest speaks the v2 API.
        None
    }
}
