//! Every revision of the keys under the prefix, re-ordered from the file's revision order into
//! key order (and, per key, revision order) by an external sort: the walk fills a buffer of at
//! most [`RUN_BYTES`], sorts it and spills it to an unnamed temporary file, and the reads merge
//! the runs. Memory stays flat whatever the number of keys; the disk holds about the keys'
//! bytes plus 33 bytes per revision while the file is open. A file whose revisions fit in one
//! buffer is never spilled.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::super::mvcc::Revision;

/// Bytes of keys and records a run holds in memory before it is sorted and spilled.
const RUN_BYTES: usize = 16 << 20;
/// Read buffer of each spilled run while runs are merged.
const READ_BUFFER: usize = 128 << 10;

/// Why the sort runs could not be written or read back.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot {action} the offline scan's sort runs in {dir} (set TMPDIR to a folder with room for about 100 bytes per revision): {source}"
)]
pub struct SpillError {
    action: &'static str,
    dir: PathBuf,
    source: std::io::Error,
}

fn spill_error(action: &'static str) -> impl FnOnce(std::io::Error) -> SpillError {
    move |source| SpillError {
        action,
        dir: std::env::temp_dir(),
        source,
    }
}

/// One revision of a key: where its value is in the db file (leaf page and element), when it
/// has a page of its own.
#[derive(Clone, Debug)]
pub(super) struct KeyRevision {
    /// The etcd key.
    pub(super) key: Vec<u8>,
    /// Its revision.
    pub(super) revision: Revision,
    /// Leaf page and element of the value; `None` inside an inline bucket.
    pub(super) at: Option<(u64, usize)>,
}

/// A record of an in-memory run; its key is a slice of the run's arena.
#[derive(Clone, Copy)]
struct Record {
    key_at: u32,
    key_len: u32,
    revision: Revision,
    at: Option<(u64, u32)>,
}

/// Bytes a [`Record`] costs in memory besides its key.
const RECORD_BYTES: usize = size_of::<Record>();

#[derive(Default)]
struct Run {
    arena: Vec<u8>,
    records: Vec<Record>,
}

impl Run {
    fn key(&self, r: &Record) -> &[u8] {
        &self.arena[r.key_at as usize..(r.key_at + r.key_len) as usize]
    }

    fn bytes(&self) -> usize {
        self.arena.len() + self.records.len() * RECORD_BYTES
    }

    fn sort(&mut self) {
        let arena = &self.arena;
        let key = |r: &Record| &arena[r.key_at as usize..(r.key_at + r.key_len) as usize];
        self.records
            .sort_unstable_by(|a, b| key(a).cmp(key(b)).then(a.revision.cmp(&b.revision)));
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.records.clear();
    }
}

/// Revisions being collected ([`SortedRevisions::push`]), then read back in key order
/// ([`SortedRevisions::merged`]).
pub(super) struct SortedRevisions {
    /// [`RUN_BYTES`], smaller in tests.
    run_bytes: usize,
    /// The last run, kept in memory (sorted once collection ends).
    tail: Run,
    /// Runs spilled to disk, each sorted, with their record counts.
    spilled: Vec<(File, u64)>,
    len: u64,
}

impl Default for SortedRevisions {
    fn default() -> Self {
        Self {
            run_bytes: RUN_BYTES,
            tail: Run::default(),
            spilled: Vec::new(),
            len: 0,
        }
    }
}

