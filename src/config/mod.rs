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
    EditError, LayoutKey, RotationTarget, RuleLayout, add_read_key, describe_diff, layout, promote,
    remove, render_yaml, rules_for,
};
pub use lint::{Finding, Severity, lint, lint_file_mode};
pub use parse::{parse_bytes, parse_str};
pub use resolve::{ConfiguredKey, MatchedBy, ProviderEntry, Resolved};
pub use validate::FieldError;

use crate::fsutil::permission_hint;
use crate::keys::Key;
use crate::model::{KeyLabel, KeyProvider};

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
    /// Which `apiVersion`/`kind` the file declared.
    pub schema: Schema,
    /// The `resources[]` rules in file order. A resource uses its exact rule, else `*.<group>`,
    /// else `*.*`, else identity (see [`EncryptionConfig::resolve`]).
    pub rules: Vec<ResourceRule>,
}

/// One `resources[]` entry.
#[derive(Clone, Debug)]
pub struct ResourceRule {
    /// The group resources the rule covers, as written (`secrets`, `*.apps`, `*.*`).
    pub resources: Vec<String>,
    /// Providers in order: the first writes, all of them are tried when reading.
    pub providers: Vec<Provider>,
}

/// One entry of a rule's `providers` list.
#[derive(Clone, Debug)]
pub enum Provider {
    /// `identity`: stores plaintext, and reads any value that is not encrypted.
    Identity,
    /// aescbc, aesgcm or secretbox with its keys in config order (the first one writes).
    Keys {
        /// Which of the three local-key providers.
        provider: KeyProvider,
        /// The keys in config order; the first is the write key.
        keys: Vec<Arc<Key>>,
    },
    /// `kms`: keys live in an external KMS, reached through a plugin on a unix socket.
    Kms(KmsProvider),
}

pub use crate::model::KmsVersion;

/// A `kms` provider entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsProvider {
    /// `apiVersion` of the provider: v1 (deprecated) or v2.
    pub version: KmsVersion,
    /// The provider's `name`; part of the prefix of every value it encrypts.
    pub name: String,
    /// The plugin's gRPC socket, `unix:///path`.
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

    /// `v1` or `v2`, as in the stored prefix.
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
}

/// Why a config file could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read encryption provider configuration {path}: {source}{}",
        permission_hint(source)
    )]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    #[error("encryption provider configuration file {path:?} is empty")]
    /// The file is empty; the apiserver refuses to start with an empty config.
    Empty {
        /// The config file.
        path: PathBuf,
    },
    /// Not UTF-8 YAML or JSON of an `EncryptionConfiguration` (decoded strictly, as the apiserver
    /// does).
    #[error("{path}: {message}")]
    Decode {
        /// The config file.
        path: PathBuf,
        /// The field path the decoder stopped at, when known.
        field: Option<String>,
        /// What the decoder said.
        message: String,
    },
    /// Decoded, but fails the apiserver's validation; the apiserver would refuse to start with it.
    #[error("{path}: invalid EncryptionConfiguration:\n{}", format_field_errors(.errors))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every validation error, as the apiserver words them.
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
    /// Where the file was read from.
    pub path: PathBuf,
    /// `sha256:<hex>` of the exact file bytes: what the apiserver reports in
    /// `apiserver_encryption_config_controller_last_config_info{hash=…}`.
    pub hash: String,
    /// The config as the apiserver would load it.
    pub config: EncryptionConfig,
    /// Mode, owner and size of the file, for the lint that others cannot read it (AR006).
    pub file: FileInfo,
}

/// Mode, owner and size of the config file: it holds key material, so others must not read it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileInfo {
    /// Permission bits (`0o600`).
    pub mode: u32,
    /// Owning user ID.
    pub uid: u32,
    /// Owning group ID.
    pub gid: u32,
    /// Size in bytes.
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
