//! The steps of a re-encryption run ([`Reencrypt::run`]): the checkpoint it starts from, the
//! dispatch of the targeting scan's pages to concurrent rewrites, the drain of the writes in
//! flight, and the state handed from step to step (the end of a run: [`super::outcome`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::attempt::rewrite_one;
use super::worker::{Collector, Done, RateLimiter, Recheck, Shared, Target, TaskResult, recheck};
use super::{
    Checkpoint, CheckpointError, Counters, MigrateError, Preflight, Reencrypt, ReencryptReport,
    checkpoint,
};
use crate::GroupResource;
use crate::codec::{ClassifyConfig, ProviderTable};
use crate::etcd::scan::{Progress, Scan, ScanOptions, ScanPlan};
use crate::fsutil::ensure_room;
use crate::kube::{self as k8s, ApiPath};

/// Free space the checkpoint's folder must have before the first rewrite.
const CHECKPOINT_ROOM: u64 = 1 << 20;

/// How long the writes in flight may take to finish after SIGINT/SIGTERM before they are dropped
/// (their objects stay before the checkpoint's cursor: the next run checks them in etcd).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Keys per etcd read of a real (not dry) run, unless asked otherwise; see [`Reencrypt::run`].
const REWRITE_PAGE_KEYS: i64 = 5000;

/// What waiting on the rewrites in flight gave.
pub(super) enum Finished {
    /// One finished.
    Task(Box<TaskResult>),
    /// The apiserver answered nothing for the whole patience.
    Outage(MigrateError),
    /// Nothing in flight (or a task that did not finish normally).
    None,
}

/// One page of the targeting scan whose targets are not all finished yet.
pub(super) struct PageState {
    seq: u64,
    range_start: String,
    last_key: String,
    pending: usize,
    dispatched: bool,
}

/// A run's moving state, handed from step to step of [`Reencrypt::run`]: the checkpoint, the
/// pages whose targets are not all finished, the writes in flight, and the first fatal error.
pub(super) struct RunState {
    pub(super) cp: Checkpoint,
    /// What earlier runs finished (a resume): progress shows this run's share.
    pub(super) base: Counters,
    pub(super) report: ReencryptReport,
    pub(super) shared: Arc<Shared>,
    pub(super) sem: Arc<Semaphore>,
    pub(super) tasks: JoinSet<TaskResult>,
    /// The writes in flight, by etcd key: those dropped at an outage are looked up in etcd
    /// before the checkpoint is saved, so that one applied as the apiserver died is counted.
    pub(super) in_flight: HashMap<String, InFlight>,
    pub(super) pages: VecDeque<PageState>,
    pub(super) paths: HashMap<GroupResource, ApiPath>,
    pub(super) tables: HashMap<GroupResource, Arc<ProviderTable>>,
    pub(super) fatal: Option<MigrateError>,
    pub(super) last_save: Instant,
    /// The number of the last page read.
    pub(super) seq: u64,
}

impl<'a> Reencrypt<'a> {
    /// The checkpoint this run starts from. With `--resume` the saved one, refused under
    /// another config, with what earlier runs left unfinished forgotten (so that it is targeted
    /// and counted again); otherwise a new one bound to the config's hash.
    pub(super) fn start_checkpoint(&self) -> Result<Checkpoint, CheckpointError> {
        let opts = &self.opts;
        if opts.resume {
            let mut cp = Checkpoint::load(&opts.checkpoint)?;
            cp.check_config(&opts.checkpoint, &self.config.path, &self.config.hash)?;
            cp.forget_unfinished();
            return Ok(cp);
        }
        let now = crate::model::time::now();
        Ok(Checkpoint {
            version: checkpoint::CHECKPOINT_VERSION,
            config_path: self.config.path.clone(),
            config_hash: self.config.hash.clone(),
            started: now,
            updated: now,
            ..Default::default()
        })
    }

