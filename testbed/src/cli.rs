//! Running atrest: the one place that finds the binary and scrubs the environment
//! ([`command`]), and the one check after every run ([`check_run`]): no registered key or
//! secret value in stdout, stderr, the files named by `--out`, or the state folders.
//! `ControlPlane::atrest`, `atrest_command`, `output`, `wait` and `run_restarting` build on
//! these.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use crate::leak;

/// Settings atrest would otherwise take from the test's own environment.
pub const SCRUBBED_ENV: &[&str] = &[
    "ETCDCTL_ENDPOINTS",
    "ETCDCTL_CACERT",
    "ETCDCTL_CERT",
    "ETCDCTL_KEY",
    "ETCDCTL_USER",
    "ETCDCTL_PASSWORD",
    "ATREST_CONFIG",
    "ATREST_STATE_DIR",
    "ATREST_HOST_ROOT",
    "ATREST_CRASH_AT",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
];

/// The atrest binary Cargo built beside the running test (`target/<profile>/deps/<test>`) or
/// example (`target/<profile>/examples/<example>`); `CARGO_BIN_EXE_atrest` wins when set.
pub fn atrest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_BIN_EXE_atrest") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("atrest")
}

/// `atrest <args…>` with no setting leaking in from the environment. Run it with [`output`] or
/// a `ControlPlane`'s `output`/`wait`, never with `Command::output` (that skips the leak check).
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(atrest_bin());
    cmd.args(args);
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd
}

/// The files a run of atrest may have written, read off its arguments.
#[derive(Clone, Debug, Default)]
pub struct RunFiles {
    /// `--state-dir`, else the default (`ATREST_STATE_DIR`, else `/var/lib/atrest` below
    /// `ATREST_HOST_ROOT`) and the old default it may be moved from (`atrest` beside `--config`).
    pub state_dirs: Vec<PathBuf>,
    /// `--out` files (reports): a run that checked (exit 0 or 1) must have written each.
    pub outputs: Vec<PathBuf>,
    /// `--textfile` folders (node-exporter textfiles): every file in them is searched.
    pub output_dirs: Vec<PathBuf>,
    /// Files that hold keys on purpose and are read for them: `--config`, `--key-archive`.
    pub key_files: Vec<PathBuf>,
    /// How the run is named in a failure (`atrest rotate run`).
    pub name: String,
}

impl RunFiles {
    /// The files and folders `cmd` names or implies (state folders, `--out`, `--textfile`,
    /// `--config`, `--key-archive`), for the leak check.
    pub fn of(cmd: &Command) -> RunFiles {
        let args: Vec<&OsStr> = cmd.get_args().collect();
        let value_of = |flag: &str| -> Vec<PathBuf> {
            let mut v = Vec::new();
            for (i, a) in args.iter().enumerate() {
                let a = a.to_string_lossy();
                if a == flag {
                    if let Some(next) = args.get(i + 1) {
                        v.push(PathBuf::from(next));
                    }
                } else if let Some(rest) = a.strip_prefix(&format!("{flag}=")) {
                    v.push(PathBuf::from(rest));
                }
            }
            v
        };
        let configs = value_of("--config");
        let env_of = |name: &str| {
            cmd.get_envs()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.map(PathBuf::from))
        };
        let mut state_dirs = value_of("--state-dir");
        if state_dirs.is_empty() {
            // The default, and the old default beside the config it may be moved from.
            state_dirs.push(env_of("ATREST_STATE_DIR").unwrap_or_else(|| {
                let root = env_of("ATREST_HOST_ROOT").unwrap_or_else(|| PathBuf::from("/"));
                root.join("var/lib/atrest")
            }));
            state_dirs.extend(
                configs
                    .iter()
                    .filter_map(|c| c.parent().map(|d| d.join("atrest"))),
            );
        }
        let mut key_files = configs;
        key_files.extend(value_of("--key-archive"));
        let name = std::iter::once("atrest".to_string())
            .chain(
                args.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .take_while(|a| !a.starts_with('-'))
                    .take(2),
            )
            .collect::<Vec<_>>()
            .join(" ");
        RunFiles {
            state_dirs,
            outputs: value_of("--out"),
            output_dirs: value_of("--textfile"),
            key_files,
            name,
        }
    }
}

/// The check after every run of atrest: first learn the keys the run may have written (config,
/// archive, backups), then search stdout, stderr, `--out` files and state folders.
pub fn check_run(files: &RunFiles, out: &Output) {
    for f in &files.key_files {
        leak::register_config_file(f);
    }
    for d in &files.state_dirs {
        leak::register_state_dir_keys(d);
    }
    leak::check_bytes(&out.stdout, &format!("stdout of `{}`", files.name));
    leak::check_bytes(&out.stderr, &format!("stderr of `{}`", files.name));
    let checked = matches!(out.status.code(), Some(0 | 1));
    for f in &files.outputs {
        assert!(
            !checked || f.is_file(),
            "`{}` exited {:?} but wrote no --out file {}",
            files.name,
            out.status.code(),
            f.display()
        );
        leak::check_file(f);
    }
    for d in &files.output_dirs {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_file() {
                leak::check_file(&e.path());
            }
        }
    }
    for d in &files.state_dirs {
        leak::check_state_dir(d);
    }
}

