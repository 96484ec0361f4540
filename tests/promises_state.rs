//! Promises of the README about state that no other test proved, each against the real etcd,
//! kube-apiserver and KMS v2 test plugin of the test bed: counters summed across an interrupted
//! re-encryption and its resume, `promoted_revision` and what it is used for, the exporter's KMS
//! key-ID series, the exporter re-reading (and only reading) the config and the state folder,
//! `rotate prune --remove-snapshots` during a rotation, `report --history`, the progress bar on a
//! terminal, and a scan outlived by a compaction.

use atrest_testbed as support;
use support::proc::poll;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::prometheus::http_get;
use support::{
    ControlPlane, Options, aescbc_block, create_namespace, create_secrets, names, random_key_b64,
    resource, secrets_config, text,
};

const KEY1: &str = "k8s:enc:aescbc:v1:key1:";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One stored value as etcd holds it: its bytes, the revision it was last written at, and how
/// many times it was written since it was created (etcd's `version`).
#[derive(Clone, Debug)]
struct Stored {
    value: Vec<u8>,
    mod_revision: i64,
    version: i64,
}

/// Every key under `prefix`, read straight from etcd.
async fn stored(cp: &ControlPlane, prefix: &str) -> BTreeMap<String, Stored> {
    let resp = cp
        .etcd()
        .await
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                Stored {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                    version: kv.version(),
                },
            )
        })
        .collect()
}

/// How many values under `prefix` start with `label_prefix` (`k8s:enc:aescbc:v1:key1:`).
async fn count_on(cp: &ControlPlane, prefix: &str, label_prefix: &str) -> u64 {
    stored(cp, prefix)
        .await
        .values()
        .filter(|s| s.value.starts_with(label_prefix.as_bytes()))
        .count() as u64
}

/// etcd's current revision.
async fn etcd_revision(cp: &ControlPlane) -> i64 {
    cp.etcd()
        .await
        .get("/", Some(GetOptions::new().with_count_only()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

fn json(what: &str, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Changes a label of each named secret through the API: the apiserver writes it again, with
/// its current write key, so a rewrite atrest prepared from an older revision gets 409.
async fn touch(cp: &ControlPlane, ns: &str, names: &[String]) {
    let api: Api<Secret> = Api::namespaced(cp.client().await, ns);
    for n in names {
        api.patch(
            n,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"atrest.test/touched": "yes"}}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("touch {ns}/{n}: {e}"));
    }
}

/// `rotate <step> <extra…>` for this cluster, with a timeout that only catches a hang.
fn rotate(cp: &ControlPlane, step: &str, extra: &[&str]) -> Command {
    cp.rotate_command(step, &[&["--timeout=90"], extra].concat())
}

/// The rotation state file, parsed.
fn rotation_state(cp: &ControlPlane) -> Value {
    let path = cp.state_dir().join("rotation.json");
    json(
        &path.display().to_string(),
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

/// A config with aescbc key1 first for secrets, identity still readable.
fn key1_config() -> String {
    secrets_config(&format!(
        "{}      - identity: {{}}\n",
        aescbc_block(&[("key1", &random_key_b64())])
    ))
}

/// The apiserver compacts etcd every 5 minutes by default; tests that count etcd's history or
/// pin revisions switch that off, so only what the test does moves it.
fn no_compaction() -> Vec<String> {
    vec!["--etcd-compaction-interval=0".into()]
}

/// One sample of a Prometheus text page: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn samples(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {l}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    let mut labels = BTreeMap::new();
                    // Label values here never hold `",`; split on it.
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").unwrap();
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name.to_string(), labels)
                }
            };
            (name, labels, value)
        })
        .collect()
}

/// The samples of `name` whose labels include every `(label, value)` of `with`.
fn find<'a>(all: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|(n, l, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The one value of `name` with those labels, if the page has exactly one.
fn one(all: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    match find(all, name, with).as_slice() {
        [s] => Some(s.2),
        _ => None,
    }
}

/// Starts `atrest exporter` scanning every second on a free port; (command, child, address).
fn start_exporter(cp: &ControlPlane) -> (Command, Child, String) {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut cmd = cp.atrest_command(&["exporter", "--listen", &addr, "--interval", "1s"]);
    cmd.arg(format!("--apiserver={}", cp.url()));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("start atrest exporter");
    (cmd, child, addr)
}

/// The exporter's page, parsed, once `ok` holds for it.
async fn scrape_until(addr: &str, what: &str, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    scrape_page_until(addr, what, ok).await.1
}

