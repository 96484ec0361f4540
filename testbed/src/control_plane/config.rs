//! The encryption config the apiservers load: writing it (every key it holds is registered with
//! the leak check), which file each apiserver reads, and what each has loaded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::ControlPlane;
use crate::files::write_private;
use crate::leak;

impl ControlPlane {
    /// Replaces the encryption config file (atomically, mode 0600). Its keys join the leak
    /// check's list before the file exists.
    pub fn write_config(&self, yaml: &str) {
        leak::register_config(yaml, "an encryption config the test wrote");
        write_private(&self.config_path, yaml.as_bytes());
    }

    /// The apiserver's hash of the current config file, as its reload metric reports it.
    pub fn config_hash(&self) -> String {
        atrest::config::config_hash(&std::fs::read(&self.config_path).unwrap())
    }

    /// The encryption config file apiserver `index` reads (the last flag wins, as in pflag).
    pub fn config_file_of(&self, index: usize) -> PathBuf {
        self.apiservers[index]
            .args
            .iter()
            .rev()
            .find_map(|a| a.strip_prefix("--encryption-provider-config="))
            .map(PathBuf::from)
            .unwrap_or_else(|| self.config_path.clone())
    }

    /// Every config file an apiserver of this cluster reads, the main one first, each once.
    pub fn config_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.config_path.clone()];
        for i in 0..self.apiservers.len() {
            let f = self.config_file_of(i);
            if !files.contains(&f) {
                files.push(f);
            }
        }
        files
    }

    /// The config hash an apiserver reports in `last_config_info`.
    pub async fn loaded_config_hash(&self, index: usize) -> Option<String> {
        let text = self
            .get_text(&self.apiservers[index].url, "/metrics")
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("apiserver_encryption_config_controller_last_config_info{"))
            .and_then(|l| {
                l.split(",hash=\"")
                    .nth(1)
                    .or_else(|| l.split("{hash=\"").nth(1))
            })
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
    }

    /// Waits until apiserver `index` reports the current file's hash (automatic reload polls
    /// once a minute, so allow a little over that).
    pub async fn wait_config_loaded(&self, index: usize, timeout: Duration) {
        let want = self.config_hash();
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.loaded_config_hash(index).await;
            if got.as_deref() == Some(want.as_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apiserver {index} did not load config {want} within {timeout:?} (reports {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
