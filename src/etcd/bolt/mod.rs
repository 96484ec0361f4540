//! A read-only reader of bbolt files, the format etcd keeps its store in (`member/snap/db`, and
//! every `etcdctl snapshot save` file). No crate reads bbolt read-only without mapping or loading
//! the file (bbolt-rs maps it and can write; bolt-lite loads it whole), so this one reads page by
//! page with positioned reads: memory stays bounded by the page cache below, whatever the size of
//! the file. It opens the file read-only and never writes.
//!
//! Format (bbolt `internal/common`): every page starts with a 16-byte header (id u64, flags u16,
//! count u16, overflow u32); pages 0 and 1 are meta pages, the one with the higher txid and a
//! valid FNV-64a checksum is current. A bucket is a B+tree of branch pages (elements: pos u32,
//! ksize u32, pgid u64) and leaf pages (elements: flags u32, pos u32, ksize u32, vsize u32); a
//! page with `overflow = n` spans n+1 pages. A leaf element with flag 1 is a nested bucket whose
//! value is its header (root pgid u64, sequence u64), followed by the bucket's own page when the
//! root is 0 (an inline bucket). Every read is bounds-checked: a truncated, zeroed or random file
//! gives an error, never a panic.

mod cursor;
mod page;
#[cfg(test)]
mod tests;

pub use cursor::{Cursor, Entry};
use page::*;
pub use page::{Meta, Visited, is_leaf, leaf_elem, page_header};

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a bbolt file could not be read. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither meta page is valid: not a bbolt file, or its first two pages are damaged.
    #[error("{path} is not an etcd data file (bbolt): {reason}")]
    NotBolt {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The file is shorter than its meta page says (a copy cut short).
    #[error(
        "{path} is truncated: its meta page says {expected} bytes ({pages} pages of {page_size}), the file has {actual}"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the meta page accounts for.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
        /// Pages the meta page accounts for.
        pages: u64,
        /// The page size.
        page_size: u32,
    },
    /// A page does not hold what the tree says it should.
    #[error("{path} is damaged at page {page}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The page id.
        page: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Where a bucket's tree is.
#[derive(Clone, Debug)]
pub enum Bucket {
    /// A tree rooted at this page.
    Root(u64),
    /// A small bucket stored inside its parent's leaf: the bytes of its single leaf page.
    Inline(Vec<u8>),
}

/// An open bbolt file.
pub struct BoltFile {
    path: PathBuf,
    file: File,
    len: u64,
    meta: Meta,
    branches: HashMap<u64, Arc<Vec<u8>>>,
    last_leaf: Option<(u64, Arc<Vec<u8>>)>,
}

impl BoltFile {
    /// Opens `path` read-only and picks the current meta page.
    pub fn open(path: &Path) -> Result<Self, BoltError> {
        let io = |source| BoltError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let not_bolt = |reason: String| BoltError::NotBolt {
            path: path.to_path_buf(),
            reason,
        };
        if len < (PAGE_HEADER + 64) as u64 {
            return Err(not_bolt(format!("only {len} bytes")));
        }
        let mut first = vec![0u8; 4096.min(len as usize)];
        file.read_exact_at(&mut first, 0).map_err(io)?;
        let m0 = parse_meta(&first);
        // Page 1 is one page further; take the page size from page 0 when it is valid, else try
        // the common sizes.
        let sizes: Vec<u64> = match &m0 {
            Ok(m) => vec![u64::from(m.page_size)],
            Err(_) => vec![4096, 8192, 16384, 65536, 1024, 2048, 32768],
        };
        let mut m1 = Err("page 1 is past the end of the file".to_string());
        for size in sizes {
            if size + (PAGE_HEADER + 64) as u64 > len {
                continue;
            }
            let mut second = vec![0u8; PAGE_HEADER + 64];
            file.read_exact_at(&mut second, size).map_err(io)?;
            m1 = parse_meta(&second);
            if let Ok(m) = &m1
                && u64::from(m.page_size) != size
            {
                m1 = Err(format!("page size {} at offset {size}", m.page_size));
            }
            if m1.is_ok() {
                break;
            }
        }
        let meta = match (m0, m1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(a), Err(b)) => {
                return Err(not_bolt(format!("meta page 0: {a}; meta page 1: {b}")));
            }
        };
        let expected = meta.pgid.saturating_mul(u64::from(meta.page_size));
        if meta.pgid < 2 || expected > len {
            return Err(BoltError::Truncated {
                path: path.to_path_buf(),
                expected,
                actual: len,
                pages: meta.pgid,
                page_size: meta.page_size,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            meta,
            branches: HashMap::new(),
            last_leaf: None,
        })
    }

