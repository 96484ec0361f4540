//! Writes the fuzz targets' seed corpora into fuzz/corpus/ (git-ignored): `cargo run --example
//! fuzz_corpus`. A main-workspace example, so `cargo test --all-targets` has already built it
//! when `scripts/fuzz.sh` runs it.

use std::fs;
use std::path::Path;

use atrest::codec::{encrypt_value, kms};
use atrest::keys::Key;
use atrest::model::KeyProvider;
use k8s_pb::api::core::v1::Secret;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use zeroize::Zeroizing;

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

const CONFIGS: &[(&str, &str)] = &[
    ("classify.yaml", common::CLASSIFY_CONFIG),
    (
        "legacy.yaml",
        "kind: EncryptionConfig\napiVersion: v1\nresources:\n- resources: [secrets, configmaps]\n  providers:\n  - secretbox:\n      keys:\n      - name: key1\n        secret: YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=\n  - identity: {}\n",
    ),
    (
        "json.json",
        r#"{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{"resources":["secrets","*.apps"],"providers":[{"aesgcm":{"keys":[{"name":"a","secret":"c2VjcmV0IGlzIHNlY3VyZQ=="},{"name":"b","secret":"dGhpcyBpcyBwYXNzd29yZA=="}]}},{"identity":{}}]}]}"#,
    ),
    (
        "kms.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [\"*.*\"]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: myKms\n          endpoint: unix:///var/run/kms.sock\n          timeout: 3s\n      - kms:\n          name: old\n          endpoint: unix:///var/run/kms1.sock\n          cachesize: 100\n      - identity: {}\n",
    ),
    (
        "multi.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n      - events.events.k8s.io\n    providers:\n      - aescbc:\n          keys:\n            - name: key1\n              secret: c2VjcmV0IGlzIHNlY3VyZSwgaXMgaXQ/IHllcyBpdCBpcw==\n      - identity: {}\n  - resources:\n      - '*.'\n    providers:\n      - identity: {}\n",
    ),
    (
        "bad-length.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secret: dG9vIHNob3J0IGEga2V5IQ==\n",
    ),
    (
        "bad-field.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secret: [QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=]\n              extra: 1\n",
    ),
    (
        "block-secret.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - secretbox:\n          keys:\n            - name: k\n              secret: |\n                YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=\n",
    ),
];

fn secret_pb() -> Vec<u8> {
    let secret = Secret {
        metadata: Some(ObjectMeta {
            name: Some("db".into()),
            namespace: Some("prod".into()),
            uid: Some("6c4b1e0a-8f7e-4a43-9c55-6f0b1e2d3c4a".into()),
            creation_timestamp: Some(Time {
                seconds: Some(1_700_000_000),
                nanos: None,
            }),
            ..Default::default()
        }),
        data: [("password".to_string(), b"hunter2".to_vec())].into(),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let env = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
        }),
        raw: Some(secret.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut v = b"k8s\x00".to_vec();
    v.extend(env.encode_to_vec());
    v
}

const SECRET_JSON: &[u8] = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"prod","uid":"1234","creationTimestamp":"2023-11-14T22:13:20Z"},"data":{"password":"aHVudGVyMg=="},"type":"Opaque"}"#;

fn key(name: &str, p: KeyProvider, material: Vec<u8>) -> Key {
    Key::new(name, p, Zeroizing::new(material)).unwrap()
}

fn kms_v2_value(etcd_key: &[u8], plaintext: &[u8], seeded: bool) -> Vec<u8> {
    let source: Vec<u8> = (0xc0u8..0xe0).collect();
    let (dek, info) = if seeded {
        let info = [0x5au8; 32];
        let dek = kms::derive_xnonce_dek(&source, &info).unwrap();
        (dek.to_vec(), Some(info))
    } else {
        (source.clone(), None)
    };
    // aesgcm's sealed form (nonce || ciphertext+tag, AAD = etcd key) is also KMS v2's.
    let sealed =
        atrest::codec::cipher::seal(&key("dek", KeyProvider::Aesgcm, dek), etcd_key, plaintext);
    let mut data = info.map(|i| i.to_vec()).unwrap_or_default();
    data.extend(sealed);
    let obj = kms::EncryptedObject {
        encrypted_data: data,
        key_id: "key-1".into(),
        encrypted_dek_source: source,
        annotations: [("kms.example.com".to_string(), b"x".to_vec())].into(),
        encrypted_dek_source_type: if seeded { 1 } else { 0 },
    };
    let mut v = b"k8s:enc:kms:v2:kms2:".to_vec();
    v.extend(obj.encode_to_vec());
    v
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let dir = root.join("config_parse");
    fs::create_dir_all(&dir).unwrap();
    for (name, text) in CONFIGS {
        fs::write(dir.join(name), text).unwrap();
    }

    let dir = root.join("classify");
    fs::create_dir_all(&dir).unwrap();
    let ek: &[u8] = b"/registry/secrets/prod/db";
    let k1 = key("k1", KeyProvider::Aescbc, common::k1());
    let k2 = key("k:2", KeyProvider::Aesgcm, common::k2());
    let k3 = key("k3", KeyProvider::Secretbox, common::k3());
    let other = key("k9", KeyProvider::Aescbc, vec![7; 32]);
    let pb = secret_pb();
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("plain-pb", common::join(ek, &pb)),
        ("plain-json", common::join(ek, SECRET_JSON)),
        ("plain-empty-json", common::join(ek, b"{}")),
        ("plain-magic", common::join(ek, b"k8s\x00")),
        ("cbor", common::join(ek, &[0xd9, 0xd9, 0xf7, 0xa0])),
        (
            "unknown-key",
            common::join(ek, &encrypt_value(&other, ek, &pb)),
        ),
        (
            "kms-v2-gcm-key",
            common::join(ek, &kms_v2_value(ek, &pb, false)),
        ),
        (
            "kms-v2-xnonce",
            common::join(ek, &kms_v2_value(ek, SECRET_JSON, true)),
        ),
        (
            "kms-v1-foreign",
            common::join(
                ek,
                b"k8s:enc:kms:v1:old:\x00\x04abcdxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            ),
        ),
    ];
    for (k, tag) in [(&k1, "aescbc"), (&k2, "aesgcm"), (&k3, "secretbox")] {
        seeds.push((
            Box::leak(format!("{tag}-pb").into_boxed_str()),
            common::join(ek, &encrypt_value(k, ek, &pb)),
        ));
        seeds.push((
            Box::leak(format!("{tag}-json").into_boxed_str()),
            common::join(ek, &encrypt_value(k, ek, SECRET_JSON)),
        ));
        seeds.push((
            Box::leak(format!("{tag}-empty").into_boxed_str()),
            common::join(ek, &encrypt_value(k, ek, b"{}")),
        ));
    }
    // aesgcm under the wrong etcd key (AAD mismatch).
    seeds.push((
        "aesgcm-wrong-aad",
        common::join(b"/registry/secrets/x/y", &encrypt_value(&k2, ek, &pb)),
    ));

    // Sanity: the seeds classify as intended.
    let table = common::table();
    let plugin = common::PassThroughKms;
    for (name, data) in &seeds {
        let (ek, value) = common::split(data);
        let opts = atrest::codec::ClassifyOptions {
            verify: true,
            want_info: true,
            kms: Some(&plugin),
            ..Default::default()
        };
        let c = table.classify(ek, value, &opts);
        println!(
            "{name:20} {:12} {:14} verified={} info={}",
            c.label,
            c.state.as_str(),
            c.verified,
            c.info.is_some()
        );
        fs::write(dir.join(name), data).unwrap();
    }
}
