//! The re-encryption engine. The etcd scan says which objects are not on their resource's write
//! key; each gets the no-op write (PUT or PATCH) of [`crate::kube::rewrite`], concurrently and rate-limited,
//! while the scan streams on. Progress is a per-range cursor (the last key whose page is fully
//! done), saved atomically every few seconds, so a run can stop anywhere and resume. Afterwards
//! etcd is read again to prove the result.

pub mod checkpoint;
mod error;
mod worker;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use checkpoint::{Checkpoint, CheckpointError, Counters};
pub use error::MigrateError;
use worker::{Collector, Done, RateLimiter, Remaining, Shared, TaskResult, rewrite_one};

use crate::GroupResource;
use crate::codec::ProviderTable;
use crate::config::LoadedConfig;
use crate::etcd::scan::{self, ClassifyConfig, Progress, Scan, ScanOptions};
use crate::kube::rewrite::WritePath;
use crate::kube::{self as k8s, Api, ApiPath};

/// Keys per etcd read of a real (not dry) run, unless asked otherwise; see [`Reencrypt::run`].
const REWRITE_PAGE_KEYS: i64 = 5000;

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
    /// everything) before the run stops with [`MigrateError::ApiserverUnreachable`]. Meanwhile
    /// nothing is counted against the objects.
    pub apiserver_patience: Duration,
    /// Scan and count what would be rewritten, but write nothing (and save no checkpoint).
    pub dry_run: bool,
    /// Where progress is saved; also what `resume` reads.
    pub checkpoint: PathBuf,
    /// Continue from the checkpoint instead of starting over; refused if the config has changed
    /// since.
    pub resume: bool,
    /// Keys per etcd range read; `None` for the default (see [`Reencrypt::run`]).
    pub page_keys: Option<i64>,
    /// How long to keep retrying a transient etcd failure before giving up.
    pub patience: Duration,
    /// Set by a signal handler: stop issuing writes, finish those in flight, save.
    pub stop: Arc<AtomicBool>,
    /// At most this many names per list in the report.
    pub max_list: usize,
    /// How often the checkpoint is saved while running.
    pub save_every: Duration,
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
    pub resources: BTreeMap<String, Counters>,
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

/// A check run once, just before the first write (so a run with nothing to rewrite asks the
/// apiservers nothing): for example that every apiserver has loaded the config.
pub type Preflight<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PreflightRefusal>> + Send + 'a>>;

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
    pub plugins: Option<&'a crate::kms::KmsPlugins>,
    /// etcd, read only: to find targets and to prove the result.
    pub etcd: &'a etcd_client::Client,
    /// The apiserver's `--etcd-prefix`.
    pub etcd_prefix: &'a str,
    /// The apiserver client that sends the rewrites.
    pub api: &'a Api,
    /// How to run.
    pub opts: ReencryptOptions,
}

struct PageState {
    seq: u64,
    range_start: String,
    last_key: String,
    pending: usize,
    dispatched: bool,
}

