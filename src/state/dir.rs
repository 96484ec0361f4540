//! Where atrest keeps its state: `--state-dir` (or `ATREST_STATE_DIR`), else
//! [`DEFAULT_STATE_DIR`], where a node keeps its services' state, off the config's folder (its
//! snapshots are the size of etcd's database). Up to 0.2 the default was an `atrest` folder
//! beside the config; state found there is read there until a step that writes state moves it,
//! so a rotation in progress is never lost or started twice.

use std::path::{Path, PathBuf};

use crate::fsutil::{permission_hint, write_atomic};
use crate::state::{CHECKPOINT_FILE, LOCK_FILE, STATE_FILE};
use crate::state::{LockError, RotationLock};

/// The state folder when none is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/atrest";
/// The environment variable `--state-dir` falls back to.
pub const STATE_DIR_ENV: &str = "ATREST_STATE_DIR";

/// The state folder of this run, and whether state still sits in the old default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateDir {
    /// Named by `--state-dir` or [`STATE_DIR_ENV`]: used as it is.
    Given(PathBuf),
    /// The default, with nothing left in the old one.
    Default(PathBuf),
    /// State only in the old default: read there; a writing step moves it to `new` first.
    Old {
        /// `atrest` beside the config.
        old: PathBuf,
        /// [`DEFAULT_STATE_DIR`].
        new: PathBuf,
    },
    /// State in both: reads use `new`; a writing step refuses until one is chosen.
    Both {
        /// `atrest` beside the config.
        old: PathBuf,
        /// [`DEFAULT_STATE_DIR`].
        new: PathBuf,
    },
}

/// Why the state folder cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Both the old and the new default hold state: atrest will not choose.
    #[error(
        "atrest state is in two folders: {new} (the default) and {old} (the default up to atrest 0.2, beside the config); nothing was changed\n  hint: `atrest status --state-dir DIR` shows what each holds; pass --state-dir naming the one that holds the rotation you mean to continue (the other is then left alone)"
    )]
    Both {
        /// The old default.
        old: PathBuf,
        /// The new default.
        new: PathBuf,
    },
    /// The old folder is in use by a running step.
    #[error("cannot move the state folder {old} to {new}: {source}")]
    Busy {
        /// The old default.
        old: PathBuf,
        /// The new default.
        new: PathBuf,
        /// The lock held by another atrest.
        source: LockError,
    },
    /// Moving failed part way; the old folder is left as it was.
    #[error(
        "cannot move the state folder {old} to {new}: {source}{hint}\n  the state stays in {old}; until it is moved, pass --state-dir {old}",
        hint = permission_hint(source)
    )]
    Move {
        /// The old default.
        old: PathBuf,
        /// The new default.
        new: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl StateDir {
    /// `given`, else the default below `host_root` (see `ATREST_HOST_ROOT`), noting state left
    /// in the old default beside `config`.
    pub fn resolve(given: Option<&Path>, config: &Path, host_root: Option<&Path>) -> StateDir {
        if let Some(dir) = given {
            return StateDir::Given(dir.to_path_buf());
        }
        let new = match host_root {
            Some(root) => root.join(DEFAULT_STATE_DIR.trim_start_matches('/')),
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };
        let old = config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("atrest");
        match (holds_state(&old) && old != new, holds_state(&new)) {
            (false, _) => StateDir::Default(new),
            (true, false) => StateDir::Old { old, new },
            (true, true) => StateDir::Both { old, new },
        }
    }

    /// The folder to read state from.
    pub fn to_read(&self) -> &Path {
        match self {
            StateDir::Given(d) | StateDir::Default(d) => d,
            StateDir::Old { old, .. } => old,
            StateDir::Both { new, .. } => new,
        }
    }

    /// What an admin should know about where the state is, for stderr.
    pub fn note(&self) -> Option<String> {
        match self {
            StateDir::Old { old, new } => Some(format!(
                "reading atrest's state in {} (the default up to atrest 0.2); the next rotate or reencrypt step moves it to {}",
                old.display(),
                new.display()
            )),
            StateDir::Both { old, new } => Some(format!(
                "reading atrest's state in {}; {} (the default up to atrest 0.2) holds state too: pass --state-dir {} to read that one",
                new.display(),
                old.display(),
                old.display()
            )),
            _ => None,
        }
    }

    /// The folder to write state in: state left in the old default is moved to the new one
    /// first (under the old folder's rotation lock); `said` hears of the move.
    pub fn to_write(&self, said: &dyn Fn(&str)) -> Result<PathBuf, StateDirError> {
        match self {
            StateDir::Given(d) | StateDir::Default(d) => Ok(d.clone()),
            StateDir::Both { old, new } => Err(StateDirError::Both {
                old: old.clone(),
                new: new.clone(),
            }),
            StateDir::Old { old, new } => {
                let lock = RotationLock::acquire(old).map_err(|source| StateDirError::Busy {
                    old: old.clone(),
                    new: new.clone(),
                    source,
                })?;
                move_dir(old, new).map_err(|source| StateDirError::Move {
                    old: old.clone(),
                    new: new.clone(),
                    source,
                })?;
                drop(lock);
                repoint(new, old).map_err(|source| StateDirError::Move {
                    old: old.clone(),
                    new: new.clone(),
                    source,
                })?;
                said(&format!(
                    "moved atrest's state folder from {} to {} (the default since atrest 0.3)",
                    old.display(),
                    new.display()
                ));
                Ok(new.clone())
            }
        }
    }
}

/// The state files record absolute paths (snapshots, config backups, the file before a
/// rotation): those under `old` are made to name the same file under `new`.
fn repoint(new: &Path, old: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(v: &mut serde_json::Value, old: &str, new: &str) -> bool {
        match v {
            serde_json::Value::String(s) => match s.strip_prefix(old) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                    *s = format!("{new}{rest}");
                    true
                }
                _ => false,
            },
            serde_json::Value::Array(a) => a.iter_mut().fold(false, |c, v| walk(v, old, new) | c),
            serde_json::Value::Object(o) => {
                o.values_mut().fold(false, |c, v| walk(v, old, new) | c)
            }
            _ => false,
        }
    }
    let (Some(old_s), Some(new_s)) = (old.to_str(), new.to_str()) else {
        return Ok(());
    };
    for name in [STATE_FILE, CHECKPOINT_FILE] {
        let path = new.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if walk(&mut doc, old_s, new_s) {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o7777;
            let text = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
            write_atomic(&path, &text, mode).map_err(|e| e.source)?;
        }
    }
    Ok(())
}

