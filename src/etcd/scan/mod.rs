//! The read-only scan: paginated range reads at one pinned revision, fetched one page ahead of
//! classification, memory bounded by the page size. Range reads are ordered by key, so the last
//! key seen is a cursor that survives an etcd restart (and a checkpoint).

pub(crate) mod bound;
mod fetch;
mod report;

use fetch::{Fetch, Page, fetch_all, next_key, request_error};

pub use report::ReportBuilder;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use tokio::sync::mpsc;

use super::EtcdError;
use super::layout::{normalize_prefix, prefix_end, resource_of_key, resource_prefix};
use crate::GroupResource;
use crate::codec::{Classification, ClassifyConfig, ClassifyOptions, ProviderTable};
use crate::config::{EncryptionConfig, Resolved};
use crate::model::census::Scope;
use crate::model::{KeyLabel, covered_resources};

/// Pages aim at this many bytes; the number of keys per page adapts to the value sizes.
const TARGET_PAGE_BYTES: usize = 4 << 20;
const MAX_PAGE_KEYS: i64 = 10_000;
const FIRST_PAGE_KEYS: i64 = 500;

/// One key range to read. `resource` is fixed for a resource's own range; `None` for the whole
/// prefix, where each key is mapped back to its group resource.
#[derive(Clone, Debug)]
pub struct PlannedRange {
    /// First etcd key of the range (inclusive).
    pub start: Vec<u8>,
    /// End of the range (exclusive): the first key past the prefix.
    pub end: Vec<u8>,
    /// The group resource every key of the range belongs to; `None` for the whole-prefix range.
    pub resource: Option<GroupResource>,
}

/// Which etcd key ranges a scan reads, decided before reading anything.
#[derive(Clone, Debug)]
pub struct ScanPlan {
    /// Ranges in the order they are read: the whole prefix, or one per resource.
    pub ranges: Vec<PlannedRange>,
    /// Every resource stored under the prefix is read and reported (the census): the scope is
    /// what etcd holds, not what the config names.
    pub census: bool,
    /// Under the whole prefix, report only resources a config rule covers (and `secrets`): the
    /// re-encryption's targeting, which can only rewrite what the config writes.
    pub covered_only: bool,
    /// Resources reported even when etcd holds none of them: the ones asked for, or those the
    /// config names, and `secrets` always.
    pub always: Vec<GroupResource>,
    /// Only the resources asked for are read (`--resource`).
    pub narrowed: bool,
}

fn whole_prefix(etcd_prefix: &str) -> PlannedRange {
    let start = normalize_prefix(etcd_prefix).into_bytes();
    let end = prefix_end(&start);
    PlannedRange {
        start,
        end,
        resource: None,
    }
}

fn resource_range(etcd_prefix: &str, gr: GroupResource) -> PlannedRange {
    let start = resource_prefix(etcd_prefix, &gr).into_bytes();
    let end = prefix_end(&start);
    PlannedRange {
        start,
        end,
        resource: Some(gr),
    }
}

