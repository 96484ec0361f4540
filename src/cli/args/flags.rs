//! Flag groups several commands share (flattened into their arguments): where the config
//! comes from, how to reach etcd and the apiserver, how the re-encryption writes, and the
//! output format.

use std::path::PathBuf;

use atrest::migrate::ReencryptOptions;
use clap::{Args, ValueEnum};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Table,
    Json,
}

/// Where the EncryptionConfiguration comes from.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ConfigSource {
    /// The EncryptionConfiguration file [env: ATREST_CONFIG] (default: the manifest's
    /// --encryption-provider-config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The kube-apiserver static-pod manifest to read settings from (default:
    /// /etc/kubernetes/manifests/kube-apiserver.yaml, when it exists).
    #[arg(long, value_name = "FILE")]
    pub apiserver_manifest: Option<PathBuf>,
}

/// How to reach etcd: the flags etcdctl has, with the same `ETCDCTL_*` variables.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct EtcdFlags {
    /// Comma-separated etcd endpoints [env: ETCDCTL_ENDPOINTS] (default: the manifest's
    /// --etcd-servers, else 127.0.0.1:2379).
    #[arg(long, value_name = "URLS")]
    pub endpoints: Option<String>,
    /// CA bundle to verify etcd's certificate [env: ETCDCTL_CACERT].
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate [env: ETCDCTL_CERT].
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key [env: ETCDCTL_KEY].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// USER or USER:PASSWORD [env: ETCDCTL_USER, ETCDCTL_PASSWORD].
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub user: Option<String>,
    /// The apiserver's --etcd-prefix (default: the manifest's, else /registry).
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// How long etcd may stay unreachable mid-scan before atrest gives up (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub etcd_patience: u64,
}

/// The Kubernetes API side, and atrest's state folder.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ClusterArgs {
    /// Kubeconfig for the apiserver [env: KUBECONFIG] (default: kube's usual chain, then
    /// /etc/kubernetes/admin.conf).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// atrest's state folder [env: ATREST_STATE_DIR] (default: /var/lib/atrest; state left
    /// in an `atrest` folder beside the config, the default up to 0.2, is read there and moved
    /// by the next rotate or reencrypt step).
    #[arg(long, value_name = "DIR", env = "ATREST_STATE_DIR", hide_env = true)]
    pub state_dir: Option<PathBuf>,
    /// An apiserver to check directly (repeat for each); default: the endpoints of
    /// default/kubernetes, else the kubeconfig's server.
    #[arg(long = "apiserver", value_name = "URL")]
    pub apiservers: Vec<String>,
}

/// How the re-encryption writes.
#[derive(Args, Debug, Clone)]
pub(crate) struct RewriteArgs {
    /// Re-encryption: writes in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub concurrency: usize,
    /// Re-encryption: client-side limit on requests per second (0: none; the apiserver's own
    /// limits and its 429 Retry-After answers still apply).
    #[arg(long, value_name = "QPS", default_value_t = 0.0)]
    pub qps: f64,
    /// Re-encryption: attempts per object before it is given up (and listed) — never fatal for
    /// the run.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_attempts: u32,
    /// Re-encryption: how long the apiserver may answer no request at all (unreachable, or
    /// 429/5xx for everything) before the run stops (exit 2, progress saved, nothing given up).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub apiserver_patience: u64,
    /// Re-encryption: the request that rewrites each object. auto: a protobuf PUT of the stored
    /// object where it applies (built-in, protobuf, no KMS, stored in the version written
    /// through), else a merge PATCH; patch: always the merge PATCH (needs only the patch verb).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Request::Auto)]
    pub request: Request,
    /// Re-encryption: at most N keys per etcd read (default: pages of about 4 MiB and at most
    /// 5000 keys; a dry run up to 10,000). Smaller pages hold less in memory but cost etcd
    /// more (it counts the rest of the range for every page); the checkpoint moves a page at a
    /// time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub page_keys: Option<i64>,
    /// Progress on stderr: a bar on a terminal and a line every 10 s otherwise (auto), or
    /// always bar, lines, json (one object per line), none.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = crate::cli::progress::ProgressMode::Auto)]
    pub progress: crate::cli::progress::ProgressMode,
    /// Re-encryption: who rewrites. atrest: only the stale objects, checkpointed. svm:
    /// kube-controller-manager's StorageVersionMigration (Kubernetes 1.37+) rewrites every
    /// object of each resource with stale ones. auto: svm for resources of 1000+ objects at
    /// least 90% stale, atrest elsewhere. With svm and auto, atrest's engine runs afterwards:
    /// it rewrites whatever is still stale and proves every object in etcd.
    #[arg(long, value_enum, value_name = "ENGINE", default_value_t = EngineArg::Atrest)]
    pub engine: EngineArg,
    /// Re-encryption with --engine svm or auto: how long a new StorageVersionMigration may go
    /// unanswered (no status.resourceVersion) before atrest concludes no migrator controller
    /// runs (exit 2, nothing rewritten).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub svm_patience: u64,
}

/// `--engine`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EngineArg {
    /// atrest's own targeted engine.
    Atrest,
    /// StorageVersionMigration, then atrest's engine for what remains.
    Svm,
    /// Per resource.
    Auto,
}

impl EngineArg {
    pub(crate) fn engine(self) -> atrest::migrate::svm::Engine {
        use atrest::migrate::svm::Engine;
        match self {
            EngineArg::Atrest => Engine::Atrest,
            EngineArg::Svm => Engine::Svm,
            EngineArg::Auto => Engine::Auto,
        }
    }
}

/// `--request`: which rewrite request atrest may send.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// The protobuf PUT where it applies, else the merge PATCH.
    Auto,
    /// Always the merge PATCH.
    Patch,
}

impl RewriteArgs {
    /// The engine's options with these set.
    pub(crate) fn options(&self) -> ReencryptOptions {
        ReencryptOptions {
            concurrency: self.concurrency,
            put: self.request == Request::Auto,
            page_keys: self.page_keys,
            qps: self.qps,
            max_attempts: self.max_attempts,
            apiserver_patience: std::time::Duration::from_secs(self.apiserver_patience),
            engine: self.engine.engine(),
            svm_patience: std::time::Duration::from_secs(self.svm_patience),
            ..Default::default()
        }
    }
}

/// What opens the sealed key archive and config backups (`atrest keys seal`): custodians'
/// identities, or shares when they are sealed K of N. Nothing opened is written to disk.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct OpenFlags {
    /// An age identity file (AGE-SECRET-KEY-1…) or an unencrypted SSH private key of a
    /// custodian; repeatable.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// A share file a custodian made with `atrest keys share-unwrap` (archives sealed K of N:
    /// K shares, or identities, open it); repeatable.
    #[arg(long = "share", value_name = "FILE")]
    pub shares: Vec<PathBuf>,
}

/// Who retired keys and config backups are sealed to (the state folder's custody file keeps
/// them, so later runs, timers included, seal without these flags).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct SealFlags {
    /// Seal the key archive and config backups to RECIPIENT: an age X25519 recipient
    /// (age1…) or an SSH public key (ssh-ed25519 …, ssh-rsa …); repeatable, one per custodian.
    /// Only public keys: generate the identities offline, on the custodians' machines.
    #[arg(long = "seal-to", value_name = "RECIPIENT")]
    pub seal_to: Vec<String>,
    /// Split knowledge: K custodians' shares (of the --seal-to recipients) are needed to open
    /// anything sealed; no one of them alone can.
    #[arg(long = "seal-threshold", value_name = "K", requires = "seal_to")]
    pub seal_threshold: Option<usize>,
}