    /// How the targeting scan reads etcd: after the checkpoint's cursors, in pages sized for
    /// the rewrites, following compaction.
    pub(super) fn targeting_options(&self, cp: &Checkpoint) -> ScanOptions<'a> {
        let opts = &self.opts;
        ScanOptions {
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
        }
    }

    /// The state the run starts with: what its workers share (apiserver, etcd, rate limit,
    /// health), the slots for `concurrency` writes, and an empty report.
    pub(super) fn run_state(&self, cp: Checkpoint, revision: i64) -> RunState {
        let opts = &self.opts;
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
        RunState {
            base: cp.total(),
            cp,
            report: ReencryptReport {
                dry_run: opts.dry_run,
                resumed: opts.resume,
                revision,
                checkpoint: opts.checkpoint.clone(),
                ..Default::default()
            },
            shared,
            sem: Arc::new(Semaphore::new(opts.concurrency.max(1))),
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            pages: VecDeque::new(),
            paths: HashMap::new(),
            tables: HashMap::new(),
            fatal: None,
            last_save: Instant::now(),
            seq: 0,
        }
    }

    /// Reads the targeting scan's pages and sends their targets' rewrites while the scan
    /// streams on, until it ends, a stop signal or a fatal error. A page's cursor moves once it
    /// is fully dispatched and all its targets are finished.
    pub(super) async fn dispatch(
        &mut self,
        st: &mut RunState,
        scan: &mut Scan<'_>,
        plan: &ScanPlan,
        progress: &mut dyn Progress,
    ) -> Result<(), MigrateError> {
        let mut collector = Collector {
            targets: Vec::new(),
            keep_values: self.opts.put && !self.opts.dry_run,
        };
        while !self.stopping(&st.fatal) {
            let Some(page) = scan.next_page(&mut collector).await? else {
                break;
            };
            // Counted as scanned before any of its objects is targeted.
            progress.advance(page.count);
            st.seq += 1;
            let targets = std::mem::take(&mut collector.targets);
            let range_start = String::from_utf8_lossy(&plan.ranges[page.range].start).into_owned();
            st.pages.push_back(PageState {
                seq: st.seq,
                range_start,
                last_key: String::from_utf8_lossy(&page.last_key).into_owned(),
                pending: targets.len(),
                dispatched: false,
            });
            if !self.dispatch_page(st, targets, progress).await? {
                break;
            }
            if let Some(p) = st.pages.back_mut() {
                p.dispatched = true;
            }
            advance(&mut st.pages, &mut st.cp);
            while let Some(Ok(r)) = st.tasks.try_join_next() {
                self.finish_task(st, r);
            }
            report_rewrites(&st.cp, &st.base, progress);
            self.save_if_due(st)?;
        }
        Ok(())
    }

    /// Counts each of one page's targets and sends its rewrite (a dry run only lists it).
    /// `Ok(false)`: a stop or a fatal error ended dispatching mid-page; the page is then never
    /// marked dispatched, so the cursor does not pass it.
    async fn dispatch_page(
        &mut self,
        st: &mut RunState,
        targets: Vec<Target>,
        progress: &mut dyn Progress,
    ) -> Result<bool, MigrateError> {
        for t in targets {
            let resource = t.resource.clone();
            st.cp
                .write_keys
                .entry(resource.clone())
                .or_insert_with(|| self.config.config.resolve(&t.resource).write_key());
            st.cp.counters.entry(resource.clone()).or_default().targeted += 1;
            if self.opts.dry_run {
                if st.report.would_rewrite.len() < self.opts.max_list {
                    st.report
                        .would_rewrite
                        .push(format!("{resource} {}", t.object));
                }
                settle(&mut st.pages, st.seq);
                continue;
            }
            if self.stopping(&st.fatal) {
                return Ok(false);
            }
            if let Some(check) = self.preflight.take() {
                self.before_first_write(st, check).await?;
            }
            let (path, table) = self.route(st, &t.resource).await?;
            let Some(permit) = self.free_slot(st, progress).await? else {
                return Ok(false);
            };
            st.spawn(t, path, table, permit);
        }
        Ok(true)
    }

    /// Just before the first write (so a run with nothing to rewrite asks the apiservers
    /// nothing): the caller's preflight, then a first checkpoint save.
    async fn before_first_write(
        &self,
        st: &mut RunState,
        check: Preflight<'_>,
    ) -> Result<(), MigrateError> {
        check.await.map_err(MigrateError::Preflight)?;
        // The checkpoint must be writable before anything is rewritten: a full
        // disk stops the run here, not after the first rewrites.
        let dir = self
            .opts
            .checkpoint
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        ensure_room(
            dir,
            "the re-encryption checkpoint",
            CHECKPOINT_ROOM,
            "the checkpoint is small, but each save writes a new copy first".into(),
        )
        .map_err(CheckpointError::from)?;
        st.cp.updated = crate::model::time::now();
        st.cp.save(&self.opts.checkpoint)?;
        st.last_save = Instant::now();
        Ok(())
    }

    /// Where a resource's rewrites go (its API path, discovered once) and how its stored values
    /// are read back (its provider table, built once).
    async fn route(
        &self,
        st: &mut RunState,
        resource: &GroupResource,
    ) -> Result<(ApiPath, Arc<ProviderTable>), MigrateError> {
        if !st.paths.contains_key(resource) {
            let p = k8s::discover(self.api, resource).await?;
            st.paths.insert(resource.clone(), p);
        }
        let path = st.paths[resource].clone();
        let table = st
            .tables
            .entry(resource.clone())
            .or_insert_with(|| Arc::new(ProviderTable::new(&self.config.config.resolve(resource))))
            .clone();
        Ok((path, table))
    }

    /// Waits for a slot among the `concurrency` writes in flight, handling finished rewrites
    /// meanwhile. `None`: a fatal error came first, and nothing more is sent.
    async fn free_slot(
        &self,
        st: &mut RunState,
        progress: &mut dyn Progress,
    ) -> Result<Option<OwnedSemaphorePermit>, MigrateError> {
        loop {
            if let Ok(p) = st.sem.clone().try_acquire_owned() {
                return Ok(Some(p));
            }
            self.wait_one(st, progress).await;
            self.save_if_due(st)?;
            if st.fatal.is_some() {
                return Ok(None);
            }
        }
    }

    /// Finishes the writes in flight, whatever stopped dispatching. A stop signal gives them
    /// [`STOP_GRACE`]; after an outage they are dropped at once: their objects stay before the
    /// cursor, and [`Self::recheck_dropped`] asks etcd what became of them.
    pub(super) async fn drain(&self, st: &mut RunState, progress: &mut dyn Progress) {
        let mut stop_seen: Option<Instant> = None;
        loop {
            if self.opts.stop.load(Ordering::SeqCst) {
                stop_seen.get_or_insert_with(Instant::now);
            }
            // A signal gives the writes in flight a few seconds; an outage none.
            let give_up = stop_seen.is_some_and(|t| t.elapsed() >= STOP_GRACE)
                || matches!(st.fatal, Some(MigrateError::ApiserverUnreachable { .. }));
            if give_up {
                st.tasks.abort_all();
            }
            if !self.wait_one(st, progress).await && st.tasks.is_empty() {
                break;
            }
        }
    }

    /// Waits for the next rewrite to finish and records it, or the outage declared meanwhile.
    /// `false`: nothing finished (none in flight, or a task that did not finish normally).
    async fn wait_one(&self, st: &mut RunState, progress: &mut dyn Progress) -> bool {
        match self
            .next_finished(&mut st.tasks, &st.shared, progress)
            .await
        {
            Finished::Task(r) => {
                self.finish_task(st, *r);
                report_rewrites(&st.cp, &st.base, progress);
                true
            }
            Finished::Outage(e) => {
                st.fatal.get_or_insert(e);
                true
            }
            Finished::None => false,
        }
    }

    /// A rewrite finished: it is no longer in flight, and its result is counted.
    fn finish_task(&self, st: &mut RunState, r: TaskResult) {
        st.in_flight.remove(&r.target.key);
        self.handle(r, st);
    }

    /// Writes dropped unanswered (an outage, or a stop's grace ran out): what etcd holds
    /// decides, as for a write that gave up, so that one applied as the apiserver died is
    /// counted and its page can still let the cursor move.
    pub(super) async fn recheck_dropped(&self, st: &mut RunState) {
        let dropped = std::mem::take(&mut st.in_flight);
        for (_, f) in dropped {
            let done = match recheck(&st.shared, &f.table, &f.target.key).await {
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
            self.handle(r, st);
        }
    }
}

