//! Putting a state folder under custody (`atrest keys seal`) and opening everything sealed in it
//! (`atrest keys unseal`).

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{
    CUSTODY_FILE, Custody, CustodyError, Opener, SEALED_ARCHIVE_DIR, SEALED_SUFFIX,
    SealedArchiveFile, sealed_files,
};
use crate::fsutil;
use crate::keys::archive::{self, ArchivedKey};

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
