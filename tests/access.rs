//! How atrest reaches etcd and the apiserver, as the README promises it: etcd with password
//! authentication really enabled (`--user`, `ETCDCTL_USER`/`ETCDCTL_PASSWORD`, and the other
//! `ETCDCTL_*` variables), the kubeconfig fallback chain (`--kubeconfig`, `KUBECONFIG`,
//! `~/.kube/config`, `/etc/kubernetes/admin.conf`), the cleanup commands carrying the TLS flags
//! atrest used (run with the real etcdctl), and a PUT refused by RBAC falling back to PATCH.
//! Every run is against the real etcd and kube-apiserver of the test bed.

use atrest_testbed as support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{ControlPlane, Options, create_namespace, create_secrets, names, resource, text};

/// A random secret-looking string (32 hex digits), registered with the leak check so that no
/// run of atrest may print it.
fn password() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    let p = hex::encode(b);
    support::register_value(&p);
    p
}

/// The real etcdctl against `cp`'s etcd with its client certificate, as `user` (`name:password`)
/// when given.
fn etcdctl(cp: &ControlPlane, user: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(cp.bins.join("etcdctl"));
    cmd.args(cp.etcd_flags());
    if let Some(u) = user {
        cmd.arg(format!("--user={u}"));
    }
    cmd.args(args).output().expect("run etcdctl")
}

/// [`etcdctl`], which must succeed; its stdout.
fn etcdctl_ok(cp: &ControlPlane, user: Option<&str>, args: &[&str]) -> String {
    let out = etcdctl(cp, user, args);
    assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number of keys under `prefix` at `revision`, counted by etcdctl as `user`.
fn etcdctl_count(cp: &ControlPlane, user: &str, prefix: &str, revision: i64) -> u64 {
    let out = etcdctl_ok(
        cp,
        Some(user),
        &[
            "get",
            prefix,
            "--prefix",
            "--keys-only",
            &format!("--rev={revision}"),
            "-w",
            "json",
        ],
    );
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    // etcd leaves `count` out of its JSON when it is zero.
    doc["count"].as_u64().unwrap_or(0)
}

/// Every resource's total in a scan document: the census.
fn census_total(doc: &Value) -> u64 {
    doc["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources in {doc:#}"))
        .iter()
        .map(|r| r["total"].as_u64().unwrap())
        .sum()
}

/// secrets under aescbc with `keys` (the first one writes), then identity to read plaintext.
fn aescbc_config(keys: &[(&str, &str)]) -> String {
    support::secrets_config(&format!(
        "{}      - identity: {{}}\n",
        support::aescbc_block(keys)
    ))
}

// ---------------------------------------------------------------------------------------------
// 1. etcd password authentication: --user and the ETCDCTL_* variables
// ---------------------------------------------------------------------------------------------

/// Secrets seeded through the apiserver before etcd's authentication is turned on.
const AUTH_SEEDED: usize = 9;
/// The etcd user that may only read the apiserver's keys.
const READER: &str = "atrest-reader";