impl RunState {
    /// Starts one rewrite of the last page read, recorded as in flight so that etcd can be asked
    /// what became of it if it is dropped.
    fn spawn(
        &mut self,
        t: Target,
        path: ApiPath,
        table: Arc<ProviderTable>,
        permit: OwnedSemaphorePermit,
    ) {
        let seq = self.seq;
        self.in_flight.insert(
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
        let shared = Arc::clone(&self.shared);
        self.tasks.spawn(async move {
            let r = rewrite_one(&shared, &path, &table, t, seq).await;
            drop(permit);
            r
        });
    }
}

/// A write in flight: enough to look its object up in etcd if it is dropped.
pub(super) struct InFlight {
    page: u64,
    target: Target,
    table: Arc<ProviderTable>,
}

/// Tells `progress` how many objects are targeted and finished so far.
/// This run's rewrites (a resumed run's checkpoint also counts earlier runs'): targeted among
/// the keys this run scanned, and finished among those targeted, so that progress never shows
/// more done than scanned.
pub(super) fn report_rewrites(cp: &Checkpoint, base: &Counters, progress: &mut dyn Progress) {
    let finished =
        |t: &Counters| t.rewritten + t.already_current + t.gone + t.unchanged + t.given_up;
    let t = cp.total();
    progress.rewrites(
        t.targeted.saturating_sub(base.targeted),
        finished(&t).saturating_sub(finished(base)),
    );
}

/// One target of page `seq` is finished.
pub(super) fn settle(pages: &mut VecDeque<PageState>, seq: u64) {
    if let Some(p) = pages.iter_mut().find(|p| p.seq == seq) {
        p.pending = p.pending.saturating_sub(1);
    }
}

/// Moves each range's cursor past every page whose targets are all finished, in order.
pub(super) fn advance(pages: &mut VecDeque<PageState>, cp: &mut Checkpoint) {
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
