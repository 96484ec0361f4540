//! After a rotation: what old copies of data are left (etcd's history, members' free pages,
//! atrest's own pre-rotation snapshots), and the commands that drop them. atrest never compacts
//! or defragments; it removes only its own snapshots, and only when asked.

use std::path::{Path, PathBuf};

use super::{ClusterError, Context, ScanRequest};
use crate::etcd::scan::ScanReport;
use crate::rotate::State;

/// One of atrest's own snapshots and what it still holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotResidue {
    /// The file.
    pub path: PathBuf,
    /// The revision it was taken at.
    pub revision: i64,
    /// When it was taken.
    pub taken: String,
    /// The file still exists.
    pub exists: bool,
    /// Its rotation is finished: it is only a restore point of a cluster that has moved on.
    pub rotation_finished: bool,
    /// Current values in it stored as plaintext where the config now encrypts.
    pub plaintext: u64,
    /// Current values in it under a key the config no longer has.
    pub retired_key: u64,
    /// Why it could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What is left after a rotation.
pub struct ResidueSurvey {
    /// A live scan with history, members' db sizes and the cleanup commands.
    pub live: ScanReport,
    /// atrest's snapshots, newest last.
    pub snapshots: Vec<SnapshotResidue>,
}

impl Context {
    /// Scans etcd with its history and reads every snapshot the rotation state records.
    pub async fn residue_survey(
        &self,
        client: &etcd_client::Client,
        state_dir: &Path,
        max_list: usize,
    ) -> Result<ResidueSurvey, ClusterError> {
        let req = ScanRequest {
            max_list,
            history: true,
            patience: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        let live = self.scan(client, &req, &mut ()).await?;
        let st = State::load(state_dir, &self.config.path)?;
        let mut snapshots = Vec::new();
        let records = st
            .history
            .iter()
            .map(|r| (r, true))
            .chain(st.rotation.iter().map(|r| (r, false)));
        for (rotation, finished) in records {
            let Some(s) = &rotation.snapshot else {
                continue;
            };
            let mut entry = SnapshotResidue {
                path: s.path.clone(),
                revision: s.revision,
                taken: s.taken.clone(),
                exists: s.path.exists(),
                rotation_finished: finished,
                plaintext: 0,
                retired_key: 0,
                error: None,
            };
            if entry.exists {
                let req = ScanRequest {
                    max_list: 0,
                    ..Default::default()
                };
                match self.scan_file(&s.path, &req, &mut ()).await {
                    Ok(report) => {
                        entry.plaintext = report
                            .resources
                            .iter()
                            .filter(|r| r.encrypts)
                            .map(|r| r.verdicts.plaintext)
                            .sum();
                        let residue: u64 = report.resources.iter().map(|r| r.residue).sum();
                        entry.retired_key = residue.saturating_sub(entry.plaintext);
                    }
                    Err(e) => entry.error = Some(e.to_string()),
                }
            }
            snapshots.push(entry);
        }
        Ok(ResidueSurvey { live, snapshots })
    }
}

/// Deletes atrest's snapshots of finished rotations (the ones `survey` lists as
/// `rotation_finished` and existing), records each removal in the rotation state, and returns
/// the paths removed. Snapshots of a rotation in progress are kept: they are its restore point.
pub fn remove_finished_snapshots(
    state_dir: &Path,
    config_path: &Path,
) -> Result<Vec<PathBuf>, ClusterError> {
    let mut st = State::load(state_dir, config_path)?;
    let mut removed = Vec::new();
    for r in st.history.iter_mut() {
        let Some(s) = r.snapshot.as_mut() else {
            continue;
        };
        if s.removed.is_some() || !s.path.exists() {
            continue;
        }
        std::fs::remove_file(&s.path).map_err(|source| ClusterError::RemoveSnapshot {
            path: s.path.clone(),
            source,
        })?;
        s.removed = Some(crate::rotate::journal::now());
        removed.push(s.path.clone());
    }
    if !removed.is_empty() {
        st.save(state_dir)?;
    }
    Ok(removed)
}
