//! The file as written: serde types that mirror `apiserver.config.k8s.io/v1`
//! `EncryptionConfiguration` field for field, decoded strictly (unknown or duplicate fields are
//! errors, as with the apiserver's strict decoder).

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub resources: Vec<RawResource>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
}

/// One list element; the apiserver requires exactly one field to be set.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm: Option<RawKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbc: Option<RawKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretbox: Option<RawKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<RawIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<RawKms>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub secret: SecretString,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKms {
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cachesize: Option<i32>,
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
