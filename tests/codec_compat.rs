//! atrest's codecs against the real kube-apiserver, both directions: what the apiserver writes,
//! atrest classifies and decrypts; what atrest encrypts (planted in etcd by the test, never by the
//! product), the apiserver serves.

use atrest_testbed as support;
use support::b64;

use std::path::Path;
use std::sync::Arc;

use atrest::GroupResource;
use atrest::codec::{ClassifyOptions, PayloadKind, ProviderTable, State, encrypt_value};
use atrest::config::{EncryptionConfig, Provider, parse_str};
use atrest::keys::Key;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use support::{ControlPlane, Options as CpOptions};

fn config_yaml() -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc: {{keys: [{{name: 'k:with:colons', secret: {c32}}}, {{name: dup, secret: {dup_a}}}]}}
      - aescbc: {{keys: [{{name: dup, secret: {dup_b}}}]}}
      - identity: {{}}
  - resources: [configmaps]
    providers:
      - aesgcm: {{keys: [{{name: g16, secret: {g16}}}, {{name: g32, secret: {g32}}}]}}
      - identity: {{}}
  - resources: [leases.coordination.k8s.io]
    providers:
      - aescbc: {{keys: [{{name: c16, secret: {c16}}}]}}
  - resources: [roles.rbac.authorization.k8s.io]
    providers:
      - aescbc: {{keys: [{{name: c24, secret: {c24}}}]}}
  - resources: [podtemplates]
    providers:
      - aesgcm: {{keys: [{{name: g24, secret: {g24}}}]}}
  - resources: [events]
    providers:
      - secretbox: {{keys: [{{name: sb, secret: {sb}}}]}}
",
        c32 = b64(32, 1),
        dup_a = b64(32, 2),
        dup_b = b64(32, 3),
        g16 = b64(16, 4),
        g32 = b64(32, 5),
        c16 = b64(16, 6),
        c24 = b64(24, 7),
        g24 = b64(24, 8),
        sb = b64(32, 9),
    )
}

/// The key named `name` of the `block`-th provider of a resource.
fn key(cfg: &EncryptionConfig, resource: &str, block: usize, name: &str) -> Arc<Key> {
    let r = cfg.resolve(&GroupResource::parse(resource));
    match &r.entries[block].provider {
        Provider::Keys { keys, .. } => keys.iter().find(|k| k.name() == name).cloned().unwrap(),
        other => panic!("not a key provider: {other:?}"),
    }
}

fn table(cfg: &EncryptionConfig, resource: &str) -> ProviderTable {
    ProviderTable::new(&cfg.resolve(&GroupResource::parse(resource)))
}

fn verify() -> ClassifyOptions<'static> {
    ClassifyOptions {
        verify: true,
        want_info: true,
        ..Default::default()
    }
}

