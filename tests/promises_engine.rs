//! README promises of the engines, each against a real etcd and kube-apiserver: a scan reads one
//! pinned revision, SIGINT saves the checkpoint, the apiserver's 429 answers are waited out, and
//! `scan --verify` asks the KMS plugin once per DEK source.

use atrest_testbed as support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use support::promises_b::{
    add_admin_user, assert_versions, atrest_command_as, checkpoint, checkpoint_path, code_and_json,
    count_at, count_labelled, interrupt_reencrypt, kms_decrypts, resume_to_the_end,
    throttle_patches, throttled_executions, throttled_rejections,
};
use support::{ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64};

fn secrets_config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers: {providers}\n"
    )
}

/// Seeds `n` secrets in `big` under identity, then switches secrets to aescbc key1 (identity
/// still readable). Returns the key.
async fn plaintext_cluster(n: usize, extra_apiserver_args: &[&str]) -> (ControlPlane, String) {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_config("[{identity: {}}]")),
        apiserver_args: extra_apiserver_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "big").await;
    create_secrets(&client, "big", &names("s", n), "initial").await;
    let k1 = random_key_b64();
    cp.write_config(&secrets_config(&format!(
        "[{{aescbc: {{keys: [{{name: key1, secret: {k1}}}]}}}}, {{identity: {{}}}}]"
    )));
    cp.restart_apiserver(0).await;
    (cp, k1)
}

