//! The kube-apiserver static-pod manifest: the flags atrest needs from it, and the container's
//! `hostPath` mounts that say where the paths it names are on the host.

use crate::fsutil::permission_hint;
use std::path::{Path, PathBuf};

/// Flags read from a kube-apiserver static-pod manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestFlags {
    /// `--encryption-provider-config`: where this apiserver reads its `EncryptionConfiguration`.
    pub encryption_provider_config: Option<String>,
    /// `--etcd-servers`, comma-separated as the apiserver takes it.
    pub etcd_servers: Option<String>,
    /// `--etcd-cafile`: CA bundle that signs the etcd server certificates.
    pub etcd_cafile: Option<String>,
    /// `--etcd-certfile`: the apiserver's etcd client certificate.
    pub etcd_certfile: Option<String>,
    /// `--etcd-keyfile`: the key of that client certificate.
    pub etcd_keyfile: Option<String>,
    /// `--etcd-prefix`: where under etcd's key space the apiserver stores objects.
    pub etcd_prefix: Option<String>,
    /// `--encryption-provider-config-automatic-reload`: whether the apiserver re-reads the config
    /// file by itself (polled once a minute) instead of needing a restart.
    pub automatic_reload: Option<bool>,
    /// The container's `hostPath` mounts: where the paths above are on the host.
    pub mounts: Vec<HostMount>,
}

/// One `volumeMounts` entry of the apiserver container backed by a `hostPath` volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    /// The volume's name.
    pub volume: String,
    /// `mountPath`: where the container sees it.
    pub mount_path: PathBuf,
    /// The volume's `hostPath.path`, joined with the mount's `subPath` when it has one.
    pub host_path: PathBuf,
}

impl ManifestFlags {
    /// Maps a path the apiserver container sees to the host path, through the mount whose
    /// `mountPath` is the longest leading part of it (nested mounts: the inner one wins). `None`
    /// when no hostPath mount covers it (the path is then taken as it is).
    pub fn host_path(&self, container: &Path) -> Option<(PathBuf, &HostMount)> {
        self.mounts
            .iter()
            .filter_map(|m| {
                container
                    .strip_prefix(&m.mount_path)
                    .ok()
                    .map(|rest| (m, rest.to_path_buf()))
            })
            .max_by_key(|(m, _)| m.mount_path.components().count())
            .map(|(m, rest)| {
                let host = if rest.as_os_str().is_empty() {
                    m.host_path.clone()
                } else {
                    m.host_path.join(rest)
                };
                (host, m)
            })
    }
}

#[derive(serde::Deserialize)]
struct Pod {
    spec: PodSpec,
}
#[derive(serde::Deserialize)]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
}
#[derive(serde::Deserialize)]
struct Container {
    #[serde(default)]
    name: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default, rename = "volumeMounts")]
    volume_mounts: Vec<VolumeMount>,
}
#[derive(serde::Deserialize)]
struct VolumeMount {
    name: String,
    #[serde(rename = "mountPath")]
    mount_path: String,
    #[serde(default, rename = "subPath")]
    sub_path: Option<String>,
}
#[derive(serde::Deserialize)]
struct Volume {
    name: String,
    #[serde(default, rename = "hostPath")]
    host_path: Option<HostPathSource>,
}
#[derive(serde::Deserialize)]
struct HostPathSource {
    path: String,
}

/// Why the kube-apiserver manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest exists (or was named) but could not be read.
    #[error(
        "cannot read the kube-apiserver manifest {path}: {source}{}",
        permission_hint(source)
    )]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not YAML of a Pod, or has no `kube-apiserver` container.
    #[error("{path}: not a kube-apiserver static-pod manifest: {message}")]
    Parse {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Reads the apiserver's flags out of its static-pod manifest.
pub fn read_manifest(path: &Path) -> Result<ManifestFlags, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let pod: Pod = serde_saphyr::from_str(&text).map_err(|e| ManifestError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let container = pod
        .spec
        .containers
        .iter()
        .find(|c| {
            c.name == "kube-apiserver" || c.command.iter().any(|a| a.ends_with("kube-apiserver"))
        })
        .ok_or_else(|| ManifestError::Parse {
            path: path.to_path_buf(),
            message: "no kube-apiserver container".into(),
        })?;
    let argv: Vec<String> = container
        .command
        .iter()
        .chain(&container.args)
        .cloned()
        .collect();
    let mut out = ManifestFlags {
        mounts: host_mounts(container, &pod.spec.volumes),
        ..Default::default()
    };
    read_flags(&argv, &mut out);
    Ok(out)
}

/// The container's volume mounts that a `hostPath` volume backs, with their host paths.
fn host_mounts(container: &Container, volumes: &[Volume]) -> Vec<HostMount> {
    container
        .volume_mounts
        .iter()
        .filter_map(|vm| {
            let volume = volumes.iter().find(|v| v.name == vm.name)?;
            let host = PathBuf::from(&volume.host_path.as_ref()?.path);
            Some(HostMount {
                volume: vm.name.clone(),
                mount_path: PathBuf::from(&vm.mount_path),
                host_path: match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => host.join(sub),
                    None => host,
                },
            })
        })
        .collect()
}

/// Takes the flags atrest needs out of the apiserver's command line (`--flag=value` or
/// `--flag value`), ignoring every other flag.
fn read_flags(argv: &[String], out: &mut ManifestFlags) {
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (
                arg.clone(),
                argv.get(i + 1).filter(|v| !v.starts_with("--")).cloned(),
            ),
        };
        if !arg.contains('=') && value.is_some() {
            i += 1;
        }
        let slot = match name.as_str() {
            "--encryption-provider-config" => &mut out.encryption_provider_config,
            "--etcd-servers" => &mut out.etcd_servers,
            "--etcd-cafile" => &mut out.etcd_cafile,
            "--etcd-certfile" => &mut out.etcd_certfile,
            "--etcd-keyfile" => &mut out.etcd_keyfile,
            "--etcd-prefix" => &mut out.etcd_prefix,
            "--encryption-provider-config-automatic-reload" => {
                out.automatic_reload = Some(value.as_deref().is_none_or(|v| v == "true"));
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        *slot = value;
        i += 1;
    }
}
