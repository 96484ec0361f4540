//! Key custody: retired keys and config backups sealed with age to their custodians, so that a
//! copy of the state folder opens nothing. Recipients are public and recorded in the custody
//! file, so rotation seals without any identity. With a threshold K of N, files are sealed to
//! the archive's own X25519 key, whose secret is split K-of-N (Shamir over GF(256)) and each
//! share sealed to one custodian: no custodian alone opens anything.
//!
//! The archive is append-only: one sealed file per prune (`key-archive/*.yaml.age`, each a
//! whole key archive of the keys that prune retired), because adding to a single sealed file
//! would need an identity to open it first.

use std::io::{Read, Write};
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

/// What `atrest keys seal` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Custody was set up now (else it was already there, with the same recipients).
    pub new_custody: bool,
    /// Keys moved from the plaintext archive into the sealed one.
    pub archived_keys: usize,
    /// Plaintext config backups sealed (and removed).
    pub backups: usize,
}

/// Puts the state folder under custody: sets it up with `recipients` (or checks that an
/// existing custody file names the same), seals the plaintext key archive and every plaintext
/// config backup, and only then removes the plaintext forms.
pub fn seal_state(
    state_dir: &Path,
    recipients: &[String],
    threshold: Option<usize>,
) -> Result<Sealed, CustodyError> {
    let mut done = Sealed::default();
    let mut custody = match Custody::load(state_dir)? {
        Some(c) if recipients.is_empty() || c.same(recipients, threshold) => c,
        Some(c) => {
            return Err(CustodyError::Different {
                path: state_dir.join(CUSTODY_FILE),
                have: c.describe(),
            });
        }
        None => {
            let c = Custody::new(recipients, threshold)?;
            c.save(state_dir)?;
            done.new_custody = true;
            c
        }
    };
    let plain = state_dir.join(crate::state::ARCHIVE_FILE);
    if plain.exists() {
        let text = Zeroizing::new(std::fs::read_to_string(&plain).map_err(|source| {
            fsutil::WriteError {
                path: plain.clone(),
                source,
            }
        })?);
        // Checked whole (every key against its fingerprint) before it is sealed.
        let keys = archive::load_text(&plain, &text)?;
        let listed = archive::list_text(&plain, &text)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let file = format!("{stamp}-sealed.yaml{SEALED_SUFFIX}");
        custody.write_sealed(
            &state_dir.join(SEALED_ARCHIVE_DIR).join(&file),
            text.as_bytes(),
        )?;
        custody
            .archive
            .push(SealedArchiveFile { file, keys: listed });
        custody.save(state_dir)?;
        remove(&plain)?;
        done.archived_keys = keys.len();
    }
    let backups = state_dir.join(crate::state::BACKUP_DIR);
    for f in std::fs::read_dir(&backups).into_iter().flatten().flatten() {
        let p = f.path();
        if !p.is_file() || p.to_string_lossy().ends_with(SEALED_SUFFIX) {
            continue;
        }
        let bytes = Zeroizing::new(std::fs::read(&p).map_err(|source| fsutil::WriteError {
            path: p.clone(),
            source,
        })?);
        let mut sealed = p.clone().into_os_string();
        sealed.push(SEALED_SUFFIX);
        custody.write_sealed(Path::new(&sealed), &bytes)?;
        remove(&p)?;
        done.backups += 1;
    }
    Ok(done)
}

/// What opening every sealed file of a state folder found (nothing written).
#[derive(Debug, Default)]
pub struct Inventory {
    /// Each sealed archive file: its keys (no material), or why it did not open.
    pub archive: Vec<(PathBuf, Result<Vec<ArchivedKey>, String>)>,
    /// Each sealed config backup: opened and a valid config, or why not.
    pub backups: Vec<(PathBuf, Result<(), String>)>,
}

impl Inventory {
    /// Sealed files that did not open.
    pub fn failed(&self) -> usize {
        self.archive.iter().filter(|(_, r)| r.is_err()).count()
            + self.backups.iter().filter(|(_, r)| r.is_err()).count()
    }
}

/// Opens every sealed archive file and backup of `state_dir` in memory with `opener`.
pub fn inventory(state_dir: &Path, opener: &Opener) -> Inventory {
    let mut out = Inventory::default();
    let dir = state_dir.join(SEALED_ARCHIVE_DIR);
    if dir.is_dir() {
        for f in sealed_files(&dir) {
            let r = opener
                .open_text(&f)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    archive::load_text(&f, &text).map_err(|e| e.to_string())?;
                    archive::list_text(&f, &text).map_err(|e| e.to_string())
                });
            out.archive.push((f, r));
        }
    }
    let backups = state_dir.join(crate::state::BACKUP_DIR);
    for f in sealed_files(&backups)
        .into_iter()
        .filter(|_| backups.is_dir())
    {
        let r = opener
            .open_text(&f)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                crate::config::parse_str(&f, &text)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        out.backups.push((f, r));
    }
    out
}

