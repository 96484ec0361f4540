//! Copying the config to the other control-plane nodes. With `--sync-command`, every config
//! write runs the admin's command after the file is written and before the write is committed
//! (see [`super::journal`]): the rotation only moves on once the command succeeded. The command
//! runs through `sh -c` exactly as given; atrest puts nothing into its text. It learns the file's
//! path and hash from its environment ([`ENV_FILE`], [`ENV_SHA256`], [`ENV_STEP`]) and never sees
//! key material, only where the file is.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The config file's absolute path, in the command's environment.
pub const ENV_FILE: &str = "ATREST_CONFIG_FILE";
/// The config file's sha256 (64 hex digits, as `sha256sum` prints it), in the command's
/// environment; the apiservers report it as `sha256:<hex>`.
pub const ENV_SHA256: &str = "ATREST_CONFIG_SHA256";
/// The rotation step whose write is being copied (`prepare`, `promote`, `prune`, `abort`).
pub const ENV_STEP: &str = "ATREST_STEP";

/// How much of the command's output an error or a message carries (its end).
const OUTPUT_LIMIT: usize = 4096;

/// The admin's command that copies the config file to every other control-plane node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncCommand {
    /// The command line as the admin gave it; run with `sh -c`, never edited.
    pub command: String,
    /// How long it may run before atrest stops it and the step stops.
    pub timeout: Duration,
}

/// What a successful sync printed (stdout then stderr, trimmed to its last 4 KiB).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncOutput {
    /// Its output, for the admin to read.
    pub output: String,
}

/// How the sync command ended, when it did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// It exited with this non-zero status.
    Exited(i32),
    /// A signal ended it.
    Signal(i32),
    /// `sh` could not be started.
    CannotStart(String),
    /// It ran longer than the timeout and was killed.
    TimedOut(Duration),
}

impl std::fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncOutcome::Exited(code) => write!(f, "exited with status {code}"),
            SyncOutcome::Signal(s) => write!(f, "was ended by signal {s}"),
            SyncOutcome::CannotStart(e) => write!(f, "could not be started ({e})"),
            SyncOutcome::TimedOut(t) => write!(f, "did not finish within {t:?} and was killed"),
        }
    }
}

/// The sync command did not succeed: the file is written on this node, the write is not
/// committed, and the step stops before anything else changes. Running the step again runs the
/// command again before it goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "sync command `{command}` {outcome} after atrest wrote {} ({hash}); the other control-plane nodes may still have the previous file{}",
    .path.display(),
    if .stderr.is_empty() { String::new() } else {
        format!("\n  its stderr:\n{}", .stderr.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"))
    }
)]
pub struct SyncFailed {
    /// The command line, as the admin gave it.
    pub command: String,
    /// How it ended.
    pub outcome: SyncOutcome,
    /// Its stderr (the last 4 KiB, trimmed). It only ever learnt the file's path.
    pub stderr: String,
    /// The config file it was to copy.
    pub path: PathBuf,
    /// `sha256:<hex>` of that file.
    pub hash: String,
}

impl SyncCommand {
    /// Runs the command for the file at `path` whose hash is `hash` (`sha256:<hex>`), written by
    /// `step`; it succeeds when the command exits 0 within the timeout.
    pub fn run(&self, path: &Path, hash: &str, step: &str) -> Result<SyncOutput, SyncFailed> {
        let failed = |outcome: SyncOutcome, stderr: String| SyncFailed {
            command: self.command.clone(),
            outcome,
            stderr,
            path: path.to_path_buf(),
            hash: hash.to_string(),
        };
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let sha = hash.strip_prefix("sha256:").unwrap_or(hash);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .env(ENV_FILE, &absolute)
            .env(ENV_SHA256, sha)
            .env(ENV_STEP, step)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(SyncOutcome::CannotStart(e.to_string()), String::new()))?;
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        let status: ExitStatus = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Its output may be held open by what it started: not waited for.
                    return Err(failed(SyncOutcome::TimedOut(self.timeout), String::new()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    return Err(failed(
                        SyncOutcome::CannotStart(format!("waiting for it: {e}")),
                        String::new(),
                    ));
                }
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if status.success() {
            let parts: Vec<&str> = [stdout.trim(), stderr.trim()]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
            return Ok(SyncOutput {
                output: tail(&parts.join("\n")),
            });
        }
        use std::os::unix::process::ExitStatusExt;
        let outcome = match (status.code(), status.signal()) {
            (Some(code), _) => SyncOutcome::Exited(code),
            (None, Some(s)) => SyncOutcome::Signal(s),
            (None, None) => SyncOutcome::Exited(-1),
        };
        Err(failed(outcome, tail(stderr.trim())))
    }
}

/// Reads a pipe to its end on a thread, so that a full pipe never blocks the command.
fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The last [`OUTPUT_LIMIT`] bytes of `s`, cut at a character boundary.
fn tail(s: &str) -> String {
    if s.len() <= OUTPUT_LIMIT {
        return s.to_string();
    }
    let mut start = s.len() - OUTPUT_LIMIT;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(command: &str) -> SyncCommand {
        SyncCommand {
            command: command.into(),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_command_learns_the_path_hash_and_step_from_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("enc.yaml");
        std::fs::write(&file, "x").unwrap();
        let out = sync(&format!(
            "echo \"${ENV_FILE} ${ENV_SHA256} ${ENV_STEP}\"; echo to-stderr >&2"
        ))
        .run(&file, "sha256:abc", "promote")
        .unwrap();
        assert_eq!(
            out.output,
            format!("{} abc promote\nto-stderr", file.display())
        );
    }

    #[test]
    fn a_failing_command_is_named_with_its_status_and_stderr() {
        let e = sync("echo cannot reach node-b >&2; exit 3")
            .run(Path::new("/etc/enc.yaml"), "sha256:abc", "prepare")
            .unwrap_err();
        assert_eq!(e.outcome, SyncOutcome::Exited(3));
        assert_eq!(e.stderr, "cannot reach node-b");
        let text = e.to_string();
        assert!(
            text.contains(
                "sync command `echo cannot reach node-b >&2; exit 3` exited with status 3"
            ),
            "{text}"
        );
        assert!(text.contains("cannot reach node-b\n") || text.ends_with("cannot reach node-b"));
    }

    #[test]
    fn a_command_that_hangs_is_killed_at_the_timeout() {
        let e = SyncCommand {
            command: "exec sleep 30".into(),
            timeout: Duration::from_millis(300),
        }
        .run(Path::new("/etc/enc.yaml"), "sha256:abc", "prepare")
        .unwrap_err();
        assert_eq!(e.outcome, SyncOutcome::TimedOut(Duration::from_millis(300)));
    }
}
