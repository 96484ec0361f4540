//! Bad stored values: each gets the right state, and none panics. Plain byte strings only.

use std::path::Path;

use atrest::GroupResource;
use atrest::codec::{ClassifyOptions, PayloadKind, ProviderTable, State, encrypt_value};
use atrest::config::parse_str;
use atrest::keys::Key;
use atrest::model::KeyProvider;
use atrest_testbed::b64;
use zeroize::Zeroizing;

const AAD: &[u8] = b"/registry/secrets/default/s";

fn k(provider: KeyProvider, name: &str, fill: u8, len: usize) -> Key {
    Key::new(name, provider, Zeroizing::new(vec![fill; len])).unwrap()
}

fn table() -> ProviderTable {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {{keys: [{{name: g, secret: {}}}]}}\n  - aescbc: {{keys: [{{name: c, secret: {}}}, {{name: 'c:old', secret: {}}}]}}\n  - secretbox: {{keys: [{{name: s, secret: {}}}]}}\n  - kms: {{apiVersion: v2, name: plugin, endpoint: 'unix:///tmp/none.sock'}}\n  - kms: {{name: legacy, endpoint: 'unix:///tmp/none1.sock'}}\n  - identity: {{}}\n",
        b64(32, 1),
        b64(32, 2),
        b64(16, 3),
        b64(32, 4)
    );
    let cfg = parse_str(Path::new("t.yaml"), &yaml).unwrap();
    ProviderTable::new(&cfg.resolve(&GroupResource::secrets()))
}

const PLAINTEXT: &[u8] = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\x00\x1a\x00\x22\x00";

fn state(t: &ProviderTable, value: &[u8], verify: bool) -> (State, String) {
    let c = t.classify(
        AAD,
        value,
        &ClassifyOptions {
            verify,
            want_info: true,
            ..Default::default()
        },
    );
    (c.state, c.label.to_string())
}

/// A complete aescbc value built by hand: `k8s:enc:aescbc:v1:<name>:`, then `iv`, then the CBC
/// encryption of `blocks` exactly as given (no padding added). Deterministic: the tests choose
/// every byte the cipher sees, including the final block's padding.
fn cbc_value(name: &str, key: &[u8], iv: [u8; 16], blocks: &[u8]) -> Vec<u8> {
    use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
    assert!(blocks.len().is_multiple_of(16) && !blocks.is_empty());
    let mut body = blocks.to_vec();
    let len = body.len();
    match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .unwrap()
            .encrypt_padded_mut::<NoPadding>(&mut body, len)
            .map(|_| ())
            .unwrap(),
        32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .unwrap()
            .encrypt_padded_mut::<NoPadding>(&mut body, len)
            .map(|_| ())
            .unwrap(),
        n => panic!("no AES key of {n} bytes in this table"),
    }
    let mut out = format!("k8s:enc:aescbc:v1:{name}:").into_bytes();
    out.extend_from_slice(&iv);
    out.extend_from_slice(&body);
    out
}

/// `plaintext` with correct PKCS#7 padding, as aes.go pads it.
fn pkcs7(plaintext: &[u8]) -> Vec<u8> {
    let pad = 16 - plaintext.len() % 16;
    let mut out = plaintext.to_vec();
    out.extend(std::iter::repeat_n(pad as u8, pad));
    out
}

#[test]
fn good_values_on_each_key() {
    let t = table();
    // Every key of the table, in config order: only the first provider's first key is the write
    // key; the three others are readable but stale. CBC values use fixed IVs, so that key `c`
    // (whose prefix `...:c:` also matches `c:old` values) is always refused on the same bytes.
    let values = [
        (
            "aesgcm:g",
            encrypt_value(&k(KeyProvider::Aesgcm, "g", 1, 32), AAD, PLAINTEXT),
            true,
        ),
        (
            "aescbc:c",
            cbc_value("c", &[2; 32], [0x11; 16], &pkcs7(PLAINTEXT)),
            false,
        ),
        (
            "aescbc:c:old",
            cbc_value("c:old", &[3; 16], [0x22; 16], &pkcs7(PLAINTEXT)),
            false,
        ),
        (
            "secretbox:s",
            encrypt_value(&k(KeyProvider::Secretbox, "s", 4, 32), AAD, PLAINTEXT),
            false,
        ),
    ];
    for (label, value, write) in &values {
        for verify in [true, false] {
            let c = t.classify(
                AAD,
                value,
                &ClassifyOptions {
                    verify,
                    ..Default::default()
                },
            );
            assert_eq!(
                (
                    c.state,
                    c.label.to_string().as_str(),
                    c.write_key,
                    c.stale,
                    c.verified
                ),
                (State::EncryptedOk, *label, *write, !*write, verify),
                "{label} (verify: {verify})"
            );
            if verify {
                assert_eq!(c.payload, Some(PayloadKind::Protobuf), "{label}");
            }
        }
    }
    let c = t.classify(AAD, PLAINTEXT, &ClassifyOptions::default());
    assert_eq!(
        (c.state, c.write_key, c.stale),
        (State::Plaintext, false, true),
        "identity is last: plaintext is stale"
    );
}

