//! The file as written: serde types that mirror `apiserver.config.k8s.io/v1`
//! `EncryptionConfiguration` field for field, decoded strictly (unknown or duplicate fields are
//! errors, as with the apiserver's strict decoder).

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The whole file, as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `apiVersion`: `apiserver.config.k8s.io/v1`, or the legacy `v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// `kind`: `EncryptionConfiguration`, or the legacy `EncryptionConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `resources[]`: the rules, in file order.
    #[serde(default)]
    pub resources: Vec<RawResource>,
}

/// One `resources[]` entry, as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    /// Group resources the rule covers (`secrets`, `*.apps`, `*.*`).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Providers in order: the first one writes.
    #[serde(default)]
    pub providers: Vec<RawProvider>,
}

/// One list element; the apiserver requires exactly one field to be set.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// `aesgcm` with its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm: Option<RawKeys>,
    /// `aescbc` with its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbc: Option<RawKeys>,
    /// `secretbox` with its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretbox: Option<RawKeys>,
    /// `identity`: no encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<RawIdentity>,
    /// `kms`: an external KMS through a plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<RawKms>,
}

/// The `keys` list of an aes or secretbox provider.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// Keys in order: the first writes, all are tried when reading.
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

/// One `keys[]` entry.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// The key's name; it appears in the prefix of every value the key encrypts.
    #[serde(default)]
    pub name: String,
    /// The base64 key; never printed.
    #[serde(default)]
    pub secret: SecretString,
}

/// `identity: {}`: it has no fields.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {}

/// A `kms` provider, as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKms {
    /// `apiVersion`: `v1` (deprecated) or `v2`; absent means v1.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// The provider's name; part of every stored value's prefix, so it must not change.
    #[serde(default)]
    pub name: String,
    /// The plugin's socket, `unix:///path`.
    #[serde(default)]
    pub endpoint: String,
    /// KMS v1 only: how many DEKs the apiserver caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cachesize: Option<i32>,
    /// How long the apiserver waits for the plugin (`3s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A base64 key as it appears in the file: wiped on drop, never shown by `Debug`.
#[derive(Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretString(pub Zeroizing<String>);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(REDACTED)")
    }
}
