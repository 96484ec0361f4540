//! The Ed25519 key that signs a report's evidence (`atrest keys signing-key`, `report --sign`):
//! PKCS#8 PEM on disk (0600, what OpenSSL and securesystemslib read), zeroized in memory, never
//! printed. The public key is a SubjectPublicKeyInfo PEM for auditors to verify with.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::fsutil::{self, WriteError};

/// Why a signing key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not an Ed25519 key in PEM (PKCS#8 for a private key, SubjectPublicKeyInfo for a public
    /// one).
    #[error("{path} is not an Ed25519 {what} in PEM ({expected})")]
    Format {
        /// The file.
        path: PathBuf,
        /// `private key` or `public key`.
        what: &'static str,
        /// The header expected.
        expected: &'static str,
    },
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
    /// The key file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: WriteError,
    },
    /// The file exists: a signing key is never overwritten.
    #[error(
        "{0} exists: atrest never overwrites a signing key (remove it first, or choose another path)"
    )]
    Exists(PathBuf),
}

/// An Ed25519 signing key. `Debug` shows only its key ID.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

/// An Ed25519 public key that verifies what a [`SigningKey`] signed.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
}

/// How envelopes name the key that signed them: the key ID securesystemslib, in-toto and TUF
/// compute (hex SHA-256 of the key's canonical JSON), so their verifiers match it unaided.
fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
        hex::encode(key.as_bytes())
    );
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

impl SigningKey {
    /// A new key from the system's random source.
    pub fn generate() -> Result<SigningKey, SigningError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(SigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the key as PKCS#8 PEM, mode 0600, refusing to replace an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), SigningError> {
        if path.exists() {
            return Err(SigningError::Exists(path.to_path_buf()));
        }
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| SigningError::Random("PKCS#8 encoding failed".into()))?;
        fsutil::write_atomic(path, pem.as_bytes(), 0o600).map_err(|source| SigningError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn load(path: &Path) -> Result<SigningKey, SigningError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| SigningError::Read {
                    path: path.to_path_buf(),
                    source,
                })?,
            );
        let key =
            ed25519_dalek::SigningKey::from_pkcs8_pem(&text).map_err(|_| SigningError::Format {
                path: path.to_path_buf(),
                what: "private key",
                expected: "-----BEGIN PRIVATE KEY-----, as `atrest keys signing-key` writes",
            })?;
        Ok(SigningKey { key })
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// The key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// Reads a SubjectPublicKeyInfo PEM Ed25519 public key.
    pub fn load(path: &Path) -> Result<PublicKey, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&text).map_err(|_| {
            SigningError::Format {
                path: path.to_path_buf(),
                what: "public key",
                expected: "-----BEGIN PUBLIC KEY-----, as `atrest keys signing-key` prints",
            }
        })?;
        Ok(PublicKey { key })
    }

    /// The securesystemslib key ID (hex SHA-256 of the key's canonical JSON).
    pub fn key_id(&self) -> String {
        key_id(&self.key)
    }

    /// The raw 32-byte key, hex (what securesystemslib's `keyval.public` holds).
    pub fn hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_id", &self.key_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_pem_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sign.pem");
        let key = SigningKey::generate().unwrap();
        key.write_new(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(key.write_new(&path), Err(SigningError::Exists(_))));
        let back = SigningKey::load(&path).unwrap();
        assert_eq!(back.public(), key.public());
        let sig = back.sign(b"evidence");
        let pub_path = dir.path().join("sign.pub");
        std::fs::write(&pub_path, key.public().to_pem()).unwrap();
        let public = PublicKey::load(&pub_path).unwrap();
        assert!(public.verifies(b"evidence", &sig));
        assert!(!public.verifies(b"evidencf", &sig));
        // Debug names the key by its ID only.
        let debug = format!("{key:?}");
        assert!(debug.contains(&public.key_id()), "{debug}");
        let pem = std::fs::read_to_string(&path).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..20]), "{debug}");
        assert!(matches!(
            PublicKey::load(&path),
            Err(SigningError::Format {
                what: "public key",
                ..
            })
        ));
    }
}