#[test]
fn bad_values_get_the_right_state() {
    let t = table();
    let gcm_key = k(KeyProvider::Aesgcm, "g", 1, 32);
    let sb_key = k(KeyProvider::Secretbox, "s", 4, 32);
    let good_gcm = encrypt_value(&gcm_key, AAD, PLAINTEXT);
    let good_sb = encrypt_value(&sb_key, AAD, PLAINTEXT);

    let mut tampered_tag = good_gcm.clone();
    *tampered_tag.last_mut().unwrap() ^= 1;
    let mut tampered_sb = good_sb.clone();
    let n = tampered_sb.len();
    tampered_sb[n - 3] ^= 0x80;
    // CBC values are built with fixed IVs: unauthenticated CBC opens random bytes with valid
    // padding 1 time in ~256, so only chosen bytes give a verdict that holds on every run.
    let padded = pkcs7(PLAINTEXT);
    let wrong_cbc = cbc_value("c", &[9; 32], [0x33; 16], &padded);
    // Bad padding under the right key: the decrypted last block is chosen to end in each kind of
    // invalid PKCS#7 (a zero pad byte, a pad longer than the data, unequal pad bytes), while the
    // first block still decrypts to the `k8s\x00` protobuf magic.
    let bad_padding = |tail: &[u8]| {
        let mut blocks = padded.clone();
        let n = blocks.len();
        blocks[n - tail.len()..].copy_from_slice(tail);
        cbc_value("c", &[2; 32], [0x44; 16], &blocks)
    };
    let pad_zero = bad_padding(&[0x00]);
    let pad_too_long = bad_padding(&[0x21]);
    let pad_unequal = bad_padding(&[0x03, 0x01, 0x03]);
    // Sanity of the construction: the same blocks with their real padding open.
    assert_eq!(
        state(&t, &cbc_value("c", &[2; 32], [0x44; 16], &padded), true).0,
        State::EncryptedOk
    );
    let gcm_other_aad = encrypt_value(&gcm_key, b"/registry/secrets/other/name", PLAINTEXT);

    let cases: Vec<(&str, Vec<u8>, State, &str)> = vec![
        ("empty", Vec::new(), State::Plaintext, "identity"),
        (
            "truncated gcm",
            good_gcm[..good_gcm.len() - 20].to_vec(),
            State::Undecryptable,
            "aesgcm:g",
        ),
        (
            "gcm shorter than nonce+tag",
            b"k8s:enc:aesgcm:v1:g:0123456789".to_vec(),
            State::Corrupt,
            "aesgcm:g",
        ),
        (
            "tampered gcm tag",
            tampered_tag,
            State::Undecryptable,
            "aesgcm:g",
        ),
        (
            "gcm value moved to another key (AAD)",
            gcm_other_aad,
            State::Undecryptable,
            "aesgcm:g",
        ),
        (
            "cbc with a wrong key",
            wrong_cbc,
            State::Undecryptable,
            "aescbc:c",
        ),
        (
            "cbc bad padding: zero pad byte",
            pad_zero,
            State::Undecryptable,
            "aescbc:c",
        ),
        (
            "cbc bad padding: pad longer than the data",
            pad_too_long,
            State::Undecryptable,
            "aescbc:c",
        ),
        (
            "cbc bad padding: unequal pad bytes",
            pad_unequal,
            State::Undecryptable,
            "aescbc:c",
        ),
        (
            "cbc not block aligned",
            b"k8s:enc:aescbc:v1:c:0123456789abcdef012".to_vec(),
            State::Corrupt,
            "aescbc:c",
        ),
        (
            "cbc only an iv",
            b"k8s:enc:aescbc:v1:c:0123456789abcdef".to_vec(),
            State::Corrupt,
            "aescbc:c",
        ),
        (
            "tampered secretbox",
            tampered_sb,
            State::Undecryptable,
            "secretbox:s",
        ),
        (
            "secretbox truncated",
            good_sb[..40].to_vec(),
            State::Corrupt,
            "secretbox:s",
        ),
        (
            "garbage after a valid prefix",
            b"k8s:enc:secretbox:v1:s:\xff\xfe".to_vec(),
            State::Corrupt,
            "secretbox:s",
        ),
        (
            "unknown key name",
            b"k8s:enc:aescbc:v1:key9:0123456789abcdef0123456789abcdef".to_vec(),
            State::UnknownKey,
            "aescbc:key9",
        ),
        (
            "unknown provider",
            b"k8s:enc:rot13:v1:x:data".to_vec(),
            State::UnknownKey,
            "unknown:rot13",
        ),
        (
            "unknown kms plugin",
            b"k8s:enc:kms:v2:other:\x0a\x01\x01".to_vec(),
            State::UnknownKey,
            "kms:v2:other",
        ),
        (
            "kms v2 not a proto",
            b"k8s:enc:kms:v2:plugin:\xff\xff\xff".to_vec(),
            State::Corrupt,
            "kms:v2:plugin",
        ),
        (
            "kms v2 without key id",
            b"k8s:enc:kms:v2:plugin:\x0a\x01\x01\x1a\x01\x02".to_vec(),
            State::Corrupt,
            "kms:v2:plugin",
        ),
        (
            "kms v1 truncated dek",
            b"k8s:enc:kms:v1:legacy:\x00\x09ab".to_vec(),
            State::Corrupt,
            "kms:v1:legacy",
        ),
        (
            "bare encrypted prefix",
            b"k8s:enc:".to_vec(),
            State::UnknownKey,
            "unknown",
        ),
    ];
    for (name, value, want_state, want_label) in cases {
        let (got, label) = state(&t, &value, true);
        assert_eq!(
            (got, label.as_str()),
            (want_state, want_label),
            "{name} (verify)"
        );
    }
    // Valid-looking KMS values cannot be verified without the plugin.
    let kms_v2 = b"k8s:enc:kms:v2:plugin:\x0a\x03\x01\x02\x03\x12\x01\x31\x1a\x03\x04\x05\x06";
    assert_eq!(
        state(&t, kms_v2, true),
        (State::Kms, "kms:v2:plugin".to_string())
    );
}

