//! `atrest scan` and `atrest status` against a real control plane: counts and lists must match
//! exactly what the test wrote, through every provider and key change.

use atrest_testbed as support;
use support::aescbc;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use support::{
    ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64, resource,
};

fn widget_ar() -> ApiResource {
    ApiResource {
        group: "atrest.test".into(),
        version: "v1".into(),
        api_version: "atrest.test/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    }
}

async fn create_widgets(cp: &ControlPlane, names: &[String]) {
    let api: Api<DynamicObject> = Api::namespaced_with(cp.client().await, "scan", &widget_ar());
    for n in names {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "atrest.test/v1", "kind": "Widget", "metadata": {"name": n}, "spec": {"size": 3}
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
}

async fn create_configmaps(cp: &ControlPlane, names: &[String]) {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cp.client().await, "scan");
    for n in names {
        let body = serde_json::from_value(
            serde_json::json!({"metadata": {"name": n}, "data": {"k": "v"}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &body).await.unwrap();
    }
}

fn install_crd(cp: &ControlPlane) {
    cp.install_crd("atrest.test", "widgets", "Widget");
}

fn counts(r: &Value) -> BTreeMap<String, u64> {
    support::scan_json::stored(r)
}

/// The names of a verdict's sample that live in namespace `ns`, sorted.
fn in_ns(r: &Value, verdict: &str, ns: &str) -> Vec<String> {
    support::scan_json::sample_names(r, verdict)
        .into_iter()
        .filter(|x| x.starts_with(&format!("{ns}/")))
        .collect()
}

fn qualified(ns: &str, names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| format!("{ns}/{n}")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_counts_every_object_through_provider_and_key_changes() {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "scan").await;
    install_crd(&cp);

    // Phase 1: identity.
    let plain = names("plain", 3);
    create_secrets(&client, "scan", &plain, "p").await;
    create_configmaps(&cp, &["cm-plain".to_string()]).await;
    create_widgets(&cp, &["w-plain".to_string()]).await;

    // Phase 2: aescbc key1.
    let (k1, k2, sb, g) = (
        random_key_b64(),
        random_key_b64(),
        random_key_b64(),
        random_key_b64(),
    );
    cp.write_config(&format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: [{}, {{identity: {{}}}}]\n",
        aescbc(&[("key1", &k1)])
    ));
    cp.restart_apiserver(0).await;
    let on_k1 = names("k1", 3);
    create_secrets(&client, "scan", &on_k1, "one").await;

    // Phase 3: key2 first; configmaps secretbox; the CRD group aesgcm; *.* with events kept
    // identity by an earlier rule.
    cp.write_config(&format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [events]\n  providers: [{{identity: {{}}}}]\n\
         - resources: [secrets]\n  providers: [{}, {{identity: {{}}}}]\n\
         - resources: [configmaps]\n  providers: [{{secretbox: {{keys: [{{name: sb, secret: {sb}}}]}}}}, {{identity: {{}}}}]\n\
         - resources: ['*.atrest.test']\n  providers: [{{aesgcm: {{keys: [{{name: g, secret: {g}}}]}}}}, {{identity: {{}}}}]\n\
         - resources: ['*.*']\n  providers: [{{secretbox: {{keys: [{{name: all, secret: {sb}}}]}}}}, {{identity: {{}}}}]\n",
        aescbc(&[("key2", &k2), ("key1", &k1)])
    ));
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    let on_k2 = names("k2", 2);
    create_secrets(&client, "scan", &on_k2, "two").await;
    create_configmaps(&cp, &names("cm-sb", 2)).await;
    create_widgets(&cp, &names("w-gcm", 2)).await;
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "scan");
    events
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "ev"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "scan"},
                "reason": "Test", "message": "m"
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    for verify in [false, true] {
        let mut args = vec!["scan", "-o", "json"];
        if verify {
            args.push("--verify");
        }
        let (code, stdout, stderr) = cp.atrest(&args);
        assert_eq!(code, 1, "findings exist: {stderr}");
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        assert!(doc["revision"].as_i64().unwrap() > 0);

        let s = resource(&doc, "secrets");
        assert_eq!(s["write_key"], "aescbc:key2");
        assert_eq!(s["total"], 8);
        assert_eq!(
            counts(s),
            BTreeMap::from([
                ("identity".into(), 3),
                ("aescbc:key1".into(), 3),
                ("aescbc:key2".into(), 2)
            ])
        );
        assert_eq!(in_ns(s, "plaintext", "scan"), qualified("scan", &plain));
        assert_eq!(in_ns(s, "stale", "scan"), qualified("scan", &on_k1));
        assert_eq!(support::scan_json::verdict(s, "undecryptable"), 0);
        // 3 plaintext + 3 on key1 need a rewrite; the 2 on key2 are current.
        assert_eq!(s["needs_rewrite"], 6);

        let c = resource(&doc, "configmaps");
        assert_eq!(c["write_key"], "secretbox:sb");
        assert_eq!(
            in_ns(c, "plaintext", "scan"),
            vec!["scan/cm-plain".to_string()]
        );
        assert_eq!(counts(c)["secretbox:sb"], 2);

        let w = resource(&doc, "widgets.atrest.test");
        assert_eq!(w["rule"], "*.atrest.test");
        assert_eq!(w["write_key"], "aesgcm:g");
        assert_eq!(
            counts(w),
            BTreeMap::from([("identity".into(), 1), ("aesgcm:g".into(), 2)])
        );
        assert_eq!(
            in_ns(w, "plaintext", "scan"),
            vec!["scan/w-plain".to_string()]
        );

        let e = resource(&doc, "events");
        assert_eq!(e["write_key"], "identity");
        assert_eq!(Some(&counts(e)["identity"]), e["total"].as_u64().as_ref());
        assert_eq!(
            e["needs_rewrite"], 0,
            "identity is the write key for events"
        );
        assert_eq!(
            support::scan_json::verdict(e, "plaintext"),
            e["total"].as_u64().unwrap(),
            "plaintext is counted as plaintext even where the config writes it so"
        );

        // Everything else falls under *.* (e.g. the CRD itself, namespaces).
        let crd = resource(&doc, "customresourcedefinitions.apiextensions.k8s.io");
        assert_eq!(crd["rule"], "*.*");
        assert_eq!(crd["write_key"], "secretbox:all");
        assert!(counts(resource(&doc, "namespaces"))["identity"] >= 1);
    }

    // --resource limits the scan; the table names the lists.
    let (code, stdout, _) = cp.atrest(&["scan", "--resource", "secrets"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("scan/plain-0") && stdout.contains("stale: on a read key"),
        "{stdout}"
    );
    assert!(!stdout.contains("configmaps"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_bad_values_are_reported_and_the_scan_completes() {
    let k1 = random_key_b64();
    let cp = ControlPlane::start(Options {
        config_yaml: Some(format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: [{}, {{identity: {{}}}}]\n",
            aescbc(&[("key1", &k1)])
        )),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "bad").await;
    let good = names("good", 5);
    create_secrets(&client, "bad", &good, "fine").await;

    let (value, _) = cp
        .raw(&format!("/registry/secrets/bad/{}", good[0]))
        .await
        .unwrap();
    cp.plant(
        "/registry/secrets/bad/truncated",
        value[..value.len() - 7].to_vec(),
    )
    .await;
    let mut tampered = value.clone();
    let n = tampered.len();
    tampered[n - 20] ^= 0xff;
    cp.plant("/registry/secrets/bad/tampered", tampered).await;
    let stranger = atrest::keys::Key::generate("key9", atrest::model::KeyProvider::Aescbc).unwrap();
    cp.plant(
        "/registry/secrets/bad/unknown",
        atrest::codec::encrypt_value(&stranger, b"/registry/secrets/bad/unknown", b"k8s\x00x"),
    )
    .await;
    let same_name =
        atrest::keys::Key::generate("key1", atrest::model::KeyProvider::Aescbc).unwrap();
    cp.plant(
        "/registry/secrets/bad/wrongkey",
        atrest::codec::encrypt_value(
            &same_name,
            b"/registry/secrets/bad/wrongkey",
            b"k8s\x00\x0a\x00",
        ),
    )
    .await;

    let (code, stdout, stderr) = cp.atrest(&["scan", "--verify", "-o", "json"]);
    assert_eq!(code, 1, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let s = resource(&doc, "secrets");
    assert_eq!(s["total"], 9);
    use support::scan_json::{sample_names, verdict};
    assert_eq!(sample_names(s, "corrupt"), vec!["bad/truncated"], "{s:#}");
    assert_eq!(
        sample_names(s, "undecryptable"),
        vec!["bad/tampered", "bad/wrongkey"]
    );
    assert_eq!(sample_names(s, "unknown_key"), vec!["bad/unknown"]);
    assert_eq!(counts(s)["aescbc:key9"], 1);
    assert_eq!(verdict(s, "on_write_key") + verdict(s, "stale"), 5);
    assert_eq!(s["unverified"], 0, "--verify decrypted every value");

    // Without --verify the prefix, key name and shape still catch the malformed one.
    let (_, stdout, _) = cp.atrest(&["scan", "-o", "json"]);
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let s = resource(&doc, "secrets");
    assert_eq!(sample_names(s, "unknown_key"), vec!["bad/unknown"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_mid_scan_still_gives_the_right_answer() {
    // A few thousand values, planted directly (test-only) to keep the test fast.
    etcd_restart_mid_scan(Some(50), 3000).await;
}

/// The streamed read (etcd 3.7) broken by the restart: the pages take over from the last key
/// the stream delivered, retry through the outage and count every value once. More values
/// than the connection's flow-control window holds, so the stream is still open when etcd dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_mid_stream_falls_back_to_pages_and_gives_the_right_answer() {
    etcd_restart_mid_scan(None, 20_000).await;
}

/// Kills etcd at the scan's first value (`n` values, read with `page_keys`) and restarts it
/// three seconds later: the scan retries and counts every value exactly once.
async fn etcd_restart_mid_scan(page_keys: Option<i64>, n: usize) {
    use atrest::etcd::scan::{self, Item, ReportBuilder, ScanOptions, Visitor};
    let mut cp = ControlPlane::start(Options::default()).await;
    let (loaded, client) = planted(&cp, "many", n).await;
    let plan = scan::plan(&loaded.config, "/registry", &[]);

    /// Kills etcd at the first item and brings it back three seconds later.
    struct Chaos {
        inner: ReportBuilder,
        tx: Option<std::sync::mpsc::Sender<()>>,
    }
    impl Visitor for Chaos {
        fn resource(&mut self, r: &atrest::config::Resolved) {
            self.inner.resource(r)
        }
        fn visit(&mut self, item: &Item<'_>) {
            if let Some(tx) = self.tx.take() {
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            }
            self.inner.visit(item)
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let etcd_pid = cp.etcd_pid().unwrap();
    let chaos_thread = std::thread::spawn(move || {
        rx.recv().unwrap();
        // SIGKILL etcd by pid; the control plane restarts it below.
        support::proc::signal(etcd_pid, libc::SIGKILL);
    });
    let mut visitor = Chaos {
        inner: ReportBuilder::new(10),
        tx: Some(tx),
    };
    let opts = ScanOptions {
        page_keys,
        patience: Duration::from_secs(60),
        ..Default::default()
    };
    let mut no_progress = ();
    let scan_fut = scan::run(
        &client,
        &loaded.config,
        "/registry",
        &plan,
        &opts,
        &mut visitor,
        &mut no_progress,
    );
    let restart = async {
        chaos_thread_join_then_restart(&mut cp).await;
    };
    let (result, ()) = tokio::join!(scan_fut, restart);
    chaos_thread.join().unwrap();
    let run = result.expect("the scan survives an etcd restart");
    assert!(run.retries > 0, "etcd was down during the scan");
    let report = visitor.inner.finish(run.revision, false);
    let s = report
        .resources
        .iter()
        .find(|r| r.resource == "secrets")
        .unwrap();
    assert_eq!(s.total, n as u64, "every value counted exactly once");
    let identity = atrest::model::KeyLabel::Identity;
    assert_eq!(s.keys.get(&identity).map(|c| c.total()), Some(n as u64));
}

/// Waits until etcd has died, then starts it again after a pause.
async fn chaos_thread_join_then_restart(cp: &mut ControlPlane) {
    let pid = cp.etcd_pid().unwrap();
    loop {
        // kill(pid, 0) fails once the process is gone (the guard reaps it on restart).
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if status.is_empty() || status.contains(") Z ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    cp.stop_etcd();
    cp.start_etcd().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_discovery_tls_and_clear_connection_errors() {
    let cp = ControlPlane::start(Options {
        etcd_tls: true,
        ..Default::default()
    })
    .await;
    let manifest = cp.path().join("kube-apiserver.yaml");
    cp.write_manifest(&manifest);
    let m = manifest.to_str().unwrap();

    // Zero flags beyond the manifest: config, endpoints, TLS files and prefix all come from it.
    let (code, stdout, stderr) =
        support::atrest(&["scan", "--apiserver-manifest", m, "-o", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(resource(&doc, "secrets")["write_key"], "identity");

    let (code, stdout, _) = support::atrest(&["status", "--apiserver-manifest", m], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(&format!("from manifest {m}")), "{stdout}");
    assert!(stdout.contains("etcd CA"), "{stdout}");

    // ETCDCTL_* override the manifest, and say so.
    let (code, stdout, _) = support::atrest(
        &["status", "--apiserver-manifest", m, "--no-scan"],
        &[("ETCDCTL_ENDPOINTS", "https://127.0.0.1:1")],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("https://127.0.0.1:1")
            && stdout.contains("from environment ETCDCTL_ENDPOINTS"),
        "{stdout}"
    );

    // Wrong CA: TLS verification is on, and the message says what to check.
    let other = cp.path().join("etcd-server.crt");
    let (code, _, stderr) = support::atrest(
        &[
            "scan",
            "--apiserver-manifest",
            m,
            "--cacert",
            other.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot connect to etcd"), "{stderr}");

    // Unreachable endpoint.
    let (code, _, stderr) = support::atrest(
        &[
            "scan",
            "--apiserver-manifest",
            m,
            "--endpoints",
            "https://127.0.0.1:1",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot connect to etcd at https://127.0.0.1:1"),
        "{stderr}"
    );

    // Missing client certificate: etcd requires one.
    let (code, _, stderr) = support::atrest(
        &[
            "scan",
            "--config",
            cp.config_path.to_str().unwrap(),
            "--endpoints",
            &cp.etcd_endpoint,
            "--cacert",
            cp.etcd_tls.as_ref().unwrap().ca.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to etcd at {}", cp.etcd_endpoint))
            && stderr.contains("--cert/--key"),
        "the error names the endpoint and the client certificate flags: {stderr}"
    );

    // An explicit manifest that does not exist is an error, not a silent default.
    let (code, _, stderr) = support::atrest(
        &[
            "scan",
            "--apiserver-manifest",
            "/nonexistent/kube-apiserver.yaml",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/kube-apiserver.yaml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_gone_for_good_stops_the_scan_after_its_patience() {
    use atrest::etcd::scan::{self, Item, ReportBuilder, ScanOptions, Visitor};
    let mut cp = ControlPlane::start(Options::default()).await;
    let (loaded, client) = planted(&cp, "gone", 600).await;
    let plan = scan::plan(&loaded.config, "/registry", &[]);
    /// Kills etcd (for good) at the first item.
    struct Killer {
        inner: ReportBuilder,
        pid: Option<u32>,
    }
    impl Visitor for Killer {
        fn visit(&mut self, item: &Item<'_>) {
            if let Some(pid) = self.pid.take() {
                support::proc::signal(pid, libc::SIGKILL);
                std::thread::sleep(Duration::from_millis(300));
            }
            self.inner.visit(item)
        }
    }
    let mut visitor = Killer {
        inner: ReportBuilder::new(10),
        pid: cp.etcd_pid(),
    };
    let opts = ScanOptions {
        page_keys: Some(20),
        patience: Duration::from_secs(3),
        ..Default::default()
    };
    let mut no_progress = ();
    let result = scan::run(
        &client,
        &loaded.config,
        "/registry",
        &plan,
        &opts,
        &mut visitor,
        &mut no_progress,
    )
    .await;
    let err = result.expect_err("etcd never came back");
    // It gave up because its patience ran out (not on the first failure, not never).
    match &err {
        atrest::etcd::EtcdError::Unavailable { waited, .. } => assert!(
            *waited >= Duration::from_secs(3),
            "gave up after {waited:?}, before its patience of 3 s"
        ),
        other => panic!("expected Unavailable after the patience, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("etcd did not answer") && msg.contains("the scan stopped at /registry/"),
        "{msg}"
    );
    cp.stop_etcd();
}

/// Plants `n` plaintext values under `/registry/secrets/<ns>/` (test-only) and connects a scan
/// client to the cluster's etcd.
async fn planted(
    cp: &ControlPlane,
    ns: &str,
    n: usize,
) -> (atrest::config::LoadedConfig, etcd_client::Client) {
    let mut etcd = cp.etcd().await;
    for i in 0..n {
        etcd.put(
            format!("/registry/secrets/{ns}/s-{i:05}"),
            b"k8s\x00fake".to_vec(),
            None,
        )
        .await
        .unwrap();
    }
    let target = atrest::etcd::EtcdTarget {
        endpoints: vec![cp.etcd_endpoint.clone()],
        cacert: None,
        cert: None,
        key: None,
        credentials: None,
        prefix: "/registry".into(),
    };
    (
        atrest::config::load(&cp.config_path).unwrap(),
        target.connect().await.unwrap(),
    )
}

/// Bounded page reads on a real etcd, forced to tiny pages: 50,000 objects in one namespace
/// (unpadded decimal names: the densest and most uneven key space) and 50,000 over 500
/// namespaces. The census holds exactly the keys etcd held at the revision it states, each once
/// and in etcd's order; keys written during the scan come after that revision and are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reads_with_tiny_pages_visit_every_key_once() {
    let run = every_key_once(Some(50)).await;
    assert_eq!(run.streamed, 0, "a page size asked for: pages only");
}

/// The default read: each planned range as one stream where etcd serves RangeStream (3.7;
/// etcd then counts nothing), else by pages, with the same census key by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_reads_visit_every_key_once_and_etcd_before_3_7_is_read_by_pages() {
    let run = every_key_once(None).await;
    let etcd = support::etcd_version();
    if support::etcd_minor() >= 7 {
        assert!(run.streamed > 0, "etcd {etcd} serves RangeStream: {run:?}");
    } else {
        assert_eq!(
            run.streamed, 0,
            "etcd {etcd} has no RangeStream: read by pages"
        );
    }
}

/// 50,000 objects in one namespace (unpadded decimal names: the densest and most uneven key
/// space) and 50,000 over 500 namespaces, read with `page_keys`; asserts the census is exactly
/// etcd's keys at the scan's revision and returns how the run went.
async fn every_key_once(page_keys: Option<i64>) -> atrest::etcd::scan::ScanRun {
    use atrest::etcd::scan::{self, Item, ReportBuilder, ScanOptions, Visitor};
    use etcd_client::{GetOptions, Txn, TxnOp};

    /// Records every key; at the first, writes two new keys ahead of the scan (etcdctl).
    struct Keys {
        inner: ReportBuilder,
        seen: Vec<String>,
        write: Option<std::process::Command>,
    }
    impl Visitor for Keys {
        fn resource(&mut self, r: &atrest::config::Resolved) {
            self.inner.resource(r)
        }
        fn visit(&mut self, item: &Item<'_>) {
            if let Some(mut cmd) = self.write.take() {
                let out = cmd.output().unwrap();
                assert!(out.status.success(), "{}", support::text(&out));
            }
            self.seen.push(item.key.to_string());
            self.inner.visit(item)
        }
    }

    let cp = ControlPlane::start(Options::default()).await;
    let mut etcd = cp.etcd().await;
    let mut keys: Vec<String> = (0..50_000)
        .map(|i| format!("/registry/secrets/big/s-{i}"))
        .collect();
    for ns in 0..500 {
        keys.extend((0..100).map(|i| format!("/registry/configmaps/team-{ns:03}/cm-{i}")));
    }
    for batch in keys.chunks(128) {
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|k| TxnOp::put(k.as_str(), b"k8s\x00fake".to_vec(), None))
            .collect();
        etcd.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    let mut write = std::process::Command::new("sh");
    write.arg("-c").arg(format!(
        "{etcdctl} {flags} put /registry/secrets/big/s-during x && {etcdctl} {flags} put /registry/configmaps/team-499/cm-during x",
        etcdctl = cp.bins.join("etcdctl").display(),
        flags = cp.etcd_flags().join(" ")
    ));
    let loaded = atrest::config::load(&cp.config_path).unwrap();
    let plan = scan::plan(&loaded.config, "/registry", &[]);
    let mut visitor = Keys {
        inner: ReportBuilder::new(10),
        seen: Vec::new(),
        write: Some(write),
    };
    let opts = ScanOptions {
        page_keys,
        ..Default::default()
    };
    let run = scan::run(
        &cp.etcd().await,
        &loaded.config,
        "/registry",
        &plan,
        &opts,
        &mut visitor,
        &mut (),
    )
    .await
    .unwrap();

    // What etcd held under the prefix at the scan's revision, read in one answer.
    let at = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_revision(run.revision);
    let mut kv = etcd.kv_client().max_decoding_message_size(256 << 20);
    let all = kv.get("/registry/", Some(at)).await.unwrap();
    let expected: Vec<String> = all
        .kvs()
        .iter()
        .map(|kv| String::from_utf8(kv.key().to_vec()).unwrap())
        .collect();
    assert!(expected.len() >= 100_000);
    assert_eq!(visitor.seen.len(), expected.len(), "every key once");
    assert!(visitor.seen == expected, "key by key, in etcd's order");
    // The writes made during the scan came after its revision: left out, consistently.
    assert!(visitor.write.is_none(), "the writes ran");
    assert!(!visitor.seen.iter().any(|k| k.ends_with("-during")));
    let during = etcd
        .get("/registry/secrets/big/s-during", None)
        .await
        .unwrap();
    assert!(during.kvs()[0].mod_revision() > run.revision);
    let revision = run.revision;
    let report = visitor.inner.finish(revision, false);
    let total: u64 = report.resources.iter().map(|r| r.total).sum();
    assert_eq!(total, expected.len() as u64);
    run
}
