//! Progress a runbook can read: without a terminal a rewrite prints plain lines (or JSON lines
//! with `--progress json`) on stderr while it runs, counting rewrites against what is targeted.

use atrest_testbed as support;
use serde_json::Value;
use support::{ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64};

const N: usize = 200;

async fn stale_cluster() -> ControlPlane {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "prog").await;
    create_secrets(&client, "prog", &names("s", N), "progress-value-1").await;
    cp.write_config(&support::secrets_config(&format!(
        "{}      - identity: {{}}\n",
        support::aescbc_block(&[("key1", &random_key_b64())])
    )));
    cp.restart_apiserver(0).await;
    cp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_without_a_terminal_prints_progress_lines() {
    let cp = stale_cluster().await;
    // Every secret of the cluster is stale (the seeded ones and any the apiserver made).
    let in_etcd = cp.count_prefix("/registry/secrets/").await as u64;
    // At most 50 writes per second (the client's rate limit, a floor on the run's length, not
    // a guess at the machine's speed): 200 writes take at least 4 s, past the first line (2 s).
    let mut cmd = cp.atrest_command(&["reencrypt", "--qps=50", "--progress=json", "-o", "json"]);
    let out = cp.output(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let targeted = report["total"]["targeted"].as_u64().unwrap();
    assert_eq!(targeted, in_etcd, "{report:#}");
    let lines: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["phase"] == "re-encrypting")
        .collect();
    assert!(!lines.is_empty(), "no JSON progress line in:\n{stderr}");
    let last = lines.last().unwrap();
    assert_eq!(
        (last["done"].as_u64(), last["targeted"].as_u64()),
        (Some(targeted), Some(targeted)),
        "the last line says where the run ended: {last}"
    );
    for l in &lines {
        let (done, tgt) = (l["done"].as_u64().unwrap(), l["targeted"].as_u64().unwrap());
        assert!(done <= tgt && tgt <= targeted, "{l}");
        assert!(l["per_second"].as_u64().unwrap() > 0, "a whole rate: {l}");
    }
    // A line while the run was under way, not only the final one.
    assert!(
        lines.iter().any(|l| l["done"].as_u64() < Some(targeted)),
        "no progress line before the end:\n{stderr}"
    );

    // The default without a terminal: plain lines, whole objects per second.
    let cp = stale_cluster().await;
    let mut cmd = cp.atrest_command(&["reencrypt", "--qps=50"]);
    let out = cp.output(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("atrest: re-encrypting: "))
        .unwrap_or_else(|| panic!("no progress line in:\n{stderr}"));
    assert!(
        line.contains(" done (") && line.contains(" objects/s, eta ") && !line.contains('.'),
        "{line}"
    );
}
