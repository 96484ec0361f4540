//! Key custody on a real cluster: rotations that seal retired keys and config backups to
//! custodians (age), split knowledge K of N, the reference `age` tool on both sides, and the
//! restore drill.

use atrest_testbed as support;

use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use support::age::{self, AgeIdentity};
use support::{ControlPlane, create_namespace, create_secrets, leak, resource, text};

/// Runs atrest aimed at the cluster (state folder `state`); checks its output and files.
fn atrest(cp: &ControlPlane, args: &[&str]) -> Output {
    cp.output(&mut cp.atrest_command(args))
}

/// `atrest keys <args…> --state-dir <the cluster's>`: the custody commands need no cluster.
fn keys(cp: &ControlPlane, args: &[&str]) -> Output {
    let mut cmd = support::cli::command(&[&["keys"], args].concat());
    if args[0] != "share-unwrap" {
        cmd.arg(format!("--state-dir={}", cp.state_dir().display()));
    }
    cp.output(&mut cmd)
}

/// `rotate run` to a new secretbox key, restarting the apiserver on each config write (no
/// one-minute reload poll to wait for).
async fn rotate_to(cp: &mut ControlPlane, key: &str, extra: &[&str]) {
    let name = format!("--key-name={key}");
    let args = [
        &[
            "--provider=secretbox",
            "--timeout=90",
            "--progress=none",
            name.as_str(),
        ],
        extra,
    ]
    .concat();
    let cmd = cp.rotate_command("run", &args);
    cp.run_restarting_expect(cmd, 0).await;
}

