//! The cluster context every command starts from: settings resolved from flags, environment and
//! the apiserver manifest (each with its source), the config file they name, and the etcd
//! target; and the scan of the covered resources, defined once for scan, status and report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::GroupResource;
use crate::config::{self, ConfigError, LoadedConfig};
use crate::etcd::dbfile::DbError;
use crate::etcd::{EtcdError, EtcdTarget};
use crate::keys::archive::ArchiveError;
use crate::kms::{self, KmsError, KmsPlugins, Unreachable};
use crate::kube::converge::{
    Agreement, ConvergeError, NotConverged, require_config, require_kms_key_ids,
};
use crate::kube::{Apiservers, KubeError};
use crate::state::{StateDirError, StateError};
mod census;
pub mod drill;
pub mod keybook;
pub mod manifest;
pub mod settings;
pub mod survey;

use settings::{Flags, Settings, SettingsError};

/// Why a command could not get its bearings.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// One of atrest's own snapshots could not be removed.
    #[error("cannot remove snapshot {path}: {source}")]
    RemoveSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The rotation state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The state folder cannot be moved to, or chosen as, the one to write.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// An etcd data file (`--snapshot`) could not be read; it was not changed.
    #[error(transparent)]
    DbFile(#[from] DbError),
    /// Flags, environment or manifest could not be resolved.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// No config path anywhere.
    #[error(
        "no EncryptionConfiguration given, and {manifest} names no --encryption-provider-config"
    )]
    NoConfig {
        /// The manifest looked at.
        manifest: String,
    },
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config path came from the manifest through a hostPath volume, and the host file
    /// cannot be read.
    #[error(
        "cannot read the encryption provider configuration {host}: {source}\n  the apiserver reads it as {container}; {manifest} maps that through hostPath volume {volume}"
    )]
    MappedConfig {
        /// The host path atrest tried.
        host: PathBuf,
        /// The path the apiserver container sees.
        container: PathBuf,
        /// The manifest.
        manifest: PathBuf,
        /// The volume that maps it.
        volume: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The config path is the distribution's default, and the file cannot be read: most often
    /// secrets encryption is not turned on.
    #[error(
        "cannot read {path}, where {distribution} writes its encryption provider configuration once secrets encryption is on (`{distribution} secrets-encrypt status` tells): {source}"
    )]
    DistributionConfig {
        /// The file atrest tried.
        path: PathBuf,
        /// The distribution whose default it is.
        distribution: settings::Distribution,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// An etcd TLS file the manifest names through a hostPath volume cannot be read on the host.
    #[error(
        "cannot read the {what} {host}: {source}\n  the apiserver reads it as {container}; {manifest} maps that through hostPath volume {volume}"
    )]
    MappedEtcdFile {
        /// Which file (`client certificate (--cert)`).
        what: &'static str,
        /// The host path atrest tried.
        host: PathBuf,
        /// The path the apiserver container sees.
        container: PathBuf,
        /// The manifest.
        manifest: PathBuf,
        /// The volume that maps it.
        volume: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// etcd could not be reached or read.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The scan stopped part way.
    #[error("scan of etcd at {target} stopped: {source}")]
    ScanStopped {
        /// Where etcd is.
        target: String,
        /// Why.
        #[source]
        source: EtcdError,
    },
    /// A KMS plugin the scan needs is unreachable.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The key archive could not be read.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Sealed files could not be opened with the identities or shares given.
    #[error(transparent)]
    Custody(#[from] crate::keys::custody::CustodyError),
    /// A wildcard where one resource is expected.
    #[error("{0} is a wildcard; name a resource such as secrets or foos.example.com")]
    Wildcard(String),
    /// A step would edit a config file that the distribution writes and tracks itself.
    #[error(
        "{path} is managed by {distribution}: atrest does not edit it; rotate its keys with `{}`",
        distribution.rotate_command()
    )]
    ManagedConfig {
        /// The distribution that writes the file.
        distribution: settings::Distribution,
        /// The config file.
        path: PathBuf,
    },
}

