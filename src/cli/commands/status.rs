//! `atrest status`: settings and where each came from, config, rotation stage, apiserver
//! convergence, archived keys, and a scan summary.

use std::time::Duration;

use anyhow::Result;

use crate::cli::EXIT_FAILED;
use crate::cli::args::{self, Output};
use crate::cli::progress::{Bar, ProgressMode};
use crate::cli::render::{self, status as view};
use atrest::cluster::Context;
use atrest::report::overview::{OverviewRequest, overview};

/// Names listed per resource and verdict in status (counts stay exact).
const STATUS_NAMES: usize = 20;

/// Exit 0 when the scan is clean (or skipped), 1 with findings, 2 when the scan failed or a
/// state file does not read.
pub(crate) async fn run(a: args::StatusArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let policy = super::policy(a.policy.as_deref())?;
    let mode = if a.no_scan {
        ProgressMode::None
    } else {
        ProgressMode::Auto
    };
    let mut bar = Bar::new("scanning", mode);
    let mut ov = overview(
        &ctx,
        &OverviewRequest {
            state_dir: super::state_dir_to_read(&ctx, a.cluster.state_dir.as_deref()),
            scan: !a.no_scan,
            max_list: STATUS_NAMES,
            patience: Duration::from_secs(a.etcd.etcd_patience),
            apiservers: &a.cluster.apiservers,
            policy: &policy,
        },
        &mut bar,
    )
    .await;
    bar.finish();
    for e in &ov.unreadable {
        eprintln!("error: {e}");
    }
    // The error's whole chain, as every command prints one.
    let scan = ov.scan.take().map(|r| r.map_err(anyhow::Error::from));
    let (settings, loaded) = (&ctx.settings, &ctx.config);
    match a.output {
        Output::Json => render::print_json(&view::status_json(
            settings,
            loaded,
            &ov.lint,
            scan.as_ref(),
            &ov,
        )),
        Output::Table => crate::cli::out!(
            "{}",
            view::status_table(settings, loaded, &ov.lint, scan.as_ref(), &ov)
        ),
    }
    Ok(match (&scan, &ov.without_scan) {
        _ if !ov.unreadable.is_empty() => EXIT_FAILED,
        (Some(Err(_)), _) => EXIT_FAILED,
        (Some(Ok(r)), _) | (None, Some(r)) => crate::cli::findings_exit(&r.findings),
        (None, None) => crate::cli::findings_exit(&[]),
    })
}
