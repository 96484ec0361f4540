//! The bbolt page format: constants, the meta page with its checksum, and bounds-checked
//! readers of page headers and leaf elements. Nothing here reads the file.

use std::sync::Arc;

use super::Bucket;

pub(super) const PAGE_HEADER: usize = 16;
pub(super) const ELEMENT: usize = 16;
pub(super) const MAGIC: u32 = 0xED0C_DAED;
pub(super) const VERSION: u32 = 2;
pub(super) const BRANCH: u16 = 0x01;
pub(super) const LEAF: u16 = 0x02;
pub(super) const META: u16 = 0x04;
pub(super) const FREELIST: u16 = 0x10;
pub(super) const BUCKET_LEAF: u32 = 0x01;
/// bbolt writes no freelist page when `NoFreelistSync` is set; its meta then names this pgid.
pub(super) const NO_FREELIST: u64 = u64::MAX;
/// Trees deeper than this are corrupt (a bbolt tree of a billion keys is about 6 levels).
pub(super) const MAX_DEPTH: usize = 64;
/// Branch pages kept in memory for lookups; leaf pages are read and dropped.
pub(super) const BRANCH_CACHE_PAGES: usize = 4096;

/// The current meta page: where the tree starts and how big the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Bytes per page.
    pub page_size: u32,
    /// Root page of the root bucket (whose keys are the top-level bucket names).
    pub root: u64,
    /// The freelist page, or `u64::MAX` when none is written.
    pub freelist: u64,
    /// The high-water mark: pages `0..pgid` are in use or free.
    pub pgid: u64,
    /// The transaction that wrote this meta page.
    pub txid: u64,
}

/// A page read from the file, with its overflow pages.
pub(super) struct Page {
    pub(super) id: u64,
    pub(super) bytes: Arc<Vec<u8>>,
}

impl Page {
    pub(super) fn flags(&self) -> u16 {
        u16_at(&self.bytes, 8).unwrap_or(0)
    }
    pub(super) fn count(&self) -> usize {
        u16_at(&self.bytes, 10).unwrap_or(0) as usize
    }
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
pub(super) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// FNV-1a 64, bbolt's meta checksum.
pub(super) fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Parses the meta struct that starts at `b[PAGE_HEADER..]`; `Err` says why it is not valid.
pub(super) fn parse_meta(b: &[u8]) -> Result<Meta, String> {
    let m = b
        .get(PAGE_HEADER..PAGE_HEADER + 64)
        .ok_or_else(|| "shorter than a meta page".to_string())?;
    let flags = u16_at(b, 8).unwrap_or(0);
    let magic = u32_at(m, 0).unwrap_or(0);
    if magic != MAGIC {
        return Err(format!("magic {magic:#010x}, expected {MAGIC:#010x}"));
    }
    if flags & META == 0 {
        return Err(format!("page flags {flags:#x} are not a meta page's"));
    }
    let version = u32_at(m, 4).unwrap_or(0);
    if version != VERSION {
        return Err(format!("format version {version}, expected {VERSION}"));
    }
    let checksum = u64_at(m, 56).unwrap_or(0);
    if fnv64a(&m[..56]) != checksum {
        return Err("meta checksum mismatch".to_string());
    }
    let page_size = u32_at(m, 8).unwrap_or(0);
    if !(1024..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("page size {page_size} is not a bbolt page size"));
    }
    Ok(Meta {
        page_size,
        root: u64_at(m, 16).unwrap_or(0),
        freelist: u64_at(m, 32).unwrap_or(0),
        pgid: u64_at(m, 40).unwrap_or(0),
        txid: u64_at(m, 48).unwrap_or(0),
    })
}

/// A bucket header (root u64, sequence u64), and an inline page after it when root is 0.
pub(super) fn bucket_of(value: &[u8]) -> Option<Bucket> {
    let root = u64_at(value, 0)?;
    if root == 0 {
        Some(Bucket::Inline(value.get(16..)?.to_vec()))
    } else {
        Some(Bucket::Root(root))
    }
}

/// Element `i` of a leaf page's bytes: (flags, key, value), or `None` when it runs off the page.
pub fn leaf_elem(bytes: &[u8], i: usize) -> Option<(u32, &[u8], &[u8])> {
    let at = PAGE_HEADER.checked_add(i.checked_mul(ELEMENT)?)?;
    let e = bytes.get(at..at.checked_add(ELEMENT)?)?;
    let flags = u32_at(e, 0)?;
    let pos = u32_at(e, 4)? as usize;
    let ksize = u32_at(e, 8)? as usize;
    let vsize = u32_at(e, 12)? as usize;
    let kstart = at.checked_add(pos)?;
    let kend = kstart.checked_add(ksize)?;
    let vend = kend.checked_add(vsize)?;
    Some((flags, bytes.get(kstart..kend)?, bytes.get(kend..vend)?))
}

/// A page's header fields: (flags, count, overflow), for pages read with [`BoltFile::raw_page`].
pub fn page_header(bytes: &[u8]) -> Option<(u16, usize, u32)> {
    Some((
        u16_at(bytes, 8)?,
        u16_at(bytes, 10)? as usize,
        u32_at(bytes, 12)?,
    ))
}

/// Whether flags name a leaf page.
pub fn is_leaf(flags: u16) -> bool {
    flags & LEAF != 0 && flags & (BRANCH | META | FREELIST) == 0
}

/// A set of page ids over `0..n`, one bit each.
pub struct Visited {
    bits: Vec<u64>,
    n: u64,
}

impl Visited {
    pub(super) fn new(n: u64) -> Self {
        Self {
            bits: vec![0; n.div_ceil(64) as usize],
            n,
        }
    }

    /// Adds `id`; false when it was already there (or is out of range).
    pub(super) fn insert(&mut self, id: u64) -> bool {
        if id >= self.n {
            return false;
        }
        let (w, b) = ((id / 64) as usize, id % 64);
        let had = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        !had
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        id < self.n && self.bits[(id / 64) as usize] & (1 << (id % 64)) != 0
    }

    /// The ids in the set, ascending.
    pub fn ids(&self) -> Vec<u64> {
        (0..self.n).filter(|i| self.contains(*i)).collect()
    }

    /// How many ids are in the set.
    pub fn len(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