impl SortedRevisions {
    /// Adds one revision of `key`; may spill the current run.
    pub(super) fn push(
        &mut self,
        key: &[u8],
        revision: Revision,
        at: Option<(u64, usize)>,
    ) -> Result<(), SpillError> {
        // A leaf never holds 4 G elements, nor a key 4 GiB: both fit u32.
        let at = at.map(|(p, i)| (p, u32::try_from(i).unwrap_or(u32::MAX)));
        let key_at = u32::try_from(self.tail.arena.len()).unwrap_or(u32::MAX);
        self.tail.arena.extend_from_slice(key);
        self.tail.records.push(Record {
            key_at,
            key_len: u32::try_from(key.len()).unwrap_or(u32::MAX),
            revision,
            at,
        });
        self.len += 1;
        if self.tail.bytes() >= self.run_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Revisions pushed.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Runs written to disk.
    pub(super) fn spilled_runs(&self) -> usize {
        self.spilled.len()
    }

    fn spill(&mut self) -> Result<(), SpillError> {
        self.tail.sort();
        let file = tempfile::tempfile().map_err(spill_error("create"))?;
        let mut w = BufWriter::with_capacity(READ_BUFFER, &file);
        for r in &self.tail.records {
            let key = self.tail.key(r);
            let (page, index) = r.at.unwrap_or((0, 0));
            let flags = u8::from(r.revision.tombstone) | (u8::from(r.at.is_some()) << 1);
            w.write_all(&r.key_len.to_le_bytes())
                .and_then(|()| w.write_all(key))
                .and_then(|()| w.write_all(&r.revision.main.to_le_bytes()))
                .and_then(|()| w.write_all(&r.revision.sub.to_le_bytes()))
                .and_then(|()| w.write_all(&[flags]))
                .and_then(|()| w.write_all(&page.to_le_bytes()))
                .and_then(|()| w.write_all(&index.to_le_bytes()))
                .map_err(spill_error("write"))?;
        }
        w.flush().map_err(spill_error("write"))?;
        drop(w);
        self.spilled.push((file, self.tail.records.len() as u64));
        self.tail.clear();
        Ok(())
    }

    /// Ends collection: sorts the run kept in memory.
    pub(super) fn seal(&mut self) {
        self.tail.sort();
        self.tail.arena.shrink_to_fit();
        self.tail.records.shrink_to_fit();
    }

    /// Every revision pushed, in key order and per key in revision order. Can be called again
    /// for another pass. [`Self::seal`] must have been called.
    pub(super) fn merged(&self) -> Result<Merged<'_>, SpillError> {
        let mut sources = Vec::with_capacity(self.spilled.len() + 1);
        for (file, count) in &self.spilled {
            sources.push(Source::Disk {
                reader: BufReader::with_capacity(READ_BUFFER, At { file, pos: 0 }),
                left: *count,
            });
        }
        sources.push(Source::Memory {
            run: &self.tail,
            next: 0,
        });
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(rev) = s.next()? {
                heap.push(Head { rev, source: i });
            }
        }
        Ok(Merged { sources, heap })
    }
}

/// Positioned reads of a spilled run, so several passes can read one file.
struct At<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

enum Source<'s> {
    Disk {
        reader: BufReader<At<'s>>,
        left: u64,
    },
    Memory {
        run: &'s Run,
        next: usize,
    },
}

impl Source<'_> {
    fn next(&mut self) -> Result<Option<KeyRevision>, SpillError> {
        match self {
            Source::Memory { run, next } => Ok(run.records.get(*next).map(|r| {
                *next += 1;
                KeyRevision {
                    key: run.key(r).to_vec(),
                    revision: r.revision,
                    at: r.at.map(|(p, i)| (p, i as usize)),
                }
            })),
            Source::Disk { reader, left } => {
                if *left == 0 {
                    return Ok(None);
                }
                *left -= 1;
                let read = spill_error("read");
                let mut len = [0u8; 4];
                reader.read_exact(&mut len).map_err(read)?;
                let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
                let mut rest = [0u8; 8 + 8 + 1 + 8 + 4];
                reader
                    .read_exact(&mut key)
                    .and_then(|()| reader.read_exact(&mut rest))
                    .map_err(spill_error("read"))?;
                let num = |from: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[from..from + 8]);
                    b
                };
                let flags = rest[16];
                let mut index = [0u8; 4];
                index.copy_from_slice(&rest[25..29]);
                Ok(Some(KeyRevision {
                    key,
                    revision: Revision {
                        main: i64::from_le_bytes(num(0)),
                        sub: i64::from_le_bytes(num(8)),
                        tombstone: flags & 1 != 0,
                    },
                    at: (flags & 2 != 0).then(|| {
                        (
                            u64::from_le_bytes(num(17)),
                            u32::from_le_bytes(index) as usize,
                        )
                    }),
                }))
            }
        }
    }
}

/// The smallest unread revision of one source.
struct Head {
    rev: KeyRevision,
    source: usize,
}

impl Head {
    fn order(&self) -> (&[u8], Revision) {
        (&self.rev.key, self.rev.revision)
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    /// Reversed: the heap pops the smallest key first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.order().cmp(&self.order())
    }
}

