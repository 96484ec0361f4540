//! What a stored value is, decided the way the apiserver's read path decides it (docs/design.md#read-path):
//! walk the resource's providers in config order, and within each its keys in order; every
//! candidate whose prefix matches is tried; the first that opens wins, and anything but the
//! first candidate is stale.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::cipher::{self, OpenError};
use super::kms;
use super::object::{ObjectInfo, PayloadKind, object_info, payload_kind};
use crate::config::{KmsVersion, Provider, Resolved};
use crate::keys::Key;
use crate::model::KeyProvider;
pub use crate::model::State;
use crate::model::{KeyLabel, Verdict};

/// Every encrypted value starts with this; identity refuses to read it.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// Why a KMS plugin could not be asked: the caller's own error type, kept whole.
pub type KmsFailure = Box<dyn std::error::Error + Send + Sync>;

/// A future returned by [`KmsUnwrap::prefetch`].
pub type Prefetch<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), KmsFailure>> + Send + 'a>>;

/// Asks a KMS plugin to unwrap a DEK (or seed). Implemented by the KMS client; the codec only
/// needs the answer.
pub trait KmsUnwrap: Send + Sync {
    /// KMS v2 provider name → the key ID its plugin reports now (values on another are stale).
    /// None known by default.
    fn current_key_ids(&self) -> HashMap<String, String> {
        HashMap::new()
    }
    /// Asks the plugin for this value's DEK (or DEK source) ahead of classification, once per
    /// DEK, so that classifying stays synchronous. Connection failures are errors; a plugin
    /// refusing one DEK is not (that value is reported undecryptable). Nothing to fetch by
    /// default.
    fn prefetch<'a>(&'a self, _value: &'a [u8]) -> Prefetch<'a> {
        Box::pin(async { Ok(()) })
    }
    /// Unwraps a KMS v2 DEK or seed through the provider's plugin; the error is the plugin's
    /// message.
    fn unwrap_v2(
        &self,
        provider: &str,
        obj: &kms::EncryptedObject,
    ) -> Result<Zeroizing<Vec<u8>>, String>;
    /// `None` when this unwrapper cannot ask a KMS v1 plugin: the value stays unverified
    /// (state kms) rather than undecryptable.
    fn unwrap_v1(
        &self,
        provider: &str,
        encrypted_dek: &[u8],
    ) -> Option<Result<Zeroizing<Vec<u8>>, String>>;
}

/// What a classification may do beyond reading prefixes: decrypt, decode metadata, ask KMS plugins.
#[derive(Default)]
pub struct ClassifyOptions<'a> {
    /// Decrypt every value; without it, values are classified by prefix, key name and shape.
    pub verify: bool,
    /// Decode name, namespace, uid and creation time when the plaintext is at hand.
    pub want_info: bool,
    /// KMS v2 provider name → the key ID its plugin reports now (for the stale rule).
    pub kms_key_ids: HashMap<String, String>,
    /// Unwraps KMS DEKs when `verify` is on.
    pub kms: Option<&'a dyn KmsUnwrap>,
}

/// How values are classified: the codec options plus where keys beyond the config come from.
#[derive(Default)]
pub struct ClassifyConfig<'a> {
    /// Whether to decrypt (`verify`), decode metadata, and the KMS key IDs the stale rule compares
    /// with.
    pub options: ClassifyOptions<'a>,
    /// Retired keys tried last (`--key-archive`).
    pub archive: Vec<Arc<Key>>,
    /// KMS plugins to unwrap DEK sources with when verifying.
    pub plugins: Option<&'a dyn KmsUnwrap>,
}

impl<'a> ClassifyConfig<'a> {
    /// When verifying with KMS plugins: unwraps each distinct KMS v2 DEK source among `values`
    /// once, before they are classified one by one.
    pub async fn prefetch<'v>(
        &self,
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> Result<(), KmsFailure> {
        if let (true, Some(plugins)) = (self.options.verify, self.plugins) {
            for v in values {
                plugins.prefetch(v).await?;
            }
        }
        Ok(())
    }

