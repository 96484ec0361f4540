//! Offline scans of etcd data files made by the real etcd of the test bed (`etcdctl snapshot
//! save`, atrest's own pre-rotation snapshots, a member's `member/snap/db`), at each stage of a
//! rotation plaintext → aescbc → secretbox: the same counts as a live scan, plaintext history
//! found before `etcdctl compact` and gone after, free-page residue found before `etcdctl
//! defrag` and gone after, a retired key missing from the archive named, and damaged files
//! refused with exit 2.

use atrest_testbed as support;

#[path = "../fuzz/fuzz_targets/db_props.rs"]
mod db_props;

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::scan_json::{stored, verdict};
use support::{ControlPlane, Options, create_namespace, create_secrets, resource, text};

/// Secrets seeded in namespace `b`: more than a page of names in a table.
const N: usize = 120;

fn config_with(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, configmaps]\n  providers: {providers}\n"
    )
}

fn sha256(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    )
}

/// `atrest scan -o json` with `args`; (exit code, document).
fn scan(cp: &ControlPlane, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["scan", "-o", "json", "--max-list", "100000"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cp.atrest(&all);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("scan {args:?}: {e}\nstdout: {stdout}\nstderr: {stderr}"));
    (code, doc)
}

/// Residue history groups of secrets in namespace `b`, as (stored_as, residue kind) → keys.
fn residue_keys(doc: &Value, residue: &str) -> Vec<String> {
    doc["history"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["resource"] == "secrets" && g["residue"] == residue)
        .flat_map(|g| g["sample"]["objects"].as_array().unwrap().iter())
        .filter_map(|o| o["key"].as_str())
        .filter(|k| k.starts_with("/registry/secrets/b/"))
        .map(str::to_string)
        .collect()
}

/// A scan's resources without the samples' mod_revisions: the census includes objects the
/// apiserver keeps rewriting (its identity lease every 10 s), whose counts stay put while their
/// revisions move between two reads.
fn comparable(resources: &Value) -> Value {
    let mut v = resources.clone();
    for r in v.as_array_mut().into_iter().flatten() {
        for (_, sample) in r["samples"].as_object_mut().into_iter().flatten() {
            for o in sample["objects"].as_array_mut().into_iter().flatten() {
                o.as_object_mut().unwrap().remove("mod_revision");
            }
        }
    }
    v
}