    /// The current meta page.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn corrupt(&self, page: u64, reason: impl Into<String>) -> BoltError {
        BoltError::Corrupt {
            path: self.path.clone(),
            page,
            reason: reason.into(),
        }
    }

    /// Fills `buf` from the file at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BoltError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| BoltError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Reads page `id` with its overflow pages.
    fn read_page(&self, id: u64) -> Result<Page, BoltError> {
        if id < 2 || id >= self.meta.pgid {
            return Err(self.corrupt(id, format!("page id out of range 2..{}", self.meta.pgid)));
        }
        let ps = u64::from(self.meta.page_size);
        let mut bytes = vec![0u8; ps as usize];
        self.read_at(&mut bytes, id * ps)?;
        let stored = u64_at(&bytes, 0).unwrap_or(0);
        if stored != id {
            return Err(self.corrupt(id, format!("the page says it is page {stored}")));
        }
        let overflow = u64::from(u32_at(&bytes, 12).unwrap_or(0));
        if overflow > 0 {
            if id + overflow >= self.meta.pgid {
                return Err(self.corrupt(
                    id,
                    format!("{overflow} overflow pages run past the last page"),
                ));
            }
            let total = ((overflow + 1) * ps) as usize;
            bytes.resize(total, 0);
            self.read_at(&mut bytes[ps as usize..], (id + 1) * ps)?;
        }
        Ok(Page {
            id,
            bytes: Arc::new(bytes),
        })
    }

    /// Reads a page without checking that it is part of any tree: for free pages, whose header
    /// may be stale. `None` when the id is out of range.
    pub fn raw_page(&self, id: u64) -> Result<Option<Vec<u8>>, BoltError> {
        if id >= self.meta.pgid {
            return Ok(None);
        }
        let ps = u64::from(self.meta.page_size);
        let mut bytes = vec![0u8; ps as usize];
        self.read_at(&mut bytes, id * ps)?;
        Ok(Some(bytes))
    }

    /// Element `index` of leaf page `page` (a [`Cursor::location`]): (key, value). The last leaf
    /// read is kept, so reading the values of one page in a row reads it once.
    pub fn element_at(&mut self, page: u64, index: usize) -> Result<(Vec<u8>, Vec<u8>), BoltError> {
        let bytes = match &self.last_leaf {
            Some((id, bytes)) if *id == page => bytes.clone(),
            _ => {
                let p = self.read_page(page)?;
                if p.flags() & LEAF == 0 {
                    return Err(self.corrupt(page, "expected a leaf page"));
                }
                self.last_leaf = Some((page, p.bytes.clone()));
                p.bytes
            }
        };
        let (_, k, v) = leaf_elem(&bytes, index)
            .ok_or_else(|| self.corrupt(page, format!("leaf element {index} is past the page")))?;
        Ok((k.to_vec(), v.to_vec()))
    }

    /// Finds a top-level bucket.
    pub fn bucket(&mut self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        let root = Bucket::Root(self.meta.root);
        self.get_bucket(&root, name)
    }

    /// Finds a nested bucket of `parent`.
    pub fn get_bucket(
        &mut self,
        parent: &Bucket,
        name: &[u8],
    ) -> Result<Option<Bucket>, BoltError> {
        let mut found = None;
        let id = match parent {
            Bucket::Root(id) => *id,
            Bucket::Inline(_) => 0,
        };
        self.lookup(parent, name, &mut |flags, value| {
            if flags & BUCKET_LEAF != 0 {
                found = Some(value.to_vec());
            }
        })?;
        let Some(value) = found else { return Ok(None) };
        bucket_of(&value)
            .map(Some)
            .ok_or_else(|| self.corrupt(id, "a bucket entry is shorter than a bucket header"))
    }

    /// The value of `key` in `bucket`, if present (and not a nested bucket).
    pub fn get(&mut self, bucket: &Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, BoltError> {
        let mut found = None;
        self.lookup(bucket, key, &mut |flags, value| {
            if flags & BUCKET_LEAF == 0 {
                found = Some(value.to_vec());
            }
        })?;
        Ok(found)
    }

    fn branch_page(&mut self, id: u64) -> Result<Arc<Vec<u8>>, BoltError> {
        if let Some(p) = self.branches.get(&id) {
            return Ok(p.clone());
        }
        let bytes = self.read_page(id)?.bytes;
        if self.branches.len() >= BRANCH_CACHE_PAGES {
            self.branches.clear();
        }
        self.branches.insert(id, bytes.clone());
        Ok(bytes)
    }

    /// Descends to the leaf that would hold `key` and calls `f` with its flags and value.
    fn lookup(
        &mut self,
        bucket: &Bucket,
        key: &[u8],
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), BoltError> {
        let mut id = match bucket {
            Bucket::Inline(bytes) => {
                let leaf = Page {
                    id: 0,
                    bytes: Arc::new(bytes.clone()),
                };
                return self.leaf_lookup(&leaf, key, f);
            }
            Bucket::Root(id) => *id,
        };
        for _ in 0..MAX_DEPTH {
            let head = self.raw_flags(id)?;
            if head & BRANCH != 0 {
                let page = Page {
                    id,
                    bytes: self.branch_page(id)?,
                };
                let n = page.count();
                if n == 0 {
                    return Err(self.corrupt(id, "an empty branch page"));
                }
                // The last child whose first key is <= key (the first child when none is):
                // binary search over the sorted separator keys.
                let (mut lo, mut hi) = (1, n);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if self.branch_elem(&page, mid)?.0 <= key {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                id = self.branch_elem(&page, lo - 1)?.1;
                continue;
            }
            let page = self.read_page(id)?;
            return self.leaf_lookup(&page, key, f);
        }
        Err(self.corrupt(id, format!("the tree is deeper than {MAX_DEPTH} levels")))
    }

    fn raw_flags(&self, id: u64) -> Result<u16, BoltError> {
        if id < 2 || id >= self.meta.pgid {
            return Err(self.corrupt(id, format!("page id out of range 2..{}", self.meta.pgid)));
        }
        if let Some(p) = self.branches.get(&id) {
            return Ok(u16_at(p, 8).unwrap_or(0));
        }
        let mut head = [0u8; PAGE_HEADER];
        self.read_at(&mut head, id * u64::from(self.meta.page_size))?;
        Ok(u16_at(&head, 8).unwrap_or(0))
    }

    fn leaf_lookup(
        &self,
        page: &Page,
        key: &[u8],
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<(), BoltError> {
        if page.bytes.len() < PAGE_HEADER || page.flags() & LEAF == 0 {
            return Err(self.corrupt(page.id, "expected a leaf page"));
        }
        let n = page.count();
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (flags, k, v) = self.leaf_elem(page, mid)?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    f(flags, v);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn branch_elem<'p>(&self, page: &'p Page, i: usize) -> Result<(&'p [u8], u64), BoltError> {
        let at = PAGE_HEADER + i * ELEMENT;
        let e = page
            .bytes
            .get(at..at + ELEMENT)
            .ok_or_else(|| self.corrupt(page.id, format!("branch element {i} is past the page")))?;
        let pos = u32_at(e, 0).unwrap_or(0) as usize;
        let ksize = u32_at(e, 4).unwrap_or(0) as usize;
        let pgid = u64_at(e, 8).unwrap_or(0);
        let key = at
            .checked_add(pos)
            .and_then(|s| page.bytes.get(s..s.checked_add(ksize)?))
            .ok_or_else(|| self.corrupt(page.id, format!("branch key {i} is past the page")))?;
        Ok((key, pgid))
    }

    fn leaf_elem<'p>(
        &self,
        page: &'p Page,
        i: usize,
    ) -> Result<(u32, &'p [u8], &'p [u8]), BoltError> {
        leaf_elem(&page.bytes, i)
            .ok_or_else(|| self.corrupt(page.id, format!("leaf element {i} is past the page")))
    }

    /// A cursor over every element of `bucket`, in key order.
    pub fn cursor(&self, bucket: &Bucket) -> Cursor {
        Cursor {
            root: bucket.clone(),
            started: false,
            stack: Vec::new(),
            leaf: None,
            seen: Visited::new(self.meta.pgid),
        }
    }

    /// Every page the current tree uses (meta pages, the freelist, every bucket's pages with
    /// their overflow), as a bitmap over `0..pgid`. Pages outside it are free: they may still
    /// hold old values until the file is rewritten (`etcdctl defrag`).
    pub fn reachable(&mut self) -> Result<Visited, BoltError> {
        let mut seen = Visited::new(self.meta.pgid);
        seen.insert(0);
        seen.insert(1);
        if self.meta.freelist != NO_FREELIST && self.meta.freelist < self.meta.pgid {
            let id = self.meta.freelist;
            let overflow = self.overflow_of(id)?;
            for p in id..=id + overflow {
                seen.insert(p);
            }
        }
        let mut pending = vec![Bucket::Root(self.meta.root)];
        while let Some(bucket) = pending.pop() {
            let mut cursor = self.cursor(&bucket);
            while let Some(e) = cursor.next(self)? {
                if e.is_bucket()
                    && let Some(b) = bucket_of(&e.value)
                {
                    pending.push(b);
                }
            }
            for id in cursor.seen.ids() {
                let overflow = self.overflow_of(id)?;
                for p in id..=id + overflow {
                    if p < self.meta.pgid && !seen.insert(p) {
                        return Err(self.corrupt(p, "the page belongs to two trees"));
                    }
                }
            }
        }
        Ok(seen)
    }

    fn overflow_of(&self, id: u64) -> Result<u64, BoltError> {
        let mut head = [0u8; PAGE_HEADER];
        self.read_at(&mut head, id * u64::from(self.meta.page_size))?;
        Ok(u64::from(u32_at(&head, 12).unwrap_or(0)))
    }

    /// Whether a page id's header says freelist (used by tests and the free-page census).
    pub fn is_freelist_page(bytes: &[u8]) -> bool {
        u16_at(bytes, 8).is_some_and(|f| f & FREELIST != 0)
    }
}