    /// ClassifyOptions consistent with `plugins`: their current key IDs (for the stale rule) and, when
    /// verifying, the plugins as the unwrapper.
    pub fn new<K: KmsUnwrap>(
        verify: bool,
        want_info: bool,
        plugins: Option<&'a K>,
        archive: Vec<Arc<Key>>,
    ) -> Self {
        let plugins = plugins.map(|p| p as &dyn KmsUnwrap);
        Self {
            options: ClassifyOptions {
                verify,
                want_info,
                kms_key_ids: plugins.map(|p| p.current_key_ids()).unwrap_or_default(),
                kms: plugins,
            },
            archive,
            plugins,
        }
    }
}

/// What a KMS value says about itself, without asking the plugin.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KmsDetail {
    /// KMS v1 or v2, from the value's prefix.
    pub version: KmsVersion,
    /// The KMS provider's `name` in the config, from the value's prefix.
    pub provider: String,
    /// KMS v2 only.
    pub key_id: Option<String>,
    /// KMS v2 only: 0 = AES_GCM_KEY, 1 = HKDF_SHA256_XNONCE_AES_GCM_SEED.
    pub dek_source_type: Option<i32>,
    /// KMS v2 only: the plugin's ciphertext of the DEK source (to unwrap each one once).
    #[serde(skip)]
    pub encrypted_dek_source: Vec<u8>,
}

/// What one stored value is and what the apiserver would make of it. Never holds plaintext or key
/// material.
#[derive(Clone, Debug)]
pub struct Classification<'t> {
    /// `identity`, `aescbc:key1`, `kms:v2:name`; for unknown keys what the value names.
    pub label: Cow<'t, KeyLabel>,
    /// What the value is: plaintext, encrypted with a configured key, unknown key, corrupt.
    pub state: State,
    /// Read by the resource's first provider and first key: what new writes use.
    pub write_key: bool,
    /// The apiserver's stale flag: an unchanged write would re-encrypt it.
    pub stale: bool,
    /// The value was actually decrypted (or is plaintext).
    pub verified: bool,
    /// The apiserver can read it with this config.
    pub apiserver_readable: bool,
    /// How the object inside is serialized, when its plaintext was seen.
    pub payload: Option<PayloadKind>,
    /// For KMS values: the provider, and for v2 the key ID and DEK source type.
    pub kms: Option<KmsDetail>,
    /// Name, namespace, uid and creation time, when asked for and the plaintext was seen.
    pub info: Option<ObjectInfo>,
    /// Why it did not open; never contains key material.
    pub detail: Option<String>,
}

impl Classification<'_> {
    /// Stored with the resource's write key and not stale: nothing to rewrite.
    pub fn on_write_key(&self) -> bool {
        self.write_key && !self.stale
    }

    /// What the value means for its resource (the one place it is decided: [`Verdict::of`]).
    pub fn verdict(&self) -> Verdict {
        Verdict::of(self.state, self.on_write_key(), self.apiserver_readable)
    }

    /// An unchanged write through the apiserver would rewrite it
    /// ([`crate::model::needs_rewrite`]).
    pub fn needs_rewrite(&self) -> bool {
        crate::model::needs_rewrite(self.state, self.on_write_key(), self.apiserver_readable)
    }

    /// To rewrite, or unreadable by the apiserver ([`crate::model::needs_attention`]).
    pub fn needs_attention(&self) -> bool {
        crate::model::needs_attention(self.needs_rewrite(), self.verdict())
    }
}

#[derive(Debug)]
enum CandidateKind {
    Identity,
    Key(Arc<Key>),
    Kms { version: KmsVersion, name: String },
}

#[derive(Debug)]
struct Candidate {
    prefix: Vec<u8>,
    label: KeyLabel,
    /// Position in the provider list, and of the key within it; `usize::MAX` for archive keys.
    provider_index: usize,
    key_index: usize,
    kind: CandidateKind,
}

/// A resource's providers flattened into the candidates the read path tries, built once per
/// resource and reused for every value.
#[derive(Debug)]
pub struct ProviderTable {
    candidates: Vec<Candidate>,
    write_key: KeyLabel,
}

