//! One object's rewrite, and the pieces the engine hands to its workers: the targets a page
//! yields, the rate limiter, and the re-check in etcd after a conflict or a write.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::GroupResource;
use crate::codec::{ClassifyOptions, ProviderTable};
use crate::etcd::scan::{Item, Visitor};
use crate::kube::rewrite::{self, Outcome, WritePath};
use crate::kube::{Api, ApiPath};

/// One object to rewrite.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) resource: GroupResource,
    pub(super) key: String,
    pub(super) object: String,
    pub(super) mod_revision: i64,
    pub(super) uid: Option<String>,
    /// The value as etcd held it at `mod_revision`, when it may open without a KMS plugin: what
    /// a PUT sends back.
    pub(super) value: Option<StoredValue>,
}

/// A stored value, which may be plaintext: zeroized on drop, never printed.
#[derive(Clone)]
pub(super) struct StoredValue(pub(super) zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredValue({} bytes)", self.0.len())
    }
}

/// Collects, per page, the objects not on their write key.
#[derive(Default)]
pub(super) struct Collector {
    pub(super) targets: Vec<Target>,
    /// Keep each target's stored value, for the PUT (not in a dry run or with PATCH only).
    pub(super) keep_values: bool,
}

impl Visitor for Collector {
    fn visit(&mut self, item: &Item<'_>) {
        if item.needs_rewrite() {
            self.targets.push(Target {
                resource: item.resource.clone(),
                key: item.key.to_string(),
                object: item.object.to_string(),
                mod_revision: item.mod_revision,
                uid: item.class.info.as_ref().and_then(|i| i.uid.clone()),
                value: (self.keep_values && item.class.kms.is_none())
                    .then(|| StoredValue(zeroize::Zeroizing::new(item.value.to_vec()))),
            });
        }
    }
}

/// Counts what is still not on its write key.
pub(super) struct Remaining {
    pub(super) count: u64,
    pub(super) names: Vec<String>,
    pub(super) limit: usize,
}

impl Visitor for Remaining {
    fn visit(&mut self, item: &Item<'_>) {
        if item.needs_attention() {
            self.count += 1;
            if self.names.len() < self.limit {
                self.names.push(format!(
                    "{} {} ({})",
                    item.resource, item.object, item.class.label
                ));
            }
        }
    }
}

/// A client-side rate limit: one request per `interval`.
pub(super) struct RateLimiter {
    pub(super) interval: Duration,
    pub(super) next: Mutex<Instant>,
}

impl RateLimiter {
    pub(super) fn new(qps: f64) -> Option<Arc<Self>> {
        (qps > 0.0).then(|| {
            Arc::new(Self {
                interval: Duration::from_secs_f64(1.0 / qps),
                next: Mutex::new(Instant::now()),
            })
        })
    }
    pub(super) async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// What one object's rewrite ended as.
#[derive(Debug)]
pub(super) enum Done {
    Rewritten,
    AlreadyCurrent,
    Gone,
    Unchanged,
    GivenUp(String),
    Forbidden(String),
    /// Written, but etcd still shows a non-write key.
    Lagging(String),
    /// No request got an answer from the apiserver for the whole patience: not this object's
    /// failure, so it is neither counted nor finished.
    Outage {
        waited: Duration,
        last_error: String,
    },
    /// Stopped waiting out an outage (another worker declared it, or a stop signal): neither
    /// counted nor finished.
    Abandoned,
}

pub(super) struct TaskResult {
    pub(super) page: u64,
    pub(super) target: Target,
    pub(super) done: Done,
    pub(super) writes: u64,
    /// Of `writes`, the protobuf PUTs.
    pub(super) put_writes: u64,
    /// The request of the write that rewrote it.
    pub(super) via: Option<WritePath>,
    pub(super) conflicts: u64,
}

pub(super) struct Shared {
    pub(super) api: Api,
    pub(super) etcd: etcd_client::Client,
    pub(super) limiter: Option<Arc<RateLimiter>>,
    pub(super) max_attempts: u32,
    pub(super) rewrites_seen: AtomicU64,
    /// KMS v2 provider → current key ID, for re-checks in etcd.
    pub(super) kms_key_ids: HashMap<String, String>,
    /// Whether the apiserver answers at all, across every worker.
    pub(super) health: Health,
    /// How long the apiserver may answer nothing before the run stops.
    pub(super) apiserver_patience: Duration,
    /// Set when a worker declared an outage: the others stop waiting.
    pub(super) abort: AtomicBool,
    /// The run's stop signal: a worker waiting out an outage stops waiting.
    pub(super) stop: Arc<AtomicBool>,
    /// Every object is PATCHed: asked for (`--request patch`), or RBAC refused a PUT (no
    /// `update` verb; the PATCH needs only `patch`).
    pub(super) patch_only: AtomicBool,
}

/// Whether the apiserver answers: a count of answers (any status but 429/5xx) and, while no
/// request has been answered, since when and why. Shared by every worker, so that one object
/// failing while others succeed is told apart from an apiserver that answers nobody.
#[derive(Default)]
pub(super) struct Health {
    answers: AtomicU64,
    failing: std::sync::Mutex<Failing>,
}

#[derive(Default)]
struct Failing {
    /// Requests sent and not yet answered or failed.
    in_flight: u64,
    /// Since when atrest has been waiting on the apiserver without an answer: the first send
    /// after the last answer (or the last answer, when requests were still in flight then).
    waiting_since: Option<Instant>,
    /// The first failure since the last answer.
    since: Option<Instant>,
    /// A warning was logged for this outage.
    warned: bool,
}

impl Health {
    /// A request is about to be sent.
    pub(super) fn sending(&self) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        f.in_flight += 1;
        f.waiting_since.get_or_insert_with(Instant::now);
    }

