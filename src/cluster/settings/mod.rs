//! Resolved settings: flags, environment and the kube-apiserver's static-pod manifest merged
//! into one value that remembers where each setting came from (`atrest status` prints it).
//! Commands take these, never raw flags.

use std::fmt;
use std::path::{Path, PathBuf};

/// The manifest kubeadm writes; read when present.
pub const DEFAULT_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
/// etcdctl's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";
/// The admin kubeconfig kubeadm writes on control-plane nodes.
pub const DEFAULT_ADMIN_KUBECONFIG: &str = "/etc/kubernetes/admin.conf";
/// kube-apiserver's default `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/registry";
/// Where the node's filesystem is, when it is not `/`: every default path atrest probes (the
/// manifests, the distributions' files, the default kubeconfigs) and every host path a manifest
/// names is taken below it, so a node layout can be tested as a directory tree. Paths given by
/// flag or environment are taken as they are.
pub const HOST_ROOT_ENV: &str = "ATREST_HOST_ROOT";
/// The static pod RKE2 writes for its apiserver; probed when kubeadm's is absent.
pub const RKE2_MANIFEST: &str = "/var/lib/rancher/rke2/agent/pod-manifests/kube-apiserver.yaml";
/// Where RKE2 keeps the config it writes (`rke2 secrets-encrypt`); the manifest names it.
pub const RKE2_CONFIG: &str = "/var/lib/rancher/rke2/server/cred/encryption-config.json";
/// The admin kubeconfig RKE2 writes.
pub const RKE2_KUBECONFIG: &str = "/etc/rancher/rke2/rke2.yaml";
/// A k3s server's data folder: its presence (with no apiserver manifest) marks a k3s server,
/// whose apiserver runs inside the k3s process and has no manifest to read.
pub const K3S_SERVER_DIR: &str = "/var/lib/rancher/k3s/server";
/// The config k3s writes (`k3s secrets-encrypt`) and passes to its apiserver.
pub const K3S_CONFIG: &str = "/var/lib/rancher/k3s/server/cred/encryption-config.json";
/// Where k3s's embedded etcd listens for clients.
pub const K3S_ENDPOINT: &str = "https://127.0.0.1:2379";
/// The folder of the etcd client certificate k3s's apiserver uses.
pub const K3S_ETCD_TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls/etcd";
/// The admin kubeconfig k3s writes.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// A Kubernetes distribution whose layout differs from kubeadm's and that manages its own
/// encryption config file: atrest reads there, but leaves editing the file to the distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// RKE2: the apiserver is a static pod under `/var/lib/rancher/rke2/agent/pod-manifests`.
    Rke2,
    /// k3s with embedded etcd: the apiserver runs inside the k3s process, with no manifest.
    K3s,
}

impl Distribution {
    /// The distribution's own command for rotating the keys of the file it manages.
    pub fn rotate_command(self) -> &'static str {
        match self {
            Distribution::Rke2 => "rke2 secrets-encrypt rotate-keys",
            Distribution::K3s => "k3s secrets-encrypt rotate-keys",
        }
    }

    /// The config file the distribution writes, on a node whose filesystem is at `root`.
    fn config_path(self, root: &HostRoot) -> PathBuf {
        root.join(match self {
            Distribution::Rke2 => RKE2_CONFIG,
            Distribution::K3s => K3S_CONFIG,
        })
    }

    fn kubeconfig(self) -> &'static str {
        match self {
            Distribution::Rke2 => RKE2_KUBECONFIG,
            Distribution::K3s => K3S_KUBECONFIG,
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distribution::Rke2 => "rke2",
            Distribution::K3s => "k3s",
        })
    }
}

/// The node's filesystem root ([`HOST_ROOT_ENV`]); `/` when unset.
#[derive(Clone, Debug, Default)]
struct HostRoot(Option<PathBuf>);

