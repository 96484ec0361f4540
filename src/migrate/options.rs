//! What a re-encryption run is asked ([`ReencryptOptions`]) and what it answers
//! ([`ReencryptReport`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::Counters;
use crate::GroupResource;

/// How a re-encryption run behaves: scope, pace, retries and where progress is kept.
#[derive(Clone, Debug)]
pub struct ReencryptOptions {
    /// Only these resources (empty: every resource the config names, and secrets).
    pub resources: Vec<GroupResource>,
    /// Rewrites in flight at once.
    pub concurrency: usize,
    /// PUT the stored object back where that applies ([`crate::kube::rewrite`]); `false`: always
    /// the merge PATCH.
    pub put: bool,
    /// Client-side requests per second; 0 for no client-side limit.
    pub qps: f64,
    /// PATCH attempts per object before giving up on it. Only attempts that fail while the
    /// apiserver answers other requests count; see `apiserver_patience`.
    pub max_attempts: u32,
    /// How long the apiserver may answer no request at all (connection errors, 429, 5xx for
    /// everything) before the run stops with [`super::MigrateError::ApiserverUnreachable`]. Meanwhile
    /// nothing is counted against the objects.
    pub apiserver_patience: Duration,
    /// Scan and count what would be rewritten, but write nothing (and save no checkpoint).
    pub dry_run: bool,
    /// Where progress is saved; also what `resume` reads.
    pub checkpoint: PathBuf,
    /// Continue from the checkpoint instead of starting over; refused if the config has changed
    /// since.
    pub resume: bool,
    /// Keys per etcd range read; `None` for the default (see [`super::Reencrypt::run`]).
    pub page_keys: Option<i64>,
    /// How long to keep retrying a transient etcd failure before giving up.
    pub patience: Duration,
    /// Set by a signal handler: stop issuing writes, finish those in flight, save.
    pub stop: Arc<AtomicBool>,
    /// At most this many names per list in the report.
    pub max_list: usize,
    /// How often the checkpoint is saved while running.
    pub save_every: Duration,
    /// Who rewrites first ([`super::svm`]): atrest's engine alone, or StorageVersionMigration
    /// before it.
    pub engine: super::svm::Engine,
    /// How long a new StorageVersionMigration may stay unanswered before atrest concludes no
    /// controller runs.
    pub svm_patience: Duration,
}

impl Default for ReencryptOptions {
    fn default() -> Self {
        Self {
            resources: Vec::new(),
            concurrency: 16,
            put: true,
            qps: 0.0,
            max_attempts: 5,
            apiserver_patience: Duration::from_secs(60),
            dry_run: false,
            checkpoint: PathBuf::from("reencrypt-checkpoint.json"),
            resume: false,
            page_keys: None,
            patience: Duration::from_secs(60),
            stop: Arc::new(AtomicBool::new(false)),
            max_list: 1000,
            save_every: Duration::from_secs(2),
            engine: super::svm::Engine::Atrest,
            svm_patience: Duration::from_secs(30),
        }
    }
}

/// The result of a run, with the proof read back from etcd.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReencryptReport {
    /// Nothing was written: the counters say what would have been.
    pub dry_run: bool,
    /// A stop signal ended the run early; the checkpoint lets the next run resume.
    pub interrupted: bool,
    /// The run continued an earlier checkpoint, so the counters include the work earlier runs
    /// finished: each object is counted once. Objects they did not finish (given up, not
    /// answered, or still stale after an accepted PATCH) are targeted again and counted by this
    /// run only; `writes` and `conflicts` add up every run's requests.
    pub resumed: bool,
    /// The revision the targeting scan was pinned at.
    pub revision: i64,
    /// Counters per resource (`secrets`, `deployments.apps`), across resumed runs.
    pub resources: BTreeMap<GroupResource, Counters>,
    /// All resources' counters added up.
    pub total: Counters,
    /// Dry run: what would be rewritten (namespace/name with its resource).
    pub would_rewrite: Vec<String>,
    /// Objects given up on (resource, namespace/name and why), capped at `max_list`.
    pub given_up: Vec<String>,
    /// After the pass: objects etcd still shows not on their write key (new ones included).
    pub remaining: u64,
    /// The first of those `remaining` objects with their key label, capped at `max_list`.
    pub remaining_objects: Vec<String>,
    /// With `--engine svm` or `auto`: per resource with stale objects, which engine was asked
    /// first and what the StorageVersionMigration did. Empty with atrest's engine alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<super::svm::ResourceEngine>,
    /// The checkpoint file this run saved to.
    pub checkpoint: PathBuf,
    /// Wall-clock time of this run alone.
    pub elapsed_seconds: f64,
}

impl ReencryptReport {
    /// Everything targeted is now on its write key.
    pub fn complete(&self) -> bool {
        !self.interrupted && !self.dry_run && self.remaining == 0 && self.total.given_up == 0
    }
}
