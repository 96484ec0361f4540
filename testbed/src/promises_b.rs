//! Helpers for the engine promises (`tests/promises_engine.rs`): observing stored values and
//! progress, throttling one user with API Priority and Fairness so that the real apiserver
//! answers 429, and counting the KMS test plugin's `Decrypt` calls.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use serde_json::Value;

use crate::ControlPlane;
use crate::files::write_private;

/// Every stored value under `prefix`: key → (label, etcd version). The label is the value's
/// `k8s:enc:…` prefix (30 bytes at most, no key material) or `plaintext`.
pub async fn stored(cp: &ControlPlane, prefix: &str) -> BTreeMap<String, (String, i64)> {
    let mut etcd = cp.etcd().await;
    let resp = etcd
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            let v = kv.value();
            let label = if v.starts_with(b"k8s:enc:") {
                String::from_utf8_lossy(&v[..v.len().min(30)]).into_owned()
            } else {
                "plaintext".to_string()
            };
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (label, kv.version()),
            )
        })
        .collect()
}

/// How many values under `prefix` etcd holds with a label starting with `label`.
pub async fn count_labelled(cp: &ControlPlane, prefix: &str, label: &str) -> usize {
    stored(cp, prefix)
        .await
        .values()
        .filter(|(l, _)| l.starts_with(label))
        .count()
}

/// How many keys etcd holds under `prefix`, now (`revision` 0) or at `revision`.
pub async fn count_at(cp: &ControlPlane, prefix: &str, revision: i64) -> i64 {
    let mut etcd = cp.etcd().await;
    let mut opts = GetOptions::new().with_prefix().with_count_only();
    if revision > 0 {
        opts = opts.with_revision(revision);
    }
    etcd.get(prefix, Some(opts)).await.unwrap().count()
}

/// The re-encryption checkpoint file of the test's state folder.
pub fn checkpoint_path(cp: &ControlPlane) -> PathBuf {
    cp.state_dir().join("reencrypt-checkpoint.json")
}

/// The re-encryption checkpoint as last saved, if one was.
pub fn checkpoint(cp: &ControlPlane) -> Option<Value> {
    let text = std::fs::read_to_string(checkpoint_path(cp)).ok()?;
    serde_json::from_str(&text).ok()
}

/// `atrest reencrypt <extra…>` aimed at this cluster (admin kubeconfig, the test's state
/// folder), stdout and stderr piped: spawn it and watch it with [`wait_for`], or run it with
/// `cp.output`.
pub fn reencrypt_command(cp: &ControlPlane, extra: &[&str]) -> Command {
    let mut cmd = cp.atrest_command(&["reencrypt"]);
    cmd.args(extra);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// A run's exit code and its stdout parsed as JSON (a panic with stdout and stderr if it is
/// not).
pub fn code_and_json(out: &Output) -> (Option<i32>, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code(), doc)
}

/// Asserts every object under `prefix` was written exactly `version` times since creation
/// (etcd version).
pub async fn assert_versions(cp: &ControlPlane, prefix: &str, version: i64) {
    let s = stored(cp, prefix).await;
    let other: Vec<_> = s.iter().filter(|(_, (_, v))| *v != version).collect();
    assert!(other.is_empty(), "not at etcd version {version}: {other:?}");
}

/// Runs `atrest reencrypt --resume -o json` and asserts it finished the work: exit 0, resumed,
/// nothing remaining, nothing given up. Returns the JSON report.
pub fn resume_to_the_end(cp: &ControlPlane) -> Value {
    let out = cp.output(&mut reencrypt_command(cp, &["--resume", "-o", "json"]));
    let (code, r) = code_and_json(&out);
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["resumed"], true);
    assert_eq!(r["remaining"], 0);
    assert_eq!(r["total"]["given_up"], 0);
    r
}

