//! Reading etcd's retained history live. Every value etcd still keeps that a newer revision has
//! superseded is the previous value of some change after the compaction revision (compaction
//! keeps each key's latest value at or before it), so a watch from just after the compaction
//! revision with each change's previous value (`prev_kv`) hands over exactly those values, each
//! once, without any state per key.
//!
//! etcd sends a watcher that is behind at most 1,000 revisions per pass of its sync loop, passes
//! are 100 ms apart while watchers stay behind, and each pass reads every revision from the
//! oldest watcher's on and matches each against every watcher of its key: one watcher over all
//! of history reads about 10,000 revisions a second, and watchers over the same keys only add
//! matching. The keys are therefore split into ranges (at keys the scan spaced evenly, see
//! [`Splits`](super::super::scan::bound::Splits)), each watched by its own watcher, all at
//! once: each revision matches one watcher, and a pass serves them all. The values they hand
//! over are classified as they arrive, in any order (no per-key order is needed).

use std::ops::Range;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::super::layout::{normalize_prefix, prefix_end};
use super::super::scan::{Classifier, ScanOptions, ScanPlan};
use super::super::{EtcdError, explain, is_transient};
use super::HistoryBuilder;
use crate::config::EncryptionConfig;
use crate::model::census::HistoryReport;

/// Watchers at once (etcd's sync loop serves up to 512 per pass). Measured at 100,000 older
/// values (`scripts/bench-history.sh`): 128 took 1.9–2.5 s, 256 2.2–2.5 s and 500 1.2–1.9 s,
/// with peak RSS about 40, 55 and 37–69 MiB (what etcd has sent and atrest not yet read).
const WATCHERS: usize = 256;
/// Batches waiting to be classified; a batch is one watch response's superseded values.
const QUEUED: usize = 8;
/// The largest watch response accepted (fragments are asked for, so most are far smaller; one
/// change and its previous value can still be larger than etcd's request limit).
const MAX_MESSAGE: usize = 512 << 20;

/// A value a later write or delete superseded.
struct Superseded {
    key: Vec<u8>,
    /// The value's own revision.
    revision: i64,
    value: Vec<u8>,
    /// The revision of the write or delete that superseded it.
    at: i64,
}

/// Reads etcd's retained history live: every value a change after the compaction revision (up
/// to `revision`) superseded, classified into a [`HistoryReport`]. `splits` are keys under the
/// prefix to split the work at (any keys: they change the speed, never what is read). Only
/// reads.
#[allow(clippy::too_many_arguments)]
pub async fn live(
    client: &Client,
    config: &EncryptionConfig,
    etcd_prefix: &str,
    plan: &ScanPlan,
    opts: &ScanOptions<'_>,
    revision: i64,
    splits: &[Vec<u8>],
    list_limit: usize,
) -> Result<HistoryReport, EtcdError> {
    let prefix = normalize_prefix(etcd_prefix).into_bytes();
    let parts = key_ranges(&prefix, splits);
    let compacted = compaction_revision(client, &prefix, revision).await?;
    let from = if compacted > 0 { compacted + 1 } else { 1 };
    let mut classifier = Classifier::new(config, etcd_prefix, plan, &opts.classify);
    let mut builder = HistoryBuilder::new(list_limit);

    let (tx, mut rx) = mpsc::channel::<Vec<Superseded>>(QUEUED);
    // Aborted when dropped, so a failed classification stops every watcher.
    let mut feeder = JoinSet::new();
    feeder.spawn(watch_parts(client.clone(), parts, from..revision + 1, tx));
    while let Some(batch) = rx.recv().await {
        opts.classify
            .prefetch(batch.iter().map(|s| s.value.as_slice()))
            .await
            .map_err(EtcdError::Kms)?;
        let options = &opts.classify.options;
        for s in &batch {
            builder.superseded(&mut classifier, options, &s.key, s.revision, &s.value, s.at);
        }
    }
    match feeder.join_next().await {
        Some(Ok(result)) => result?,
        Some(Err(e)) => return Err(stopped(e)),
        None => {}
    }
    Ok(builder.finish(compacted, revision))
}

