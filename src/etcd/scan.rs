//! The read-only scan: paginated range reads at one pinned revision, fetched one page ahead of
//! classification, memory bounded by the page size. Range reads are ordered by key, so the last
//! key seen is a cursor that survives an etcd restart (and a checkpoint).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions, KeyValue};
use tokio::sync::mpsc;

use super::layout::{normalize_prefix, prefix_end, resource_of_key, resource_prefix};
use super::{EtcdError, explain, is_transient};
use crate::GroupResource;
use crate::codec::{Classification, Options, ProviderTable, State};
use crate::config::{EncryptionConfig, Resolved};
use crate::keys::Key;
use crate::kms::KmsPlugins;

/// Pages aim at this many bytes; the number of keys per page adapts to the value sizes.
const TARGET_PAGE_BYTES: usize = 4 << 20;
const MAX_PAGE_KEYS: i64 = 5000;
const FIRST_PAGE_KEYS: i64 = 500;

/// One key range to read. `resource` is fixed for a resource's own range; `None` under a
/// wildcard, where each key is mapped back to its group resource.
#[derive(Clone, Debug)]
pub struct PlannedRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub resource: Option<GroupResource>,
}

#[derive(Clone, Debug)]
pub struct ScanPlan {
    pub ranges: Vec<PlannedRange>,
    /// Under a wildcard range: only these group resources are reported (covered ones).
    pub wildcard: bool,
}

/// Which key ranges cover `resources` (or, when empty, every resource the config names, and
/// `secrets` always).
pub fn plan(config: &EncryptionConfig, etcd_prefix: &str, only: &[GroupResource]) -> ScanPlan {
    let mut wanted: Vec<GroupResource> = if only.is_empty() {
        config.named_resources()
    } else {
        only.to_vec()
    };
    if only.is_empty() && !wanted.contains(&GroupResource::secrets()) {
        wanted.insert(0, GroupResource::secrets());
    }
    if wanted.iter().any(|gr| gr.is_wildcard()) {
        let start = normalize_prefix(etcd_prefix).into_bytes();
        let end = prefix_end(&start);
        return ScanPlan {
            ranges: vec![PlannedRange {
                start,
                end,
                resource: None,
            }],
            wildcard: true,
        };
    }
    let ranges = wanted
        .into_iter()
        .map(|gr| {
            let start = resource_prefix(etcd_prefix, &gr).into_bytes();
            let end = prefix_end(&start);
            PlannedRange {
                start,
                end,
                resource: Some(gr),
            }
        })
        .collect();
    ScanPlan {
        ranges,
        wildcard: false,
    }
}

/// A classified stored object, handed to a [`Visitor`].
pub struct Item<'a> {
    pub resource: &'a GroupResource,
    /// The full etcd key.
    pub key: &'a str,
    /// `namespace/name`, or `name` for cluster-scoped objects.
    pub object: &'a str,
    pub mod_revision: i64,
    pub value_len: usize,
    pub class: &'a Classification<'a>,
    /// The resource's write provider encrypts.
    pub encrypts: bool,
    pub write_label: &'a str,
}

impl Item<'_> {
    /// Not on its resource's write key: an unchanged write through the apiserver rewrites it.
    pub fn needs_rewrite(&self) -> bool {
        match self.class.state {
            State::Plaintext => self.encrypts || self.class.stale,
            State::EncryptedOk | State::Kms => self.class.stale,
            _ => false,
        }
    }
}

pub trait Visitor {
    /// Called once per resource the first time it is met, before its items.
    fn resource(&mut self, _resolved: &Resolved) {}
    fn visit(&mut self, item: &Item<'_>);
}

/// Per-resource state built once: the resolved providers and the candidate table.
struct ResourceCtx {
    resolved: Resolved,
    table: ProviderTable,
}

#[derive(Default)]
pub struct ScanOptions<'a> {
    pub classify: ClassifyConfig<'a>,
    /// How long etcd may stay unreachable mid-scan before giving up.
    pub patience: Duration,
    /// Start each range after this key (resume), keyed by the range start.
    pub resume_after: HashMap<Vec<u8>, Vec<u8>>,
    /// At most this many keys per page (default: adapts to about 4 MiB per page).
    pub page_keys: Option<i64>,
}

