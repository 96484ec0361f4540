//! An etcd data file read offline: a snapshot (`etcdctl snapshot save`, atrest's own
//! pre-rotation snapshots) or a member's `member/snap/db`. No etcd process and no restore: the
//! bbolt file is read page by page ([`super::bolt`]), read-only, and its values go through the
//! same classifier and report as a live scan.
//!
//! The current value of a key is its newest revision unless that is a tombstone; every older
//! revision still in the file is history ([`super::history`]); pages outside the tree are free
//! and may still hold old values ([`free`]).

pub mod free;

use std::collections::HashMap;
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
}

/// Where each key's newest revision is, for the keys under the apiserver's prefix.
#[derive(Default)]
pub struct Index {
    latest: HashMap<Vec<u8>, Latest>,
}

/// A key's newest revision, and where its value is in the file (leaf page and element), so
/// that reading it needs no tree descent.
#[derive(Clone, Copy, Debug)]
struct Latest {
    revision: Revision,
    at: Option<(u64, usize)>,
}

impl Index {
    /// Keys whose newest revision is a value (not a delete), sorted.
    fn current(&self) -> Vec<(&[u8], Latest)> {
        let mut v: Vec<(&[u8], Latest)> = self
            .latest
            .iter()
            .filter(|(_, l)| !l.revision.tombstone)
            .map(|(k, l)| (k.as_slice(), *l))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// The newest revision of `key`, if the file has it.
    pub fn latest(&self, key: &[u8]) -> Option<Revision> {
        self.latest.get(key).map(|l| l.revision)
    }
}

/// A walk over every revision of a file ([`DbFile::revisions`]).
pub struct Revisions {
    cursor: super::bolt::Cursor,
}

/// One revision of one key.
pub struct StoredRevision {
    /// The etcd key.
    pub key: Vec<u8>,
    /// Its revision.
    pub revision: Revision,
    /// The value; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// An open etcd data file.
pub struct DbFile {
    bolt: BoltFile,
    keys: Bucket,
    /// What the file is.
    pub info: DbInfo,
    pub(crate) prefix: Vec<u8>,
    index: Index,
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
    /// Opens `path` read-only, checks it is an etcd store, and indexes the newest revision of
    /// every key under `etcd_prefix` (one pass over bucket `key`; values are not kept).
    pub fn open(path: &Path, etcd_prefix: &str) -> Result<Self, DbError> {
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
        let mut latest = HashMap::new();
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
            if kv.key.starts_with(&prefix) {
                let at = cursor.location();
                latest.insert(kv.key, Latest { revision: rev, at });
            }
        }
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
            index: Index { latest },
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

    /// The index of newest revisions.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The stored value of a key's newest revision, decoded: read where the index saw it (the
    /// element's key is checked), else looked up.
    fn value_at(&mut self, latest: Latest) -> Result<Option<StoredKeyValue>, DbError> {
        let want = latest.revision.key_bytes();
        if let Some((page, index)) = latest.at {
            let (k, v) = self.bolt.element_at(page, index)?;
            if k == want {
                return Ok(StoredKeyValue::decode(&v));
            }
        }
        Ok(self
            .bolt
            .get(&self.keys, &want)?
            .and_then(|v| StoredKeyValue::decode(&v)))
    }