impl HostRoot {
    fn from_env() -> HostRoot {
        HostRoot(env(HOST_ROOT_ENV).map(PathBuf::from))
    }

    /// `path` (absolute, on the node) as this process sees it.
    fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match &self.0 {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }
}

/// Where a setting's value came from, so `atrest status` can show why it used a path or endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag, by its name (`--endpoints`).
    Flag(String),
    /// An environment variable, by its name (`ETCDCTL_ENDPOINTS`).
    Env(String),
    /// A flag of the kube-apiserver found in this static-pod manifest.
    Manifest(PathBuf),
    /// A path flag of the kube-apiserver in this static-pod manifest, mapped from the path the
    /// container sees to the host path through the pod's `volumeMounts` and `hostPath` volumes.
    ManifestVolume {
        /// The manifest.
        manifest: PathBuf,
        /// The path as the apiserver container sees it (what the flag says).
        container: PathBuf,
        /// The volume that maps it.
        volume: String,
    },
    /// Nothing was given; atrest's built-in default (the same as the apiserver's or etcdctl's).
    Default,
    /// Nothing was given; where this distribution puts it.
    Distribution(Distribution),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag {name}"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::Manifest(p) => write!(f, "manifest {}", p.display()),
            Source::ManifestVolume {
                manifest,
                container,
                volume,
            } => write!(
                f,
                "manifest {} ({} in the container, hostPath volume {volume})",
                manifest.display(),
                container.display()
            ),
            Source::Default => f.write_str("default"),
            Source::Distribution(d) => write!(f, "{d} default"),
        }
    }
}

/// One resolved setting and where it came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Setting<T> {
    /// The value atrest will use.
    pub value: T,
    /// Which of flag, environment, manifest or default supplied it.
    pub source: Source,
}

/// What the user gave on the command line (all optional).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--config`: the `EncryptionConfiguration` file to read.
    pub config: Option<PathBuf>,
    /// `--apiserver-manifest`: the kube-apiserver static-pod manifest to take defaults from.
    pub apiserver_manifest: Option<PathBuf>,
    /// `--endpoints`: comma-separated etcd endpoints.
    pub endpoints: Option<String>,
    /// `--cacert`: CA bundle that signs the etcd server certificates.
    pub cacert: Option<PathBuf>,
    /// `--cert`: client certificate for etcd.
    pub cert: Option<PathBuf>,
    /// `--key`: private key of the etcd client certificate.
    pub key: Option<PathBuf>,
    /// `--user`: etcd user, as `USER` or `USER:PASSWORD`.
    pub user: Option<String>,
    /// `--etcd-prefix`: the apiserver's `--etcd-prefix`, if it is not `/registry`.
    pub etcd_prefix: Option<String>,
    /// `--kubeconfig`: how to reach the apiserver for rewrites.
    pub kubeconfig: Option<PathBuf>,
}

pub use crate::etcd::Credentials;

/// Every setting a command needs, resolved once, each remembering its source.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Settings {
    /// The `EncryptionConfiguration` file; `None` when no flag, environment or manifest names one.
    pub config: Option<Setting<PathBuf>>,
    /// The static-pod manifest that was read, if any.
    pub manifest: Option<PathBuf>,
    /// The etcd endpoints to scan; etcdctl's default when nothing else says.
    pub endpoints: Setting<Vec<String>>,
    /// CA bundle that signs the etcd server certificates.
    pub cacert: Option<Setting<PathBuf>>,
    /// Client certificate presented to etcd.
    pub cert: Option<Setting<PathBuf>>,
    /// Private key of the client certificate.
    pub key: Option<Setting<PathBuf>>,
    /// etcd user and password; never serialised, so reports and `status --json` cannot leak it.
    #[serde(skip)]
    pub credentials: Option<Credentials>,
    /// The etcd user name alone, for display.
    pub user: Option<Setting<String>>,
    /// The key prefix the apiserver stores under (`--etcd-prefix`).
    pub etcd_prefix: Setting<String>,
    /// The kubeconfig used to talk to the apiserver.
    pub kubeconfig: Option<Setting<PathBuf>>,
    /// The distribution whose layout was found (RKE2's manifest, a k3s server folder); `None`
    /// on kubeadm and hand-made nodes, and when a manifest is named by flag elsewhere.
    pub distribution: Option<Distribution>,
    /// [`HOST_ROOT_ENV`], when set: the folder every default and manifest path was taken below.
    pub host_root: Option<PathBuf>,
}

