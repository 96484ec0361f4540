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
pub mod archive {
    use std::path::Path;
    use std::sync::Arc;

    use zeroize::Zeroizing;

    use std::fmt::Write;

    use super::{Key, KeyProvider, yaml};
    use crate::fsutil;

    /// Why the key archive could not be read or written.
    #[derive(Debug, thiserror::Error)]
    pub enum ArchiveError {
        /// The archive file is missing, unreadable or not a key archive.
        #[error("cannot read key archive {path}: {message}")]
        Read {
            /// The archive file.
            path: String,
            /// What went wrong.
            message: String,
        },
        /// One entry is malformed or its secret does not make a valid key.
        #[error("key archive {path}: entry {index} ({name}): {message}")]
        Entry {
            /// The archive file.
            path: String,
            /// The entry's position in `keys`, from 0.
            index: usize,
            /// The entry's key name.
            name: String,
            /// What is wrong with it.
            message: String,
        },
        /// The archive could not be written.
        #[error(transparent)]
        Write(#[from] fsutil::WriteError),
    }

    /// What the archive file says about one key (the secret stays inside the file).
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
    pub struct ArchivedKey {
        /// The provider the key belonged to.
        pub provider: KeyProvider,
        /// The key's name, as it appeared in the config and in stored values' prefixes.
        pub name: String,
        /// Fingerprint of the key bytes, to match against earlier reports.
        pub fingerprint: String,
        /// When it was archived (RFC 3339).
        pub retired: String,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(rename = "apiVersion")]
        _api_version: String,
        #[serde(rename = "kind")]
        _kind: String,
        // Required: atrest never writes an archive without its list, so a file cut before
        // `keys:` is damaged, not an empty archive.
        keys: Vec<Entry>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        provider: KeyProvider,
        name: String,
        secret: Zeroizing<String>,
        fingerprint: String,
        retired: String,
    }

    fn read(path: &Path) -> Result<Vec<Entry>, ArchiveError> {
        let err = |message: String| ArchiveError::Read {
            path: path.display().to_string(),
            message,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let options = serde_saphyr::options! { with_snippet: false };
        // The parser's message may quote a damaged line, and a line of this file may hold a
        // key: say only that it does not read.
        let file: File = serde_saphyr::from_str_with_options(&text, options).map_err(|_| {
            err(
                "not a key archive atrest wrote (damaged or truncated?); restore it from a \
                 copy of the state folder"
                    .to_string(),
            )
        })?;
        Ok(file.keys)
    }

    /// The archived keys, ready to decrypt with; each is checked against its fingerprint.
    pub fn load(path: &Path) -> Result<Vec<Arc<Key>>, ArchiveError> {
        let mut out = Vec::new();
        for (index, e) in read(path)?.into_iter().enumerate() {
            let fail = |message: String| ArchiveError::Entry {
                path: path.display().to_string(),
                index,
                name: e.name.clone(),
                message,
            };
            let material = super::decode_secret(&e.secret)
                .ok_or_else(|| fail("secret is not base64".into()))?;
            let key =
                Key::new(e.name.clone(), e.provider, material).map_err(|x| fail(x.to_string()))?;
            if key.fingerprint() != e.fingerprint {
                return Err(fail(format!(
                    "fingerprint {} does not match the secret ({})",
                    e.fingerprint,
                    key.fingerprint()
                )));
            }
            out.push(Arc::new(key));
        }
        Ok(out)
    }

    /// Names, fingerprints and retirement dates; no material.
    pub fn list(path: &Path) -> Result<Vec<ArchivedKey>, ArchiveError> {
        Ok(read(path)?
            .into_iter()
            .map(|e| ArchivedKey {
                provider: e.provider,
                name: e.name,
                fingerprint: e.fingerprint,
                retired: e.retired,
            })
            .collect())
    }

    /// Adds keys (skipping fingerprints already archived) and rewrites the file atomically, 0600.
    pub fn append(path: &Path, keys: &[Arc<Key>], retired: &str) -> Result<(), ArchiveError> {
        let mut existing = if path.exists() {
            read(path)?
        } else {
            Vec::new()
        };
        for k in keys {
            if existing.iter().any(|e| e.fingerprint == k.fingerprint()) {
                continue;
            }
            existing.push(Entry {
                provider: k.provider(),
                name: k.name().to_string(),
                secret: k.secret_base64(),
                fingerprint: k.fingerprint().to_string(),
                retired: retired.to_string(),
            });
        }
        let text = yaml::render(|y| {
            y.raw(
                "# atrest key archive: retired encryption keys, kept so that etcd snapshots taken before a\n# rotation stay readable. Mode 0600; never share it.\napiVersion: atrest/v1\nkind: KeyArchive\nkeys:\n",
            );
            for e in &existing {
                let _ = write!(y, "  - provider: {}\n    name: ", e.provider.name());
                y.quoted(&e.name);
                y.raw("\n    secret: ");
                y.quoted(&e.secret);
                y.raw("\n    fingerprint: ");
                y.quoted(&e.fingerprint);
                y.raw("\n    retired: ");
                y.quoted(&e.retired);
                y.raw("\n");
            }
        });
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| fsutil::WriteError {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        fsutil::write_atomic(path, text.as_bytes(), 0o600)?;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn archive_round_trips_and_lists_without_material() {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("key-archive.yaml");
            let k = Arc::new(Key::generate("old:1", KeyProvider::Aescbc).unwrap());
            append(&p, std::slice::from_ref(&k), "2026-11-27T00:00:00Z").unwrap();
            append(&p, std::slice::from_ref(&k), "2026-11-28T00:00:00Z").unwrap();
            let loaded = load(&p).unwrap();
            assert_eq!(loaded.len(), 1);
            assert_eq!(loaded[0].fingerprint(), k.fingerprint());
            let listed = list(&p).unwrap();
            assert_eq!(listed[0].retired, "2026-11-27T00:00:00Z");
            assert!(!format!("{listed:?}").contains(k.secret_base64().as_str()));
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
