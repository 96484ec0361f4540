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
//! [`Splits`](super::super::scan::bound::Splits)), each watched by its own watcher, all at once
//! on one watch stream: each revision matches one watcher, a pass serves them all, and one
//! stream holds at most one message in memory (many streams held one each: 196 MiB at a
//! million). The values are classified as they arrive, in any order (no per-key order is
//! needed). The read is complete when etcd reports progress at the scan's revision, which it
//! does only once every watcher of the stream has caught up.

use std::ops::Range;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse};

use super::super::layout::{normalize_prefix, prefix_end};
use super::super::scan::{Classifier, ScanOptions, ScanPlan};
use super::super::{EtcdError, explain, is_transient};
use super::HistoryBuilder;
use crate::codec::ClassifyOptions;
use crate::config::EncryptionConfig;
use crate::model::census::HistoryReport;

/// The largest watch response accepted (fragments are asked for, so most are far smaller; one
/// change and its previous value can still be larger than etcd's request limit).
const MAX_MESSAGE: usize = 512 << 20;

/// Watch attempts before a failure stops the read: a watch stream that breaks (an etcd restart,
/// a leader change, a reset connection) is started again where each key range stopped.
const ATTEMPTS: u32 = 5;

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
    let compacted = compaction_revision(client, &prefix, revision).await?;
    let from = if compacted > 0 { compacted + 1 } else { 1 };
    let mut read = Read {
        parts: key_ranges(&prefix, splits)
            .into_iter()
            .map(|keys| Part {
                keys,
                cursor: Cursor::default(),
            })
            .collect(),
        revisions: from..revision + 1,
        classifier: Classifier::new(config, etcd_prefix, plan, &opts.classify),
        opts,
        builder: HistoryBuilder::new(list_limit),
    };
    let mut attempt = 1;
    loop {
        match read.watch(client).await {
            Ok(()) => return Ok(read.builder.finish(compacted, revision)),
            Err(Broken::Transient(e)) if attempt < ATTEMPTS => {
                tracing::debug!("history watch broke ({}); watching again", explain(&e));
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
            Err(Broken::Transient(e)) => return Err(request_error(e)),
            Err(Broken::Fatal(e)) => return Err(e),
        }
    }
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

/// How far a key range's changes have been taken: the last revision met and how many of its
/// changes (a transaction can change several keys at one revision), so that a watch started
/// again at that revision skips exactly what was already taken.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    revision: i64,
    taken_at_revision: usize,
    /// Changes at `revision` a watch started again must still skip.
    skip: usize,
}

/// One key range and how far it has been read.
struct Part {
    keys: (Vec<u8>, Vec<u8>),
    cursor: Cursor,
}

/// [`live`]'s reading state, kept across watch attempts.
struct Read<'a> {
    parts: Vec<Part>,
    /// The changes to read: after the compaction revision, up to the scan's.
    revisions: Range<i64>,
    classifier: Classifier<'a>,
    opts: &'a ScanOptions<'a>,
    builder: HistoryBuilder,
}

/// Why a watch ended before the history was read.
enum Broken {
    /// Worth watching again (see [`is_transient`]).
    Transient(etcd_client::Error),
    /// Not: a compaction passed the history, or a KMS plugin failed.
    Fatal(EtcdError),
}

impl From<etcd_client::Error> for Broken {
    fn from(e: etcd_client::Error) -> Self {
        // A request to a watch stream that has broken fails with a closed channel: the
        // stream's own error may not have been read yet.
        if is_transient(&e) || matches!(e, etcd_client::Error::WatchError(_)) {
            Broken::Transient(e)
        } else {
            Broken::Fatal(request_error(e))
        }
    }
}

