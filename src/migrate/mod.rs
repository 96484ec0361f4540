//! The re-encryption engine. The etcd scan says which objects are not on their resource's write
//! key; each gets the no-op write (PUT or PATCH) of [`crate::kube::rewrite`], concurrently and rate-limited,
//! while the scan streams on. Progress is a per-range cursor (the last key whose page is fully
//! done), saved atomically every few seconds, so a run can stop anywhere and resume. Afterwards
//! etcd is read again to prove the result.

mod attempt;
pub mod checkpoint;
mod error;
mod options;
mod outcome;
mod run;
pub mod svm;
mod worker;

use std::time::Instant;

pub use checkpoint::{Checkpoint, CheckpointError, Counters};
pub use error::MigrateError;
pub use options::{ReencryptOptions, ReencryptReport};

use crate::config::LoadedConfig;
use crate::etcd::scan::{self, Progress, Scan};
use crate::kms::KmsPlugins;
use crate::kube::Api;

/// A check run once, just before the first write (so a run with nothing to rewrite asks the
/// apiservers nothing): for example that every apiserver has loaded the config.
pub type Preflight<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<(), PreflightRefusal>> + Send + 'a>>;

/// Why a preflight refused: the caller's own error type.
pub type PreflightRefusal = Box<dyn std::error::Error + Send + Sync>;

/// A re-encryption run: everything it needs from the caller.
pub struct Reencrypt<'a> {
    /// The loaded `EncryptionConfiguration`: decides each resource's write key, and its hash binds
    /// the checkpoint.
    pub config: &'a LoadedConfig,
    /// Run once before the first write; its error aborts the run as [`MigrateError::Preflight`].
    pub preflight: Option<Preflight<'a>>,
    /// KMS v2 plugins: their current key IDs decide which KMS values are stale.
    pub plugins: Option<&'a KmsPlugins>,
    /// etcd, read only: to find targets and to prove the result.
    pub etcd: &'a etcd_client::Client,
    /// The apiserver's `--etcd-prefix`.
    pub etcd_prefix: &'a str,
    /// The apiserver client that sends the rewrites.
    pub api: &'a Api,
    /// How to run.
    pub opts: ReencryptOptions,
}

impl<'a> Reencrypt<'a> {
    /// Scans, rewrites every object not on its resource's write key, saves progress as it goes,
    /// then reads etcd again and reports what remains. Stops early (saving) when `opts.stop` is
    /// set.
    pub async fn run(
        &mut self,
        progress: &mut dyn Progress,
    ) -> Result<ReencryptReport, MigrateError> {
        let started = Instant::now();
        // Borrowed for the run's lifetime, not through `self`: the steps below need it mutably.
        let (config, etcd, etcd_prefix) = (self.config, self.etcd, self.etcd_prefix);
        let plan = scan::plan_covered(&config.config, etcd_prefix, &self.opts.resources);
        let cp = self.start_checkpoint()?;
        let scan_opts = self.targeting_options(&cp);
        let mut scan = Scan::start(etcd, &config.config, etcd_prefix, &plan, &scan_opts).await?;
        progress.total(scan.total);
        let mut st = self.run_state(cp, scan.revision);
        self.dispatch(&mut st, &mut scan, &plan, progress).await?;
        self.drain(&mut st, progress).await;
        self.recheck_dropped(&mut st).await;
        let (mut report, read_everything) = self.conclude(st, scan).await?;
        // A run that found nothing to rewrite already read everything on its write key at one
        // revision.
        if read_everything && !self.opts.dry_run && report.total.targeted > 0 {
            self.prove(&plan, &mut report).await?;
        }
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
