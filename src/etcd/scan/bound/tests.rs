//! The page-end estimate against sorted key sets: every key read exactly once, and what etcd
//! would count (every key from each request's start to its range end) stays linear.

use std::collections::BTreeSet;

use super::*;

/// Pages through `keys` as the reader does, with pages of `want` keys; (keys read in order,
/// keys etcd would have counted).
fn page_through(keys: &BTreeSet<Vec<u8>>, want: usize, bounded: bool) -> (Vec<Vec<u8>>, u64, u64) {
    let range_end = b"\xff".to_vec();
    let mut start = Vec::new();
    let mut stride = Stride::default();
    let mut read = Vec::new();
    let mut counted = 0u64;
    for round in 0.. {
        assert!(round < 1_000_000, "no end after a million requests");
        let end = if bounded {
            stride.end(&start, &range_end, want as i64)
        } else {
            range_end.clone()
        };
        let in_range: Vec<&Vec<u8>> = keys.range(start.clone()..end.clone()).collect();
        counted += in_range.len() as u64;
        let page: Vec<Vec<u8>> = in_range.iter().take(want).map(|k| k.to_vec()).collect();
        let more = in_range.len() > want;
        let reached = if more {
            page.last().unwrap().clone()
        } else {
            end.clone()
        };
        stride.learn(page.first().map(Vec::as_slice), &reached, page.len());
        read.extend(page.iter().cloned());
        if more {
            let mut next = page.last().unwrap().clone();
            next.push(0);
            start = next;
        } else if end != range_end {
            start = end;
        } else {
            return (read, counted, round + 1);
        }
    }
    unreachable!()
}

fn one_namespace(n: usize) -> BTreeSet<Vec<u8>> {
    (0..n)
        .map(|i| format!("/registry/secrets/big/s-{i}").into_bytes())
        .collect()
}

fn many_namespaces(namespaces: usize, each: usize) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for ns in 0..namespaces {
        for i in 0..each {
            out.insert(format!("/registry/configmaps/team-{ns:03}/cm-{i:04}").into_bytes());
        }
    }
    out
}

#[test]
fn every_key_is_read_once_in_order_and_the_count_stays_linear() {
    for (name, keys) in [
        (
            "one namespace, unpadded decimal names",
            one_namespace(50_000),
        ),
        ("500 namespaces", many_namespaces(500, 100)),
    ] {
        let n = keys.len() as u64;
        let (read, counted, requests) = page_through(&keys, 500, true);
        assert_eq!(read, keys.iter().cloned().collect::<Vec<_>>(), "{name}");
        let (_, open, pages) = page_through(&keys, 500, false);
        eprintln!(
            "{name}: {n} keys; bounded: {counted} counted in {requests} requests; open: {open} counted in {pages}"
        );
        assert!(
            counted <= 5 * n,
            "{name}: bounded pages counted {counted} keys for {n} (open ranges: {open})"
        );
        assert!(
            requests <= 4 * pages,
            "{name}: {requests} requests where open ranges take {pages}"
        );
        assert!(
            open > 20 * n,
            "{name}: open ranges count quadratically ({open})"
        );
    }
}

#[test]
fn a_guess_never_goes_backwards_or_past_the_range() {
    let mut s = Stride::default();
    s.learn(Some(b"/r/a-1"), b"/r/a-9", 8);
    for start in [
        &b"/r/a-9\x00"[..],
        b"/r/b",
        b"/r/\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        let e = s.end(start, b"/r0", 100);
        assert!(e.as_slice() > start, "{e:?} after {start:?}");
        assert!(e.as_slice() <= &b"/r0"[..]);
    }
    // Unknown density: the whole range.
    assert_eq!(Stride::default().end(b"/r/a", b"/r0", 10), b"/r0".to_vec());
}

#[test]
fn splits_stay_bounded_and_evenly_spaced() {
    let mut splits = Splits::default();
    for i in 0..100_000u32 {
        splits.offer(format!("/registry/secrets/ns/{i:06}").as_bytes());
    }
    let keys = splits.keys();
    assert!(
        keys.len() >= MAX_SPLITS && keys.len() < 2 * MAX_SPLITS,
        "{}",
        keys.len()
    );
    // Every kept key is a multiple of the final spacing.
    let step = splits.step as usize;
    for (n, k) in keys.iter().enumerate() {
        let i: usize = String::from_utf8_lossy(&k[21..]).parse().unwrap();
        assert_eq!(i + 1, (n + 1) * step, "key {n}");
    }
}
