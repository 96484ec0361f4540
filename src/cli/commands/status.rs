//! `atrest status`: settings and where each came from, config, rotation stage, apiserver
//! convergence, archived keys, and a scan summary.

use std::time::Duration;

use anyhow::Result;

use crate::cli::EXIT_FAILED;
use crate::cli::args::{self, Output};
use crate::cli::progress::Bar;
use crate::cli::render::{self, status as view};
use atrest::cluster::{Context, ScanRequest};

/// Names listed per resource and verdict in status (counts stay exact).
const STATUS_NAMES: usize = 20;

/// Exit 0 when the scan is clean (or skipped), 1 with findings, 2 when the scan failed.
pub(crate) async fn run(a: args::StatusArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let loaded = &ctx.config;
    let policy = super::policy(a.policy.as_deref())?;
    let dir = super::state_dir_to_read(&ctx, a.cluster.state_dir.as_deref());
    let mut findings = atrest::config::lint(&loaded.config);
    findings.extend(atrest::config::lint_file_mode(loaded.file.mode));
    let mut etcd_version = None;
    let scan = if a.no_scan {
        None
    } else {
        let req = ScanRequest {
            max_list: STATUS_NAMES,
            patience: Duration::from_secs(a.etcd.etcd_patience),
            history: false,
            state_dir: Some(dir.clone()),
            ..Default::default()
        };
        let mut bar = Bar::new("scanning", crate::cli::progress::ProgressMode::Auto);
        let result = match ctx.etcd().await {
            Ok(mut client) => {
                etcd_version = atrest::etcd::server_version(&mut client).await.ok();
                ctx.scan(&client, &req, &mut bar)
                    .await
                    .map_err(anyhow::Error::from)
            }
            Err(e) => Err(e.into()),
        };
        bar.finish();
        Some(result)
    };
    // A state file or archive that does not read leaves the rotation unknown: said, exit 2.
    let mut unreadable = Vec::new();
    let state = match atrest::state::RotationState::load(&dir, &loaded.path) {
        Ok(s) => Some(s),
        Err(e) => {
            unreadable.push(format!(
                "{e}; atrest leaves it as it is: restore it from a copy of the state folder"
            ));
            None
        }
    };
    let archive_path = dir.join(atrest::state::ARCHIVE_FILE);
    let archived = if archive_path.exists() {
        atrest::keys::archive::list(&archive_path).unwrap_or_else(|e| {
            unreadable.push(format!(
                "{e}; the retired keys it holds are needed to open old snapshots"
            ));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    for e in &unreadable {
        eprintln!("error: {e}");
    }
    let convergence = match ctx.apiservers(&a.cluster.apiservers).await {
        Ok(apiservers) => Ok(apiservers.survey(&loaded.hash).await),
        Err(e) => Err(e.to_string()),
    };
    let survey = convergence
        .as_ref()
        .ok()
        .map(atrest::report::ApiserverSurvey::of);
    // The one assessment; without a scan, only what the apiservers report is judged.
    let scan = scan.map(|r| {
        r.map(|mut report| {
            super::judge(&ctx, &mut report, &policy, &dir, survey.as_ref());
            report
        })
    });
    let mut apiservers_only = atrest::model::census::ScanReport::new(0, false, Vec::new());
    if scan.is_none() {
        super::judge(&ctx, &mut apiservers_only, &policy, &dir, survey.as_ref());
    }
    let extra = view::StatusExtra {
        state_path: atrest::state::RotationState::path(&dir),
        state,
        archived,
        unreadable: unreadable.clone(),
        convergence,
        etcd_version,
        without_scan: scan.is_none().then(|| apiservers_only.clone()),
    };
    match a.output {
        Output::Json => render::print_json(&view::status_json(
            &ctx.settings,
            loaded,
            &findings,
            scan.as_ref(),
            &extra,
        )),
        Output::Table => crate::cli::out!(
            "{}",
            view::status_table(&ctx.settings, loaded, &findings, scan.as_ref(), &extra)
        ),
    }
    Ok(match &scan {
        _ if !unreadable.is_empty() => EXIT_FAILED,
        Some(Err(_)) => EXIT_FAILED,
        Some(Ok(r)) => crate::cli::findings_exit(&r.findings),
        None => crate::cli::findings_exit(&apiservers_only.findings),
    })
}
