//! `atrest status`'s whole job below the command line: the config's lint, a scan, the rotation
//! state, the key archive and what each apiserver runs, judged by the one assessment.

use std::path::PathBuf;
use std::time::Duration;

use super::{ApiserverSurvey, Policy, findings};
use crate::cluster::{ClusterError, Context, ScanRequest};
use crate::config::{Finding, lint_file_mode};
use crate::etcd::scan::Progress;
use crate::etcd::server_version;
use crate::keys::archive::{ArchivedKey, list};
use crate::kube::Convergence;
use crate::model::census::ScanReport;
use crate::state::{ARCHIVE_FILE, RotationState};

/// What to look at.
#[derive(Clone, Debug)]
pub struct OverviewRequest<'a> {
    /// The state folder to read.
    pub state_dir: PathBuf,
    /// Scan etcd (not with `--no-scan`).
    pub scan: bool,
    /// Names listed per resource and verdict (counts stay exact).
    pub max_list: usize,
    /// How long to wait for an etcd that stops answering.
    pub patience: Duration,
    /// `--apiserver` URLs to ask besides those the kubeconfig finds.
    pub apiservers: &'a [String],
    /// What the checks demand.
    pub policy: &'a Policy,
}

/// Everything `status` shows.
pub struct Overview {
    /// The config's lint findings, its file mode included.
    pub lint: Vec<Finding>,
    /// The scan, judged; `None` with `--no-scan`.
    pub scan: Option<Result<ScanReport, ClusterError>>,
    /// The etcd server's version, when the scan connected to it.
    pub etcd_version: Option<String>,
    /// The rotation state file.
    pub state_path: PathBuf,
    /// The rotation state; `None` when it does not read (see `unreadable`).
    pub state: Option<RotationState>,
    /// The keys of the key archive.
    pub archived: Vec<ArchivedKey>,
    /// Files of the state folder that could not be read (the rotation state, the key archive):
    /// the rotation is then unknown, never shown as "no rotation".
    pub unreadable: Vec<String>,
    /// What each apiserver runs, or why they could not be asked.
    pub convergence: Result<Convergence, String>,
    /// Whether the apiserver serves StorageVersionMigration (`reencrypt --engine svm`); whether
    /// a controller runs is only known once a migration is created.
    pub svm: Result<crate::kube::svm::Served, String>,
    /// With `--no-scan`: what could still be judged (the apiservers).
    pub without_scan: Option<ScanReport>,
}

/// Reads and judges everything `status` shows; a scan that fails is kept as its error.
pub async fn overview(
    ctx: &Context,
    req: &OverviewRequest<'_>,
    progress: &mut dyn Progress,
) -> Overview {
    let loaded = &ctx.config;
    let mut lint = crate::config::lint(&loaded.config);
    lint.extend(lint_file_mode(loaded.file.mode));
    let (scan, etcd_version) = if req.scan {
        let (scan, version) = scan(ctx, req, progress).await;
        (Some(scan), version)
    } else {
        (None, None)
    };
    let (state, archived, unreadable) = state_folder(ctx, &req.state_dir);
    let (convergence, svm) = match ctx.apiservers(req.apiservers).await {
        Ok(apiservers) => (
            Ok(apiservers.survey(&loaded.hash).await),
            crate::kube::svm::served(&apiservers.base)
                .await
                .map_err(|e| e.to_string()),
        ),
        Err(e) => (Err(e.to_string()), Err(e.to_string())),
    };
    let survey = convergence.as_ref().ok().map(ApiserverSurvey::of);
    let rotation = state.as_ref().and_then(|s| s.rotation.as_ref());
    let judge = |report: &mut ScanReport| {
        findings::judge(report, loaded, req.policy, rotation, survey.as_ref());
    };
    // The one assessment; without a scan, only what the apiservers report is judged.
    let scan = scan.map(|r| {
        r.map(|mut report| {
            judge(&mut report);
            report
        })
    });
    let without_scan = scan.is_none().then(|| {
        let mut apiservers_only = ScanReport::new(0, false, Vec::new());
        judge(&mut apiservers_only);
        apiservers_only
    });
    Overview {
        lint,
        scan,
        etcd_version,
        state_path: RotationState::path(&req.state_dir),
        state,
        archived,
        unreadable,
        convergence,
        svm,
        without_scan,
    }
}

/// The scan and the etcd version it found.
async fn scan(
    ctx: &Context,
    req: &OverviewRequest<'_>,
    progress: &mut dyn Progress,
) -> (Result<ScanReport, ClusterError>, Option<String>) {
    let scan_req = ScanRequest {
        max_list: req.max_list,
        patience: req.patience,
        history: false,
        state_dir: Some(req.state_dir.clone()),
        ..Default::default()
    };
    match ctx.etcd().await {
        Ok(mut client) => {
            let version = server_version(&mut client).await.ok();
            (ctx.scan(&client, &scan_req, progress).await, version)
        }
        Err(e) => (Err(e), None),
    }
}

/// The rotation state and the key archive; a file that does not read is said, never taken as
/// empty (atrest leaves it as it is).
fn state_folder(
    ctx: &Context,
    dir: &std::path::Path,
) -> (Option<RotationState>, Vec<ArchivedKey>, Vec<String>) {
    let mut unreadable = Vec::new();
    let state = match RotationState::load(dir, &ctx.config.path) {
        Ok(s) => Some(s),
        Err(e) => {
            unreadable.push(format!(
                "{e}; atrest leaves it as it is: restore it from a copy of the state folder"
            ));
            None
        }
    };
    let archive_path = dir.join(ARCHIVE_FILE);
    let archived = if archive_path.exists() {
        list(&archive_path).unwrap_or_else(|e| {
            unreadable.push(format!(
                "{e}; the retired keys it holds are needed to open old snapshots"
            ));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    // The sealed archive's keys, as the custody file records them (nothing is opened).
    let mut archived = archived;
    match crate::keys::custody::Custody::load(dir) {
        Ok(Some(c)) => archived.extend(c.archived()),
        Ok(None) => {}
        Err(e) => unreadable.push(e.to_string()),
    }
    (state, archived, unreadable)
}
