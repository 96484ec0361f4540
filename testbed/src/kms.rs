//! The KMS v2 test plugin (`scripts/k8s/kube/kmsplugin`): a real gRPC KeyManagementService on a
//! unix socket, whose current key ID a test changes by rewriting a file. Its wrapping keys (one
//! per key ID, in its state folder) are registered with the leak check after every atrest run.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ControlPlane;
use crate::files::write_private;
use crate::proc::Proc;

/// The KMS v2 test plugin (built from its Go module), serving on a Unix socket.
pub struct KmsPlugin {
    /// The provider name configs use.
    pub name: String,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// The file whose content is the key ID it reports (changed to rotate).
    pub key_id_file: PathBuf,
    state_dir: PathBuf,
    bin: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl KmsPlugin {
    /// The config's `endpoint`: `unix://` + the socket.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Makes the plugin report `id` as its key ID from the next request on.
    pub fn set_key_id(&self, id: &str) {
        write_private(&self.key_id_file, id.as_bytes());
    }

    /// Starts the plugin and waits for its socket.
    pub async fn start(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--key-id-file={}", self.key_id_file.display()))
            .arg(format!("--state-dir={}", self.state_dir.display()));
        let mut p = Proc::spawn("kms-plugin", cmd, self.log.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            if let Some(status) = p.exited() {
                panic!("kms-plugin exited with {status}:\n{}", p.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "kms-plugin socket not ready:\n{}",
                p.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.proc = Some(p);
    }

    /// The plugin's process, while it runs.
    /// The DEKs and seeds the plugin wrapped so far (from its `deks.log`): the leak check
    /// searches every run's output for each of them.
    pub fn wrapped(&self) -> Vec<Vec<u8>> {
        std::fs::read_to_string(self.state_dir.join("deks.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| hex::decode(l.trim()).ok())
            .collect()
    }

    /// The plugin's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Stops the plugin (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl ControlPlane {
    /// Starts a KMS v2 test plugin named `name` with current key ID `key_id`.
    pub async fn start_kms_plugin(&self, name: &str, key_id: &str) -> KmsPlugin {
        let mut p = KmsPlugin {
            name: name.to_string(),
            socket: self.path().join(format!("kms-{name}.sock")),
            key_id_file: self.path().join(format!("kms-{name}.key-id")),
            state_dir: self.path().join(format!("kms-{name}-state")),
            bin: self.bins.join("kms-plugin"),
            log: self.path().join(format!("kms-{name}.log")),
            proc: None,
        };
        p.set_key_id(key_id);
        p.start().await;
        p
    }
}
