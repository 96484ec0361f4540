//! Real nodes misbehave: a config edited by hand (adopted outside a rotation, adopted or undone
//! inside one), and more to come. Real etcd and kube-apiserver throughout.

use atrest_testbed as support;
use support::secrets_only;

use std::process::Command;

use sha2::Digest;
use support::{ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64};

fn rotate(cp: &ControlPlane, step: &str, extra: &[&str]) -> Command {
    let mut cmd = cp.rotate_command(step, extra);
    // Only the steps that re-encrypt take --progress.
    if matches!(step, "run" | "reencrypt") {
        cmd.arg("--progress=none");
    }
    cmd
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The config file's bytes, and `extra` appended by hand (as an admin would with an editor).
fn edit_by_hand(cp: &ControlPlane, extra: &str) -> Vec<u8> {
    let mut text = std::fs::read_to_string(&cp.config_path).unwrap();
    text.push_str(extra);
    cp.write_config(&text);
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_are_adopted_outside_a_rotation_and_adopted_or_undone_inside_one() {
    let mut cp = support::key1_secrets_cluster().await;
    let client = cp.client().await;
    create_namespace(&client, "hostile").await;
    create_secrets(&client, "hostile", &names("s", 12), "hostile-secret-one").await;
    cp.run_restarting_expect(
        rotate(&cp, "run", &["--provider=secretbox", "--key-name=sb1"]),
        0,
    )
    .await;

    // After the rotation an admin adds a comment: the next rotation adopts the file and says
    // what changed, instead of refusing every later rotation.
    let commented = edit_by_hand(&cp, "# reviewed by the platform team\n");
    cp.restart_apiserver(0).await;
    let (code, out, _) = support::cli::split(cp.output(&mut cp.atrest_command(&["status"])));
    assert_eq!(code, 0, "{out}");
    let out = cp
        .run_restarting_expect(
            rotate(&cp, "prepare", &["--provider=secretbox", "--key-name=sb2"]),
            0,
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("changed since atrest last wrote it")
            && err.contains("only formatting or comments differ"),
        "{err}"
    );

    // Inside the rotation, an edit stops the next step, with remedies that work and no advice
    // to move state files.
    edit_by_hand(&cp, "# a second note\n");
    let out = cp.output(&mut rotate(&cp, "promote", &["--timeout=5"]));
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("atrest rotate adopt") && err.contains("atrest rotate abort"),
        "{err}"
    );
    assert!(
        !err.contains("move "),
        "never advise moving state files: {err}"
    );

    // adopt: a comment keeps every key, so the rotation continues from the edited file (which
    // the apiserver loads meanwhile: restarted here instead of waiting for its reload).
    cp.restart_apiserver(0).await;
    let out = cp.run_restarting_expect(rotate(&cp, "adopt", &[]), 0).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("adopted"));

    // adopt refuses an edit that drops the rotation's new key, and changes nothing.
    let edited = std::fs::read_to_string(&cp.config_path).unwrap();
    let without_sb2: String = {
        let start = edited
            .find("- name: \"sb2\"")
            .or_else(|| edited.find("- name: sb2"));
        let start = start.expect("sb2 in the config");
        let end = edited[start..]
            .find("secret:")
            .map(|i| start + i)
            .and_then(|i| edited[i..].find('\n').map(|j| i + j + 1))
            .unwrap();
        format!("{}{}", &edited[..start], &edited[end..])
    };
    cp.write_config(&without_sb2);
    let out = cp.output(&mut rotate(&cp, "adopt", &[]));
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no longer has secretbox:sb2"),
        "{}",
        support::text(&out)
    );

    // abort before promote puts back the file as it was before prepare, byte for byte,
    // discarding the edit (and says so).
    let out = cp.run_restarting_expect(rotate(&cp, "abort", &[]), 0).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("discards the edit") && err.contains("byte for byte"),
        "{err}"
    );
    assert_eq!(
        sha256(&std::fs::read(&cp.config_path).unwrap()),
        sha256(&commented),
        "the file before prepare, comment and all"
    );
    let (code, out, _) = support::cli::split(cp.output(&mut cp.atrest_command(&["scan"])));
    assert_eq!(code, 0, "{out}");

    // An abort with no hand edit is byte-identical too.
    let before = std::fs::read(&cp.config_path).unwrap();
    cp.run_restarting_expect(
        rotate(&cp, "prepare", &["--provider=aesgcm", "--key-name=gcm1"]),
        0,
    )
    .await;
    assert_ne!(std::fs::read(&cp.config_path).unwrap(), before);
    cp.run_restarting_expect(rotate(&cp, "abort", &[]), 0).await;
    assert_eq!(std::fs::read(&cp.config_path).unwrap(), before);
}