impl ProviderTable {
    /// The read path of one resource, as the apiserver builds it from the resolved config.
    pub fn new(resolved: &Resolved) -> Self {
        Self::with_archive(resolved, &[])
    }

    /// Archived (retired) keys are tried last, so that old snapshots still open.
    pub fn with_archive(resolved: &Resolved, archive: &[Arc<Key>]) -> Self {
        let mut candidates = Vec::new();
        if resolved.entries.is_empty() {
            candidates.push(identity_candidate(0));
        }
        for (i, entry) in resolved.entries.iter().enumerate() {
            match &entry.provider {
                Provider::Identity => candidates.push(identity_candidate(i)),
                Provider::Keys { provider, keys } => {
                    for (j, k) in keys.iter().enumerate() {
                        candidates.push(key_candidate(*provider, k, i, j));
                    }
                }
                Provider::Kms(k) => candidates.push(Candidate {
                    prefix: k.prefix().into_bytes(),
                    label: KeyLabel::kms(k.version, &k.name),
                    provider_index: i,
                    key_index: 0,
                    kind: CandidateKind::Kms {
                        version: k.version,
                        name: k.name.clone(),
                    },
                }),
            }
        }
        for k in archive {
            candidates.push(key_candidate(k.provider(), k, usize::MAX, usize::MAX));
        }
        Self {
            candidates,
            write_key: resolved.write_key(),
        }
    }

    /// The key new writes of this resource get.
    pub fn write_key(&self) -> &KeyLabel {
        &self.write_key
    }

    /// The plaintext of a value the apiserver reads with this config without a KMS plugin:
    /// stored as plaintext (identity), or under a local key (aescbc, aesgcm, secretbox). `None`
    /// for KMS values, unknown keys and values that do not open. Re-encryption sends such a
    /// value back unchanged; the apiserver decrypts and re-encrypts it the same way.
    pub fn open(&self, etcd_key: &[u8], value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let c = self
            .candidates
            .iter()
            .filter(|c| c.provider_index != usize::MAX)
            .find(|c| match c.kind {
                CandidateKind::Identity => !value.starts_with(ENCRYPTED_PREFIX),
                _ => value.starts_with(&c.prefix),
            })?;
        let plaintext = match &c.kind {
            CandidateKind::Identity => Zeroizing::new(value.to_vec()),
            CandidateKind::Key(k) => cipher::open(k, etcd_key, &value[c.prefix.len()..]).ok()?,
            CandidateKind::Kms { .. } => return None,
        };
        // CBC is unauthenticated: only a Kubernetes object counts as opened.
        (payload_kind(&plaintext) != PayloadKind::Unknown).then_some(plaintext)
    }

