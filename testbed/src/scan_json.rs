//! Reading `atrest scan -o json` (schema atrest.scan/v2) in tests: exact counts per key and
//! verdict, and the names in a verdict's sample.

use std::collections::BTreeMap;

use serde_json::Value;

/// Stored values per key label (every verdict summed), from a resource of the scan JSON.
pub fn stored(r: &Value) -> BTreeMap<String, u64> {
    r["keys"]
        .as_object()
        .map(|keys| {
            keys.iter()
                .map(|(k, c)| {
                    let n = c
                        .as_object()
                        .map(|m| m.values().filter_map(Value::as_u64).sum())
                        .unwrap_or(0);
                    (k.clone(), n)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The exact count of one verdict (`on_write_key`, `stale`, `plaintext`, `undecryptable`,
/// `unknown_key`, `corrupt`).
pub fn verdict(r: &Value, v: &str) -> u64 {
    r["verdicts"][v]
        .as_u64()
        .unwrap_or_else(|| panic!("no verdict count {v} in {r:#}"))
}

/// The names in one verdict's sample (at most the list cap), sorted.
pub fn sample_names(r: &Value, v: &str) -> Vec<String> {
    let mut names: Vec<String> = r["samples"][v]["objects"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
