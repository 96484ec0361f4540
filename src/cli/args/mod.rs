//! The command line as parsed, nothing more. `settings::resolve` turns the connection flags into
//! the settings commands run on.

mod flags;
mod help;
mod keys;
mod rotate;
pub(crate) use flags::*;
pub(crate) use help::EXIT_CODES;
use help::*;
pub(crate) use keys::*;
pub(crate) use rotate::*;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use atrest::config::Severity;

/// The Kubernetes releases the tests run against: the newest with the full suite, the others
/// with the version matrix (`scripts/k8s/matrix`; `tests/release.rs` checks this list against
/// those pins).
pub(crate) const TESTED_KUBERNETES: &[&str] = &["v1.34.4", "v1.35.4", "v1.36.3", "v1.37.2"];
/// The etcd releases the tests run against, in the same way.
pub(crate) const TESTED_ETCD: &[&str] = &["3.5.21", "3.6.8", "3.7.0"];

/// `atrest --version`: the version, the commit it was built from (build.rs; "unknown" outside
/// git) and the Kubernetes and etcd releases the tests run against.
pub(crate) fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (commit {}; tested against Kubernetes {}; etcd {})",
            env!("CARGO_PKG_VERSION"),
            option_env!("ATREST_GIT_COMMIT").unwrap_or("unknown"),
            TESTED_KUBERNETES.join(", "),
            TESTED_ETCD.join(", "),
        )
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "atrest",
    version = version(),
    about = "Prove how Kubernetes stores its Secrets in etcd, and rotate encryption keys safely",
    long_about = "atrest reads the kube-apiserver EncryptionConfiguration and etcd itself to prove how every \
Secret (and every other configured resource) is stored: plaintext, aescbc, aesgcm, secretbox or KMS, \
and with which key. It never writes etcd; every change to stored data goes through the apiserver.\n\n\
On a control-plane node it needs no flags: the config path, etcd endpoints, certificates and prefix \
come from the kube-apiserver static-pod manifest. Flags and ETCDCTL_* variables override it.\n\n\
It is also a kubectl plugin: installed (or symlinked) as `kubectl-atrest` on PATH, `kubectl atrest …` \
runs it with the same commands and flags.",
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output (-v info, -vv debug). Logs go to stderr and never contain key material.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Validate and lint an EncryptionConfiguration, and summarise it (never prints keys).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Generate keys, sign evidence, and keep retired keys and backups sealed to custodians.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read every value etcd stores (or an etcd snapshot holds), say how each is stored, and
    /// judge it by the config and the policy.
    #[command(after_help = SCAN_HELP)]
    Scan(ScanArgs),
    /// Config summary, lint findings, a scan summary, and where each setting came from.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Rewrite, through the apiserver, every object etcd shows is not on its write key.
    #[command(after_help = REENCRYPT_HELP)]
    Reencrypt(ReencryptArgs),
    /// Rotate keys (or switch provider, or turn encryption on or off) step by guarded step.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Scan etcd on an interval and serve the result as Prometheus metrics (/metrics, /healthz).
    #[command(after_help = EXPORTER_HELP)]
    Exporter(ExporterArgs),
    /// Write a compliance audit report (JSON, Markdown or self-contained HTML).
    #[command(after_help = report_help(), args_conflicts_with_subcommands = true)]
    Report(ReportArgs),
    /// Restore drill: prove an etcd snapshot still restores and every value in it opens with
    /// the keys in custody (config, key archive — sealed or not —, config backups).
    ///
    /// The snapshot is restored into a scratch folder with etcdutl (which checks its integrity,
    /// as a real restore does); nothing is started and nothing of the cluster is touched. The
    /// restored file is then read offline with every value decrypted; the result counts the
    /// values per key and names any that would not open. Attach it to the report with
    /// `atrest report --drill RESULT.json` (evidence for NIST SC-12(1)).
    #[command(
        after_help = "Examples:\n  atrest drill --snapshot /backup/etcd-2026-11-01.db -i /root/custodian.age --out drill.json\n  atrest drill --snapshot snap.db --key-archive /copy/state/key-archive --share a.share --share b.share\n\nExit codes:\n  0  the snapshot restored and every value opened\n  1  some value did not open (each key and count named)\n  2  could not complete (no etcdutl, the snapshot does not restore, too few shares)"
    )]
    Drill(DrillArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell) to stdout.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per command into a folder.
    #[command(after_help = MAN_HELP)]
    Man(ManArgs),
}

/// A duration such as `30s`, `5m`, `1h30m`, `7d` or `2w` (a bare number is seconds).
pub(crate) fn duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (examples: 30s, 5m, 1h30m, 7d, 2w)");
    if let Ok(n) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[derive(Args, Debug)]
