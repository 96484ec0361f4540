//! The re-encryption engine. The etcd scan says which objects are not on their resource's write
//! key; each gets the no-op write (PUT or PATCH) of [`crate::kube::rewrite`], concurrently and rate-limited,
//! while the scan streams on. Progress is a per-range cursor (the last key whose page is fully
//! done), saved atomically every few seconds, so a run can stop anywhere and resume. Afterwards
//! etcd is read again to prove the result.

pub mod checkpoint;
mod error;
mod options;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use checkpoint::{Checkpoint, CheckpointError, Counters};
pub use error::MigrateError;
pub use options::{ReencryptOptions, ReencryptReport};
use worker::{
    Collector, Done, RateLimiter, Recheck, Remaining, Shared, Target, TaskResult, recheck,
    rewrite_one,
};

use crate::GroupResource;
use crate::codec::ProviderTable;
use crate::config::LoadedConfig;
use crate::etcd::scan::{self, ClassifyConfig, Progress, Scan, ScanOptions};
use crate::kube::rewrite::WritePath;
use crate::kube::{self as k8s, Api, ApiPath};

/// Free space the checkpoint's folder must have before the first rewrite.
const CHECKPOINT_ROOM: u64 = 1 << 20;

/// How long the writes in flight may take to finish after SIGINT/SIGTERM before they are dropped
/// (their objects stay before the checkpoint's cursor: the next run checks them in etcd).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Keys per etcd read of a real (not dry) run, unless asked otherwise; see [`Reencrypt::run`].
const REWRITE_PAGE_KEYS: i64 = 5000;

