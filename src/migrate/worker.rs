//! The pieces the engine hands to its workers: the targets a page yields, the rate limiter, the
//! apiserver's health, and the re-check in etcd after a conflict or a write. One object's
//! rewrite itself is in [`super::attempt`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::GroupResource;
use crate::codec::{ClassifyOptions, ProviderTable};
use crate::etcd::scan::{Item, Visitor};
use crate::kube::Api;
use crate::kube::rewrite::WritePath;

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
    pub(super) fn warn(&self, waited: Duration, patience: Duration, reason: &str) {
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
