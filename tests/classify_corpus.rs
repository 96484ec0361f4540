//! Bad stored values: each gets the right state, and none panics. Plain byte strings only.

use std::path::Path;

use atrest::GroupResource;
use atrest::codec::{Options, ProviderTable, State, encrypt_value};
use atrest::config::parse_str;
use atrest::keys::{Key, KeyProvider};
use zeroize::Zeroizing;

const AAD: &[u8] = b"/registry/secrets/default/s";

fn k(provider: KeyProvider, name: &str, fill: u8, len: usize) -> Key {
    Key::new(name, provider, Zeroizing::new(vec![fill; len])).unwrap()
}

fn b64(fill: u8, len: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(vec![fill; len])
}

fn table() -> ProviderTable {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm: {{keys: [{{name: g, secret: {}}}]}}\n  - aescbc: {{keys: [{{name: c, secret: {}}}, {{name: 'c:old', secret: {}}}]}}\n  - secretbox: {{keys: [{{name: s, secret: {}}}]}}\n  - kms: {{apiVersion: v2, name: plugin, endpoint: 'unix:///tmp/none.sock'}}\n  - kms: {{name: legacy, endpoint: 'unix:///tmp/none1.sock'}}\n  - identity: {{}}\n",
        b64(1, 32),
        b64(2, 32),
        b64(3, 16),
        b64(4, 32)
    );
    let cfg = parse_str(Path::new("t.yaml"), &yaml).unwrap();
    ProviderTable::new(&cfg.resolve(&GroupResource::secrets()))
}

const PLAINTEXT: &[u8] = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\x00\x1a\x00\x22\x00";

fn state(t: &ProviderTable, value: &[u8], verify: bool) -> (State, String) {
    let c = t.classify(
        AAD,
        value,
        &Options {
            verify,
            want_info: true,
            ..Default::default()
        },
    );
    (c.state, c.label.to_string())
}

#[test]
fn good_values_on_each_key() {
    let t = table();
    let gcm = encrypt_value(&k(KeyProvider::Aesgcm, "g", 1, 32), AAD, PLAINTEXT);
    let c = t.classify(
        AAD,
        &gcm,
        &Options {
            verify: true,
            ..Default::default()
        },
    );
    assert_eq!(
        (c.state, c.label.to_string().as_str(), c.write_key, c.stale),
        (State::EncryptedOk, "aesgcm:g", true, false)
    );
    let cbc_old = encrypt_value(&k(KeyProvider::Aescbc, "c:old", 3, 16), AAD, PLAINTEXT);
    let c = t.classify(
        AAD,
        &cbc_old,
        &Options {
            verify: true,
            ..Default::default()
        },
    );
    assert_eq!(
        (c.state, c.label.to_string().as_str(), c.write_key, c.stale),
        (State::EncryptedOk, "aescbc:c:old", false, true)
    );
    let c = t.classify(AAD, PLAINTEXT, &Options::default());
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
    let cbc_key = k(KeyProvider::Aescbc, "c", 2, 32);
    let sb_key = k(KeyProvider::Secretbox, "s", 4, 32);
    let good_gcm = encrypt_value(&gcm_key, AAD, PLAINTEXT);
    let good_sb = encrypt_value(&sb_key, AAD, PLAINTEXT);

    let mut tampered_tag = good_gcm.clone();
    *tampered_tag.last_mut().unwrap() ^= 1;
    let mut tampered_sb = good_sb.clone();
    let n = tampered_sb.len();
    tampered_sb[n - 3] ^= 0x80;
    let wrong_cbc = encrypt_value(&k(KeyProvider::Aescbc, "c", 9, 32), AAD, PLAINTEXT);
    // Bad padding: a correct CBC value whose last block is replaced by random bytes.
    let mut bad_padding = encrypt_value(&cbc_key, AAD, PLAINTEXT);
    let len = bad_padding.len();
    for b in &mut bad_padding[len - 16..] {
        *b = 0x5a;
    }
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
            "cbc bad padding",
            bad_padding,
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
fn no_panic_on_any_prefix_or_truncation() {
    let t = table();
    let sources = [
        encrypt_value(&k(KeyProvider::Aesgcm, "g", 1, 32), AAD, PLAINTEXT),
        encrypt_value(&k(KeyProvider::Aescbc, "c", 2, 32), AAD, PLAINTEXT),
        encrypt_value(&k(KeyProvider::Secretbox, "s", 4, 32), AAD, PLAINTEXT),
        b"k8s:enc:kms:v2:plugin:\x0a\x03\x01\x02\x03\x12\x01\x31\x1a\x03\x04\x05\x06\x22\x04\x0a\x00\x12\x00\x28\x07".to_vec(),
        b"k8s:enc:kms:v1:legacy:\x00\x02ab0123456789abcdef0123456789".to_vec(),
    ];
    for src in sources {
        for end in 0..=src.len() {
            for verify in [false, true] {
                let _ = state(&t, &src[..end], verify);
            }
        }
    }
}
