//! One object's rewrite, and the pieces the engine hands to its workers: the targets a page
//! yields, the rate limiter, and the re-check in etcd after a conflict or a write.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Mutex;

use crate::GroupResource;
use crate::codec::{Options, ProviderTable};
use crate::etcd::scan::{Item, Visitor};
use crate::kube::rewrite::{self, Outcome};
use crate::kube::{Api, ApiPath};

/// One object to rewrite.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) resource: GroupResource,
    pub(super) key: String,
    pub(super) object: String,
    pub(super) mod_revision: i64,
    pub(super) uid: Option<String>,
}

/// Collects, per page, the objects not on their write key.
#[derive(Default)]
pub(super) struct Collector {
    pub(super) targets: Vec<Target>,
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
        if item.needs_rewrite() || item.class.verdict().unreadable() {
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
}

pub(super) struct TaskResult {
    pub(super) page: u64,
    pub(super) target: Target,
    pub(super) done: Done,
    pub(super) writes: u64,
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
}

/// Rewrites one object: PATCH; on conflict re-check etcd; retry transient failures with
/// jittered backoff (Retry-After when given); give up after `max_attempts`.
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
    let mut writes = 0u64;
    let mut conflicts = 0u64;
    let mut attempt = 0u32;
    let done = loop {
        attempt += 1;
        if let Some(l) = &shared.limiter {
            l.wait().await;
        }
        writes += 1;
        let outcome = rewrite::patch(
            &shared.api,
            path,
            ns.as_deref(),
            &name,
            target.mod_revision,
            target.uid.as_deref(),
        )
        .await;
        match outcome {
            Outcome::Rewritten { .. } => {
                let n = shared.rewrites_seen.fetch_add(1, Ordering::Relaxed);
                // Spot-check in etcd: the first few rewrites, then one in 500.
                if (n < 5 || n.is_multiple_of(500))
                    && let Some(stored_as) = still_stale(shared, table, &target.key).await
                {
                    break Done::Lagging(stored_as);
                }
                break Done::Rewritten;
            }
            Outcome::Unchanged => break Done::Unchanged,
            Outcome::Gone => break Done::Gone,
            Outcome::Forbidden(m) => break Done::Forbidden(m),
            Outcome::Failed(m) => break Done::GivenUp(m),
            Outcome::Conflict => {
                conflicts += 1;
                // Someone else wrote it: never overwrite; look at what etcd holds now.
                match recheck(shared, table, &target.key).await {
                    Recheck::Gone => break Done::Gone,
                    Recheck::Current => break Done::AlreadyCurrent,
                    Recheck::Stale { mod_revision } => {
                        // Still not on the write key: retry against what etcd holds now. The
                        // uid is dropped (a recreated object is rewritten too, harmlessly); the
                        // resourceVersion precondition still guards every write.
                        target.mod_revision = mod_revision;
                        target.uid = None;
                        if attempt >= shared.max_attempts {
                            break Done::GivenUp(format!(
                                "still changing after {attempt} attempts"
                            ));
                        }
                    }
                    Recheck::Unreadable(e) => {
                        if attempt >= shared.max_attempts {
                            break Done::GivenUp(format!("cannot re-check in etcd: {e}"));
                        }
                        backoff(attempt, None).await;
                    }
                }
            }
            Outcome::Retry { after, reason } => {
                if attempt >= shared.max_attempts {
                    break Done::GivenUp(format!("gave up after {attempt} attempts: {reason}"));
                }
                backoff(attempt, after).await;
            }
        }
    };
    TaskResult {
        page,
        target,
        done,
        writes,
        conflicts,
    }
}

pub(super) async fn backoff(attempt: u32, after: Option<Duration>) {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt.min(6));
    let wait = after.unwrap_or(base).min(Duration::from_secs(30));
    let jitter = rand::rng().random_range(0.5..1.5);
    tokio::time::sleep(wait.mul_f64(jitter)).await;
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
        let opts = Options {
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