impl Settings {
    /// The distribution that writes the config file in use, if one does: the file came from
    /// its manifest or its default, or the flag names that same file. atrest must then not
    /// edit the file (the distribution would overwrite it, or lose track of its keys).
    pub fn config_managed_by(&self) -> Option<Distribution> {
        let d = self.distribution?;
        let config = self.config.as_ref()?;
        match &config.source {
            Source::Flag(_) | Source::Env(_) => {
                let root = HostRoot(self.host_root.clone());
                let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => a == b,
                };
                same(&config.value, &d.config_path(&root)).then_some(d)
            }
            _ => Some(d),
        }
    }
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The apiserver manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// `--user` had no password and `ETCDCTL_PASSWORD` is unset.
    #[error("--user must be USER or USER:PASSWORD (password may also come from ETCDCTL_PASSWORD)")]
    BadUser,
}

use super::manifest::{ManifestError, ManifestFlags, read_manifest};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Picks the first of flag, environment, manifest, default, and says which.
fn pick<T>(
    flag: Option<(T, &str)>,
    env_var: Option<(T, &str)>,
    manifest: Option<(T, &Path)>,
) -> Option<Setting<T>> {
    if let Some((value, name)) = flag {
        return Some(Setting {
            value,
            source: Source::Flag(name.into()),
        });
    }
    if let Some((value, name)) = env_var {
        return Some(Setting {
            value,
            source: Source::Env(name.into()),
        });
    }
    manifest.map(|(value, path)| Setting {
        value,
        source: Source::Manifest(path.to_path_buf()),
    })
}

/// Merges flags, `ETCDCTL_*`/`KUBECONFIG` and the manifest. An explicit `--apiserver-manifest`
/// must exist; the default one is used only when present.
pub fn resolve(flags: &Flags) -> Result<Settings, SettingsError> {
    resolve_in(flags, HostRoot::from_env())
}

/// [`resolve`] below a given host root, so tests can point it at a directory tree.
fn resolve_in(flags: &Flags, root: HostRoot) -> Result<Settings, SettingsError> {
    let manifest_path = find_manifest(flags, &root);
    let distribution = detect_distribution(manifest_path.as_deref(), &root);
    let manifest = match &manifest_path {
        Some(p) => read_manifest(p)?,
        None => ManifestFlags::default(),
    };
    let layout = Layout {
        root: &root,
        manifest: &manifest,
        manifest_path: manifest_path.as_deref(),
        k3s: distribution == Some(Distribution::K3s),
    };
    let config = layout.config(flags);
    let endpoints = layout.endpoints(flags);
    let cacert = layout.path_setting(
        &flags.cacert,
        "--cacert",
        "ETCDCTL_CACERT",
        &manifest.etcd_cafile,
        "server-ca.crt",
    );
    let cert = layout.path_setting(
        &flags.cert,
        "--cert",
        "ETCDCTL_CERT",
        &manifest.etcd_certfile,
        "client.crt",
    );
    let key = layout.path_setting(
        &flags.key,
        "--key",
        "ETCDCTL_KEY",
        &manifest.etcd_keyfile,
        "client.key",
    );
    let etcd_prefix = layout.etcd_prefix(flags);
    let (user, credentials) = resolve_user(flags)?;
    let kubeconfig = pick(
        flags.kubeconfig.clone().map(|v| (v, "--kubeconfig")),
        env("KUBECONFIG").map(|v| (PathBuf::from(v), "KUBECONFIG")),
        None,
    )
    .or_else(|| default_kubeconfig(&root, distribution));
    Ok(Settings {
        config,
        manifest: manifest_path,
        endpoints,
        cacert,
        cert,
        key,
        credentials,
        user,
        etcd_prefix,
        kubeconfig,
        distribution,
        host_root: root.0,
    })
}

