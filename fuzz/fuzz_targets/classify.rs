#![no_main]
//! Arbitrary stored values through the classifier (verify + want_info), and the raw parsers.

use std::sync::OnceLock;

use atrest::codec::ProviderTable;
use libfuzzer_sys::fuzz_target;

mod common;

static TABLE: OnceLock<ProviderTable> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let table = TABLE.get_or_init(common::table);
    common::classify_all(table, data);
});