fn assert_same_as_live(cp: &ControlPlane, file: &Path, stage: &str) {
    let (live_code, live) = scan(cp, &[]);
    let (code, off) = scan(cp, &["--snapshot", file.to_str().unwrap()]);
    assert_eq!(code, live_code, "{stage}: exit codes");
    assert_eq!(
        comparable(&off["resources"]),
        comparable(&live["resources"]),
        "{stage}: the offline scan of {} counts what the live scan counts",
        file.display()
    );
    let info = &off["snapshot"]["file"];
    assert_eq!(info["sha256"], sha256(file), "{stage}: {info:#}");
    assert_eq!(
        info["size"].as_u64(),
        Some(std::fs::metadata(file).unwrap().len())
    );
    assert!(
        info["revision"].as_i64().unwrap() >= live["revision"].as_i64().unwrap(),
        "{stage}: the snapshot was taken after the live scan: {info:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_scans_match_live_and_find_history_and_free_page_residue_until_compact_and_defrag()
{
    let mut cp = ControlPlane::start(Options {
        config_yaml: Some(config_with("[{identity: {}}]")),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "b").await;
    let names: Vec<String> = (0..N).map(|i| format!("s-{i:04}")).collect();
    create_secrets(&client, "b", &names, &"plaintext-residue-".repeat(40)).await;

    // Stage 0: plaintext, as configured.
    let snap0 = cp.save_snapshot("stage0");
    assert_same_as_live(&cp, &snap0, "plaintext");

    // What the rule (secrets, configmaps) holds in plaintext before encryption is turned on,
    // counted in etcd: what atrest's pre-rotation snapshot holds and each rewrite leaves behind.
    let plain_stage0 = (cp.count_prefix("/registry/secrets/").await
        + cp.count_prefix("/registry/configmaps/").await) as u64;

    // Stage 1: encryption turned on (aescbc key1).
    let out = cp
        .run_restarting({
            let mut c = cp.atrest_command(&[
                "rotate",
                "run",
                "--provider=aescbc",
                "--key-name=key1",
                "--timeout=60",
            ]);
            c.arg("--progress=none");
            c
        })
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Old copies left after the rotation")
            && said.contains(&format!("secrets identity plaintext: {N} older values"))
            && snapshot_plaintext(&said) == plain_stage0
            && said.contains("compact")
            && said.contains("defrag"),
        "the runbook ends with the residue (judged by the new config) and the commands that drop it: {said}"
    );
    let snap1 = cp.save_snapshot("stage1");
    assert_same_as_live(&cp, &snap1, "aescbc");

    // History: every seeded secret's plaintext revision is still in etcd and in the snapshot.
    let (code, off) = scan(&cp, &["--snapshot", snap1.to_str().unwrap(), "--history"]);
    assert_eq!(code, 0, "residue warns by default: {:#}", off["findings"]);
    assert!(
        off["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "residue" && f["level"] == "warn"),
        "{:#}",
        off["findings"]
    );
    assert_eq!(
        residue_keys(&off, "plaintext").len(),
        N,
        "one plaintext revision per seeded secret in the file: {:#}",
        off["history"]
    );
    // The audit of that backup: its identity, the keys it needs, and the residue check, which
    // warns by default and fails when the policy says so.
    let (code, stdout, stderr) = cp.atrest(&[
        "report",
        "--snapshot",
        snap1.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stderr}"));
    let check = |r: &Value, id: &str| -> Option<String> {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(
        check(&report, "ATR-C11").as_deref(),
        Some("WARN"),
        "{report:#}"
    );
    assert_eq!(
        check(&report, "ATR-C03"),
        None,
        "a backup has no apiservers to compare"
    );
    assert_eq!(report["backup"]["file"]["sha256"], sha256(&snap1));
    // Every plaintext value rewritten left its older revision: one history copy each, plus
    // whatever the file's free pages hold, as the scan of the same file counts them.
    assert_eq!(
        off["history"]["residue"].as_u64(),
        Some(plain_stage0),
        "{:#}",
        off["history"]
    );
    assert_eq!(
        report["residue"]["total"].as_u64(),
        Some(plain_stage0 + off["free_pages"]["residue"].as_u64().unwrap()),
        "{report:#}"
    );
    assert_eq!(code, 0, "{report:#}");
    let policy = cp.path().join("policy.yaml");
    std::fs::write(&policy, "residue: fail\n").unwrap();
    let (code, stdout, _) = cp.atrest(&[
        "report",
        "--snapshot",
        snap1.to_str().unwrap(),
        "--format",
        "json",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(check(&report, "ATR-C11").as_deref(), Some("FAIL"));
    assert_eq!(code, 1);

    let (code, live) = scan(&cp, &["--history"]);
    assert_eq!(code, 0, "residue warns by default");
    let (code, _) = scan(&cp, &["--history", "--policy", policy.to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "and is a finding when the policy says `residue: fail`"
    );
    assert_eq!(
        residue_keys(&live, "plaintext").len(),
        N,
        "live: {:#}",
        live["history"]
    );
    let members = live["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{members:#?}");
    assert!(
        members[0]["db_size"].as_i64().unwrap() >= members[0]["db_size_in_use"].as_i64().unwrap()
    );
    let cleanup: Vec<&str> = live["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let compact_at = live["history"]["compact_to_drop_residue"].as_i64().unwrap();
    assert!(
        cleanup[0].contains(&format!("compact {compact_at} --physical"))
            && cleanup[1].ends_with(" defrag"),
        "{cleanup:#?}"
    );

    // The compaction atrest names drops the history residue, live and in a new snapshot...
    cp.etcdctl(&["compact", &compact_at.to_string(), "--physical"]);
    let (_, live) = scan(&cp, &["--history"]);
    assert_eq!(live["history"]["residue"], 0, "{:#}", live["history"]);
    assert_eq!(live["history"]["from_revision"], compact_at);
    let snap1c = cp.save_snapshot("stage1-compacted");
    let (_, off) = scan(&cp, &["--snapshot", snap1c.to_str().unwrap(), "--history"]);
    assert_eq!(off["history"]["residue"], 0, "{:#}", off["history"]);
    assert_eq!(off["snapshot"]["file"]["compact_revision"], compact_at);
    // ...but the freed pages still hold the plaintext values until a defragmentation.
    let free = &off["free_pages"];
    assert!(
        free["residue"].as_u64().unwrap() > 0 && free["free_pages"].as_u64().unwrap() > 0,
        "compaction frees pages that still hold plaintext: {free:#}"
    );
    let (code, table) = {
        let (c, out, _) = cp.atrest(&["scan", "--snapshot", snap1c.to_str().unwrap(), "--history"]);
        (c, out)
    };
    assert_eq!(code, 0, "residue warns by default: {table}");
    assert!(
        table.contains("WARN free pages of the file:") && table.contains("Result: PASS with "),
        "{table}"
    );
    assert!(
        table.contains("Free pages:") && table.contains("copies — residue (plaintext)"),
        "{table}"
    );
    let (_, live) = scan(&cp, &["--history"]);
    let m = &live["members"][0];
    assert!(
        m["db_size"].as_i64().unwrap() > m["db_size_in_use"].as_i64().unwrap(),
        "the defragmentation indicator shows free space after the compaction: {m:#}"
    );
    cp.etcdctl(&["defrag"]);
    let snap1d = cp.save_snapshot("stage1-defragmented");
    // Every secret of that file is on key1.
    let secrets_stage1 = cp.count_prefix("/registry/secrets/").await as u64;
    let (code, off) = scan(&cp, &["--snapshot", snap1d.to_str().unwrap(), "--history"]);
    assert_eq!(off["free_pages"]["residue"], 0, "{:#}", off["free_pages"]);
    assert_eq!(off["history"]["residue"], 0);
    assert_eq!(code, 0, "a clean snapshot of a clean cluster: {off:#}");

    // Stage 2: aescbc key1 → secretbox sb1; key1 is retired to the archive.
    cp.run_restarting_expect(
        cp.atrest_command(&[
            "rotate",
            "run",
            "--provider=secretbox",
            "--key-name=sb1",
            "--timeout=60",
            "--progress=none",
        ]),
        0,
    )
    .await;
    let snap2 = cp.save_snapshot("stage2");
    assert_same_as_live(&cp, &snap2, "secretbox");
    let (_, off) = scan(&cp, &["--snapshot", snap2.to_str().unwrap(), "--history"]);
    assert_eq!(
        residue_keys(&off, "retired-key").len(),
        N,
        "the aescbc:key1 revisions are under a key the config no longer has: {:#}",
        off["history"]
    );

    // A snapshot of stage 1 read with today's config: its key is retired. Without the archive
    // the values are unknown-key and the missing key is named; with it, they open.
    let archive = cp.state_dir().join("key-archive.yaml");
    let (code, bare) = scan(&cp, &["--snapshot", snap1d.to_str().unwrap()]);
    assert_eq!(code, 1);
    let s = resource(&bare, "secrets");
    assert_eq!(verdict(s, "unknown_key"), secrets_stage1, "{s:#}");
    assert_eq!(stored(s)["aescbc:key1"], secrets_stage1, "{s:#}");
    let needed = bare["snapshot"]["keys_needed"].as_array().unwrap();
    let key1 = needed.iter().find(|k| k["label"] == "aescbc:key1").unwrap();
    assert_eq!(key1["source"], "missing", "{needed:#?}");
    let (_, opened) = scan(
        &cp,
        &[
            "--snapshot",
            snap1d.to_str().unwrap(),
            "--verify",
            "--key-archive",
            archive.to_str().unwrap(),
        ],
    );
    // Today's config still lacks the key (unknown key for the apiserver), but every one of
    // those values opens with the archive's copy of it.
    let s = resource(&opened, "secrets");
    assert_eq!(verdict(s, "undecryptable"), 0, "{s:#}");
    assert_eq!(verdict(s, "unknown_key"), secrets_stage1, "{s:#}");
    assert_eq!(
        s["outside_config"].as_u64(),
        Some(verdict(s, "unknown_key")),
        "{s:#}"
    );
    assert_eq!(resource(&bare, "secrets").get("outside_config"), None);
    let needed = opened["snapshot"]["keys_needed"].as_array().unwrap();
    let key1 = needed.iter().find(|k| k["label"] == "aescbc:key1").unwrap();
    assert_eq!(key1["source"], "archive", "{needed:#?}");
    let archived = atrest::keys::archive::list(&archive).unwrap();
    let fp = &archived
        .iter()
        .find(|k| k.name == "key1")
        .unwrap()
        .fingerprint;
    assert_eq!(key1["fingerprints"][0].as_str(), Some(fp.as_str()));

    // The member's own db file, read in place while etcd is stopped: same counts, not changed.
    let (_, live) = scan(&cp, &[]);
    cp.stop_etcd();
    let db = cp.path().join("etcd/member/snap/db");
    let before = (
        sha256(&db),
        std::fs::metadata(&db).unwrap().modified().unwrap(),
    );
    let (_, off) = scan(&cp, &["--snapshot", db.to_str().unwrap()]);
    assert_eq!(
        comparable(&off["resources"]),
        comparable(&live["resources"])
    );
    assert_eq!(
        (
            sha256(&db),
            std::fs::metadata(&db).unwrap().modified().unwrap()
        ),
        before,
        "the member's db file is read, never written"
    );
    cp.start_etcd().await;

    // atrest's own pre-rotation snapshots: the first holds the plaintext. prune
    // --remove-snapshots lists them, then deletes them and records it.
    let out = cp.output(&mut cp.atrest_command(&["rotate", "prune", "--remove-snapshots"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(cp.state_dir().join("rotation.json")).unwrap(),
    )
    .unwrap();
    let first = state["history"][0]["snapshot"]["path"].as_str().unwrap();
    let line = said
        .lines()
        .find(|l| l.contains(first) && l.contains("backup "))
        .unwrap_or_else(|| panic!("{said}"));
    assert_eq!(snapshot_plaintext(line), plain_stage0, "{line}");
    assert!(said.contains(&format!("removed {first}")), "{said}");
    assert!(!Path::new(first).exists());
    assert!(state["history"][0]["snapshot"]["removed"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_db_files_exit_2_with_a_clear_message_and_stay_unchanged() {
    let cp = ControlPlane::start(Options::default()).await;
    let good = cp.save_snapshot("good");
    let bytes = std::fs::read(&good).unwrap();
    let dir = cp.path();
    let page = 4096;
    let mut mid_page_zeroed = bytes.clone();
    // Page 2 onward: the tree, past the two meta pages.
    for b in &mut mid_page_zeroed[2 * page..bytes.len().min(6 * page)] {
        *b = 0;
    }
    let mut random = vec![0u8; bytes.len()];
    rand_fill(&mut random);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated-half",
            bytes[..bytes.len() / 2].to_vec(),
            "truncated",
        ),
        ("truncated-100", bytes[..100].to_vec(), "truncated"),
        ("empty", Vec::new(), "not an etcd data file"),
        ("zeroed", vec![0u8; bytes.len()], "not an etcd data file"),
        ("random", random, "not an etcd data file"),
        ("tree-zeroed", mid_page_zeroed, "damaged at page"),
    ];
    for (name, content, expect) in cases {
        let path = dir.join(format!("{name}.db"));
        std::fs::write(&path, &content).unwrap();
        let sum = sha256(&path);
        let (code, stdout, stderr) = cp.atrest(&["scan", "--snapshot", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {stdout}{stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()) && stderr.contains(expect),
            "{name}: names the file and says {expect:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(sha256(&path), sum, "{name}: the file is not changed");
    }
    let missing = dir.join("no-such.db");
    let (code, _, stderr) = cp.atrest(&["scan", "--snapshot", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read") && stderr.contains("no-such.db"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_snapshots_never_panic_and_are_never_written() {
    use rand::{Rng, SeedableRng};
    let cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "m").await;
    let names: Vec<String> = (0..60).map(|i| format!("m-{i:03}")).collect();
    create_secrets(&client, "m", &names, "mutate-me").await;
    let good = std::fs::read(cp.save_snapshot("mutate")).unwrap();
    let page = 4096;
    // A fixed seed: the same 300 mutations on every run (ATREST_MUTATION_SEED tries others).
    let seed: u64 = std::env::var("ATREST_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_203);
    eprintln!("mutation seed {seed} (a failure reproduces with ATREST_MUTATION_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..300 {
        let mut m = good.clone();
        match round % 3 {
            // A few bytes anywhere, the meta pages included.
            0 => {
                for _ in 0..rng.random_range(1..16) {
                    let at = rng.random_range(0..m.len());
                    m[at] = rng.random();
                }
            }
            // One whole page of the tree replaced with random bytes.
            1 => {
                let pages = m.len() / page;
                let p = rng.random_range(2..pages.max(3));
                let end = ((p + 1) * page).min(m.len());
                for b in &mut m[(p * page).min(end)..end] {
                    *b = rng.random();
                }
            }
            // Cut short anywhere.
            _ => m.truncate(rng.random_range(0..m.len())),
        }
        db_props::check(&m);
    }
}

/// The plaintext count of the first snapshot line of the after-rotation summary (the seeded
/// secrets plus configmaps the apiserver wrote itself).
fn snapshot_plaintext(said: &str) -> u64 {
    let line = said
        .lines()
        .find(|l| l.contains("values stored as plaintext where the config now encrypts"))
        .unwrap_or_else(|| panic!("no snapshot line: {said}"));
    let before = line.split(" values stored as plaintext").next().unwrap();
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"))
}

/// Random bytes from the OS (the test needs no reproducible stream: any input must be refused).
fn rand_fill(buf: &mut [u8]) {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, buf).unwrap();
}
