//! Atomic file writes that keep mode and owner, and timestamped backups. A reader (the
//! apiserver polling its config, a resumed atrest) sees the old file or the new one, never a
//! torn one.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable that names the crash point to stop at (test builds only).
pub const CRASH_AT_ENV: &str = "ATREST_CRASH_AT";

/// A named point between two durable steps where a test build (cargo feature `failpoints`,
/// which the test bed turns on) aborts the process when `ATREST_CRASH_AT` names it, as a
/// power cut or SIGKILL would: no destructor runs, no temporary file is cleaned up. The tests
/// walk every point of a rotation and a re-encryption and prove that a rerun finishes and
/// loses nothing. Release builds compile this to nothing.
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var_os(CRASH_AT_ENV).is_some_and(|v| v == name) {
        eprintln!("crash point {name}: aborting (test build)");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// The crash-point name of a file atrest writes: its file name, or `backup` for a timestamped
/// config backup.
fn point_name(path: &Path) -> String {
    let in_backups = path
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|d| d == "backups");
    if in_backups {
        return "backup".to_string();
    }
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file atrest could not write (a config, a backup, a checkpoint); nothing was replaced.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    /// The file, or the folder it goes in.
    pub path: PathBuf,
    /// Why the write failed.
    pub source: std::io::Error,
}

/// Writes `contents` to `path` atomically: a temporary file in the same folder, fsync, rename,
/// fsync of the folder. An existing file's mode and owner are kept; a new file gets `new_mode`.
pub fn write_atomic(path: &Path, contents: &[u8], new_mode: u32) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let existing = std::fs::metadata(path).ok();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("atrest")
        ))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(err)?;
    let mode = existing
        .as_ref()
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(new_mode);
    // Restrict before writing, so key material is never readable by others, even briefly.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode & 0o700))
        .map_err(err)?;
    tmp.write_all(contents).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    if let Some(m) = &existing {
        // Keep the owner (root-owned config stays root-owned); ignore EPERM as a non-root user.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(m.uid()), Some(m.gid()));
    }
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(err)?;
    crash_point(&format!("write:{}:before-rename", point_name(path)));
    tmp.persist(path).map_err(|e| err(e.error))?;
    crash_point(&format!("write:{}:after-rename", point_name(path)));
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Copies `path` to `<backup_dir>/<file name>.<UTC timestamp>` (atomically, same mode) and
/// returns the backup's path.
pub fn backup(path: &Path, backup_dir: &Path) -> Result<PathBuf, WriteError> {
    let err = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let contents = std::fs::read(path).map_err(err)?;
    std::fs::create_dir_all(backup_dir).map_err(|source| WriteError {
        path: backup_dir.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let target = backup_dir.join(format!("{name}.{stamp}"));
    write_atomic(&target, &contents, 0o600)?;
    Ok(target)
}

/// Bytes free to this user in the filesystem of `dir` (its nearest existing ancestor).
pub fn available_space(dir: &Path) -> std::io::Result<u64> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    let s = rustix::fs::statvfs(at)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Too little room to write a file: the folder, what is needed and what is free.
#[derive(Debug, thiserror::Error)]
#[error(
    "not enough free space in {} to write {what}: it needs about {} MiB ({reason}), {} MiB are free; free some room or choose another folder",
    .dir.display(),
    .needed.div_ceil(1 << 20),
    .free / (1 << 20)
)]
pub struct NoRoom {
    /// The folder.
    pub dir: PathBuf,
    /// What was to be written.
    pub what: &'static str,
    /// Bytes needed.
    pub needed: u64,
    /// Why that much.
    pub reason: String,
    /// Bytes free.
    pub free: u64,
}

/// Refuses (before writing anything) when `dir` has less than `needed` bytes free.
pub fn ensure_room(
    dir: &Path,
    what: &'static str,
    needed: u64,
    reason: String,
) -> Result<(), NoRoom> {
    match available_space(dir) {
        Ok(free) if free < needed => Err(NoRoom {
            dir: dir.to_path_buf(),
            what,
            needed,
            reason,
            free,
        }),
        // When the filesystem cannot tell, the write itself will.
        _ => Ok(()),
    }
}

/// What to do about a file this user may not read (kubeadm's are root-only); empty for any
/// other error. Every "cannot read" message about a node's files ends with it.
pub fn permission_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        "; run atrest as root (kubeadm's files are readable by root only), or give this user read access to it (README: minimal permissions)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_mode_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enc.yaml");
        write_atomic(&p, b"one", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().mode() & 0o777,
            0o640,
            "mode kept"
        );
        let b = backup(&p, &dir.path().join("backups")).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