    /// The apiserver answered a request.
    pub(super) fn answered(&self) {
        self.answers.fetch_add(1, Ordering::SeqCst);
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if f.warned {
            tracing::warn!("the apiserver answers again");
        }
        let in_flight = f.in_flight.saturating_sub(1);
        *f = Failing {
            in_flight,
            waiting_since: (in_flight > 0).then(Instant::now),
            ..Failing::default()
        };
    }

    /// A request failed with no answer (connection error, a deadline, 429, 5xx): since when
    /// nothing has been answered — from the oldest request still waiting, not from this
    /// failure, so that a request hanging until its deadline counts as silence.
    pub(super) fn failed(&self) -> Instant {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        f.in_flight = f.in_flight.saturating_sub(1);
        let silent = *f.waiting_since.get_or_insert_with(Instant::now);
        *f.since.get_or_insert(silent)
    }

    /// How long the apiserver has answered nothing while atrest waited on it; `None` while it
    /// answers, or nothing is asked of it.
    pub(super) fn silent_for(&self) -> Option<Duration> {
        let f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        f.waiting_since
            .filter(|_| f.in_flight > 0 || f.since.is_some())
            .map(|t| t.elapsed())
    }

    /// Logs once per outage that the apiserver has answered nothing for a while.
    fn warn(&self, waited: Duration, patience: Duration, reason: &str) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if !f.warned && waited >= Duration::from_secs(5) {
            f.warned = true;
            tracing::warn!(
                "the apiserver has answered no request for {} s ({reason}); waiting up to {} s for it",
                waited.as_secs(),
                patience.as_secs()
            );
        }
    }

    /// Answers so far.
    pub(super) fn answers(&self) -> u64 {
        self.answers.load(Ordering::SeqCst)
    }
}

/// The PUT body for `target` when the PUT path applies ([`crate::kube::rewrite`]): the stored
/// value opens without a KMS plugin, is a protobuf object, and is in the URL's apiVersion.
/// The body holds the object's data in plaintext: zeroized when the object is done.
fn put_body_for(
    table: &ProviderTable,
    path: &ApiPath,
    target: &Target,
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let value = target.value.as_ref()?;
    let plaintext = table.open(target.key.as_bytes(), &value.0)?;
    let (api_version, body) = crate::codec::object::put_body(&plaintext, target.mod_revision)?;
    (api_version == path.api_version()).then_some(zeroize::Zeroizing::new(body))
}