const BIG: &str = "/registry/secrets/big/";
const KEY1: &str = "k8s:enc:aescbc:v1:key1:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_reads_one_pinned_revision() {
    use atrest::etcd::scan::{Item, ReportBuilder, Scan, ScanOptions, Visitor, plan};
    let cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "zz-late").await;
    // 600 values planted directly (test-only), read 20 to a page: 30 pages.
    let mut etcd = cp.etcd().await;
    let n = 600;
    for i in 0..n {
        etcd.put(
            format!("/registry/secrets/pin/s-{i:05}"),
            b"k8s\x00fake".to_vec(),
            None,
        )
        .await
        .unwrap();
    }
    let loaded = atrest::config::load(&cp.config_path).unwrap();
    let target = atrest::etcd::EtcdTarget {
        endpoints: vec![cp.etcd_endpoint.clone()],
        cacert: None,
        cert: None,
        key: None,
        credentials: None,
        prefix: "/registry".into(),
    };
    let scan_client = target.connect().await.unwrap();

    /// At the first item (the scan pinned and reading its first page): secrets created
    /// through the apiserver in a namespace that sorts after every planted one, keys planted
    /// after the cursor, and the last planted key deleted.
    struct Writer {
        inner: ReportBuilder,
        seen: BTreeSet<String>,
        writes: Option<(kube::Client, etcd_client::Client)>,
    }
    impl Visitor for Writer {
        fn resource(&mut self, r: &atrest::config::Resolved) {
            self.inner.resource(r)
        }
        fn visit(&mut self, item: &Item<'_>) {
            if let Some((kube, mut etcd)) = self.writes.take() {
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        create_secrets(&kube, "zz-late", &names("late", 5), "written-mid-scan")
                            .await;
                        for i in 600..650 {
                            etcd.put(
                                format!("/registry/secrets/pin/s-{i:05}"),
                                b"k8s\x00fake".to_vec(),
                                None,
                            )
                            .await
                            .unwrap();
                        }
                        etcd.delete("/registry/secrets/pin/s-00599", None)
                            .await
                            .unwrap();
                    })
                });
            }
            self.seen.insert(item.key.to_string());
            self.inner.visit(item)
        }
    }
    let mut visitor = Writer {
        inner: ReportBuilder::new(10),
        seen: BTreeSet::new(),
        writes: Some((client.clone(), etcd.clone())),
    };
    let scan_plan = plan(&loaded.config, "/registry", &[]);
    let opts = ScanOptions {
        page_keys: Some(20),
        ..Default::default()
    };
    let mut scan = Scan::start(&scan_client, &loaded.config, "/registry", &scan_plan, &opts)
        .await
        .unwrap();
    let pinned = scan.revision;
    let mut pages = 0;
    while scan.next_page(&mut visitor).await.unwrap().is_some() {
        pages += 1;
    }
    let run = scan.finish(&mut visitor).await;
    assert_eq!(run.revision, pinned);
    assert!(visitor.writes.is_none(), "the writer ran at the first item");
    assert!(pages >= 30, "many pages ({pages})");

    // The writes happened, after the pinned revision, and are in etcd now.
    let now = count_at(&cp, "/registry/secrets/", 0).await;
    assert_eq!(
        now,
        (n - 1 + 50 + 5) as i64,
        "the mid-scan writes are in etcd"
    );
    for key in [
        "/registry/secrets/zz-late/late-00004",
        "/registry/secrets/pin/s-00649",
    ] {
        let (_, rev) = cp.raw(key).await.expect("written mid-scan");
        assert!(
            rev > pinned,
            "{key} written after the pin ({rev} > {pinned})"
        );
    }
    assert!(cp.raw("/registry/secrets/pin/s-00599").await.is_none());

    // The scan (the census: every key under the prefix) saw exactly the keys of the pinned
    // revision: none written later, the deleted one.
    let at_pin = etcd
        .get(
            "/registry/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_revision(pinned),
            ),
        )
        .await
        .unwrap();
    let expected: BTreeSet<String> = at_pin
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    assert_eq!(
        expected
            .iter()
            .filter(|k| k.starts_with("/registry/secrets/"))
            .count(),
        n,
        "the pin holds the planted secrets only"
    );
    assert_eq!(visitor.seen, expected);
    let report = visitor.inner.finish(run.revision, false);
    let s = report
        .resources
        .iter()
        .find(|r| r.resource == "secrets")
        .unwrap();
    assert_eq!(s.total, n as u64, "counted at the pinned revision");
    assert_eq!(report.revision, pinned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_saves_the_checkpoint_and_exits_3() {
    let (cp, k1) = plaintext_cluster(1500, &[]).await;
    // Through the test bed: the leak check reads stdout, stderr and the state folder (the
    // checkpoint) for every key of the config and every secret value seeded.
    let done = interrupt_reencrypt(&cp, BIG, KEY1, libc::SIGINT, 1500).await;
    let cp_json = checkpoint(&cp).expect("a checkpoint saved on SIGINT");
    assert_eq!(cp_json["finished"], false);
    assert!(
        cp_json["cursors"]["/registry/secrets/"]
            .as_str()
            .unwrap()
            .starts_with("/registry/secrets/big/s-"),
        "{cp_json:#}"
    );
    // Saved on the signal, after the write in flight: it counts every rewrite etcd shows.
    assert_eq!(
        cp_json["counters"]["secrets"]["rewritten"].as_u64(),
        Some(done as u64),
        "{cp_json:#}"
    );
    let text = std::fs::read_to_string(checkpoint_path(&cp)).unwrap();
    assert!(!text.contains(&k1), "no key in the checkpoint");
    assert!(
        !text.contains("initial") && !text.contains("aW5pdGlhbA"),
        "no secret data in the checkpoint"
    );
    cp.check_state_dirs();

    resume_to_the_end(&cp);
    assert_eq!(count_labelled(&cp, BIG, KEY1).await, 1500);
    // Created once, rewritten once: none written twice across the interrupted run and the resume.
    assert_versions(&cp, BIG, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_when_the_apiserver_answers_429() {
    let n = 300;
    // 20 seats for the whole server instead of 600: the throttled level's one share of them
    // rounds up to a single seat.
    let (mut cp, _) = plaintext_cluster(
        n,
        &[
            "--max-requests-inflight=10",
            "--max-mutating-requests-inflight=10",
        ],
    )
    .await;
    // The test bed's admin is in system:masters, which API Priority and Fairness exempts from
    // every limit (only the mandatory `exempt` schema may take precedence 1). A cluster-admin
    // that is not in that group is throttled like any user.
    let kubeconfig = add_admin_user(&cp, "atrest-operator");
    cp.restart_apiserver(0).await;
    // Its PATCHes of secrets in `big` get a priority level of a few seats that rejects the
    // rest: the apiserver itself answers 429 with a Retry-After.
    throttle_patches(&cp, "atrest-operator", "big").await;
    let rejected_before = throttled_rejections(&cp, 0).await;
    // 16 in flight, first attempts paced at 200 a second: a steady trickle of 429s rather than
    // one burst of 15, which makes APF raise its Retry-After (up to 32 s) and the run long.
    let mut cmd = atrest_command_as(
        &cp,
        &kubeconfig,
        &[
            "reencrypt",
            "--concurrency=16",
            "--qps=200",
            "--max-attempts=50",
            "-o",
            "json",
        ],
    );
    let out = cp.output(&mut cmd);
    let (code, r) = code_and_json(&out);
    assert_eq!(code, Some(0), "{r:#}");
    // The apiserver really refused some PATCHes with 429 (its own count)…
    let rejected = throttled_rejections(&cp, 0).await - rejected_before;
    assert!(rejected > 0.0, "the apiserver answered 429 ({r:#})");
    // …and executed exactly one per object: every refused one was sent again until accepted.
    let executed = throttled_executions(&cp, 0).await;
    assert_eq!(executed, n as f64, "one accepted PATCH per object ({r:#})");
    let t = &r["total"];
    assert_eq!(t["given_up"], 0, "{r:#}");
    assert_eq!(t["conflicts"], 0, "{r:#}");
    assert_eq!(t["rewritten"].as_u64(), Some(n as u64), "{r:#}");
    // atrest's own engine met every 429 (the writer client does not retry by itself): each
    // attempt is counted, refused ones and accepted ones alike.
    assert_eq!(
        t["writes"].as_f64(),
        Some(executed + rejected),
        "every PATCH the apiserver saw is an attempt atrest counted ({r:#})"
    );
    assert_eq!(count_labelled(&cp, BIG, KEY1).await, n);
    // A rejected PATCH wrote nothing: created once, rewritten once.
    assert_versions(&cp, BIG, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_decrypt_per_dek_when_verifying_kms_v2() {
    use sha2::Digest;
    let mut cp = ControlPlane::start(Options::default()).await;
    let plugin = cp.start_kms_plugin("vault", "key-1").await;
    // Every config key and file stays checked by the test bed; the plugin socket is the only
    // new thing in this config.
    cp.write_config(&secrets_config(&format!(
        "[{{kms: {{apiVersion: v2, name: vault, endpoint: '{}'}}}}, {{identity: {{}}}}]",
        plugin.endpoint()
    )));
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_namespace(&client, "k").await;
    create_secrets(&client, "k", &names("a", 300), "kms-sealed").await;
    // A restarted apiserver makes a new DEK seed: two DEK sources, one key ID.
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_secrets(&client, "k", &names("b", 300), "kms-sealed").await;

    // The DEK sources etcd holds, as the plugin logs them (a hash of the wrapped source).
    let mut etcd = cp.etcd().await;
    let resp = etcd
        .get(
            "/registry/secrets/k/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let prefix = b"k8s:enc:kms:v2:vault:";
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    for kv in resp.kvs() {
        let payload = kv
            .value()
            .strip_prefix(prefix.as_slice())
            .expect("every secret under KMS v2");
        let obj = atrest::codec::kms::parse_v2(payload).unwrap();
        assert_eq!(obj.key_id, "key-1");
        let sum = sha2::Sha256::digest(&obj.encrypted_dek_source);
        let hash: String = sum[..8].iter().map(|b| format!("{b:02x}")).collect();
        *sources.entry(format!("key-1 {hash}")).or_default() += 1;
    }
    assert_eq!(resp.kvs().len(), 600);
    assert_eq!(sources.len(), 2, "two DEK sources: {sources:?}");

    // atrest alone talks to the plugin now: the scan reads etcd, never the apiserver.
    cp.stop_apiserver(0);
    let before = kms_decrypts(&cp, "vault").len();
    let (code, stdout, stderr) =
        cp.atrest(&["scan", "-o", "json", "--resource", "secrets", "--verify"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let s = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "secrets")
        .unwrap();
    // Verified: every value opened with its unwrapped DEK.
    assert_eq!(support::scan_json::verdict(s, "on_write_key"), 600, "{s:#}");
    assert_eq!(support::scan_json::verdict(s, "undecryptable"), 0, "{s:#}");
    let calls: Vec<String> = kms_decrypts(&cp, "vault")[before..].to_vec();
    assert!(
        !calls.is_empty(),
        "the KMS test plugin logged no Decrypt: one built before it kept decrypts.log? \
         run scripts/k8s/build.sh (it rebuilds the plugin when its source changed)"
    );
    let mut called = calls.clone();
    called.sort();
    let expected: Vec<String> = sources.keys().cloned().collect();
    assert_eq!(
        called, expected,
        "one Decrypt per DEK source, for 600 values ({calls:?})"
    );
}