/// The exporter's page as served and parsed, once `ok` holds for it.
async fn scrape_page_until(
    addr: &str,
    what: &str,
    ok: impl Fn(&[Sample]) -> bool,
) -> (String, Vec<Sample>) {
    poll(what, Duration::from_secs(120), async || {
        let (status, body) = http_get(addr, "/metrics").await.ok()?;
        assert_eq!(status, 200, "{body}");
        let s = samples(&body);
        ok(&s).then_some((body, s))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// 1. Counters across an interrupted re-encryption and its resume
// ---------------------------------------------------------------------------------------------

/// README ("reencrypt"): "the checkpoint … is saved atomically every 2 s, on SIGINT/SIGTERM …
/// `--resume` … counts each object once …; `writes` and `conflicts` add up every run's
/// requests". Both runs get conflicts the test causes (an object changed through the API after
/// the run pinned its revision), so the totals are known exactly: every stale object is written
/// once (etcd `version` 2), by atrest or by the test, and every request is counted once. The
/// 2 s period itself is not asserted (no timing assertions): the test only requires that a
/// periodic save, observed on disk while the run goes on, holds the run's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_conflicts_add_up_across_an_interrupted_reencrypt_and_its_resume() {
    const N: usize = 600;
    const NS: &str = "sum";
    let mut cp = ControlPlane::start(Options {
        apiserver_args: no_compaction(),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, NS).await;
    create_secrets(&client, NS, &names("s", N), "summed-counters-value").await;
    cp.write_config(&key1_config());
    cp.restart_apiserver(0).await;
    const ALL: &str = "/registry/secrets/";
    const OURS: &str = "/registry/secrets/sum/";
    // Stale: every secret etcd holds that is not on key1 (all of them, so far).
    let before = stored(&cp, ALL).await;
    let stale = before
        .values()
        .filter(|s| !s.value.starts_with(KEY1.as_bytes()))
        .count() as u64;
    assert_eq!(stale, before.len() as u64, "every secret is stale");
    assert_eq!(
        before.keys().filter(|k| k.starts_with(OURS)).count(),
        N,
        "{before:?}"
    );
    let checkpoint_path = cp.state_dir().join("reencrypt-checkpoint.json");
    let checkpoint =
        || -> Option<Value> { serde_json::from_slice(&std::fs::read(&checkpoint_path).ok()?).ok() };
    let run = |resume: bool| {
        // One write at a time, 40 a second: the run lasts long enough to be acted on.
        let mut cmd =
            cp.atrest_command(&["reencrypt", "--concurrency=1", "--qps=40", "-o", "json"]);
        if resume {
            cmd.arg("--resume");
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    };

    // Run 1: once it has rewritten an object (its revision is pinned), five objects far ahead
    // of it are changed through the API.
    let mut cmd1 = run(false);
    let mut child = cmd1.spawn().unwrap();
    support::promises_b::wait_for(&mut child, "run 1's first rewrite", async || {
        count_on(&cp, ALL, KEY1).await > 0
    })
    .await;
    let touched_1 = names("s", N)[200..205].to_vec();
    touch(&cp, NS, &touched_1).await;
    // A periodic save, observed on disk while the run goes on, counts the five conflicts.
    support::promises_b::wait_for(&mut child, "a checkpoint with 5 conflicts", async || {
        checkpoint().is_some_and(|c| {
            c["finished"] == false && c["counters"]["secrets"]["conflicts"].as_u64() == Some(5)
        })
    })
    .await;
    support::proc::signal(child.id(), libc::SIGTERM);
    let out1 = cp.wait(&cmd1, child);
    assert_eq!(out1.status.code(), Some(3), "{}", text(&out1));
    let r1 = json("run 1", &out1.stdout);
    assert_eq!(r1["interrupted"], true, "{r1:#}");
    // Every touched object was changed after the revision run 1 read: its rewrite had to 409.
    let after_1 = stored(&cp, ALL).await;
    for n in &touched_1 {
        let s = &after_1[&format!("{OURS}{n}")];
        assert!(
            s.mod_revision > r1["revision"].as_i64().unwrap(),
            "{n} changed after run 1's revision: {s:?} {r1:#}"
        );
    }
    let on_key1_1 = after_1
        .values()
        .filter(|s| s.value.starts_with(KEY1.as_bytes()))
        .count() as u64;
    assert!(on_key1_1 < stale, "run 1 was interrupted before the end");
    let t1 = &r1["total"];
    assert_eq!(t1["conflicts"], 5, "{r1:#}");
    assert_eq!(t1["already_current"], 5, "{r1:#}");
    // Every object on key1 but the five touched ones was rewritten by run 1.
    assert_eq!(t1["rewritten"].as_u64(), Some(on_key1_1 - 5), "{r1:#}");
    // One request per rewrite and one per conflict: (on_key1_1 − 5) + 5.
    assert_eq!(t1["writes"].as_u64(), Some(on_key1_1), "{r1:#}");
    for c in ["given_up", "gone", "unchanged"] {
        assert_eq!(t1[c], 0, "{c}: {r1:#}");
    }
    // The checkpoint saved on SIGTERM holds exactly run 1's counters.
    let saved = checkpoint().expect("a checkpoint after SIGTERM");
    assert_eq!(saved["finished"], false);
    assert_eq!(
        saved["counters"]["secrets"], r1["resources"]["secrets"],
        "{saved:#}"
    );

    // Run 2 (--resume): once it has rewritten an object, five more objects ahead of it are
    // changed through the API.
    let mut cmd2 = run(true);
    let mut child = cmd2.spawn().unwrap();
    support::promises_b::wait_for(&mut child, "run 2's first rewrite", async || {
        count_on(&cp, ALL, KEY1).await > on_key1_1
    })
    .await;
    let touched_2 = names("s", N)[550..555].to_vec();
    let now = stored(&cp, OURS).await;
    for n in &touched_2 {
        assert!(
            !now[&format!("{OURS}{n}")]
                .value
                .starts_with(KEY1.as_bytes()),
            "{n} is still ahead of run 2"
        );
    }
    touch(&cp, NS, &touched_2).await;
    let out2 = cp.wait(&cmd2, child);
    assert_eq!(out2.status.code(), Some(0), "{}", text(&out2));
    let r2 = json("run 2", &out2.stdout);
    assert_eq!(r2["resumed"], true, "{r2:#}");
    assert_eq!(r2["remaining"], 0, "{r2:#}");
    // Changed after the revision run 2 read: their rewrites had to 409 too.
    let after_2 = stored(&cp, OURS).await;
    for n in &touched_2 {
        let s = &after_2[&format!("{OURS}{n}")];
        assert!(
            s.mod_revision > r2["revision"].as_i64().unwrap(),
            "{n} changed after run 2's revision: {s:?} {r2:#}"
        );
    }

    // The totals of both runs, exactly: each stale object targeted once; rewritten by atrest
    // unless the test changed it first; one request per rewrite and per conflict, summed over
    // both runs.
    let t = &r2["total"];
    assert_eq!(t["targeted"].as_u64(), Some(stale), "{r2:#}");
    assert_eq!(t["rewritten"].as_u64(), Some(stale - 10), "{r2:#}");
    assert_eq!(t["already_current"], 10, "{r2:#}");
    assert_eq!(t["conflicts"], 10, "{r2:#}");
    assert_eq!(t["writes"].as_u64(), Some(stale), "{r2:#}");
    // Summed: run 1's requests plus run 2's own (a rewrite or a conflict per object it found
    // stale: every object not on key1 when it started).
    assert_eq!(
        t["writes"].as_u64(),
        Some(t1["writes"].as_u64().unwrap() + (stale - on_key1_1)),
        "{r1:#}\n{r2:#}"
    );
    for c in ["given_up", "gone", "unchanged"] {
        assert_eq!(t[c], 0, "{c}: {r2:#}");
    }
    assert_eq!(r2["resources"]["secrets"], *t, "one resource: {r2:#}");
    // Each object was written exactly once after it was created (by atrest or by the test),
    // and is on key1.
    let end = stored(&cp, OURS).await;
    assert_eq!(end.len(), N);
    for (k, s) in &end {
        assert!(s.value.starts_with(KEY1.as_bytes()), "{k} not on key1");
        assert_eq!(s.version, 2, "{k}: {s:?}");
    }
    let saved = checkpoint().expect("the final checkpoint");
    assert_eq!(saved["finished"], true);
    assert_eq!(saved["counters"]["secrets"], *t, "{saved:#}");
}

// ---------------------------------------------------------------------------------------------
// 2. promoted_revision
// ---------------------------------------------------------------------------------------------

/// The prefix of values stored with `label` (`aesgcm:key-…`): `k8s:enc:aesgcm:v1:key-…:`.
fn stored_prefix(label: &str) -> String {
    let (provider, name) = label.split_once(':').unwrap();
    format!("k8s:enc:{provider}:v1:{name}:")
}

/// Every secret etcd stores with `label`, with the revision it was written at.
async fn written_with(cp: &ControlPlane, label: &str) -> BTreeMap<String, i64> {
    let prefix = stored_prefix(label);
    stored(cp, "/registry/secrets/")
        .await
        .into_iter()
        .filter(|(_, s)| s.value.starts_with(prefix.as_bytes()))
        .map(|(k, s)| (k, s.mod_revision))
        .collect()
}

/// The `promoted_revision` rotation.json records for the key `target`.
fn promoted(cp: &ControlPlane, target: &str) -> i64 {
    let st = rotation_state(cp);
    st["keys"][target]["promoted_revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no promoted_revision for {target}: {st:#}"))
}

/// README (exporter, "aesgcm write estimate"): "`promote` records etcd's revision in the
/// rotation state (`promoted_revision`); … *current revision − promote revision* is an upper
/// bound of the writes made with the key". That holds only if every value stored with the new
/// key was written after that revision: proven for a promote (the revision lies between etcd's
/// revisions read just before and just after it), and for a promote that crashed after writing
/// the config and was run again once the apiserver had already written with the new key. The
/// use in `rotate run --if-older-than` ("at most N writes since promote") is checked against
/// etcd's revisions around that run; the exporter's use (`atrest_aesgcm_writes_estimate`) in
/// `the_exporter_follows_a_rotation_without_a_restart_and_only_reads`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_on_the_promoted_key_was_written_after_promoted_revision_even_across_a_crash() {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(key1_config()),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "pr").await;
    create_secrets(&client, "pr", &names("s", 10), "promoted-revision-value").await;

    cp.run_restarting_expect(rotate(&cp, "prepare", &["--provider=aesgcm"]), 0)
        .await;
    let target = rotation_state(&cp)["rotation"]["target"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(target.starts_with("aesgcm:"), "{target}");
    let before = etcd_revision(&cp).await;
    cp.run_restarting_expect(rotate(&cp, "promote", &[]), 0)
        .await;
    let after = etcd_revision(&cp).await;
    let p = promoted(&cp, &target);
    // Read during promote: not before it started, and before its canaries were written.
    assert!(before <= p && p < after, "{before} <= {p} < {after}");
    create_secrets(&client, "pr", &names("after", 5), "promoted-revision-value").await;
    let on_new = written_with(&cp, &target).await;
    for n in names("after", 5) {
        assert!(
            on_new.contains_key(&format!("/registry/secrets/pr/{n}")),
            "{n} is on {target}: {on_new:?}"
        );
    }
    let early: Vec<_> = on_new.iter().filter(|(_, r)| **r <= p).collect();
    assert!(early.is_empty(), "on {target} at or before {p}: {early:?}");

    // Finish the rotation; then the scheduled run prints the estimate it decides by.
    for step in ["reencrypt", "prune"] {
        let out = cp.run_restarting(rotate(&cp, step, &[])).await;
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
    }
    let low = etcd_revision(&cp).await - p;
    let out = cp
        .run_restarting(rotate(
            &cp,
            "run",
            &["--provider=aesgcm", "--if-older-than=28d"],
        ))
        .await;
    let high = etcd_revision(&cp).await - p;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{target}: ")))
        .unwrap_or_else(|| panic!("no line for {target}: {}", text(&out)));
    let n: i64 = line
        .split("at most ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no estimate in {line:?}"));
    assert!(low <= n && n <= high, "{low} <= {n} <= {high}: {line}");
    assert!(stdout.contains("nothing to do"), "{}", text(&out));

    // A second rotation whose promote crashes right after writing the config: the apiserver
    // loads the file (as its reload or a restart would) and writes with the new key before
    // promote is run again and records the step.
    cp.run_restarting_expect(rotate(&cp, "prepare", &["--provider=aesgcm"]), 0)
        .await;
    let target2 = rotation_state(&cp)["rotation"]["target"]
        .as_str()
        .unwrap()
        .to_string();
    let before = etcd_revision(&cp).await;
    let mut crashing = rotate(&cp, "promote", &[]);
    crashing.env(atrest::fsutil::CRASH_AT_ENV, "journal:after-config");
    let out = cp.run_restarting(crashing).await;
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", text(&out));
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_secrets(
        &client,
        "pr",
        &names("between", 3),
        "promoted-revision-value",
    )
    .await;
    let between = written_with(&cp, &target2).await;
    assert_eq!(
        between.len(),
        3,
        "written with {target2} before the rerun: {between:?}"
    );
    cp.run_restarting_expect(rotate(&cp, "promote", &[]), 0)
        .await;
    let p2 = promoted(&cp, &target2);
    assert!(before <= p2, "{before} <= {p2}");
    let on_new = written_with(&cp, &target2).await;
    let early: Vec<_> = on_new.iter().filter(|(_, r)| **r <= p2).collect();
    assert!(
        early.is_empty(),
        "written with {target2} at or before its promoted_revision {p2}: {early:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. atrest_kms_stored_objects
// ---------------------------------------------------------------------------------------------

/// The `keyID` (field 2) of a KMS v2 `EncryptedObject` (k8s.io/apiserver kmsv2 api.proto),
/// read here with a minimal protobuf walk, independently of atrest's decoder.
fn kms_v2_key_id(mut b: &[u8]) -> String {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut key_id = None;
    while !b.is_empty() {
        let tag = varint(&mut b);
        match tag & 7 {
            0 => {
                varint(&mut b);
            }
            1 => b = &b[8..],
            2 => {
                let len = varint(&mut b) as usize;
                let (field, rest) = b.split_at(len);
                if tag >> 3 == 2 {
                    key_id = Some(String::from_utf8(field.to_vec()).unwrap());
                }
                b = rest;
            }
            5 => b = &b[4..],
            w => panic!("wire type {w} in an EncryptedObject"),
        }
    }
    key_id.expect("an EncryptedObject without keyID")
}

/// The documented fingerprint of a KMS key ID: `sha256:` + the first 16 hex digits.
fn key_id_fingerprint(id: &str) -> String {
    format!(
        "sha256:{}",
        &hex::encode(Sha256::digest(id.as_bytes()))[..16]
    )
}

/// README (exporter table): "`atrest_kms_stored_objects{resource,key_id}` | KMS v2 values per
/// key ID, the ID shown as a fingerprint (`sha256:` + 16 hex digits)". Secrets are written
/// through the real apiserver under two key IDs of the KMS v2 test plugin; etcd's values are
/// counted per key ID here (their `EncryptedObject` read independently) and by `atrest scan`,
/// and the exporter's series must equal both, labelled by fingerprint, never by the raw ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_stored_objects_counts_each_key_id_etcd_holds_under_its_fingerprint() {
    const ALPHA: &str = "kid-alpha-7f3e";
    const BRAVO: &str = "kid-bravo-91c4";
    let mut cp = ControlPlane::start(Options::default()).await;
    let plugin = cp.start_kms_plugin("vault", ALPHA).await;
    cp.write_config(&format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: vault\n          endpoint: {}\n          timeout: 5s\n      - identity: {{}}\n",
        plugin.endpoint()
    ));
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_namespace(&client, "kid").await;
    create_secrets(&client, "kid", &names("a", 6), "kms-key-id-value").await;
    // The plugin's key changes; a restarted apiserver asks its Status at once.
    plugin.set_key_id(BRAVO);
    cp.restart_apiserver(0).await;
    let client = cp.client().await;
    create_secrets(&client, "kid", &names("b", 4), "kms-key-id-value").await;

    let mut in_etcd: BTreeMap<String, u64> = BTreeMap::new();
    for (k, s) in stored(&cp, "/registry/secrets/").await {
        let body = s
            .value
            .strip_prefix(b"k8s:enc:kms:v2:vault:".as_slice())
            .unwrap_or_else(|| panic!("{k} is not on KMS v2"));
        *in_etcd.entry(kms_v2_key_id(body)).or_default() += 1;
    }
    let want = BTreeMap::from([(ALPHA.to_string(), 6), (BRAVO.to_string(), 4)]);
    assert_eq!(in_etcd, want);
    // The values on the old key ID are stale: a finding.
    let (code, stdout, stderr) = cp.atrest(&["scan", "-o", "json", "--resource", "secrets"]);
    assert_eq!(code, 1, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let ids: BTreeMap<String, u64> =
        serde_json::from_value(resource(&doc, "secrets")["kms_key_ids"].clone()).unwrap();
    assert_eq!(ids, want, "{doc:#}");

    let (cmd, mut child, addr) = start_exporter(&cp);
    let (body, page) = scrape_page_until(&addr, "the KMS series", |s| {
        !find(s, "atrest_kms_stored_objects", &[]).is_empty()
    })
    .await;
    let _ = child.kill();
    let out = cp.wait(&cmd, child);
    let series: BTreeMap<String, u64> = find(&page, "atrest_kms_stored_objects", &[])
        .into_iter()
        .map(|(_, l, v)| {
            assert_eq!(l["resource"], "secrets", "{l:?}");
            (l["key_id"].clone(), *v as u64)
        })
        .collect();
    let want_fp: BTreeMap<String, u64> = want
        .iter()
        .map(|(id, n)| (key_id_fingerprint(id), *n))
        .collect();
    assert_eq!(series, want_fp, "{}", text(&out));
    let fp = regex::Regex::new("^sha256:[0-9a-f]{16}$").unwrap();
    for id in series.keys() {
        assert!(fp.is_match(id), "{id}");
    }
    for raw in [ALPHA, BRAVO] {
        assert!(!body.contains(raw), "the raw key ID {raw} is on the page");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The exporter re-reads the config and the state folder, and only reads
// ---------------------------------------------------------------------------------------------

/// One entry of a folder tree: (is a folder, mode, size, sha256 of the bytes, mtime).
type Entry = (bool, u32, u64, String, std::time::SystemTime);

/// Every file and folder below `dir` (and `dir` itself), by path relative to it.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let sha = if m.is_file() {
            hex::encode(Sha256::digest(std::fs::read(&p).unwrap()))
        } else {
            String::new()
        };
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        out.insert(
            p.strip_prefix(dir).unwrap().to_path_buf(),
            (m.is_dir(), m.mode(), m.len(), sha, m.modified().unwrap()),
        );
    }
    out
}

/// README (exporter): "It re-reads the config file and the rotation state before each scan (a
/// rotation changes them), only reads (etcd, the config, the state folder, each apiserver's
/// `/metrics`)". One exporter runs throughout. A real `rotate prepare` and `promote` to aesgcm
/// change the config and rotation.json: the served write key follows, and the aesgcm estimate
/// takes basis `promote_revision` — which only rotation.json gives — equal to
/// `atrest_scan_revision − promoted_revision` on the same page. Then, with the apiserver
/// stopped (its leases are etcd's only other writer), scans the exporter finishes leave etcd's
/// revision, the state folder (names, modes, bytes, mtimes) and the config file as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_follows_a_rotation_without_a_restart_and_only_reads() {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(key1_config()),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "ex").await;
    create_secrets(&client, "ex", &names("s", 12), "exporter-follows-value").await;
    let in_etcd = cp.count_prefix("/registry/secrets/").await as f64;
    let (cmd, mut child, addr) = start_exporter(&cp);
    fn secrets_on(key: &str) -> Vec<(&'static str, &str)> {
        vec![("resource", "secrets"), ("key", key)]
    }
    let first = scrape_until(&addr, "aescbc:key1 as the write key", |s| {
        one(s, "atrest_write_key_info", &secrets_on("aescbc:key1")) == Some(1.0)
            && one(
                s,
                "atrest_stored_objects",
                &[secrets_on("aescbc:key1"), vec![("state", "on_write_key")]].concat(),
            ) == Some(in_etcd)
    })
    .await;
    assert!(
        find(&first, "atrest_aesgcm_writes_estimate", &[]).is_empty(),
        "no aesgcm key yet"
    );

    for (step, extra) in [("prepare", &["--provider=aesgcm"][..]), ("promote", &[])] {
        let out = cp.run_restarting(rotate(&cp, step, extra)).await;
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
    }
    let target = rotation_state(&cp)["rotation"]["target"]
        .as_str()
        .unwrap()
        .to_string();
    let p = promoted(&cp, &target);
    let hash = cp.config_hash();
    let page = scrape_until(&addr, "the promoted key, dated by rotation.json", |s| {
        one(s, "atrest_write_key_info", &secrets_on(&target)) == Some(1.0)
            && one(s, "atrest_config_info", &[("hash", &hash)]) == Some(1.0)
            && one(
                s,
                "atrest_aesgcm_writes_estimate",
                &[("key", &target), ("basis", "promote_revision")],
            )
            .is_some()
    })
    .await;
    let revision = one(&page, "atrest_scan_revision", &[]).unwrap();
    assert_eq!(
        one(
            &page,
            "atrest_aesgcm_writes_estimate",
            &[("key", &target), ("basis", "promote_revision")]
        ),
        Some(revision - p as f64),
        "scan revision {revision}, promoted_revision {p}"
    );
    assert!(
        find(&page, "atrest_write_key_info", &secrets_on("aescbc:key1")).is_empty(),
        "the old write key is gone from the page"
    );

    // Only reads: no other writer now, and three scans finished after the picture was taken.
    cp.stop_apiserver(0);
    let revision_before = etcd_revision(&cp).await;
    let state_before = tree(&cp.state_dir());
    let config_before = tree(&cp.config_path);
    let mut last = one(&page, "atrest_last_scan_success_timestamp_seconds", &[]).unwrap();
    let mut page = page;
    for i in 0..3 {
        page = scrape_until(&addr, &format!("scan {i} after the picture"), |s| {
            one(s, "atrest_last_scan_success_timestamp_seconds", &[]).is_some_and(|t| t > last)
        })
        .await;
        last = one(&page, "atrest_last_scan_success_timestamp_seconds", &[]).unwrap();
    }
    assert_eq!(
        one(&page, "atrest_scan_revision", &[]),
        Some(revision_before as f64),
        "the scans read etcd at the revision of the picture"
    );
    assert_eq!(
        etcd_revision(&cp).await,
        revision_before,
        "etcd was not written"
    );
    assert_eq!(tree(&cp.state_dir()), state_before, "the state folder");
    assert_eq!(tree(&cp.config_path), config_before, "the config file");
    let _ = child.kill();
    cp.wait(&cmd, child);
}

// ---------------------------------------------------------------------------------------------
// 5. rotate prune --remove-snapshots during a rotation
// ---------------------------------------------------------------------------------------------

/// README ("Backups and old copies"): "`atrest rotate prune --remove-snapshots` lists atrest's
/// snapshots — of finished rotations, and every file of its snapshots folder that no rotation
/// records — deletes them and records it in `rotation.json`; the snapshot of a rotation in
/// progress is its restore point and is never removed". A first rotation is finished, a second
/// prepared (each took its snapshot); `scan --history` names the first as removable by that
/// command and the second as kept; the command then removes and records the first and keeps
/// the second, leaving the rotation and the config as they were; the second goes once its
/// rotation is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_snapshots_during_a_rotation_removes_finished_ones_and_keeps_its_restore_point() {
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(key1_config()),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "snap").await;
    create_secrets(&client, "snap", &names("s", 10), "snapshot-keeping-value").await;

    cp.run_restarting_expect(rotate(&cp, "run", &["--provider=aescbc"]), 0)
        .await;
    let finished = PathBuf::from(
        rotation_state(&cp)["history"][0]["snapshot"]["path"]
            .as_str()
            .unwrap(),
    );
    cp.run_restarting_expect(rotate(&cp, "prepare", &["--provider=aescbc"]), 0)
        .await;
    let st = rotation_state(&cp);
    let current = PathBuf::from(st["rotation"]["snapshot"]["path"].as_str().unwrap());
    assert_ne!(finished, current);
    let snapshots = cp.state_dir().join("snapshots");
    for f in [&finished, &current] {
        assert!(f.is_file() && f.starts_with(&snapshots), "{}", f.display());
    }

    // What scan says of each.
    let out = cp.output(&mut cp.atrest_command(&["scan", "--history"]));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let line_of = |said: &str, f: &Path| -> String {
        said.lines()
            .find(|l| l.contains(&format!("backup {} (", f.display())))
            .unwrap_or_else(|| panic!("no line for {}:\n{said}", f.display()))
            .to_string()
    };
    assert!(
        line_of(&said, &finished).ends_with("`atrest rotate prune --remove-snapshots` removes it"),
        "{said}"
    );
    assert!(
        line_of(&said, &current).ends_with("the restore point of the rotation in progress: kept"),
        "{said}"
    );

    // The command it names, while the rotation is in progress.
    let config_before = std::fs::read(&cp.config_path).unwrap();
    let out = cp
        .run_restarting_expect(rotate(&cp, "prune", &["--remove-snapshots"]), 0)
        .await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.lines()
            .any(|l| l == format!("removed {}", finished.display())),
        "{said}"
    );
    assert!(
        line_of(&said, &current).ends_with("the restore point of the rotation in progress: kept"),
        "{said}"
    );
    assert!(
        !said.contains(&format!("removed {}", current.display())),
        "{said}"
    );
    assert!(!finished.exists(), "{}", finished.display());
    assert!(current.is_file(), "{}", current.display());
    let after = rotation_state(&cp);
    assert!(
        after["history"][0]["snapshot"]["removed"].is_string(),
        "recorded: {after:#}"
    );
    assert!(
        after["rotation"]["snapshot"].get("removed").is_none(),
        "{after:#}"
    );
    assert_eq!(after["rotation"]["stage"], st["rotation"]["stage"]);
    assert_eq!(std::fs::read(&cp.config_path).unwrap(), config_before);

    // Once its rotation is finished, the second snapshot goes too.
    for step in ["promote", "reencrypt"] {
        let out = cp.run_restarting(rotate(&cp, step, &[])).await;
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
    }
    cp.run_restarting_expect(rotate(&cp, "prune", &["--remove-snapshots"]), 0)
        .await;
    assert!(!current.exists(), "{}", current.display());
    let end = rotation_state(&cp);
    assert!(end["rotation"].is_null(), "{end:#}");
    assert!(
        end["history"][1]["snapshot"]["removed"].is_string(),
        "{end:#}"
    );
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 7. Progress on a terminal and without one
// ---------------------------------------------------------------------------------------------

