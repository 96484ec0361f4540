//! `atrest report`'s whole job below the command line: read the census (live, from a db file or
//! from a saved scan), the etcd cluster, the apiservers and the state folder, and judge them into
//! one [`Report`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use super::lifecycle::rotation_log;
use super::{ApiserverSurvey, Policy, Report, ReportInputs, RotationInfo, build};
use crate::cluster::drill::DrillResult;
use crate::cluster::{ClusterError, Context, ScanRequest};
use crate::config::LoadedConfig;
use crate::etcd::cluster_info;
use crate::keys::archive::ArchivedKey;
use crate::keys::custody::{Custody, SEALED_SUFFIX};
use crate::kube::Apiservers;
use crate::model::census::{EtcdInfo, SCAN_SCHEMA, ScanReport};
use crate::report::lifecycle::CustodyView;
use crate::state::{ARCHIVE_FILE, BACKUP_DIR, Rotation, RotationState};

/// Names kept per resource and verdict in a report (counts stay exact).
pub const REPORT_NAMES: usize = 1000;

/// Where the report's census comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The live cluster: a scan now, history and backup files unless left out.
    Live {
        /// How long to wait for an etcd that stops answering.
        patience: Duration,
        /// `--backup-dir` folders of backups taken elsewhere.
        backup_dirs: Vec<PathBuf>,
    },
    /// An etcd db file (`--snapshot`): the audit is about the file alone.
    Snapshot(PathBuf),
    /// The JSON of an earlier `atrest scan -o json` (`--from-scan`).
    SavedScan(PathBuf),
}

