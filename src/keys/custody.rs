//! Key custody: retired keys and config backups sealed with age to their custodians, so that a
//! copy of the state folder opens nothing. Recipients are public and recorded in the custody
//! file, so rotation seals without any identity. With a threshold K of N, files are sealed to
//! the archive's own X25519 key, whose secret is split K-of-N (Shamir over GF(256)) and each
//! share sealed to one custodian: no custodian alone opens anything.
//!
//! The archive is append-only: one sealed file per prune (`key-archive/*.yaml.age`, each a
//! whole key archive of the keys that prune retired), because adding to a single sealed file
//! would need an identity to open it first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::Key;
use super::archive::{self, ArchiveError, ArchivedKey};
use crate::fsutil;

/// The custody file in the state folder: recipients, threshold, sealed shares (all public).
pub const CUSTODY_FILE: &str = "custody.yaml";
/// The sealed key archive: one age file per prune, in the state folder.
pub const SEALED_ARCHIVE_DIR: &str = "key-archive";
/// What a sealed file's name ends with.
pub const SEALED_SUFFIX: &str = ".age";

/// Why custody could not be set up, a file sealed, or a sealed file opened.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// A recipient is neither an age X25519 recipient nor an SSH public key age accepts.
    #[error(
        "recipient {index} ({shown}) is not an age recipient (age1…) or an SSH public key (ssh-ed25519 …, ssh-rsa …): {message}"
    )]
    Recipient {
        /// Its position among the recipients given, from 1.
        index: usize,
        /// Its first characters.
        shown: String,
        /// Why.
        message: String,
    },
    /// The threshold does not fit the recipients.
    #[error(
        "--seal-threshold {threshold} needs between 2 and {n} recipients' shares: give at least {threshold} --seal-to recipients (got {n}), or leave the threshold out"
    )]
    Threshold {
        /// K.
        threshold: usize,
        /// N.
        n: usize,
    },
    /// The state folder already seals to other recipients.
    #[error(
        "{path} already seals to {have}; atrest does not change custodians silently: move the custody file away after re-sealing, or give the same recipients"
    )]
    Different {
        /// The custody file.
        path: PathBuf,
        /// Its recipients' fingerprints.
        have: String,
    },
    /// The custody file does not read.
    #[error("cannot read custody file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// An identity file does not read.
    #[error("identity file {path}: {message}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why (never the file's content).
        message: String,
    },
    /// A share file does not read.
    #[error("share file {path}: {message}")]
    Share {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Too few shares to open a threshold archive.
    #[error(
        "{have} of the {threshold} shares needed to open files sealed {threshold} of {n} (custodians: {custodians}); have {threshold} custodians each run `atrest keys share-unwrap -i THEIR_IDENTITY`, then pass each share with --share"
    )]
    TooFewShares {
        /// Distinct shares given.
        have: usize,
        /// K.
        threshold: usize,
        /// N.
        n: usize,
        /// The custodians' recipient fingerprints.
        custodians: String,
    },
    /// The shares combined to another key than the archive's.
    #[error(
        "the shares combine to a key other than this archive's ({want}): a share of another custody file, or a damaged one"
    )]
    WrongShares {
        /// The archive recipient's fingerprint.
        want: String,
    },
    /// No identity opens a sealed file.
    #[error(
        "{path}: no identity given opens it ({message}); pass the identity of one of its recipients with -i, or the shares with --share"
    )]
    Open {
        /// The sealed file.
        path: PathBuf,
        /// age's message.
        message: String,
    },
    /// Sealing failed.
    #[error("cannot seal {path}: {message}")]
    Seal {
        /// The file to write.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A sealed file holds no key archive.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
}

/// One custodian's public key, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient(String);

impl Recipient {
    /// Parses an age X25519 recipient or an SSH public key (`index` from 1, for errors).
    pub fn parse(text: &str, index: usize) -> Result<Recipient, CustodyError> {
        let text = text.trim().to_string();
        let r = Recipient(text);
        r.age().map_err(|message| CustodyError::Recipient {
            index,
            shown: r.0.chars().take(24).collect(),
            message,
        })?;
        Ok(r)
    }

    fn age(&self) -> Result<Box<dyn age::Recipient + Send>, String> {
        if self.0.starts_with("age1") {
            self.0
                .parse::<age::x25519::Recipient>()
                .map(|r| Box::new(r) as _)
                .map_err(|e| e.to_string())
        } else {
            self.0
                .parse::<age::ssh::Recipient>()
                .map(|r| Box::new(r) as _)
                .map_err(|e| format!("{e:?}"))
        }
    }

    /// `sha256:` of the recipient text, first 16 hex digits: how reports name a custodian.
    pub fn fingerprint(&self) -> String {
        let full = super::fingerprint(self.0.as_bytes());
        full.chars().take("sha256:".len() + 16).collect()
    }

