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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| ArchiveError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?,
    );
    parse(path, &text)
}

/// The entries of an archive's text (`path` names it in errors).
fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, ArchiveError> {
    let options = serde_saphyr::options! { with_snippet: false };
    // The parser's message may quote a damaged line, and a line of this file may hold a
    // key: say only that it does not read.
    let file: File =
        serde_saphyr::from_str_with_options(text, options).map_err(|_| ArchiveError::Read {
            path: path.display().to_string(),
            message: "not a key archive atrest wrote (damaged or truncated?); restore it from a \
                      copy of the state folder"
                .to_string(),
        })?;
    Ok(file.keys)
}

/// The archived keys, ready to decrypt with; each is checked against its fingerprint.
pub fn load(path: &Path) -> Result<Vec<Arc<Key>>, ArchiveError> {
    keys_of(path, read(path)?)
}

/// The keys of an archive's text (an opened sealed archive: `path` names it in errors).
pub fn load_text(path: &Path, text: &str) -> Result<Vec<Arc<Key>>, ArchiveError> {
    keys_of(path, parse(path, text)?)
}

/// Names, fingerprints and retirement dates of an archive's text; no material.
pub fn list_text(path: &Path, text: &str) -> Result<Vec<ArchivedKey>, ArchiveError> {
    Ok(parse(path, text)?
        .into_iter()
        .map(ArchivedKey::of)
        .collect())
}

fn keys_of(path: &Path, entries: Vec<Entry>) -> Result<Vec<Arc<Key>>, ArchiveError> {
    let mut out = Vec::new();
    for (index, e) in entries.into_iter().enumerate() {
        let fail = |message: String| ArchiveError::Entry {
            path: path.display().to_string(),
            index,
            name: e.name.clone(),
            message,
        };
        let material =
            super::decode_secret(&e.secret).ok_or_else(|| fail("secret is not base64".into()))?;
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
    Ok(read(path)?.into_iter().map(ArchivedKey::of).collect())
}

impl ArchivedKey {
    fn of(e: Entry) -> ArchivedKey {
        ArchivedKey {
            provider: e.provider,
            name: e.name,
            fingerprint: e.fingerprint,
            retired: e.retired,
        }
    }
}

/// Adds keys (skipping fingerprints already archived) and rewrites the file atomically, 0600.
pub fn append(path: &Path, keys: &[Arc<Key>], retired: &str) -> Result<(), ArchiveError> {
    let mut existing = if path.exists() {
        read(path)?
    } else {
        Vec::new()
    };
    for k in keys {
        if !existing.iter().any(|e| e.fingerprint == k.fingerprint()) {
            existing.push(Entry::of(k, retired));
        }
    }
    let text = render(&existing);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| fsutil::WriteError {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    fsutil::write_atomic(path, text.as_bytes(), 0o600)?;
    Ok(())
}

/// An archive of just these keys, as text (to seal: [`super::custody`]).
pub fn text_of(keys: &[Arc<Key>], retired: &str) -> Zeroizing<String> {
    let entries: Vec<Entry> = keys.iter().map(|k| Entry::of(k, retired)).collect();
    render(&entries)
}

impl Entry {
    fn of(k: &Key, retired: &str) -> Entry {
        Entry {
            provider: k.provider(),
            name: k.name().to_string(),
            secret: k.secret_base64(),
            fingerprint: k.fingerprint().to_string(),
            retired: retired.to_string(),
        }
    }
}

fn render(entries: &[Entry]) -> Zeroizing<String> {
    yaml::render(|y| {
        y.raw(
            "# atrest key archive: retired encryption keys, kept so that etcd snapshots taken before a\n# rotation stay readable. Mode 0600; never share it.\napiVersion: atrest/v1\nkind: KeyArchive\nkeys:\n",
        );
        for e in entries {
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
    })
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