async fn create(cp: &ControlPlane, ar: &ApiResource, ns: Option<&str>, body: serde_json::Value) {
    let client = cp.client().await;
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client, ns, ar),
        None => Api::all_with(client, ar),
    };
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_writes_atrest_reads_and_atrest_writes_apiserver_reads() {
    let yaml = config_yaml();
    let cfg = parse_str(Path::new("compat.yaml"), &yaml).unwrap();
    let cp = ControlPlane::start(CpOptions {
        config_yaml: Some(yaml),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;

    // --- The apiserver writes; atrest classifies and decrypts every value.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(&PostParams::default(), &serde_json::from_value(serde_json::json!({"metadata": {"name": "s1"}, "stringData": {"password": "hunter2"}})).unwrap())
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            serde_json::json!({"metadata": {"name": "cm1"}, "data": {"k": "v"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    create(&cp, &ar("coordination.k8s.io", "v1", "Lease", "leases"), Some("default"), serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l1"}, "spec": {"holderIdentity": "x"}})).await;
    create(&cp, &ar("rbac.authorization.k8s.io", "v1", "Role", "roles"), Some("default"), serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r1"}, "rules": []})).await;
    create(&cp, &ar("", "v1", "PodTemplate", "podtemplates"), Some("default"), serde_json::json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "pt1"}, "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}})).await;
    create(&cp, &ar("", "v1", "Event", "events"), Some("default"), serde_json::json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Test", "message": "m"})).await;

    let cases = [
        (
            "secrets",
            "/registry/secrets/default/s1",
            "aescbc:k:with:colons",
            "s1",
        ),
        (
            "configmaps",
            "/registry/configmaps/default/cm1",
            "aesgcm:g16",
            "cm1",
        ),
        (
            "leases.coordination.k8s.io",
            "/registry/leases/default/l1",
            "aescbc:c16",
            "l1",
        ),
        (
            "roles.rbac.authorization.k8s.io",
            "/registry/roles/default/r1",
            "aescbc:c24",
            "r1",
        ),
        (
            "podtemplates",
            "/registry/podtemplates/default/pt1",
            "aesgcm:g24",
            "pt1",
        ),
        (
            "events",
            "/registry/events/default/e1",
            "secretbox:sb",
            "e1",
        ),
    ];
    for (resource, etcd_key, label, name) in cases {
        let (value, _) = cp
            .raw(etcd_key)
            .await
            .unwrap_or_else(|| panic!("{etcd_key} stored"));
        let t = table(&cfg, resource);
        let c = t.classify(etcd_key.as_bytes(), &value, &verify());
        assert_eq!(c.state, State::EncryptedOk, "{resource}: {c:?}");
        assert_eq!(c.label.to_string(), label, "{resource}");
        assert!(c.write_key && !c.stale && c.verified, "{resource}: {c:?}");
        assert_eq!(c.payload, Some(PayloadKind::Protobuf), "{resource}");
        let info = c.info.expect("metadata decoded");
        assert_eq!(info.name.as_deref(), Some(name));
        assert_eq!(info.namespace.as_deref(), Some("default"));
        assert!(info.uid.is_some() && info.creation_timestamp.is_some());
        // Without --verify the same answer comes from prefix, key name and shape alone.
        let quick = t.classify(etcd_key.as_bytes(), &value, &ClassifyOptions::default());
        assert_eq!(
            (
                quick.state,
                quick.label.to_string().as_str(),
                quick.verified
            ),
            (State::EncryptedOk, label, false)
        );
    }
    let (value, _) = cp.raw("/registry/secrets/default/s1").await.unwrap();
    let secrets_table = table(&cfg, "secrets");
    let c = secrets_table.classify(b"/registry/secrets/default/s1", &value, &verify());
    let info = c.info.unwrap();
    assert_eq!(
        (info.secret_type.as_deref(), info.data_keys),
        (Some("Opaque"), Some(1))
    );

    // --- atrest writes; the apiserver reads. Each value is the apiserver's own plaintext,
    // re-encrypted by atrest with another configured key; the apiserver must serve the object
    // at the revision of the planted value.
    let plants = [
        // (resource, etcd key, key block, key name, label stale?)
        (
            "secrets",
            "/registry/secrets/default/s1",
            0usize,
            "dup",
            true,
        ),
        // Second aescbc block, same key name as in the first: the apiserver tries block one,
        // fails, and continues to block two (transformer.go's shared-prefix case).
        ("secrets", "/registry/secrets/default/s1", 1, "dup", true),
        (
            "configmaps",
            "/registry/configmaps/default/cm1",
            0,
            "g32",
            true,
        ),
        (
            "leases.coordination.k8s.io",
            "/registry/leases/default/l1",
            0,
            "c16",
            false,
        ),
        (
            "roles.rbac.authorization.k8s.io",
            "/registry/roles/default/r1",
            0,
            "c24",
            false,
        ),
        (
            "podtemplates",
            "/registry/podtemplates/default/pt1",
            0,
            "g24",
            false,
        ),
        ("events", "/registry/events/default/e1", 0, "sb", false),
    ];
    for (resource, etcd_key, block, name, stale) in plants {
        let (value, _) = cp.raw(etcd_key).await.unwrap();
        let t = table(&cfg, resource);
        let current = t.classify(etcd_key.as_bytes(), &value, &verify());
        assert_eq!(current.state, State::EncryptedOk);
        let plaintext = plaintext_of(&cfg, resource, etcd_key, &value);
        let k = key(&cfg, resource, block, name);
        // A key of an earlier block with the same name is tried first. CBC is unauthenticated:
        // with a random IV, 1 value in ~256 decrypts under it with valid padding, and the
        // apiserver then serves those garbage bytes instead of going on. Seal until that key
        // refuses the value, which is the case this plant is about.
        let earlier = (block > 0).then(|| key(&cfg, resource, 0, name));
        let planted = loop {
            let v = encrypt_value(&k, etcd_key.as_bytes(), &plaintext);
            if refused_by(earlier.as_deref(), etcd_key, &v) {
                break v;
            }
        };
        let c = t.classify(etcd_key.as_bytes(), &planted, &verify());
        assert_eq!(
            (c.state, c.stale),
            (State::EncryptedOk, stale),
            "{resource} {name}: {c:?}"
        );
        cp.plant(etcd_key, planted).await;
        let (_, rev) = cp.raw(etcd_key).await.unwrap();
        let got = cp.kubectl(&[
            "get",
            resource,
            "-n",
            "default",
            etcd_key.rsplit('/').next().unwrap(),
            "-o",
            "json",
        ]);
        assert!(
            got.status.success(),
            "{resource}: apiserver could not read atrest's value: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        let obj: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
        assert_eq!(
            obj["metadata"]["resourceVersion"].as_str(),
            Some(rev.to_string().as_str()),
            "{resource}: served the planted revision"
        );
        if resource == "secrets" {
            assert_eq!(
                obj["data"]["password"].as_str(),
                Some("aHVudGVyMg=="),
                "data intact"
            );
        }
    }

    // A value with a name-matching prefix but sealed by an unconfigured key is undecryptable,
    // and the apiserver refuses it too.
    let stranger = Key::new(
        "dup",
        atrest::model::KeyProvider::Aescbc,
        zeroize::Zeroizing::new(vec![42u8; 32]),
    )
    .unwrap();
    let (value, _) = cp.raw("/registry/secrets/default/s1").await.unwrap();
    let plaintext = plaintext_of(&cfg, "secrets", "/registry/secrets/default/s1", &value);
    // Sealed until both configured `dup` keys refuse it (bad padding), so that neither atrest
    // nor the apiserver can take it for a value by chance.
    let (dup_a, dup_b) = (
        key(&cfg, "secrets", 0, "dup"),
        key(&cfg, "secrets", 1, "dup"),
    );
    let bad = loop {
        let v = encrypt_value(&stranger, b"/registry/secrets/default/s1", &plaintext);
        let s1 = "/registry/secrets/default/s1";
        if refused_by(Some(&dup_a), s1, &v) && refused_by(Some(&dup_b), s1, &v) {
            break v;
        }
    };
    let c = secrets_table.classify(b"/registry/secrets/default/s1", &bad, &verify());
    assert_eq!(c.state, State::Undecryptable, "{c:?}");
    cp.plant("/registry/secrets/default/s1", bad).await;
    let got = cp.kubectl(&["get", "secret", "s1", "-o", "json"]);
    assert!(!got.status.success(), "the apiserver cannot read it either");
}

/// Decrypts a stored value with whichever configured key opens it (test helper over the
/// library's classifier, which opens but does not hand out plaintext).
fn plaintext_of(cfg: &EncryptionConfig, resource: &str, etcd_key: &str, value: &[u8]) -> Vec<u8> {
    let r = cfg.resolve(&GroupResource::parse(resource));
    for p in r.providers() {
        if let Provider::Keys { provider, keys } = p {
            for k in keys {
                let prefix = format!("{}{}:", provider.prefix(), k.name());
                if let Some(payload) = value.strip_prefix(prefix.as_bytes())
                    && let Ok(pt) = atrest::codec::cipher::open(k, etcd_key.as_bytes(), payload)
                    && atrest::codec::payload_kind(&pt) == PayloadKind::Protobuf
                {
                    return pt.to_vec();
                }
            }
        }
    }
    panic!("no configured key opens {etcd_key}");
}

/// Whether `key` (when there is one) fails to open the complete stored `value` at all.
fn refused_by(key: Option<&Key>, etcd_key: &str, value: &[u8]) -> bool {
    let Some(k) = key else { return true };
    let prefix = format!("{}{}:", k.provider().prefix(), k.name());
    assert!(value.starts_with(prefix.as_bytes()));
    atrest::codec::cipher::open(k, etcd_key.as_bytes(), &value[prefix.len()..]).is_err()
}