/// A folder with anything in it but the rotation lock.
fn holds_state(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .is_ok_and(|entries| entries.flatten().any(|e| e.file_name() != LOCK_FILE))
}

/// Moves `old` to `new` (absent or an empty folder): a rename on one filesystem; else a copy
/// (modes and owners kept, each file synced) into a temporary folder beside `new`, renamed
/// into place, and only then the old folder removed.
fn move_dir(old: &Path, new: &Path) -> std::io::Result<()> {
    let parent = new.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)?;
    if new.is_dir() {
        // Empty (or only a lock file): `holds_state` said so.
        let _ = std::fs::remove_file(new.join(LOCK_FILE));
        std::fs::remove_dir(new)?;
    }
    match std::fs::rename(old, new) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let tmp = parent.join(format!(
                ".{}.moving-{}",
                new.file_name().and_then(|n| n.to_str()).unwrap_or("atrest"),
                std::process::id()
            ));
            let copied = copy_tree(old, &tmp).and_then(|()| std::fs::rename(&tmp, new));
            if let Err(e) = copied {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            std::fs::remove_dir_all(old)?;
        }
        Err(e) => return Err(e),
    }
    std::fs::File::open(parent)?.sync_all()?;
    if let Some(p) = old.parent() {
        std::fs::File::open(p)?.sync_all()?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(from)?;
    std::fs::create_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type()?;
        if ty.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ty.is_file() {
            std::fs::copy(&src, &dst)?;
            let m = e.metadata()?;
            std::os::unix::fs::chown(&dst, Some(m.uid()), Some(m.gid()))?;
            std::fs::File::open(&dst)?.sync_all()?;
        } else {
            // atrest writes no links or devices here: stop (the old folder stays whole)
            // rather than follow or drop one.
            return Err(std::io::Error::other(format!(
                "{} is not a file or folder",
                src.display()
            )));
        }
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::File::open(to)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn node() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let enc = root.path().join("etc/kubernetes/enc");
        std::fs::create_dir_all(&enc).unwrap();
        (root, enc.join("enc.yaml"))
    }

    #[test]
    fn the_default_is_var_lib_atrest_below_the_host_root_and_a_given_folder_wins() {
        let (root, config) = node();
        let d = StateDir::resolve(None, &config, Some(root.path()));
        assert_eq!(d, StateDir::Default(root.path().join("var/lib/atrest")));
        assert_eq!(
            StateDir::resolve(None, &config, None).to_read(),
            Path::new("/var/lib/atrest")
        );
        let given = StateDir::resolve(Some(Path::new("/s")), &config, Some(root.path()));
        assert_eq!(given, StateDir::Given("/s".into()));
        assert_eq!(given.note(), None);
    }

    #[test]
    fn state_in_the_old_default_is_read_there_and_moved_by_the_first_write() {
        let (root, config) = node();
        let old = config.parent().unwrap().join("atrest");
        std::fs::create_dir_all(old.join("snapshots")).unwrap();
        let recorded = serde_json::json!({
            "snapshots": [{"path": old.join("snapshots/etcd-1.db")}],
            "other": format!("{}-not-this", old.display()),
        });
        std::fs::write(old.join("rotation.json"), recorded.to_string()).unwrap();
        std::fs::write(old.join("snapshots/etcd-1.db"), b"db").unwrap();
        std::fs::set_permissions(
            old.join("snapshots/etcd-1.db"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let new = root.path().join("var/lib/atrest");
        let d = StateDir::resolve(None, &config, Some(root.path()));
        assert_eq!(d.to_read(), old);
        assert!(d.note().unwrap().contains("moves it to"));
        let said = std::cell::RefCell::new(String::new());
        let dir = d.to_write(&|m| said.borrow_mut().push_str(m)).unwrap();
        assert_eq!(dir, new);
        assert!(said.borrow().contains("moved atrest's state folder"));
        assert!(!old.exists());
        let moved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(new.join("rotation.json")).unwrap()).unwrap();
        assert_eq!(
            moved["snapshots"][0]["path"],
            new.join("snapshots/etcd-1.db").to_str().unwrap(),
            "recorded paths follow the files"
        );
        assert_eq!(
            moved["other"],
            format!("{}-not-this", old.display()),
            "only paths inside the old folder"
        );
        let mode = std::fs::metadata(new.join("snapshots/etcd-1.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            StateDir::resolve(None, &config, Some(root.path())),
            StateDir::Default(new)
        );
    }

    #[test]
    fn a_copy_keeps_every_file_mode_and_leaves_the_source_whole() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("backups")).unwrap();
        std::fs::write(src.path().join("backups/enc.yaml.1"), b"k").unwrap();
        std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let to = dst.path().join("copy");
        copy_tree(src.path(), &to).unwrap();
        assert_eq!(std::fs::read(to.join("backups/enc.yaml.1")).unwrap(), b"k");
        let mode = std::fs::metadata(&to).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(src.path().join("backups/enc.yaml.1").exists());
    }

    #[test]
    fn state_in_both_folders_is_refused_for_writes_and_changes_nothing() {
        let (root, config) = node();
        let old = config.parent().unwrap().join("atrest");
        let new = root.path().join("var/lib/atrest");
        for d in [&old, &new] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("rotation.json"), b"{}").unwrap();
        }
        let d = StateDir::resolve(None, &config, Some(root.path()));
        assert_eq!(d.to_read(), new);
        let err = d.to_write(&|_| {}).unwrap_err().to_string();
        assert!(
            err.contains("two folders") && err.contains("--state-dir"),
            "{err}"
        );
        assert!(old.join("rotation.json").exists() && new.join("rotation.json").exists());
    }

    #[test]
    fn an_old_folder_with_only_a_lock_file_is_not_state() {
        let (root, config) = node();
        let old = config.parent().unwrap().join("atrest");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("rotate.lock"), b"").unwrap();
        assert!(matches!(
            StateDir::resolve(None, &config, Some(root.path())),
            StateDir::Default(_)
        ));
    }
}
