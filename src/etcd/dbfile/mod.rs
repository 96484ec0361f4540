//! An etcd data file read offline: a snapshot (`etcdctl snapshot save`, atrest's own
//! pre-rotation snapshots) or a member's `member/snap/db`. No etcd process and no restore: the
//! bbolt file is read page by page ([`super::bolt`]), read-only, and its values go through the
//! same classifier and report as a live scan.
//!
//! The current value of a key is its newest revision unless that is a tombstone; every older
//! revision still in the file is history ([`super::history`]); pages outside the tree are free
//! and may still hold old values ([`free`]).

pub mod free;
mod sorted;

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::bolt::{BoltError, BoltFile, Bucket};
use super::history::HistoryBuilder;
use super::layout::normalize_prefix;
use super::mvcc::{Revision, StoredKeyValue, schema};
use super::scan::{Classifier, Progress, ScanOptions, ScanPlan, Visitor};
use crate::codec::KmsFailure;
use crate::config::EncryptionConfig;
use crate::model::census::{DbInfo, HistoryReport};
pub use sorted::SpillError;
use sorted::{KeyRevision, SortedRevisions};

/// Values classified per batch (KMS v2 DEK sources are unwrapped once per batch).
const BATCH: usize = 256;

/// Why a data file could not be read. The file was opened read-only and never changed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The bbolt layer: unreadable, not bbolt, truncated or damaged.
    #[error(transparent)]
    Bolt(#[from] BoltError),
    /// A valid bbolt file that is not an etcd v3 store.
    #[error("{path} is a bbolt file but not an etcd data file: {reason}")]
    NotEtcd {
        /// The file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A KMS plugin failed while values were being verified.
    #[error(transparent)]
    Kms(KmsFailure),
    /// The temporary files that put the file's revisions in key order.
    #[error(transparent)]
    Spill(#[from] SpillError),
}

/// An open etcd data file.
pub struct DbFile {
    bolt: BoltFile,
    keys: Bucket,
    /// What the file is.
    pub info: DbInfo,
    pub(crate) prefix: Vec<u8>,
    /// Every revision under the prefix, to be read in key order.
    revisions: SortedRevisions,
    /// The file's sha256, computed on another thread while the file is read.
    hashing: Option<std::thread::JoinHandle<Result<String, BoltError>>>,
}

/// `sha256:` + hex of the file, read in 1 MiB chunks.
fn file_sha256(path: &Path) -> Result<String, BoltError> {
    let io = |source| BoltError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

impl DbFile {
    /// Opens `path` read-only, checks it is an etcd store, and sorts every revision of the keys
    /// under `etcd_prefix` by key (one pass over bucket `key`; values are not kept, only where
    /// they are).
    pub fn open(path: &Path, etcd_prefix: &str) -> Result<Self, DbError> {
        Self::open_with(path, etcd_prefix, true)
    }

    /// What the file is ([`DbInfo`], with its sha256), read in one pass without sorting
    /// anything: for evidence that names a file someone else read.
    pub fn identify(path: &Path, etcd_prefix: &str) -> Result<DbInfo, DbError> {
        let mut db = Self::open_with(path, etcd_prefix, false)?;
        db.sha256()?;
        Ok(db.info)
    }

    /// [`Self::open`]; `sort` false keeps no revision (only [`Self::info`] is of use then).
    fn open_with(path: &Path, etcd_prefix: &str, sort: bool) -> Result<Self, DbError> {
        let mut bolt = BoltFile::open(path)?;
        let hashed = path.to_path_buf();
        let hashing = std::thread::spawn(move || file_sha256(&hashed));
        let not_etcd = |reason: &str| DbError::NotEtcd {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let keys = bolt
            .bucket(schema::KEY)?
            .ok_or_else(|| not_etcd("it has no `key` bucket"))?;
        let meta = bolt.bucket(schema::META)?;
        let compact_revision = match &meta {
            Some(m) => bolt
                .get(m, schema::FINISHED_COMPACT)?
                .and_then(|v| Revision::parse(&v).map(|r| r.main))
                .unwrap_or(0),
            None => 0,
        };
        let prefix = normalize_prefix(etcd_prefix).into_bytes();
        let mut sorted = SortedRevisions::default();
        let (mut oldest, mut newest, mut revisions) = (0i64, 0i64, 0u64);
        let mut cursor = bolt.cursor(&keys);
        while let Some(e) = cursor.next(&bolt)? {
            if e.is_bucket() {
                continue;
            }
            let rev = Revision::parse(&e.key)
                .ok_or_else(|| not_etcd("bucket `key` holds a key that is not an etcd revision"))?;
            let kv = StoredKeyValue::decode(&e.value).ok_or_else(|| DbError::NotEtcd {
                path: path.to_path_buf(),
                reason: format!(
                    "the value at revision {} is not an mvccpb.KeyValue",
                    rev.main
                ),
            })?;
            revisions += 1;
            if oldest == 0 {
                oldest = rev.main;
            }
            newest = newest.max(rev.main);
            if sort && kv.key.starts_with(&prefix) {
                sorted.push(&kv.key, rev, cursor.location())?;
            }
        }
        sorted.seal();
        tracing::debug!(
            revisions = sorted.len(),
            spilled_runs = sorted.spilled_runs(),
            "the file's revisions under the prefix are sorted by key"
        );
        let info = DbInfo {
            path: path.display().to_string(),
            size: bolt.len(),
            // Filled in by [`DbFile::sha256`].
            sha256: String::new(),
            revision: newest.max(compact_revision),
            oldest_revision: oldest,
            compact_revision,
            revisions,
            page_size: bolt.meta().page_size,
            pages: bolt.meta().pgid,
        };
        Ok(Self {
            bolt,
            keys,
            info,
            prefix,
            revisions: sorted,
            hashing: Some(hashing),
        })
    }

    /// The file's sha256 (`sha256:` + hex), also recorded in [`DbFile::info`]; waits for the
    /// hashing thread started by [`DbFile::open`].
    pub fn sha256(&mut self) -> Result<&str, DbError> {
        if let Some(h) = self.hashing.take() {
            let sum = h.join().map_err(|_| DbError::NotEtcd {
                path: PathBuf::from(&self.info.path),
                reason: "the thread hashing it stopped".into(),
            })??;
            self.info.sha256 = sum;
        }
        Ok(&self.info.sha256)
    }

    /// The stored value of one revision, decoded: read where the walk saw it (the element's
    /// key is checked), else looked up. A revision the walk listed that cannot be read now
    /// means the file changed under us, which a read-only reader reports as damage.
    fn value_of(&mut self, key: &[u8], rev: &KeyRevision) -> Result<Vec<u8>, DbError> {
        let want = rev.revision.key_bytes();
        let mut found = None;
        if let Some((page, index)) = rev.at {
            let (k, v) = self.bolt.element_at(page, index)?;
            if k == want {
                found = Some(v);
            }
        }
        if found.is_none() {
            found = self.bolt.get(&self.keys, &want)?;
        }
        found
            .and_then(|v| StoredKeyValue::decode(&v))
            .map(|kv| kv.value)
            .ok_or_else(|| DbError::NotEtcd {
                path: PathBuf::from(&self.info.path),
                reason: format!(
                    "revision {} of {} is listed but cannot be read",
                    rev.revision.main,
                    String::from_utf8_lossy(key)
                ),
            })
    }

    /// Classifies the current value of every key the plan covers into `visitor`, in key
    /// order, as a live scan at the file's revision would. Progress counts revisions read.
    pub async fn scan(
        &mut self,
        config: &EncryptionConfig,
        etcd_prefix: &str,
        plan: &ScanPlan,
        opts: &ScanOptions<'_>,
        visitor: &mut dyn Visitor,
        progress: &mut dyn Progress,
    ) -> Result<(), DbError> {
        // The sorted revisions are lent out while values are read (reads borrow the file
        // mutably).
        let sorted = std::mem::take(&mut self.revisions);
        let result = self
            .scan_current(&sorted, config, etcd_prefix, plan, opts, visitor, progress)
            .await;
        self.revisions = sorted;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn scan_current(
        &mut self,
        sorted: &SortedRevisions,
        config: &EncryptionConfig,
        etcd_prefix: &str,
        plan: &ScanPlan,
        opts: &ScanOptions<'_>,
        visitor: &mut dyn Visitor,
        progress: &mut dyn Progress,
    ) -> Result<(), DbError> {
        progress.total(sorted.len());
        let mut classifier = Classifier::new(config, etcd_prefix, plan, &opts.classify);
        let mut merged = sorted.merged()?;
        let mut batch: Vec<(usize, Vec<u8>, i64, Vec<u8>)> = Vec::with_capacity(BATCH);
        let mut read = 0u64;
        loop {
            let next = merged.next_key()?;
            if let Some((key, revisions)) = &next {
                read += revisions.len() as u64;
                // The newest revision is the current value unless it is a delete.
                if let (Some(newest), Some(range)) = (revisions.last(), classifier.range_of(key))
                    && !newest.revision.tombstone
                {
                    let value = self.value_of(key, newest)?;
                    batch.push((range, key.clone(), newest.revision.main, value));
                }
            }
            if batch.len() == BATCH || (next.is_none() && !batch.is_empty()) {
                opts.classify
                    .prefetch(batch.iter().map(|(_, _, _, v)| v.as_slice()))
                    .await
                    .map_err(DbError::Kms)?;
                for (range, key, rev, value) in batch.drain(..) {
                    classifier.value(range, &key, &value, rev, visitor);
                }
                progress.advance(std::mem::take(&mut read));
            }
            if next.is_none() {
                break;
            }
        }
        progress.advance(read);
        classifier.finish(visitor);
        Ok(())
    }

    /// The bbolt file, for the free-page census.
    pub(crate) fn bolt_mut(&mut self) -> &mut BoltFile {
        &mut self.bolt
    }

    /// Every older revision of the file, classified into a [`HistoryReport`]: each value a
    /// later revision of its key superseded (all of them are retained).
    pub async fn history(
        &mut self,
        config: &EncryptionConfig,
        etcd_prefix: &str,
        plan: &ScanPlan,
        opts: &ScanOptions<'_>,
        list_limit: usize,
    ) -> Result<HistoryReport, DbError> {
        let sorted = std::mem::take(&mut self.revisions);
        let result = self
            .older_values(&sorted, config, etcd_prefix, plan, opts, list_limit)
            .await;
        self.revisions = sorted;
        result
    }

    async fn older_values(
        &mut self,
        sorted: &SortedRevisions,
        config: &EncryptionConfig,
        etcd_prefix: &str,
        plan: &ScanPlan,
        opts: &ScanOptions<'_>,
        list_limit: usize,
    ) -> Result<HistoryReport, DbError> {
        let mut classifier = Classifier::new(config, etcd_prefix, plan, &opts.classify);
        let options = &opts.classify.options;
        let mut builder = HistoryBuilder::new(list_limit);
        let mut merged = sorted.merged()?;
        // (key, revision, value, superseded at)
        let mut batch: Vec<(Vec<u8>, i64, Vec<u8>, i64)> = Vec::with_capacity(BATCH);
        loop {
            let next = merged.next_key()?;
            if let Some((key, revisions)) = &next
                && classifier.range_of(key).is_some()
            {
                for pair in revisions.windows(2) {
                    let (old, by) = (&pair[0], &pair[1]);
                    if old.revision.tombstone {
                        continue;
                    }
                    let value = self.value_of(key, old)?;
                    batch.push((key.clone(), old.revision.main, value, by.revision.main));
                }
            }
            if batch.len() >= BATCH || (next.is_none() && !batch.is_empty()) {
                opts.classify
                    .prefetch(batch.iter().map(|(_, _, v, _)| v.as_slice()))
                    .await
                    .map_err(DbError::Kms)?;
                for (key, rev, value, at) in batch.drain(..) {
                    builder.superseded(&mut classifier, options, &key, rev, &value, at);
                }
            }
            if next.is_none() {
                break;
            }
        }
        Ok(builder.finish(self.info.oldest_revision, self.info.revision))
    }
}