/// A cluster with `n` plaintext secrets and a config whose write key (aescbc key1) encrypts:
/// every secret needs a rewrite.
async fn plaintext_cluster(n: usize) -> ControlPlane {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "frozen").await;
    create_secrets(&client, "frozen", &names("s", n), "frozen-secret-value").await;
    let k1 = random_key_b64();
    cp.write_config(&secrets_only(&format!(
        "[{{aescbc: {{keys: [{{name: key1, secret: {k1}}}]}}}}, {{identity: {{}}}}]"
    )));
    cp.restart_apiserver(0).await;
    cp
}

const FROZEN: &str = "/registry/secrets/frozen/";
const KEY1: &str = "k8s:enc:aescbc:v1:key1:";

use support::proc::signal;

/// The number before ` s` after `what` in `text` (`answered no request for 21 s` → 21).
/// Starts `reencrypt` (patience 15 s, progress lines, `extra` flags) on a [`plaintext_cluster`]
/// and returns once etcd shows 200 objects on key1: the moment a test freezes something.
async fn reencrypt_until_200_rewritten(
    cp: &ControlPlane,
    extra: &[&str],
) -> (Command, std::process::Child) {
    let mut args = vec![
        "--apiserver-patience=15",
        "--concurrency=4",
        "--qps=150",
        "--progress=lines",
    ];
    args.extend_from_slice(extra);
    let mut cmd = support::promises_b::reencrypt_command(cp, &args);
    let mut child = cmd.spawn().unwrap();
    support::promises_b::wait_rewritten(&mut child, cp, FROZEN, KEY1, 200).await;
    (cmd, child)
}

