//! One object's rewrite ([`rewrite_one`]): the attempt loop of PUT or PATCH, the decision on
//! each answer (conflict, retry, outage), and the backoff between attempts.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::worker::{Done, Recheck, Shared, Target, TaskResult, recheck, still_stale};
use crate::codec::ProviderTable;
use crate::codec::object::put_body;
use crate::kube::rewrite::{self, Outcome, WritePath};
use crate::kube::{Api, ApiPath};

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
    let (api_version, body) = put_body(&plaintext, target.mod_revision)?;
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

/// Waits before an object's next attempt: exponential from 200 ms (or the apiserver's
/// Retry-After), at most 30 s, jittered.
async fn backoff(attempt: u32, after: Option<Duration>) {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt.min(6));
    let wait = after.unwrap_or(base).min(Duration::from_secs(30));
    tokio::time::sleep(wait.mul_f64(jitter())).await;
}