/// Rewrites one object: PUT where it applies, else PATCH; on conflict re-check etcd; retry
/// transient failures with jittered backoff (Retry-After when given); give up after `max_attempts`.
///
/// A transient failure counts as an attempt only when the apiserver answered some other request
/// since this object's previous failure (or its first send), or says it is ready: the object
/// fails while others succeed. Otherwise the apiserver is down or refusing everything:
/// the failure is not counted, and the worker waits (backoff) until the apiserver answers again,
/// or stops with [`Done::Outage`] once nothing has been answered for `apiserver_patience`.
pub(super) async fn rewrite_one(
    shared: &Shared,
    path: &ApiPath,
    table: &ProviderTable,
    mut target: Target,
    page: u64,
) -> TaskResult {
    let (ns, name) = match target.object.split_once('/') {
        Some((ns, name)) if path.namespaced => (Some(ns.to_string()), name.to_string()),
        _ => (None, target.object.clone()),
    };
    let put = if shared.patch_only.load(Ordering::Relaxed) {
        None
    } else {
        put_body_for(table, path, &target)
    };
    target.value = None;
    let mut rw = Rewrite {
        shared,
        path,
        table,
        target,
        ns,
        name,
        put,
        writes: 0,
        put_writes: 0,
        conflicts: 0,
        via: None,
        attempt: 0,
        outage_waits: 0,
        answers_seen: shared.health.answers(),
    };
    let done = rw.attempts().await;
    let done = rw.unfinished(done).await;
    TaskResult {
        page,
        target: rw.target,
        done,
        writes: rw.writes,
        put_writes: rw.put_writes,
        via: rw.via,
        conflicts: rw.conflicts,
    }
}

/// One object's rewrite in progress ([`rewrite_one`]): the request it sends, and what its
/// attempts have counted so far.
struct Rewrite<'s> {
    shared: &'s Shared,
    path: &'s ApiPath,
    table: &'s ProviderTable,
    target: Target,
    ns: Option<String>,
    name: String,
    /// The PUT body while the PUT path applies; `None`: the merge PATCH.
    put: Option<zeroize::Zeroizing<Vec<u8>>>,
    writes: u64,
    put_writes: u64,
    conflicts: u64,
    /// The request of the write that rewrote it.
    via: Option<WritePath>,
    /// Attempts counted against this object (failures while the apiserver answers others).
    attempt: u32,
    /// Tries not counted: the apiserver answered nobody meanwhile.
    outage_waits: u32,
    /// The apiserver's answer count at this object's last failure (or its first send).
    answers_seen: u64,
}

