//! `atrest scan`: how every stored value is encrypted, read from etcd, judged by the config.

use std::time::Duration;

use anyhow::Result;

use crate::cli::args::{self, Output};
use crate::cli::progress::Bar;
use crate::cli::render::{
    self,
    scan::{SCAN_HINTS, scan_table},
};
use atrest::cluster::{Context, ScanRequest, parse_resources};
use atrest::exporter::{self, metrics, metrics::GoodScan};
use atrest::model::census::ScanReport;
use atrest::report::audit::Extras;
use atrest::report::{ApiserverSurvey, Policy};

/// Exit 0 without findings, 1 with findings (`atrest::model::finding`), 2 when the scan could
/// not complete.
pub(crate) async fn run(a: args::ScanArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.kubeconfig.clone(),
    ))?;
    let policy = super::policy(a.policy.as_deref())?;
    let state_dir = super::state_dir_to_read(&ctx, a.state_dir.as_deref());
    let req = ScanRequest {
        resources: parse_resources(&a.resources)?,
        verify: a.verify,
        max_list: a.max_list,
        key_archive: a.key_archive.clone(),
        state_dir: Some(state_dir.clone()),
        patience: Duration::from_secs(a.etcd.etcd_patience),
        history: a.history,
        kms_may_be_unreachable: false,
        identities: a.open.identities.clone(),
        shares: a.open.shares.clone(),
    };
    let mut bar = Bar::new(
        if a.verify {
            "scanning (verify)"
        } else {
            "scanning"
        },
        a.progress,
    );
    let started = std::time::Instant::now();
    let report = match &a.snapshot {
        Some(file) => ctx.scan_file(file, &req, &mut bar).await,
        None => {
            let client = ctx.etcd().await?;
            ctx.scan(&client, &req, &mut bar).await
        }
    };
    bar.finish();
    let mut report = report?;
    if a.history && a.snapshot.is_none() {
        report.backups = Some(ctx.survey_backups(&state_dir, &a.backup_dirs).await?);
    }
    // A backup's scan is about the file, not about the running apiservers.
    let convergence = match a.snapshot {
        Some(_) => None,
        None => super::survey_apiservers(&ctx, &a.apiservers).await,
    };
    let survey = convergence.as_ref().map(ApiserverSurvey::of);
    super::judge(&ctx, &mut report, &policy, &state_dir, survey.as_ref());
    if let Some(dir) = &a.textfile {
        let good = GoodScan {
            report,
            config_hash: ctx.config.hash.clone(),
            duration_seconds: started.elapsed().as_secs_f64(),
            finished: chrono::Utc::now(),
        };
        write_textfile(&ctx, &state_dir, dir, &good, &policy, survey.as_ref()).await?;
        return finish(&a, &good.report);
    }
    finish(&a, &report)
}

/// The exporter's series for this scan, written atomically for node_exporter's textfile
/// collector. Key ages come from the rotation state only (a one-shot run has no first sight).
async fn write_textfile(
    ctx: &Context,
    state_dir: &std::path::Path,
    dir: &std::path::Path,
    good: &GoodScan,
    policy: &Policy,
    apiservers: Option<&ApiserverSurvey>,
) -> Result<()> {
    let x = Extras::gather(state_dir, &ctx.config, None).await;
    let first_seen = Default::default();
    let text = metrics::render(&metrics::SeriesInputs {
        scan: Some(good),
        apiservers,
        keys: &x.state.keys,
        first_seen: &first_seen,
        policy,
        scan_failures: None,
        scan_in_progress: None,
    });
    let path = exporter::write_textfile(dir, &text)?;
    eprintln!("atrest: metrics written to {}", path.display());
    Ok(())
}

fn finish(a: &args::ScanArgs, report: &ScanReport) -> Result<i32> {
    match a.output {
        Output::Json => render::print_json(report),
        Output::Table => crate::cli::out!("{}", scan_table(report, &SCAN_HINTS)),
    }
    Ok(crate::cli::findings_exit(&report.findings))
}
