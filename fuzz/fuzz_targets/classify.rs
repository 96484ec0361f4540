#![no_main]
//! Arbitrary stored values through the classifier (verify + want_info), and the raw parsers.

use std::sync::OnceLock;

use atrest::codec::{self, ProviderTable, kms};
use libfuzzer_sys::fuzz_target;

mod common;

static TABLE: OnceLock<ProviderTable> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let table = TABLE.get_or_init(common::table);
    let (etcd_key, value) = common::split(data);

    // As the scanner calls it: no KMS plugin.
    let opts = codec::Options {
        verify: true,
        want_info: true,
        ..Default::default()
    };
    let c = table.classify(etcd_key, value, &opts);
    std::hint::black_box(&c);

    // With a pass-through "plugin", so that KMS v2 values are opened too.
    let plugin = common::PassThroughKms;
    let opts = codec::Options {
        verify: true,
        want_info: true,
        kms: Some(&plugin),
        ..Default::default()
    };
    let c = table.classify(etcd_key, value, &opts);
    std::hint::black_box(&c);

    // The raw parsers on the whole input and on the value part.
    for bytes in [data, value] {
        if let Ok(obj) = kms::parse_v2(bytes) {
            let _ = kms::open_v2(&obj, &obj.encrypted_dek_source, etcd_key);
        }
        if let Ok(env) = kms::parse_v1(bytes) {
            let _ = kms::open_v1(env.encrypted_dek, etcd_key, env.data);
        }
        std::hint::black_box(codec::object_info(bytes));
    }
});
