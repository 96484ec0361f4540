//! `atrest status`: settings and where each came from, config, rotation stage, apiserver
//! convergence, archived keys, and a scan summary.

use std::time::Duration;

use anyhow::Result;

use crate::cli::args::{self, Output};
use crate::cli::progress::Bar;
use crate::cli::render::{self, status as view};
use crate::cli::{EXIT_FAILED, EXIT_FINDINGS, EXIT_OK};
use atrest::cluster::{Context, ScanRequest};

/// Names listed per resource and verdict in status (counts stay exact).
const STATUS_NAMES: usize = 20;

/// Exit 0 when the scan is clean (or skipped), 1 with findings, 2 when the scan failed.
pub async fn run(a: args::StatusArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let loaded = &ctx.config;
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
    let dir = ctx.state_dir(a.cluster.state_dir.as_deref());
    let state = atrest::rotate::State::load(&dir, &loaded.path).ok();
    let archive_path = dir.join(atrest::rotate::ARCHIVE_FILE);
    let archived = if archive_path.exists() {
        atrest::keys::archive::list(&archive_path).unwrap_or_default()
    } else {
        Vec::new()
    };
    let kubeconfig = ctx.settings.kubeconfig.as_ref().map(|k| k.value.as_path());
    let convergence = match atrest::kube::connect(kubeconfig).await {
        Ok(api) => {
            let aps = atrest::kube::Apiservers {
                base: api,
                explicit: a.cluster.apiservers.clone(),
            };
            Ok(aps.survey(&loaded.hash).await)
        }
        Err(e) => Err(e.to_string()),
    };
    let extra = view::StatusExtra {
        state_path: atrest::rotate::State::path(&dir),
        state,
        archived,
        convergence,
        etcd_version,
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
        Some(Err(_)) => EXIT_FAILED,
        Some(Ok(r)) if !r.clean() => EXIT_FINDINGS,
        _ => EXIT_OK,
    })
}
