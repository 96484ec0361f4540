//! `atrest rotate` and its steps.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum RotateCommand {
    /// Add a new key (or provider) as a read key everywhere the rotation touches; a resource
    /// no rule covers yet (--resource) gets a rule of its own.
    #[command(after_help = ROTATE_HELP)]
    Prepare(RotatePrepareArgs),
    /// Make the new key the write key (once every apiserver can read it).
    #[command(after_help = ROTATE_HELP)]
    Promote(RotatePromoteArgs),
    /// Rewrite every object of the rotated resources with the new write key.
    #[command(after_help = ROTATE_HELP)]
    Reencrypt(RotateReencryptArgs),
    /// Remove keys no stored value uses (proven by a fresh scan), archiving them; then show the
    /// old copies left (etcd history, members' free pages, backup files) and how to drop them.
    #[command(after_help = ROTATE_HELP)]
    Prune(RotatePruneArgs),
    /// prepare, promote, reencrypt and prune in order, waiting for the apiservers at each step.
    #[command(after_help = ROTATE_HELP)]
    Run(RotateRunArgs),
    /// Undo the rotation safely (before prune); before promote, the config goes back to the file
    /// as it was before prepare, byte for byte.
    #[command(after_help = ROTATE_HELP)]
    Abort(RotateArgs),
    /// Continue the rotation from a config edited by hand since atrest wrote it, once a fresh
    /// scan proves the edit keeps every key the stored data needs and the rotation's key where
    /// its stage needs it. (Outside a rotation every step adopts a hand edit by itself.)
    #[command(after_help = ROTATE_HELP)]
    Adopt(RotateArgs),
}

/// What every rotate step takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct RotateArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long to wait for every apiserver to load a new config (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// After every config write, run CMD (with `sh -c`, as given) to copy the file to the other
    /// control-plane nodes; it finds the file in $ATREST_CONFIG_FILE and its sha256 in
    /// $ATREST_CONFIG_SHA256, never key material. The step goes on only when CMD exits 0 (within
    /// --timeout); otherwise it stops (exit 2) and the same command run again retries the sync.
    #[arg(long, value_name = "CMD")]
    pub sync_command: Option<String>,
    #[command(flatten)]
    pub seal: SealFlags,
}

/// `rotate promote`: the common flags and the canary's namespace.
#[derive(Args, Debug, Clone)]
pub(crate) struct RotatePromoteArgs {
    #[command(flatten)]
    pub common: RotateArgs,
    /// Namespace of the canary secrets written after promote.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub canary_namespace: String,
}

/// `rotate reencrypt`: the common flags and how the re-encryption writes.
#[derive(Args, Debug, Clone)]
pub(crate) struct RotateReencryptArgs {
    #[command(flatten)]
    pub common: RotateArgs,
    #[command(flatten)]
    pub rewrite: RewriteArgs,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct RotatePruneArgs {
    #[command(flatten)]
    pub common: RotateArgs,
    /// After a successful prune (or without pruning, while the rotation in progress is not yet
    /// re-encrypted), delete atrest's own snapshots: those of finished rotations, and any file
    /// of its snapshots folder no rotation records (listed first). They still hold the data as
    /// it was stored before (plaintext, retired keys); copy any you must keep first. The
    /// snapshot of a rotation in progress is never removed, nor any --backup-dir file.
    #[arg(long)]
    pub remove_snapshots: bool,
    /// Also survey the etcd backups in DIR (repeatable) for what they still hold; they are
    /// listed, never removed.
    #[arg(long = "backup-dir", value_name = "DIR")]
    pub backup_dirs: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct RotatePrepareArgs {
    #[command(flatten)]
    pub common: RotateArgs,
    /// What to move to: a new local key, KMS v2, or identity (turns encryption off).
    #[arg(long, value_enum, default_value_t = TargetArg::Secretbox)]
    pub provider: TargetArg,
    /// Name of the new key (default: key-<UTC timestamp>).
    #[arg(long, value_name = "NAME")]
    pub key_name: Option<String>,
    /// KMS v2 provider name (with --provider kms).
    #[arg(long, value_name = "NAME", required_if_eq("provider", "kms"))]
    pub kms_name: Option<String>,
    /// KMS v2 plugin endpoint, unix:///path (with --provider kms).
    #[arg(long, value_name = "URL", required_if_eq("provider", "kms"))]
    pub kms_endpoint: Option<String>,
    /// KMS v2 call timeout (e.g. 3s).
    #[arg(long, value_name = "DURATION")]
    pub kms_timeout: Option<String>,
    /// Only the rules covering these resources (default: every rule, and secrets even when no
    /// rule names them); every resource of an edited rule is rotated with it. A resource no rule
    /// covers yet (`configmaps`, `widgets.example.com`, `*.example.com`) gets a rule of its own:
    /// encryption turns on for it. With --provider identity it turns off (for these only).
    #[arg(long = "resource", value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// Where to write the etcd snapshot taken first (default: the state folder).
    #[arg(long, value_name = "FILE", conflicts_with = "no_snapshot")]
    pub snapshot: Option<PathBuf>,
    /// Skip the snapshot (recorded in the state and shown in reports).
    #[arg(long)]
    pub no_snapshot: bool,
}

/// `rotate run`: what prepare takes, and what promote and reencrypt take.
#[derive(Args, Debug, Clone)]
pub(crate) struct RotateRunArgs {
    #[command(flatten)]
    pub prepare: RotatePrepareArgs,
    /// Namespace of the canary secrets written after promote.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub canary_namespace: String,
    #[command(flatten)]
    pub rewrite: RewriteArgs,
    /// Do nothing (exit 0) while the write key is younger than this (7d, 28d, 90d) and, for
    /// aesgcm, below the policy's aesgcmMaxWrites; a rotation already in progress is resumed.
    /// For timers.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub if_older_than: Option<std::time::Duration>,
    /// With --if-older-than: the audit policy file giving aesgcmMaxWrites (default 200000).
    #[arg(long, value_name = "FILE", requires = "if_older_than")]
    pub policy: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TargetArg {
    Aescbc,
    Aesgcm,
    Secretbox,
    Kms,
    Identity,
}
