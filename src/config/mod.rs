//! The kube-apiserver `EncryptionConfiguration`: strict parsing, the apiserver's own validation,
//! provider resolution per group resource, lint findings, and the edits a rotation makes.

mod edit;
mod lint;
mod parse;
pub mod raw;
mod resolve;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::keys::decode_secret;
pub use edit::{
    EditError, RotationTarget, RuleLayout, add_read_key, describe_diff, layout, promote, remove,
    render_yaml, rules_for,
};
pub use lint::{Finding, Severity, lint, lint_file_mode};
pub use parse::{parse_bytes, parse_str};
pub use resolve::{MatchedBy, ProviderEntry, Resolved};
pub use validate::FieldError;

use crate::keys::{Key, KeyProvider};
use crate::model::KeyLabel;

/// Which schema the file declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// `apiserver.config.k8s.io/v1`, `EncryptionConfiguration`.
    V1,
    /// The legacy `v1`, `EncryptionConfig` the apiserver still accepts.
    LegacyV1,
}

/// A validated configuration: what the apiserver would load.
#[derive(Clone, Debug)]
pub struct EncryptionConfig {
    pub schema: Schema,
    pub rules: Vec<ResourceRule>,
}

/// One `resources[]` entry.
#[derive(Clone, Debug)]
pub struct ResourceRule {
    pub resources: Vec<String>,
    pub providers: Vec<Provider>,
}

#[derive(Clone, Debug)]
pub enum Provider {
    Identity,
    /// aescbc, aesgcm or secretbox with its keys in config order (the first one writes).
    Keys {
        provider: KeyProvider,
        keys: Vec<Arc<Key>>,
    },
    Kms(KmsProvider),
}

pub use crate::model::KmsVersion;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsProvider {
    pub version: KmsVersion,
    pub name: String,
    pub endpoint: String,
    /// As written (v1 only); `None` means the default of 1000.
    pub cachesize: Option<i32>,
    /// As written (`3s`); `None` means the default of 3s.
    pub timeout: Option<String>,
}

impl KmsProvider {
    /// The on-disk prefix `k8s:enc:kms:v2:<name>:`.
    pub fn prefix(&self) -> String {
        format!("k8s:enc:kms:{}:{}:", self.version_str(), self.name)
    }

    pub fn version_str(&self) -> &'static str {
        self.version.as_str()
    }
}

impl Provider {
    /// `identity`, `aescbc`, `aesgcm`, `secretbox` or `kms`.
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Identity => "identity",
            Provider::Keys { provider, .. } => provider.name(),
            Provider::Kms(_) => "kms",
        }
    }

    /// The key this provider writes with: `aescbc:key1`, `kms:v2:name`, `identity`.
    pub fn write_key(&self) -> KeyLabel {
        match self {
            Provider::Identity => KeyLabel::Identity,
            Provider::Keys { provider, keys } => match keys.first() {
                Some(k) => KeyLabel::key(*provider, k.name()),
                // Validation refuses an empty key list; named after the provider all the same.
                None => KeyLabel::key(*provider, ""),
            },
            Provider::Kms(k) => KeyLabel::kms(k.version, &k.name),
        }
    }

    /// Every key this provider can read, in the order the apiserver tries them.
    pub fn read_keys(&self) -> Vec<KeyLabel> {
        match self {
            Provider::Keys { provider, keys } => keys
                .iter()
                .map(|k| KeyLabel::key(*provider, k.name()))
                .collect(),
            _ => vec![self.write_key()],
        }
    }

    /// [`Provider::write_key`] as text.
    pub fn write_label(&self) -> String {
        self.write_key().to_string()
    }

    /// [`Provider::read_keys`] as text.
    pub fn read_labels(&self) -> Vec<String> {
        self.read_keys().iter().map(ToString::to_string).collect()
    }
}

/// `aescbc:key1`: how atrest names a stored value's key everywhere (scan, report, checkpoint).
pub fn key_label(provider: KeyProvider, name: &str) -> String {
    KeyLabel::key(provider, name).to_string()
}

/// `kms:v2:name`.
pub fn kms_label(version: KmsVersion, name: &str) -> String {
    KeyLabel::kms(version, name).to_string()
}

/// Why a config file could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read encryption provider configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encryption provider configuration file {path:?} is empty")]
    Empty { path: PathBuf },
    #[error("{path}: {message}")]
    Decode {
        path: PathBuf,
        /// The field path the decoder stopped at, when known.
        field: Option<String>,
        message: String,
    },
    #[error("{path}: invalid EncryptionConfiguration:\n{}", format_field_errors(.errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

fn format_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A config file as loaded from disk, with what atrest needs to know about the file itself.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub path: PathBuf,
    /// `sha256:<hex>` of the exact file bytes: what the apiserver reports in
    /// `apiserver_encryption_config_controller_last_config_info{hash=…}`.
    pub hash: String,
    pub config: EncryptionConfig,
    pub file: FileInfo,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FileInfo {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// The apiserver's config hash: `sha256:` + hex of SHA-256 over the file bytes.
pub fn config_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Reads, strictly decodes and validates a config file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = parse_bytes(path, &bytes)?;
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        hash: config_hash(&bytes),
        config,
        file: FileInfo {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
        },
    })
}