/// `[prefix, s1), [s1, s2), …, [sN, end of prefix)`: the prefix cut at the split keys inside it.
fn key_ranges(prefix: &[u8], splits: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let end = prefix_end(prefix);
    let mut cuts: Vec<&[u8]> = splits
        .iter()
        .map(Vec::as_slice)
        .filter(|k| *k > prefix && *k < end.as_slice())
        .collect();
    cuts.sort();
    cuts.dedup();
    let mut ranges = Vec::with_capacity(cuts.len() + 1);
    let mut start = prefix.to_vec();
    for cut in cuts {
        ranges.push((std::mem::replace(&mut start, cut.to_vec()), cut.to_vec()));
    }
    ranges.push((start, end));
    ranges
}

/// Reads the `revisions` of each key range, [`WATCHERS`] ranges at once; ends when every range
/// is read or at the first error (the other watchers are dropped with the set).
async fn watch_parts(
    client: Client,
    parts: Vec<(Vec<u8>, Vec<u8>)>,
    revisions: Range<i64>,
    tx: mpsc::Sender<Vec<Superseded>>,
) -> Result<(), EtcdError> {
    let mut watchers = JoinSet::new();
    let mut parts = parts.into_iter();
    loop {
        while watchers.len() < WATCHERS {
            let Some(keys) = parts.next() else { break };
            watchers.spawn(read_part(
                client.clone(),
                keys,
                revisions.clone(),
                tx.clone(),
            ));
        }
        match watchers.join_next().await {
            None => return Ok(()),
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(stopped(e)),
        }
    }
}

/// How far a key range's changes have been taken: the last revision met and how many of its
/// changes (a transaction can change several keys at one revision), so that a watch started
/// again at that revision skips exactly what was already taken.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    revision: i64,
    taken_at_revision: usize,
}

/// Watch attempts per key range before a failure stops the read: a watch stream that breaks
/// (an etcd restart, a leader change, a reset connection) is started again where it stopped.
const ATTEMPTS: u32 = 5;

