//! KMS plugins: gRPC over the unix socket named in the config. atrest asks a KMS v2 plugin for
//! its current key ID (`Status`, for the apiserver's stale rule) and, when verifying, to unwrap
//! each distinct DEK source once (`Decrypt`); a KMS v1 plugin that still answers the v1beta1 API
//! unwraps v1 DEKs the same way. The data itself is decrypted locally.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use crate::codec::KmsUnwrap;
use crate::codec::kms::pb::key_management_service_client::KeyManagementServiceClient;
use crate::codec::kms::pb::{DecryptRequest, StatusRequest};
use crate::codec::kms::{EncryptedObject, parse_v1, parse_v2};
use crate::config::{EncryptionConfig, KmsVersion, Provider};

/// Generated from `proto/kmsv1/service.proto`.
#[allow(missing_docs, unreachable_pub, unused_qualifications)]
mod v1pb {
    include!(concat!(env!("OUT_DIR"), "/v1beta1.rs"));
}
use v1pb::key_management_service_client::KeyManagementServiceClient as V1Client;

/// The stored-value prefixes of KMS providers (the provider name and `:` follow).
pub const V2_PREFIX: &[u8] = b"k8s:enc:kms:v2:";
/// The KMS v1 counterpart of [`V2_PREFIX`].
pub const V1_PREFIX: &[u8] = b"k8s:enc:kms:v1:";

/// At most this many unwrapped DEKs (or DEK sources) are kept. A scan prefetches a page's DEKs
/// before classifying it, so the cap stays above the scan's largest page (5000 keys): every
/// DEK of the page being classified is still cached, and each is unwrapped once per page at most.
pub const DEK_CACHE_ENTRIES: usize = 8192;

/// Why a KMS plugin could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The plugin's socket does not connect, or the plugin does not answer (`Status`, `Version`,
    /// or `Decrypt` unavailable or timed out): its values cannot be checked.
    #[error("the KMS plugin of provider {provider:?} at {endpoint} is unreachable: {message}")]
    Unreachable {
        /// The KMS provider name in the config.
        provider: String,
        /// The plugin's socket, as the config names it.
        endpoint: String,
        /// What the connection or call said.
        message: String,
    },
}

/// Why a stored KMS value's DEK is not available to decrypt it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    /// The plugin answered `Decrypt` with an error for this DEK.
    #[error("the KMS plugin of provider {provider:?} refused to decrypt the DEK: {message}")]
    Refused {
        /// The KMS provider name in the config.
        provider: String,
        /// The plugin's error message.
        message: String,
    },
    /// No `Decrypt` was made for it (not prefetched, or evicted before use).
    #[error("the DEK of provider {provider:?} was not unwrapped")]
    NotUnwrapped {
        /// The KMS provider name in the config.
        provider: String,
    },
}

/// Whether a KMS plugin that cannot be reached stops the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// Values must be opened: an unreachable plugin is an error.
    Fatal,
    /// KMS values are classified by provider and key ID without it: a warning.
    Warn,
}

/// The KMS plugins of a config, connected.
pub struct Connected {
    /// `None` when the config has no KMS provider.
    pub plugins: Option<KmsPlugins>,
    /// Plugins that could not be reached (only with [`Unreachable::Warn`]).
    pub warnings: Vec<KmsError>,
}

/// Connects the config's KMS plugins; an unreachable one is an error or a warning, as asked.
pub async fn connect_plugins(
    config: &EncryptionConfig,
    unreachable: Unreachable,
) -> Result<Connected, KmsError> {
    if KmsPlugins::providers(config).is_empty() {
        return Ok(Connected {
            plugins: None,
            warnings: Vec::new(),
        });
    }
    let (plugins, mut errors) = KmsPlugins::connect(config).await;
    if unreachable == Unreachable::Fatal && !errors.is_empty() {
        return Err(errors.swap_remove(0));
    }
    Ok(Connected {
        plugins: Some(plugins),
        warnings: errors,
    })
}

/// What a KMS v2 plugin's `Status` said.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PluginStatus {
    /// The KMS provider name in the config.
    pub provider: String,
    /// The plugin's socket.
    pub endpoint: String,
    /// The API version its `Status` reports.
    pub version: String,
    /// `ok` when the plugin is healthy; anything else blocks promoting it.
    pub healthz: String,
    /// The key ID it encrypts new DEKs with now; values on another one are stale.
    pub key_id: String,
}

