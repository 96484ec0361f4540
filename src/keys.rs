//! Key material: the only type in atrest that holds it.
//!
//! A [`Key`] cannot be printed, serialized or cloned by accident: `Debug` and `Display` show the
//! name and fingerprint only, the bytes are wiped on drop, and the base64 form is handed out only
//! as a [`Zeroizing`] string for the two places that need it (writing the config file, and
//! `atrest keys generate`, where the admin asked to see it).

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::model::KeyProvider;

pub mod custody;
pub mod signing;
pub mod yaml;

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits tolerated.
const GO_STD_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

/// Decodes a key the way the apiserver does (`base64.StdEncoding`, which skips `\r` and `\n`).
pub fn decode_secret(secret: &str) -> Option<Zeroizing<Vec<u8>>> {
    // Sized up front: a growing buffer would free unzeroed copies of the key as it reallocates.
    let mut cleaned = Zeroizing::new(String::with_capacity(secret.len()));
    cleaned.extend(secret.chars().filter(|c| *c != '\r' && *c != '\n'));
    GO_STD_BASE64
        .decode(cleaned.as_bytes())
        .ok()
        .map(Zeroizing::new)
}

/// Length of newly generated keys: 32 bytes (AES-256, and the only secretbox size).
pub const NEW_KEY_LEN: usize = 32;

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS random generator failed, so no key was generated.
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
    /// The decoded secret has a length this provider does not accept; the apiserver would refuse it
    /// too.
    #[error(
        "key {name:?}: secret is not of the expected length, got {got}, expected one of {expected:?}"
    )]
    Length {
        /// The key's name in the config.
        name: String,
        /// The decoded length in bytes.
        got: usize,
        /// The lengths this provider accepts.
        expected: &'static [usize],
    },
}

/// A named key of one provider. See the module docs for what it refuses to do.
pub struct Key {
    name: String,
    provider: KeyProvider,
    material: Zeroizing<Vec<u8>>,
    fingerprint: String,
}

impl Key {
    /// Takes ownership of raw key bytes; checks the provider's allowed lengths.
    pub fn new(
        name: impl Into<String>,
        provider: KeyProvider,
        material: Zeroizing<Vec<u8>>,
    ) -> Result<Self, KeyError> {
        let name = name.into();
        if !provider.allowed_lengths().contains(&material.len()) {
            return Err(KeyError::Length {
                name,
                got: material.len(),
                expected: provider.allowed_lengths(),
            });
        }
        let fingerprint = fingerprint(&material);
        Ok(Self {
            name,
            provider,
            material,
            fingerprint,
        })
    }

    /// A new 32-byte key from the OS CSPRNG.
    pub fn generate(name: impl Into<String>, provider: KeyProvider) -> Result<Self, KeyError> {
        let mut material = Zeroizing::new(vec![0u8; NEW_KEY_LEN]);
        getrandom::fill(&mut material).map_err(|e| KeyError::Random(e.to_string()))?;
        Self::new(name, provider, material)
    }

    /// The key's name in the config; also part of the prefix of every value it encrypts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The provider this key belongs to.
    pub fn provider(&self) -> KeyProvider {
        self.provider
    }

    /// `sha256:` and the first 16 hex digits of SHA-256 over the raw key bytes.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The raw bytes, for the codecs only.
    pub(crate) fn material(&self) -> &[u8] {
        &self.material
    }

    /// The base64 form used in the config file's `secret` field.
    pub fn secret_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*self.material))
    }
}

/// The documented fingerprint: `sha256:` + first 16 hex digits of SHA-256(raw key).
pub fn fingerprint(material: &[u8]) -> String {
    let digest = Sha256::digest(material);
    format!("sha256:{}", &hex::encode(digest)[..16])
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.provider, self.name, self.fingerprint)
    }
}

/// A name for a new key that sorts by time and says where it came from.
pub fn new_key_name(now: chrono::DateTime<chrono::Utc>) -> String {
    format!("key-{}", now.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_material() {
        let material = Zeroizing::new(vec![0xabu8; 32]);
        let key = Key::new("k1", KeyProvider::Aescbc, material).unwrap();
        let b64 = key.secret_base64();
        for shown in [format!("{key:?}"), format!("{key}"), format!("{key:#?}")] {
            assert!(!shown.contains(b64.as_str()), "{shown}");
            assert!(!shown.to_lowercase().contains("abab"), "{shown}");
            assert!(shown.contains("k1"));
            assert!(shown.contains(key.fingerprint()));
        }
    }

    #[test]
    fn fingerprint_is_documented_form() {
        // sha256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(fingerprint(b""), "sha256:e3b0c44298fc1c14");
    }

    #[test]
    fn generated_keys_are_32_random_bytes() {
        let a = Key::generate("a", KeyProvider::Secretbox).unwrap();
        let b = Key::generate("b", KeyProvider::Secretbox).unwrap();
        assert_eq!(a.material().len(), 32);
        assert_ne!(a.material(), b.material());
    }

    #[test]
    fn wrong_length_is_refused_without_echoing() {
        let err = Key::new("k", KeyProvider::Secretbox, Zeroizing::new(vec![7u8; 16])).unwrap_err();
        let msg = format!("{err} {err:?}");
        assert!(msg.contains("got 16"), "{msg}");
        assert!(msg.contains("[32]"), "{msg}");
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        for form in [b64.as_str(), &b64[..12], "07070707"] {
            assert!(!msg.contains(form), "key material {form} in {msg}");
        }
    }
}

/// The key archive: retired keys kept (mode 0600, beside atrest's state, never printed) so that
/// an etcd snapshot taken before a rotation can still be read. `atrest rotate prune` moves keys
/// here; `atrest scan --key-archive FILE` tries them after the config's keys.
pub mod archive;