impl Reencrypt<'_> {
    /// Scans, rewrites every object not on its resource's write key, saves progress as it goes,
    /// then reads etcd again and reports what remains. Stops early (saving) when `opts.stop` is
    /// set.
    pub async fn run(
        &mut self,
        progress: &mut dyn Progress,
    ) -> Result<ReencryptReport, MigrateError> {
        let started = Instant::now();
        let opts = &self.opts;
        let plan = scan::plan(&self.config.config, self.etcd_prefix, &opts.resources);
        let mut cp = if opts.resume {
            let mut cp = Checkpoint::load(&opts.checkpoint)?;
            cp.check_config(&opts.checkpoint, &self.config.path, &self.config.hash)?;
            cp.forget_unfinished();
            cp
        } else {
            let now = chrono::Utc::now().to_rfc3339();
            Checkpoint {
                version: checkpoint::CHECKPOINT_VERSION,
                config_path: self.config.path.clone(),
                config_hash: self.config.hash.clone(),
                started: now.clone(),
                updated: now,
                ..Default::default()
            }
        };
        let scan_opts = ScanOptions {
            // Classification by prefix, key name and shape is enough to target (a resourceVersion
            // precondition guards every write); metadata, and so the uid, where it is plaintext.
            classify: ClassifyConfig::new(false, true, self.plugins, Vec::new()),
            patience: opts.patience,
            resume_after: cp
                .cursors
                .iter()
                .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                .collect(),
            // etcd counts the whole rest of the range for every page it serves, so small pages
            // cost O(N²/page): at a million keys a dry run took 280 s with 256-key pages, 72 s
            // with 1000, 15 s with 5000 and 9 s with the scan's default (up to 10,000 keys or
            // 4 MiB). A dry run reads those. A real run keeps each page's targets (with their
            // values, for the PUT) until they are written, so it reads at most 5000 keys a page
            // (at a million objects: 35 MiB peak, where 20,000-key pages took 78 MiB); its
            // reads are a small part of its time. The checkpoint moves a page at a time, so a
            // resumed run repeats at most one page, whose rewritten objects it finds current.
            page_keys: opts
                .page_keys
                .or((!opts.dry_run).then_some(REWRITE_PAGE_KEYS)),
            // A run of a large cluster outlasts the apiserver's 5-minute compaction of the
            // revision it started at (at a million objects: stopped after 7 minutes).
            follow_compaction: true,
        };
        let mut scan = Scan::start(
            self.etcd,
            &self.config.config,
            self.etcd_prefix,
            &plan,
            &scan_opts,
        )
        .await?;
        progress.total(scan.total);

        let shared = Arc::new(Shared {
            api: self.api.clone(),
            etcd: self.etcd.clone(),
            limiter: RateLimiter::new(opts.qps),
            max_attempts: opts.max_attempts.max(1),
            rewrites_seen: AtomicU64::new(0),
            kms_key_ids: self
                .plugins
                .map(|p| p.current_key_ids())
                .unwrap_or_default(),
            health: Default::default(),
            apiserver_patience: opts.apiserver_patience,
            abort: AtomicBool::new(false),
            stop: Arc::clone(&opts.stop),
            patch_only: AtomicBool::new(!opts.put),
        });
        let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let mut tasks: JoinSet<TaskResult> = JoinSet::new();
        let mut pages: VecDeque<PageState> = VecDeque::new();
        let mut paths: HashMap<GroupResource, ApiPath> = HashMap::new();
        let mut tables: HashMap<GroupResource, Arc<ProviderTable>> = HashMap::new();
        let mut report = ReencryptReport {
            dry_run: opts.dry_run,
            resumed: opts.resume,
            revision: scan.revision,
            checkpoint: opts.checkpoint.clone(),
            ..Default::default()
        };
        let mut fatal: Option<MigrateError> = None;
        let mut last_save = Instant::now();
        let mut seq = 0u64;
        let mut collector = Collector {
            targets: Vec::new(),
            keep_values: opts.put && !opts.dry_run,
        };

        'pages: while !self.stopping(&fatal) {
            let Some(page) = scan.next_page(&mut collector).await? else {
                break;
            };
            seq += 1;
            let targets = std::mem::take(&mut collector.targets);
            let range_start = String::from_utf8_lossy(&plan.ranges[page.range].start).into_owned();
            pages.push_back(PageState {
                seq,
                range_start,
                last_key: String::from_utf8_lossy(&page.last_key).into_owned(),
                pending: targets.len(),
                dispatched: false,
            });
            for t in targets {
                let resource = t.resource.to_string();
                cp.write_keys
                    .entry(resource.clone())
                    .or_insert_with(|| self.config.config.resolve(&t.resource).write_label());
                cp.counters.entry(resource.clone()).or_default().targeted += 1;
                if opts.dry_run {
                    if report.would_rewrite.len() < opts.max_list {
                        report
                            .would_rewrite
                            .push(format!("{resource} {}", t.object));
                    }
                    settle(&mut pages, seq);
                    continue;
                }
                if self.stopping(&fatal) {
                    break 'pages;
                }
                if let Some(check) = self.preflight.take() {
                    check.await.map_err(MigrateError::Preflight)?;
                }
                if !paths.contains_key(&t.resource) {
                    let p = k8s::discover(self.api, &t.resource).await?;
                    paths.insert(t.resource.clone(), p);
                }
                let path = paths[&t.resource].clone();
                let table = tables
                    .entry(t.resource.clone())
                    .or_insert_with(|| {
                        Arc::new(ProviderTable::new(&self.config.config.resolve(&t.resource)))
                    })
                    .clone();
                // Wait for a slot, handling finished rewrites meanwhile.
                let permit = loop {
                    if let Ok(p) = sem.clone().try_acquire_owned() {
                        break p;
                    }
                    match tasks.join_next().await {
                        Some(Ok(r)) => {
                            self.handle(r, &mut cp, &mut pages, &mut fatal, &paths);
                            report_rewrites(&cp, progress);
                        }
                        Some(Err(e)) => tracing::error!("a rewrite task failed: {e}"),
                        None => {}
                    }
                    self.save_if_due(&mut cp, &mut last_save)?;
                };
                let shared = Arc::clone(&shared);
                tasks.spawn(async move {
                    let r = rewrite_one(&shared, &path, &table, t, seq).await;
                    drop(permit);
                    r
                });
            }
            if let Some(p) = pages.back_mut() {
                p.dispatched = true;
            }
            advance(&mut pages, &mut cp);
            while let Some(Ok(r)) = tasks.try_join_next() {
                self.handle(r, &mut cp, &mut pages, &mut fatal, &paths);
            }
            progress.advance(page.count);
            report_rewrites(&cp, progress);
            self.save_if_due(&mut cp, &mut last_save)?;
        }
        // Finish the writes in flight, whatever stopped the loop.
        while let Some(r) = tasks.join_next().await {
            if let Ok(r) = r {
                self.handle(r, &mut cp, &mut pages, &mut fatal, &paths);
                report_rewrites(&cp, progress);
            }
        }
        let interrupted = opts.stop.load(Ordering::SeqCst);
        let read_everything = !interrupted && fatal.is_none();
        let run = scan.finish(&mut Collector::default()).await;
        report.revision = run.revision;
        cp.finished = read_everything && !opts.dry_run;
        cp.updated = chrono::Utc::now().to_rfc3339();
        if !opts.dry_run {
            cp.save(&opts.checkpoint)?;
        }
        report.resources = cp.counters.clone();
        report.total = cp.total();
        report.given_up = cp.given_up.clone();
        report.interrupted = interrupted;
        if let Some(mut e) = fatal {
            if let MigrateError::NotLoaded { reported, .. } = &mut e {
                *reported = match k8s::metrics::config_report(self.api).await {
                    Ok(r) => r.config_hash.unwrap_or_else(|| "no hash".into()),
                    Err(err) => format!("unknown: {err}"),
                };
            }
            return Err(e);
        }
        // The proof: read etcd again, every value of the same resources. A run that found
        // nothing to rewrite already read everything on its write key at one revision.
        if read_everything && !opts.dry_run && report.total.targeted > 0 {
            let mut remaining = Remaining {
                count: 0,
                names: Vec::new(),
                limit: opts.max_list,
            };
            let verify_opts = ScanOptions {
                classify: ClassifyConfig::new(false, false, self.plugins, Vec::new()),
                patience: opts.patience,
                page_keys: opts.page_keys,
                ..Default::default()
            };
            scan::run(
                self.etcd,
                &self.config.config,
                self.etcd_prefix,
                &plan,
                &verify_opts,
                &mut remaining,
                &mut (),
            )
            .await?;
            report.remaining = remaining.count;
            report.remaining_objects = remaining.names;
        }
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Saves the checkpoint when `save_every` has passed since the last save.
    fn save_if_due(
        &self,
        cp: &mut Checkpoint,
        last_save: &mut Instant,
    ) -> Result<(), CheckpointError> {
        if !self.opts.dry_run && last_save.elapsed() >= self.opts.save_every {
            cp.updated = chrono::Utc::now().to_rfc3339();
            cp.save(&self.opts.checkpoint)?;
            *last_save = Instant::now();
        }
        Ok(())
    }

    fn stopping(&self, fatal: &Option<MigrateError>) -> bool {
        fatal.is_some() || self.opts.stop.load(Ordering::SeqCst)
    }

    fn handle(
        &self,
        r: TaskResult,
        cp: &mut Checkpoint,
        pages: &mut VecDeque<PageState>,
        fatal: &mut Option<MigrateError>,
        paths: &HashMap<GroupResource, ApiPath>,
    ) {
        let resource = r.target.resource.to_string();
        let c = cp.counters.entry(resource.clone()).or_default();
        c.writes += r.writes;
        c.put_writes += r.put_writes;
        c.conflicts += r.conflicts;
        match r.done {
            Done::Rewritten => {
                c.rewritten += 1;
                c.rewritten_by_put += u64::from(r.via == Some(WritePath::Put));
            }
            Done::AlreadyCurrent => c.already_current += 1,
            Done::Gone => c.gone += 1,
            // Not proven on the write key: counted, but the cursor must not pass it, so that
            // --resume targets it again.
            Done::Unchanged => {
                c.unchanged += 1;
                return;
            }
            Done::GivenUp(why) => {
                c.given_up += 1;
                if cp.given_up.len() < self.opts.max_list {
                    cp.given_up
                        .push(format!("{resource} {}: {why}", r.target.object));
                }
                return;
            }
            Done::Outage { waited, last_error } => {
                fatal.get_or_insert(MigrateError::ApiserverUnreachable {
                    url: self.api.url.clone(),
                    waited,
                    last_error,
                    checkpoint: self.opts.checkpoint.clone(),
                });
                return;
            }
            Done::Abandoned => return,
            Done::Forbidden(message) => {
                let path = paths.get(&r.target.resource);
                fatal.get_or_insert(MigrateError::Forbidden {
                    resource: resource.clone(),
                    object: r.target.object.clone(),
                    group: path.map(|p| p.group.clone()).unwrap_or_default(),
                    plural: path
                        .map(|p| p.plural.clone())
                        .unwrap_or_else(|| r.target.resource.resource.clone()),
                    message,
                    checkpoint: self.opts.checkpoint.clone(),
                });
                // Not done: the cursor must not pass it.
                return;
            }
            Done::Lagging(stored_as) => {
                fatal.get_or_insert(MigrateError::NotLoaded {
                    url: self.api.url.clone(),
                    resource: resource.clone(),
                    object: r.target.object.clone(),
                    stored_as,
                    write_key: self.config.config.resolve(&r.target.resource).write_label(),
                    reported: String::from("(see below)"),
                    config: self.config.path.clone(),
                    file_hash: self.config.hash.clone(),
                });
            }
        }
        settle(pages, r.page);
        advance(pages, cp);
    }
}

/// One target of page `seq` is finished.
/// Tells `progress` how many objects are targeted and finished so far.
fn report_rewrites(cp: &Checkpoint, progress: &mut dyn Progress) {
    let t = cp.total();
    let done = t.rewritten + t.already_current + t.gone + t.unchanged + t.given_up;
    progress.rewrites(t.targeted, done);
}

fn settle(pages: &mut VecDeque<PageState>, seq: u64) {
    if let Some(p) = pages.iter_mut().find(|p| p.seq == seq) {
        p.pending = p.pending.saturating_sub(1);
    }
}

/// Moves each range's cursor past every page whose targets are all finished, in order.
fn advance(pages: &mut VecDeque<PageState>, cp: &mut Checkpoint) {
    while let Some(front) = pages.front() {
        if front.pending > 0 || !front.dispatched {
            break;
        }
        if !front.last_key.is_empty() {
            cp.cursors
                .insert(front.range_start.clone(), front.last_key.clone());
        }
        pages.pop_front();
    }
}
