#![no_main]
//! Arbitrary bytes through the config parser; the properties are in `config_props.rs`.

use libfuzzer_sys::fuzz_target;

mod config_props;

fuzz_target!(|data: &[u8]| config_props::check(data));
