//! KMS envelopes: the v1 length-prefixed DEK and the v2 `EncryptedObject`.

use prost::Message;
use zeroize::Zeroizing;

use super::cipher::{OpenError, cbc_open_raw, gcm_open_raw};

/// Generated from `proto/kmsv2/encrypted_object.proto`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/v2.rs"));
}

pub use pb::{EncryptedDekSourceType, EncryptedObject};

const KEY_ID_MAX: usize = 1024;
const DEK_SOURCE_MAX: usize = 1024;
const ANNOTATIONS_MAX: usize = 32 * 1024;

/// A parsed KMS v1 value: `uint16 BE len(encDEK) || encDEK || data`.
#[derive(Debug)]
pub struct KmsV1Envelope<'a> {
    pub encrypted_dek: &'a [u8],
    pub data: &'a [u8],
}

pub fn parse_v1(payload: &[u8]) -> Result<KmsV1Envelope<'_>, OpenError> {
    if payload.len() < 2 {
        return Err(OpenError::Malformed(
            "invalid data encountered by envelope transformer: failed to read uint16",
        ));
    }
    let n = u16::from_be_bytes([payload[0], payload[1]]) as usize;
    let rest = &payload[2..];
    if rest.len() < n {
        return Err(OpenError::Malformed(
            "invalid data encountered by envelope transformer: encrypted DEK is truncated",
        ));
    }
    Ok(KmsV1Envelope {
        encrypted_dek: &rest[..n],
        data: &rest[n..],
    })
}

/// Opens KMS v1 data with its unwrapped DEK: GCM first, then the pre-1.25 CBC form (stale).
pub fn open_v1(
    dek: &[u8],
    aad: &[u8],
    data: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, bool), OpenError> {
    match gcm_open_raw(dek, aad, data) {
        Ok(pt) => Ok((pt, false)),
        Err(gcm_err) => cbc_open_raw(dek, data)
            .map(|pt| (pt, true))
            .map_err(|_| gcm_err),
    }
}

