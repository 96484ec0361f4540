//! The scan's reader: each planned range read at the pinned revision as one streamed range
//! where etcd has one (3.7's RangeStream: etcd sends chunks of about 1.5 MiB and counts
//! nothing), else — and always when a page size is asked for — by paged range reads (or on
//! past a compaction when asked), retried through etcd restarts, each page sized to about
//! 4 MiB; sent one page (or chunk) ahead of classification.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, GetResponse, KeyValue, KvClient};
use tokio::sync::mpsc;

use super::bound::Stride;
use super::{FIRST_PAGE_KEYS, PlannedRange, ScanRun, TARGET_PAGE_BYTES};
use crate::etcd::{EtcdError, explain, is_transient};

/// One page as etcd answered it, and the planned range it belongs to.
pub(super) struct Page {
    pub(super) range: usize,
    pub(super) kvs: Vec<KeyValue>,
}

/// What [`fetch_all`] reads, and how.
pub(super) struct Fetch {
    pub(super) ranges: Vec<PlannedRange>,
    pub(super) revision: i64,
    pub(super) resume: HashMap<Vec<u8>, Vec<u8>>,
    pub(super) patience: Duration,
    pub(super) max_keys: i64,
    pub(super) follow_compaction: bool,
    /// Whether a range may be read as a stream (no page size was asked for).
    pub(super) stream: bool,
}

/// Reads every planned range page by page and sends the pages down `tx`; stops at the first
/// error (sent down `tx` too) or when the receiver is gone. Says how the run went.
pub(super) async fn fetch_all(
    client: Client,
    fetch: Fetch,
    tx: mpsc::Sender<Result<Page, EtcdError>>,
) -> ScanRun {
    let Fetch {
        ranges,
        revision,
        resume,
        patience,
        max_keys,
        follow_compaction,
        stream,
    } = fetch;
    let kv = client.kv_client().max_decoding_message_size(512 << 20);
    let mut reader = Reader {
        client,
        kv,
        tx,
        end: ScanRun {
            revision,
            ..Default::default()
        },
        limit: FIRST_PAGE_KEYS.min(max_keys),
        max_keys,
        patience,
        follow_compaction,
        stream,
    };
    for (i, range) in ranges.iter().enumerate() {
        let start = match resume.get(&range.start) {
            Some(after) => next_key(after),
            None => range.start.clone(),
        };
        if !reader.read_range(i, range, start).await {
            break;
        }
    }
    reader.end
}

/// [`fetch_all`]'s reading state, carried from page to page and range to range.
struct Reader {
    /// To reconnect after a transient failure.
    client: Client,
    /// The connection pages are read with.
    kv: KvClient,
    /// Where pages (and the error that stops the run) go.
    tx: mpsc::Sender<Result<Page, EtcdError>>,
    /// The revision read at, and the retries and re-pins so far.
    end: ScanRun,
    /// Keys to ask for in the next page, sized from the last page's average value.
    limit: i64,
    /// The most keys a page may ask for.
    max_keys: i64,
    /// How long etcd may stay unreachable before giving up.
    patience: Duration,
    /// Whether to read on at the current revision after a compaction (see [`Fetch`]).
    follow_compaction: bool,
    /// Whether ranges are tried as streams: not when a page size was asked for, nor once etcd
    /// said it has no RangeStream (before 3.7).
    stream: bool,
}

/// How a streamed range ended.
enum Streamed {
    /// Every key of the range was sent.
    Done,
    /// The receiver is gone (or an error was sent): the run stops.
    Stopped,
    /// Not read to its end (no RangeStream, or the stream broke): pages take over from this key.
    From(Vec<u8>),
}

impl Reader {
    /// Reads one planned range from `start` and sends its pages; false when the run must stop.
    /// Each page after the first names a range end estimated to hold about one page
    /// ([`Stride`]), so etcd counts only about what it returns; every bounded range is read
    /// to its end before the next, so the estimate changes the cost, never what is read.
    async fn read_range(&mut self, i: usize, range: &PlannedRange, mut start: Vec<u8>) -> bool {
        if self.stream {
            match self.stream_range(i, range, &start).await {
                Streamed::Done => return true,
                Streamed::Stopped => return false,
                Streamed::From(key) => start = key,
            }
        }
        let mut stride = Stride::default();
        loop {
            let end = stride.end(&start, &range.end, self.limit);
            let Some(mut resp) = self.get_page(&start, &end).await else {
                return false;
            };
            let more = resp.more();
            let kvs = resp.take_kvs();
            let bounded = end != range.end;
            let reached = match kvs.last() {
                Some(last) if more => last.key().to_vec(),
                _ => end.clone(),
            };
            stride.learn(kvs.first().map(KeyValue::key), &reached, kvs.len());
            start = match kvs.last() {
                Some(last) if more => next_key(last.key()),
                _ if bounded => end,
                _ => Vec::new(),
            };
            if !kvs.is_empty() {
                let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
                let avg = (bytes / kvs.len()).max(1);
                self.limit = ((TARGET_PAGE_BYTES / avg) as i64).clamp(1, self.max_keys);
                if !self.send(i, kvs).await {
                    return false;
                }
            }
            if !more && !bounded {
                return true;
            }
        }
    }