    /// Classifies one value. `etcd_key` is the full key: the AAD of aesgcm and KMS.
    pub fn classify(
        &self,
        etcd_key: &[u8],
        value: &[u8],
        opts: &ClassifyOptions<'_>,
    ) -> Classification<'_> {
        let mut first_failure: Option<(&Candidate, OpenError)> = None;
        let mut all_malformed = true;
        for c in &self.candidates {
            let attempt = match &c.kind {
                CandidateKind::Identity => {
                    if value.starts_with(ENCRYPTED_PREFIX) {
                        continue;
                    }
                    let mut r = success(c, State::Plaintext, true, value, opts);
                    r.payload = Some(payload_kind(value));
                    return r;
                }
                _ if !value.starts_with(&c.prefix) => continue,
                CandidateKind::Key(k) => {
                    self.try_key(c, k, etcd_key, &value[c.prefix.len()..], opts)
                }
                CandidateKind::Kms { version, name } => {
                    try_kms(c, *version, name, etcd_key, &value[c.prefix.len()..], opts)
                }
            };
            match attempt {
                Ok(r) => return r,
                Err(e) => {
                    all_malformed &= matches!(e, OpenError::Malformed(_));
                    if first_failure.is_none() {
                        first_failure = Some((c, e));
                    }
                }
            }
        }
        match first_failure {
            Some((c, e)) => failed(
                Cow::Borrowed(&c.label),
                if all_malformed {
                    State::Corrupt
                } else {
                    State::Undecryptable
                },
                e,
            ),
            None if value.starts_with(ENCRYPTED_PREFIX) => failed(
                Cow::Owned(foreign_label(value)),
                State::UnknownKey,
                OpenError::Rejected(
                    "no provider or key of this resource matches the value's prefix",
                ),
            ),
            None => {
                // Plaintext, but the resource has no identity provider to read it with.
                let mut r = failed(
                    Cow::Owned(KeyLabel::Identity),
                    State::Plaintext,
                    OpenError::Rejected(
                        "stored as plaintext but the config has no identity provider for this resource",
                    ),
                );
                r.verified = true;
                r.payload = Some(payload_kind(value));
                if opts.want_info {
                    r.info = object_info(value);
                }
                r
            }
        }
    }

    fn try_key<'t>(
        &'t self,
        c: &'t Candidate,
        key: &Key,
        etcd_key: &[u8],
        payload: &[u8],
        opts: &ClassifyOptions<'_>,
    ) -> Result<Classification<'t>, OpenError> {
        if !opts.verify {
            cipher::check_shape(key.provider(), payload)?;
            return Ok(success(c, State::EncryptedOk, false, &[], opts));
        }
        let plaintext = cipher::open(key, etcd_key, payload)?;
        let kind = payload_kind(&plaintext);
        // CBC is unauthenticated: a wrong key can pass the padding check by chance.
        if key.provider() == KeyProvider::Aescbc && kind == PayloadKind::Unknown {
            return Err(OpenError::Rejected(
                "decrypted payload is not a Kubernetes object (wrong key)",
            ));
        }
        let mut r = success(c, State::EncryptedOk, true, &plaintext, opts);
        r.payload = Some(kind);
        Ok(r)
    }
}

fn identity_candidate(i: usize) -> Candidate {
    Candidate {
        prefix: Vec::new(),
        label: KeyLabel::Identity,
        provider_index: i,
        key_index: 0,
        kind: CandidateKind::Identity,
    }
}

fn key_candidate(provider: KeyProvider, k: &Arc<Key>, i: usize, j: usize) -> Candidate {
    Candidate {
        prefix: format!("{}{}:", provider.prefix(), k.name()).into_bytes(),
        label: KeyLabel::key(provider, k.name()),
        provider_index: i,
        key_index: j,
        kind: CandidateKind::Key(Arc::clone(k)),
    }
}

fn success<'t>(
    c: &'t Candidate,
    state: State,
    verified: bool,
    plaintext: &[u8],
    opts: &ClassifyOptions<'_>,
) -> Classification<'t> {
    let first = c.provider_index == 0 && c.key_index == 0;
    Classification {
        label: Cow::Borrowed(&c.label),
        state,
        write_key: first,
        stale: !first,
        verified,
        apiserver_readable: c.provider_index != usize::MAX,
        payload: None,
        kms: None,
        info: if opts.want_info && verified {
            object_info(plaintext)
        } else {
            None
        },
        detail: None,
    }
}

