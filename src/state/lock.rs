//! The rotation lock: one rotation step at a time per state folder.

use std::fs::TryLockError;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::LOCK_FILE;

/// Held while a rotation step runs; released when dropped (and by the kernel when the process
/// dies, so a killed run never leaves it stuck).
#[derive(Debug)]
pub struct RotationLock {
    _file: std::fs::File,
}

/// Another atrest holds the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another rotate step runs on this state folder.
    #[error(
        "another `atrest rotate` is running on {path} ({holder}); nothing was started: run this again once it has finished"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl RotationLock {
    /// Takes the state folder's lock without waiting (creating the folder, 0700 when new).
    pub fn acquire(state_dir: &Path) -> Result<RotationLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if !state_dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(io)?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "holder unknown".into());
                return Err(LockError::Busy { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message of the one refused (no secret in it).
        file.set_len(0).map_err(io)?;
        write!(
            file,
            "pid {} since {}",
            std::process::id(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .map_err(io)?;
        Ok(RotationLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_refuses_a_second_holder_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = RotationLock::acquire(dir.path()).unwrap();
        let second = RotationLock::acquire(dir.path()).unwrap_err();
        assert!(
            second
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{second}"
        );
        drop(first);
        // Another test of this process forking a command can hold an inherited copy of the
        // descriptor until its exec closes it: wait for that, not for a fixed time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match RotationLock::acquire(dir.path()) {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::yield_now();
                }
                Err(e) => panic!("the lock was not released: {e}"),
            }
        }
    }
}
