//! What tests seed: random keys, configs, namespaces and secrets, and names. Every key of a
//! config reaches the leak check when the control plane writes the config; every secret value
//! seeded here is registered with it at once.

use crate::leak;

/// A random 32-byte key in base64, for configs written by tests.
pub fn random_key_b64() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `secrets` with the given providers (YAML list items, already indented by 6) then identity.
pub fn secrets_config(providers_yaml: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers_yaml}"
    )
}

/// An aescbc provider block with the named keys, in order.
pub fn aescbc_block(keys: &[(&str, &str)]) -> String {
    let mut s = String::from("      - aescbc:\n          keys:\n");
    for (name, secret) in keys {
        s.push_str(&format!(
            "            - name: {name:?}\n              secret: {secret}\n"
        ));
    }
    s
}

/// An `EncryptionConfiguration` with one rule per `(resources, providers)` pair, both in YAML
/// flow form: `encryption_config(&[("[secrets, configmaps]", &aescbc(&[("key1", &k)]))])`.
pub fn encryption_config(rules: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n",
    );
    for (resources, providers) in rules {
        s.push_str(&format!(
            "- resources: {resources}\n  providers: {providers}\n"
        ));
    }
    s
}

/// One rule for secrets and configmaps with `providers` (YAML flow form).
pub fn secrets_and_configmaps(providers: &str) -> String {
    encryption_config(&[("[secrets, configmaps]", providers)])
}

/// One rule for secrets only with `providers` (YAML flow form).
pub fn secrets_only(providers: &str) -> String {
    encryption_config(&[("[secrets]", providers)])
}

/// An aescbc provider in YAML flow form with the named keys, in order (the first writes).
pub fn aescbc(keys: &[(&str, &str)]) -> String {
    let list: Vec<String> = keys
        .iter()
        .map(|(n, s)| format!("{{name: {n}, secret: {s}}}"))
        .collect();
    format!("{{aescbc: {{keys: [{}]}}}}", list.join(", "))
}

/// Standard base64 of `len` bytes of `fill`: a key of a known length and content.
pub fn b64(len: usize, fill: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(vec![fill; len])
}

/// A control plane whose secrets and configmaps are written with aescbc `key1` (random), then
/// identity: the usual start of a rotation test.
pub async fn key1_cluster() -> crate::ControlPlane {
    on_key1("[secrets, configmaps]").await
}

/// Like [`key1_cluster`], with one rule for secrets only.
pub async fn key1_secrets_cluster() -> crate::ControlPlane {
    on_key1("[secrets]").await
}

/// A control plane whose `resources` (YAML flow form) are written with aescbc `key1` (random),
/// then identity.
async fn on_key1(resources: &str) -> crate::ControlPlane {
    let k1 = random_key_b64();
    crate::ControlPlane::start(crate::Options {
        config_yaml: Some(encryption_config(&[(
            resources,
            &format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)])),
        )])),
        ..Default::default()
    })
    .await
}

/// `prefix-00000`, `prefix-00001`, …
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Creates secrets `names` in `ns` through the API, 16 at a time; each holds `data` under
/// key `value`, beside a distinctive `seed` ([`seed_value_of`]), with a label and an
/// annotation. `data` and each seed join the leak check's values (`data` when long enough to
/// mean something: [`leak::MIN_VALUE_LEN`]).
pub async fn create_secrets(client: &kube::Client, ns: &str, names: &[String], data: &str) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    leak::register_value(data);
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            leak::register_value(&seed_value_of(ns, &name));
            let body: Secret = serde_json::from_value(serde_json::json!({
                // Labels and annotations too: a rewrite that dropped them would show in
                // every whole-object comparison (crate::objects).
                "metadata": {"name": name, "labels": {"atrest.test/seeded": "true"},
                             "annotations": {"atrest.test/note": format!("seeded as {name}")}},
                // Beside the test's value (which may be too short to search for), one that
                // the leak check always searches: every seeded object has one.
                "stringData": {"value": data, "seed": seed_value_of(ns, &name)}
            }))
            .unwrap();
            async move {
                api.create(&Default::default(), &body)
                    .await
                    .unwrap_or_else(|e| panic!("create secret {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Creates namespace `ns` through the API.
pub async fn create_namespace(client: &kube::Client, ns: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let body: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    api.create(&Default::default(), &body).await.unwrap();
}

/// A distinctive secret value for object `i` of namespace `ns`: at least 16 bytes (so the leak
/// check searches it) and up to 4 KiB, a different length for each `i`, the same on every run.
pub fn seeded_value(ns: &str, i: usize) -> String {
    let len = 16 + (i * 797) % 4080;
    let mut v = format!("atrest-seed-{ns}-{i}-");
    let pattern = "0123456789abcdefghijklmnopqrstuvwxyz";
    while v.len() < len {
        let take = (len - v.len()).min(pattern.len());
        v.push_str(&pattern[..take]);
    }
    v
}

/// The distinctive value every seeded object carries beside the test's own (`seed`): at least
/// 16 bytes, unique per object, so the leak check has a needle for each object whatever the
/// test's value is.
pub fn seed_value_of(ns: &str, name: &str) -> String {
    format!("atrest-seed:{ns}/{name}:v")
}