/// A key and every revision of it in the file, oldest first.
pub(super) type KeyHistory = (Vec<u8>, Vec<KeyRevision>);

/// A pass over [`SortedRevisions`] in key order.
pub(super) struct Merged<'s> {
    sources: Vec<Source<'s>>,
    heap: BinaryHeap<Head>,
}

impl Merged<'_> {
    /// The next revision in (key, revision) order.
    pub(super) fn next_revision(&mut self) -> Result<Option<KeyRevision>, SpillError> {
        let Some(Head { rev, source }) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.sources[source].next()? {
            self.heap.push(Head { rev: next, source });
        }
        Ok(Some(rev))
    }

    /// The next key with all its revisions, oldest first.
    pub(super) fn next_key(&mut self) -> Result<Option<KeyHistory>, SpillError> {
        let Some(first) = self.next_revision()? else {
            return Ok(None);
        };
        let key = first.key.clone();
        let mut revisions = vec![first];
        while self.heap.peek().is_some_and(|h| h.rev.key == key) {
            if let Some(r) = self.next_revision()? {
                revisions.push(r);
            }
        }
        Ok(Some((key, revisions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64, tombstone: bool) -> Revision {
        Revision {
            main,
            sub: 0,
            tombstone,
        }
    }

    /// Enough revisions to spill several runs come back in key order, each key's revisions
    /// oldest first, every one exactly once, locations intact.
    #[test]
    fn spilled_runs_merge_back_in_key_order_with_every_revision_once() {
        let mut s = SortedRevisions {
            run_bytes: 1 << 20,
            ..SortedRevisions::default()
        };
        let keys = 60_000u64;
        // Written in revision order as etcd does: three rounds over the keys, keys interleaved.
        let mut main = 1;
        for round in 0..3u64 {
            for k in 0..keys {
                let k = (k * 7_919) % keys;
                let key = format!("/registry/secrets/ns/s{k:09}-with-a-longer-name-to-fill-runs");
                let tomb = round == 2 && k.is_multiple_of(10);
                s.push(key.as_bytes(), rev(main, tomb), Some((main as u64, 3)))
                    .unwrap();
                main += 1;
            }
        }
        s.seal();
        assert!(s.spilled_runs() >= 10, "{} runs", s.spilled_runs());
        assert_eq!(s.len(), 3 * keys);
        for _pass in 0..2 {
            let mut m = s.merged().unwrap();
            let mut last: Option<Vec<u8>> = None;
            let (mut seen_keys, mut seen_revs) = (0u64, 0u64);
            while let Some((key, revs)) = m.next_key().unwrap() {
                if let Some(l) = &last {
                    assert!(l < &key, "keys out of order");
                }
                assert_eq!(revs.len(), 3);
                assert!(revs.windows(2).all(|w| w[0].revision < w[1].revision));
                assert!(
                    revs.iter()
                        .all(|r| r.at == Some((r.revision.main as u64, 3)))
                );
                let k: u64 = std::str::from_utf8(&key).unwrap()[22..31].parse().unwrap();
                assert_eq!(revs[2].revision.tombstone, k.is_multiple_of(10));
                seen_keys += 1;
                seen_revs += revs.len() as u64;
                last = Some(key);
            }
            assert_eq!((seen_keys, seen_revs), (keys, 3 * keys));
        }
    }

    #[test]
    fn a_small_file_is_never_spilled() {
        let mut s = SortedRevisions::default();
        s.push(b"/b", rev(1, false), None).unwrap();
        s.push(b"/a", rev(2, false), Some((9, 1))).unwrap();
        s.push(b"/b", rev(3, true), None).unwrap();
        s.seal();
        assert_eq!(s.spilled_runs(), 0);
        let mut m = s.merged().unwrap();
        let (k, r) = m.next_key().unwrap().unwrap();
        assert_eq!(
            (k.as_slice(), r.len(), r[0].at),
            (&b"/a"[..], 1, Some((9, 1)))
        );
        let (k, r) = m.next_key().unwrap().unwrap();
        assert_eq!(
            (k.as_slice(), r.len(), r[1].revision),
            (&b"/b"[..], 2, rev(3, true))
        );
        assert!(m.next_key().unwrap().is_none());
    }
}