/// What waiting on the rewrites in flight gave.
enum Finished {
    /// One finished.
    Task(Box<TaskResult>),
    /// The apiserver answered nothing for the whole patience.
    Outage(MigrateError),
    /// Nothing in flight (or a task that did not finish normally).
    None,
}

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
        let plan = scan::plan_covered(&self.config.config, self.etcd_prefix, &opts.resources);
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
        // What earlier runs finished (a resume): progress shows this run's share.
        let base = cp.total();

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
        // The writes in flight, by etcd key: those dropped at an outage are looked up in etcd
        // before the checkpoint is saved, so that one applied as the apiserver died is counted.
        let mut in_flight: HashMap<String, InFlight> = HashMap::new();
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
            // Counted as scanned before any of its objects is targeted.
            progress.advance(page.count);
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
                    .or_insert_with(|| self.config.config.resolve(&t.resource).write_key());
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
                    // The checkpoint must be writable before anything is rewritten: a full
                    // disk stops the run here, not after the first rewrites.
                    let dir = opts
                        .checkpoint
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    crate::fsutil::ensure_room(
                        dir,
                        "the re-encryption checkpoint",
                        CHECKPOINT_ROOM,
                        "the checkpoint is small, but each save writes a new copy first".into(),
                    )
                    .map_err(CheckpointError::from)?;
                    cp.updated = chrono::Utc::now().to_rfc3339();
                    cp.save(&opts.checkpoint)?;
                    last_save = Instant::now();
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
                    match self.next_finished(&mut tasks, &shared, progress).await {
                        Finished::Task(r) => {
                            in_flight.remove(&r.target.key);
                            self.handle(*r, &mut cp, &mut pages, &mut fatal, &paths);
                            report_rewrites(&cp, &base, progress);
                        }
                        Finished::Outage(e) => {
                            fatal.get_or_insert(e);
                        }
                        Finished::None => {}
                    }
                    self.save_if_due(&mut cp, &mut last_save)?;
                    if fatal.is_some() {
                        break 'pages;
                    }
                };
                in_flight.insert(
                    t.key.clone(),
                    InFlight {
                        page: seq,
                        // Without the stored bytes: no second copy of the object's data.
                        target: Target {
                            resource: t.resource.clone(),
                            key: t.key.clone(),
                            object: t.object.clone(),
                            mod_revision: t.mod_revision,
                            uid: t.uid.clone(),
                            value: None,
                        },
                        table: Arc::clone(&table),
                    },
                );
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
                in_flight.remove(&r.target.key);
                self.handle(r, &mut cp, &mut pages, &mut fatal, &paths);
            }
            report_rewrites(&cp, &base, progress);
            self.save_if_due(&mut cp, &mut last_save)?;
        }
        // Finish the writes in flight, whatever stopped the loop; after an outage, drop them:
        // their objects stay before the cursor, and the next run finds in etcd what became of
        // them.
        let mut stop_seen: Option<Instant> = None;
        loop {
            if opts.stop.load(Ordering::SeqCst) {
                stop_seen.get_or_insert_with(Instant::now);
            }
            // A signal gives the writes in flight a few seconds; an outage none.
            let give_up = stop_seen.is_some_and(|t| t.elapsed() >= STOP_GRACE)
                || matches!(fatal, Some(MigrateError::ApiserverUnreachable { .. }));
            if give_up {
                tasks.abort_all();
            }
            match self.next_finished(&mut tasks, &shared, progress).await {
                Finished::Task(r) => {
                    in_flight.remove(&r.target.key);
                    self.handle(*r, &mut cp, &mut pages, &mut fatal, &paths);
                    report_rewrites(&cp, &base, progress);
                }
                Finished::Outage(e) => {
                    fatal.get_or_insert(e);
                }
                Finished::None if tasks.is_empty() => break,
                Finished::None => {}
            }
        }
        // Writes dropped unanswered: what etcd holds decides, as for a write that gave up.
        for (_, f) in in_flight.drain() {
            let done = match recheck(&shared, &f.table, &f.target.key).await {
                Recheck::Current => Done::AlreadyCurrent,
                Recheck::Gone => Done::Gone,
                Recheck::Stale { .. } | Recheck::Unreadable(_) => continue,
            };
            let r = TaskResult {
                page: f.page,
                target: f.target,
                done,
                writes: 0,
                put_writes: 0,
                via: None,
                conflicts: 0,
            };
            self.handle(r, &mut cp, &mut pages, &mut fatal, &paths);
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

    /// The next finished rewrite. Meanwhile, every second, says how long the apiserver has
    /// answered nothing (once that passes 5 s), and declares the outage when it reaches the
    /// patience: a request that hangs is counted from when it was sent, so the run stops at
    /// its patience, not at the patience plus a request deadline.
    async fn next_finished(
        &self,
        tasks: &mut JoinSet<TaskResult>,
        shared: &Shared,
        progress: &mut dyn Progress,
    ) -> Finished {
        let patience = shared.apiserver_patience;
        loop {
            if tasks.is_empty() {
                return Finished::None;
            }
            match tokio::time::timeout(Duration::from_secs(1), tasks.join_next()).await {
                Ok(Some(Ok(r))) => return Finished::Task(Box::new(r)),
                Ok(Some(Err(e))) => {
                    if !e.is_cancelled() {
                        tracing::error!("a rewrite task failed: {e}");
                    }
                    return Finished::None;
                }
                Ok(None) => return Finished::None,
                Err(_) => {
                    let Some(silent) = shared.health.silent_for() else {
                        continue;
                    };
                    if silent >= Duration::from_secs(5) {
                        progress.stalled(&format!("apiserver {}", self.api.url), silent, patience);
                    }
                    if silent >= patience && !shared.abort.swap(true, Ordering::SeqCst) {
                        return Finished::Outage(MigrateError::ApiserverUnreachable {
                            url: self.api.url.clone(),
                            waited: silent,
                            last_error: format!(
                                "no answer to the requests in flight for {} s",
                                silent.as_secs()
                            ),
                            checkpoint: self.opts.checkpoint.clone(),
                        });
                    }
                }
            }
        }
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
                    write_key: self.config.config.resolve(&r.target.resource).write_key(),
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

/// A write in flight: enough to look its object up in etcd if it is dropped.
struct InFlight {
    page: u64,
    target: Target,
    table: Arc<ProviderTable>,
}

/// One target of page `seq` is finished.
/// Tells `progress` how many objects are targeted and finished so far.
/// This run's rewrites (a resumed run's checkpoint also counts earlier runs'): targeted among
/// the keys this run scanned, and finished among those targeted, so that progress never shows
/// more done than scanned.
fn report_rewrites(cp: &Checkpoint, base: &Counters, progress: &mut dyn Progress) {
    let finished =
        |t: &Counters| t.rewritten + t.already_current + t.gone + t.unchanged + t.given_up;
    let t = cp.total();
    progress.rewrites(
        t.targeted.saturating_sub(base.targeted),
        finished(&t).saturating_sub(finished(base)),
    );
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
