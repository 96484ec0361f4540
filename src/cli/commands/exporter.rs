//! `atrest exporter`: scan on an interval, serve the result as Prometheus metrics.

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cli::args;
use atrest::cluster::load_config;
use atrest::cluster::{ScanRequest, parse_resources, settings};
use atrest::exporter::{self, ExporterOptions};
use atrest::report::Policy;

/// Runs until stopped; returns only when it cannot start.
pub(crate) async fn run(a: args::ExporterArgs) -> Result<i32> {
    if a.interval.is_zero() {
        anyhow::bail!("--interval must be more than 0");
    }
    let settings = settings::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    // The config is re-read before every scan; an unreadable one is an error of the command now.
    load_config(&settings)?;
    let policy = match &a.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let apiservers = if a.no_apiservers {
        None
    } else {
        Some(
            atrest::cluster::apiservers(&settings, &a.cluster.apiservers)
                .await
                .context("the exporter asks each apiserver which config it loaded (pass --no-apiservers to skip)")?,
        )
    };
    let opts = ExporterOptions {
        settings,
        scan: ScanRequest {
            resources: parse_resources(&a.resources)?,
            verify: a.verify,
            // Only counts are exported: no names are kept.
            max_list: 0,
            key_archive: None,
            state_dir: None,
            patience: Duration::from_secs(a.etcd.etcd_patience),
            history: false,
            kms_may_be_unreachable: false,
            identities: Vec::new(),
            shares: Vec::new(),
        },
        interval: a.interval,
        policy,
        state_dir: a.cluster.state_dir.clone(),
        apiservers,
    };
    exporter::run(&a.listen, opts).await?;
    Ok(crate::cli::EXIT_OK)
}