    /// The recipient as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One custodian's share of the archive key, sealed to that custodian (armored age).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedShare {
    /// The custodian.
    pub recipient: String,
    /// The share, sealed to the custodian.
    pub sealed: String,
}

/// The custody file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Custody {
    /// `atrest/v1`.
    pub api_version: String,
    /// `Custody`.
    pub kind: String,
    /// The custodians.
    pub recipients: Vec<String>,
    /// Shares needed to open (1: any one custodian's identity opens).
    pub threshold: usize,
    /// With a threshold: the archive's own recipient, which sealed files are sealed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_recipient: Option<String>,
    /// With a threshold: each custodian's sealed share of the archive key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<SealedShare>,
    /// What each sealed archive file holds (no material), so reports name retired keys without
    /// opening anything.
    #[serde(default)]
    pub archive: Vec<SealedArchiveFile>,
}

/// One sealed archive file and the keys it holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedArchiveFile {
    /// Its name in [`SEALED_ARCHIVE_DIR`].
    pub file: String,
    /// Its keys: provider, name, fingerprint, when retired.
    pub keys: Vec<ArchivedKey>,
}

impl Custody {
    /// New custody for these recipients: with a threshold of 2 or more, a fresh archive key
    /// split among them.
    pub fn new(recipients: &[String], threshold: Option<usize>) -> Result<Custody, CustodyError> {
        let parsed = recipients
            .iter()
            .enumerate()
            .map(|(i, r)| Recipient::parse(r, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        let n = parsed.len();
        let threshold = threshold.unwrap_or(1);
        if n == 0 || threshold == 0 || threshold > n || (threshold > 1 && n > 255) {
            return Err(CustodyError::Threshold { threshold, n });
        }
        let mut custody = Custody {
            api_version: "atrest/v1".into(),
            kind: "Custody".into(),
            recipients: parsed.iter().map(|r| r.0.clone()).collect(),
            threshold,
            archive_recipient: None,
            shares: Vec::new(),
            archive: Vec::new(),
        };
        if threshold > 1 {
            let key = age::x25519::Identity::generate();
            let secret = key.to_string();
            let dealer = blahaj::Sharks(threshold as u8);
            for (r, share) in parsed
                .iter()
                .zip(dealer.dealer(secret.expose_secret().as_bytes()))
            {
                let bytes = Zeroizing::new(Vec::from(&share));
                let text = Zeroizing::new(share_text(&bytes));
                let sealed = seal_to(std::slice::from_ref(r), text.as_bytes(), true)
                    .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))
                    .map_err(|message| CustodyError::Seal {
                        path: PathBuf::from(CUSTODY_FILE),
                        message,
                    })?;
                custody.shares.push(SealedShare {
                    recipient: r.0.clone(),
                    sealed,
                });
            }
            custody.archive_recipient = Some(key.to_public().to_string());
        }
        Ok(custody)
    }

    /// The state folder's custody file, when there is one.
    pub fn load(state_dir: &Path) -> Result<Option<Custody>, CustodyError> {
        let path = state_dir.join(CUSTODY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::load_file(&path).map(Some)
    }

    /// A custody file.
    pub fn load_file(path: &Path) -> Result<Custody, CustodyError> {
        let err = |message: String| CustodyError::Read {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let c: Custody = serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))?;
        if c.kind != "Custody" {
            return Err(err(format!("kind {:?}, expected Custody", c.kind)));
        }
        Ok(c)
    }

    /// Writes the custody file atomically (0644: it holds nothing secret).
    pub fn save(&self, state_dir: &Path) -> Result<(), CustodyError> {
        let text = serde_saphyr::to_string(self).map_err(|e| CustodyError::Seal {
            path: state_dir.join(CUSTODY_FILE),
            message: e.to_string(),
        })?;
        let text = format!(
            "# atrest custody: who retired keys and config backups are sealed to. Public: no key or\n# share in clear. Open sealed files with `atrest keys unseal -i IDENTITY`.\n{text}"
        );
        std::fs::create_dir_all(state_dir).map_err(|source| fsutil::WriteError {
            path: state_dir.to_path_buf(),
            source,
        })?;
        fsutil::write_atomic(&state_dir.join(CUSTODY_FILE), text.as_bytes(), 0o644)?;
        Ok(())
    }

    /// The recipients' fingerprints, for reports and errors.
    pub fn fingerprints(&self) -> Vec<String> {
        self.recipients
            .iter()
            .map(|r| Recipient(r.clone()).fingerprint())
            .collect()
    }