/// Decodes and validates a KMS v2 value (after its prefix) as `ValidateEncryptedObject` does.
pub fn parse_v2(payload: &[u8]) -> Result<EncryptedObject, OpenError> {
    let obj = EncryptedObject::decode(payload)
        .map_err(|_| OpenError::Malformed("failed to unmarshal KMS v2 EncryptedObject"))?;
    if EncryptedDekSourceType::try_from(obj.encrypted_dek_source_type).is_err() {
        return Err(OpenError::Malformed("unknown encryptedDEKSourceType"));
    }
    if obj.encrypted_data.is_empty() {
        return Err(OpenError::Malformed("encrypted data is empty"));
    }
    if obj.encrypted_dek_source.is_empty() || obj.encrypted_dek_source.len() > DEK_SOURCE_MAX {
        return Err(OpenError::Malformed(
            "encryptedDEKSource is empty or larger than 1 kB",
        ));
    }
    if obj.key_id.is_empty() || obj.key_id.len() > KEY_ID_MAX {
        return Err(OpenError::Malformed("keyID is empty or larger than 1 kB"));
    }
    let mut total = 0usize;
    for (k, v) in &obj.annotations {
        if !is_fqdn(k) {
            return Err(OpenError::Malformed(
                "annotation key is not a fully qualified domain name",
            ));
        }
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX {
        return Err(OpenError::Malformed("annotations exceed 32 kB"));
    }
    Ok(obj)
}

/// RFC 1123 subdomain with at least two labels, as `validation.IsFullyQualifiedDomainName`.
fn is_fqdn(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.len() > 253 || s.split('.').count() < 2 {
        return false;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// Opens `encryptedData` given the plaintext of `encryptedDEKSource` (docs/design.md#formats).
pub fn open_v2(
    obj: &EncryptedObject,
    dek_source: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    match EncryptedDekSourceType::try_from(obj.encrypted_dek_source_type) {
        Ok(EncryptedDekSourceType::AesGcmKey) => gcm_open_raw(dek_source, aad, &obj.encrypted_data),
        Ok(EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed) => {
            let data = &obj.encrypted_data;
            if data.len() < 32 {
                return Err(OpenError::Malformed(
                    "the stored data was shorter than the required size",
                ));
            }
            let dek = derive_xnonce_dek(dek_source, &data[..32])?;
            gcm_open_raw(&dek[..], aad, &data[32..])
        }
        Err(_) => Err(OpenError::Malformed("unknown encryptedDEKSourceType")),
    }
}

/// HKDF-Expand(SHA-256, PRK = seed, info, 32): expand only, as `aes_extended_nonce.go`.
pub fn derive_xnonce_dek(seed: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, OpenError> {
    if seed.len() < 32 {
        return Err(OpenError::Rejected("seed is shorter than 32 bytes"));
    }
    let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(seed)
        .map_err(|_| OpenError::Rejected("seed is not a valid HKDF PRK"))?;
    let mut dek = Zeroizing::new([0u8; 32]);
    hk.expand(info, &mut dek[..])
        .map_err(|_| OpenError::Rejected("HKDF expand failed"))?;
    Ok(dek)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_extended_nonce_vector_decrypts() {
        // aes_test.go TestExtendedNonceGCMLegacyDataCompatibility (the upstream vector).
        let seed = hex::decode("5d40323a820ff95561675e3b95e81867c5fdd561d35a88a2d08b08aa9d4fcf5c")
            .unwrap();
        let ct = hex::decode("2442759e33945fbad709db577a0f037fd8a709fc76979b8942209debcecb9d57efe3d6ff6a1ef6ee9a5003b9833b3043cec1e47b35175b151107a8d2416b0e296bbf66b5d102fcefdf9a78f293d271").unwrap();
        let dek = derive_xnonce_dek(&seed, &ct[..32]).unwrap();
        assert_eq!(
            hex::encode(&dek[..]),
            "6e58b7659c304b0c382f42f16bd700465def1dead80bf6f1bf1d52073bdb0c00"
        );
        let obj = EncryptedObject {
            encrypted_data: ct,
            key_id: "1".into(),
            encrypted_dek_source: vec![1],
            annotations: Default::default(),
            encrypted_dek_source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed as i32,
        };
        assert_eq!(
            &open_v2(&obj, &seed, b"bamboo").unwrap()[..],
            b"pandas are the best"
        );
    }

    #[test]
    fn encrypted_object_decodes_in_any_field_order() {
        // kmsv2 envelope_test.go TestEncodeDecode values, fields reversed.
        let bytes = hex::decode("1a030405061201310a03010203").unwrap();
        let obj = parse_v2(&bytes).unwrap();
        assert_eq!(obj.encrypted_data, vec![1, 2, 3]);
        assert_eq!(obj.key_id, "1");
        assert_eq!(obj.encrypted_dek_source, vec![4, 5, 6]);
        assert_eq!(obj.encrypted_dek_source_type, 0);
        assert_eq!(
            obj.encode_to_vec(),
            hex::decode("0a030102031201311a03040506").unwrap()
        );
    }

    #[test]
    fn v2_validation_rejects_bad_objects() {
        assert!(parse_v2(b"\xff\xff").is_err());
        assert!(
            parse_v2(&hex::decode("0a03010203").unwrap()).is_err(),
            "no key id"
        );
        assert!(is_fqdn("kms.example.com"));
        assert!(!is_fqdn("local"));
    }

    #[test]
    fn v1_envelope_parses() {
        let v = [0u8, 2, 9, 9, 1, 2, 3];
        let e = parse_v1(&v).unwrap();
        assert_eq!(e.encrypted_dek, &[9, 9]);
        assert_eq!(e.data, &[1, 2, 3]);
        assert!(parse_v1(&[0, 5, 1]).is_err());
        assert!(parse_v1(&[0]).is_err());
    }
}
