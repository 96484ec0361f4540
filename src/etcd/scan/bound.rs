//! Bounded page reads. etcd counts every key from a request's start to its range end, whatever
//! the limit, so paging an open range of N keys costs O(N²/page) inside etcd. Each page here
//! names a range end estimated to hold about one page of keys, from the key density of the page
//! before (its keys' distance, read as base-256 numbers past their common prefix, per key). A
//! guess never changes what is read — every bounded range is read to its end before the next —
//! only what etcd counts: too far and etcd counts a little more, too near and the page is short
//! and the next guess reaches further.

/// Bytes of a key compared as one number, past the common prefix.
const WINDOW: usize = 16;

/// The running estimate of how far a page of keys reaches.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stride {
    /// Where the last page's keys began to differ: the window's first byte.
    at: usize,
    /// Distance (in [`WINDOW`]-byte numbers from `at`) one key spans, from the last page; `None`
    /// until a page taught it.
    per_key: Option<u128>,
    /// Pages in a row that came back empty: each doubles the reach.
    empty: u32,
}

impl Stride {
    /// The range end for a page of `want` keys from `start` inside a range ending at `end`:
    /// `end` itself until the density is known, or when the estimate reaches past it.
    pub(crate) fn end(&self, start: &[u8], end: &[u8], want: i64) -> Vec<u8> {
        let Some(per_key) = self.per_key else {
            return end.to_vec();
        };
        // Each empty page in a row quadruples the reach; past the window's width the window moves
        // one byte towards the key's start (the same reach, in units 256 times larger).
        let mut reach = per_key.saturating_mul(want.max(1) as u128).max(1);
        let mut at = self.at;
        for _ in 0..2 * self.empty {
            if reach.leading_zeros() > 8 {
                reach <<= 1;
            } else if at == 0 {
                return end.to_vec();
            } else {
                at -= 1;
                reach = (reach >> 8) << 1;
            }
        }
        match add(start, at, reach) {
            Some(e) if e.as_slice() > start && e.as_slice() < end => e,
            _ => end.to_vec(),
        }
    }

    /// Learns from a page: its `n` keys from `first` up to `reached` (its last key when the
    /// range had more, else the range end it was bounded by). Measured from the page's first
    /// key, not the request's start, which may lie far before it (a range's prefix).
    pub(crate) fn learn(&mut self, first: Option<&[u8]>, reached: &[u8], n: usize) {
        let Some(first) = first.filter(|_| n > 1) else {
            self.empty += 1;
            return;
        };
        self.empty = 0;
        self.at = common_prefix(first, reached);
        let d = window(reached, self.at).saturating_sub(window(first, self.at));
        self.per_key = Some((d / (n - 1) as u128).max(1));
    }
}

/// The number a key's `WINDOW` bytes from `at` make (zero-padded on the right).
fn window(key: &[u8], at: usize) -> u128 {
    let mut buf = [0u8; WINDOW];
    if at < key.len() {
        let tail = &key[at..key.len().min(at + WINDOW)];
        buf[..tail.len()].copy_from_slice(tail);
    }
    u128::from_be_bytes(buf)
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `key` moved `by` forward in the window from `at`, carrying into the bytes before it as a
/// big-endian number (trailing zero bytes dropped). `None` when the carry runs past the first
/// byte (the page reaches past every key there is).
fn add(key: &[u8], at: usize, by: u128) -> Option<Vec<u8>> {
    let at = at.min(key.len());
    let (sum, mut carry) = window(key, at).overflowing_add(by);
    let mut out = key[..at].to_vec();
    for b in out.iter_mut().rev() {
        if !carry {
            break;
        }
        (*b, carry) = b.overflowing_add(1);
    }
    if carry {
        return None;
    }
    out.extend_from_slice(&sum.to_be_bytes());
    while out.len() > at + 1 && out.last() == Some(&0) {
        out.pop();
    }
    Some(out)
}

/// Keys spaced about evenly through everything a scan read, at most `2 × MAX_SPLITS`: where
/// a later read of the same keys' history splits its work (etcd serves many watchers over
/// disjoint key ranges in one pass of its sync loop; see `history::live`). Memory stays bounded
/// whatever the number of keys: when the list is full every other key is dropped and the
/// spacing doubles.
#[derive(Clone, Debug, Default)]
pub struct Splits {
    keys: Vec<Vec<u8>>,
    /// Keys between two kept ones (1 until the list first fills).
    step: u64,
    /// Keys offered so far.
    seen: u64,
}

/// The fewest split keys a full list keeps.
pub(crate) const MAX_SPLITS: usize = 256;

impl Splits {
    /// Offers the next key read (keys of one range in order).
    pub fn offer(&mut self, key: &[u8]) {
        self.seen += 1;
        self.step = self.step.max(1);
        if !self.seen.is_multiple_of(self.step) {
            return;
        }
        self.keys.push(key.to_vec());
        if self.keys.len() >= 2 * MAX_SPLITS {
            let mut i = 0;
            self.keys.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.step *= 2;
        }
    }

    /// The split keys, in the order the scan read them (its ranges in plan order).
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }
}

#[cfg(test)]
#[path = "bound/tests.rs"]
mod tests;
