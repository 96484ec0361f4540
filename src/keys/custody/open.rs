//! Opening sealed files: with custodians' identities (age or SSH), or with the archive key
//! combined in memory from K shares. Nothing opened is written anywhere.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{CUSTODY_FILE, Custody, CustodyError, Recipient, SEALED_SUFFIX};
use crate::keys::Key;
use crate::keys::archive;

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