impl ScanPlan {
    /// What the plan reads, as reports state it.
    pub fn scope(&self, etcd_prefix: &str) -> Scope {
        Scope {
            census: self.census,
            prefix: normalize_prefix(etcd_prefix),
            only: if self.narrowed {
                self.always.iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// The scope of every proof: the whole etcd prefix, every resource found there (built-in,
/// custom and aggregated, mapped back from its keys), judged by the config. `only` narrows it
/// to those resources, on request only.
pub fn plan(config: &EncryptionConfig, etcd_prefix: &str, only: &[GroupResource]) -> ScanPlan {
    if !only.is_empty() {
        return ScanPlan {
            ranges: only
                .iter()
                .map(|gr| resource_range(etcd_prefix, gr.clone()))
                .collect(),
            census: false,
            covered_only: false,
            always: only.to_vec(),
            narrowed: true,
        };
    }
    ScanPlan {
        ranges: vec![whole_prefix(etcd_prefix)],
        census: true,
        covered_only: false,
        always: named(config),
        narrowed: false,
    }
}

/// What a re-encryption reads: the resources the config writes (or `only`), since only those
/// can be rewritten through the apiserver; under a wildcard rule the whole prefix, reporting
/// only covered resources.
pub fn plan_covered(
    config: &EncryptionConfig,
    etcd_prefix: &str,
    only: &[GroupResource],
) -> ScanPlan {
    if !only.is_empty() {
        return plan(config, etcd_prefix, only);
    }
    let wanted = covered_resources(config.named_resources(), &[]);
    if wanted.iter().any(|gr| gr.is_wildcard()) {
        return ScanPlan {
            ranges: vec![whole_prefix(etcd_prefix)],
            census: false,
            covered_only: true,
            always: named(config),
            narrowed: false,
        };
    }
    ScanPlan {
        ranges: wanted
            .iter()
            .map(|gr| resource_range(etcd_prefix, gr.clone()))
            .collect(),
        census: false,
        covered_only: false,
        always: wanted,
        narrowed: false,
    }
}

/// The resources the config names one by one (wildcards left out), with `secrets` always.
fn named(config: &EncryptionConfig) -> Vec<GroupResource> {
    covered_resources(config.named_resources(), &[])
        .into_iter()
        .filter(|gr| !gr.is_wildcard())
        .collect()
}

/// A classified stored object, handed to a [`Visitor`].
pub struct Item<'a> {
    /// The group resource the object belongs to.
    pub resource: &'a GroupResource,
    /// The full etcd key.
    pub key: &'a str,
    /// `namespace/name`, or `name` for cluster-scoped objects.
    pub object: &'a str,
    /// The revision of the object's last write: its `resourceVersion`, the precondition a rewrite
    /// sends.
    pub mod_revision: i64,
    /// Size of the stored value in bytes, as etcd holds it (after encryption).
    pub value_len: usize,
    /// The stored value as etcd holds it (encrypted, or plaintext): re-encryption opens the
    /// stale ones to send them back unchanged.
    pub value: &'a [u8],
    /// How the value is stored (key label, state) and so its verdict.
    pub class: &'a Classification<'a>,
    /// The resource's write provider encrypts.
    pub encrypts: bool,
    /// What new writes of the resource get.
    pub write_key: &'a KeyLabel,
}

impl Item<'_> {
    /// An unchanged write through the apiserver would rewrite it
    /// ([`crate::model::needs_rewrite`]).
    pub fn needs_rewrite(&self) -> bool {
        self.class.needs_rewrite()
    }

    /// To rewrite, or unreadable by the apiserver ([`crate::model::needs_attention`]).
    pub fn needs_attention(&self) -> bool {
        self.class.needs_attention()
    }
}

/// Receives every classified value of a scan, in key order, one page at a time.
pub trait Visitor {
    /// Called once per resource the first time it is met, before its items.
    fn resource(&mut self, _resolved: &Resolved) {}
    /// Called for each value of a reported resource, in key order.
    fn visit(&mut self, item: &Item<'_>);
}

/// Per-resource state built once: the resolved providers and the candidate table.
struct ResourceCtx {
    resolved: Resolved,
    table: ProviderTable,
}

/// How a scan reads and classifies.
#[derive(Default)]
pub struct ScanOptions<'a> {
    /// How values are classified: whether to decrypt, which KMS plugins and archived keys to use.
    pub classify: ClassifyConfig<'a>,
    /// How long etcd may stay unreachable mid-scan before giving up.
    pub patience: Duration,
    /// Start each range after this key (resume), keyed by the range start.
    pub resume_after: HashMap<Vec<u8>, Vec<u8>>,
    /// At most this many keys per page, read by paged range reads. By default a range is
    /// read as one stream where etcd has RangeStream (3.7), else in pages of about 4 MiB.
    pub page_keys: Option<i64>,
    /// When etcd compacts past the pinned revision mid-run (the apiserver compacts every 5
    /// minutes), read on from the same key at etcd's current revision instead of stopping.
    /// For re-encryption, whose every write carries its own precondition and whose proof is a
    /// fresh read; a scan's counts must come from one revision, so it stops instead.
    pub follow_compaction: bool,
}

/// Progress of a running scan, for a progress bar.
pub trait Progress {
    /// Called once before the first page with the number of keys to read.
    fn total(&mut self, _n: u64) {}
    /// Called after each page with the number of keys it held.
    fn advance(&mut self, _n: u64) {}
    /// A rewrite run: objects targeted so far, and how many of them are finished (rewritten,
    /// found current, gone or given up).
    fn rewrites(&mut self, _targeted: u64, _done: u64) {}
    /// A peer (`apiserver https://…`) has answered nothing for `silent` while atrest waited on
    /// it; the step stops when that reaches `patience`. Called about every second meanwhile.
    fn stalled(&mut self, _peer: &str, _silent: Duration, _patience: Duration) {}
    /// A StorageVersionMigration atrest follows is in `phase` (`Running`, …) since `elapsed`
    /// after it was created or found. Called about every poll meanwhile.
    fn migrating(&mut self, _name: &str, _phase: &str, _elapsed: Duration) {}
}

impl Progress for () {}

/// What a finished scan read.
#[derive(Clone, Debug, Default)]
pub struct ScanRun {
    /// The revision every page was read at (the last one when `repinned`).
    pub revision: i64,
    /// Reads retried after a transient etcd failure (restart, leader change).
    pub retries: u64,
    /// Times etcd compacted past the revision mid-run and reading went on at a newer one
    /// ([`ScanOptions::follow_compaction`]).
    pub repinned: u64,
    /// Planned ranges read to their end as one stream (etcd 3.7's RangeStream; none before).
    pub streamed: u64,
    /// Keys spaced evenly through what was read, for a history read to split its work by.
    pub splits: bound::Splits,
}

/// Reads every planned range at one revision and hands each classified value to `visitor`.
pub async fn run(
    client: &Client,
    config: &EncryptionConfig,
    etcd_prefix: &str,
    plan: &ScanPlan,
    opts: &ScanOptions<'_>,
    visitor: &mut dyn Visitor,
    progress: &mut dyn Progress,
) -> Result<ScanRun, EtcdError> {
    let mut scan = Scan::start(client, config, etcd_prefix, plan, opts).await?;
    progress.total(scan.total);
    while let Some(page) = scan.next_page(visitor).await? {
        progress.advance(page.count);
    }
    Ok(scan.finish(visitor).await)
}

/// One page classified: which range it came from and the last key in it (a resume cursor).
#[derive(Clone, Debug)]
pub struct PageDone {
    /// Index into [`ScanPlan::ranges`] of the range the page came from.
    pub range: usize,
    /// The last etcd key of the page: everything up to it in that range is read.
    pub last_key: Vec<u8>,
    /// Keys in the page.
    pub count: u64,
}

/// A scan in progress, pulled page by page, so that a consumer (the re-encryption engine) can
/// act on each page before the next one is classified. The fetcher stays one page ahead.
pub struct Scan<'s> {
    opts: &'s ScanOptions<'s>,
    classifier: Classifier<'s>,
    rx: mpsc::Receiver<Result<Page, EtcdError>>,
    fetcher: tokio::task::JoinHandle<ScanRun>,
    /// The revision every page is read at.
    pub revision: i64,
    /// How many keys the planned ranges hold at that revision (after any resume cursor).
    pub total: u64,
}

impl<'s> Scan<'s> {
    /// Pins the revision, counts the keys, and starts fetching.
    pub async fn start(
        client: &Client,
        config: &'s EncryptionConfig,
        etcd_prefix: &'s str,
        plan: &'s ScanPlan,
        opts: &'s ScanOptions<'s>,
    ) -> Result<Scan<'s>, EtcdError> {
        let mut kv = client.kv_client().max_decoding_message_size(512 << 20);
        let mut revision = 0;
        let mut total = 0u64;
        for r in &plan.ranges {
            let from = match opts.resume_after.get(&r.start) {
                Some(after) => next_key(after),
                None => r.start.clone(),
            };
            let mut count = GetOptions::new()
                .with_range(r.end.clone())
                .with_count_only();
            if revision > 0 {
                count = count.with_revision(revision);
            }
            let resp = kv
                .get(from, Some(count))
                .await
                .map_err(|e| request_error(&e))?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            total += resp.count() as u64;
        }
        let (tx, rx) = mpsc::channel::<Result<Page, EtcdError>>(2);
        let ranges = plan.ranges.clone();
        let resume = opts.resume_after.clone();
        let patience = if opts.patience.is_zero() {
            Duration::from_secs(60)
        } else {
            opts.patience
        };
        let fetch_client = client.clone();
        let max_keys = opts.page_keys.unwrap_or(MAX_PAGE_KEYS).max(1);
        let follow_compaction = opts.follow_compaction;
        let stream = opts.page_keys.is_none();
        let fetcher = tokio::spawn(async move {
            let fetch = Fetch {
                ranges,
                revision,
                resume,
                patience,
                max_keys,
                follow_compaction,
                stream,
            };
            fetch_all(fetch_client, fetch, tx).await
        });
        Ok(Scan {
            opts,
            classifier: Classifier::new(config, etcd_prefix, plan, &opts.classify),
            rx,
            fetcher,
            revision,
            total,
        })
    }