/// Refuses a step that would edit the config file when a distribution manages it (RKE2, k3s):
/// the distribution rewrites the file from its own state and would undo atrest's edit or lose
/// a key, so the admin must use the distribution's command. Reading (scan, status, report) is
/// never refused.
pub fn refuse_managed_config(s: &Settings) -> Result<(), ClusterError> {
    match (s.config_managed_by(), &s.config) {
        (Some(distribution), Some(config)) => Err(ClusterError::ManagedConfig {
            distribution,
            path: config.value.clone(),
        }),
        _ => Ok(()),
    }
}

/// Resolved settings, the config they name, and how to reach etcd.
pub struct Context {
    /// Every setting with its source.
    pub settings: Settings,
    /// The EncryptionConfiguration, validated as the apiserver does.
    pub config: LoadedConfig,
    /// etcd endpoints, TLS files and key prefix.
    pub target: EtcdTarget,
}

/// What to scan, and how.
#[derive(Clone, Debug, Default)]
pub struct ScanRequest {
    /// Only these resources (empty: every covered resource, see
    /// [`crate::model::covered_resources`]).
    pub resources: Vec<GroupResource>,
    /// Decrypt every value.
    pub verify: bool,
    /// At most this many names per resource and verdict (counts stay exact).
    pub max_list: usize,
    /// Retired keys to try last, besides the state folder's key archive.
    pub key_archive: Option<PathBuf>,
    /// The state folder: its key archive, config backups and rotation state name the keys
    /// that values are stored under when their resource's config does not have them.
    pub state_dir: Option<PathBuf>,
    /// How long etcd may stay unreachable mid-scan.
    pub patience: Duration,
    /// Also read the older values etcd keeps (and, live, each member's db size; in a file, its
    /// free pages).
    pub history: bool,
    /// With `verify`, a KMS plugin that cannot be asked leaves its values unverified (counted,
    /// and named in [`crate::model::census::ScanReport::kms_not_asked`]) instead of stopping the scan: the report's
    /// choice, whose check then says what was not decrypted.
    pub kms_may_be_unreachable: bool,
    /// Identity files (age or SSH) that open the sealed key archive and backups.
    pub identities: Vec<PathBuf>,
    /// Share files (`atrest keys share-unwrap`) that open files sealed K of N.
    pub shares: Vec<PathBuf>,
}

/// `--resource` of `rotate prepare`/`schedule`: names of config rules to encrypt, where a
/// wildcard (`*.example.com`) is a rule as the apiserver accepts it (unlike a scan's
/// `--resource`, which names stored objects: [`parse_resources`]).
pub fn parse_rule_resources(names: &[String]) -> Vec<GroupResource> {
    names.iter().map(|r| GroupResource::parse(r)).collect()
}

/// Parses `--resource` values, refusing wildcards (a scan of one resource names it).
pub fn parse_resources(names: &[String]) -> Result<Vec<GroupResource>, ClusterError> {
    names
        .iter()
        .map(|r| {
            let gr = GroupResource::parse(r);
            if gr.is_wildcard() {
                Err(ClusterError::Wildcard(gr.config_name()))
            } else {
                Ok(gr)
            }
        })
        .collect()
}

/// The config path the settings name, loaded and validated.
pub fn load_config(s: &Settings) -> Result<LoadedConfig, ClusterError> {
    let setting = s.config.as_ref().ok_or_else(|| ClusterError::NoConfig {
        manifest: s
            .manifest
            .as_ref()
            .map(|m| m.display().to_string())
            .unwrap_or_else(|| settings::DEFAULT_MANIFEST.to_string()),
    })?;
    match (config::load(&setting.value), &setting.source) {
        (
            Err(ConfigError::Read { path, source }),
            settings::Source::ManifestVolume {
                manifest,
                container,
                volume,
            },
        ) => Err(ClusterError::MappedConfig {
            host: path,
            container: container.clone(),
            manifest: manifest.clone(),
            volume: volume.clone(),
            source,
        }),
        (Err(ConfigError::Read { path, source }), settings::Source::Distribution(distribution)) => {
            Err(ClusterError::DistributionConfig {
                path,
                distribution: *distribution,
                source,
            })
        }
        (result, _) => Ok(result?),
    }
}

