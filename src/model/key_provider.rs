//! The local-key providers of an EncryptionConfiguration.

use std::fmt;

/// The providers that hold local keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProvider {
    /// `aescbc`: AES-CBC without integrity; upstream no longer recommends it (padding oracle).
    Aescbc,
    /// `aesgcm`: AES-GCM with random nonces, so each key needs rotating before about 200,000
    /// writes (lint AR003); the full etcd key is its associated data.
    Aesgcm,
    /// `secretbox`: NaCl secretbox (XSalsa20-Poly1305), 32-byte keys only.
    Secretbox,
}

impl KeyProvider {
    /// The provider's name as written in the config (`aescbc`).
    pub fn name(self) -> &'static str {
        match self {
            KeyProvider::Aescbc => "aescbc",
            KeyProvider::Aesgcm => "aesgcm",
            KeyProvider::Secretbox => "secretbox",
        }
    }

    /// Key lengths the apiserver accepts (`validation_encryption.go`).
    pub fn allowed_lengths(self) -> &'static [usize] {
        match self {
            KeyProvider::Aescbc | KeyProvider::Aesgcm => &[16, 24, 32],
            KeyProvider::Secretbox => &[32],
        }
    }

    /// The on-disk prefix before the key name (`k8s:enc:aescbc:v1:`).
    pub fn prefix(self) -> &'static str {
        match self {
            KeyProvider::Aescbc => "k8s:enc:aescbc:v1:",
            KeyProvider::Aesgcm => "k8s:enc:aesgcm:v1:",
            KeyProvider::Secretbox => "k8s:enc:secretbox:v1:",
        }
    }
}

impl fmt::Display for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