/// The manifest to read: the flag's, else the first of kubeadm's and RKE2's that is there.
fn find_manifest(flags: &Flags, root: &HostRoot) -> Option<PathBuf> {
    match &flags.apiserver_manifest {
        Some(p) => Some(p.clone()),
        // A manifest this user may not even look at (a root-only folder) is there all the same:
        // reading it then says so, instead of carrying on as if there were none.
        None => [DEFAULT_MANIFEST, RKE2_MANIFEST]
            .into_iter()
            .map(|p| root.join(p))
            .find(|p| match std::fs::metadata(p) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
            }),
    }
}

/// Which distribution's layout the node has, told by the manifest's folder or k3s's data folder.
fn detect_distribution(manifest_path: Option<&Path>, root: &HostRoot) -> Option<Distribution> {
    match manifest_path {
        // RKE2 keeps its static pods in `<data-dir>/agent/pod-manifests`, kubeadm in
        // `/etc/kubernetes/manifests`; the folder tells them apart, also for a custom data-dir.
        Some(p) if p.ends_with("agent/pod-manifests/kube-apiserver.yaml") => {
            Some(Distribution::Rke2)
        }
        Some(_) => None,
        None => root
            .join(K3S_SERVER_DIR)
            .is_dir()
            .then_some(Distribution::K3s),
    }
}

/// What the node says beyond flags and environment: its manifest and k3s's defaults.
struct Layout<'a> {
    /// The node's filesystem root.
    root: &'a HostRoot,
    /// The apiserver flags read from the manifest (empty when there is none).
    manifest: &'a ManifestFlags,
    /// The manifest they were read from.
    manifest_path: Option<&'a Path>,
    /// Whether the node is a k3s server, whose defaults then apply.
    k3s: bool,
}