#[derive(Default)]
pub struct ClassifyConfig<'a> {
    pub options: Options<'a>,
    /// Retired keys tried last (`--key-archive`).
    pub archive: Vec<Arc<Key>>,
    /// KMS v2 plugins to unwrap DEK sources with when verifying.
    pub plugins: Option<&'a KmsPlugins>,
}

impl<'a> ClassifyConfig<'a> {
    /// Options consistent with `plugins`: their current key IDs (for the stale rule) and, when
    /// verifying, the plugins as the unwrapper.
    pub fn new(
        verify: bool,
        want_info: bool,
        plugins: Option<&'a KmsPlugins>,
        archive: Vec<Arc<Key>>,
    ) -> Self {
        Self {
            options: Options {
                verify,
                want_info,
                kms_key_ids: plugins.map(|p| p.current_key_ids()).unwrap_or_default(),
                kms: plugins.map(|p| p as &dyn crate::codec::KmsUnwrap),
            },
            archive,
            plugins,
        }
    }
}

/// Progress of a running scan, for a progress bar.
pub trait Progress {
    fn total(&mut self, _n: u64) {}
    fn advance(&mut self, _n: u64) {}
}

impl Progress for () {}

/// What a finished scan read.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanRun {
    /// The revision every page was read at.
    pub revision: i64,
    /// Reads retried after a transient etcd failure (restart, leader change).
    pub retries: u64,
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
    pub range: usize,
    pub last_key: Vec<u8>,
    pub count: u64,
}

/// A scan in progress, pulled page by page, so that a consumer (the re-encryption engine) can
/// act on each page before the next one is classified. The fetcher stays one page ahead.
pub struct Scan<'s> {
    config: &'s EncryptionConfig,
    etcd_prefix: &'s str,
    plan: &'s ScanPlan,
    opts: &'s ScanOptions<'s>,
    rx: mpsc::Receiver<Result<Page, EtcdError>>,
    fetcher: tokio::task::JoinHandle<u64>,
    ctxs: HashMap<GroupResource, ResourceCtx>,
    skipped: HashSet<GroupResource>,
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
        let fetcher = tokio::spawn(async move {
            fetch_all(
                fetch_client,
                ranges,
                revision,
                resume,
                patience,
                max_keys,
                tx,
            )
            .await
        });
        Ok(Scan {
            config,
            etcd_prefix,
            plan,
            opts,
            rx,
            fetcher,
            ctxs: HashMap::new(),
            skipped: HashSet::new(),
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
        let range = &self.plan.ranges[page.range];
        let classify = &self.opts.classify;
        if let (true, Some(plugins)) = (classify.options.verify, classify.plugins) {
            // Unwrap each distinct KMS v2 DEK source once, before classifying the page.
            for kv in &page.kvs {
                plugins.prefetch(kv.value()).await?;
            }
        }
        for kv in &page.kvs {
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                continue;
            };
            let (gr, object) = match &range.resource {
                Some(gr) => (gr.clone(), key.get(range.start.len()..).unwrap_or("")),
                None => match resource_of_key(self.etcd_prefix, key) {
                    Some(found) => found,
                    None => continue,
                },
            };
            if self.skipped.contains(&gr) {
                continue;
            }
            if !self.ctxs.contains_key(&gr) {
                let resolved = self.config.resolve(&gr);
                if self.plan.wildcard
                    && resolved.rule_name.is_none()
                    && gr != GroupResource::secrets()
                {
                    self.skipped.insert(gr);
                    continue;
                }
                visitor.resource(&resolved);
                let table = ProviderTable::with_archive(&resolved, &classify.archive);
                self.ctxs
                    .insert(gr.clone(), ResourceCtx { resolved, table });
            }
            let ctx = &self.ctxs[&gr];
            let class = ctx.table.classify(kv.key(), kv.value(), &classify.options);
            visitor.visit(&Item {
                resource: &ctx.resolved.resource,
                key,
                object,
                mod_revision: kv.mod_revision(),
                value_len: kv.value().len(),
                class: &class,
                encrypts: ctx.resolved.encrypts(),
                write_label: ctx.table.write_label(),
            });
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
        for gr in self.plan.ranges.iter().filter_map(|r| r.resource.as_ref()) {
            if !self.ctxs.contains_key(gr) {
                visitor.resource(&self.config.resolve(gr));
            }
        }
        // Dropping the receiver first lets a fetcher blocked on a full channel end (early stop).
        drop(self.rx);
        let retries = self.fetcher.await.unwrap_or(0);
        ScanRun {
            revision: self.revision,
            retries,
        }
    }
}

