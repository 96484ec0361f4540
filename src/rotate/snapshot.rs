//! An etcd snapshot through the maintenance API (a read), taken before the first change of a
//! rotation, so the cluster can be restored to how it was.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::etcd::{EtcdError, explain};
use crate::fsutil::{crash_point, ensure_room};
use crate::model::time::now;
use crate::state::SnapshotRecord;

/// Room kept beyond the database size etcd reports: the snapshot is about as large, and the
/// filesystem must not end up full.
const MARGIN: u64 = 64 << 20;

/// Streams a snapshot to `path` (0600, in a 0700 folder when atrest creates it; written to a
/// temporary name, then renamed). Refuses before writing when the folder has less room than
/// etcd's database plus a margin; a failed write leaves nothing behind.
pub async fn take(client: &etcd_client::Client, path: &Path) -> Result<SnapshotRecord, EtcdError> {
    let write = |e: std::io::Error| EtcdError::Write {
        what: "snapshot file",
        path: path.to_path_buf(),
        source: e,
    };
    // The snapshot holds at least every revision up to this one (its stream carries none).
    let status = status(client).await?;
    let revision = status.header().map(|h| h.revision()).unwrap_or(0);
    let db_size = u64::try_from(status.db_size()).unwrap_or(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_room(
        dir,
        "the etcd snapshot",
        db_size + db_size / 10 + MARGIN,
        format!(
            "etcd reports a database of {} MiB, plus 10 % and 64 MiB to spare",
            db_size.div_ceil(1 << 20)
        ),
    )?;
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write)?;
    }
    let tmp = path.with_extension("partial");
    let result = stream_to(client, &tmp).await;
    let (size, sha256) = match result {
        Ok(done) => done,
        Err(e) => {
            // Never leave a partial file filling the disk.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    crash_point("snapshot:before-rename");
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(write(e));
    }
    // The rename is durable before rotation.json records the snapshot.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    crash_point("snapshot:after-rename");
    Ok(SnapshotRecord {
        path: path.to_path_buf(),
        size,
        sha256,
        revision,
        taken: now(),
        removed: None,
    })
}

/// The snapshot stream written to `tmp` (0600) and synced: its size and `sha256:<hex>`.
async fn stream_to(client: &etcd_client::Client, tmp: &Path) -> Result<(u64, String), EtcdError> {
    let write = |e: std::io::Error| EtcdError::Write {
        what: "snapshot file",
        path: tmp.to_path_buf(),
        source: e,
    };
    let mut maintenance = client.maintenance_client();
    let mut stream = maintenance
        .snapshot()
        .await
        .map_err(|e| EtcdError::Request {
            message: explain(&e),
            hint: "",
        })?;
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .map_err(write)?
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(msg) = stream.message().await.map_err(|e| EtcdError::Request {
        message: explain(&e),
        hint: "",
    })? {
        file.write_all(msg.blob()).map_err(write)?;
        hasher.update(msg.blob());
        size += msg.blob().len() as u64;
    }
    file.sync_all().map_err(write)?;
    Ok((size, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// etcd's status (revision, db size), its failure explained.
async fn status(client: &etcd_client::Client) -> Result<etcd_client::StatusResponse, EtcdError> {
    client
        .clone()
        .status()
        .await
        .map_err(|e| EtcdError::Request {
            message: explain(&e),
            hint: "",
        })
}

/// etcd's current revision (0 when its answer carries no header).
pub async fn current_revision(client: &etcd_client::Client) -> Result<i64, EtcdError> {
    Ok(status(client)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0))
}