    /// Classifies the next page into `visitor`; `None` when every range is read.
    pub async fn next_page(
        &mut self,
        visitor: &mut dyn Visitor,
    ) -> Result<Option<PageDone>, EtcdError> {
        let Some(page) = self.rx.recv().await else {
            return Ok(None);
        };
        let page = page?;
        self.opts
            .classify
            .prefetch(page.kvs.iter().map(|kv| kv.value()))
            .await
            .map_err(EtcdError::Kms)?;
        for kv in &page.kvs {
            self.classifier
                .value(page.range, kv.key(), kv.value(), kv.mod_revision(), visitor);
        }
        Ok(Some(PageDone {
            range: page.range,
            last_key: page
                .kvs
                .last()
                .map(|kv| kv.key().to_vec())
                .unwrap_or_default(),
            count: page.kvs.len() as u64,
        }))
    }

    /// Ends the scan: resources the plan names without any stored object still get an entry.
    pub async fn finish(self, visitor: &mut dyn Visitor) -> ScanRun {
        self.classifier.finish(visitor);
        // Dropping the receiver first lets a fetcher blocked on a full channel end (early stop).
        drop(self.rx);
        self.fetcher.await.unwrap_or(ScanRun {
            revision: self.revision,
            ..Default::default()
        })
    }
}