fn seconds_after(text: &str, what: &str) -> u64 {
    let rest = &text[text
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} not in {text}"))
        + what.len()..];
    rest.trim_start()
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seconds after {what:?} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_apiserver_stops_reencrypt_at_its_patience_and_resume_finishes() {
    let cp = plaintext_cluster(1200).await;
    let data_before = support::promises_b::stored(&cp, FROZEN).await.len();
    let (cmd, child) = reencrypt_until_200_rewritten(&cp, &[]).await;
    // The apiserver stops answering: its connections stay open (SIGSTOP), nothing is refused.
    let pid = cp.apiserver_pid(0).unwrap();
    signal(pid, libc::SIGSTOP);
    let out = cp.wait(&cmd, child);
    signal(pid, libc::SIGCONT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    // Said while waiting, within seconds, and the stop at the patience, to the second: not the
    // patience plus a request deadline.
    assert!(
        err.contains(&format!("apiserver {} has not answered for", cp.url())),
        "{err}"
    );
    let waited = seconds_after(&err, "answered no request for");
    assert!(
        (15..=20).contains(&waited),
        "stopped after {waited} s: {err}"
    );
    assert!(err.contains("--resume"), "{err}");
    let cp_json = support::promises_b::checkpoint(&cp).expect("the checkpoint is saved");
    assert!(
        cp_json["counters"]["secrets"]["rewritten"].as_u64() >= Some(200),
        "{cp_json:#}"
    );
    // Resumed once the apiserver answers again: every secret on key1, none lost.
    let out = cp.output(&mut cp.atrest_command(&["reencrypt", "--resume", "--progress=none"]));
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    let after = support::promises_b::stored(&cp, FROZEN).await;
    assert_eq!(after.len(), data_before);
    assert!(
        after.values().all(|(l, _)| l.starts_with(KEY1)),
        "{after:?}"
    );
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(cp.client().await, "frozen");
    for n in ["s-00000", "s-00600", "s-01199"] {
        let s = secrets.get(n).await.unwrap();
        assert_eq!(
            s.data.unwrap()["value"].0,
            b"frozen-secret-value".to_vec(),
            "{n}: data identical"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_apiserver_stops_prepares_wait_at_its_timeout() {
    let mut cp = plaintext_cluster(20).await;
    let config_before = std::fs::read(&cp.config_path).unwrap();
    let mut cmd = cp.atrest_command(&[
        "rotate",
        "prepare",
        "--timeout=15",
        "--provider=secretbox",
        "--key-name=sb1",
    ]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Freeze the apiserver as soon as prepare has written the new config: its wait for the
    // reload then gets no answer at all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read(&cp.config_path).unwrap() == config_before {
        assert!(std::time::Instant::now() < deadline, "prepare never wrote");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = cp.apiserver_pid(0).unwrap();
    signal(pid, libc::SIGSTOP);
    let out = cp.wait(&cmd, child);
    signal(pid, libc::SIGCONT);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer within 15 s"), "{err}");
    // The lock is released and the rotation goes on from where it stopped.
    cp.restart_apiserver(0).await;
    cp.run_restarting_expect(
        rotate(&cp, "run", &["--provider=secretbox", "--key-name=sb1"]),
        0,
    )
    .await;
    let after = support::promises_b::stored(&cp, FROZEN).await;
    assert!(
        after
            .values()
            .all(|(l, _)| l.starts_with("k8s:enc:secretbox:v1:sb1:")),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_stops_a_scan_at_its_patience() {
    let cp = plaintext_cluster(300).await;
    let mut cmd = cp.atrest_command(&["scan", "--etcd-patience=10", "--progress=none"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let pid = cp.etcd_pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let child = cmd.spawn().unwrap();
    let out = cp.wait(&cmd, child);
    signal(pid, libc::SIGCONT);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd"), "{err}");
    // And once etcd answers again, the same scan completes.
    let out = cp.output(&mut cp.atrest_command(&["scan", "--progress=none"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "plaintext where key1 writes: {}",
        support::text(&out)
    );
}

/// `atrest <args…>` (config, etcd, kubeconfig) run in a mount namespace of its own where `dir`
/// is a tmpfs of `size` (a full disk, without filling the machine's).
fn on_small_disk(cp: &ControlPlane, dir: &std::path::Path, size: &str, args: &[&str]) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let inner = {
        let mut c = support::cli::command(args);
        c.args(cp.atrest_flags());
        c.arg(format!("--kubeconfig={}", cp.kubeconfig.display()));
        c
    };
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &format!("mount -t tmpfs -o size={size} tmpfs \"$0\" && exec \"$@\""),
    ]);
    cmd.arg(dir);
    cmd.arg(inner.get_program());
    cmd.args(inner.get_args());
    for v in support::cli::SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_before_anything_is_written() {
    let cp = plaintext_cluster(50).await;
    let config_before = std::fs::read(&cp.config_path).unwrap();
    // prepare's snapshot: etcd's database and a margin do not fit in 2 MiB.
    let small = cp.path().join("small-state");
    let state = small.to_str().unwrap().to_string();
    let out = cp.output(&mut on_small_disk(
        &cp,
        &small,
        "2m",
        &[
            "rotate",
            "prepare",
            "--timeout=30",
            "--provider=secretbox",
            "--state-dir",
            &state,
        ],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "not enough free space in {state}/snapshots to write the etcd snapshot"
        )) && err.contains("MiB are free"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&cp.config_path).unwrap(),
        config_before,
        "nothing written"
    );

    // reencrypt's checkpoint: refused before the first rewrite.
    let small = cp.path().join("small-checkpoint");
    let checkpoint = small.join("checkpoint.json");
    let out = cp.output(&mut on_small_disk(
        &cp,
        &small,
        "256k",
        &[
            "reencrypt",
            "--progress=none",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to write the re-encryption checkpoint"),
        "{}",
        support::text(&out)
    );
    assert_eq!(
        support::promises_b::count_labelled(&cp, FROZEN, KEY1).await,
        0,
        "no object rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_during_reencrypt_stops_it_and_resume_finishes() {
    let cp = plaintext_cluster(1200).await;
    let (cmd, child) = reencrypt_until_200_rewritten(&cp, &["--etcd-patience=15"]).await;
    // etcd stops answering: atrest's own reads stall, and so do the apiserver's writes.
    let pid = cp.etcd_pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let out = cp.wait(&cmd, child);
    signal(pid, libc::SIGCONT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(err.contains("--resume"), "{err}");
    assert!(
        support::promises_b::checkpoint(&cp).is_some(),
        "the checkpoint is saved: {err}"
    );
    // Once etcd answers again (the apiserver reconnects by itself), resume finishes.
    let out = cp.output(&mut cp.atrest_command(&["reencrypt", "--resume", "--progress=none"]));
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    let after = support::promises_b::stored(&cp, FROZEN).await;
    assert_eq!(after.len(), 1200);
    assert!(
        after.values().all(|(l, _)| l.starts_with(KEY1)),
        "{after:?}"
    );
}

/// `atrest <args…>` aimed at `cp` with no `--state-dir`, on a node whose filesystem is `root`:
/// the default state folder is `root/var/lib/atrest`, the old one `atrest` beside the config.
fn with_default_state(cp: &ControlPlane, root: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = support::cli::command(args);
    cmd.args(cp.atrest_flags());
    cmd.arg(format!("--kubeconfig={}", cp.kubeconfig.display()));
    cmd.env("ATREST_HOST_ROOT", root);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_left_beside_the_config_is_read_there_and_moved_with_its_rotation() {
    let mut cp = plaintext_cluster(20).await;
    let old = cp.config_path.parent().unwrap().join("atrest");
    let root = cp.path().join("node");
    let new = root.join("var/lib/atrest");
    // atrest 0.2 prepared a rotation with its state beside the config (its default then).
    let mut prepare = support::cli::command(&[
        "rotate",
        "prepare",
        "--timeout=60",
        "--provider=secretbox",
        "--key-name=sb1",
    ]);
    prepare.args(cp.atrest_flags());
    prepare.arg(format!("--kubeconfig={}", cp.kubeconfig.display()));
    prepare.arg(format!("--state-dir={}", old.display()));
    cp.run_restarting_expect(prepare, 0).await;
    assert!(old.join("rotation.json").exists());

    // Read where it is, and said so.
    let out = cp.output(&mut with_default_state(&cp, &root, &["status"]));
    let (_, stdout, stderr) = support::cli::split(out);
    assert!(
        stderr.contains(&format!("reading atrest's state in {}", old.display()))
            && stderr.contains(&format!("moves it to {}", new.display())),
        "{stderr}"
    );
    assert!(
        stdout.contains("prepare"),
        "the rotation in progress: {stdout}"
    );
    assert!(!new.exists(), "a read moves nothing");

    // The next rotate step moves it, rotation and snapshot included, and the rotation goes on.
    let snapshots = |d: &std::path::Path| {
        std::fs::read_dir(d.join("snapshots"))
            .map(|e| e.count())
            .unwrap_or(0)
    };
    let before = snapshots(&old);
    assert!(before >= 1, "prepare took a snapshot");
    let promote = with_default_state(&cp, &root, &["rotate", "promote", "--timeout=60"]);
    let out = cp.run_restarting_expect(promote, 0).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "moved atrest's state folder from {} to {}",
            old.display(),
            new.display()
        )),
        "{}",
        support::text(&out)
    );
    assert!(!old.exists(), "nothing left behind");
    assert_eq!(snapshots(&new), before);
    for step in ["reencrypt", "prune"] {
        let mut cmd = with_default_state(&cp, &root, &["rotate", step, "--timeout=60"]);
        if step == "reencrypt" {
            cmd.arg("--progress=none");
        }
        let out = cp.run_restarting(cmd).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{step}: {}",
            support::text(&out)
        );
    }
    let after = support::promises_b::stored(&cp, FROZEN).await;
    assert!(
        after
            .values()
            .all(|(l, _)| l.starts_with("k8s:enc:secretbox:v1:sb1:")),
        "{after:?}"
    );

    // State in both folders: reads say which one they use, writes refuse and change nothing.
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("rotation.json"), b"{}").unwrap();
    let config = std::fs::read(&cp.config_path).unwrap();
    let out = cp.output(&mut with_default_state(
        &cp,
        &root,
        &["rotate", "prepare", "--timeout=60", "--provider=aesgcm"],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("atrest state is in two folders"),
        "{}",
        support::text(&out)
    );
    assert_eq!(std::fs::read(&cp.config_path).unwrap(), config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_refuses_the_rewrite_is_named_with_its_fix() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "open").await;
    create_namespace(&client, "guarded").await;
    create_secrets(&client, "open", &names("s", 10), "open-secret-value").await;
    create_secrets(&client, "guarded", &names("g", 4), "guarded-secret-value").await;
    let hook = support::webhook::DenyingWebhook::install(
        &client,
        "deny.atrest.test",
        "guarded",
        "updates in guarded are frozen",
    )
    .await;
    let k1 = random_key_b64();
    cp.write_config(&secrets_only(&format!(
        "[{{aescbc: {{keys: [{{name: key1, secret: {k1}}}]}}}}, {{identity: {{}}}}]"
    )));
    cp.restart_apiserver(0).await;

    // The apiserver calls the webhook once its informer has the configuration: a dry-run
    // update (which writes nothing) tells when.
    let guarded: kube::Api<Secret> = kube::Api::namespaced(cp.client().await, "guarded");
    let probe = Patch::Merge(serde_json::json!({"metadata": {"annotations": {"probe": "1"}}}));
    let refused = async || {
        guarded
            .patch("g-00000", &PatchParams::default().dry_run(), &probe)
            .await
            .is_err_and(|e| e.to_string().contains("deny.atrest.test"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !refused().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook was never called"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let out = cp.output(&mut cp.atrest_command(&["reencrypt", "--progress=none"]));
    let text = support::text(&out);
    assert_eq!(out.status.code(), Some(1), "not finished: {text}");
    assert!(
        text.contains(
            "refused by admission webhook \"deny.atrest.test\": updates in guarded are frozen"
        ) && text.contains("exempt"),
        "the webhook, its message and the fix: {text}"
    );
    assert!(text.contains("4 given up"), "{text}");
    assert!(hook.reviews() >= 4, "the real webhook was asked");
    let open = "/registry/secrets/open/";
    assert_eq!(
        support::promises_b::count_labelled(&cp, open, KEY1).await,
        10
    );
    assert_eq!(
        support::promises_b::count_labelled(&cp, "/registry/secrets/guarded/", KEY1).await,
        0
    );

    // With the webhook gone (the fix), running again as told finishes.
    hook.uninstall(&cp.client().await).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while refused().await {
        assert!(std::time::Instant::now() < deadline, "the webhook stayed");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let out = cp.output(&mut cp.atrest_command(&["reencrypt", "--resume", "--progress=none"]));
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    assert_eq!(
        support::promises_b::count_labelled(&cp, "/registry/secrets/guarded/", KEY1).await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_mistakes_are_explained_in_one_sentence() {
    let cp = ControlPlane::start(Options {
        etcd_tls: true,
        ..Default::default()
    })
    .await;
    let tls = cp.etcd_tls.clone().unwrap();
    let d = cp.path();
    // A stranger CA and a client certificate it signed; an expired client certificate signed
    // by etcd's own CA.
    let stranger = d.join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    let other = support::tls::make_etcd_tls(&stranger);
    let (pem, key) =
        support::tls::etcd_client_cert(&d.join("etcd-ca.key"), (2020, 1, 1), (2021, 1, 1));
    let (expired, expired_key) = (d.join("expired.crt"), d.join("expired.key"));
    support::write_private(&expired, pem.as_bytes());
    support::write_private(&expired_key, key.as_bytes());

    let scan = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| {
        let mut cmd = support::cli::command(&["scan", "--progress=none"]);
        cmd.arg(format!("--config={}", cp.config_path.display()))
            .arg(format!("--endpoints={}", cp.etcd_endpoint))
            .arg(format!("--cacert={}", ca.display()))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()));
        cp.output(&mut cmd)
    };
    let cases: [(&str, std::process::Output, String); 4] = [
        (
            "a CA that did not sign etcd's certificate",
            scan(&other.ca, &tls.cert, &tls.key),
            format!(
                "etcd's certificate is not signed by the CA in {} (--cacert)",
                other.ca.display()
            ),
        ),
        (
            "a key that is not the certificate's",
            scan(&tls.ca, &tls.cert, &other.key),
            format!(
                "the client key {} (--key) does not belong to the client certificate {} (--cert)",
                other.key.display(),
                tls.cert.display()
            ),
        ),
        (
            "a client certificate etcd's CA did not sign",
            scan(&tls.ca, &other.cert, &other.key),
            format!(
                "etcd refused the client certificate {} (--cert): it is not signed by a CA etcd trusts",
                other.cert.display()
            ),
        ),
        (
            "an expired client certificate",
            scan(&tls.ca, &expired, &expired_key),
            format!(
                "etcd refused the client certificate {} (--cert): it has expired",
                expired.display()
            ),
        ),
    ];
    for (what, out, sentence) in cases {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: {}",
            support::text(&out)
        );
        assert!(err.contains(&sentence), "{what}: {sentence:?} not in {err}");
        // The library's words only with -v.
        for raw in [
            "Custom {",
            "InvalidCertificate",
            "transport error: transport error",
        ] {
            assert!(!err.contains(raw), "{what}: {raw:?} in {err}");
        }
    }
}

#[test]
fn a_file_this_user_may_not_read_says_run_as_root_or_grant_read_access() {
    use std::os::unix::fs::PermissionsExt;
    // A root-only folder, as kubeadm's /etc/kubernetes/pki is, read by an ordinary user.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.path().join("enc.yaml");
    std::fs::write(&file, secrets_only("[{identity: {}}]")).unwrap();
    // Removed when the test ends.
    let bin_dir = tempfile::tempdir().unwrap();
    let mut cmd = if support::proc::is_root() {
        // atrest as `nobody`, from a copy it may execute wherever the checkout is.
        std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = bin_dir.path().join("atrest");
        std::fs::copy(support::cli::atrest_bin(), &bin).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["config", "check", "--config"])
            .arg(&file);
        c
    } else {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
        let mut c = support::cli::command(&["config", "check", "--config"]);
        c.arg(&file);
        c
    };
    for v in support::cli::SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    let out = support::cli::output(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert!(
        err.contains(&format!(
            "cannot read encryption provider configuration {}",
            file.display()
        )) && err.contains("run atrest as root")
            && err.contains("give this user read access"),
        "{err}"
    );
    assert!(!err.contains("pass --config"), "the wrong advice: {err}");
}