/// How long one call to a KMS plugin may take before the plugin counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What to say when `s` means the plugin is not there (down, or no answer in time), as opposed
/// to a plugin that answered and refused: a frozen plugin must never make values look
/// undecryptable.
fn unreachable_message(s: &tonic::Status) -> Option<String> {
    let no_answer = || {
        format!(
            "no answer within {} s (the plugin is stopped, frozen or overloaded)",
            CALL_TIMEOUT.as_secs()
        )
    };
    match s.code() {
        tonic::Code::Unavailable => Some(s.message().to_string()),
        tonic::Code::DeadlineExceeded => Some(no_answer()),
        // tonic reports its own request timeout as Cancelled("Timeout expired").
        tonic::Code::Cancelled => Some(no_answer()),
        _ => None,
    }
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
        .timeout(CALL_TIMEOUT)
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

enum Client {
    V2(KeyManagementServiceClient<Channel>),
    V1(V1Client<Channel>),
}

struct Plugin {
    endpoint: String,
    client: Client,
}

impl Plugin {
    /// One `Decrypt` of a DEK (v1, `key.2`) or DEK source (v2, `v2`). `None` when the plugin
    /// speaks the other API version. The plugin refusing is a result; the plugin down is an
    /// error.
    async fn decrypt(
        &self,
        provider: &str,
        key: &SourceKey,
        v2: Option<EncryptedObject>,
    ) -> Result<Option<Unwrapped>, KmsError> {
        let failed = |s: tonic::Status| {
            if let Some(message) = unreachable_message(&s) {
                Err(KmsError::Unreachable {
                    provider: provider.into(),
                    endpoint: self.endpoint.clone(),
                    message,
                })
            } else {
                Ok(Some(Err(UnwrapError::Refused {
                    provider: provider.into(),
                    message: s.message().to_string(),
                })))
            }
        };
        match (&self.client, v2) {
            (Client::V2(c), Some(obj)) => {
                let req = DecryptRequest {
                    ciphertext: obj.encrypted_dek_source,
                    uid: String::new(),
                    key_id: obj.key_id,
                    annotations: obj.annotations,
                };
                match c.clone().decrypt(req).await {
                    Ok(r) => Ok(Some(Ok(Zeroizing::new(r.into_inner().plaintext)))),
                    Err(s) => failed(s),
                }
            }
            (Client::V1(c), None) => {
                let req = v1pb::DecryptRequest {
                    version: "v1beta1".into(),
                    cipher: key.2.clone(),
                };
                match c.clone().decrypt(req).await {
                    Ok(r) => Ok(Some(Ok(Zeroizing::new(r.into_inner().plain)))),
                    Err(s) => failed(s),
                }
            }
            _ => Ok(None),
        }
    }
}

/// The cache key of a stored KMS value (after `k8s:enc:kms:vN:<provider>:`), and for v2 the
/// parsed object the `Decrypt` request needs. `None` when the value does not parse.
fn source_key(
    provider: &str,
    version: KmsVersion,
    rest: &[u8],
) -> Option<(SourceKey, Option<EncryptedObject>)> {
    match version {
        KmsVersion::V2 => {
            let obj = parse_v2(rest).ok()?;
            let key = (
                provider.to_string(),
                obj.key_id.clone(),
                obj.encrypted_dek_source.clone(),
            );
            Some((key, Some(obj)))
        }
        KmsVersion::V1 => {
            let env = parse_v1(rest).ok()?;
            let key = (
                provider.to_string(),
                String::new(),
                env.encrypted_dek.to_vec(),
            );
            Some((key, None))
        }
    }
}

/// (provider, key ID — empty for v1, encrypted DEK or DEK source) → the unwrapped bytes, or why
/// the plugin refused.
type SourceKey = (String, String, Vec<u8>);
type Unwrapped = Result<Zeroizing<Vec<u8>>, UnwrapError>;

/// A least-recently-used map of unwrapped DEKs, bounded by count. Evicted material is wiped
/// (the values are [`Zeroizing`]).
struct DekCache {
    cap: usize,
    tick: u64,
    entries: HashMap<SourceKey, (Unwrapped, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, SourceKey>,
}

impl DekCache {
    fn new(cap: usize) -> Self {
        DekCache {
            cap: cap.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry, marked as used now.
    fn get(&mut self, key: &SourceKey) -> Option<&Unwrapped> {
        self.tick += 1;
        let tick = self.tick;
        let (value, used) = self.entries.get_mut(key)?;
        if let Some(k) = self.order.remove(used) {
            self.order.insert(tick, k);
        }
        *used = tick;
        Some(value)
    }

    fn insert(&mut self, key: SourceKey, value: Unwrapped) {
        self.tick += 1;
        if let Some((_, used)) = self.entries.remove(&key) {
            self.order.remove(&used);
        }
        while self.entries.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            // Dropping the value wipes the DEK.
            self.entries.remove(&oldest);
        }
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (value, self.tick));
    }
}

/// Connects to one KMS plugin and asks it `Status` (v2, whose answer is kept) or `Version` (v1).
/// `None`: a v1 plugin without the v1beta1 API, which is skipped.
async fn connect_one(
    provider: &str,
    version: KmsVersion,
    endpoint: &str,
) -> Result<Option<(Client, Option<PluginStatus>)>, KmsError> {
    let unreachable = |message: String| KmsError::Unreachable {
        provider: provider.to_string(),
        endpoint: endpoint.to_string(),
        message,
    };
    let failed = |e: &tonic::Status| {
        unreachable(unreachable_message(e).unwrap_or_else(|| e.message().to_string()))
    };
    let ch = channel(endpoint).await.map_err(unreachable)?;
    match version {
        KmsVersion::V2 => {
            let mut client = KeyManagementServiceClient::new(ch);
            let r = match client.status(StatusRequest {}).await {
                Ok(r) => r.into_inner(),
                Err(e) => return Err(failed(&e)),
            };
            let status = PluginStatus {
                provider: provider.to_string(),
                endpoint: endpoint.to_string(),
                version: r.version,
                healthz: r.healthz,
                key_id: r.key_id,
            };
            Ok(Some((Client::V2(client), Some(status))))
        }
        KmsVersion::V1 => {
            let mut client = V1Client::new(ch);
            match client
                .version(v1pb::VersionRequest {
                    version: "v1beta1".into(),
                })
                .await
            {
                Ok(_) => Ok(Some((Client::V1(client), None))),
                Err(e) if e.code() == tonic::Code::Unimplemented => Ok(None),
                Err(e) => Err(failed(&e)),
            }
        }
    }
}

/// Every KMS plugin of a config that answered, with a cache of unwrapped DEKs.
pub struct KmsPlugins {
    plugins: HashMap<String, Plugin>,
    /// Provider → (API version, endpoint), also for plugins that could not be reached.
    endpoints: HashMap<String, (KmsVersion, String)>,
    status: HashMap<String, PluginStatus>,
    cache: Mutex<DekCache>,
}

impl KmsPlugins {
    /// The KMS providers of a config: name → (API version, endpoint).
    pub fn providers(config: &EncryptionConfig) -> HashMap<String, (KmsVersion, String)> {
        let mut out = HashMap::new();
        for rule in &config.rules {
            for p in &rule.providers {
                if let Provider::Kms(k) = p {
                    out.insert(k.name.clone(), (k.version, k.endpoint.clone()));
                }
            }
        }
        out
    }

    /// Connects to every KMS plugin: `Status` for v2, `Version` for v1. A v1 plugin that does not
    /// implement the v1beta1 API is skipped (its values stay unverified); unreachable plugins are
    /// returned as errors beside the (partial) set, so a caller decides whether that is fatal.
    pub async fn connect(config: &EncryptionConfig) -> (KmsPlugins, Vec<KmsError>) {
        let endpoints = Self::providers(config);
        let mut plugins = HashMap::new();
        let mut status = HashMap::new();
        let mut errors = Vec::new();
        for (provider, (version, endpoint)) in &endpoints {
            let (client, plugin_status) = match connect_one(provider, *version, endpoint).await {
                Ok(Some(connected)) => connected,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Some(s) = plugin_status {
                status.insert(provider.clone(), s);
            }
            plugins.insert(
                provider.clone(),
                Plugin {
                    endpoint: endpoint.clone(),
                    client,
                },
            );
        }
        (
            KmsPlugins {
                plugins,
                endpoints,
                status,
                cache: Mutex::new(DekCache::new(DEK_CACHE_ENTRIES)),
            },
            errors,
        )
    }

    /// KMS v2 provider → the key ID its plugin reports now.
    pub fn current_key_ids(&self) -> HashMap<String, String> {
        self.status
            .iter()
            .map(|(p, s)| (p.clone(), s.key_id.clone()))
            .collect()
    }

    /// What each KMS v2 plugin's `Status` said at connection, sorted by provider.
    pub fn status(&self) -> Vec<PluginStatus> {
        let mut v: Vec<PluginStatus> = self.status.values().cloned().collect();
        v.sort_by(|a, b| a.provider.cmp(&b.provider));
        v
    }

    /// Which configured provider a stored KMS value names, with the rest of the value.
    fn provider_of<'v>(&self, value: &'v [u8]) -> Option<(&str, KmsVersion, &'v [u8])> {
        // v1 names may contain ':', so match the configured names rather than split.
        self.endpoints.iter().find_map(|(name, (version, _))| {
            let prefix = match version {
                KmsVersion::V2 => V2_PREFIX,
                KmsVersion::V1 => V1_PREFIX,
            };
            let rest = value
                .strip_prefix(prefix)?
                .strip_prefix(name.as_bytes())?
                .strip_prefix(b":")?;
            Some((name.as_str(), *version, rest))
        })
    }

    /// Unwraps the DEK (or DEK source) of a stored KMS value once; later values with the same
    /// one hit the cache. Connection failures are errors; a plugin refusing one DEK is not
    /// (that value is reported undecryptable).
    pub async fn prefetch(&self, value: &[u8]) -> Result<(), KmsError> {
        let Some((provider, version, rest)) = self.provider_of(value) else {
            return Ok(());
        };
        let Some((key, v2)) = source_key(provider, version, rest) else {
            return Ok(());
        };
        if self
            .cache
            .lock()
            .map(|mut c| c.get(&key).is_some())
            .unwrap_or(false)
        {
            return Ok(());
        }
        let Some(plugin) = self.plugins.get(provider) else {
            return match (version, self.endpoints.get(provider)) {
                // Not connected: for v2 the values cannot be checked at all.
                (KmsVersion::V2, Some((_, endpoint))) => Err(KmsError::Unreachable {
                    provider: provider.into(),
                    endpoint: endpoint.clone(),
                    message: "not connected".into(),
                }),
                // A v1 plugin that does not answer the v1beta1 API: values stay unverified.
                _ => Ok(()),
            };
        };
        let Some(result) = plugin.decrypt(provider, &key, v2).await? else {
            return Ok(());
        };
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, result);
        }
        Ok(())
    }

    fn cached(&self, key: SourceKey) -> Unwrapped {
        let provider = key.0.clone();
        match self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).cloned())
        {
            Some(r) => r,
            None => Err(UnwrapError::NotUnwrapped { provider }),
        }
    }
}

impl KmsUnwrap for KmsPlugins {
    fn current_key_ids(&self) -> HashMap<String, String> {
        KmsPlugins::current_key_ids(self)
    }

    fn prefetch<'a>(&'a self, value: &'a [u8]) -> crate::codec::Prefetch<'a> {
        Box::pin(async move {
            KmsPlugins::prefetch(self, value)
                .await
                .map_err(crate::codec::KmsFailure::from)
        })
    }

    fn unwrap_v2(
        &self,
        provider: &str,
        obj: &EncryptedObject,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        self.cached((
            provider.to_string(),
            obj.key_id.clone(),
            obj.encrypted_dek_source.clone(),
        ))
        .map_err(|e| e.to_string())
    }

    fn unwrap_v1(
        &self,
        provider: &str,
        encrypted_dek: &[u8],
    ) -> Option<Result<Zeroizing<Vec<u8>>, String>> {
        match self.plugins.get(provider).map(|p| &p.client) {
            Some(Client::V1(_)) => Some(
                self.cached((provider.to_string(), String::new(), encrypted_dek.to_vec()))
                    .map_err(|e| e.to_string()),
            ),
            // No plugin answering the v1beta1 API: the value stays unverified (state kms).
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
