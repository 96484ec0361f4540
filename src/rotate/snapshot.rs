//! An etcd snapshot through the maintenance API (a read), taken before the first change of a
//! rotation, so the cluster can be restored to how it was.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::state::SnapshotRecord;
use crate::etcd::EtcdError;

/// Streams a snapshot to `path` (0600, written to a temporary name, then renamed).
pub async fn take(client: &etcd_client::Client, path: &Path) -> Result<SnapshotRecord, EtcdError> {
    let io = |e: std::io::Error| EtcdError::File {
        what: "snapshot file",
        path: path.to_path_buf(),
        source: e,
    };
    // The snapshot holds at least every revision up to this one (its stream carries none).
    let revision = current_revision(client).await?;
    let mut maintenance = client.maintenance_client();
    let mut stream = maintenance
        .snapshot()
        .await
        .map_err(|e| EtcdError::Request {
            message: crate::etcd::explain(&e),
            hint: "",
        })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("partial");
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(msg) = stream.message().await.map_err(|e| EtcdError::Request {
        message: crate::etcd::explain(&e),
        hint: "",
    })? {
        file.write_all(msg.blob()).map_err(io)?;
        hasher.update(msg.blob());
        size += msg.blob().len() as u64;
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(SnapshotRecord {
        path: path.to_path_buf(),
        size,
        sha256: format!("sha256:{}", hex::encode(hasher.finalize())),
        revision,
        taken: super::journal::now(),
        removed: None,
    })
}

/// etcd's current revision (0 when its answer carries no header).
pub async fn current_revision(client: &etcd_client::Client) -> Result<i64, EtcdError> {
    Ok(client
        .clone()
        .status()
        .await
        .map_err(|e| EtcdError::Request {
            message: crate::etcd::explain(&e),
            hint: "",
        })?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0))
}