impl Rewrite<'_> {
    /// Writes until the object is done one way or another: each round waits for the rate
    /// limit, sends the write and decides from the apiserver's answer.
    async fn attempts(&mut self) -> Done {
        loop {
            self.attempt += 1;
            if self.attempt + self.outage_waits > 1 && self.shared.abort.load(Ordering::SeqCst) {
                return Done::Abandoned;
            }
            if let Some(l) = &self.shared.limiter {
                l.wait().await;
            }
            let (outcome, path_taken) = self.send().await;
            if !matches!(outcome, Outcome::Retry { .. }) {
                self.shared.health.answered();
            }
            if let Some(done) = self.decide(outcome, path_taken).await {
                return done;
            }
        }
    }

    /// Sends one write: the PUT of the stored object while it applies, else the merge PATCH.
    async fn send(&mut self) -> (Outcome, WritePath) {
        let shared = self.shared;
        self.writes += 1;
        shared.health.sending();
        match &self.put {
            Some(body) => {
                self.put_writes += 1;
                let outcome = rewrite::put(
                    &shared.api,
                    self.path,
                    self.ns.as_deref(),
                    &self.name,
                    self.target.mod_revision,
                    body.to_vec(),
                )
                .await;
                (outcome, WritePath::Put)
            }
            None => {
                let outcome = rewrite::patch(
                    &shared.api,
                    self.path,
                    self.ns.as_deref(),
                    &self.name,
                    self.target.mod_revision,
                    self.target.uid.as_deref(),
                )
                .await;
                (outcome, WritePath::Patch)
            }
        }
    }

    /// What the apiserver's answer means for the object: `Some` when it is done, `None` to
    /// write again.
    async fn decide(&mut self, outcome: Outcome, path_taken: WritePath) -> Option<Done> {
        match outcome {
            Outcome::Rewritten { .. } => Some(self.rewritten(path_taken).await),
            Outcome::Unchanged => Some(Done::Unchanged),
            Outcome::Gone => Some(Done::Gone),
            Outcome::Forbidden(m) if path_taken == WritePath::Put => {
                // No `update` verb: PATCH this object and every other one (not an attempt).
                tracing::info!(
                    "PUT refused ({m}); rewriting with merge PATCH, which needs only the patch verb"
                );
                self.shared.patch_only.store(true, Ordering::Relaxed);
                self.put = None;
                self.attempt -= 1;
                None
            }
            Outcome::Forbidden(m) => Some(Done::Forbidden(m)),
            Outcome::Failed(m) => Some(Done::GivenUp(m)),
            Outcome::Conflict => self.conflict().await,
            Outcome::Retry { after, reason } => self.retry(after, reason).await,
        }
    }

    /// The apiserver rewrote it. The first few rewrites, then one in 500, are spot-checked in
    /// etcd: still on an old key means the apiserver has not loaded the config.
    async fn rewritten(&mut self, path_taken: WritePath) -> Done {
        self.via = Some(path_taken);
        let n = self.shared.rewrites_seen.fetch_add(1, Ordering::Relaxed);
        // Spot-check in etcd: the first few rewrites, then one in 500.
        if (n < 5 || n.is_multiple_of(500))
            && let Some(stored_as) = still_stale(self.shared, self.table, &self.target.key).await
        {
            return Done::Lagging(stored_as);
        }
        Done::Rewritten
    }

    /// A 409: someone else wrote it. Never overwrite: what etcd holds now decides, and a
    /// still stale object is written again against its new revision.
    async fn conflict(&mut self) -> Option<Done> {
        self.conflicts += 1;
        let attempt = self.attempt;
        // Someone else wrote it: never overwrite; look at what etcd holds now.
        match recheck(self.shared, self.table, &self.target.key).await {
            Recheck::Gone => Some(Done::Gone),
            Recheck::Current => Some(Done::AlreadyCurrent),
            Recheck::Stale { mod_revision } => {
                // Still not on the write key: retry against what etcd holds now. The
                // uid is dropped (a recreated object is rewritten too, harmlessly); the
                // resourceVersion precondition still guards every write.
                self.target.mod_revision = mod_revision;
                self.target.uid = None;
                // The PUT body is the old object: the retry PATCHes what etcd holds.
                self.put = None;
                (attempt >= self.shared.max_attempts)
                    .then(|| Done::GivenUp(format!("still changing after {attempt} attempts")))
            }
            Recheck::Unreadable(e) => {
                if attempt >= self.shared.max_attempts {
                    return Some(Done::GivenUp(format!("cannot re-check in etcd: {e}")));
                }
                backoff(attempt, None).await;
                None
            }
        }
    }

    /// A transient failure (429, 5xx, no connection). Counted against the object only when the
    /// apiserver answers otherwise; if not, an outage is waited out ([`Self::outage_wait`]).
    async fn retry(&mut self, after: Option<Duration>, reason: String) -> Option<Done> {
        let shared = self.shared;
        let since = shared.health.failed();
        let answers = shared.health.answers();
        let others_answered = answers != self.answers_seen;
        self.answers_seen = answers;
        // With no other request answered meanwhile (the last objects of a run, or one
        // in flight), ask the apiserver whether it is ready: a ready apiserver failing
        // this object is this object's failure too. Overload (429) never is.
        if others_answered || (!reason.starts_with("429:") && apiserver_ready(&shared.api).await) {
            // The apiserver answers: this object's own failure.
            let attempt = self.attempt;
            if attempt >= shared.max_attempts {
                return Some(Done::GivenUp(format!(
                    "gave up after {attempt} attempts: {reason}"
                )));
            }
            backoff(attempt, after).await;
            return None;
        }
        self.outage_wait(since, after, reason).await
    }

    /// Nothing answered since this object's last try: not counted against it. Waits a little
    /// and tries again, until the apiserver has answered nothing since `since` for the whole
    /// patience ([`Done::Outage`]), another worker declared the outage, or the run stops.
    async fn outage_wait(
        &mut self,
        since: Instant,
        after: Option<Duration>,
        reason: String,
    ) -> Option<Done> {
        let shared = self.shared;
        self.attempt -= 1;
        self.outage_waits += 1;
        let waited = since.elapsed();
        let patience = shared.apiserver_patience;
        if waited >= patience || shared.abort.load(Ordering::SeqCst) {
            shared.abort.store(true, Ordering::SeqCst);
            return Some(Done::Outage {
                waited,
                last_error: reason,
            });
        }
        if shared.stop.load(Ordering::SeqCst) {
            return Some(Done::Abandoned);
        }
        shared.health.warn(waited, patience, &reason);
        // Short waits, so that the apiserver's return is noticed soon; never past the
        // patience, so that the last try is made when it runs out.
        let base = Duration::from_millis(250) * 2u32.saturating_pow(self.outage_waits.min(5));
        let wait = after
            .unwrap_or(base)
            .min(Duration::from_secs(5))
            .mul_f64(jitter())
            .min(patience - waited + Duration::from_millis(10));
        tokio::time::sleep(wait).await;
        None
    }

    /// Not finished because of an outage or a stop: what etcd holds decides. A PATCH applied
    /// just before the apiserver died, whose answer was lost, is on the write key now.
    async fn unfinished(&self, done: Done) -> Done {
        match done {
            Done::Outage { .. } | Done::Abandoned => {
                match recheck(self.shared, self.table, &self.target.key).await {
                    Recheck::Current => Done::AlreadyCurrent,
                    Recheck::Gone => Done::Gone,
                    Recheck::Stale { .. } | Recheck::Unreadable(_) => done,
                }
            }
            done => done,
        }
    }
}