impl Layout<'_> {
    /// k3s's own place for a file, on a k3s server.
    fn k3s_default(&self, path: &str) -> Option<Setting<PathBuf>> {
        self.k3s.then(|| Setting {
            value: self.root.join(path),
            source: Source::Distribution(Distribution::K3s),
        })
    }

    /// A manifest flag's value paired with the manifest, for [`pick`].
    fn manifest_flag(&self, v: &Option<String>) -> Option<(String, &Path)> {
        v.clone().zip(self.manifest_path)
    }

    /// A path flag of the manifest, on the host: mapped through the pod's hostPath mounts.
    fn manifest_path_setting(&self, v: &Option<String>) -> Option<Setting<PathBuf>> {
        let (value, manifest) = self.manifest_flag(v)?;
        let container = PathBuf::from(value);
        Some(match self.manifest.host_path(&container) {
            Some((host, mount)) => Setting {
                value: self.root.join(host),
                source: Source::ManifestVolume {
                    manifest: manifest.to_path_buf(),
                    container,
                    volume: mount.volume.clone(),
                },
            },
            None => Setting {
                value: self.root.join(&container),
                source: Source::Manifest(manifest.to_path_buf()),
            },
        })
    }

    /// The `EncryptionConfiguration` file: flag, environment, manifest, then k3s's.
    fn config(&self, flags: &Flags) -> Option<Setting<PathBuf>> {
        pick(
            flags.config.clone().map(|v| (v, "--config")),
            env("ATREST_CONFIG").map(|v| (PathBuf::from(v), "ATREST_CONFIG")),
            None,
        )
        .or_else(|| self.manifest_path_setting(&self.manifest.encryption_provider_config))
        .or_else(|| self.k3s_default(K3S_CONFIG))
    }

    /// The etcd endpoints: flag, environment, manifest, then k3s's or etcdctl's default.
    fn endpoints(&self, flags: &Flags) -> Setting<Vec<String>> {
        pick(
            flags
                .endpoints
                .clone()
                .map(|v| (split_endpoints(&v), "--endpoints")),
            env("ETCDCTL_ENDPOINTS").map(|v| (split_endpoints(&v), "ETCDCTL_ENDPOINTS")),
            self.manifest_flag(&self.manifest.etcd_servers)
                .map(|(v, p)| (split_endpoints(&v), p)),
        )
        .unwrap_or_else(|| match self.k3s {
            true => Setting {
                value: vec![K3S_ENDPOINT.to_string()],
                source: Source::Distribution(Distribution::K3s),
            },
            false => Setting {
                value: vec![DEFAULT_ENDPOINT.to_string()],
                source: Source::Default,
            },
        })
    }

    /// One of the etcd TLS files: flag, environment, manifest, then k3s's file of that name.
    fn path_setting(
        &self,
        flag: &Option<PathBuf>,
        flag_name: &'static str,
        env_name: &'static str,
        man: &Option<String>,
        k3s_file: &str,
    ) -> Option<Setting<PathBuf>> {
        pick(
            flag.clone().map(|v| (v, flag_name)),
            env(env_name).map(|v| (PathBuf::from(v), env_name)),
            None,
        )
        .or_else(|| self.manifest_path_setting(man))
        .or_else(|| self.k3s_default(&format!("{K3S_ETCD_TLS_DIR}/{k3s_file}")))
    }

    /// The apiserver's `--etcd-prefix`: flag, manifest, then `/registry`.
    fn etcd_prefix(&self, flags: &Flags) -> Setting<String> {
        pick(
            flags.etcd_prefix.clone().map(|v| (v, "--etcd-prefix")),
            None,
            self.manifest_flag(&self.manifest.etcd_prefix),
        )
        .unwrap_or(Setting {
            value: DEFAULT_PREFIX.to_string(),
            source: Source::Default,
        })
    }
}

/// The etcd user (for display) and its credentials, from `--user`/`ETCDCTL_USER` and
/// `ETCDCTL_PASSWORD` when the password is not in the user string.
fn resolve_user(
    flags: &Flags,
) -> Result<(Option<Setting<String>>, Option<Credentials>), SettingsError> {
    let user_raw = pick(
        flags.user.clone().map(|v| (v, "--user")),
        env("ETCDCTL_USER").map(|v| (v, "ETCDCTL_USER")),
        None,
    );
    let Some(s) = user_raw else {
        return Ok((None, None));
    };
    let (name, password) = match s.value.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (
            s.value.clone(),
            env("ETCDCTL_PASSWORD").ok_or(SettingsError::BadUser)?,
        ),
    };
    Ok((
        Some(Setting {
            value: name.clone(),
            source: s.source,
        }),
        Some(Credentials {
            user: name,
            password: zeroize::Zeroizing::new(password),
        }),
    ))
}

/// kubectl's default (`~/.kube/config`), else the admin kubeconfig the distribution (or
/// kubeadm) writes, when present: the file the API client would use, so that `status` can say
/// which one it is.
fn default_kubeconfig(
    root: &HostRoot,
    distribution: Option<Distribution>,
) -> Option<Setting<PathBuf>> {
    let home = env("HOME").map(|h| (root.join(PathBuf::from(h).join(".kube/config")), None));
    let admin = match distribution {
        Some(d) => (root.join(d.kubeconfig()), Some(d)),
        None => (root.join(DEFAULT_ADMIN_KUBECONFIG), None),
    };
    home.into_iter()
        .chain([admin])
        .find(|(p, _)| p.is_file())
        .map(|(value, d)| Setting {
            value,
            source: d.map_or(Source::Default, Source::Distribution),
        })
}

fn split_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests;
