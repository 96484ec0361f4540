//! Shared between the `classify` fuzz target and `examples/gen_corpus.rs`.
#![allow(dead_code)]

use std::path::Path;

use atrest::codec::kms::EncryptedObject;
use atrest::codec::{KmsUnwrap, ProviderTable};
use zeroize::Zeroizing;

/// secrets -> [aescbc k1 (32 B), aesgcm "k:2" (16 B), secretbox k3 (32 B), kms v2 kms2, identity].
pub const CLASSIFY_CONFIG: &str = r#"apiVersion: apiserver.config.k8s.io/v1
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
pub fn k1() -> Vec<u8> {
    (0u8..32).collect()
}
pub fn k2() -> Vec<u8> {
    (0x40u8..0x50).collect()
}
pub fn k3() -> Vec<u8> {
    (0x80u8..0xa0).collect()
}

pub fn table() -> ProviderTable {
    let config = atrest::config::parse_str(Path::new("classify-fuzz.yaml"), CLASSIFY_CONFIG)
        .expect("the fixed classify config is valid");
    let resolved = config.resolve(&atrest::GroupResource::parse("secrets"));
    ProviderTable::new(&resolved)
}

/// A stand-in KMS plugin whose "unwrap" is the identity: the encrypted DEK (source) *is* the
/// DEK (seed). Lets the fuzzer reach the KMS open paths without a plugin.
pub struct PassThroughKms;

impl KmsUnwrap for PassThroughKms {
    fn unwrap_v2(&self, _provider: &str, obj: &EncryptedObject) -> Result<Zeroizing<Vec<u8>>, String> {
        Ok(Zeroizing::new(obj.encrypted_dek_source.clone()))
    }
    fn unwrap_v1(&self, _provider: &str, encrypted_dek: &[u8]) -> Option<Result<Zeroizing<Vec<u8>>, String>> {
        Some(Ok(Zeroizing::new(encrypted_dek.to_vec())))
    }
}

/// Fuzz input layout: byte 0 = etcd key length (clamped), then the etcd key, then the value.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.split_first() {
        None => (&[], &[]),
        Some((&n, rest)) => rest.split_at((n as usize).min(rest.len())),
    }
}

pub fn join(etcd_key: &[u8], value: &[u8]) -> Vec<u8> {
    assert!(etcd_key.len() <= 255);
    let mut out = vec![etcd_key.len() as u8];
    out.extend_from_slice(etcd_key);
    out.extend_from_slice(value);
    out
}
