//! What ships: the release tarball `scripts/release.sh` builds (a binary that links only glibc,
//! runs on glibc 2.17, holds no test crash point and scans a real control plane, its checksums,
//! man pages and completions), `atrest` as the kubectl plugin found by the real `kubectl plugin
//! list`, and the completion scripts and man pages generated from the one clap definition.
//!
//! The tarball tests read `dist/`; `scripts/test.sh` runs `scripts/release.sh` before
//! `cargo test`. A missing tarball fails them, naming the script.

use atrest_testbed as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use support::{ControlPlane, Options, create_namespace, create_secrets, names, random_key_b64};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The binary's size budget: 15.4 MB was measured once signed evidence and key custody (the age
/// crate, with SSH recipients) joined; 12.2 MB at 0.2.0.
const MAX_SIZE: u64 = 16_000_000;

fn tarball_name() -> String {
    format!("atrest-{VERSION}-x86_64-linux")
}

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist")
}

/// The tarball, unpacked into a temporary folder: (the folder, the unpacked top folder).
fn unpacked() -> (tempfile::TempDir, PathBuf) {
    let tarball = dist().join(format!("{}.tar.gz", tarball_name()));
    assert!(
        tarball.is_file(),
        "{} is missing: run scripts/release.sh first (scripts/test.sh does)",
        tarball.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", support::text(&out));
    let top = tmp.path().join(tarball_name());
    (tmp, top)
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Checks a `sha256sum` file: every line's file exists in `dir` and has that digest. Returns the
/// names listed.
fn check_sums(sums: &Path, dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(sums)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/release.sh writes it)", sums.display()));
    let mut listed = Vec::new();
    for line in text.lines() {
        let (digest, name) = line
            .split_once("  ")
            .unwrap_or_else(|| panic!("not a sha256sum line in {}: {line:?}", sums.display()));
        assert_eq!(
            sha256_hex(&dir.join(name)),
            digest,
            "{name} does not match {}",
            sums.display()
        );
        listed.push(name.to_string());
    }
    listed
}

/// The highest `GLIBC_x.y` symbol version the binary needs, as read by binutils' objdump.
fn highest_glibc(bin: &Path) -> (u32, u32) {
    let out = Command::new("objdump").arg("-T").arg(bin).output().unwrap();
    assert!(out.status.success(), "objdump -T: {}", support::text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut versions: Vec<(u32, u32)> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next().unwrap_or("0").parse().ok()?;
            Some((major, minor))
        })
        .collect();
    versions.sort();
    *versions
        .last()
        .expect("the binary names no GLIBC_ symbol version: is it dynamically linked?")
}

/// glibc's own shared objects on x86_64 (the C library, its split-off parts and the dynamic
/// loader): what "links only glibc" allows. Not libgcc_s (GCC's runtime) nor anything else.
const GLIBC_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "ld-linux-x86-64.so.2",
];

/// The binary's dynamic `NEEDED` entries, as read by binutils' objdump.
fn needed_libraries(bin: &Path) -> Vec<String> {
    let out = Command::new("objdump").arg("-p").arg(bin).output().unwrap();
    assert!(out.status.success(), "objdump -p: {}", support::text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(|lib| lib.trim().to_string())
        .collect()
}

/// Runs `cmd` and returns (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    support::cli::split(out)
}

fn assert_version_line(stdout: &str) {
    let prefix = format!("atrest {VERSION} (commit ");
    assert!(stdout.starts_with(&prefix), "--version said {stdout:?}");
    let commit = stdout[prefix.len()..].split(';').next().unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "--version names no commit: {stdout:?}"
    );
    let (kube, etcd) = tested_pins();
    assert!(
        stdout.contains(&format!(
            "tested against Kubernetes {}; etcd {})",
            kube.join(", "),
            etcd.join(", ")
        )),
        "--version names other releases than the test bed's pins {kube:?} {etcd:?}: {stdout:?}"
    );
}