/// The config's KMS plugins: unreachable ones are fatal when values must be opened
/// (`required`), and otherwise a warning (KMS values are then classified by provider and key ID).
pub async fn plugins(
    config: &config::EncryptionConfig,
    required: bool,
) -> Result<Option<KmsPlugins>, KmsError> {
    Ok(plugins_or_warnings(config, required).await?.0)
}

/// [`plugins`], with the message of each plugin that could not be asked (none when required).
pub async fn plugins_or_warnings(
    config: &config::EncryptionConfig,
    required: bool,
) -> Result<(Option<KmsPlugins>, Vec<String>), KmsError> {
    let connected = kms::connect_plugins(
        config,
        if required {
            Unreachable::Fatal
        } else {
            Unreachable::Warn
        },
    )
    .await?;
    let mut not_asked = Vec::new();
    for e in connected.warnings {
        tracing::warn!("{e}; KMS values are still classified by provider and key ID");
        not_asked.push(e.to_string());
    }
    Ok((connected.plugins, not_asked))
}

/// Why a write was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// An apiserver runs another config than the file: its writes would use another write key.
    #[error("{path} is {hash}, but not every apiserver has loaded it yet: {source}")]
    ConfigNotLoaded {
        /// The config file.
        path: PathBuf,
        /// Its hash.
        hash: String,
        /// Which apiservers lag.
        #[source]
        source: NotConverged,
    },
    /// An apiserver has not seen a KMS plugin's current key ID: it would not consider values
    /// on the old one stale, and write nothing.
    #[error(transparent)]
    KmsKeyIds(#[from] ConvergeError),
}

/// The one check before the first rewrite: no apiserver reports another config than the
/// file, and none has missed a KMS plugin's current key ID. Apiservers that report nothing are
/// let through (the result is proven in etcd afterwards).
pub async fn write_preflight(
    apiservers: &Apiservers,
    loaded: &LoadedConfig,
    plugins: Option<&KmsPlugins>,
) -> Result<(), PreflightError> {
    let c = require_config(
        apiservers,
        &loaded.hash,
        Agreement::NoneDiffers,
        Duration::ZERO,
        &mut |_| {},
    )
    .await
    .map_err(|source| PreflightError::ConfigNotLoaded {
        path: loaded.path.clone(),
        hash: loaded.hash.clone(),
        source,
    })?;
    for a in c.apiservers.iter().filter(|a| a.config_hash.is_none()) {
        tracing::warn!(
            "{}: {}; the result is still proven in etcd",
            a.name(),
            a.reported()
        );
    }
    if let Some(p) = plugins {
        require_kms_key_ids(
            apiservers,
            &p.current_key_ids(),
            Agreement::NoneDiffers,
            Duration::ZERO,
        )
        .await?;
    }
    Ok(())
}

/// The apiservers the settings reach: the kubeconfig they name (or the in-cluster config) and
/// `explicit` URLs. One connection path for every command and the exporter.
pub async fn apiservers(settings: &Settings, explicit: &[String]) -> Result<Apiservers, KubeError> {
    let kubeconfig = settings.kubeconfig.as_ref().map(|k| k.value.as_path());
    Ok(Apiservers {
        base: crate::kube::connect(kubeconfig).await?,
        explicit: explicit.to_vec(),
    })
}

impl Context {
    /// Resolves the settings and loads the config they name.
    pub fn resolve(flags: &Flags) -> Result<Context, ClusterError> {
        let settings = settings::resolve(flags)?;
        let config = load_config(&settings)?;
        let target = etcd_target(&settings);
        Ok(Context {
            settings,
            config,
            target,
        })
    }

    /// The state folder: `explicit`, else the default (see [`crate::state::dir`]).
    pub fn state_dir(&self, explicit: Option<&Path>) -> crate::state::StateDir {
        crate::state::StateDir::resolve(
            explicit,
            &self.config.path,
            self.settings.host_root.as_deref(),
        )
    }

