//! A key named by what is known of it, never by its material.

use super::KeyLabel;

/// One key atrest found, by label and fingerprint, and where it is kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownKey {
    /// `aescbc:key1`, `kms:v2:vault`.
    pub label: KeyLabel,
    /// `sha256:` + 16 hex digits of the key bytes; `None` for KMS (the key lives in the plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Where it is: `the config, rule resources[0] (secrets)`, `key archive …/key-archive.yaml
    /// (retired …)`, `config backup …`, `rotation state (retired …; no copy of the key)`.
    pub source: String,
    /// The KMS plugin's endpoint, for KMS providers found in a config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl KnownKey {
    /// `sha256:… (where)`, as every output names a key.
    pub fn describe(&self) -> String {
        match &self.fingerprint {
            Some(f) => format!("{f}, {}", self.source),
            None => self.source.clone(),
        }
    }
}