    /// `2 of 3 custodians (sha256:…, …)` or `any of 2 custodians (…)`.
    pub fn describe(&self) -> String {
        let n = self.recipients.len();
        let who = self.fingerprints().join(", ");
        if self.threshold > 1 {
            format!("sealed {} of {n} custodians ({who})", self.threshold)
        } else {
            format!("sealed to any of {n} custodians ({who})")
        }
    }

    /// Whether `recipients` (and threshold) are the ones this custody seals to.
    pub fn same(&self, recipients: &[String], threshold: Option<usize>) -> bool {
        let mut a: Vec<&str> = self.recipients.iter().map(|r| r.trim()).collect();
        let mut b: Vec<&str> = recipients.iter().map(|r| r.trim()).collect();
        a.sort_unstable();
        b.sort_unstable();
        a == b && threshold.unwrap_or(1) == self.threshold
    }

    fn targets(&self) -> Vec<Recipient> {
        match &self.archive_recipient {
            Some(r) => vec![Recipient(r.clone())],
            None => self
                .recipients
                .iter()
                .map(|r| Recipient(r.clone()))
                .collect(),
        }
    }

    /// Seals `plaintext` to this custody (binary age).
    pub fn seal(&self, path: &Path, plaintext: &[u8]) -> Result<Vec<u8>, CustodyError> {
        seal_to(&self.targets(), plaintext, false).map_err(|message| CustodyError::Seal {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Seals `plaintext` into `path` (atomic, 0600).
    pub fn write_sealed(&self, path: &Path, plaintext: &[u8]) -> Result<(), CustodyError> {
        let sealed = self.seal(path, plaintext)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| fsutil::WriteError {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        fsutil::write_atomic(path, &sealed, 0o600)?;
        Ok(())
    }

    /// Adds `keys` to the sealed archive of `state_dir` as one new file, and records what it
    /// holds in the custody file. Needs no identity.
    pub fn archive_keys(
        &mut self,
        state_dir: &Path,
        keys: &[Arc<Key>],
        retired: &str,
    ) -> Result<(), CustodyError> {
        let known = |k: &Arc<Key>| {
            self.archive
                .iter()
                .flat_map(|f| &f.keys)
                .any(|a| a.fingerprint == k.fingerprint())
        };
        let new: Vec<Arc<Key>> = keys.iter().filter(|k| !known(k)).cloned().collect();
        if new.is_empty() {
            return Ok(());
        }
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let file = format!("{stamp}.yaml{SEALED_SUFFIX}");
        let path = state_dir.join(SEALED_ARCHIVE_DIR).join(&file);
        let text = archive::text_of(&new, retired);
        self.write_sealed(&path, text.as_bytes())?;
        self.archive.push(SealedArchiveFile {
            file,
            keys: archive::list_text(&path, &text)?,
        });
        self.save(state_dir)
    }

    /// Seals a copy of `path` into `backup_dir` as `<file name>.<UTC time>.age` (0600): what a
    /// config backup is under custody.
    pub fn backup(&self, path: &Path, backup_dir: &Path) -> Result<PathBuf, CustodyError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| fsutil::WriteError {
            path: path.to_path_buf(),
            source,
        })?);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config");
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let target = backup_dir.join(format!("{name}.{stamp}{SEALED_SUFFIX}"));
        self.write_sealed(&target, &bytes)?;
        Ok(target)
    }

    /// Every key the sealed archive holds, as recorded (no material).
    pub fn archived(&self) -> Vec<ArchivedKey> {
        self.archive.iter().flat_map(|f| f.keys.clone()).collect()
    }
}

/// The text of a share: `atrest-share-v1:` and its base64 (x coordinate first).
fn share_text(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "atrest-share-v1:{}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Seals `plaintext` to `to`: binary age, or ASCII-armored (for text files such as the
/// custody file's shares).
fn seal_to(to: &[Recipient], plaintext: &[u8], armored: bool) -> Result<Vec<u8>, String> {
    use age::armor::{ArmoredWriter, Format};
    let boxed = to
        .iter()
        .map(Recipient::age)
        .collect::<Result<Vec<_>, _>>()?;
    let enc = age::Encryptor::with_recipients(boxed.iter().map(|r| r.as_ref() as _))
        .map_err(|e| e.to_string())?;
    let format = if armored {
        Format::AsciiArmor
    } else {
        Format::Binary
    };
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let armor = ArmoredWriter::wrap_output(&mut out, format).map_err(|e| e.to_string())?;
    let mut w = enc.wrap_output(armor).map_err(|e| e.to_string())?;
    w.write_all(plaintext).map_err(|e| e.to_string())?;
    w.finish()
        .and_then(|a| a.finish())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

mod folder;
mod open;

pub use folder::{Inventory, Sealed, inventory, seal_state};
pub use open::{Opener, read_identity, sealed_files};

#[cfg(test)]
mod tests;