impl Read<'_> {
    /// One watch stream with a watcher per key range (watch ID = index + 1), each from where
    /// its cursor says; ends once etcd reports progress at or past the last revision after
    /// every watcher was created.
    async fn watch(&mut self, client: &Client) -> Result<(), Broken> {
        for part in &mut self.parts {
            part.cursor.skip = part.cursor.taken_at_revision;
        }
        let options = |i: usize, part: &Part, start: i64| {
            let from = if part.cursor.revision > 0 {
                part.cursor.revision
            } else {
                start
            };
            WatchOptions::new()
                .with_range(part.keys.1.clone())
                .with_start_revision(from)
                .with_prev_key()
                .with_fragment()
                .with_watch_id(i as i64 + 1)
        };
        let start = self.revisions.start;
        let stream = client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(
                self.parts[0].keys.0.clone(),
                Some(options(0, &self.parts[0], start)),
            )
            .await?;
        let (mut requests, mut responses) = stream.split();
        let (mut asked, mut created) = (1, 0);
        // etcd answers a progress request only once every watcher of the stream has caught up.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            let all_created = created == self.parts.len();
            let next = (asked < self.parts.len()).then(|| {
                let part = &self.parts[asked];
                (part.keys.0.clone(), options(asked, part, start))
            });
            tokio::select! {
                sent = async {
                    let (key, opts) = next.expect("guarded by the branch condition");
                    requests.watch(key, Some(opts)).await
                }, if next.is_some() => {
                    sent?;
                    asked += 1;
                }
                msg = responses.message() => {
                    let Some(resp) = msg? else {
                        return Err(Broken::Transient(etcd_client::Error::WatchError(
                            "etcd closed the history watch before it was complete".into(),
                        )));
                    };
                    if resp.created() {
                        created += 1;
                        continue;
                    }
                    if self.take(&resp).await.map_err(Broken::Fatal)? && all_created {
                        return Ok(());
                    }
                    if all_created {
                        requests.request_progress().await?;
                    }
                }
                _ = tick.tick(), if all_created => {
                    requests.request_progress().await?;
                }
            }
        }
    }

    /// Classifies what one watch response's changes inside the revisions superseded; whether it
    /// is a progress report at or past the last revision.
    async fn take(&mut self, resp: &WatchResponse) -> Result<bool, EtcdError> {
        if resp.canceled() {
            return Err(if resp.compact_revision() > 0 {
                EtcdError::Compacted {
                    revision: self.revisions.start,
                }
            } else {
                EtcdError::Request {
                    message: resp.cancel_reason().to_string(),
                    hint: "",
                }
            });
        }
        if resp.events().is_empty() {
            let at = resp.header().map(|h| h.revision()).unwrap_or(0);
            return Ok(at >= self.revisions.end - 1);
        }
        let Some(part) = usize::try_from(resp.watch_id() - 1)
            .ok()
            .and_then(|i| self.parts.get_mut(i))
        else {
            // Never dropped silently: the counts would be short.
            return Err(EtcdError::Request {
                message: format!(
                    "etcd sent changes for watch {}, which atrest did not ask for",
                    resp.watch_id()
                ),
                hint: "",
            });
        };
        let superseded = changes(resp, &self.revisions, &mut part.cursor)?;
        self.opts
            .classify
            .prefetch(superseded.iter().map(|(_, prev)| prev.value()))
            .await
            .map_err(EtcdError::Kms)?;
        let options: &ClassifyOptions<'_> = &self.opts.classify.options;
        for (at, prev) in superseded {
            self.builder.superseded(
                &mut self.classifier,
                options,
                prev.key(),
                prev.mod_revision(),
                prev.value(),
                at,
            );
        }
        Ok(false)
    }
}

/// The changes of one response inside `revisions` that superseded a value, with that value;
/// `cursor` moves past each change taken (skipping those an earlier watch took).
fn changes<'r>(
    resp: &'r WatchResponse,
    revisions: &Range<i64>,
    cursor: &mut Cursor,
) -> Result<Vec<(i64, &'r etcd_client::KeyValue)>, EtcdError> {
    let mut out = Vec::new();
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let at = kv.mod_revision();
        if at >= revisions.end {
            continue;
        }
        if at == cursor.revision && cursor.skip > 0 {
            cursor.skip -= 1;
            continue;
        }
        if at == cursor.revision {
            cursor.taken_at_revision += 1;
        } else {
            *cursor = Cursor {
                revision: at,
                taken_at_revision: 1,
                skip: 0,
            };
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
        out.push((at, prev));
    }
    Ok(out)
}

/// A failed etcd request, as [`live`] reports it.
fn request_error(e: etcd_client::Error) -> EtcdError {
    EtcdError::Request {
        message: explain(&e),
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