    /// The apiservers: the kubeconfig's client (or the in-cluster one) to discover them, and
    /// the `--apiserver` URLs to ask directly ([`apiservers`]).
    pub async fn apiservers(&self, explicit: &[String]) -> Result<Apiservers, KubeError> {
        apiservers(&self.settings, explicit).await
    }

    /// The apiservers when atrest has a way to ask them (a kubeconfig found or given, in-cluster,
    /// or `explicit` URLs); `None` otherwise, and when the kubeconfig does not load (said as a
    /// warning: what they run is then left out, never guessed).
    pub async fn apiservers_to_ask(&self, explicit: &[String]) -> Option<Apiservers> {
        if self.settings.kubeconfig.is_none()
            && explicit.is_empty()
            && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none()
        {
            return None;
        }
        match self.apiservers(explicit).await {
            Ok(apiservers) => Some(apiservers),
            Err(e) => {
                tracing::warn!("apiservers not asked which config they run: {e}");
                None
            }
        }
    }

    /// A client for etcd.
    pub async fn etcd(&self) -> Result<etcd_client::Client, ClusterError> {
        self.target.connect().await.map_err(|e| match e {
            // Which setting each TLS file came from: a flag, the environment, the manifest.
            EtcdError::Tls {
                endpoints,
                problem,
                raw,
            } => {
                let s = &self.settings;
                let from: Vec<String> = [
                    ("--cacert", &s.cacert),
                    ("--cert", &s.cert),
                    ("--key", &s.key),
                ]
                .into_iter()
                .filter_map(|(flag, v)| v.as_ref().map(|v| format!("{flag} from {}", v.source)))
                .collect();
                let problem = if from.is_empty() {
                    problem
                } else {
                    format!("{problem}\n  ({})", from.join("; "))
                };
                ClusterError::Etcd(EtcdError::Tls {
                    endpoints,
                    problem,
                    raw,
                })
            }
            e => self.name_mapped_file(e),
        })
    }

    /// An unreadable etcd TLS file that the manifest names through a hostPath volume is
    /// reported with both paths.
    fn name_mapped_file(&self, e: EtcdError) -> ClusterError {
        let EtcdError::File { what, path, source } = e else {
            return e.into();
        };
        let s = &self.settings;
        let mapped = [&s.cacert, &s.cert, &s.key]
            .into_iter()
            .flatten()
            .find(|setting| setting.value == path)
            .and_then(|setting| match &setting.source {
                settings::Source::ManifestVolume {
                    manifest,
                    container,
                    volume,
                } => Some((manifest.clone(), container.clone(), volume.clone())),
                _ => None,
            });
        match mapped {
            Some((manifest, container, volume)) => ClusterError::MappedEtcdFile {
                what,
                host: path,
                container,
                manifest,
                volume,
                source,
            },
            None => EtcdError::File { what, path, source }.into(),
        }
    }

    /// The manifest's `--encryption-provider-config-automatic-reload`, when there is a manifest.
    pub fn manifest_reload(&self) -> Option<bool> {
        self.manifest().map(|m| m.automatic_reload.unwrap_or(false))
    }

    /// The manifest sets `--encryption-provider-config`, when there is a manifest.
    pub fn manifest_sets_config(&self) -> Option<bool> {
        self.manifest()
            .map(|m| m.encryption_provider_config.is_some())
    }

    fn manifest(&self) -> Option<manifest::ManifestFlags> {
        self.settings
            .manifest
            .as_ref()
            .and_then(|m| manifest::read_manifest(m).ok())
    }
}

/// How to reach etcd, from resolved settings.
pub fn etcd_target(s: &Settings) -> EtcdTarget {
    EtcdTarget {
        endpoints: s.endpoints.value.clone(),
        cacert: s.cacert.as_ref().map(|v| v.value.clone()),
        cert: s.cert.as_ref().map(|v| v.value.clone()),
        key: s.key.as_ref().map(|v| v.value.clone()),
        credentials: s.credentials.clone(),
        prefix: s.etcd_prefix.value.clone(),
    }
}
