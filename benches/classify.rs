//! classify + decrypt of 1 KiB Secrets, per provider: the work `atrest scan --verify` does per
//! value. Target: at least 100,000 values per second per core.
//!
//!   cargo bench --bench classify

use std::path::Path;

use atrest::GroupResource;
use atrest::codec::{ClassifyOptions, ProviderTable, State, encrypt_value};
use atrest::config::{Provider, parse_str};
use divan::Bencher;

fn main() {
    divan::main();
}

const AAD: &[u8] = b"/registry/secrets/bench/secret-000001";

/// A stored 1 KiB Secret payload (protobuf magic, then filler).
fn plaintext() -> Vec<u8> {
    let mut p = b"k8s\x00".to_vec();
    p.resize(1024, 0x61);
    p
}

fn setup(provider: &str) -> (ProviderTable, Vec<u8>) {
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - {provider}: {{keys: [{{name: key1, secret: {secret}}}]}}\n  - identity: {{}}\n"
    );
    let cfg = parse_str(Path::new("bench.yaml"), &yaml).unwrap();
    let resolved = cfg.resolve(&GroupResource::secrets());
    let value = match &resolved.entries[0].provider {
        Provider::Keys { keys, .. } => encrypt_value(&keys[0], AAD, &plaintext()),
        _ => unreachable!(),
    };
    (ProviderTable::new(&resolved), value)
}

#[divan::bench(args = ["aescbc", "aesgcm", "secretbox"])]
fn classify_verify_1kib(bencher: Bencher, provider: &str) {
    let (table, value) = setup(provider);
    let opts = ClassifyOptions {
        verify: true,
        ..Default::default()
    };
    bencher
        .counter(divan::counter::ItemsCount::new(1usize))
        .bench(|| {
            let c = table.classify(divan::black_box(AAD), divan::black_box(&value), &opts);
            assert_eq!(c.state, State::EncryptedOk);
        });
}

#[divan::bench(args = ["aescbc", "aesgcm", "secretbox"])]
fn classify_prefix_only_1kib(bencher: Bencher, provider: &str) {
    let (table, value) = setup(provider);
    let opts = ClassifyOptions::default();
    bencher
        .counter(divan::counter::ItemsCount::new(1usize))
        .bench(|| {
            let c = table.classify(divan::black_box(AAD), divan::black_box(&value), &opts);
            assert_eq!(c.state, State::EncryptedOk);
        });
}
