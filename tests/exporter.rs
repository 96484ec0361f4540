//! `atrest exporter` against a real control plane, scraped by a real Prometheus evaluating
//! deploy/prometheus/atrest-alerts.yaml; `atrest scan --textfile`; and `atrest rotate run
//! --if-older-than` on a schedule.

use atrest_testbed as support;
use support::proc::poll;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::GetOptions;
use serde_json::Value;
use support::prometheus::{Prometheus, Sample, http_get};
use support::{
    ControlPlane, Options, aescbc_block, create_namespace, create_secrets, names, random_key_b64,
    resource, secrets_config, text,
};

const SECRETS: usize = 40;

/// Stored key label → count of values under `/registry/secrets/`, read straight from etcd and
/// classified here by prefix alone (independently of atrest): `identity` for anything not
/// starting `k8s:enc:`, `<provider>:<key name>` otherwise.
async fn raw_counts(cp: &ControlPlane) -> BTreeMap<String, u64> {
    let mut c = cp.etcd().await;
    let resp = c
        .get("/registry/secrets/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for kv in resp.kvs() {
        let v = kv.value();
        let label = match v.strip_prefix(b"k8s:enc:") {
            None => "identity".to_string(),
            Some(rest) => {
                let rest = String::from_utf8_lossy(&rest[..rest.len().min(64)]).to_string();
                let parts: Vec<&str> = rest.splitn(4, ':').collect();
                format!("{}:{}", parts[0], parts[2])
            }
        };
        *out.entry(label).or_default() += 1;
    }
    out
}

/// The samples of `atrest_stored_objects` for secrets, as stored key → state → value, zeros
/// left out.
fn by_key_and_state(samples: &[Sample]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (l, v) in samples {
        if l["resource"] == "secrets" && *v > 0.0 {
            out.entry(l["key"].clone())
                .or_default()
                .insert(l["state"].clone(), *v as u64);
        }
    }
    out
}

fn rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/atrest-alerts.yaml")
}

/// Starts `atrest exporter` on a free port; (command, child, address).
fn start_exporter(cp: &ControlPlane, extra: &[&str]) -> (Command, Child, String) {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut cmd = cp.atrest_command(&[
        "exporter",
        "--listen",
        &addr,
        "--interval",
        "1s",
        "--etcd-patience=2",
    ]);
    cmd.arg(format!("--apiserver={}", cp.url()));
    cmd.args(extra);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("start atrest exporter");
    (cmd, child, addr)
}

