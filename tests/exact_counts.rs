//! Every number atrest prints is exact, with more objects than any list cap: 1,500 stale
//! secrets, 1,200 plaintext configmaps where encryption is configured, and a few unreadable
//! values. Each number in `scan -o json`, `status` (text) and `report` (JSON, Markdown, HTML)
//! is compared with an independent count of the raw etcd values read here; the coverage and the
//! checks are asserted too, before encryption (identity write key) and after a key change.

use atrest_testbed as support;
use support::aescbc;
use support::resource;

use std::collections::BTreeMap;

use serde_json::Value;
use support::scan_json::{sample_names, stored, verdict};
use support::{ControlPlane, Options, check, create_namespace, create_secrets, random_key_b64};

const SECRETS: usize = 1500;
const CONFIGMAPS: usize = 1200;

fn config(secrets: &str, configmaps: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: {secrets}\n- resources: [configmaps]\n  providers: {configmaps}\n"
    )
}

async fn create_configmaps(client: &kube::Client, ns: &str, n: usize) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let body: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("cm-{i:05}")}, "data": {"k": "v"}
            }))
            .unwrap();
            async move {
                api.create(&Default::default(), &body)
                    .await
                    .unwrap_or_else(|e| panic!("create configmap {i}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// The independent count: raw etcd values of a resource by the key name in their prefix
/// (`identity` for plaintext), read here without atrest's classifier.
/// Every key under `/registry/` at `revision`, as etcd counts them.
async fn raw_total(cp: &ControlPlane, revision: i64) -> u64 {
    let mut etcd = cp.etcd().await;
    let resp = etcd
        .get(
            "/registry/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_revision(revision),
            ),
        )
        .await
        .unwrap();
    resp.count() as u64
}

async fn raw_counts(cp: &ControlPlane, resource: &str) -> BTreeMap<String, u64> {
    let mut etcd = cp.etcd().await;
    let prefix = format!("/registry/{resource}/");
    let resp = etcd
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for kv in resp.kvs() {
        let v = kv.value();
        let label = match v.strip_prefix(b"k8s:enc:aescbc:v1:") {
            Some(rest) => {
                let name: Vec<u8> = rest.iter().take_while(|b| **b != b':').copied().collect();
                format!("aescbc:{}", String::from_utf8(name).unwrap())
            }
            None => {
                assert!(!v.starts_with(b"k8s:enc:"), "only aescbc in this test");
                "identity".to_string()
            }
        };
        *out.entry(label).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_number_is_exact_beyond_the_list_caps() {
    let (k1, k2, kc) = (random_key_b64(), random_key_b64(), random_key_b64());
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config("[{identity: {}}]", "[{identity: {}}]")),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "exact").await;
    let names: Vec<String> = (0..SECRETS).map(|i| format!("s-{i:05}")).collect();
    create_secrets(&client, "exact", &names, "exact-count-value").await;
    create_configmaps(&client, "exact", CONFIGMAPS).await;

    // Before encryption: identity writes, everything is plaintext. The report must not call
    // that covered: 0 % encrypted, and C04 and C05 fail with the exact count.
    let raw = raw_counts(&cp, "secrets").await;
    let n_secrets = raw["identity"];
    assert!(n_secrets >= SECRETS as u64, "{raw:?}");
    let support::Reports {
        code,
        json: r,
        md,
        html,
        ..
    } = cp.reports("before", 1, &[]);
    assert_eq!(code, 1);
    let s = resource(&r, "secrets");
    assert_eq!(s["total"], n_secrets);
    assert_eq!(s["coverage"]["allowed"], 0);
    assert_eq!(s["coverage"]["plaintext"], n_secrets);
    assert_eq!(
        s["needs_rewrite"], 0,
        "identity is the write key: nothing is stale"
    );
    for id in ["ATR-C02", "ATR-C04", "ATR-C05", "ATR-C08"] {
        assert_eq!(check(&r, id)["status"], "FAIL", "{id}: {:#}", check(&r, id));
    }
    let c05 = check(&r, "ATR-C05")["evidence"].to_string();
    assert!(
        c05.contains(&format!("secrets: {n_secrets} stored as plaintext"))
            && c05.contains(&format!("(showing 20 of {n_secrets})")),
        "{c05}"
    );
    assert!(
        html.contains(&format!(
            "data-resource=\"secrets\" data-percent=\"0.0\" data-plaintext=\"{n_secrets}\""
        )),
        "the HTML coverage bar shows 0 % and the plaintext count"
    );
    assert!(
        md.contains(&format!(
            "| secrets | identity | 0/{n_secrets} (0.0%) | {n_secrets} |"
        )),
        "{md}"
    );

    // Secrets on key1, then key2 first: every secret is stale. Configmaps get an encrypting
    // rule with identity second: every configmap is plaintext where encryption is configured.
    cp.write_config(&config(
        &format!("[{}, {{identity: {{}}}}]", aescbc(&[("key1", &k1)])),
        "[{identity: {}}]",
    ));
    cp.restart_apiserver(0).await;
    let out = cp.atrest(&[
        "reencrypt",
        "--resource",
        "secrets",
        "--kubeconfig",
        cp.kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(out.0, 0, "{}", out.2);
    cp.write_config(&config(
        &format!("[{}]", aescbc(&[("key2", &k2), ("key1", &k1)])),
        &format!("[{}, {{identity: {{}}}}]", aescbc(&[("cm", &kc)])),
    ));
    cp.restart_apiserver(0).await;
    // A few values no configured key opens, and two under a key the config does not have.
    for i in 0..3 {
        let mut v = b"k8s:enc:aescbc:v1:key2:".to_vec();
        v.extend((0..64u8).map(|b| b.wrapping_mul(7).wrapping_add(i)));
        cp.plant(&format!("/registry/secrets/exact/bad-{i}"), v)
            .await;
    }
    for i in 0..2 {
        let mut v = b"k8s:enc:aescbc:v1:key9:".to_vec();
        v.extend([0u8; 48]);
        cp.plant(&format!("/registry/secrets/exact/foreign-{i}"), v)
            .await;
    }

    let raw_s = raw_counts(&cp, "secrets").await;
    let raw_c = raw_counts(&cp, "configmaps").await;
    let stale = raw_s["aescbc:key1"];
    let (undecryptable, unknown) = (3u64, 2u64);
    assert_eq!(raw_s["aescbc:key2"], undecryptable, "{raw_s:?}");
    assert_eq!(raw_s["aescbc:key9"], unknown);
    let total_s: u64 = raw_s.values().sum();
    let plain_c = raw_c["identity"];
    assert!(stale >= SECRETS as u64 && plain_c >= CONFIGMAPS as u64);

    // scan -o json: exact counts; samples capped at --max-list (default 1000) say so.
    let (code, stdout, stderr) = cp.atrest(&["scan", "--verify", "-o", "json"]);
    assert_eq!(code, 1, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["schema"], "atrest.scan/v2");
    let s = resource(&doc, "secrets");
    assert_eq!(s["total"], total_s);
    assert_eq!(verdict(s, "stale"), stale);
    assert_eq!(verdict(s, "on_write_key"), 0);
    assert_eq!(verdict(s, "undecryptable"), undecryptable);
    assert_eq!(verdict(s, "unknown_key"), unknown);
    assert_eq!(s["needs_rewrite"], stale);
    assert_eq!(
        stored(s),
        BTreeMap::from([
            ("aescbc:key1".to_string(), stale),
            ("aescbc:key2".to_string(), undecryptable),
            ("aescbc:key9".to_string(), unknown),
        ])
    );
    assert_eq!(s["samples"]["stale"]["total"], stale);
    assert_eq!(sample_names(s, "stale").len(), 1000, "capped at --max-list");
    let c = resource(&doc, "configmaps");
    assert_eq!(c["total"], plain_c);
    assert_eq!(verdict(c, "plaintext"), plain_c);
    assert_eq!(c["needs_rewrite"], plain_c);
    assert_eq!(c["samples"]["plaintext"]["total"], plain_c);

    // Every resource of the census, counted exactly as etcd holds it.
    let (mut all, mut all_plain, mut resources) = (0u64, 0u64, 0usize);
    for r in doc["resources"].as_array().unwrap() {
        let name = r["resource"].as_str().unwrap();
        let total = r["total"].as_u64().unwrap();
        if total > 0 {
            resources += 1;
        }
        all += total;
        all_plain += verdict(r, "plaintext");
        if name != "secrets" && name != "configmaps" {
            assert_eq!(verdict(r, "plaintext"), total, "{name} is plaintext: {r:#}");
        }
    }
    let revision = doc["revision"].as_i64().unwrap();
    assert_eq!(
        all,
        raw_total(&cp, revision).await,
        "the census counts every key under /registry/ at the revision it read"
    );

    // status (text): the same exact numbers, and samples that say they are samples.
    let (code, text, stderr) =
        cp.atrest(&["status", "--kubeconfig", cp.kubeconfig.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    for want in [
        format!("aescbc:key1: {stale} stale"),
        format!("secrets — {stale} stale: on a read key, not the write key (showing 20 of {stale}"),
        format!("identity: {plain_c} plaintext"),
        format!(
            "configmaps — {plain_c} plaintext, but the config wants encryption (showing 20 of {plain_c}"
        ),
        // Without --verify the tampered values look like the write key's: status says how it
        // classified, and names only a command that can decrypt.
        format!("aescbc:key2: {undecryptable} on the write key"),
        "`atrest scan --verify` decrypts every value".to_string(),
        format!("secrets — {unknown} unknown key"),
        // The census: every resource etcd holds, the apiserver's own plaintext ones too.
        format!(
            "In all: {all} stored values in {resources} resources; {undecryptable} on the write key, {stale} stale, {} plaintext, 0 undecryptable, {unknown} unknown key, 0 corrupt.",
            all_plain,
        ),
    ] {
        assert!(text.contains(&want), "status lacks {want:?}:\n{text}");
    }

    // The report: exact counts in every format, coverage and checks.
    let support::Reports {
        code,
        json: r,
        md,
        html,
        ..
    } = cp.reports("after", 1, &[]);
    assert_eq!(code, 1);
    assert_eq!(r["schema"], "atrest.report/v2");
    let s = resource(&r, "secrets");
    assert_eq!(s["total"], total_s);
    // aescbc is discouraged by the default policy: encrypted, but not "allowed".
    assert_eq!(s["coverage"]["discouraged"], stale);
    assert_eq!(s["coverage"]["allowed"], 0);
    assert_eq!(s["coverage"]["on_write_key"], 0);
    assert_eq!(s["coverage"]["unreadable"], undecryptable + unknown);
    let c = resource(&r, "configmaps");
    assert_eq!(c["coverage"]["plaintext"], plain_c);
    for (id, want) in [
        ("ATR-C04", "FAIL"),
        ("ATR-C05", "FAIL"),
        ("ATR-C06", "FAIL"),
    ] {
        assert_eq!(check(&r, id)["status"], want, "{id}: {:#}", check(&r, id));
    }
    let c04 = check(&r, "ATR-C04")["evidence"].to_string();
    assert!(
        c04.contains(&format!(
            "secrets: 0/{total_s} encrypted with the write key aescbc:key2 ({stale} stale, 0 plaintext, {} unreadable)",
            undecryptable + unknown
        )) && c04.contains(&format!("(showing 20 of {stale})")),
        "{c04}"
    );
    let c05 = check(&r, "ATR-C05")["evidence"].to_string();
    assert!(
        c05.contains(&format!("configmaps: {plain_c} stored as plaintext")),
        "{c05}"
    );
    let c06 = check(&r, "ATR-C06")["evidence"].to_string();
    assert!(
        c06.contains(&format!("secrets: {undecryptable} undecryptable"))
            && c06.contains(&format!(
                "secrets: {unknown} under a key its config does not have"
            )),
        "{c06}"
    );
    assert!(
        md.contains(&format!(
            "| secrets | aescbc:key2 | 0/{total_s} (0.0%) | 0 | 0/{total_s} (0.0%) | {total_s} |"
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| configmaps | aescbc:cm | 0/{plain_c} (0.0%) | {plain_c} |"
        )),
        "{md}"
    );
    assert!(
        html.contains(&format!(
            "data-resource=\"configmaps\" data-percent=\"0.0\" data-plaintext=\"{plain_c}\""
        )),
        "HTML configmaps row"
    );
    assert!(
        html.contains(&format!("{stale} with a discouraged provider")),
        "HTML secrets notes"
    );
}