/// Whether the apiserver says it is ready (`GET /readyz` answered 200 within 5 s).
async fn apiserver_ready(api: &Api) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), api.get_text("/readyz")).await,
        Ok(Ok((200, _)))
    )
}

/// A factor in [0.5, 1.5) that spreads the retries of many workers so that they do not line up.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    // Without randomness the waits are merely not spread.
    if getrandom::fill(&mut b).is_err() {
        return 1.0;
    }
    0.5 + (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) async fn backoff(attempt: u32, after: Option<Duration>) {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt.min(6));
    let wait = after.unwrap_or(base).min(Duration::from_secs(30));
    tokio::time::sleep(wait.mul_f64(jitter())).await;
}

pub(super) enum Recheck {
    Gone,
    Current,
    Stale { mod_revision: i64 },
    Unreadable(String),
}

/// What etcd holds for `key` now: whether it is on the write key, its label and revision.
pub(super) async fn stored_now(
    shared: &Shared,
    table: &ProviderTable,
    key: &str,
) -> Result<Option<(bool, String, i64)>, String> {
    let mut kv = shared.etcd.kv_client();
    let resp = kv.get(key, None).await.map_err(|e| e.to_string())?;
    Ok(resp.kvs().first().map(|v| {
        let opts = ClassifyOptions {
            kms_key_ids: shared.kms_key_ids.clone(),
            ..Default::default()
        };
        let c = table.classify(v.key(), v.value(), &opts);
        (c.on_write_key(), c.label.to_string(), v.mod_revision())
    }))
}

pub(super) async fn recheck(shared: &Shared, table: &ProviderTable, key: &str) -> Recheck {
    match stored_now(shared, table, key).await {
        Ok(None) => Recheck::Gone,
        Ok(Some((true, _, _))) => Recheck::Current,
        Ok(Some((false, _, mod_revision))) => Recheck::Stale { mod_revision },
        Err(e) => Recheck::Unreadable(e),
    }
}

/// After a successful write: the label etcd shows when it is still not the write key.
pub(super) async fn still_stale(
    shared: &Shared,
    table: &ProviderTable,
    key: &str,
) -> Option<String> {
    match stored_now(shared, table, key).await {
        Ok(Some((false, label, _))) => Some(label),
        _ => None,
    }
}