/// The value of the sample line `series` (name and labels exactly as rendered) in a page.
fn value_in(page: &str, name: &str, must_contain: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && must_contain.iter().all(|c| l.contains(c))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_raw_etcd_counts_the_plaintext_alert_and_failed_scans() {
    let key1 = random_key_b64();
    let aescbc = aescbc_block(&[("k1", &key1)]);
    let encrypted = secrets_config(&format!("{aescbc}      - identity: {{}}\n"));
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(encrypted.clone()),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "exp").await;
    create_secrets(&client, "exp", &names("s", SECRETS), "exporter-value").await;

    let (cmd, mut child, addr) = start_exporter(&cp, &[]);
    let prom = Prometheus::start(std::slice::from_ref(&addr), &[rules()]).await;

    // Every stored_objects series Prometheus holds equals the raw etcd count (and the scan's).
    let raw = raw_counts(&cp).await;
    assert_eq!(
        raw.get("aescbc:k1").copied(),
        Some(SECRETS as u64),
        "{raw:?}"
    );
    let want: BTreeMap<String, BTreeMap<String, u64>> = raw
        .iter()
        .map(|(k, n)| {
            let state = if k == "identity" {
                "plaintext"
            } else {
                "on_write_key"
            };
            (k.clone(), BTreeMap::from([(state.to_string(), *n)]))
        })
        .collect();
    let got = prom
        .wait_for("atrest_stored_objects", Duration::from_secs(60), |s| {
            by_key_and_state(s) == want
        })
        .await;
    let (code, stdout, stderr) = cp.atrest(&["scan", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let keys = &resource(&doc, "secrets")["keys"];
    for (key, states) in by_key_and_state(&got) {
        for (state, n) in states {
            assert_eq!(keys[&key][&state], n, "{key} {state}: {keys:#}");
        }
    }
    let q = |s: &'static str| prom.query(s);
    assert_eq!(
        q("atrest_write_key_info{resource=\"secrets\"}").await[0].0["key"],
        "aescbc:k1"
    );
    assert_eq!(q("atrest_apiservers_converged").await[0].1, 1.0);
    let info = q("atrest_apiserver_config_info").await;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].0["hash"], cp.config_hash());
    assert_eq!(q("atrest_scan_failures_total").await[0].1, 0.0);
    let revision = q("atrest_scan_revision").await[0].1;
    assert!(revision > 0.0);
    assert!(
        !prom
            .alerts()
            .await
            .iter()
            .any(|(l, _)| l["alertname"] == "AtrestPlaintextObjects"),
        "no plaintext yet"
    );

    // /metrics answers while a scan runs, with the last good values. etcd is frozen (SIGSTOP)
    // so that the next scan (every second) waits on it for its whole patience (2 s): the scrape
    // sees it in progress by observed state, not by racing a 40-object scan.
    let etcd = cp.etcd_pid().expect("etcd runs");
    support::proc::signal(etcd, libc::SIGSTOP);
    let page = poll(
        "a scrape during a scan",
        Duration::from_secs(30),
        async || {
            let (status, body) = http_get(&addr, "/metrics").await.ok()?;
            assert_eq!(status, 200);
            (value_in(&body, "atrest_scan_in_progress", &[]) == Some(1.0)).then_some(body)
        },
    )
    .await;
    support::proc::signal(etcd, libc::SIGCONT);
    assert_eq!(
        value_in(
            &page,
            "atrest_stored_objects",
            &[
                "key=\"aescbc:k1\"",
                "state=\"on_write_key\"",
                "resource=\"secrets\""
            ]
        ),
        Some(SECRETS as f64),
        "{page}"
    );
    let (status, body) = http_get(&addr, "/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // A write with identity first, then the encrypted config back (an apiserver on an old
    // config, a restore): one plaintext secret, and the alert fires.
    cp.write_config(&secrets_config(&format!(
        "      - identity: {{}}\n{aescbc}"
    )));
    cp.restart_apiserver(0).await;
    create_secrets(
        &cp.client().await,
        "exp",
        &["planted".to_string()],
        "plain-value",
    )
    .await;
    cp.write_config(&encrypted);
    cp.restart_apiserver(0).await;
    let raw = raw_counts(&cp).await;
    assert_eq!(raw.get("identity").copied(), Some(1), "{raw:?}");
    let plain = prom
        .wait_for(
            "atrest_stored_objects{resource=\"secrets\",state=\"plaintext\"} > 0",
            Duration::from_secs(60),
            |s| !s.is_empty(),
        )
        .await;
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].0["key"], "identity");
    assert_eq!(plain[0].1 as u64, raw["identity"]);
    let on_key =
        q("atrest_stored_objects{resource=\"secrets\",key=\"aescbc:k1\",state=\"on_write_key\"}")
            .await;
    assert_eq!(on_key[0].1 as u64, raw["aescbc:k1"]);
    poll(
        "AtrestPlaintextObjects firing",
        Duration::from_secs(60),
        async || {
            prom.alerts()
                .await
                .iter()
                .any(|(l, state)| {
                    l["alertname"] == "AtrestPlaintextObjects"
                        && l["resource"] == "secrets"
                        && state == "firing"
                })
                .then_some(())
        },
    )
    .await;

    // etcd stops: failures rise, the last good values stay served.
    let good_revision = q("atrest_scan_revision").await[0].1;
    cp.stop_etcd();
    prom.wait_for(
        "atrest_scan_failures_total",
        Duration::from_secs(120),
        |s| s.first().is_some_and(|(_, v)| *v >= 2.0),
    )
    .await;
    let (status, page) = http_get(&addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        value_in(
            &page,
            "atrest_stored_objects",
            &[
                "key=\"identity\"",
                "state=\"plaintext\"",
                "resource=\"secrets\""
            ]
        ),
        Some(1.0),
        "{page}"
    );
    // The last good scan's revision: at least the one seen before the stop, and it stays put
    // while the scans keep failing.
    let served = value_in(&page, "atrest_scan_revision", &[]).unwrap();
    assert!(served >= good_revision, "{served} < {good_revision}");
    let failures = value_in(&page, "atrest_scan_failures_total", &[]).unwrap();
    let later = poll(
        "one more failed scan",
        Duration::from_secs(60),
        async || {
            let (_, page) = http_get(&addr, "/metrics").await.ok()?;
            (value_in(&page, "atrest_scan_failures_total", &[])? > failures).then_some(page)
        },
    )
    .await;
    assert_eq!(value_in(&later, "atrest_scan_revision", &[]), Some(served));
    assert_eq!(
        q("atrest_stored_objects{resource=\"secrets\",key=\"aescbc:k1\",state=\"on_write_key\"}")
            .await[0]
            .1 as u64,
        raw["aescbc:k1"]
    );
    poll(
        "AtrestScanFailing firing",
        Duration::from_secs(60),
        async || {
            prom.alerts()
                .await
                .iter()
                .any(|(l, _)| l["alertname"] == "AtrestScanFailing")
                .then_some(())
        },
    )
    .await;

    let _ = child.kill();
    let out = cp.wait(&cmd, child);
    assert!(text(&out).contains("scan failed"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_textfile_writes_the_same_series_atomically() {
    let key1 = random_key_b64();
    let cp = ControlPlane::start(Options {
        config_yaml: Some(secrets_config(&format!(
            "{}      - identity: {{}}\n",
            aescbc_block(&[("k1", &key1)])
        ))),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "tf").await;
    create_secrets(&client, "tf", &names("t", 12), "textfile-value").await;
    let dir = cp.path().join("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, stderr) = cp.atrest(&["scan", "--textfile", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let page = std::fs::read_to_string(dir.join("atrest.prom")).unwrap();
    let raw = raw_counts(&cp).await;
    assert_eq!(
        value_in(
            &page,
            "atrest_stored_objects",
            &["key=\"aescbc:k1\"", "state=\"on_write_key\""]
        ),
        Some(raw["aescbc:k1"] as f64),
        "{page}"
    );
    assert!(value_in(&page, "atrest_last_scan_success_timestamp_seconds", &[]).is_some());
    // Only the file itself: the temporary file was renamed into place.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, ["atrest.prom"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_older_than_leaves_a_young_key_alone_and_rotates_an_old_one() {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "sched").await;
    create_secrets(&client, "sched", &names("r", 10), "scheduled-value").await;
    let run = |cp: &ControlPlane, extra: &[&str]| {
        let mut cmd = cp.atrest_command(&["rotate", "run", "--timeout=60"]);
        cmd.args(extra);
        cmd
    };
    // The first scheduled run: identity is the write key, so a rotation is due.
    cp.run_restarting_expect(run(&cp, &["--provider=secretbox", "--if-older-than=7d"]), 0)
        .await;
    let first = std::fs::read(&cp.config_path).unwrap();
    let loaded = atrest::config::load(&cp.config_path).unwrap();
    let write_key = loaded
        .config
        .resolve(&atrest::GroupResource::secrets())
        .write_key()
        .to_string();
    assert!(write_key.starts_with("secretbox:"), "{write_key}");

    // A young key: nothing happens, exit 0, the file is byte for byte the same.
    let out = cp
        .run_restarting_expect(run(&cp, &["--provider=secretbox", "--if-older-than=7d"]), 0)
        .await;
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));
    assert_eq!(std::fs::read(&cp.config_path).unwrap(), first);

    // Once the key is older than the limit (observed in the state file), the run rotates.
    let state_file = cp.state_dir().join("rotation.json");
    poll(
        "the write key older than 2s",
        Duration::from_secs(30),
        async || {
            let st: Value = serde_json::from_slice(&std::fs::read(&state_file).ok()?).ok()?;
            let promoted = st["keys"][&write_key]["promoted"].as_str()?;
            let t = chrono::DateTime::parse_from_rfc3339(promoted).ok()?;
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc) > chrono::Duration::seconds(2))
                .then_some(())
        },
    )
    .await;
    let out = cp
        .run_restarting_expect(run(&cp, &["--provider=secretbox", "--if-older-than=2s"]), 0)
        .await;
    assert!(text(&out).contains("due"), "{}", text(&out));
    let after = atrest::config::load(&cp.config_path).unwrap();
    let new_key = after
        .config
        .resolve(&atrest::GroupResource::secrets())
        .write_key()
        .to_string();
    assert!(
        new_key.starts_with("secretbox:") && new_key != write_key,
        "{write_key} -> {new_key}"
    );
    let raw = raw_counts(&cp).await;
    assert_eq!(raw.get(&new_key).copied(), Some(10), "{raw:?}");
}