fn failed(label: Cow<'_, KeyLabel>, state: State, e: OpenError) -> Classification<'_> {
    let detail = match e {
        OpenError::Malformed(m) | OpenError::Rejected(m) => m.to_string(),
    };
    Classification {
        label,
        state,
        write_key: false,
        stale: true,
        verified: false,
        apiserver_readable: false,
        payload: None,
        kms: None,
        info: None,
        detail: Some(detail),
    }
}

fn try_kms<'t>(
    c: &'t Candidate,
    version: KmsVersion,
    name: &str,
    etcd_key: &[u8],
    payload: &[u8],
    opts: &ClassifyOptions<'_>,
) -> Result<Classification<'t>, OpenError> {
    let unwrapper = opts.kms.filter(|_| opts.verify);
    let (detail, opened, inner_stale) = match version {
        KmsVersion::V1 => {
            let env = kms::parse_v1(payload)?;
            let detail = KmsDetail {
                version,
                provider: name.to_string(),
                key_id: None,
                dek_source_type: None,
                encrypted_dek_source: Vec::new(),
            };
            match unwrapper.and_then(|u| u.unwrap_v1(name, env.encrypted_dek)) {
                None => (detail, None, false),
                Some(dek) => {
                    let dek = dek.map_err(|_| {
                        OpenError::Rejected("the KMS plugin could not unwrap the DEK")
                    })?;
                    let (pt, cbc) = kms::open_v1(&dek, etcd_key, env.data)?;
                    (detail, Some(pt), cbc)
                }
            }
        }
        KmsVersion::V2 => {
            let obj = kms::parse_v2(payload)?;
            let key_changed = opts
                .kms_key_ids
                .get(name)
                .is_some_and(|current| *current != obj.key_id);
            let opened = match unwrapper {
                None => None,
                Some(u) => {
                    let source = u.unwrap_v2(name, &obj).map_err(|_| {
                        OpenError::Rejected("the KMS plugin could not unwrap the DEK source")
                    })?;
                    Some(kms::open_v2(&obj, &source, etcd_key)?)
                }
            };
            let detail = KmsDetail {
                version,
                provider: name.to_string(),
                key_id: Some(obj.key_id),
                dek_source_type: Some(obj.encrypted_dek_source_type),
                encrypted_dek_source: obj.encrypted_dek_source,
            };
            (detail, opened, key_changed)
        }
    };
    let mut r = match &opened {
        Some(pt) => {
            let mut r = success(c, State::EncryptedOk, true, pt, opts);
            r.payload = Some(payload_kind(pt));
            r
        }
        None => success(c, State::Kms, false, &[], opts),
    };
    r.stale |= inner_stale;
    r.kms = Some(detail);
    Ok(r)
}

/// Best-effort name of a prefix atrest does not know: `aescbc:key9`, `kms:v2:other`.
fn foreign_label(value: &[u8]) -> KeyLabel {
    let text = foreign_label_text(value);
    text.parse().unwrap_or(KeyLabel::Unknown(text))
}

fn foreign_label_text(value: &[u8]) -> String {
    let rest = &value[ENCRYPTED_PREFIX.len()..];
    let text: String = rest
        .iter()
        .take(200)
        .take_while(|b| b.is_ascii_graphic())
        .map(|b| *b as char)
        .collect();
    let parts: Vec<&str> = text.splitn(4, ':').collect();
    match parts.as_slice() {
        [p @ ("aescbc" | "aesgcm" | "secretbox"), "v1", name, _] => format!("{p}:{name}"),
        ["kms", v @ ("v1" | "v2"), name, _] => format!("kms:{v}:{name}"),
        [p, ..] if !p.is_empty() => format!("unknown:{p}"),
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    fn table(yaml: &str, resource: &str) -> ProviderTable {
        let cfg = parse_str(Path::new("t.yaml"), yaml).unwrap();
        ProviderTable::new(&cfg.resolve(&crate::GroupResource::parse(resource)))
    }

    #[test]
    fn foreign_labels() {
        assert_eq!(foreign_label(b"k8s:enc:aescbc:v1:key9:xyz"), "aescbc:key9");
        assert_eq!(
            foreign_label(b"k8s:enc:kms:v2:other:\x0a\x01"),
            "kms:v2:other"
        );
        assert_eq!(
            foreign_label(b"k8s:enc:zzz:v9"),
            KeyLabel::Unknown("unknown:zzz".into())
        );
        assert_eq!(
            foreign_label(b"k8s:enc:"),
            KeyLabel::Unknown("unknown".into())
        );
    }

    #[test]
    fn default_is_identity_that_refuses_encrypted_values() {
        let t = table(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [configmaps]\n  providers: [{identity: {}}]\n",
            "secrets",
        );
        let opts = ClassifyOptions::default();
        let r = t.classify(b"/registry/secrets/a/b", b"k8s\x00xx", &opts);
        assert_eq!(
            (r.state, r.write_key, r.stale),
            (State::Plaintext, true, false)
        );
        let r = t.classify(b"/registry/secrets/a/b", b"k8s:enc:aescbc:v1:k:xx", &opts);
        assert_eq!(r.state, State::UnknownKey);
        assert_eq!(*r.label, "aescbc:k");
    }
}