/// Classifies stored values of a plan's ranges, resource by resource, the same way whether they
/// come from a live range read or from a db file.
pub(crate) struct Classifier<'s> {
    config: &'s EncryptionConfig,
    etcd_prefix: &'s str,
    plan: &'s ScanPlan,
    classify: &'s ClassifyConfig<'s>,
    ctxs: HashMap<GroupResource, ResourceCtx>,
    skipped: HashSet<GroupResource>,
}

/// What [`Classifier::class_of`] knows of a value beyond its classification.
pub(crate) struct ValueInfo<'a> {
    /// Its group resource.
    pub resource: &'a GroupResource,
    /// The resource's write provider encrypts.
    pub encrypts: bool,
}

impl<'s> Classifier<'s> {
    pub(crate) fn new(
        config: &'s EncryptionConfig,
        etcd_prefix: &'s str,
        plan: &'s ScanPlan,
        classify: &'s ClassifyConfig<'s>,
    ) -> Self {
        Self {
            config,
            etcd_prefix,
            plan,
            classify,
            ctxs: HashMap::new(),
            skipped: HashSet::new(),
        }
    }

    /// The range of the plan that holds `key`, if any.
    pub(crate) fn range_of(&self, key: &[u8]) -> Option<usize> {
        self.plan
            .ranges
            .iter()
            .position(|r| key >= r.start.as_slice() && key < r.end.as_slice())
    }

    /// The group resource and object name of `key` in range `range`, meeting the resource (and
    /// telling `visitor`) the first time; `None` for a key no reported resource owns.
    fn locate<'k>(
        &mut self,
        range: usize,
        key: &'k str,
        visitor: &mut dyn Visitor,
    ) -> Option<(GroupResource, &'k str)> {
        let range = self.plan.ranges.get(range)?;
        let (gr, object) = match &range.resource {
            Some(gr) => (gr.clone(), key.get(range.start.len()..).unwrap_or("")),
            None => resource_of_key(self.etcd_prefix, key)?,
        };
        if self.skipped.contains(&gr) {
            return None;
        }
        if !self.ctxs.contains_key(&gr) {
            let resolved = self.config.resolve(&gr);
            if self.plan.covered_only
                && resolved.rule_name.is_none()
                && gr != GroupResource::secrets()
            {
                self.skipped.insert(gr);
                return None;
            }
            visitor.resource(&resolved);
            let table = ProviderTable::with_archive(&resolved, &self.classify.archive);
            self.ctxs
                .insert(gr.clone(), ResourceCtx { resolved, table });
        }
        Some((gr, object))
    }

    /// Classifies one value of range `range` and hands the result to `f`; `None` for a key that
    /// no reported resource owns.
    pub(crate) fn class_of<R>(
        &mut self,
        range: usize,
        key: &[u8],
        value: &[u8],
        options: &ClassifyOptions<'_>,
        visitor: &mut dyn Visitor,
        f: impl FnOnce(&ValueInfo<'_>, &str, &Classification<'_>) -> R,
    ) -> Option<R> {
        let key_str = std::str::from_utf8(key).ok()?;
        let (gr, _) = self.locate(range, key_str, visitor)?;
        let ctx = &self.ctxs[&gr];
        let class = ctx.table.classify(key, value, options);
        let info = ValueInfo {
            resource: &ctx.resolved.resource,
            encrypts: ctx.resolved.encrypts(),
        };
        Some(f(&info, key_str, &class))
    }

    /// Classifies one value of range `range` into `visitor`.
    pub(crate) fn value(
        &mut self,
        range: usize,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
        visitor: &mut dyn Visitor,
    ) {
        let Ok(key_str) = std::str::from_utf8(key) else {
            return;
        };
        let Some((gr, object)) = self.locate(range, key_str, visitor) else {
            return;
        };
        let ctx = &self.ctxs[&gr];
        let class = ctx.table.classify(key, value, &self.classify.options);
        visitor.visit(&Item {
            resource: &ctx.resolved.resource,
            key: key_str,
            object,
            mod_revision,
            value_len: value.len(),
            value,
            class: &class,
            encrypts: ctx.resolved.encrypts(),
            write_key: ctx.table.write_key(),
        });
    }

    /// Resources the plan always reports still get an entry when etcd holds none of them.
    pub(crate) fn finish(&self, visitor: &mut dyn Visitor) {
        for gr in &self.plan.always {
            if !self.ctxs.contains_key(gr) {
                visitor.resource(&self.config.resolve(gr));
            }
        }
    }
}
