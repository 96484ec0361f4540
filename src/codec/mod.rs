//! The apiserver's storage transformers and the classifier that says what a stored value is.

pub mod cipher;
pub mod classify;
pub mod kms;
pub mod object;
pub mod sensitive;

pub use cipher::OpenError;
pub use classify::{
    Classification, ClassifyConfig, ClassifyOptions, KmsDetail, KmsFailure, KmsUnwrap, Prefetch,
    ProviderTable, State,
};
pub use object::{ObjectInfo, PayloadKind, object_info, payload_kind};

use crate::keys::Key;

/// A complete stored value as the apiserver writes it with `key` first:
/// `k8s:enc:<provider>:v1:<name>:` followed by the sealed payload. `etcd_key` is the AAD.
pub fn encrypt_value(key: &Key, etcd_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let prefix = format!("{}{}:", key.provider().prefix(), key.name());
    let mut out = prefix.into_bytes();
    out.extend(cipher::seal(key, etcd_key, plaintext));
    out
}