    /// Reads one planned range from `start` as a single streamed range at the pinned revision
    /// and sends each chunk as a page. etcd reads each chunk at that revision and counts
    /// nothing, where a paged read makes it count up to each page's range end. The last chunk
    /// carries the header: a stream that ends without it, breaks (etcd restarted, compacted
    /// past the revision) or is not served (etcd before 3.7) hands the rest of the range to the
    /// paged read, which retries, re-pins or stops as it always does.
    async fn stream_range(&mut self, i: usize, range: &PlannedRange, start: &[u8]) -> Streamed {
        let opts = GetOptions::new()
            .with_range(range.end.clone())
            .with_revision(self.end.revision);
        let mut next = start.to_vec();
        let broke = |this: &mut Self, e: &etcd_client::Error| {
            if matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unimplemented)
            {
                tracing::debug!("etcd serves no RangeStream (before 3.7): reading by pages");
                this.stream = false;
            } else {
                tracing::debug!("streamed range broke ({}); reading on by pages", explain(e));
            }
        };
        let mut chunks = match self.kv.get_stream(start.to_vec(), Some(opts)).await {
            Ok(c) => c,
            Err(e) => {
                broke(self, &e);
                return Streamed::From(next);
            }
        };
        loop {
            match chunks.message().await {
                Ok(Some(mut chunk)) => {
                    let last = chunk.header().is_some();
                    let kvs = chunk.take_kvs();
                    if let Some(kv) = kvs.last() {
                        next = next_key(kv.key());
                    }
                    if !kvs.is_empty() && !self.send(i, kvs).await {
                        return Streamed::Stopped;
                    }
                    if last {
                        self.end.streamed += 1;
                        return Streamed::Done;
                    }
                }
                Ok(None) => {
                    tracing::debug!(
                        "streamed range ended before its last chunk; reading on by pages"
                    );
                    return Streamed::From(next);
                }
                Err(e) => {
                    broke(self, &e);
                    return Streamed::From(next);
                }
            }
        }
    }

    /// Offers a page's keys as history splits and sends it on; false once the receiver is gone.
    async fn send(&mut self, range: usize, kvs: Vec<KeyValue>) -> bool {
        for kv in &kvs {
            self.end.splits.offer(kv.key());
        }
        self.tx.send(Ok(Page { range, kvs })).await.is_ok()
    }

    /// One page from `start`, retried with backoff through transient failures for up to the
    /// patience; `None` once an error has been sent instead.
    async fn get_page(&mut self, start: &[u8], range_end: &[u8]) -> Option<GetResponse> {
        // The patience is wall time from the start of the first failed attempt: a frozen etcd
        // holds each attempt until the connection's keep-alive gives up (about 15 s), so
        // summing the backoffs alone let a 10 s patience last minutes.
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let opts = GetOptions::new()
                .with_range(range_end.to_vec())
                .with_revision(self.end.revision)
                .with_limit(self.limit);
            let attempt = Instant::now();
            let e = match self.kv.get(start.to_vec(), Some(opts)).await {
                Ok(r) => return Some(r),
                Err(e) => e,
            };
            if e.to_string().contains("compacted") {
                if self.repin().await {
                    continue;
                }
                let revision = self.end.revision;
                let _ = self.tx.send(Err(EtcdError::Compacted { revision })).await;
                return None;
            }
            let waited = failing_since.get_or_insert(attempt).elapsed();
            if is_transient(&e) && waited < self.patience {
                tracing::warn!("etcd read failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                self.end.retries += 1;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                self.kv = self.client.kv_client().max_decoding_message_size(512 << 20);
                continue;
            }
            let err = if is_transient(&e) {
                EtcdError::Unavailable {
                    waited,
                    message: explain(&e),
                    resource: String::from_utf8_lossy(start).into_owned(),
                }
            } else {
                request_error(&e)
            };
            let _ = self.tx.send(Err(err)).await;
            return None;
        }
    }

    /// After etcd compacted past the pinned revision: when following compactions, pins etcd's
    /// current revision instead and says so; false when the run must stop.
    async fn repin(&mut self) -> bool {
        if !self.follow_compaction {
            return false;
        }
        let Some(now) = current_revision(&mut self.kv).await else {
            return false;
        };
        tracing::warn!(
            "etcd compacted past revision {} mid-run; reading on at revision {now}",
            self.end.revision
        );
        self.end.revision = now;
        self.end.repinned += 1;
        true
    }
}

/// etcd's current revision, from a count-only read.
async fn current_revision(kv: &mut KvClient) -> Option<i64> {
    let r = kv
        .get("/", Some(GetOptions::new().with_count_only()))
        .await
        .ok()?;
    r.header().map(|h| h.revision())
}

/// The smallest key after `key`.
pub(super) fn next_key(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

pub(super) fn request_error(e: &etcd_client::Error) -> EtcdError {
    let message = explain(e);
    let hint = if message.contains("permission denied") {
        "\n  hint: the etcd user needs read (range) permission on the apiserver's prefix"
    } else {
        ""
    };
    EtcdError::Request { message, hint }
}