/// Polls until `reached` holds, so that a test acts on observed progress. Fails if `child`
/// exits first, or if the state is never reached (the cap only catches a hang).
pub async fn wait_for(
    child: &mut std::process::Child,
    what: &str,
    mut reached: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if reached().await {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(o) = child.stdout.as_mut() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("atrest exited ({status}) before {what}\n{out}\n{err}");
        }
        assert!(Instant::now() < deadline, "never reached: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_for`] `n` values under `prefix` labelled `label` ("`n` objects rewritten").
pub async fn wait_rewritten(
    child: &mut std::process::Child,
    cp: &ControlPlane,
    prefix: &str,
    label: &str,
    n: usize,
) {
    wait_for(child, &format!("{n} objects rewritten"), async || {
        count_labelled(cp, prefix, label).await >= n
    })
    .await;
}

/// Starts `atrest reencrypt --concurrency=1 --qps=200` on the `total` objects under `prefix`,
/// sends it `signal` once 600 are labelled `label` (past the scan's first page of 500 keys, so
/// that the checkpoint has a cursor to save), waits for it through the test bed (the leak check
/// reads stdout, stderr and the state folder with the checkpoint) and asserts it exited 3,
/// pointed at `--resume` and stopped before the end. Returns how many objects it finished.
pub async fn interrupt_reencrypt(
    cp: &ControlPlane,
    prefix: &str,
    label: &str,
    signal: i32,
    total: usize,
) -> usize {
    let mut cmd = reencrypt_command(cp, &["--concurrency=1", "--qps=200"]);
    let mut child = cmd.spawn().unwrap();
    wait_rewritten(&mut child, cp, prefix, label, 600).await;
    crate::proc::signal(child.id(), signal);
    let out = cp.wait(&cmd, child);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--resume"));
    let done = count_labelled(cp, prefix, label).await;
    assert!(done < total, "interrupted before the end ({done} done)");
    done
}

/// Polls an async condition until it holds (the cap only catches a hang).
pub async fn poll_until(what: &str, mut reached: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reached().await {
        assert!(Instant::now() < deadline, "never reached: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one metric sample of apiserver `index` whose line starts with `name{` and holds
/// every one of `labels` (`key="value"`), summed over the matching lines; `None` when no line
/// matches.
pub async fn metric(cp: &ControlPlane, index: usize, name: &str, labels: &[&str]) -> Option<f64> {
    let text = cp
        .get_text(&cp.apiservers[index].url, "/metrics")
        .await
        .ok()?;
    let head = format!("{name}{{");
    let mut found = None;
    for line in text.lines().filter(|l| l.starts_with(&head)) {
        if labels.iter().all(|l| line.contains(l)) {
            let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Adds a token user `user` (in no group, so not `system:masters`: API Priority and Fairness
/// and the in-flight limits exempt that group from every limit) bound to the bootstrap
/// `cluster-admin` ClusterRole, and writes a kubeconfig for it. The apiserver reads the token
/// file at start: restart it before the user's first request. Returns the kubeconfig.
pub fn add_admin_user(cp: &ControlPlane, user: &str) -> PathBuf {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).unwrap();
    let token = hex::encode(b);
    let tokens = cp.path().join("tokens.csv");
    let mut text = std::fs::read_to_string(&tokens).unwrap();
    text.push_str(&format!("{token},{user},uid-{user}\n"));
    write_private(&tokens, text.as_bytes());
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{user}-cluster-admin")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
    }));
    let kubeconfig = cp.path().join(format!("kubeconfig-{user}"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: atrest-test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: atrest-test\n  context:\n    cluster: atrest-test\n    user: {user}\ncurrent-context: atrest-test\n",
        cp.url(),
        cp.ca_path(0).display()
    );
    write_private(&kubeconfig, text.as_bytes());
    kubeconfig
}

/// `atrest <args…>` aimed at this cluster like [`ControlPlane::atrest_command`] (config, etcd,
/// state folder), with `kubeconfig` instead of the admin's. Run it with `cp.output`/`cp.wait`.
pub fn atrest_command_as(cp: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = crate::cli::command(args);
    cmd.args(cp.atrest_flags());
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()));
    cmd.arg(format!("--state-dir={}", cp.state_dir().display()));
    cmd
}

/// The flow schema [`throttle_patches`] creates.
pub const THROTTLE_FLOW_SCHEMA: &str = "a-atrest-throttle";
/// The priority level [`throttle_patches`] creates.
pub const THROTTLE_PRIORITY_LEVEL: &str = "atrest-throttled";

/// Makes the real apiserver answer 429 to `user`'s rewrites (PATCH or PUT) of secrets in `namespace` whenever
/// more than its priority level's few seats are busy: a FlowSchema ahead of every suggested one
/// (precedence 50; only `exempt` may have 1, and it takes `system:masters` whatever follows, so
/// `user` must not be in that group: see [`add_admin_user`]) maps them to a Limited priority
/// level with one share, nothing lent or borrowed, and `Reject` as its limit response. Every
/// other request (the test's own, reads, /metrics) keeps its usual schema. Returns once
/// apiserver 0 has digested the new level (its nominal seats appear in /metrics).
pub async fn throttle_patches(cp: &ControlPlane, user: &str, namespace: &str) {
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": THROTTLE_PRIORITY_LEVEL},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": 1,
            "lendablePercent": 0,
            "borrowingLimitPercent": 0,
            "limitResponse": {"type": "Reject"}
        }}
    }));
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": {"name": THROTTLE_FLOW_SCHEMA},
        "spec": {
            "priorityLevelConfiguration": {"name": THROTTLE_PRIORITY_LEVEL},
            "matchingPrecedence": 50,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "User", "user": {"name": user}}],
                "resourceRules": [{
                    "verbs": ["patch", "update"], "apiGroups": [""], "resources": ["secrets"],
                    "namespaces": [namespace]
                }]
            }]
        }
    }));
    let level = format!("priority_level=\"{THROTTLE_PRIORITY_LEVEL}\"");
    poll_until(
        "the apiserver serves the throttled priority level",
        async || {
            metric(
                cp,
                0,
                "apiserver_flowcontrol_nominal_limit_seats",
                &[level.as_str()],
            )
            .await
            .is_some()
        },
    )
    .await;
}

/// 429 answers apiserver `index` gave through [`throttle_patches`]'s flow schema (APF
/// rejections, whatever the reason label).
pub async fn throttled_rejections(cp: &ControlPlane, index: usize) -> f64 {
    let schema = format!("flow_schema=\"{THROTTLE_FLOW_SCHEMA}\"");
    metric(
        cp,
        index,
        "apiserver_flowcontrol_rejected_requests_total",
        &[schema.as_str()],
    )
    .await
    .unwrap_or(0.0)
}

/// Requests apiserver `index` executed (dispatched) through [`throttle_patches`]'s flow schema.
pub async fn throttled_executions(cp: &ControlPlane, index: usize) -> f64 {
    let schema = format!("flow_schema=\"{THROTTLE_FLOW_SCHEMA}\"");
    metric(
        cp,
        index,
        "apiserver_flowcontrol_dispatched_requests_total",
        &[schema.as_str()],
    )
    .await
    .unwrap_or(0.0)
}

/// The `Decrypt` calls the KMS test plugin `name` has answered so far, one line each
/// (`<key ID> <hash of the wrapped DEK source>`), in order.
pub fn kms_decrypts(cp: &ControlPlane, name: &str) -> Vec<String> {
    let log = cp
        .path()
        .join(format!("kms-{name}-state"))
        .join("decrypts.log");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