    /// Classifies the current value of every key the plan covers into `visitor`, range by
    /// range in key order, as a live scan at the file's revision would.
    pub async fn scan(
        &mut self,
        config: &EncryptionConfig,
        etcd_prefix: &str,
        plan: &ScanPlan,
        opts: &ScanOptions<'_>,
        visitor: &mut dyn Visitor,
        progress: &mut dyn Progress,
    ) -> Result<(), DbError> {
        // The index is lent out while values are read (reads borrow the file mutably).
        let index = std::mem::take(&mut self.index);
        let result = self
            .scan_current(&index, config, etcd_prefix, plan, opts, visitor, progress)
            .await;
        self.index = index;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn scan_current(
        &mut self,
        index: &Index,
        config: &EncryptionConfig,
        etcd_prefix: &str,
        plan: &ScanPlan,
        opts: &ScanOptions<'_>,
        visitor: &mut dyn Visitor,
        progress: &mut dyn Progress,
    ) -> Result<(), DbError> {
        let current = index.current();
        let in_range = |r: &super::scan::PlannedRange| {
            let lo = current.partition_point(|(k, _)| *k < r.start.as_slice());
            let hi = current.partition_point(|(k, _)| *k < r.end.as_slice());
            lo..hi
        };
        progress.total(plan.ranges.iter().map(|r| in_range(r).len() as u64).sum());
        let mut classifier = Classifier::new(config, etcd_prefix, plan, &opts.classify);
        for (i, range) in plan.ranges.iter().enumerate() {
            for chunk in current[in_range(range)].chunks(BATCH) {
                let mut batch = Vec::with_capacity(chunk.len());
                for (key, latest) in chunk {
                    // The index was built from this file; a value that is gone now means the
                    // file changed under us, which a read-only reader reports as damage.
                    let rev = latest.revision;
                    let kv = self.value_at(*latest)?.ok_or_else(|| DbError::NotEtcd {
                        path: PathBuf::from(&self.info.path),
                        reason: format!(
                            "revision {} of {} is listed but cannot be read",
                            rev.main,
                            String::from_utf8_lossy(key)
                        ),
                    })?;
                    batch.push((key, rev.main, kv.value));
                }
                opts.classify
                    .prefetch(batch.iter().map(|(_, _, v)| v.as_slice()))
                    .await
                    .map_err(DbError::Kms)?;
                for (key, rev, value) in &batch {
                    classifier.value(i, key, value, *rev, visitor);
                }
                progress.advance(batch.len() as u64);
            }
        }
        classifier.finish(visitor);
        Ok(())
    }

    /// Every revision in the file, in revision order, of keys under the prefix.
    pub fn revisions(&self) -> Revisions {
        Revisions {
            cursor: self.bolt.cursor(&self.keys),
        }
    }

    /// The next revision of a [`Revisions`] walk.
    pub fn next_revision(&self, walk: &mut Revisions) -> Result<Option<StoredRevision>, DbError> {
        while let Some(e) = walk.cursor.next(&self.bolt)? {
            if e.is_bucket() {
                continue;
            }
            let (Some(revision), Some(kv)) =
                (Revision::parse(&e.key), StoredKeyValue::decode(&e.value))
            else {
                continue;
            };
            if !kv.key.starts_with(&self.prefix) {
                continue;
            }
            let value = (!revision.tombstone).then_some(kv.value);
            return Ok(Some(StoredRevision {
                key: kv.key,
                revision,
                value,
            }));
        }
        Ok(None)
    }

    /// The bbolt file, for the free-page census.
    pub(crate) fn bolt_mut(&mut self) -> &mut BoltFile {
        &mut self.bolt
    }

    /// Every revision of the file, classified into a [`HistoryReport`]: all of them are
    /// retained.
    pub async fn history(
        &self,
        config: &EncryptionConfig,
        etcd_prefix: &str,
        plan: &ScanPlan,
        opts: &ScanOptions<'_>,
        list_limit: usize,
    ) -> Result<HistoryReport, DbError> {
        let mut classifier = Classifier::new(config, etcd_prefix, plan, &opts.classify);
        let options = &opts.classify.options;
        let mut builder = HistoryBuilder::new(list_limit);
        let mut walk = self.revisions();
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match self.next_revision(&mut walk)? {
                    Some(r) => batch.push(r),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            opts.classify
                .prefetch(batch.iter().filter_map(|r| r.value.as_deref()))
                .await
                .map_err(DbError::Kms)?;
            for r in batch {
                builder.add(
                    &mut classifier,
                    options,
                    &r.key,
                    r.revision.main,
                    r.value.as_deref(),
                );
            }
        }
        Ok(builder.finish(self.info.oldest_revision, self.info.revision))
    }
}
