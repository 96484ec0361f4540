//! Walking a bucket's tree in key order, one element at a time.

use std::sync::Arc;

use super::page::{BRANCH, BUCKET_LEAF, LEAF, MAX_DEPTH, Page, Visited, leaf_elem, page_header};
use super::{BoltError, BoltFile, Bucket};

/// One element of a bucket.
pub struct Entry {
    /// Element flags (1: a nested bucket).
    pub flags: u32,
    /// The key.
    pub key: Vec<u8>,
    /// The value (for a nested bucket, its header).
    pub value: Vec<u8>,
}

impl Entry {
    /// The element is a nested bucket, not a value.
    pub fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF != 0
    }
}

/// Walks a bucket's tree in key order, one element at a time; every page it reads is recorded,
/// so a page reached twice (a cycle or a shared subtree, both corrupt) is an error, not a loop.
pub struct Cursor {
    pub(super) root: Bucket,
    pub(super) started: bool,
    /// Branch pages on the path: (bytes, id, next child).
    pub(super) stack: Vec<(Arc<Vec<u8>>, u64, usize)>,
    /// The leaf being read: (bytes, id, next element).
    pub(super) leaf: Option<(Arc<Vec<u8>>, u64, usize)>,
    pub(super) seen: Visited,
}

impl Cursor {
    /// Where the element `next` returned last is: its leaf page and index; `None` inside an
    /// inline bucket (no page of its own).
    pub fn location(&self) -> Option<(u64, usize)> {
        match &self.leaf {
            Some((_, id, i)) if *id >= 2 && *i > 0 => Some((*id, *i - 1)),
            _ => None,
        }
    }

    /// The next element, or `None` at the end.
    pub fn next(&mut self, db: &BoltFile) -> Result<Option<Entry>, BoltError> {
        loop {
            if let Some((bytes, id, i)) = &mut self.leaf {
                let count = page_header(bytes).map(|h| h.1).unwrap_or(0);
                if *i < count {
                    let (flags, k, v) = leaf_elem(bytes, *i).ok_or_else(|| {
                        db.corrupt(*id, format!("leaf element {i} is past the page"))
                    })?;
                    *i += 1;
                    return Ok(Some(Entry {
                        flags,
                        key: k.to_vec(),
                        value: v.to_vec(),
                    }));
                }
                self.leaf = None;
            }
            if !self.started {
                self.started = true;
                match &self.root {
                    Bucket::Inline(bytes) => {
                        let flags = page_header(bytes).map(|h| h.0).unwrap_or(0);
                        if flags & LEAF == 0 {
                            return Err(db.corrupt(0, "an inline bucket is not a leaf page"));
                        }
                        self.leaf = Some((Arc::new(bytes.clone()), 0, 0));
                    }
                    Bucket::Root(id) => self.enter(db, *id)?,
                }
                continue;
            }
            let Some((bytes, id, next)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let count = page_header(bytes).map(|h| h.1).unwrap_or(0);
            if *next >= count {
                self.stack.pop();
                continue;
            }
            let page = Page {
                id: *id,
                bytes: bytes.clone(),
            };
            let (_, child) = db.branch_elem(&page, *next)?;
            *next += 1;
            self.enter(db, child)?;
        }
    }

    fn enter(&mut self, db: &BoltFile, id: u64) -> Result<(), BoltError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(db.corrupt(id, format!("the tree is deeper than {MAX_DEPTH} levels")));
        }
        if !self.seen.insert(id) {
            return Err(db.corrupt(id, "the page is reached twice in the tree"));
        }
        let page = db.read_page(id)?;
        let flags = page.flags();
        if flags & BRANCH != 0 {
            self.stack.push((page.bytes, id, 0));
        } else if flags & LEAF != 0 {
            self.leaf = Some((page.bytes, id, 0));
        } else {
            return Err(db.corrupt(
                id,
                format!("flags {flags:#x}: neither a branch nor a leaf page"),
            ));
        }
        Ok(())
    }
}
