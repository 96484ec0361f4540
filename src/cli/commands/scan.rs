//! `atrest scan`: how every stored value of the covered resources is encrypted.

use std::time::Duration;

use anyhow::Result;

use crate::cli::args::{self, Output};
use crate::cli::progress::Bar;
use crate::cli::render::{
    self,
    scan::{SCAN_HINTS, scan_table},
};
use crate::cli::{EXIT_FINDINGS, EXIT_OK};
use atrest::cluster::{Context, ScanRequest, parse_resources};
use atrest::etcd::scan::ScanReport;
use atrest::exporter::{self, metrics, metrics::GoodScan};

/// Exit 0 when every value is on its write key and readable, 1 otherwise.
pub async fn run(a: args::ScanArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(&a.source, Some(&a.etcd), None))?;
    let req = ScanRequest {
        resources: parse_resources(&a.resources)?,
        verify: a.verify,
        max_list: a.max_list,
        key_archive: a.key_archive.clone(),
        patience: Duration::from_secs(a.etcd.etcd_patience),
        history: a.history,
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
    let report = report?;
    if let Some(dir) = &a.textfile {
        let good = GoodScan {
            report,
            config_hash: ctx.config.hash.clone(),
            duration_seconds: started.elapsed().as_secs_f64(),
            finished: chrono::Utc::now(),
        };
        write_textfile(&ctx, &a, dir, &good).await?;
        return finish(&a, &good.report);
    }
    finish(&a, &report)
}

/// The exporter's series for this scan, written atomically for node_exporter's textfile
/// collector. Key ages come from the rotation state only (a one-shot run has no first sight).
async fn write_textfile(
    ctx: &Context,
    a: &args::ScanArgs,
    dir: &std::path::Path,
    good: &GoodScan,
) -> Result<()> {
    let policy = match &a.policy {
        Some(p) => atrest::report::Policy::load(p)?,
        None => atrest::report::Policy::default(),
    };
    let apiservers = match (&a.kubeconfig, a.apiservers.is_empty()) {
        (None, true) => None,
        (kubeconfig, _) => Some(atrest::kube::Apiservers {
            base: atrest::kube::connect(kubeconfig.as_deref()).await?,
            explicit: a.apiservers.clone(),
        }),
    };
    let state_dir = ctx.state_dir(a.state_dir.as_deref());
    let x = exporter::extras(&state_dir, &ctx.config, apiservers.as_ref()).await;
    let first_seen = Default::default();
    let text = metrics::render(&metrics::Inputs {
        scan: Some(good),
        apiservers: x.apiservers.as_ref(),
        keys: &x.keys,
        first_seen: &first_seen,
        policy: &policy,
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
    Ok(if report.clean() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}