/// The releases the test bed builds and tests, read from its pins: the newest pair
/// (`scripts/k8s/kube`, `scripts/k8s/etcd`) and every supported pair of `scripts/k8s/matrix`,
/// each sorted oldest first.
fn tested_pins() -> (Vec<String>, Vec<String>) {
    let k8s = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/k8s");
    // The version a pin folder's go.mod requires of `module`.
    let pin = |folder: &str, module: &str| -> String {
        let go_mod = std::fs::read_to_string(k8s.join(folder).join("go.mod")).unwrap();
        go_mod
            .lines()
            .filter_map(|l| l.trim().strip_prefix(module))
            .filter_map(|rest| rest.split_whitespace().next())
            .find(|v| v.starts_with('v'))
            .unwrap_or_else(|| panic!("scripts/k8s/{folder}/go.mod pins no {module}"))
            .to_string()
    };
    let mut kube = vec![support::K8S_VERSION.to_string()];
    let mut etcd = vec![pin("etcd", "go.etcd.io/etcd/server/v3 ")];
    let matrix = std::fs::read_to_string(k8s.join("matrix")).unwrap();
    for line in matrix.lines().filter(|l| !l.starts_with('#')) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let [k, e] = w[..] {
            kube.push(pin(k, "k8s.io/kubernetes "));
            etcd.push(pin(e, "go.etcd.io/etcd/server/v3 "));
        }
    }
    for list in [&mut kube, &mut etcd] {
        list.iter_mut()
            .for_each(|v| *v = v.trim_start_matches('v').to_string());
        list.sort_by_key(|v| {
            v.split('.')
                .map(|n| n.parse::<u32>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        list.dedup();
    }
    kube.iter_mut().for_each(|v| v.insert(0, 'v'));
    (kube, etcd)
}

#[test]
fn release_tarball_is_portable_complete_and_checksummed() {
    let (_tmp, top) = unpacked();

    // dist/SHA256SUMS covers the tarball (as `sha256sum -c SHA256SUMS` in dist/ checks it).
    let listed = check_sums(&dist().join("SHA256SUMS"), &dist());
    assert_eq!(listed, [format!("{}.tar.gz", tarball_name())]);
    // The SHA256SUMS inside covers every other file in the tarball.
    let inner = check_sums(&top.join("SHA256SUMS"), &top);
    for f in [
        "atrest",
        "LICENSE",
        "README.md",
        "man/atrest.1",
        "man/atrest-scan.1",
        "man/atrest-rotate-run.1",
        "man/atrest-completions.1",
        "completions/atrest.bash",
        "completions/_atrest",
        "completions/atrest.fish",
        "completions/atrest.ps1",
    ] {
        assert!(
            inner.iter().any(|n| n == f),
            "{f} is not in the tarball's SHA256SUMS: {inner:?}"
        );
        let len = std::fs::metadata(top.join(f)).unwrap().len();
        assert!(len > 0, "{f} is empty");
    }
    let license = std::fs::read_to_string(top.join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
    let man = std::fs::read_to_string(top.join("man/atrest.1")).unwrap();
    assert!(man.contains(".TH atrest 1"), "not a man page: {man:.200}");
    for (f, marker) in [
        ("completions/atrest.bash", "complete -F"),
        ("completions/_atrest", "#compdef atrest"),
        ("completions/atrest.fish", "complete -c atrest"),
        ("completions/atrest.ps1", "Register-ArgumentCompleter"),
    ] {
        let text = std::fs::read_to_string(top.join(f)).unwrap();
        assert!(
            text.contains(marker) && text.contains("rotate"),
            "{f} is not a completion script for atrest: {text:.200}"
        );
    }

    // The krew manifest scripts/release.sh filled in names this tarball and its digest.
    let krew = std::fs::read_to_string(dist().join("atrest.yaml")).unwrap();
    let tarball = dist().join(format!("{}.tar.gz", tarball_name()));
    assert!(
        krew.contains(&format!("sha256: {}", sha256_hex(&tarball))),
        "dist/atrest.yaml has not the tarball's sha256:\n{krew}"
    );
    assert!(krew.contains(&format!("from: {}/atrest", tarball_name())));
    assert!(krew.contains(&format!("version: v{VERSION}")));

    // Small, stripped, and needing nothing newer than glibc 2.17.
    let bin = top.join("atrest");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(
        size <= MAX_SIZE,
        "the binary is {size} bytes, over {MAX_SIZE}"
    );
    let (major, minor) = highest_glibc(&bin);
    assert!(
        (major, minor) <= (2, 17),
        "the binary needs GLIBC_{major}.{minor}, newer than 2.17"
    );
    let (_, sections, _) = run(Command::new("objdump").arg("-h").arg(&bin));
    assert!(
        !sections.contains(".debug_info") && !sections.contains(".symtab"),
        "the binary is not stripped"
    );

    let (code, stdout, stderr) = run(Command::new(&bin).arg("--version"));
    assert_eq!(code, 0, "{stderr}");
    assert_version_line(&stdout);
}

/// "The binary links only glibc": every library it asks the dynamic loader for is one of
/// glibc's (an OpenSSL or libgcc_s dependency would break "it needs no other file").
#[test]
fn release_binary_needs_only_glibc_libraries() {
    let (_tmp, top) = unpacked();
    let needed = needed_libraries(&top.join("atrest"));
    assert!(
        needed.iter().any(|l| l == "libc.so.6"),
        "not dynamically linked against glibc: NEEDED {needed:?}"
    );
    let others: Vec<&String> = needed
        .iter()
        .filter(|l| !GLIBC_LIBRARIES.contains(&l.as_str()))
        .collect();
    assert!(
        others.is_empty(),
        "the release binary needs {others:?} besides glibc (NEEDED {needed:?})"
    );
}

/// Test-only crash points (`ATREST_CRASH_AT`, the cargo feature `failpoints`) are not in a
/// release build: the variable's name is nowhere in the shipped binary, while the binary the
/// tests run (built with the feature) holds it, so the search does find it where it is.
#[test]
fn release_binary_has_no_test_crash_points() {
    const NEEDLE: &[u8] = b"ATREST_CRASH_AT";
    let holds = |bin: &Path| {
        std::fs::read(bin)
            .unwrap()
            .windows(NEEDLE.len())
            .any(|w| w == NEEDLE)
    };
    let test_build = support::cli::atrest_bin();
    assert!(
        holds(&test_build),
        "{} (built with failpoints) does not name ATREST_CRASH_AT: the search is wrong",
        test_build.display()
    );
    let (_tmp, top) = unpacked();
    assert!(
        !holds(&top.join("atrest")),
        "the release binary names ATREST_CRASH_AT: it was built with the `failpoints` feature"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_binary_scans_a_real_control_plane() {
    let (_tmp, top) = unpacked();
    let key = random_key_b64();
    let cp = ControlPlane::start(Options {
        config_yaml: Some(support::fixtures::secrets_config(&format!(
            "      - secretbox:\n          keys:\n            - name: k1\n              secret: {key}\n      - identity: {{}}\n"
        ))),
        ..Default::default()
    })
    .await;
    let client = cp.client().await;
    create_namespace(&client, "release").await;
    let created = names("shipped", 3);
    create_secrets(&client, "release", &created, "value").await;

    // The tarball's binary, with the environment scrubbed as for every atrest run, and the
    // output leak-checked.
    let mut cmd = Command::new(top.join("atrest"));
    cmd.args(["scan", "-o", "json", "--resource", "secrets"]);
    for v in support::cli::SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd.args(cp.atrest_flags());
    let out = cp.output(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Exactly the secrets written, all on the one key.
    let secrets = support::resource(&doc, "secrets");
    assert_eq!(secrets["total"], created.len() as u64, "{doc:#}");
    assert_eq!(
        support::scan_json::verdict(secrets, "on_write_key"),
        created.len() as u64,
        "{doc:#}"
    );
    assert_eq!(secrets["write_key"], "secretbox:k1", "{doc:#}");
}

#[test]
fn kubectl_finds_the_plugin_and_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("kubectl-atrest");
    std::os::unix::fs::symlink(support::cli::atrest_bin(), &plugin).unwrap();
    let kubectl = support::bin_dir().join("kubectl");
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", tmp.path().display());

    let (code, stdout, stderr) = run(Command::new(&kubectl)
        .args(["plugin", "list"])
        .env("PATH", &path));
    assert_eq!(code, 0, "kubectl plugin list: {stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim() == plugin.display().to_string()),
        "kubectl plugin list does not list {}:\n{stdout}{stderr}",
        plugin.display()
    );

    let (code, stdout, stderr) = run(Command::new(&kubectl)
        .args(["atrest", "--version"])
        .env("PATH", &path));
    assert_eq!(code, 0, "kubectl atrest --version: {stderr}");
    assert_version_line(&stdout);

    // Its help names it as it is run.
    let (code, stdout, stderr) = run(Command::new(&kubectl)
        .args(["atrest", "scan", "--help"])
        .env("PATH", &path));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Usage: kubectl atrest scan"), "{stdout}");
    let (_, stdout, _) = run(Command::new(&plugin).arg("--help"));
    assert!(
        stdout.contains("Usage: kubectl atrest [OPTIONS] <COMMAND>"),
        "{stdout}"
    );
    assert!(stdout.contains("kubectl plugin"), "{stdout}");
    // Under its own name nothing changes.
    let (_, stdout, _) = support::atrest(&["--help"], &[]);
    assert!(
        stdout.contains("Usage: atrest [OPTIONS] <COMMAND>"),
        "{stdout}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definition() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef atrest"),
        ("fish", "complete -c atrest"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, stdout, stderr) = support::atrest(&["completions", shell], &[]);
        assert_eq!(code, 0, "completions {shell}: {stderr}");
        for word in [marker, "rotate", "reencrypt", "--etcd-prefix"] {
            assert!(stdout.contains(word), "completions {shell} lacks {word:?}");
        }
    }
    let (code, _, stderr) = support::atrest(&["completions", "tcsh"], &[]);
    assert_eq!(code, 2, "{stderr}");

    let (code, stdout, stderr) = support::atrest(&["man"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(".TH atrest 1"), "{stdout:.300}");
    assert!(stdout.contains("rotate"), "{stdout:.300}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let (code, _, stderr) = support::atrest(&["man", "--dir", dir.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    let page = std::fs::read_to_string(dir.join("atrest-rotate-prepare.1")).unwrap();
    assert!(page.contains("\\-\\-provider"), "{page:.300}");
}

/// Every command's `--help` says what it reads, what it writes and how it exits.
#[test]
fn every_command_help_states_reads_writes_and_exit_codes() {
    let commands: &[&[&str]] = &[
        &["config", "check"],
        &["keys", "generate"],
        &["scan"],
        &["status"],
        &["reencrypt"],
        &["rotate", "prepare"],
        &["rotate", "promote"],
        &["rotate", "reencrypt"],
        &["rotate", "prune"],
        &["rotate", "run"],
        &["rotate", "abort"],
        &["report"],
        &["report", "diff"],
        &["exporter"],
        &["completions"],
        &["man"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let (code, stdout, stderr) = support::atrest(&args, &[]);
        assert_eq!(code, 0, "{c:?} --help: {stderr}");
        let lower = stdout.to_lowercase();
        for word in ["reads", "writes", "exit codes"] {
            assert!(
                lower.contains(word),
                "`atrest {} --help` does not say what it {word}:\n{stdout}",
                c.join(" ")
            );
        }
    }
}