/// Switches secrets to a new aescbc write key (the previous one still readable) and restarts
/// the apiserver: every secret is stale again.
async fn new_write_key(cp: &mut ControlPlane, name: &str, keep: &[(&str, &str)]) -> String {
    let key = random_key_b64();
    let mut keys = vec![(name, key.as_str())];
    keys.extend_from_slice(keep);
    cp.write_config(&secrets_config(&format!(
        "{}      - identity: {{}}\n",
        aescbc_block(&keys)
    )));
    cp.restart_apiserver(0).await;
    key
}

/// README ("Commands"): "Progress goes to stderr: a bar over the rewrites on a terminal, a plain
/// line every 10 s without one". `atrest reencrypt` runs with stderr on a real pseudo-terminal:
/// it draws the bar (indicatif's `{bar} {pos}/{len} {msg}`, redrawn in place) and no plain
/// line; with stderr on a pipe it prints plain lines only, the last one saying where the run
/// ended. The 10 s interval is not asserted (no timing assertions): how many lines a run
/// prints depends on how long it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypt_draws_a_bar_on_a_terminal_and_plain_lines_without_one() {
    const N: usize = 200;
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "bar").await;
    create_secrets(&client, "bar", &names("s", N), "progress-bar-value").await;
    let key1 = new_write_key(&mut cp, "key1", &[]).await;
    let stale = cp.count_prefix("/registry/secrets/").await as u64;

    // On a terminal. 50 writes a second (a floor on the run's length, not a guess at the
    // machine's speed): the bar is drawn while the rewrites go on.
    let (master, slave) = support::proc::pty();
    let mut cmd = cp.atrest_command(&["reencrypt", "--qps=50", "-o", "json"]);
    cmd.env("TERM", "xterm-256color")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let child = cmd.spawn().unwrap();
    // Only the child holds the terminal now: reading it ends when the child does.
    cmd.stderr(Stdio::null());
    let reader = std::thread::spawn(move || {
        let mut master = master;
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child's side is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            screen.extend_from_slice(&buf[..n]);
        }
        screen
    });
    let out = cp.wait(&cmd, child);
    let screen = reader.join().unwrap();
    support::leak::check_bytes(&screen, "the terminal of `atrest reencrypt`");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json("reencrypt on a terminal", &out.stdout);
    assert_eq!(
        report["total"]["targeted"].as_u64(),
        Some(stale),
        "{report:#}"
    );
    let screen = String::from_utf8_lossy(&screen).into_owned();
    assert!(
        screen.contains(&format!("/{stale} re-encrypting (")),
        "no bar over the {stale} rewrites on the terminal:\n{screen:?}"
    );
    assert!(
        screen.contains("\u{1b}[2K"),
        "the bar's line is erased and redrawn in place:\n{screen:?}"
    );
    assert!(
        !screen.contains("atrest: re-encrypting:"),
        "no plain line on a terminal:\n{screen:?}"
    );

    // Without a terminal (stderr a pipe), the same run prints plain lines.
    new_write_key(&mut cp, "key2", &[("key1", &key1)]).await;
    let out = cp.output(&mut cp.atrest_command(&["reencrypt", "--qps=50", "-o", "json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json("reencrypt without a terminal", &out.stdout);
    assert_eq!(
        report["total"]["targeted"].as_u64(),
        Some(stale),
        "{report:#}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains('\r') && !stderr.contains("\u{1b}["),
        "no bar without a terminal:\n{stderr:?}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("atrest: re-encrypting: "))
        .collect();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no progress line:\n{stderr}"));
    assert!(
        last.starts_with(&format!("atrest: re-encrypting: {stale}/{stale} done (")),
        "the last line says where the run ended: {last}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. A scan outlived by a compaction stops
// ---------------------------------------------------------------------------------------------

/// Whether a relay holds etcd's answers, and whether it was told to let them go.
#[derive(Default)]
struct Gate {
    held: bool,
    released: bool,
}

/// A TCP relay between atrest and etcd (real bytes both ways, nothing imitated) that stops
/// passing etcd's answers on once `hold_at` bytes of them have gone through, until released:
/// atrest then waits in the middle of its pinned read, at a point the test knows.
struct Relay {
    addr: String,
    gate: Arc<(Mutex<Gate>, Condvar)>,
    stop: Arc<AtomicBool>,
    /// Set once the relay has broken the connection (see [`Relay::cutting`]).
    cut: Arc<AtomicBool>,
}

impl Relay {
    fn start(upstream: &str, hold_at: u64) -> Relay {
        Self::start_with(upstream, hold_at, u64::MAX)
    }

    /// A relay that breaks the connection it is carrying (both ways, once) when `cut_at` bytes
    /// of etcd's answers have gone through, and carries new connections on as before.
    fn cutting(upstream: &str, cut_at: u64) -> Relay {
        Self::start_with(upstream, u64::MAX, cut_at)
    }

    fn start_with(upstream: &str, hold_at: u64, cut_at: u64) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let gate: Arc<(Mutex<Gate>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let (upstream, g, s, c) = (
            upstream.to_string(),
            gate.clone(),
            stop.clone(),
            cut.clone(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let server = std::net::TcpStream::connect(&upstream).unwrap();
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                let (g, relayed, c) = (g.clone(), relayed.clone(), c.clone());
                std::thread::spawn(move || {
                    use std::io::Write as _;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if relayed.load(Ordering::SeqCst) + n as u64 > cut_at
                            && !c.swap(true, Ordering::SeqCst)
                        {
                            let _ = c_out.shutdown(std::net::Shutdown::Both);
                            let _ = s_in.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                        let (lock, cv) = &*g;
                        let mut gate = lock.lock().unwrap();
                        if !gate.released && relayed.load(Ordering::SeqCst) + n as u64 > hold_at {
                            gate.held = true;
                            cv.notify_all();
                            while !gate.released {
                                gate = cv.wait(gate).unwrap();
                            }
                        }
                        drop(gate);
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        relayed.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Relay {
            addr,
            gate,
            stop,
            cut,
        }
    }

    fn held(&self) -> bool {
        self.gate.0.lock().unwrap().held
    }

    fn release(&self) {
        let (lock, cv) = &*self.gate;
        lock.lock().unwrap().released = true;
        cv.notify_all();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// README (Limitations): "A scan stops instead ("run the scan again"): its counts must come
/// from one revision". The scan reads etcd through a relay that holds etcd's answers once
/// 4 MiB of about 20 MiB have gone through: atrest has pinned its revision and read part of
/// the data, and waits for the rest of a page. It is frozen (SIGSTOP) there, the real
/// `etcdctl compact` compacts past its revision, and it is let go: it must stop with exit 2 and
/// the message naming the compacted revision, and print no counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_outlived_by_a_compaction_stops_with_exit_2_and_no_counts() {
    const N: usize = 1200;
    let cp = ControlPlane::start(Options {
        apiserver_args: no_compaction(),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "cmp").await;
    // 16 KiB each: the scan reads about 20 MiB in pages of about 4 MiB.
    let value = format!("compaction-{}", "x".repeat(16 * 1024));
    create_secrets(&client, "cmp", &names("s", N), &value).await;
    let total: usize = cp
        .etcd()
        .await
        .kv_client()
        .max_decoding_message_size(256 << 20)
        .get("/registry/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.key().len() + kv.value().len())
        .sum();
    assert!(total as u64 > RELAY_AT * 4, "{total} bytes to read");

    let upstream = cp.etcd_endpoint.strip_prefix("http://").unwrap();
    let relay = Relay::start(upstream, RELAY_AT);
    let before = etcd_revision(&cp).await;
    let cmd = scan_through(&cp, &relay, &[]);
    let (out, compacted_at) = compact_while_frozen(&cp, &relay, cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        out.stdout.is_empty(),
        "no counts from a mixed read: {}",
        text(&out)
    );
    let pinned: i64 = stderr
        .split("etcd revision ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision named: {stderr}"));
    assert!(
        stderr.contains(&format!(
            "etcd revision {pinned} was compacted during the scan; run the scan again"
        )),
        "{stderr}"
    );
    assert!(
        before <= pinned && pinned < compacted_at,
        "{before} <= {pinned} < {compacted_at}"
    );
}

/// Where the relays of these tests hold or break etcd's answers: after 4 MiB.
const RELAY_AT: u64 = 4 << 20;

/// `atrest scan ARGS -o json` reading etcd through `relay`, its output piped.
fn scan_through(cp: &ControlPlane, relay: &Relay, args: &[&str]) -> Command {
    let mut cmd = support::cli::command(&["scan", "-o", "json"]);
    cmd.args(args)
        .arg(format!("--config={}", cp.config_path.display()))
        .arg(format!("--endpoints=http://{}", relay.addr))
        .env("ATREST_STATE_DIR", cp.path().join("atrest"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts `cmd` and, once the relay holds it (4 MiB of etcd's answers through), freezes it
/// (SIGSTOP), writes once more and has the real `etcdctl compact` compact up to that write,
/// then lets atrest and the relay go; atrest's output, and the revision compacted at.
async fn compact_while_frozen(
    cp: &ControlPlane,
    relay: &Relay,
    mut cmd: Command,
) -> (std::process::Output, i64) {
    let mut child = cmd.spawn().unwrap();
    support::promises_b::wait_for(&mut child, "4 MiB of etcd's answers relayed", async || {
        relay.held()
    })
    .await;
    support::proc::signal(child.id(), libc::SIGSTOP);
    cp.plant("/atrest-test/after-the-pin", b"1".to_vec()).await;
    let compacted_at = etcd_revision(cp).await;
    let etcdctl = Command::new(cp.bins.join("etcdctl"))
        .args(cp.etcd_flags())
        .args(["compact", &compacted_at.to_string(), "--physical"])
        .output()
        .unwrap();
    assert!(etcdctl.status.success(), "{}", text(&etcdctl));
    support::proc::signal(child.id(), libc::SIGCONT);
    relay.release();
    (cp.wait(&cmd, child), compacted_at)
}

/// Older values in etcd's history that a scan does not read: [`DELETED`] secrets of 16 KiB
/// (about 19 MiB), created and then deleted, on a control plane that never compacts.
async fn deleted_secrets_in_history() -> ControlPlane {
    let cp = ControlPlane::start(Options {
        apiserver_args: no_compaction(),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "gone").await;
    let value = format!("history-{}", "x".repeat(16 * 1024));
    create_secrets(&client, "gone", &names("s", DELETED), &value).await;
    Api::<Secret>::namespaced(client.clone(), "gone")
        .delete_collection(&Default::default(), &Default::default())
        .await
        .unwrap();
    poll(
        "the deleted secrets gone from etcd",
        Duration::from_secs(60),
        async || {
            let left = cp
                .etcd()
                .await
                .get(
                    "/registry/secrets/gone/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .unwrap()
                .count();
            (left == 0).then_some(())
        },
    )
    .await;
    cp
}

/// How many secrets [`deleted_secrets_in_history`] leaves in history.
const DELETED: usize = 1200;

/// The history read states its revision too: every older value it counts is one etcd still
/// kept at the scan's revision, or the run stops. 1,200 secrets of 16 KiB are deleted, so
/// etcd's history holds 1,200 older values (about 19 MiB) the scan itself does not read. The
/// history read goes through a relay that holds etcd's answers once 4 MiB have gone through;
/// atrest is frozen there, the real `etcdctl compact` compacts past every one of those values,
/// and it is let go: it must stop with exit 2 and the compaction message, and print no counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_read_outlived_by_a_compaction_stops_with_exit_2_and_no_counts() {
    let cp = deleted_secrets_in_history().await;

    let upstream = cp.etcd_endpoint.strip_prefix("http://").unwrap();
    let relay = Relay::start(upstream, RELAY_AT);
    let cmd = scan_through(&cp, &relay, &["--history"]);
    let (out, _) = compact_while_frozen(&cp, &relay, cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        out.stdout.is_empty(),
        "no counts from a history etcd no longer keeps: {}",
        text(&out)
    );
    assert!(
        stderr.contains("was compacted during the scan; run the scan again"),
        "{stderr}"
    );
}

/// A history read goes on through a broken connection and still counts every older value
/// once: each key range's watch starts again at the change it stopped at, skipping what it had
/// taken. 1,200 secrets of 16 KiB are deleted (1,200 older values, about 19 MiB of history);
/// the read goes through a relay that breaks the connection once 4 MiB of etcd's answers have
/// gone through (a reset, as a restarting etcd or a load balancer gives), and carries the new
/// connection on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_read_through_a_broken_connection_counts_every_older_value_once() {
    let cp = deleted_secrets_in_history().await;

    let upstream = cp.etcd_endpoint.strip_prefix("http://").unwrap();
    let relay = Relay::cutting(upstream, RELAY_AT);
    let mut cmd = scan_through(&cp, &relay, &["--history"]);
    // The history read says (at debug level) when it watches again.
    cmd.env("ATREST_LOG", "atrest::etcd::history=debug");
    let child = cmd.spawn().unwrap();
    let out = cp.wait(&cmd, child);
    assert!(
        relay.cut.load(Ordering::SeqCst),
        "the relay never broke the connection"
    );
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("history watch broke"),
        "the break did not hit the history read: {}",
        text(&out)
    );
    let scan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let older: u64 = scan["history"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["resource"] == "secrets")
        .map(|g| g["values"].as_u64().unwrap())
        .sum();
    assert_eq!(older, DELETED as u64, "{:#}", scan["history"]);
}

// ---------------------------------------------------------------------------------------------
// 6. report --history / --no-history
// ---------------------------------------------------------------------------------------------

/// README ("Backups and old copies"): "Every cluster report reads the residue by default:
/// etcd's history, each member's db size against its size in use, and every backup file atrest
/// can see (`--no-history` skips them for speed, and the report's scope section then says
/// history was not read)"; `report --help`: `--history` is hidden, "History is read by default;
/// kept so that older runbooks keep working". Eight secrets written as plaintext, then
/// re-encrypted, leave exactly eight plaintext copies in etcd's history and eight in a snapshot
/// taken before (in atrest's snapshots folder): the default report and `--history` count both,
/// with check ATR-C11 warning; `--no-history` reads neither, leaves ATR-C11 out, has one
/// warning less, and its scope says history was not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reads_the_residue_by_default_and_with_history_and_skips_it_with_no_history() {
    const N: u64 = 8;
    let mut cp = ControlPlane::start(Options {
        apiserver_args: no_compaction(),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "hist").await;
    create_secrets(
        &client,
        "hist",
        &names("s", N as usize),
        "report-history-value",
    )
    .await;
    // A backup of etcd while they are plaintext, left in atrest's snapshots folder.
    let snapshots = cp.state_dir().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let snapshot = snapshots.join("before.db");
    let saved = Command::new(cp.bins.join("etcdctl"))
        .args(cp.etcd_flags())
        .args(["snapshot", "save", snapshot.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(saved.status.success(), "{}", text(&saved));
    cp.write_config(&key1_config());
    cp.restart_apiserver(0).await;
    let out = cp.output(&mut cp.atrest_command(&["reencrypt"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(count_on(&cp, "/registry/secrets/", KEY1).await, N);

    let report = |format: &str, extra: &[&str]| -> (Option<i32>, String) {
        let file = cp.path().join(format!("report.{format}"));
        let out_flag = format!("--out={}", file.display());
        let mut cmd = cp.atrest_command(&["report", "--format", format, &out_flag]);
        cmd.args(extra);
        let out = cp.output(&mut cmd);
        (
            out.status.code(),
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}: {}", text(&out))),
        )
    };
    let check = |r: &Value, id: &str| -> Option<Value> {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
    };
    let residue_findings = |r: &Value| -> Vec<Value> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "residue")
            .cloned()
            .collect()
    };

    let mut warnings = None;
    for extra in [&[][..], &["--history"]] {
        let (code, body) = report("json", extra);
        let r = json("report", body.as_bytes());
        assert_eq!(code, Some(0), "{extra:?}: {r:#}");
        assert_eq!(r["scope"]["history"], true, "{extra:?}");
        assert_eq!(r["scope"]["backup_files"], 1, "{extra:?}");
        let residue = &r["residue"];
        assert_eq!(residue["history"]["residue"], N, "{extra:?}: {residue:#}");
        let secrets: Vec<&Value> = residue["history"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["resource"] == "secrets")
            .collect();
        assert_eq!(secrets.len(), 1, "{residue:#}");
        assert_eq!(secrets[0]["residue"], "plaintext");
        assert_eq!(secrets[0]["values"], N);
        let backups = residue["backups"].as_array().unwrap();
        assert_eq!(backups.len(), 1, "{residue:#}");
        assert_eq!(backups[0]["path"], snapshot.to_str().unwrap());
        assert_eq!(backups[0]["plaintext"], N, "{residue:#}");
        assert_eq!(residue["total"], 2 * N, "{residue:#}");
        assert!(!residue["members"].as_array().unwrap().is_empty());
        assert_eq!(check(&r, "ATR-C11").unwrap()["status"], "WARN");
        let found = residue_findings(&r);
        assert_eq!(
            found
                .iter()
                .map(|f| f["count"].as_u64().unwrap())
                .sum::<u64>(),
            2 * N,
            "{found:#?}"
        );
        let w = r["warnings"].as_u64().unwrap();
        assert_eq!(r["result"], format!("PASS with {w} warnings"));
        assert_eq!(*warnings.get_or_insert(w), w, "--history is the default");
    }
    let w = warnings.unwrap();

    let (code, body) = report("json", &["--no-history"]);
    let r = json("report --no-history", body.as_bytes());
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["scope"]["history"], false);
    assert!(r["scope"]["backup_files"].is_null(), "{:#}", r["scope"]);
    assert!(r["residue"].is_null(), "{:#}", r["residue"]);
    assert!(check(&r, "ATR-C11").is_none(), "ATR-C11 is left out");
    assert!(residue_findings(&r).is_empty(), "{:#}", r["findings"]);
    assert_eq!(r["warnings"].as_u64(), Some(w - 1));
    assert_eq!(r["result"], format!("PASS with {} warnings", w - 1));

    // The scope section says what was read, in words.
    let (_, md) = report("md", &[]);
    assert!(
        md.contains("etcd history and each member's db size: read"),
        "{md}"
    );
    let (_, md) = report("md", &["--no-history"]);
    assert!(md.contains("etcd history: NOT read (--no-history)"), "{md}");
}
