//! atrest's state folder — the rotation state file, the rotation lock, the re-encryption
//! checkpoint, the key archive, config backups and snapshots — and where that folder is. Every
//! layer that reads state (the cluster's census, the report, the exporter) depends on this, not
//! on the rotation engine that writes most of it. Labels, fingerprints, hashes and times only:
//! the key archive and the backups are the only files that hold key material.

pub mod dir;
pub mod lock;
pub mod rotation;

pub use dir::{DEFAULT_STATE_DIR, STATE_DIR_ENV, StateDir, StateDirError};
pub use lock::{LockError, RotationLock};
pub use rotation::{
    ConfigBefore, KeyRecord, PendingWrite, Rotation, RotationState, SnapshotRecord, Stage,
    StateError, Step, StepRecord, key_in_use_since,
};

/// The rotation state file.
pub const STATE_FILE: &str = "rotation.json";
/// The rotation lock: held while a rotation step runs.
pub const LOCK_FILE: &str = "rotate.lock";
/// Where prune archives retired local keys (0600), so an etcd snapshot taken before the
/// rotation can still be read.
pub const ARCHIVE_FILE: &str = "key-archive.yaml";
/// The re-encryption checkpoint; an interrupted reencrypt resumes from it while the config is
/// unchanged.
pub const CHECKPOINT_FILE: &str = "reencrypt-checkpoint.json";
/// Each config atrest replaced, kept before it was replaced (keys included, 0600).
pub const BACKUP_DIR: &str = "backups";