/// Watches `keys` from `revisions.start` until every change before `revisions.end` has arrived,
/// sending the values those changes superseded; a broken watch is started again where it
/// stopped, up to [`ATTEMPTS`] times.
async fn read_part(
    client: Client,
    keys: (Vec<u8>, Vec<u8>),
    revisions: Range<i64>,
    tx: mpsc::Sender<Vec<Superseded>>,
) -> Result<(), EtcdError> {
    let mut cursor = Cursor::default();
    let mut attempt = 1;
    loop {
        match watch_part(&client, &keys, &revisions, &mut cursor, &tx).await {
            Err(Broken::Transient(e)) if attempt < ATTEMPTS => {
                tracing::debug!("history watch broke ({}); watching again", explain(&e));
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
            Err(Broken::Transient(e)) => return Err(request_error(e)),
            Err(Broken::Fatal(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
}

/// Why a watch ended before its key range was read.
enum Broken {
    /// Worth watching again (see [`is_transient`]).
    Transient(etcd_client::Error),
    /// Not: compaction, or the history reader is gone.
    Fatal(EtcdError),
}

impl From<etcd_client::Error> for Broken {
    fn from(e: etcd_client::Error) -> Self {
        if is_transient(&e) {
            Broken::Transient(e)
        } else {
            Broken::Fatal(request_error(e))
        }
    }
}

/// One watch of `keys`, from where `cursor` says (see [`read_part`]).
async fn watch_part(
    client: &Client,
    keys: &(Vec<u8>, Vec<u8>),
    revisions: &Range<i64>,
    cursor: &mut Cursor,
    tx: &mpsc::Sender<Vec<Superseded>>,
) -> Result<(), Broken> {
    let from = if cursor.revision > 0 {
        cursor.revision
    } else {
        revisions.start
    };
    let mut skip = cursor.taken_at_revision;
    let options = WatchOptions::new()
        .with_range(keys.1.clone())
        .with_start_revision(from)
        .with_prev_key()
        .with_fragment();
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE)
        .watch(keys.0.clone(), Some(options))
        .await?;
    // etcd answers a progress request only once the watcher has caught up: then no change
    // after the last one it sent exists yet. Asked after every response (the watcher may have
    // just caught up) and on a tick (it may have caught up without a response).
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg? else {
                    return Err(Broken::Transient(etcd_client::Error::WatchError(
                        "etcd closed a history watch before it was complete".into(),
                    )));
                };
                let (values, complete) =
                    take(&resp, revisions, cursor, &mut skip).map_err(Broken::Fatal)?;
                if !values.is_empty() && tx.send(values).await.is_err() {
                    // The reader stopped; its error is the one reported.
                    return Ok(());
                }
                if complete {
                    return Ok(());
                }
                stream.request_progress().await?;
            }
            _ = tick.tick() => {
                stream.request_progress().await?;
            }
        }
    }
}

/// One watch response: the values its changes inside `revisions` superseded, and whether all
/// of them have now arrived (a change past them, or progress at or past the last). `cursor`
/// moves past each change taken; the first `skip` changes at the cursor's revision were taken
/// by an earlier watch.
fn take(
    resp: &WatchResponse,
    revisions: &Range<i64>,
    cursor: &mut Cursor,
    skip: &mut usize,
) -> Result<(Vec<Superseded>, bool), EtcdError> {
    if resp.canceled() {
        return Err(if resp.compact_revision() > 0 {
            EtcdError::Compacted {
                revision: revisions.start,
            }
        } else {
            EtcdError::Request {
                message: resp.cancel_reason().to_string(),
                hint: "",
            }
        });
    }
    let mut values = Vec::new();
    let mut complete = false;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let at = kv.mod_revision();
        if at >= revisions.end {
            complete = true;
            continue;
        }
        if at == cursor.revision && *skip > 0 {
            *skip -= 1;
            continue;
        }
        if at == cursor.revision {
            cursor.taken_at_revision += 1;
        } else {
            *cursor = Cursor {
                revision: at,
                taken_at_revision: 1,
            };
            *skip = 0;
        }
        // A put of version 1 creates its key: it superseded nothing.
        if ev.event_type() == EventType::Put && kv.version() == 1 {
            continue;
        }
        // etcd leaves the previous value out only when it can no longer read it: a
        // compaction passed it during this read.
        let Some(prev) = ev.prev_kv() else {
            return Err(EtcdError::Compacted { revision: at - 1 });
        };
        values.push(Superseded {
            key: prev.key().to_vec(),
            revision: prev.mod_revision(),
            value: prev.value().to_vec(),
            at,
        });
    }
    let progress = !resp.created() && resp.events().is_empty();
    let at = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((values, complete || (progress && at >= revisions.end - 1)))
}

/// A failed etcd request, as [`live`] reports it.
fn request_error(e: etcd_client::Error) -> EtcdError {
    EtcdError::Request {
        message: explain(&e),
        hint: "",
    }
}

/// A history reader task that panicked or was cancelled (a bug: reported, not hidden).
fn stopped(e: tokio::task::JoinError) -> EtcdError {
    EtcdError::Request {
        message: format!("a history reader stopped: {e}"),
        hint: "",
    }
}

/// etcd's compaction revision: the smallest revision a read may still ask for. etcd does not
/// report it, so it is found by bisection with single-key count reads (a read below it is
/// refused as compacted); 0 when nothing was compacted.
async fn compaction_revision(client: &Client, key: &[u8], current: i64) -> Result<i64, EtcdError> {
    let kv = client.kv_client();
    let readable = |rev: i64| {
        let mut kv = kv.clone();
        let key = key.to_vec();
        async move {
            match kv
                .get(
                    key,
                    Some(GetOptions::new().with_revision(rev).with_count_only()),
                )
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.to_string().contains("compacted") => Ok(false),
                Err(e) => Err(EtcdError::Request {
                    message: explain(&e),
                    hint: "",
                }),
            }
        }
    };
    if readable(1).await? {
        return Ok(0);
    }
    // Invariant: `lo` is compacted, `hi` is readable.
    let (mut lo, mut hi) = (1i64, current.max(1));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if readable(mid).await? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}
