#![no_main]
//! Arbitrary bytes as an etcd data file: the bbolt page reader and every offline reader on top.
//! Seed it with real snapshots (`etcdctl snapshot save`) and a large `-max_len`.

use libfuzzer_sys::fuzz_target;

mod db_props;

fuzz_target!(|data: &[u8]| {
    db_props::check(data);
});
