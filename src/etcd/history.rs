//! etcd's history: every older revision it still keeps. etcd keeps each superseded value until a
//! compaction passes it (the apiserver compacts every 5 minutes by default; not every cluster
//! keeps that default), so plaintext written before encryption was turned on, or values under a
//! key since removed, can still be read with `etcdctl get --rev`. This module classifies those
//! older values, live (from the compaction revision to now) or in a db file (every revision in
//! it), and says which compaction would drop them. atrest never compacts.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, KvClient, WatchClient, WatchOptions, WatchResponse,
};

use super::layout::{normalize_prefix, prefix_end};
use super::scan::bound::Stride;
use super::scan::{Classifier, PlannedRange, ScanOptions, ScanPlan, Visitor};
use super::{EtcdError, explain};
use crate::codec::ClassifyOptions;
use crate::config::{EncryptionConfig, Resolved};
use crate::model::census::{HistoryGroup, HistoryRef, HistoryReport};
use crate::model::{KeyLabel, Residue, Sample, State};

/// A key's revision as read live: (key, revision, value; `None` for a delete).
type Change = (Vec<u8>, i64, Option<Vec<u8>>);

struct Pending {
    revision: i64,
    group: Option<usize>,
}

/// Collects revisions key by key (each key's revisions in increasing order; keys interleaved
/// freely) and counts every value a newer revision supersedes.
pub struct HistoryBuilder {
    pending: HashMap<Vec<u8>, Pending>,
    groups: Vec<HistoryGroup>,
    index: HashMap<(String, KeyLabel, State), usize>,
    list_limit: usize,
}

impl HistoryBuilder {
    /// Samples hold at most `list_limit` names per group; counts are exact.
    pub fn new(list_limit: usize) -> Self {
        Self {
            pending: HashMap::new(),
            groups: Vec::new(),
            index: HashMap::new(),
            list_limit,
        }
    }