/// A control plane whose etcd (TLS with client certificates) has password authentication on:
/// `root` and a read-only user (a role reading the `/registry/` prefix), enabled with the real
/// etcdctl after [`AUTH_SEEDED`] secrets were written through the apiserver. The client
/// certificate (the apiserver's, and the one atrest is given) names no etcd user, so from then
/// on it alone reads nothing and the apiserver writes nothing. Returns the cluster,
/// `root:<password>` and the reader's password.
async fn etcd_with_auth() -> (ControlPlane, String, String) {
    let cp = ControlPlane::start(Options {
        etcd_tls: true,
        config_yaml: Some(aescbc_config(&[("key1", &support::random_key_b64())])),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "auth").await;
    create_secrets(
        &client,
        "auth",
        &names("s", AUTH_SEEDED),
        "a value behind etcd auth",
    )
    .await;
    let root_password = password();
    let reader_password = password();
    let root_new = format!("--new-user-password={root_password}");
    let reader_new = format!("--new-user-password={reader_password}");
    for args in [
        &["user", "add", "root", &root_new][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", READER],
        &[
            "role",
            "grant-permission",
            READER,
            "read",
            "/registry/",
            "--prefix=true",
        ],
        &["user", "add", READER, &reader_new],
        &["user", "grant-role", READER, READER],
        &["auth", "enable"],
    ] {
        etcdctl_ok(&cp, None, args);
    }
    let root = format!("root:{root_password}");
    // Authentication is really on: the same client certificate without a user reads nothing.
    let out = etcdctl(
        &cp,
        None,
        &["get", "/registry/", "--prefix", "--count-only"],
    );
    assert!(
        !out.status.success(),
        "etcd still answers a client with no user: {}",
        text(&out)
    );
    (cp, root, reader_password)
}

/// `ETCDCTL_ENDPOINTS`, `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`, `ETCDCTL_USER` and
/// `ETCDCTL_PASSWORD` for `cp`'s etcd on `cmd`, and `--config`: no etcd flag at all.
fn etcdctl_env(cp: &ControlPlane, cmd: &mut Command, user: &str, password: &str) {
    let tls = cp.etcd_tls.as_ref().expect("etcd with client certificates");
    cmd.arg(format!("--config={}", cp.config_path.display()));
    cmd.env("ETCDCTL_ENDPOINTS", &cp.etcd_endpoint)
        .env("ETCDCTL_CACERT", &tls.ca)
        .env("ETCDCTL_CERT", &tls.cert)
        .env("ETCDCTL_KEY", &tls.key)
        .env("ETCDCTL_USER", user)
        .env("ETCDCTL_PASSWORD", password);
}

/// The read-only user authenticates a scan by `--user name:password` and by `ETCDCTL_USER` and
/// `ETCDCTL_PASSWORD` (with the endpoints and TLS files from `ETCDCTL_ENDPOINTS`,
/// `ETCDCTL_CACERT`, `ETCDCTL_CERT` and `ETCDCTL_KEY`, no flag at all), and the census is exact:
/// every key etcd holds under `/registry/` at the revision read. The same scan with no user is
/// refused, so the access is the user's, not the client certificate's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_authenticates_to_etcd_with_user_flag_and_etcdctl_variables_and_counts_exactly() {
    let (cp, root, reader_password) = etcd_with_auth().await;

    let (code, stdout, stderr) = cp.atrest(&["scan", "-o", "json"]);
    assert_eq!(code, 2, "no user: {stdout}{stderr}");
    assert!(
        stderr.contains("permission denied")
            && stderr.contains("the etcd user needs read access to the prefix"),
        "no user: {stderr}"
    );

    let check = |doc: &Value, how: &str| {
        let secrets = resource(doc, "secrets");
        assert_eq!(
            secrets["total"], AUTH_SEEDED as u64,
            "{how}: the seeded secrets: {secrets:#}"
        );
        assert_eq!(
            support::scan_json::verdict(secrets, "on_write_key"),
            AUTH_SEEDED as u64,
            "{how}: {secrets:#}"
        );
        let revision = doc["revision"].as_i64().unwrap();
        assert_eq!(
            census_total(doc),
            etcdctl_count(&cp, &root, "/registry/", revision),
            "{how}: the census is every key under /registry/ at revision {revision}"
        );
    };

    // --user name:password, with the TLS flags.
    let user = format!("{READER}:{reader_password}");
    let (code, stdout, stderr) = cp.atrest(&["scan", "-o", "json", "--user", &user]);
    assert_eq!(code, 0, "--user: {stdout}{stderr}");
    check(&serde_json::from_str(&stdout).unwrap(), "--user");

    // Only the ETCDCTL_* variables: endpoints, TLS files, user and password.
    let mut cmd = support::cli::command(&["scan", "-o", "json"]);
    etcdctl_env(&cp, &mut cmd, READER, &reader_password);
    let out = cp.output(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "ETCDCTL_*: {}", text(&out));
    check(&serde_json::from_slice(&out.stdout).unwrap(), "ETCDCTL_*");

    // status names each variable as the source of its setting (and never the password: the
    // leak check after every run searches for it).
    let home = tempfile::tempdir().unwrap();
    let mut cmd = support::cli::command(&["status", "-o", "json", "--no-scan"]);
    etcdctl_env(&cp, &mut cmd, READER, &reader_password);
    // No kubeconfig anywhere: this status reads no API.
    cmd.env("HOME", home.path());
    let out = cp.output(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let settings = serde_json::from_slice::<Value>(&out.stdout).unwrap()["settings"].clone();
    let tls = cp.etcd_tls.as_ref().unwrap();
    for (name, value, variable) in [
        (
            "endpoints",
            serde_json::json!([cp.etcd_endpoint]),
            "ETCDCTL_ENDPOINTS",
        ),
        ("cacert", serde_json::json!(tls.ca), "ETCDCTL_CACERT"),
        ("cert", serde_json::json!(tls.cert), "ETCDCTL_CERT"),
        ("key", serde_json::json!(tls.key), "ETCDCTL_KEY"),
        ("user", serde_json::json!(READER), "ETCDCTL_USER"),
    ] {
        assert_eq!(
            settings[name],
            serde_json::json!({"value": value, "source": {"kind": "env", "detail": variable}}),
            "{name}: {settings:#}"
        );
    }
}

/// A wrong password (in `--user` or in `ETCDCTL_PASSWORD`) is refused by etcd: exit 2, a message
/// that says authentication failed and which settings hold the credentials (not the endpoints or
/// TLS files, which were right), and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_etcd_password_exits_2_with_a_clear_message_that_never_prints_it() {
    let (cp, _root, reader_password) = etcd_with_auth().await;
    let wrong = password();

    let refused = |out: Output, how: &str| {
        let (code, stdout, stderr) = support::cli::split(out);
        assert_eq!(code, 2, "{how}: {stdout}{stderr}");
        assert_eq!(stdout, "", "{how}: no scan document");
        assert!(
            stderr.contains(&format!(
                "cannot connect to etcd at {}: authentication failed",
                cp.etcd_endpoint
            )) && stderr.contains("check --user / ETCDCTL_USER and ETCDCTL_PASSWORD"),
            "{how}: {stderr}"
        );
        assert!(
            !stderr.contains("check --endpoints"),
            "{how}: the hint points at the credentials only: {stderr}"
        );
        // The leak check after each run searches for both passwords too (raw, hex, base64).
        for p in [&wrong, &reader_password] {
            assert!(
                !stdout.contains(p.as_str()) && !stderr.contains(p.as_str()),
                "{how}: a password was printed: {stderr}"
            );
        }
    };

    let mut cmd = support::cli::command(&["scan", "-o", "json", "--user"]);
    cmd.arg(format!("{READER}:{wrong}"));
    cmd.args(cp.atrest_flags());
    refused(cp.output(&mut cmd), "--user");

    let mut cmd = support::cli::command(&["scan", "-o", "json"]);
    etcdctl_env(&cp, &mut cmd, READER, &wrong);
    refused(cp.output(&mut cmd), "ETCDCTL_PASSWORD");
}

// ---------------------------------------------------------------------------------------------
// 2. The kubeconfig chain
// ---------------------------------------------------------------------------------------------

/// A kubeconfig for `server` with `cp`'s CA and admin token.
fn write_kubeconfig(cp: &ControlPlane, path: &Path, server: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    support::write_private(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
            cp.ca_path(0).display(),
            cp.admin_token
        )
        .as_bytes(),
    );
}