pub(crate) struct ExporterArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address to serve /metrics and /healthz on (HOST:PORT, or :PORT for every address).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9725")]
    pub listen: String,
    /// Time from the start of one scan to the start of the next (30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "5m")]
    pub interval: std::time::Duration,
    /// Audit policy file (required resources, maxKeyAgeDays, aesgcmMaxWrites); default: the
    /// built-in policy of `atrest report`.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Only these resources (`secrets`, `configmaps`, `foos.example.com`); repeatable.
    #[arg(long = "resource", value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// Decrypt every value on every scan (slower; proves every value opens).
    #[arg(long)]
    pub verify: bool,
    /// Do not ask the apiservers which config they loaded (no kubeconfig needed; the
    /// atrest_apiserver_* series are then absent).
    #[arg(long)]
    pub no_apiservers: bool,
}

#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub(crate) struct ManArgs {
    /// Write every page (atrest.1, atrest-<command>.1, …) into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ReportArgs {
    #[command(subcommand)]
    pub diff: Option<ReportSub>,
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub open: OpenFlags,
    /// Attach a restore drill's result (`atrest drill --out FILE`): check ATR-C14, evidence
    /// that an old backup still opens (NIST SC-12(1)).
    #[arg(long, value_name = "FILE")]
    pub drill: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
    /// Write the report here; `-` for stdout. Default: stdout when it is a pipe or a file; on a
    /// terminal, a file atrest-report-<UTC time>.<format> in the current folder, and a summary.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Policy file overriding the defaults (see below).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Use a finished scan (`atrest scan -o json > FILE`) instead of scanning again.
    #[arg(long, value_name = "FILE", conflicts_with = "snapshot")]
    pub from_scan: Option<PathBuf>,
    /// Audit a backup: an etcd snapshot or member db file, read offline (no etcd, no
    /// apiserver). The report names the file's sha256 and the keys needed to open it, and gets
    /// a Backup section; its history and free pages are read too.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Skip etcd's history, the members' db sizes and the backup files (faster; check ATR-C11
    /// is then left out and the scope section says so).
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
    /// History is read by default; kept so that older runbooks keep working.
    #[arg(long, hide = true)]
    pub history: bool,
    /// Also survey the etcd backups in DIR (repeatable), e.g. a kubeadm node's backup folder
    /// or /var/lib/rancher/rke2/server/db/snapshots; atrest's own snapshots folder always is.
    #[arg(long = "backup-dir", value_name = "DIR", conflicts_with = "no_history")]
    pub backup_dirs: Vec<PathBuf>,
    /// Classify values by prefix, key name and shape instead of decrypting each one (faster;
    /// the report's scope then says no value was decrypted, so its PASS covers less). By
    /// default every value is decrypted, proving it opens.
    #[arg(long)]
    pub no_verify: bool,
    /// Every value is decrypted by default; kept so that older runbooks keep working.
    #[arg(long, hide = true, conflicts_with = "no_verify")]
    pub verify: bool,
    /// Sign the report with this Ed25519 key (`atrest keys signing-key`): writes, beside the
    /// report file, FILE.intoto.json — a DSSE envelope of an in-toto Statement (subject: the
    /// report's sha256; predicate: the test result with the passed, warned and failed checks).
    /// Needs --out FILE (a signature is of a file).
    #[arg(long, value_name = "KEYFILE", requires = "out")]
    pub sign: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ReportSub {
    /// Verify signed report evidence: each envelope's signature with the public key, then the
    /// sha256 of every report file it names.
    ///
    /// Give the envelopes (`*.intoto.json`) or folders holding them.
    ///
    /// Exit codes: 0 every envelope verifies and every file matches, 1 a signature or a digest
    /// does not match (or a file is missing), 2 when the key or an envelope cannot be read.
    Verify {
        /// The public key (PEM) printed by `atrest keys signing-key`.
        #[arg(long, value_name = "PUBFILE")]
        key: PathBuf,
        /// Envelopes, or folders holding them.
        #[arg(required = true, value_name = "DIR|FILE")]
        paths: Vec<PathBuf>,
    },
    /// One summary across clusters from their JSON reports: per cluster the result, findings,
    /// oldest write key, last rotation and residue.
    ///
    /// With --key, each report's signature (REPORT.intoto.json beside it) is verified first.
    ///
    /// Exit codes: 0 no cluster has findings, 1 a cluster has findings or a signature does not
    /// verify, 2 when a report cannot be read.
    Merge {
        /// JSON reports (`atrest report --format json`), one per cluster.
        #[arg(required = true, value_name = "REPORT.json")]
        reports: Vec<PathBuf>,
        /// Verify each report's signature with this public key.
        #[arg(long, value_name = "PUBFILE")]
        key: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = MergeFormat::Html)]
        format: MergeFormat,
        /// Write the summary here (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// What changed between two JSON reports (atrest.report/v1 or /v2).
    ///
    /// Reads the two files only; writes the differences to stdout.
    ///
    /// Exit codes: 0 when nothing regressed (the same, or better), 1 on a regression (the
    /// verdict or a check moved towards FAIL, or a resource has more objects that need a
    /// rewrite or are unreadable), 2 when a file cannot be read. With --fail-on-change, any
    /// difference exits 1.
    Diff {
        /// The earlier report.
        a: PathBuf,
        /// The later report.
        b: PathBuf,
        /// Exit 1 on any difference, not only on a regression.
        #[arg(long)]
        fail_on_change: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MergeFormat {
    Json,
    Md,
    /// One self-contained page; the table sorts by any column.
    Html,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReportFormat {
    Json,
    Md,
    Html,
    /// An OSCAL 1.1.2 assessment-results document (JSON): each check an observation, one
    /// finding per control it gives evidence for (CIS, NIST SP 800-53, PCI DSS, DISA SRG).
    Oscal,
}

#[derive(Args, Debug)]
pub(crate) struct ScanArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    /// Only these resources (`secrets`, `configmaps`, `foos.example.com`); repeatable.
    #[arg(long = "resource", value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// Also decrypt every value (slower; proves every value opens).
    #[arg(long)]
    pub verify: bool,
    /// At most this many names per list and resource (all are still counted).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_list: usize,
    /// Also try the retired keys of this key archive (from `atrest rotate prune`), e.g. to
    /// check a restored snapshot: a `key-archive.yaml`, a sealed `*.age` file or a sealed
    /// `key-archive/` folder (open it with -i or --share).
    #[arg(long, value_name = "PATH")]
    pub key_archive: Option<PathBuf>,
    #[command(flatten)]
    pub open: OpenFlags,
    /// Read this etcd data file offline instead of a live etcd: a snapshot
    /// (`etcdctl snapshot save`, atrest's own under <state dir>/snapshots/) or a member's
    /// `member/snap/db`. No etcd process, no restore; the file is opened read-only. Copy a
    /// running member's db first: etcd keeps writing it.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Also look for old copies: every older revision etcd still keeps (live: since the last
    /// compaction; in a file: all of it), each member's db size against its size in use, a
    /// file's free pages, and every backup file in the state folder's snapshots and the
    /// --backup-dir folders. Plaintext where the config encrypts, or values under a key the
    /// config no longer has, are residue (a warning; a finding with `residue: fail` in --policy).
    #[arg(long)]
    pub history: bool,
    /// With --history: also survey the etcd backups in DIR (repeatable), e.g. a kubeadm node's
    /// backup folder or /var/lib/rancher/rke2/server/db/snapshots.
    #[arg(long = "backup-dir", value_name = "DIR", requires = "history")]
    pub backup_dirs: Vec<PathBuf>,
    /// Progress on stderr: a bar on a terminal and a line every 10 s otherwise (auto), or
    /// always bar, lines, json (one object per line), none.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = crate::cli::progress::ProgressMode::Auto)]
    pub progress: crate::cli::progress::ProgressMode,
    /// table for people, json for scripts (stable schema, see the README).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Also write the exporter's series to DIR/atrest.prom (atomically), for node_exporter's
    /// textfile collector; on a failed scan the previous file is left as it was.
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    /// The audit policy file: required resources, and whether residue and sensitive plaintext
    /// fail or warn (see `atrest report --help`); for --textfile also maxKeyAgeDays and
    /// aesgcmMaxWrites.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// atrest's state folder [env: ATREST_STATE_DIR] (default: /var/lib/atrest, else the
    /// `atrest` folder beside the config that was the default up to 0.2): its rotation state
    /// (a rotation in progress), key archive and backups name keys; its snapshots are residue.
    #[arg(long, value_name = "DIR", env = "ATREST_STATE_DIR", hide_env = true)]
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig to ask each apiserver which config it loaded [env: KUBECONFIG] (default:
    /// kube's usual chain, then /etc/kubernetes/admin.conf; without one, not asked).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// An apiserver to ask directly (repeat for each).
    #[arg(long = "apiserver", value_name = "URL")]
    pub apiservers: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Skip the etcd scan (config and settings only).
    #[arg(long)]
    pub no_scan: bool,
    /// The audit policy file (required resources; see `atrest report --help`).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// table for people, json for scripts (stable schema, see the README).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub(crate) struct ReencryptArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only these resources (`secrets`, `configmaps`, `foos.example.com`); repeatable.
    #[arg(long = "resource", value_name = "RESOURCE")]
    pub resources: Vec<String>,
    #[command(flatten)]
    pub rewrite: RewriteArgs,
    /// Checkpoint file (default: <state dir>/reencrypt-checkpoint.json).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint of an interrupted run.
    #[arg(long)]
    pub resume: bool,
    /// List what would be rewritten; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many names per list in the result.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_list: usize,
    /// table for people, json for scripts (stable schema, see the README).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}
