//! The scan's reader: paged range reads at the pinned revision (or on past a compaction when
//! asked), retried through etcd restarts, each page sized to about 4 MiB, sent one page ahead
//! of classification.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{Client, GetOptions, KeyValue};
use tokio::sync::mpsc;

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
}

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
    } = fetch;
    let mut end = ScanRun {
        revision,
        ..Default::default()
    };
    let mut kv = client.kv_client().max_decoding_message_size(512 << 20);
    let mut limit = FIRST_PAGE_KEYS.min(max_keys);
    for (i, range) in ranges.iter().enumerate() {
        let mut start = match resume.get(&range.start) {
            Some(after) => next_key(after),
            None => range.start.clone(),
        };
        loop {
            let mut waited = Duration::ZERO;
            let mut backoff = Duration::from_millis(100);
            let resp = loop {
                let opts = GetOptions::new()
                    .with_range(range.end.clone())
                    .with_revision(end.revision)
                    .with_limit(limit);
                match kv.get(start.clone(), Some(opts)).await {
                    Ok(r) => break r,
                    Err(e) if e.to_string().contains("compacted") => {
                        if follow_compaction && let Some(now) = current_revision(&mut kv).await {
                            tracing::warn!(
                                "etcd compacted past revision {} mid-run; reading on at revision {now}",
                                end.revision
                            );
                            end.revision = now;
                            end.repinned += 1;
                            continue;
                        }
                        let _ = tx
                            .send(Err(EtcdError::Compacted {
                                revision: end.revision,
                            }))
                            .await;
                        return end;
                    }
                    Err(e) if is_transient(&e) && waited < patience => {
                        tracing::warn!("etcd read failed, retrying in {backoff:?}: {e}");
                        tokio::time::sleep(backoff).await;
                        end.retries += 1;
                        waited += backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        kv = client.kv_client().max_decoding_message_size(512 << 20);
                    }
                    Err(e) => {
                        let err = if is_transient(&e) {
                            EtcdError::Unavailable {
                                waited,
                                message: explain(&e),
                                resource: String::from_utf8_lossy(&start).into_owned(),
                            }
                        } else {
                            request_error(&e)
                        };
                        let _ = tx.send(Err(err)).await;
                        return end;
                    }
                }
            };
            let more = resp.more();
            let mut resp = resp;
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
            let avg = (bytes / kvs.len()).max(1);
            limit = ((TARGET_PAGE_BYTES / avg) as i64).clamp(1, max_keys);
            start = next_key(last.key());
            if tx.send(Ok(Page { range: i, kvs })).await.is_err() {
                return end;
            }
            if !more {
                break;
            }
        }
    }
    end
}

/// etcd's current revision, from a count-only read.
async fn current_revision(kv: &mut etcd_client::KvClient) -> Option<i64> {
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
