//! Shared between the `classify` fuzz target, `examples/fuzz_corpus.rs` (main workspace) and
//! `tests/fuzz_regressions.rs` (which replays `fuzz/regressions/classify/` through [`classify_all`]).
#![allow(dead_code)]

use std::path::Path;

use atrest::codec::kms::EncryptedObject;
use atrest::codec::{self, KmsUnwrap, ProviderTable, kms};
use zeroize::Zeroizing;

/// secrets -> [aescbc k1 (32 B), aesgcm "k:2" (16 B), secretbox k3 (32 B), kms v2 kms2, identity].
pub(crate) const CLASSIFY_CONFIG: &str = r#"apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - aescbc:
          keys:
            - name: k1
              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
      - aesgcm:
          keys:
            - name: "k:2"
              secret: QEFCQ0RFRkdISUpLTE1OTw==
      - secretbox:
          keys:
            - name: k3
              secret: gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8=
      - kms:
          apiVersion: v2
          name: kms2
          endpoint: unix:///tmp/x.sock
      - identity: {}
"#;

/// The raw key material behind the secrets above (for building seeds).
pub(crate) fn k1() -> Vec<u8> {
    (0u8..32).collect()
}
pub(crate) fn k2() -> Vec<u8> {
    (0x40u8..0x50).collect()
}
pub(crate) fn k3() -> Vec<u8> {
    (0x80u8..0xa0).collect()
}

pub(crate) fn table() -> ProviderTable {
    let config = atrest::config::parse_str(Path::new("classify-fuzz.yaml"), CLASSIFY_CONFIG)
        .expect("the fixed classify config is valid");
    let resolved = config.resolve(&atrest::GroupResource::parse("secrets"));
    ProviderTable::new(&resolved)
}

/// A stand-in KMS plugin whose "unwrap" is the identity: the encrypted DEK (source) *is* the
/// DEK (seed). Lets the fuzzer reach the KMS open paths without a plugin.
pub(crate) struct PassThroughKms;

impl KmsUnwrap for PassThroughKms {
    fn unwrap_v2(
        &self,
        _provider: &str,
        obj: &EncryptedObject,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        Ok(Zeroizing::new(obj.encrypted_dek_source.clone()))
    }
    fn unwrap_v1(
        &self,
        _provider: &str,
        encrypted_dek: &[u8],
    ) -> Option<Result<Zeroizing<Vec<u8>>, String>> {
        Some(Ok(Zeroizing::new(encrypted_dek.to_vec())))
    }
}

/// Fuzz input layout: byte 0 = etcd key length (clamped), then the etcd key, then the value.
pub(crate) fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.split_first() {
        None => (&[], &[]),
        Some((&n, rest)) => rest.split_at((n as usize).min(rest.len())),
    }
}

pub(crate) fn join(etcd_key: &[u8], value: &[u8]) -> Vec<u8> {
    assert!(etcd_key.len() <= 255);
    let mut out = vec![etcd_key.len() as u8];
    out.extend_from_slice(etcd_key);
    out.extend_from_slice(value);
    out
}

/// One `classify` fuzz input: everything the target runs on it. The property is that nothing
/// panics.
pub(crate) fn classify_all(table: &ProviderTable, data: &[u8]) {
    let (etcd_key, value) = split(data);

    // As the scanner calls it: no KMS plugin.
    let opts = codec::ClassifyOptions {
        verify: true,
        want_info: true,
        ..Default::default()
    };
    let c = table.classify(etcd_key, value, &opts);
    std::hint::black_box(&c);

    // With a pass-through "plugin", so that KMS v2 values are opened too.
    let plugin = PassThroughKms;
    let opts = codec::ClassifyOptions {
        verify: true,
        want_info: true,
        kms: Some(&plugin),
        ..Default::default()
    };
    let c = table.classify(etcd_key, value, &opts);
    std::hint::black_box(&c);

    // The raw parsers on the whole input and on the value part.
    for bytes in [data, value] {
        // What opens has the plaintext length the format implies: the GCM payload is a
        // 12-byte nonce, the text and a 16-byte tag (after a 32-byte info for the seed form);
        // the CBC form is a 16-byte IV and whole blocks.
        if let Ok(obj) = kms::parse_v2(bytes)
            && let Ok(pt) = kms::open_v2(&obj, &obj.encrypted_dek_source, etcd_key)
        {
            let overhead = if obj.encrypted_dek_source_type == 1 {
                32 + 28
            } else {
                28
            };
            assert_eq!(pt.len() + overhead, obj.encrypted_data.len(), "KMS v2 open");
        }
        if let Ok(env) = kms::parse_v1(bytes)
            && let Ok((pt, cbc)) = kms::open_v1(env.encrypted_dek, etcd_key, env.data)
        {
            if cbc {
                assert!(
                    env.data.len() % 16 == 0 && pt.len() < env.data.len(),
                    "KMS v1 CBC open"
                );
            } else {
                assert_eq!(pt.len() + 28, env.data.len(), "KMS v1 GCM open");
            }
        }
        std::hint::black_box(codec::object_info(bytes));
    }
}
