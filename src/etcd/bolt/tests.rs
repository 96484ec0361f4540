use super::*;

#[test]
fn fnv_matches_the_reference_vector() {
    // FNV-1a 64 of "a" (from the FNV reference).
    assert_eq!(fnv64a(b"a"), 0xaf63dc4c8601ec8c);
}