    fn group(
        &mut self,
        resource: &str,
        label: &KeyLabel,
        state: State,
        residue: Option<Residue>,
    ) -> usize {
        let id = (resource.to_string(), label.clone(), state);
        if let Some(i) = self.index.get(&id) {
            return *i;
        }
        self.groups.push(HistoryGroup {
            resource: resource.to_string(),
            stored_as: label.clone(),
            state,
            residue,
            values: 0,
            first_revision: i64::MAX,
            last_revision: 0,
            dropped_by_compaction_at: 0,
            sample: Sample::default(),
        });
        self.index.insert(id, self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// Records `key` at `revision`: a value in `group`, or a delete (`None`). The key's previous
    /// revision, if any, becomes an older value superseded at `revision`.
    fn record(&mut self, key: &[u8], revision: i64, group: Option<usize>) {
        let previous = match self.pending.get_mut(key) {
            Some(p) if p.revision >= revision => return,
            Some(p) => Some(std::mem::replace(p, Pending { revision, group })),
            None => {
                self.pending
                    .insert(key.to_vec(), Pending { revision, group });
                None
            }
        };
        if let Some(Pending {
            revision: old,
            group: Some(g),
        }) = previous
        {
            let limit = self.list_limit;
            let g = &mut self.groups[g];
            g.values += 1;
            g.first_revision = g.first_revision.min(old);
            g.last_revision = g.last_revision.max(old);
            g.dropped_by_compaction_at = g.dropped_by_compaction_at.max(revision);
            g.sample.push(limit, || HistoryRef {
                key: String::from_utf8_lossy(key).into_owned(),
                revision: old,
            });
        }
    }

    /// Classifies `value` (or records a delete) of `key` at `revision`; keys outside the plan's
    /// resources are skipped.
    pub(crate) fn add(
        &mut self,
        classifier: &mut Classifier<'_>,
        options: &ClassifyOptions<'_>,
        key: &[u8],
        revision: i64,
        value: Option<&[u8]>,
    ) {
        let Some(range) = classifier.range_of(key) else {
            return;
        };
        let Some(value) = value else {
            self.record(key, revision, None);
            return;
        };
        let found = classifier.class_of(range, key, value, options, &mut Ignore, |info, _, c| {
            (
                info.resource.to_string(),
                c.label.clone().into_owned(),
                c.state,
                Residue::of(c.state, c.apiserver_readable, info.encrypts),
            )
        });
        if let Some((resource, label, state, residue)) = found {
            let g = self.group(&resource, &label, state, residue);
            self.record(key, revision, Some(g));
        }
    }

    /// The report: groups by resource (`secrets` first), key and state.
    pub fn finish(self, from_revision: i64, to_revision: i64) -> HistoryReport {
        let mut groups: Vec<HistoryGroup> =
            self.groups.into_iter().filter(|g| g.values > 0).collect();
        groups.sort_by(|a, b| {
            (
                a.resource != "secrets",
                &a.resource,
                a.stored_as.to_string(),
                a.state,
            )
                .cmp(&(
                    b.resource != "secrets",
                    &b.resource,
                    b.stored_as.to_string(),
                    b.state,
                ))
        });
        let older_values = groups.iter().map(|g| g.values).sum();
        let residue = groups
            .iter()
            .filter(|g| g.residue.is_some())
            .map(|g| g.values)
            .sum();
        let compact_to_drop_residue = groups
            .iter()
            .filter(|g| g.residue.is_some())
            .map(|g| g.dropped_by_compaction_at)
            .max();
        HistoryReport {
            from_revision,
            to_revision,
            older_values,
            residue,
            compact_to_drop_residue,
            groups,
        }
    }
}

/// A visitor for classification alone: history values are counted by the builder, not shown.
struct Ignore;

impl Visitor for Ignore {
    fn resource(&mut self, _resolved: &Resolved) {}
    fn visit(&mut self, _item: &super::scan::Item<'_>) {}
}

/// Reads etcd's retained history live: every key as of the compaction revision, then every
/// change after it up to `revision` (a watch from the compaction revision), classified into a
/// [`HistoryReport`]. Only reads.
pub async fn live(
    client: &Client,
    config: &EncryptionConfig,
    etcd_prefix: &str,
    plan: &ScanPlan,
    opts: &ScanOptions<'_>,
    revision: i64,
    list_limit: usize,
) -> Result<HistoryReport, EtcdError> {
    let prefix = normalize_prefix(etcd_prefix).into_bytes();
    let compacted = compaction_revision(client, &prefix, revision).await?;
    let mut watch = client.watch_client();
    let mut reader = LiveReader {
        classifier: Classifier::new(config, etcd_prefix, plan, &opts.classify),
        opts,
        builder: HistoryBuilder::new(list_limit),
        batch: Vec::new(),
    };
    if compacted > 0 {
        let mut kv = client.kv_client().max_decoding_message_size(512 << 20);
        for range in &plan.ranges {
            reader.read_range_at(&mut kv, range, compacted).await?;
        }
    }
    let from = if compacted > 0 { compacted + 1 } else { 1 };
    reader.follow(&mut watch, prefix, from, revision).await?;
    Ok(reader.builder.finish(compacted, revision))
}

/// A failed etcd request, as [`live`] reports it.
fn request_error(e: etcd_client::Error) -> EtcdError {
    EtcdError::Request {
        message: explain(&e),
        hint: "",
    }
}

/// [`live`]'s reading state: changes are batched so KMS plugins can be asked once per batch.
struct LiveReader<'a> {
    /// Maps keys to resources and classifies their values.
    classifier: Classifier<'a>,
    /// How values are classified (and where KMS plugins are prefetched from).
    opts: &'a ScanOptions<'a>,
    /// What has been counted so far.
    builder: HistoryBuilder,
    /// Changes read but not yet classified.
    batch: Vec<Change>,
}

impl LiveReader<'_> {
    /// Reads one planned range as of the compaction revision, page by page: the oldest value
    /// of each key that etcd still keeps.
    async fn read_range_at(
        &mut self,
        kv: &mut KvClient,
        range: &PlannedRange,
        compacted: i64,
    ) -> Result<(), EtcdError> {
        let mut start = range.start.clone();
        // Bounded like the scan's pages (etcd counts only about what it returns).
        let mut stride = Stride::default();
        loop {
            let end = stride.end(&start, &range.end, 1000);
            let o = GetOptions::new()
                .with_range(end.clone())
                .with_revision(compacted)
                .with_limit(1000);
            let mut resp = kv
                .get(start.clone(), Some(o))
                .await
                .map_err(request_error)?;
            let more = resp.more();
            let kvs = resp.take_kvs();
            let reached = match kvs.last() {
                Some(last) if more => last.key().to_vec(),
                _ => end.clone(),
            };
            stride.learn(kvs.first().map(|k| k.key()), &reached, kvs.len());
            start = match kvs.last() {
                Some(last) if more => {
                    let mut next = last.key().to_vec();
                    next.push(0);
                    next
                }
                _ => end.clone(),
            };
            for k in kvs {
                self.batch
                    .push((k.key().to_vec(), k.mod_revision(), Some(k.value().to_vec())));
            }
            self.flush().await?;
            if !more && end == range.end {
                break;
            }
        }
        Ok(())
    }

    /// Watches every change under `prefix` from revision `from` until the watch has passed
    /// `revision`, asking for progress so that a quiet prefix still ends.
    async fn follow(
        &mut self,
        watch: &mut WatchClient,
        prefix: Vec<u8>,
        from: i64,
        revision: i64,
    ) -> Result<(), EtcdError> {
        let end = prefix_end(&prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(from);
        let mut stream = watch
            .watch(prefix, Some(options))
            .await
            .map_err(request_error)?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let Some(resp) = msg.map_err(request_error)? else { return Ok(()) };
                    if self.watched(&resp, from, revision).await? {
                        return Ok(());
                    }
                }
                _ = tick.tick() => {
                    // etcd answers a progress request only once the watcher has caught up.
                    stream.request_progress().await.map_err(request_error)?;
                }
            }
        }
    }

    /// Takes one watch response's changes up to `revision`; whether the watch has now reached
    /// it (a change past it, or a progress report at or beyond it).
    async fn watched(
        &mut self,
        resp: &WatchResponse,
        from: i64,
        revision: i64,
    ) -> Result<bool, EtcdError> {
        if resp.canceled() {
            return Err(if resp.compact_revision() > 0 {
                EtcdError::Compacted { revision: from }
            } else {
                EtcdError::Request {
                    message: resp.cancel_reason().to_string(),
                    hint: "",
                }
            });
        }
        let mut past = false;
        for ev in resp.events() {
            let Some(k) = ev.kv() else { continue };
            if k.mod_revision() > revision {
                past = true;
                continue;
            }
            let value = (ev.event_type() == EventType::Put).then(|| k.value().to_vec());
            self.batch.push((k.key().to_vec(), k.mod_revision(), value));
        }
        self.flush().await?;
        let progress = !resp.created() && resp.events().is_empty();
        let at = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(past || (progress && at >= revision))
    }

    /// Classifies the batch into the builder, after prefetching the KMS keys its values need.
    async fn flush(&mut self) -> Result<(), EtcdError> {
        self.opts
            .classify
            .prefetch(self.batch.iter().filter_map(|(_, _, v)| v.as_deref()))
            .await
            .map_err(EtcdError::Kms)?;
        let options = &self.opts.classify.options;
        for (key, rev, value) in self.batch.drain(..) {
            self.builder
                .add(&mut self.classifier, options, &key, rev, value.as_deref());
        }
        Ok(())
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