/// The four places a kubeconfig is taken from, in the order atrest must try them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Candidate {
    Flag,
    Env,
    Home,
    AdminConf,
}

/// `atrest status -o json --no-scan` (config and etcd flags, plus what `cmd` was given), which
/// must exit 0; its document.
fn status(cp: &ControlPlane, mut cmd: Command) -> Value {
    cmd.args(cp.atrest_flags());
    let out = cp.output(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `status` took the kubeconfig at `path` from `source`, and the one apiserver it reports is
/// the real one, reached: it answered with its config hash.
fn assert_took(cp: &ControlPlane, doc: &Value, path: &Path, source: Value, case: &str) {
    assert_eq!(
        doc["settings"]["kubeconfig"],
        serde_json::json!({"value": path, "source": source}),
        "{case}"
    );
    let reached = &doc["apiservers"]["apiservers"];
    assert_eq!(
        reached.as_array().map(Vec::len),
        Some(1),
        "{case}: {reached:#}"
    );
    assert_eq!(reached[0]["url"], cp.url(), "{case}: {reached:#}");
    assert_eq!(
        reached[0]["config_hash"],
        cp.config_hash(),
        "{case}: the apiserver answered: {reached:#}"
    );
}

/// Which kubeconfig `atrest status` takes when the candidates `present` exist, each but
/// `winner` aimed at a port of its own that nothing listens on. Paths below `root` are the
/// node's (`ATREST_HOST_ROOT`), `~` included, as every default path.
fn assert_kubeconfig_taken(
    cp: &ControlPlane,
    root: &Path,
    present: &[Candidate],
    winner: Candidate,
) {
    let runs = cp.path().join(format!("chain-{winner:?}"));
    let path = |c: Candidate| match c {
        Candidate::Flag => runs.join("flag.kubeconfig"),
        Candidate::Env => runs.join("env.kubeconfig"),
        Candidate::Home => root.join("home/auditor/.kube/config"),
        Candidate::AdminConf => root.join("etc/kubernetes/admin.conf"),
    };
    // The node's files of an earlier case are gone unless present now.
    for c in [Candidate::Home, Candidate::AdminConf] {
        if !present.contains(&c) && path(c).exists() {
            std::fs::remove_file(path(c)).unwrap();
        }
    }
    for &c in present {
        let server = match c == winner {
            true => cp.url().to_string(),
            false => format!("https://127.0.0.1:{}", support::free_port()),
        };
        write_kubeconfig(cp, &path(c), &server);
    }
    let mut cmd = support::cli::command(&["status", "-o", "json", "--no-scan"]);
    if present.contains(&Candidate::Flag) {
        cmd.arg(format!("--kubeconfig={}", path(Candidate::Flag).display()));
    }
    if present.contains(&Candidate::Env) {
        cmd.env("KUBECONFIG", path(Candidate::Env));
    }
    cmd.env("HOME", "/home/auditor")
        .env("ATREST_HOST_ROOT", root);
    let source = match winner {
        Candidate::Flag => serde_json::json!({"kind": "flag", "detail": "--kubeconfig"}),
        Candidate::Env => serde_json::json!({"kind": "env", "detail": "KUBECONFIG"}),
        Candidate::Home | Candidate::AdminConf => serde_json::json!({"kind": "default"}),
    };
    let case = format!("{winner:?} wins over {present:?}");
    assert_took(cp, &status(cp, cmd), &path(winner), source, &case);
}

/// The API side follows kubectl: `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`, else
/// `/etc/kubernetes/admin.conf` (below `ATREST_HOST_ROOT`). Each step is taken while every later
/// one is present too, aimed at a closed port: the apiserver `status` reaches shows which file
/// won. Without `ATREST_HOST_ROOT`, `~` is the `HOME` atrest runs with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_flag_then_kubeconfig_variable_then_home_then_admin_conf() {
    use Candidate::*;
    let cp = ControlPlane::start(Options::default()).await;
    let root = tempfile::tempdir().unwrap();
    let chain = [Flag, Env, Home, AdminConf];
    for (i, &winner) in chain.iter().enumerate() {
        assert_kubeconfig_taken(&cp, root.path(), &chain[i..], winner);
    }

    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(".kube/config");
    write_kubeconfig(&cp, &file, cp.url());
    let mut cmd = support::cli::command(&["status", "-o", "json", "--no-scan"]);
    cmd.env("HOME", home.path());
    let doc = status(&cp, cmd);
    let source = serde_json::json!({"kind": "default"});
    assert_took(&cp, &doc, &file, source, "HOME, no host root");
}

// ---------------------------------------------------------------------------------------------
// 3. Cleanup commands carry the TLS flags
// ---------------------------------------------------------------------------------------------

/// Secrets rewritten from plaintext to aescbc: each leaves a plaintext revision in history.
const RESIDUE_SEEDED: usize = 10;

/// The etcdctl commands `scan --history` prints to drop residue (JSON `cleanup` and the table)
/// carry the endpoints and the TLS files atrest used, from flags or from `ETCDCTL_*`, so that
/// they run as printed: the real etcdctl runs each, and the residue is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_cleanup_commands_carry_the_tls_flags_and_run_as_printed() {
    let mut cp = ControlPlane::start(Options {
        etcd_tls: true,
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "residue").await;
    create_secrets(
        &client,
        "residue",
        &names("s", RESIDUE_SEEDED),
        "a plaintext value left in history",
    )
    .await;
    cp.write_config(&aescbc_config(&[("key1", &support::random_key_b64())]));
    cp.restart_apiserver(0).await;
    let out = cp.output(&mut cp.atrest_command(&["reencrypt", "--progress=none"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // With the etcd flags: the JSON names exactly the compaction and the defragmentation, each
    // with the endpoint and the three TLS files atrest was given.
    let (code, stdout, stderr) = cp.atrest(&["scan", "--history", "-o", "json"]);
    assert_eq!(code, 0, "residue warns by default: {stdout}{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc["history"]["residue"], RESIDUE_SEEDED as u64,
        "one plaintext revision per rewritten secret: {:#}",
        doc["history"]
    );
    let rev = doc["history"]["compact_to_drop_residue"].as_i64().unwrap();
    let tls = cp.etcd_tls.clone().unwrap();
    let connection = format!(
        "etcdctl --endpoints={} --cacert={} --cert={} --key={}",
        cp.etcd_endpoint,
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display()
    );
    let expected = [
        format!("{connection} compact {rev} --physical"),
        format!("{connection} defrag"),
    ];
    assert_eq!(doc["cleanup"], serde_json::json!(expected), "{doc:#}");

    // The table prints the same commands, each on a line of its own.
    let (code, table, stderr) = cp.atrest(&["scan", "--history"]);
    assert_eq!(code, 0, "{table}{stderr}");
    for c in &expected {
        assert!(
            table.lines().any(|l| l.trim() == c),
            "{c:?} is not a line of the table:\n{table}"
        );
    }

    // With the ETCDCTL_* variables instead of flags, the commands carry the same flags.
    let mut cmd = support::cli::command(&["scan", "--history", "-o", "json"]);
    cmd.arg(format!("--config={}", cp.config_path.display()));
    cmd.env("ETCDCTL_ENDPOINTS", &cp.etcd_endpoint)
        .env("ETCDCTL_CACERT", &tls.ca)
        .env("ETCDCTL_CERT", &tls.cert)
        .env("ETCDCTL_KEY", &tls.key);
    let out = cp.output(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let from_env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_env["cleanup"], serde_json::json!(expected));

    // etcd asks for a client certificate: without the flags the command cannot run...
    let bare = format!(
        "etcdctl --endpoints={} compact {rev} --physical",
        cp.etcd_endpoint
    );
    let out = run_printed(&cp, &bare);
    assert!(
        !out.status.success(),
        "{bare} ran without TLS: {}",
        text(&out)
    );
    // ...and as printed, the real etcdctl runs each one.
    for c in &expected {
        let out = run_printed(&cp, c);
        assert!(out.status.success(), "{c}: {}", text(&out));
    }
    let (code, stdout, stderr) = cp.atrest(&["scan", "--history", "-o", "json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let after: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(after["history"]["residue"], 0, "{:#}", after["history"]);
    assert_eq!(
        after["history"]["from_revision"], rev,
        "{:#}",
        after["history"]
    );
}

/// Runs a printed command with the shell, the test bed's etcdctl first on `PATH`.
fn run_printed(cp: &ControlPlane, command: &str) -> Output {
    Command::new("sh")
        .args(["-c", command])
        .env(
            "PATH",
            format!("{}:{}", cp.bins.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 4. A PUT refused by RBAC falls back to PATCH
// ---------------------------------------------------------------------------------------------

/// Stale secrets rewritten by `atrest reencrypt`, one request in flight so that every count is
/// exact (with more in flight, several PUTs can be on their way before the first refusal).
const RBAC_SEEDED: usize = 12;

/// The secrets counters of `atrest reencrypt -o json` run with `kubeconfig`, which must exit 0.
fn reencrypt_secrets(cp: &ControlPlane, kubeconfig: &Path) -> Value {
    let mut cmd = support::cli::command(&[
        "reencrypt",
        "-o",
        "json",
        "--progress=none",
        "--concurrency=1",
    ]);
    cmd.args(cp.atrest_flags());
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()));
    cmd.arg(format!("--state-dir={}", cp.state_dir().display()));
    let out = cp.output(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["remaining"], 0, "{report:#}");
    report["resources"]["secrets"].clone()
}

/// Every secret of namespace `ns` as etcd stores it starts with `prefix`; their number.
async fn stored_with_prefix(cp: &ControlPlane, ns: &str, prefix: &[u8]) -> usize {
    let mut etcd = cp.etcd().await;
    let resp = etcd
        .get(
            format!("/registry/secrets/{ns}/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    for kv in resp.kvs() {
        assert!(
            kv.value().starts_with(prefix),
            "{} is not stored under {}",
            kv.key_str().unwrap(),
            String::from_utf8_lossy(prefix)
        );
    }
    resp.kvs().len()
}

/// `reencrypt` needs only `patch`: with `update` it PUTs the stored protobuf object, and when
/// RBAC refuses the PUT (a service account allowed get, list and patch on secrets, not update)
/// it falls back to PATCH for the rest of the run, finishes with exit 0, and every secret ends on
/// the write key in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_refused_by_rbac_falls_back_to_patch_and_every_secret_ends_on_the_write_key() {
    let mut cp = ControlPlane::start(Options::default()).await;
    let client = cp.client().await;
    create_namespace(&client, "rbac").await;
    create_secrets(
        &client,
        "rbac",
        &names("s", RBAC_SEEDED),
        "a value rewritten by patch",
    )
    .await;
    assert_eq!(
        cp.count_prefix("/registry/secrets/").await,
        RBAC_SEEDED as i64,
        "the only secrets of the cluster"
    );
    let (key1, key2) = (support::random_key_b64(), support::random_key_b64());

    // The admin (allowed to update): every stale secret takes the PUT.
    cp.write_config(&aescbc_config(&[("key1", &key1)]));
    cp.restart_apiserver(0).await;
    let admin = reencrypt_secrets(&cp, &cp.kubeconfig);
    let n = RBAC_SEEDED as u64;
    assert_eq!(
        (
            &admin["targeted"],
            &admin["rewritten"],
            &admin["rewritten_by_put"],
            &admin["put_writes"],
            &admin["writes"]
        ),
        (&n.into(), &n.into(), &n.into(), &n.into(), &n.into()),
        "with update, the PUT: {admin:#}"
    );
    assert_eq!(
        stored_with_prefix(&cp, "rbac", b"k8s:enc:aescbc:v1:key1:").await,
        RBAC_SEEDED
    );

    // A service account that may get, list and patch secrets, and not update them.
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "rewriter", "namespace": "rbac"}
    }));
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "atrest-patch-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "patch"]}]
    }));
    cp.kubectl_apply(&serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "atrest-patch-secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "atrest-patch-secrets"},
        "subjects": [{"kind": "ServiceAccount", "name": "rewriter", "namespace": "rbac"}]
    }));
    let account = "system:serviceaccount:rbac:rewriter";
    for (verb, answer) in [("patch", "yes"), ("update", "no")] {
        let out = cp.kubectl(&["auth", "can-i", verb, "secrets", "-A", "--as", account]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            answer,
            "can {account} {verb} secrets? {}",
            text(&out)
        );
    }
    // Its token from the TokenRequest API, in a kubeconfig of its own.
    let out = cp.kubectl(&["create", "token", "rewriter", "-n", "rbac", "--duration=1h"]);
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    support::register_value(&token);
    let kubeconfig = cp.path().join("kubeconfig-rewriter");
    support::write_private(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: rewriter\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: rewriter\ncurrent-context: c\n",
            cp.url(),
            cp.ca_path(0).display()
        )
        .as_bytes(),
    );

    // A new write key: every secret is stale again. The first PUT is refused (the one attempt
    // that is not a rewrite), and every secret is rewritten by PATCH.
    cp.write_config(&aescbc_config(&[("key2", &key2), ("key1", &key1)]));
    cp.restart_apiserver(0).await;
    let patched = reencrypt_secrets(&cp, &kubeconfig);
    assert_eq!(
        (
            &patched["targeted"],
            &patched["rewritten"],
            &patched["rewritten_by_put"],
            &patched["put_writes"],
            &patched["writes"],
            &patched["given_up"]
        ),
        (
            &n.into(),
            &n.into(),
            &0.into(),
            &1.into(),
            &(n + 1).into(),
            &0.into()
        ),
        "without update, one refused PUT then PATCH: {patched:#}"
    );
    assert_eq!(
        stored_with_prefix(&cp, "rbac", b"k8s:enc:aescbc:v1:key2:").await,
        RBAC_SEEDED,
        "every secret on the write key, in etcd"
    );
}
