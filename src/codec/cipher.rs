//! The three local-key transformers, byte for byte as `aes.go` and `secretbox.go` write and read.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

use crate::keys::Key;
use crate::model::KeyProvider;

/// Why a payload did not open. `Malformed` is about the bytes alone (no key could open them);
/// `Rejected` means the bytes are well formed but this key does not open them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The bytes cannot be a value of this provider (too short, bad length); the message is the
    /// apiserver's wording.
    Malformed(&'static str),
    /// Well formed, but this key does not open them (authentication or padding failed).
    Rejected(&'static str),
}

const BLOCK: usize = 16;
const GCM_NONCE: usize = 12;
const GCM_TAG: usize = 16;
const SECRETBOX_NONCE: usize = 24;
const SECRETBOX_TAG: usize = 16;

/// Checks only the shape of a payload, for scans that do not decrypt.
pub fn check_shape(provider: KeyProvider, payload: &[u8]) -> Result<(), OpenError> {
    match provider {
        KeyProvider::Aescbc => {
            if payload.len() < BLOCK {
                Err(OpenError::Malformed(
                    "the stored data was shorter than the required size",
                ))
            } else if !(payload.len() - BLOCK).is_multiple_of(BLOCK) {
                Err(OpenError::Malformed(
                    "the stored data is not a multiple of the block size",
                ))
            } else if payload.len() == BLOCK {
                Err(OpenError::Malformed(
                    "invalid PKCS7 data (empty or not padded)",
                ))
            } else {
                Ok(())
            }
        }
        KeyProvider::Aesgcm => {
            if payload.len() < GCM_NONCE + GCM_TAG {
                Err(OpenError::Malformed(
                    "the stored data was shorter than the required size",
                ))
            } else {
                Ok(())
            }
        }
        KeyProvider::Secretbox => {
            if payload.len() < SECRETBOX_NONCE + SECRETBOX_TAG {
                Err(OpenError::Malformed(
                    "the stored data was shorter than the required size",
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Decrypts a payload (the value after `k8s:enc:<provider>:v1:<name>:`). `aad` is the etcd key.
pub fn open(key: &Key, aad: &[u8], payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    check_shape(key.provider(), payload)?;
    match key.provider() {
        KeyProvider::Aescbc => cbc_open(key.material(), payload),
        KeyProvider::Aesgcm => gcm_open(key.material(), aad, payload),
        KeyProvider::Secretbox => secretbox_open(key.material(), payload),
    }
}

/// Encrypts like the apiserver's first key would (fresh random IV/nonce), without the prefix.
pub fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    match key.provider() {
        KeyProvider::Aescbc => cbc_seal(key.material(), plaintext),
        KeyProvider::Aesgcm => gcm_seal(key.material(), aad, plaintext),
        KeyProvider::Secretbox => secretbox_seal(key.material(), plaintext),
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // A failing OS generator leaves nothing safe to do: this is a bug-level condition.
    getrandom::fill(&mut b).expect("the operating system's random generator failed");
    b
}

macro_rules! with_aes {
    ($key:expr, $cipher:ident => $body:expr) => {
        match $key.len() {
            16 => {
                type $cipher = aes::Aes128;
                $body
            }
            24 => {
                type $cipher = aes::Aes192;
                $body
            }
            _ => {
                type $cipher = aes::Aes256;
                $body
            }
        }
    };
}

fn cbc_open(key: &[u8], payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let (iv, ct) = payload.split_at(BLOCK);
    let mut buf = Zeroizing::new(ct.to_vec());
    let ok = with_aes!(key, C => {
        cbc::Decryptor::<C>::new_from_slices(key, iv)
            .map(|d| d.decrypt_padded_mut::<NoPadding>(&mut buf).is_ok())
            .unwrap_or(false)
    });
    if !ok {
        return Err(OpenError::Malformed(
            "the stored data is not a multiple of the block size",
        ));
    }
    // PKCS#7 exactly as aes.go checks it: 1 <= p <= len, all p bytes equal p.
    let p = *buf.last().ok_or(OpenError::Malformed(
        "invalid PKCS7 data (empty or not padded)",
    ))? as usize;
    if p == 0 || p > buf.len() {
        return Err(OpenError::Rejected(
            "invalid PKCS7 data (empty or not padded)",
        ));
    }
    let size = buf.len() - p;
    if buf[size..].iter().any(|b| *b as usize != p) {
        return Err(OpenError::Rejected("invalid padding on input"));
    }
    buf.truncate(size);
    Ok(buf)
}

fn cbc_seal(key: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let pad = BLOCK - plaintext.len() % BLOCK;
    let iv: [u8; BLOCK] = random();
    let mut out = Vec::with_capacity(BLOCK + plaintext.len() + pad);
    out.extend_from_slice(&iv);
    out.extend_from_slice(plaintext);
    out.extend(std::iter::repeat_n(pad as u8, pad));
    let body = &mut out[BLOCK..];
    let len = body.len();
    with_aes!(key, C => {
        cbc::Encryptor::<C>::new_from_slices(key, &iv)
            .expect("key length checked by Key::new")
            .encrypt_padded_mut::<NoPadding>(body, len)
            .expect("buffer is block aligned");
    });
    out
}

fn gcm_open(key: &[u8], aad: &[u8], payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let (nonce, ct) = payload.split_at(GCM_NONCE);
    let msg = Payload { msg: ct, aad };
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    let result = with_aes!(key, C => {
        aes_gcm::AesGcm::<C, aes_gcm::aead::consts::U12>::new_from_slice(key)
            .map_err(|_| OpenError::Rejected("bad key"))?
            .decrypt(nonce, msg)
    });
    result
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Rejected("cipher: message authentication failed"))
}

fn gcm_seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; GCM_NONCE] = random();
    let msg = Payload {
        msg: plaintext,
        aad,
    };
    let ct = with_aes!(key, C => {
        aes_gcm::AesGcm::<C, aes_gcm::aead::consts::U12>::new_from_slice(key)
            .expect("key length checked by Key::new")
            .encrypt(aes_gcm::Nonce::from_slice(&nonce), msg)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail")
    });
    let mut out = Vec::with_capacity(GCM_NONCE + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn secretbox_open(key: &[u8], payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    use crypto_secretbox::{XSalsa20Poly1305, aead::Aead as _};
    let (nonce, ct) = payload.split_at(SECRETBOX_NONCE);
    let cipher = <XSalsa20Poly1305 as KeyInit>::new_from_slice(key)
        .map_err(|_| OpenError::Rejected("bad key"))?;
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), ct)
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Rejected("secretbox: message authentication failed"))
}

fn secretbox_seal(key: &[u8], plaintext: &[u8]) -> Vec<u8> {
    use crypto_secretbox::{XSalsa20Poly1305, aead::Aead as _};
    let nonce: [u8; SECRETBOX_NONCE] = random();
    let cipher =
        <XSalsa20Poly1305 as KeyInit>::new_from_slice(key).expect("key length checked by Key::new");
    let ct = cipher
        .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plaintext)
        .expect("secretbox encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(SECRETBOX_NONCE + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// AES-256-GCM open with a raw 32-byte DEK, for the KMS envelopes.
pub(crate) fn gcm_open_raw(
    dek: &[u8],
    aad: &[u8],
    payload: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    if payload.len() < GCM_NONCE + GCM_TAG {
        return Err(OpenError::Malformed(
            "the stored data was shorter than the required size",
        ));
    }
    gcm_open(dek, aad, payload)
}

/// AES-CBC open with a raw DEK, for KMS v1 values written before 1.25.
pub(crate) fn cbc_open_raw(dek: &[u8], payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    check_shape(KeyProvider::Aescbc, payload)?;
    cbc_open(dek, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: KeyProvider, len: usize, fill: u8) -> Key {
        Key::new("k", p, Zeroizing::new(vec![fill; len])).unwrap()
    }

    #[test]
    fn upstream_gcm_vector_decrypts() {
        // aes_test.go TestGCMLegacyDataCompatibility (the upstream vector).
        let k = Key::new(
            "k",
            KeyProvider::Aesgcm,
            Zeroizing::new(b"snorlax_awesomes".to_vec()),
        )
        .unwrap();
        let ct = hex::decode("9f27c8fcea8a58c467d8e437dbf2d85955f9b4bd912f4ef967d788a0cb07797dac0a3f0a0845605ca85ac8562b4ae1").unwrap();
        let pt = open(&k, b"bamboo", &ct).unwrap();
        assert_eq!(&pt[..], b"pandas are the best");
        assert_eq!(
            open(&k, b"bambo0", &ct),
            Err(OpenError::Rejected("cipher: message authentication failed"))
        );
    }

    #[test]
    fn round_trips_every_provider_and_length() {
        for (p, lens) in [
            (KeyProvider::Aescbc, &[16usize, 24, 32][..]),
            (KeyProvider::Aesgcm, &[16, 24, 32][..]),
            (KeyProvider::Secretbox, &[32][..]),
        ] {
            for &len in lens {
                let k = key(p, len, 3);
                for size in [0usize, 1, 15, 16, 17, 1024] {
                    let pt = vec![0x5au8; size];
                    let sealed = seal(&k, b"/registry/secrets/a/b", &pt);
                    assert_eq!(
                        &open(&k, b"/registry/secrets/a/b", &sealed).unwrap()[..],
                        &pt[..],
                        "{p} {len} {size}"
                    );
                }
            }
        }
    }

    #[test]
    fn cbc_padding_is_a_full_block_when_aligned() {
        let k = key(KeyProvider::Aescbc, 32, 1);
        assert_eq!(seal(&k, b"", &[0u8; 16]).len(), 16 + 32);
        assert_eq!(seal(&k, b"", &[0u8; 15]).len(), 16 + 16);
    }

    #[test]
    fn wrong_key_and_shape_errors() {
        let k1 = key(KeyProvider::Secretbox, 32, 1);
        let k2 = key(KeyProvider::Secretbox, 32, 2);
        let sealed = seal(&k1, b"", b"hello");
        assert!(matches!(
            open(&k2, b"", &sealed),
            Err(OpenError::Rejected(_))
        ));
        assert!(matches!(
            open(&k1, b"", &sealed[..30]),
            Err(OpenError::Malformed(_))
        ));
        let c = key(KeyProvider::Aescbc, 32, 1);
        assert!(matches!(
            open(&c, b"", &[0u8; 17]),
            Err(OpenError::Malformed(_))
        ));
        assert!(matches!(
            open(&c, b"", &[0u8; 16]),
            Err(OpenError::Malformed(_))
        ));
    }
}
