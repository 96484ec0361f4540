//! Old copies of data: etcd's history, members' free pages, and every backup file atrest can
//! see — its snapshots folder listed (not inferred from the rotation records), every snapshot a
//! rotation records wherever it was written, and the `--backup-dir` folders of backups taken
//! elsewhere. atrest never compacts or defragments; it removes only its own snapshots, and only
//! when asked.

use std::path::{Path, PathBuf};

use super::{ClusterError, Context, ScanRequest};
use crate::etcd::copies::backup_kind;
use crate::model::census::{BackupFile, FoundIn, ScanReport};
use crate::state::RotationState;

/// The folder of the state folder that holds atrest's own snapshots.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// One file to survey, before it is read.
struct Candidate {
    path: PathBuf,
    found_in: FoundIn,
    recorded_by: Option<String>,
    in_progress: bool,
    /// In atrest's own snapshots folder (listed even when it is not an etcd data file).
    own: bool,
}

/// The rotation records' snapshots: (path, `id, finished|in progress`, in progress).
fn recorded(state_dir: &Path) -> Vec<(PathBuf, String, bool)> {
    let Ok(st) = RotationState::load(state_dir, Path::new("")) else {
        tracing::warn!(
            "cannot read the rotation state in {}; snapshots are listed without their records",
            state_dir.display()
        );
        return Vec::new();
    };
    let finished = st.history.iter().map(|r| (r, true));
    let current = st.rotation.iter().map(|r| (r, false));
    finished
        .chain(current)
        .filter_map(|(r, done)| {
            let s = r.snapshot.as_ref()?;
            let what = if done { "finished" } else { "in progress" };
            Some((s.path.clone(), format!("{}, {what}", r.id), !done))
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every file to survey, each once: atrest's snapshots folder, the recorded snapshots, then
/// each backup folder.
fn candidates(state_dir: &Path, backup_dirs: &[PathBuf]) -> Vec<Candidate> {
    let records = recorded(state_dir);
    let record_of = |p: &Path| records.iter().find(|(r, _, _)| r == p);
    let mut out: Vec<Candidate> = Vec::new();
    let mut add = |path: PathBuf, found_in: FoundIn, own: bool| {
        if out.iter().any(|c| c.path == path) {
            return;
        }
        let rec = record_of(&path);
        out.push(Candidate {
            found_in,
            recorded_by: rec.map(|(_, r, _)| r.clone()),
            in_progress: rec.is_some_and(|(_, _, p)| *p),
            own,
            path,
        });
    };
    for f in files_in(&state_dir.join(SNAPSHOT_DIR)) {
        add(f, FoundIn::SnapshotsFolder, true);
    }
    for (path, _, _) in &records {
        add(path.clone(), FoundIn::RotationRecord, true);
    }
    for dir in backup_dirs {
        for f in files_in(dir) {
            add(f, FoundIn::BackupDir { dir: dir.clone() }, false);
        }
    }
    out
}

impl Context {
    /// Every backup file atrest can see, each read offline and judged by the current config:
    /// what it still holds as plaintext where the config now encrypts, or under keys the
    /// config no longer has. Files of a backup folder that are no etcd data file (checksums,
    /// notes) are left out; compressed snapshots are listed as unreadable.
    pub async fn survey_backups(
        &self,
        state_dir: &Path,
        backup_dirs: &[PathBuf],
    ) -> Result<Vec<BackupFile>, ClusterError> {
        let mut out = Vec::new();
        for c in candidates(state_dir, backup_dirs) {
            let exists = c.path.exists();
            let kind = if exists { backup_kind(&c.path) } else { None };
            if exists && kind.is_none() && !c.own {
                continue;
            }
            let mut entry = BackupFile {
                size: std::fs::metadata(&c.path).map(|m| m.len()).unwrap_or(0),
                path: c.path.clone(),
                found_in: c.found_in,
                recorded_by: c.recorded_by,
                in_progress: c.in_progress,
                exists,
                revision: None,
                plaintext: 0,
                retired_key: 0,
                error: None,
            };
            if exists {
                match kind {
                    Some("an etcd data file") => {
                        let req = ScanRequest {
                            max_list: 0,
                            state_dir: Some(state_dir.to_path_buf()),
                            ..Default::default()
                        };
                        match self.scan_file(&c.path, &req, &mut ()).await {
                            Ok(report) => {
                                entry.revision = Some(report.revision);
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
                    Some(other) => entry.error = Some(format!("it is {other}")),
                    None => entry.error = Some("not an etcd data file".into()),
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Scans etcd with its history and members' db sizes, and surveys every backup file.
    pub async fn residue_survey(
        &self,
        client: &etcd_client::Client,
        state_dir: &Path,
        backup_dirs: &[PathBuf],
        max_list: usize,
    ) -> Result<ScanReport, ClusterError> {
        let req = ScanRequest {
            max_list,
            history: true,
            patience: std::time::Duration::from_secs(60),
            state_dir: Some(state_dir.to_path_buf()),
            ..Default::default()
        };
        let mut live = self.scan(client, &req, &mut ()).await?;
        live.backups = Some(self.survey_backups(state_dir, backup_dirs).await?);
        Ok(live)
    }
}

/// The files `--remove-snapshots` deletes: atrest's snapshots of finished rotations, and every
/// file of its snapshots folder that no rotation records (an orphan, or a `.partial` left by an
/// interrupted snapshot). Never the restore point of a rotation in progress, never a file of a
/// `--backup-dir` (someone else's backups).
pub fn removable(backups: &[BackupFile]) -> Vec<&BackupFile> {
    backups
        .iter()
        .filter(|b| b.exists && !b.in_progress)
        .filter(|b| b.recorded_by.is_some() || b.found_in == FoundIn::SnapshotsFolder)
        .collect()
}

/// Deletes what [`removable`] names from the survey `backups`, records each removal of a
/// recorded snapshot in the rotation state, and returns the paths removed.
pub fn remove_snapshots(
    state_dir: &Path,
    config_path: &Path,
    backups: &[BackupFile],
) -> Result<Vec<PathBuf>, ClusterError> {
    let mut st = RotationState::load(state_dir, config_path)?;
    let mut removed = Vec::new();
    for b in removable(backups) {
        std::fs::remove_file(&b.path).map_err(|source| ClusterError::RemoveSnapshot {
            path: b.path.clone(),
            source,
        })?;
        removed.push(b.path.clone());
    }
    let mut recorded = false;
    for r in st.history.iter_mut() {
        if let Some(s) = r.snapshot.as_mut()
            && s.removed.is_none()
            && removed.contains(&s.path)
        {
            s.removed = Some(crate::model::time::now());
            recorded = true;
        }
    }
    if recorded {
        st.save(state_dir)?;
    }
    Ok(removed)
}