#[test]
fn cbc_plaintext_that_is_not_a_kubernetes_payload_is_undecryptable() {
    let t = table();
    // Valid PKCS#7 under the configured key `c`, but the plaintext is neither `k8s\x00`
    // protobuf, JSON nor CBOR: the apiserver's data would never look like this, so the key that
    // "opened" it is taken to be the wrong one (CBC has no authentication to say so).
    let foreign = cbc_value(
        "c",
        &[2; 32],
        [0x55; 16],
        &pkcs7(b"plain text, not a Kubernetes object"),
    );
    let c = t.classify(
        AAD,
        &foreign,
        &ClassifyOptions {
            verify: true,
            want_info: true,
            ..Default::default()
        },
    );
    assert_eq!(
        (
            c.state,
            c.label.to_string().as_str(),
            c.verified,
            c.apiserver_readable
        ),
        (State::Undecryptable, "aescbc:c", false, false)
    );
    assert_eq!(
        c.detail.as_deref(),
        Some("decrypted payload is not a Kubernetes object (wrong key)")
    );
    // Without verify only the shape is checked: well formed, so encrypted-ok (unverified).
    let c = t.classify(AAD, &foreign, &ClassifyOptions::default());
    assert_eq!((c.state, c.verified), (State::EncryptedOk, false));
    // The same key and padding with each payload the apiserver writes does open.
    for (payload, kind) in [
        (
            &b"{\"kind\":\"Secret\",\"apiVersion\":\"v1\"}"[..],
            PayloadKind::Json,
        ),
        (
            &[0xd9, 0xd9, 0xf7, 0xa1, 0x61, 0x61, 0x01][..],
            PayloadKind::Cbor,
        ),
        (PLAINTEXT, PayloadKind::Protobuf),
    ] {
        let v = cbc_value("c", &[2; 32], [0x55; 16], &pkcs7(payload));
        let c = t.classify(
            AAD,
            &v,
            &ClassifyOptions {
                verify: true,
                ..Default::default()
            },
        );
        assert_eq!(
            (c.state, c.payload),
            (State::EncryptedOk, Some(kind)),
            "{kind:?}"
        );
    }
}

#[test]
fn no_panic_on_any_prefix_or_truncation() {
    let t = table();
    let sources: [(&str, Vec<u8>); 5] = [
        (
            "aesgcm",
            encrypt_value(&k(KeyProvider::Aesgcm, "g", 1, 32), AAD, PLAINTEXT),
        ),
        (
            "aescbc",
            cbc_value("c", &[2; 32], [0x66; 16], &pkcs7(PLAINTEXT)),
        ),
        (
            "secretbox",
            encrypt_value(&k(KeyProvider::Secretbox, "s", 4, 32), AAD, PLAINTEXT),
        ),
        (
            "kms v2",
            b"k8s:enc:kms:v2:plugin:\x0a\x03\x01\x02\x03\x12\x01\x31\x1a\x03\x04\x05\x06\x22\x04\x0a\x00\x12\x00\x28\x07".to_vec(),
        ),
        (
            "kms v1",
            b"k8s:enc:kms:v1:legacy:\x00\x02ab0123456789abcdef0123456789".to_vec(),
        ),
    ];
    for (name, src) in &sources {
        // The whole value: the local-key ones open (so the check below is not vacuous).
        let (whole, _) = state(&t, src, true);
        if !name.starts_with("kms") {
            assert_eq!(whole, State::EncryptedOk, "{name}: the untruncated value");
        }
        // Every strict prefix: classified without a panic, and never proven good by verify.
        for end in 0..src.len() {
            for verify in [false, true] {
                let (got, label) = state(&t, &src[..end], verify);
                if verify {
                    assert_ne!(
                        got,
                        State::EncryptedOk,
                        "{name} truncated to {end} of {} bytes verifies as {label}",
                        src.len()
                    );
                }
            }
        }
    }
}