/// Runs `cmd` (from [`command`]) to completion and checks it; for runs not aimed at a
/// `ControlPlane` (those use its `output`).
pub fn output(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    check_run(&RunFiles::of(cmd), &out);
    out
}

/// Waits for a spawned atrest (from [`command`]) and checks its output.
pub fn wait(cmd: &Command, child: Child) -> Output {
    let out = child.wait_with_output().expect("wait for atrest");
    check_run(&RunFiles::of(cmd), &out);
    out
}

/// Runs `atrest <args…>` with extra environment `env`; returns (exit code, stdout, stderr).
pub fn atrest(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = command(args);
    cmd.envs(env.iter().copied());
    split(output(&mut cmd))
}

/// (exit code, stdout, stderr) of a finished run.
pub fn split(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command's exit code and output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The entry for `name` in the `resources` list of a scan or report JSON document.
pub fn resource<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources in {doc:#}"))
        .iter()
        .find(|r| r["resource"] == name)
        .unwrap_or_else(|| panic!("no resource {name} in {doc:#}"))
}

/// Check `id` (`ATR-C04`) of a report JSON document.
pub fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {report:#}"))
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn run_output(stdout: &str, stderr: &str) -> Output {
        Output {
            status: std::process::ExitStatus::from_raw(0),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_check_after_a_run_fails_on_a_key_in_stdout_stderr_or_an_out_file() {
        let key = crate::fixtures::random_key_b64();
        leak::register_config(
            &crate::fixtures::secrets_config(&crate::fixtures::aescbc_block(&[("k", &key)])),
            "the run self-test",
        );
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.json");
        std::fs::write(&report, "{}").unwrap();
        let cmd = command(&["report", "--out", report.to_str().unwrap()]);
        let files = RunFiles::of(&cmd);
        assert_eq!(files.outputs, std::slice::from_ref(&report));
        assert_eq!(files.name, "atrest report");
        check_run(&files, &run_output("clean", "clean"));
        for (stdout, stderr) in [(key.as_str(), ""), ("", key.as_str())] {
            let out = run_output(stdout, stderr);
            assert!(std::panic::catch_unwind(|| check_run(&files, &out)).is_err());
        }
        std::fs::write(&report, format!("{{\"k\": \"{key}\"}}")).unwrap();
        let out = run_output("", "");
        assert!(std::panic::catch_unwind(|| check_run(&files, &out)).is_err());
        // A run that exits 0 without writing its --out file fails the check.
        std::fs::remove_file(&report).unwrap();
        assert!(std::panic::catch_unwind(|| check_run(&files, &run_output("", ""))).is_err());
        // A key in a --textfile folder, in URL-safe base64 without padding, is found.
        let textfiles = dir.path().join("textfiles");
        std::fs::create_dir(&textfiles).unwrap();
        let cmd = command(&["scan", "--textfile", textfiles.to_str().unwrap()]);
        let files = RunFiles::of(&cmd);
        check_run(&files, &run_output("", ""));
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        std::fs::write(
            textfiles.join("atrest.prom"),
            format!("x{{k=\"{url}\"}} 1\n"),
        )
        .unwrap();
        assert!(std::panic::catch_unwind(|| check_run(&files, &run_output("", ""))).is_err());
    }

    #[test]
    fn the_state_folders_checked_are_the_default_the_old_one_beside_the_config_or_the_given_one() {
        let cmd = command(&["scan", "--config=/x/enc.yaml", "-o", "json"]);
        let files = RunFiles::of(&cmd);
        assert_eq!(
            files.state_dirs,
            [PathBuf::from("/var/lib/atrest"), PathBuf::from("/x/atrest")]
        );
        let mut rooted = command(&["scan", "--config=/x/enc.yaml"]);
        rooted.env("ATREST_HOST_ROOT", "/host");
        assert_eq!(
            RunFiles::of(&rooted).state_dirs,
            [
                PathBuf::from("/host/var/lib/atrest"),
                PathBuf::from("/x/atrest")
            ]
        );
        let mut given = command(&["scan", "--config=/x/enc.yaml"]);
        given.env("ATREST_STATE_DIR", "/e");
        assert_eq!(
            RunFiles::of(&given).state_dirs,
            [PathBuf::from("/e"), PathBuf::from("/x/atrest")]
        );
        assert_eq!(files.key_files, [PathBuf::from("/x/enc.yaml")]);
        let cmd = command(&["rotate", "run", "--state-dir", "/s", "--config=/x/enc.yaml"]);
        assert_eq!(RunFiles::of(&cmd).state_dirs, [PathBuf::from("/s")]);
        assert_eq!(RunFiles::of(&cmd).name, "atrest rotate run");
    }
}
