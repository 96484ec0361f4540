//! Unit tests, kept apart so the module reads as its one responsibility.

use super::*;

fn key(i: usize) -> SourceKey {
    ("p".into(), String::new(), i.to_be_bytes().to_vec())
}

fn dek(i: usize) -> Unwrapped {
    Ok(Zeroizing::new(vec![i as u8; 32]))
}

#[test]
fn dek_cache_stays_at_its_cap_and_forgets_the_least_recently_used() {
    let mut c = DekCache::new(4);
    for i in 0..4 {
        c.insert(key(i), dek(i));
    }
    // Entry 0 is used again, so 1 is now the least recently used.
    assert!(c.get(&key(0)).is_some());
    for i in 4..10 {
        c.insert(key(i), dek(i));
        assert_eq!(c.len(), 4, "never more than the cap");
    }
    assert_eq!(c.order.len(), 4);
    // The evicted entries miss, so the next prefetch asks the plugin for them again.
    for i in 0..6 {
        assert!(c.get(&key(i)).is_none(), "{i} was evicted");
    }
    for i in 6..10 {
        assert_eq!(c.get(&key(i)), Some(&dek(i)));
    }
    // Fetched again after eviction, it is cached again (and evicts the oldest).
    c.insert(key(0), dek(0));
    assert_eq!(c.get(&key(0)), Some(&dek(0)));
    assert!(c.get(&key(6)).is_none());
    assert_eq!(c.len(), 4);
}

#[test]
fn dek_cache_keeps_every_dek_of_a_full_scan_page() {
    // Every DEK prefetched for one page is still there when the page is classified.
    let page = 5000;
    assert!(DEK_CACHE_ENTRIES >= page);
    let mut c = DekCache::new(DEK_CACHE_ENTRIES);
    for i in 0..DEK_CACHE_ENTRIES {
        c.insert(key(i), dek(i));
    }
    let first = DEK_CACHE_ENTRIES;
    for i in first..first + page {
        c.insert(key(i), dek(i));
    }
    assert_eq!(c.len(), DEK_CACHE_ENTRIES);
    assert!((first..first + page).all(|i| c.get(&key(i)).is_some()));
}

#[test]
fn a_refused_dek_names_its_provider() {
    let mut c = DekCache::new(2);
    let refused = UnwrapError::Refused {
        provider: "p".into(),
        message: "no such key".into(),
    };
    c.insert(key(1), Err(refused.clone()));
    assert_eq!(c.get(&key(1)), Some(&Err(refused)));
}

#[test]
fn a_plugin_that_times_out_is_unreachable_never_a_refusal() {
    // tonic's own request timeout.
    let timeout = tonic::Status::cancelled("Timeout expired");
    assert!(
        unreachable_message(&timeout)
            .unwrap()
            .contains("no answer within 10 s")
    );
    assert!(unreachable_message(&tonic::Status::deadline_exceeded("x")).is_some());
    assert_eq!(
        unreachable_message(&tonic::Status::unavailable("connection refused")).as_deref(),
        Some("connection refused")
    );
    // A plugin that answered and refused the key is a result about the value.
    assert!(unreachable_message(&tonic::Status::invalid_argument("unknown key")).is_none());
}