/// What to audit and by which rules.
#[derive(Clone, Debug)]
pub struct AuditRequest<'a> {
    /// Where the census comes from.
    pub source: Source,
    /// Decrypt every value (`--verify`).
    pub verify: bool,
    /// Read etcd's history, free pages and backup files (not with `--no-history`).
    pub history: bool,
    /// The state folder to read.
    pub state_dir: PathBuf,
    /// `--apiserver` URLs to ask besides those the kubeconfig finds.
    pub apiservers: &'a [String],
    /// What the checks demand.
    pub policy: &'a Policy,
    /// Identity files that open the sealed key archive and backups.
    pub identities: &'a [PathBuf],
    /// Share files that open them when sealed K of N.
    pub shares: &'a [PathBuf],
    /// A restore drill's result to attach (`--drill`).
    pub drill: Option<DrillResult>,
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading the cluster or the db file failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The saved scan could not be read.
    #[error("cannot read {path}: {source}")]
    ReadScan {
        /// The file given to `--from-scan`.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The saved scan is not a scan's JSON.
    #[error("{path} is not the JSON of `atrest scan -o json` ({SCAN_SCHEMA}): {message}")]
    ParseScan {
        /// The file given to `--from-scan`.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole audit: census, etcd cluster, apiservers, rotation state, judged by the policy.
pub async fn audit(ctx: &Context, req: &AuditRequest<'_>) -> Result<Report, AuditError> {
    let (scan, etcd) = census(ctx, req).await?;
    let apiservers = match req.source {
        // A backup's audit is about the file alone.
        Source::Snapshot(_) => None,
        _ => ctx.apiservers_to_ask(req.apiservers).await,
    };
    let extras = Extras::gather(&req.state_dir, &ctx.config, apiservers.as_ref()).await;
    let recorded = extras.state.records_anything();
    Ok(build(&ReportInputs {
        config: &ctx.config,
        scan: &scan,
        etcd,
        apiservers: extras.apiservers,
        manifest_sets_config: ctx.manifest_sets_config(),
        rotation: recorded
            .then(|| RotationInfo::of(&extras.state, RotationState::path(&req.state_dir))),
        in_progress: extras.state.rotation.clone(),
        key_records: if recorded {
            extras.state.keys.clone()
        } else {
            BTreeMap::new()
        },
        archived: archived_keys(&req.state_dir),
        rotation_log: rotation_log(&extras.state),
        custody: Some(custody_view(&req.state_dir)).filter(|c| !c.is_empty()),
        drill: req.drill.clone(),
        policy: req.policy,
        now: Utc::now(),
    }))
}

/// The census and the etcd cluster it was read from.
async fn census(
    ctx: &Context,
    req: &AuditRequest<'_>,
) -> Result<(ScanReport, EtcdInfo), AuditError> {
    let scan_req = ScanRequest {
        verify: req.verify,
        max_list: REPORT_NAMES,
        history: req.history,
        state_dir: Some(req.state_dir.clone()),
        // A plugin that cannot be asked does not stop the audit: ATR-C06 warns and says how many
        // values were not decrypted, and why.
        kms_may_be_unreachable: true,
        identities: req.identities.to_vec(),
        shares: req.shares.to_vec(),
        ..Default::default()
    };
    Ok(match &req.source {
        Source::Snapshot(file) => {
            let scan = ctx.scan_file(file, &scan_req, &mut ()).await?;
            let info = EtcdInfo {
                endpoints: vec![format!("file {}", file.display())],
                cluster_id: "offline: a db file".into(),
                revision: scan.revision,
                ..Default::default()
            };
            (scan, info)
        }
        Source::SavedScan(path) => {
            let scan = read_scan(path)?;
            let mut info = match ctx.etcd().await {
                Ok(c) => cluster_info(&c, &ctx.target).await,
                Err(_) => EtcdInfo {
                    endpoints: vec![ctx.target.describe()],
                    cluster_id: "not reachable".into(),
                    ..Default::default()
                },
            };
            info.revision = scan.revision;
            (scan, info)
        }
        Source::Live {
            patience,
            backup_dirs,
        } => {
            let client = ctx.etcd().await?;
            let mut info = cluster_info(&client, &ctx.target).await;
            let scan_req = ScanRequest {
                patience: *patience,
                ..scan_req
            };
            let mut scan = ctx.scan(&client, &scan_req, &mut ()).await?;
            if req.history {
                scan.backups = Some(ctx.survey_backups(&req.state_dir, backup_dirs).await?);
            }
            info.revision = scan.revision;
            (scan, info)
        }
    })
}

fn read_scan(path: &Path) -> Result<ScanReport, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::ReadScan {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| AuditError::ParseScan {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// What the state folder and the apiservers add to a census, read the same way by the report,
/// status and the exporter.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// The rotation state; a fresh one when there is none or it does not read (said as a
    /// warning: key ages then come from first sight, and no rotation is in progress).
    pub state: RotationState,
    /// What each apiserver reported loading, when they could be asked.
    pub apiservers: Option<ApiserverSurvey>,
}

impl Extras {
    /// Reads the rotation state and asks the apiservers which config they loaded.
    pub async fn gather(
        state_dir: &Path,
        config: &LoadedConfig,
        apiservers: Option<&Apiservers>,
    ) -> Extras {
        let state = RotationState::load(state_dir, &config.path).unwrap_or_else(|e| {
            tracing::warn!(
                "{e}; its records are left out (the exporter then ages keys from when it first saw them)"
            );
            RotationState::default()
        });
        let apiservers = match apiservers {
            Some(a) => Some(ApiserverSurvey::of(&a.survey(&config.hash).await)),
            None => None,
        };
        Extras { state, apiservers }
    }

    /// The rotation in progress: what it will rewrite only warns.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.state.rotation.as_ref()
    }
}

/// The keys of atrest's key archive; none when there is none or it does not read (`status`
/// says which file does not read).
/// Where the state folder keeps retired keys and config backups (nothing is opened).
fn custody_view(state_dir: &Path) -> CustodyView {
    let mut v = CustodyView::default();
    match Custody::load(state_dir) {
        Ok(Some(c)) => {
            v.sealed = Some(c.describe());
            v.recipients = c.fingerprints();
            v.threshold = c.threshold;
            v.sealed_keys = c.archived();
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}; the report says nothing of the sealed archive"),
    }
    v.plaintext_archive_keys = archived_keys(state_dir).map_or(0, |k| k.len());
    for e in std::fs::read_dir(state_dir.join(BACKUP_DIR))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.path().to_string_lossy().ends_with(SEALED_SUFFIX) {
            v.sealed_backups += 1;
        } else if e.path().is_file() {
            v.plaintext_backups += 1;
        }
    }
    v
}

/// The key archive's keys (none when there is no archive; `None` when it cannot be read).
fn archived_keys(state_dir: &Path) -> Option<Vec<ArchivedKey>> {
    let path = state_dir.join(ARCHIVE_FILE);
    if !path.exists() {
        return Some(Vec::new());
    }
    crate::keys::archive::list(&path)
        .inspect_err(|e| tracing::warn!("{e}; the key lifecycle leaves its keys out"))
        .ok()
}

impl RotationInfo {
    /// The report's view of the rotation state kept in `state_file`.
    pub fn of(s: &RotationState, state_file: PathBuf) -> RotationInfo {
        let current = s.rotation.as_ref().or(s.history.last());
        RotationInfo {
            state_file,
            stage: s.rotation.as_ref().map(|r| r.stage.to_string()),
            target: s.rotation.as_ref().map(|r| r.target.clone()),
            last_finished: s.history.last().and_then(|r| r.finished_at),
            snapshot: current.and_then(|r| r.snapshot.as_ref()).map(|x| {
                format!(
                    "{} ({}, revision {})",
                    x.path.display(),
                    x.sha256,
                    x.revision
                )
            }),
            snapshot_skipped: current.is_some_and(|r| r.snapshot_skipped),
        }
    }
}