/// Every file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `scan --snapshot FILE --verify -o json` with `extra`; (exit, document).
fn scan_snapshot(cp: &ControlPlane, snap: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "scan",
        "--snapshot",
        snap.to_str().unwrap(),
        "--verify",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = atrest(cp, &args);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("scan {args:?}: {e}\n{}", text(&out)));
    (out.status.code().unwrap_or(-1), doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_rotations_leave_no_key_in_clear_an_old_snapshot_opens_and_drills() {
    // One cluster for the whole custody story: two sealed rotations, the reference age tool
    // on both sides, the scan of an old snapshot and the restore drill.
    sealed_rotations().await;
}

async fn sealed_rotations() {
    let mut cp = support::key1_cluster().await;
    let client = cp.client().await;
    create_namespace(&client, "c").await;
    create_secrets(&client, "c", &support::names("s", 12), "custody-value-1").await;
    let before = cp.save_snapshot("before");
    let ids = cp.path().join("custodians");
    std::fs::create_dir_all(&ids).unwrap();
    let a: AgeIdentity = age::keygen(&ids, "alice.txt");
    let b: AgeIdentity = age::keygen(&ids, "bob.txt");

    rotate_to(
        &mut cp,
        "sb2",
        &["--seal-to", &a.recipient, "--seal-to", &b.recipient],
    )
    .await;
    // A second rotation seals again with the recorded recipients: no flag, no identity.
    rotate_to(&mut cp, "sb3", &[]).await;

    let state = cp.state_dir();
    assert!(
        !state.join("key-archive.yaml").exists(),
        "no plaintext archive"
    );
    let sealed: Vec<PathBuf> = files(&state.join("key-archive"));
    assert_eq!(sealed.len(), 2, "one sealed file per prune: {sealed:?}");
    let backups = files(&state.join("backups"));
    assert!(!backups.is_empty());
    for f in &backups {
        assert!(
            f.to_string_lossy().ends_with(".age"),
            "plaintext backup {f:?}"
        );
    }
    // No file of the state folder holds any key in raw, hex or base64 form.
    leak::register_config_file(&cp.config_path);
    for f in files(&state) {
        leak::check_file(&f);
    }
    // The reference age tool opens every sealed file with either custodian's identity.
    for f in sealed.iter().chain(&backups) {
        for id in [&a, &b] {
            let plain = age::decrypt(&[&id.file], f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert!(!plain.is_empty());
        }
    }
    let first = String::from_utf8(age::decrypt(&[&a.file], &sealed[0]).unwrap()).unwrap();
    assert!(
        first.contains("kind: KeyArchive") && first.contains("key1"),
        "{first}"
    );

    // The snapshot taken before either rotation: its values are on key1, which only the
    // sealed archive still holds.
    let (code, bare) = scan_snapshot(&cp, &before, &[]);
    assert_eq!(
        code, 1,
        "without an identity the sealed key is named, not opened"
    );
    let needed = bare["snapshot"]["keys_needed"].as_array().unwrap();
    let key1 = needed.iter().find(|k| k["label"] == "aescbc:key1").unwrap();
    assert_eq!(key1["source"], "missing", "{needed:#?}");
    let archive = state.join("key-archive");
    let (_, opened) = scan_snapshot(
        &cp,
        &before,
        &[
            "--key-archive",
            archive.to_str().unwrap(),
            "-i",
            b.file.to_str().unwrap(),
        ],
    );
    let s = resource(&opened, "secrets");
    assert_eq!(s["verdicts"]["undecryptable"], 0, "{s:#}");
    assert_eq!(s["outside_config"], s["verdicts"]["unknown_key"], "{s:#}");
    assert!(s["outside_config"].as_u64().unwrap() >= 12, "{s:#}");
    let needed = opened["snapshot"]["keys_needed"].as_array().unwrap();
    let key1 = needed.iter().find(|k| k["label"] == "aescbc:key1").unwrap();
    assert_eq!(key1["source"], "archive", "{needed:#?}");

    // keys unseal proves both custodians' identities open everything, writing nothing.
    let listing = files(&state);
    for id in [&a, &b] {
        let out = keys(&cp, &["unseal", "-i", id.file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("aescbc:key1") && stdout.contains("secretbox:sb2"),
            "{stdout}"
        );
    }
    assert_eq!(files(&state), listing, "unseal wrote nothing");

    // An archive the admin sealed by hand with the reference tool (same recipients) is read.
    let by_hand = cp.path().join("by-hand.yaml.age");
    let plain = age::decrypt(&[&a.file], &sealed[0]).unwrap();
    std::fs::write(
        &by_hand,
        age::encrypt(&[&a.recipient, &b.recipient], &plain, true),
    )
    .unwrap();
    let (_, opened) = scan_snapshot(
        &cp,
        &before,
        &[
            "--key-archive",
            by_hand.to_str().unwrap(),
            "-i",
            a.file.to_str().unwrap(),
        ],
    );
    let s = resource(&opened, "secrets");
    assert_eq!(s["verdicts"]["undecryptable"], 0, "{s:#}");
    assert!(s["outside_config"].as_u64().unwrap() >= 12, "{s:#}");
    let stranger = age::keygen(&ids, "stranger.txt");
    let out = atrest(
        &cp,
        &[
            "scan",
            "--snapshot",
            before.to_str().unwrap(),
            "--key-archive",
            by_hand.to_str().unwrap(),
            "-i",
            stranger.file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("by-hand.yaml.age") && err.contains("no identity given opens it"),
        "{err}"
    );

    drill_after_two_rotations(&cp, &before, &a, &sealed);

    // The report shows where each retired key lives and attaches the drill (ATR-C14).
    let file = cp.path().join("report.json");
    let drill = cp.path().join("drill-pass.json");
    let out = atrest(
        &cp,
        &[
            "report",
            "--format",
            "json",
            "--no-history",
            "--drill",
            drill.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(file.exists(), "{}", text(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let check = |id: &str| support::check(&report, id).clone();
    assert_eq!(check("ATR-C14")["status"], "PASS", "{:#}", check("ATR-C14"));
    assert_eq!(check("ATR-C13")["status"], "PASS", "{:#}", check("ATR-C13"));
    assert!(
        report["custody"]["sealed"]
            .as_str()
            .unwrap()
            .starts_with("sealed to any of 2 custodians"),
        "{:#}",
        report["custody"]
    );
    let key1 = report["key_lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "aescbc:key1")
        .unwrap();
    assert!(
        key1["kept"]
            .as_str()
            .unwrap()
            .starts_with("sealed to any of 2"),
        "{key1:#}"
    );
}

/// Values stored under `label` in a scan document, over every resource.
fn stored_under(doc: &Value, label: &str) -> u64 {
    doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            support::scan_json::stored(r)
                .get(label)
                .copied()
                .unwrap_or(0)
        })
        .sum()
}

/// `atrest drill` on the snapshot taken before two rotations: with the archive every value
/// opens; with the archive file that holds key1 gone, it exits 1 naming key1 and its count.
fn drill_after_two_rotations(
    cp: &ControlPlane,
    before: &Path,
    id: &AgeIdentity,
    sealed: &[PathBuf],
) {
    let (_, doc) = scan_snapshot(cp, before, &[]);
    let on_key1 = stored_under(&doc, "aescbc:key1");
    assert!(on_key1 >= 12, "{doc:#}");
    // Only an archive copy (no state folder: its backups would hold key1 too).
    let copy = cp.path().join("archive-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in sealed {
        std::fs::copy(f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let empty = cp.path().join("empty-state");
    std::fs::create_dir_all(&empty).unwrap();
    let drill = |out: &Path| {
        let mut cmd = support::cli::command(&[
            "drill",
            "--snapshot",
            before.to_str().unwrap(),
            "--etcdutl",
            cp.bins.join("etcdutl").to_str().unwrap(),
            "--key-archive",
            copy.to_str().unwrap(),
            "-i",
            id.file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        cmd.arg(format!("--config={}", cp.config_path.display()));
        cmd.arg(format!("--state-dir={}", empty.display()));
        let o = cp.output(&mut cmd);
        let result: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap())
            .unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        (o, result)
    };
    let (out, result) = drill(&cp.path().join("drill-pass.json"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(result["result"], "PASS");
    assert_eq!(result["unopened"], 0);
    let key1 = result["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "aescbc:key1")
        .unwrap();
    assert_eq!(key1["values"], on_key1, "{result:#}");
    assert_eq!(key1["unopened"], 0);
    assert_eq!(result["snapshot"]["path"], before.to_str().unwrap());
    // The evidence names the given file by its own hash, not the scratch copy's (nor none).
    let sum = sha2::Sha256::digest(std::fs::read(before).unwrap());
    assert_eq!(
        result["snapshot"]["sha256"],
        format!("sha256:{}", hex::encode(sum)),
        "{result:#}"
    );
    // The first prune archived key1: without that file, key1's values do not open.
    std::fs::remove_file(copy.join(sealed[0].file_name().unwrap())).unwrap();
    let (out, result) = drill(&cp.path().join("drill-fail.json"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(result["result"], "FAIL");
    assert_eq!(result["unopened"], on_key1, "{result:#}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "aescbc:key1: {on_key1} values, {on_key1} DO NOT OPEN"
        )),
        "{stdout}"
    );
}

/// `atrest keys <args…>` on a state folder of its own: custody needs no cluster.
fn keys_in(state: &Path, args: &[&str]) -> Output {
    let mut cmd = support::cli::command(&[&["keys"], args].concat());
    if args[0] != "share-unwrap" {
        cmd.arg(format!("--state-dir={}", state.display()));
    }
    support::cli::output(&mut cmd)
}

#[test]
fn two_of_three_custodians_one_share_is_refused_two_open_and_nothing_reaches_disk() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ids = dir.path().join("custodians");
    std::fs::create_dir_all(&ids).unwrap();
    // A state folder as prune leaves it: retired keys in the plaintext archive.
    let retired: Vec<std::sync::Arc<atrest::keys::Key>> = ["key1", "key2"]
        .iter()
        .map(|n| {
            let k = atrest::keys::Key::generate(*n, atrest::model::KeyProvider::Aescbc).unwrap();
            leak::register_key(&k.secret_base64(), "a retired key of the test");
            std::sync::Arc::new(k)
        })
        .collect();
    atrest::keys::archive::append(
        &state.join("key-archive.yaml"),
        &retired,
        "2026-12-01T00:00:00Z",
    )
    .unwrap();
    let people: Vec<AgeIdentity> = ["a.txt", "b.txt", "c.txt"]
        .iter()
        .map(|n| age::keygen(&ids, n))
        .collect();
    let mut seal = vec!["seal".to_string()];
    for p in &people {
        seal.push("--seal-to".into());
        seal.push(p.recipient.clone());
    }
    seal.push("--seal-threshold=2".into());
    let seal: Vec<&str> = seal.iter().map(String::as_str).collect();
    let out = keys_in(&state, &seal);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !state.join("key-archive.yaml").exists(),
        "the plaintext archive is gone"
    );
    for f in files(&state) {
        leak::check_file(&f);
    }
    let sealed = files(&state.join("key-archive"));
    assert_eq!(sealed.len(), 1);
    // No single custodian opens anything, not even with the reference tool.
    for p in &people {
        assert!(age::decrypt(&[&p.file], &sealed[0]).is_err());
    }
    let listing = files(&state);
    let out = keys_in(&state, &["unseal", "-i", people[0].file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 of the 2 shares needed"), "{err}");

    // Two custodians, each on their own machine, unwrap a share; combined in memory, they
    // open everything.
    let custody = state.join("custody.yaml");
    let mut shares = Vec::new();
    for p in &people[1..] {
        let share = ids.join(format!("{}.share", p.recipient));
        let out = keys_in(
            &state,
            &[
                "share-unwrap",
                "--custody",
                custody.to_str().unwrap(),
                "-i",
                p.file.to_str().unwrap(),
                "--out",
                share.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        shares.push(share);
    }
    let out = keys_in(
        &state,
        &[
            "combine",
            shares[0].to_str().unwrap(),
            shares[1].to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("aescbc:key1") && stdout.contains("aescbc:key2"),
        "{stdout}"
    );
    // A share and another custodian's identity open it too.
    let out = keys_in(
        &state,
        &[
            "unseal",
            "--share",
            shares[0].to_str().unwrap(),
            "-i",
            people[0].file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // One share alone is refused the same way.
    let out = keys_in(&state, &["combine", shares[0].to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        files(&state),
        listing,
        "the combined key never touched the state folder"
    );
    let names: Vec<String> = files(&ids)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        5,
        "3 identities and 2 shares, nothing else: {names:?}"
    );
}