struct Page {
    range: usize,
    kvs: Vec<KeyValue>,
}

async fn fetch_all(
    client: Client,
    ranges: Vec<PlannedRange>,
    revision: i64,
    resume: HashMap<Vec<u8>, Vec<u8>>,
    patience: Duration,
    max_keys: i64,
    tx: mpsc::Sender<Result<Page, EtcdError>>,
) -> u64 {
    let mut retries = 0u64;
    let mut kv = client.kv_client().max_decoding_message_size(512 << 20);
    let mut limit = FIRST_PAGE_KEYS.min(max_keys);
    for (i, range) in ranges.iter().enumerate() {
        let mut start = match resume.get(&range.start) {
            Some(after) => next_key(after),
            None => range.start.clone(),
        };
        loop {
            let opts = GetOptions::new()
                .with_range(range.end.clone())
                .with_revision(revision)
                .with_limit(limit);
            let mut waited = Duration::ZERO;
            let mut backoff = Duration::from_millis(100);
            let resp = loop {
                match kv.get(start.clone(), Some(opts.clone())).await {
                    Ok(r) => break r,
                    Err(e) if e.to_string().contains("compacted") => {
                        let _ = tx.send(Err(EtcdError::Compacted { revision })).await;
                        return retries;
                    }
                    Err(e) if is_transient(&e) && waited < patience => {
                        tracing::warn!("etcd read failed, retrying in {backoff:?}: {e}");
                        tokio::time::sleep(backoff).await;
                        retries += 1;
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
                        return retries;
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
                return retries;
            }
            if !more {
                break;
            }
        }
    }
    retries
}

/// The smallest key after `key`.
fn next_key(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

fn request_error(e: &etcd_client::Error) -> EtcdError {
    let message = explain(e);
    let hint = if message.contains("permission denied") {
        "\n  hint: the etcd user needs read (range) permission on the apiserver's prefix"
    } else {
        ""
    };
    EtcdError::Request { message, hint }
}

/// An object that needs attention, by name (never its data).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ObjectRef {
    /// `namespace/name`, or `name` when cluster-scoped.
    pub name: String,
    pub key: String,
    pub mod_revision: i64,
    /// The key it is stored under (`aescbc:key1`, `identity`).
    pub stored_as: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Counts and lists for one resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceReport {
    pub resource: String,
    /// The rule that covers it (`secrets`, `*.*`), or none.
    pub rule: Option<String>,
    /// `aescbc:key1`, `kms:v2:name` or `identity`.
    pub write_key: String,
    pub read_keys: Vec<String>,
    pub encrypts: bool,
    pub total: u64,
    /// `provider:key` (or `identity`) → number of stored values.
    pub counts: BTreeMap<String, u64>,
    /// state → number of stored values.
    pub states: BTreeMap<String, u64>,
    /// KMS v2 key ID → number of stored values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kms_key_ids: BTreeMap<String, u64>,
    /// Plaintext where the config wants encryption.
    pub plaintext: Vec<String>,
    /// On a read key, not the write key.
    pub stale: Vec<String>,
    pub undecryptable: Vec<String>,
    pub unknown_key: Vec<String>,
    pub corrupt: Vec<String>,
    /// Objects beyond the list limit were counted but not listed.
    pub lists_truncated: bool,
    /// Details of each listed object, in the order of the lists above.
    #[serde(skip)]
    pub attention: Vec<ObjectRef>,
}

impl ResourceReport {
    pub fn findings(&self) -> u64 {
        (self.plaintext.len()
            + self.stale.len()
            + self.undecryptable.len()
            + self.unknown_key.len()
            + self.corrupt.len()) as u64
            + if self.lists_truncated { 1 } else { 0 }
    }
}

/// The whole answer of a scan.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScanReport {
    pub revision: i64,
    pub verified: bool,
    pub resources: Vec<ResourceReport>,
    /// KMS v2 provider → the key ID its plugin reports now (values on another are stale).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kms_current_key_ids: BTreeMap<String, String>,
}

impl ScanReport {
    /// Everything on its write key, nothing unreadable.
    pub fn clean(&self) -> bool {
        self.resources.iter().all(|r| r.findings() == 0)
    }
}

/// A [`Visitor`] that builds a [`ScanReport`]; lists hold at most `list_limit` names each.
pub struct ReportBuilder {
    by_resource: BTreeMap<GroupResource, ResourceReport>,
    list_limit: usize,
}

impl ReportBuilder {
    pub fn new(list_limit: usize) -> Self {
        Self {
            by_resource: BTreeMap::new(),
            list_limit,
        }
    }

    pub fn finish(self, revision: i64, verified: bool) -> ScanReport {
        let mut resources: Vec<ResourceReport> = self.by_resource.into_values().collect();
        // secrets first, then by name.
        resources.sort_by_key(|r| (r.resource != "secrets", r.resource.clone()));
        ScanReport {
            revision,
            verified,
            resources,
            kms_current_key_ids: BTreeMap::new(),
        }
    }
}

impl Visitor for ReportBuilder {
    fn resource(&mut self, resolved: &Resolved) {
        let name = resolved.resource.to_string();
        self.by_resource
            .entry(resolved.resource.clone())
            .or_insert_with(|| ResourceReport {
                resource: name,
                rule: resolved.rule_name.clone(),
                write_key: resolved.write_label(),
                read_keys: resolved.read_labels(),
                encrypts: resolved.encrypts(),
                ..Default::default()
            });
    }

    fn visit(&mut self, item: &Item<'_>) {
        let Some(r) = self.by_resource.get_mut(item.resource) else {
            return;
        };
        r.total += 1;
        let label = match item.class.state {
            State::Plaintext => "identity",
            _ => item.class.label.as_ref(),
        };
        bump(&mut r.counts, label);
        bump(&mut r.states, item.class.state.as_str());
        if let Some(id) = item.class.kms.as_ref().and_then(|k| k.key_id.as_ref()) {
            bump(&mut r.kms_key_ids, id);
        }
        let list = match item.class.state {
            State::Plaintext if item.encrypts || item.class.stale => &mut r.plaintext,
            State::EncryptedOk | State::Kms if item.class.stale => &mut r.stale,
            State::Undecryptable => &mut r.undecryptable,
            State::UnknownKey => &mut r.unknown_key,
            State::Corrupt => &mut r.corrupt,
            _ => return,
        };
        if list.len() >= self.list_limit {
            r.lists_truncated = true;
            return;
        }
        list.push(item.object.to_string());
        r.attention.push(ObjectRef {
            name: item.object.to_string(),
            key: item.key.to_string(),
            mod_revision: item.mod_revision,
            stored_as: label.to_string(),
            detail: item.class.detail.clone(),
        });
    }
}

/// Counts without allocating a key for every value.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}