fn remove(path: &Path) -> Result<(), CustodyError> {
    std::fs::remove_file(path).map_err(|source| fsutil::WriteError {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(d) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The text of a share: `atrest-share-v1:` and its base64 (x coordinate first).
fn share_text(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "atrest-share-v1:{}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn parse_share(path: &Path, text: &str) -> Result<blahaj::Share, CustodyError> {
    use base64::Engine;
    let err = |message: &str| CustodyError::Share {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    let b64 = text
        .trim()
        .strip_prefix("atrest-share-v1:")
        .ok_or_else(|| err("not a share atrest wrote (atrest-share-v1:…)"))?;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| err("its share is not base64"))?,
    );
    blahaj::Share::try_from(bytes.as_slice()).map_err(err)
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

/// Identities that open sealed files: the custodians' own (threshold 1), or the archive key
/// combined in memory from shares (threshold K).
pub struct Opener {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opener({} identities)", self.identities.len())
    }
}

/// Reads an age identity file (`AGE-SECRET-KEY-1…` lines) or an unencrypted SSH private key.
pub fn read_identity(
    path: &Path,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, CustodyError> {
    let err = |message: String| CustodyError::Identity {
        path: path.to_path_buf(),
        message,
    };
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
    if let Ok(file) = age::IdentityFile::from_buffer(bytes.as_slice()) {
        let ids = file.into_identities().map_err(|e| err(e.to_string()))?;
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    match age::ssh::Identity::from_buffer(bytes.as_slice(), Some(path.display().to_string())) {
        Ok(age::ssh::Identity::Unencrypted(k)) => {
            Ok(vec![Box::new(age::ssh::Identity::Unencrypted(k))])
        }
        Ok(age::ssh::Identity::Encrypted(_)) => Err(err(
            "a passphrase-protected SSH key: atrest asks no passphrase; decrypt a copy with `ssh-keygen -p` on the custodian's machine, or use an age identity".into(),
        )),
        Ok(age::ssh::Identity::Unsupported(_)) | Err(_) => Err(err(
            "neither an age identity file (AGE-SECRET-KEY-1…) nor an SSH private key age supports".into(),
        )),
    }
}

impl Opener {
    /// From identity files and share files, for files sealed under `custody` (none: identities
    /// alone, as for an archive sealed by hand with the age tool).
    pub fn new(
        custody: Option<&Custody>,
        identities: &[PathBuf],
        shares: &[PathBuf],
    ) -> Result<Opener, CustodyError> {
        let mut ids = Vec::new();
        for p in identities {
            ids.extend(read_identity(p)?);
        }
        let Some(c) = custody.filter(|c| c.threshold > 1) else {
            return Ok(Opener { identities: ids });
        };
        // Shares given as files, and those the identities unwrap from the custody file.
        let mut got: Vec<blahaj::Share> = Vec::new();
        for p in shares {
            let text =
                Zeroizing::new(std::fs::read_to_string(p).map_err(|e| CustodyError::Share {
                    path: p.clone(),
                    message: e.to_string(),
                })?);
            got.push(parse_share(p, &text)?);
        }
        for s in &c.shares {
            if let Some(text) = open_with(&ids, s.sealed.as_bytes()) {
                let text = Zeroizing::new(String::from_utf8_lossy(&text).into_owned());
                got.push(parse_share(Path::new(CUSTODY_FILE), &text)?);
            }
        }
        let mut xs: Vec<u8> = got.iter().map(|s| s.x.0).collect();
        xs.sort_unstable();
        xs.dedup();
        let custodians = c.fingerprints().join(", ");
        if xs.len() < c.threshold {
            return Err(CustodyError::TooFewShares {
                have: xs.len(),
                threshold: c.threshold,
                n: c.recipients.len(),
                custodians,
            });
        }
        let want = c.archive_recipient.clone().unwrap_or_default();
        let wrong = || CustodyError::WrongShares {
            want: Recipient(want.clone()).fingerprint(),
        };
        let secret = Zeroizing::new(
            blahaj::Sharks(c.threshold as u8)
                .recover(got.iter())
                .map_err(|_| wrong())?,
        );
        let text = std::str::from_utf8(&secret).map_err(|_| wrong())?;
        let key: age::x25519::Identity = text.parse().map_err(|_| wrong())?;
        if key.to_public().to_string() != want {
            return Err(wrong());
        }
        Ok(Opener {
            identities: vec![Box::new(key)],
        })
    }

    /// Opens one sealed file.
    pub fn open(&self, path: &Path) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        let sealed = std::fs::read(path).map_err(|e| CustodyError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        open_bytes(&self.identities, &sealed).map_err(|message| CustodyError::Open {
            path: path.to_path_buf(),
            message,
        })
    }

    /// One sealed file's text (a key archive or a config).
    pub fn open_text(&self, path: &Path) -> Result<Zeroizing<String>, CustodyError> {
        let bytes = self.open(path)?;
        Ok(Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The keys of a sealed archive file.
    pub fn archive_keys(&self, path: &Path) -> Result<Vec<Arc<Key>>, CustodyError> {
        let text = self.open_text(path)?;
        Ok(archive::load_text(path, &text)?)
    }

    /// This custodian's share, unwrapped from the custody file with their identity: the text of
    /// a share file.
    pub fn share_of(&self, custody: &Custody) -> Option<Zeroizing<Vec<u8>>> {
        custody
            .shares
            .iter()
            .find_map(|s| open_with(&self.identities, s.sealed.as_bytes()))
    }
}

fn open_with(
    ids: &[Box<dyn age::Identity + Send + Sync>],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    open_bytes(ids, sealed).ok()
}

fn open_bytes(
    ids: &[Box<dyn age::Identity + Send + Sync>],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, String> {
    let d = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(sealed))
        .map_err(|e| e.to_string())?;
    let mut r = d
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new(Vec::new());
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Every sealed archive file under `path`: the file itself, or each `*.age` of a folder.
pub fn sealed_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(SEALED_SUFFIX))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    }
}

#[cfg(test)]
mod tests;
