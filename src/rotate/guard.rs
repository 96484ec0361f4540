//! What the cluster must show before a step goes on: every apiserver runs the expected config,
//! the KMS plugins answer (healthy, and their current key IDs seen by every apiserver), and a
//! canary written through each apiserver lands on the write key.

use super::canary;
use super::{RotateError, Rotator};
use crate::config::{self, EncryptionConfig};
use crate::kms::{self, KmsPlugins, Unreachable};
use crate::kube::converge::{self, Agreement, Convergence};

impl Rotator<'_> {
    /// Waits until every apiserver reports `want`, showing who lags.
    pub async fn wait_converged(&self, want: &str) -> Result<Convergence, RotateError> {
        self.announce_wait(want);
        let mut last: Vec<String> = Vec::new();
        let mut told_copy = false;
        let say = self.say;
        let synced = self.sync.is_some();
        let path = self.config_path.display().to_string();
        let mut update = |c: &Convergence| {
            if c.leases.len() > 1 && !told_copy {
                say(&match synced {
                    false => format!(
                        "{} apiservers hold identity leases: copy {path} to the same path on every control-plane node (by your own means, or with --sync-command); atrest waits until each reports {want}",
                        c.leases.len()
                    ),
                    true => format!(
                        "{} apiservers hold identity leases: the sync command copied {path}; atrest waits until each reports {want}",
                        c.leases.len()
                    ),
                });
                told_copy = true;
            }
            let lines: Vec<String> = c
                .apiservers
                .iter()
                .map(|a| {
                    let version = a
                        .version
                        .as_deref()
                        .map(|v| format!(" ({v})"))
                        .unwrap_or_default();
                    match (&a.config_hash, &a.error, a.too_old()) {
                        (Some(h), _, _) => format!("  {}{version} {h}", a.url),
                        (None, Some(e), _) => format!("  {} {e}", a.url),
                        (None, None, Some(why)) => format!("  {}: {why}", a.url),
                        (None, None, None) => format!("  {}{version} no hash", a.url),
                    }
                })
                .collect();
            if lines != last {
                for l in &lines {
                    say(l);
                }
                last = lines;
            }
        };
        let c = converge::require_config(
            &self.apiservers,
            want,
            Agreement::Every,
            self.wait_timeout,
            &mut update,
        )
        .await?;
        (self.say)(&format!(
            "every apiserver ({}) runs {want}",
            c.apiservers.len()
        ));
        Ok(c)
    }

    /// Refuses, before anything is written, when an apiserver runs a release that cannot report
    /// the config it loaded (Kubernetes before 1.34, read from its `/version`).
    pub(super) async fn refuse_unsupported_apiservers(&self) -> Result<(), RotateError> {
        let c = self.apiservers.survey("").await;
        let old: Vec<String> = c
            .apiservers
            .iter()
            .filter_map(|a| a.too_old().map(|why| format!("{}: {why}", a.name())))
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        Err(RotateError::UnsupportedApiserver { apiservers: old })
    }

    fn announce_wait(&self, want: &str) {
        match self.automatic_reload {
            Some(false) => (self.say)(&format!(
                "kube-apiserver runs without --encryption-provider-config-automatic-reload: restart every kube-apiserver now so it loads {} ({want}); waiting up to {:?}",
                self.config_path.display(),
                self.wait_timeout
            )),
            _ => (self.say)(&format!(
                "waiting for every apiserver to load {want} (automatic reload polls once a minute; up to {:?})",
                self.wait_timeout
            )),
        }
    }

    /// The KMS plugins of a config (none without KMS providers); unreachable is an error.
    pub(super) async fn plugins(
        &self,
        config: &EncryptionConfig,
    ) -> Result<Option<KmsPlugins>, RotateError> {
        let plugins = kms::connect_plugins(config, Unreachable::Fatal)
            .await?
            .plugins;
        for s in plugins.iter().flat_map(|p| p.status()) {
            (self.say)(&format!(
                "KMS plugin {} at {}: healthz {}, key ID {}",
                s.provider, s.endpoint, s.healthz, s.key_id
            ));
        }
        Ok(plugins)
    }

    /// Before a KMS provider writes: its plugin answers `Status` healthy, and every apiserver's
    /// `/readyz/kms-providers` check passes.
    pub(super) async fn kms_healthy(&self, config: &EncryptionConfig) -> Result<(), RotateError> {
        if let Some(p) = self.plugins(config).await?
            && let Some(s) = p.status().into_iter().find(|s| s.healthz != "ok")
        {
            return Err(RotateError::KmsUnhealthy {
                provider: s.provider,
                endpoint: s.endpoint,
                healthz: s.healthz,
            });
        }
        for url in self.apiservers.urls().await {
            let api = self.apiservers.base.for_url(&url)?;
            let (status, body) = api.get_text("/readyz/kms-providers").await?;
            if status != 200 {
                return Err(RotateError::KmsNotReady {
                    url,
                    status,
                    body: body.trim().to_string(),
                });
            }
            (self.say)(&format!("{url}/readyz/kms-providers: ok"));
        }
        Ok(())
    }

    /// Waits until every apiserver has seen each KMS plugin's current key ID; before that, the
    /// apiserver does not consider values on the old key ID stale.
    pub(super) async fn wait_kms_key_ids(&self, plugins: &KmsPlugins) -> Result<(), RotateError> {
        converge::require_kms_key_ids(
            &self.apiservers,
            &plugins.current_key_ids(),
            Agreement::Every,
            self.wait_timeout,
        )
        .await?;
        Ok(())
    }

    /// Writes a canary secret through each apiserver and checks etcd stores it with the write key.
    pub(super) async fn canary(&self) -> Result<(), RotateError> {
        let loaded = config::load(&self.config_path)?;
        let writes = canary::check_write_key(
            &self.apiservers,
            &self.canary_namespace,
            self.etcd,
            &self.etcd_prefix,
            &loaded.config,
        )
        .await?;
        for w in writes {
            (self.say)(&format!(
                "canary through {}: stored as {}",
                w.url, w.stored_as
            ));
        }
        Ok(())
    }
}
