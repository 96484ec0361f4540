//! Continuous assurance: `atrest exporter` scans etcd on an interval and serves what it found as
//! Prometheus metrics; `atrest scan --textfile` writes the same series once, for node_exporter.
//!
//! - [`metrics`]: the series, a pure function of the last good scan, the rotation state, the
//!   apiservers' answers and the policy;
//! - [`serve`]: `/metrics` and `/healthz` on their own thread, answering from memory;
//! - this file: the loop that scans (one at a time, never per scrape) and keeps the last good
//!   result while the next one runs.
//!
//! Like every other command it only reads: etcd, the config file, the rotation state, and the
//! apiservers' `/metrics`.

pub mod metrics;
pub mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::cluster::settings::Settings;
use crate::cluster::{self, ClusterError, Context, ScanRequest};
use crate::fsutil::{WriteError, write_atomic};
use crate::kube::Apiservers;
use crate::model::KeyLabel;
use crate::report::Policy;
use crate::report::audit::Extras;
use crate::report::findings::judge;
use metrics::{FirstSeen, GoodScan, SeriesInputs};

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server thread could not be started.
    #[error("cannot start the HTTP server: {0}")]
    Server(std::io::Error),
}

/// How the exporter scans and what it adds to the scan.
pub struct ExporterOptions {
    /// Resolved settings: the config file is re-read before every scan (a rotation changes it).
    pub settings: Settings,
    /// What each scan reads (samples are not exported: keep `max_list` 0).
    pub scan: ScanRequest,
    /// Time from the start of one scan to the start of the next.
    pub interval: Duration,
    /// The audit policy (required resources, key age and aesgcm write limits).
    pub policy: Policy,
    /// The state folder (`None`: the default, see `cluster::state_dir`).
    pub state_dir: Option<PathBuf>,
    /// The apiservers to ask for the config they loaded (`None`: no kubeconfig).
    pub apiservers: Option<Apiservers>,
}

/// One scan with what it was read against; the etcd client is kept across rounds and dropped
/// after a failure so the next round connects anew.
async fn scan_once(
    opts: &ExporterOptions,
    client: &mut Option<etcd_client::Client>,
) -> Result<(GoodScan, Extras), ClusterError> {
    let started = Instant::now();
    let config = cluster::load_config(&opts.settings)?;
    let ctx = Context {
        settings: opts.settings.clone(),
        target: cluster::etcd_target(&opts.settings),
        config,
    };
    let c = match client.take() {
        Some(c) => c,
        None => ctx.etcd().await?,
    };
    let dir = ctx
        .state_dir(opts.state_dir.as_deref())
        .to_read()
        .to_path_buf();
    let req = ScanRequest {
        state_dir: Some(dir.clone()),
        ..opts.scan.clone()
    };
    let mut report = ctx.scan(&c, &req, &mut ()).await?;
    *client = Some(c);
    let extras = Extras::gather(&dir, &ctx.config, opts.apiservers.as_ref()).await;
    judge(
        &mut report,
        &ctx.config,
        &opts.policy,
        extras.rotation(),
        extras.apiservers.as_ref(),
    );
    Ok((
        GoodScan {
            report,
            config_hash: ctx.config.hash.clone(),
            duration_seconds: started.elapsed().as_secs_f64(),
            finished: Utc::now(),
        },
        extras,
    ))
}

/// Runs the exporter until the process ends: binds `listen`, serves `/metrics` from memory on
/// its own thread, and scans every `interval`, one scan at a time. A failed scan counts in
/// `atrest_scan_failures_total` and leaves the last good values served.
pub async fn run(listen: &str, opts: ExporterOptions) -> Result<(), ExporterError> {
    let page = Arc::new(serve::Page::default());
    let addr = serve::start(listen, Arc::clone(&page))?;
    tracing::info!("serving /metrics on http://{addr}");
    eprintln!(
        "atrest: exporter serving http://{addr}/metrics, scanning every {:?}",
        opts.interval
    );
    let mut last: Option<GoodScan> = None;
    let mut extras = Extras::default();
    let mut first_seen: BTreeMap<KeyLabel, FirstSeen> = BTreeMap::new();
    let mut failures = 0u64;
    let mut client = None;
    let mut ticker = tokio::time::interval(opts.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let publish = |last: &Option<GoodScan>,
                   extras: &Extras,
                   first_seen: &BTreeMap<KeyLabel, FirstSeen>,
                   failures: u64,
                   in_progress: bool| {
        let inputs = SeriesInputs {
            scan: last.as_ref(),
            apiservers: extras.apiservers.as_ref(),
            keys: &extras.state.keys,
            first_seen,
            policy: &opts.policy,
            scan_failures: Some(failures),
            scan_in_progress: Some(in_progress),
        };
        page.set(metrics::render(&inputs));
    };
    publish(&last, &extras, &first_seen, failures, false);
    loop {
        ticker.tick().await;
        publish(&last, &extras, &first_seen, failures, true);
        match scan_once(&opts, &mut client).await {
            Ok((good, x)) => {
                for label in metrics::write_keys(&good.report) {
                    first_seen.entry(label).or_insert(FirstSeen {
                        at: good.finished,
                        revision: good.report.revision,
                    });
                }
                last = Some(good);
                extras = x;
            }
            Err(e) => {
                failures += 1;
                client = None;
                tracing::warn!("scan failed (the last good values stay served): {e}");
                eprintln!("atrest: scan failed (the last good values stay served): {e}");
            }
        }
        publish(&last, &extras, &first_seen, failures, false);
    }
}

/// The file `atrest scan --textfile DIR` writes in DIR (node_exporter reads `*.prom`).
pub const TEXTFILE: &str = "atrest.prom";

/// Writes `text` to `dir/atrest.prom` atomically (temporary file in `dir`, fsync, rename), so
/// node_exporter never reads half a file; 0644 when new.
pub fn write_textfile(dir: &Path, text: &str) -> Result<PathBuf, WriteError> {
    let path = dir.join(TEXTFILE);
    write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(path)
}
