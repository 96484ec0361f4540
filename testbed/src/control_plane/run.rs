//! atrest aimed at this control plane, always through `crate::cli` (one binary lookup, one
//! environment scrub, one leak check). Before each check the keys atrest may have written are
//! learnt from this cluster's config files, its state folders and the KMS plugins' wrapping
//! keys; the state folders (`state/`, the one tests pass, and `atrest/`, the default beside the
//! config) are checked after every run, so files left by a killed run are checked by the next.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::ControlPlane;
use crate::cli::{self, RunFiles};
use crate::leak;

impl ControlPlane {
    /// atrest's flags for this cluster: the config file and etcd.
    pub fn atrest_flags(&self) -> Vec<String> {
        let mut v = vec![format!("--config={}", self.config_path.display())];
        v.extend(self.etcd_flags());
        v
    }

    /// The state folder [`Self::atrest_command`] passes.
    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Runs `atrest <args…> <config and etcd flags>` (state in `atrest/` of this cluster's
    /// folder, as `ATREST_STATE_DIR`) and checks it; (exit code, stdout, stderr).
    pub fn atrest(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = cli::command(args);
        cmd.args(self.atrest_flags());
        // The default state folder, kept in this cluster's folder (never the machine's).
        cmd.env("ATREST_STATE_DIR", self.path().join("atrest"));
        cli::split(self.output(&mut cmd))
    }

    /// `atrest <args…>` aimed at this cluster: config, etcd, kubeconfig and the state folder,
    /// with no setting leaking in from the environment. Run it with [`Self::output`],
    /// [`Self::wait`] or [`Self::run_restarting`].
    pub fn atrest_command(&self, args: &[&str]) -> Command {
        let mut cmd = cli::command(args);
        cmd.args(self.atrest_flags());
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        cmd.arg(format!("--state-dir={}", self.state_dir().display()));
        cmd
    }

    /// `atrest rotate <step> <extra…>` aimed at this cluster ([`Self::atrest_command`]), with
    /// `--timeout=60` (it only catches a hang) unless `extra` sets a timeout.
    pub fn rotate_command(&self, step: &str, extra: &[&str]) -> Command {
        let mut cmd = self.atrest_command(&["rotate", step]);
        if !extra.iter().any(|a| a.starts_with("--timeout")) {
            cmd.arg("--timeout=60");
        }
        cmd.args(extra);
        cmd
    }

    /// Runs `cmd` to completion and checks it.
    pub fn output(&self, cmd: &mut Command) -> Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
        self.check_run(RunFiles::of(cmd), &out);
        out
    }

    /// Waits for a spawned `cmd` and checks its output.
    pub fn wait(&self, cmd: &Command, child: Child) -> Output {
        let out = child.wait_with_output().expect("wait for atrest");
        self.check_run(RunFiles::of(cmd), &out);
        out
    }

    /// Checks this cluster's state folders (the checks after each run do this too).
    pub fn check_state_dirs(&self) {
        self.learn_keys();
        for d in self.state_dirs() {
            leak::check_state_dir(&d);
        }
    }

    fn state_dirs(&self) -> [PathBuf; 2] {
        [self.state_dir(), self.path().join("atrest")]
    }

    /// Registers every key this cluster's files hold now: the configs the apiservers read
    /// (atrest edits them), the archives and backups, the KMS test plugins' wrapping keys.
    fn learn_keys(&self) {
        for f in self.config_files() {
            leak::register_config_file(&f);
        }
        for d in self.state_dirs() {
            leak::register_state_dir_keys(&d);
        }
        let Ok(entries) = std::fs::read_dir(self.path()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("kms-") && name.ends_with("-state") {
                register_kms_keys(&e.path());
            }
        }
    }

    fn check_run(&self, mut files: RunFiles, out: &Output) {
        self.learn_keys();
        for d in self.state_dirs() {
            if !files.state_dirs.contains(&d) {
                files.state_dirs.push(d);
            }
        }
        cli::check_run(&files, out);
    }

    /// [`Self::run_restarting`], then asserts atrest exited with `code` (its exit code and output
    /// as the message).
    pub async fn run_restarting_expect(&mut self, cmd: Command, code: i32) -> Output {
        let out = self.run_restarting(cmd).await;
        assert_eq!(out.status.code(), Some(code), "{}", cli::text(&out));
        out
    }

    /// Runs `cmd` to completion, restarting each apiserver whose config file changes (the
    /// restart path of a reload: an admin restarting it, or a static pod being recreated), so
    /// that tests do not wait for the one-minute automatic reload poll. Checked like every run.
    pub async fn run_restarting(&mut self, mut cmd: Command) -> Output {
        let hash = |p: &Path| {
            std::fs::read(p)
                .map(|b| atrest::config::config_hash(&b))
                .unwrap_or_default()
        };
        let mut seen: Vec<String> = (0..self.apiservers.len())
            .map(|i| hash(&self.config_file_of(i)))
            .collect();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out_pipe = child.stdout.take().unwrap();
        let err_pipe = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut { out_pipe }, &mut v).unwrap();
            v
        });
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut { err_pipe }, &mut v).unwrap();
            v
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            for (i, seen_hash) in seen.iter_mut().enumerate() {
                let file = self.config_file_of(i);
                let now = hash(&file);
                if now != *seen_hash && self.apiservers[i].proc.is_some() {
                    // A key atrest added may be gone again by the end of the run.
                    leak::register_config_file(&file);
                    *seen_hash = now;
                    self.restart_apiserver(i).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let out = Output {
            status,
            stdout: out_reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
        };
        self.check_run(RunFiles::of(&cmd), &out);
        out
    }
}

/// The KMS test plugin keeps one raw 32-byte wrapping key per key ID (`<sha256>.key`), and logs
/// every DEK or seed the apiserver had it wrap (`deks.log`, hex, one per line).
fn register_kms_keys(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else {
        return;
    };
    if let Ok(log) = std::fs::read_to_string(state.join("deks.log")) {
        for line in log.lines() {
            if let Ok(bytes) = hex::decode(line.trim()) {
                leak::register_etcd_key_bytes(&bytes, "a KMS DEK or seed the test plugin wrapped");
            }
        }
    }
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "key")
            && let Ok(bytes) = std::fs::read(&p)
        {
            leak::register_key_bytes(&bytes, &format!("KMS wrapping key {}", p.display()));
        }
    }
}
