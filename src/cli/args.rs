//! The command line as parsed, nothing more. `settings::resolve` turns the connection flags into
//! the settings commands run on.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use atrest::config::Severity;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success: valid / everything on its write key / step done
  1  findings: the command ran and found something to act on
  2  could not complete: bad input, unreachable etcd or apiserver, refused step
  3  interrupted (SIGINT/SIGTERM); a checkpoint was written where the command keeps one";

/// The Kubernetes release the tests run against (the test bed's kube-apiserver and kubectl).
pub const TESTED_KUBERNETES: &str = "v1.37.2";
/// The etcd release the tests run against.
pub const TESTED_ETCD: &str = "3.7.0";

/// `atrest --version`: the version, the commit it was built from (build.rs; "unknown" outside
/// git) and the Kubernetes and etcd releases the tests run against.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (commit {}; tested against Kubernetes {TESTED_KUBERNETES}, etcd {TESTED_ETCD})",
            env!("CARGO_PKG_VERSION"),
            option_env!("ATREST_GIT_COMMIT").unwrap_or("unknown"),
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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output (-v info, -vv debug). Logs go to stderr and never contain key material.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate and lint an EncryptionConfiguration, and summarise it (never prints keys).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Generate keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read every stored value of the covered resources from etcd (or an etcd snapshot) and say
    /// how each is stored.
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
    #[command(after_help = REPORT_HELP, args_conflicts_with_subcommands = true)]
    Report(ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell) to stdout.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per command into a folder.
    #[command(after_help = MAN_HELP)]
    Man(ManArgs),
}

const COMPLETIONS_HELP: &str = "\
Reads nothing; writes the script to stdout only. Install it where your shell looks, e.g.
  atrest completions bash > /etc/bash_completion.d/atrest
  atrest completions zsh  > \"${fpath[1]}/_atrest\"
  atrest completions fish > ~/.config/fish/completions/atrest.fish
  atrest completions powershell >> $PROFILE

Exit codes:
  0  written
  2  could not write (stdout closed)";

const MAN_HELP: &str = "\
Reads nothing. Without --dir the page of `atrest` goes to stdout (man -l <(atrest man));
with --dir it writes atrest.1 and one page per subcommand (atrest-scan.1, atrest-rotate-run.1, …)
into that folder, creating it, e.g. --dir /usr/local/share/man/man1.

Exit codes:
  0  written
  2  could not write";

const EXPORTER_HELP: &str = "\
Scans every --interval (one scan at a time, never per scrape) and serves the last good result from
memory on /metrics (Prometheus text format) and /healthz; a failed scan raises
atrest_scan_failures_total and leaves the last good values served. The config file and the
rotation state are re-read before each scan. Series: atrest_stored_objects{resource,key,state}
(the counts of `atrest scan -o json`), atrest_write_key_info, atrest_encryption_expected,
atrest_key_age_seconds, atrest_aesgcm_writes_estimate, atrest_apiserver_config_info,
atrest_apiservers_converged, atrest_scan_* (see the README). Alert rules: deploy/prometheus/.

Reads the config file (and the apiserver manifest), etcd, the rotation state in the state folder,
--policy, and with a kubeconfig each apiserver's /metrics. Writes nothing.

Exit codes:
  2  could not start (bad flags, address in use, unreadable config or policy); otherwise it runs
     until stopped";

/// A duration such as `30s`, `5m`, `1h30m`, `7d` or `2w` (a bare number is seconds).
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
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
pub struct ExporterArgs {
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
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write every page (atrest.1, atrest-<command>.1, …) into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

const STATUS_HELP: &str = "\
Reads: the apiserver manifest, the config file, etcd (a scan, unless --no-scan), each apiserver's
/metrics and default/kubernetes endpoints (through the kubeconfig), and the state folder (the
rotation stage, archived keys). Writes nothing: the summary goes to stdout.

Exit codes:
  0  every stored object is on its write key (or --no-scan)
  1  the scan found objects not on their write key, undecryptable, unknown-key or corrupt
  2  could not complete (no or invalid config, etcd unreachable, the scan failed)";

const REPORT_HELP: &str = "\
Reads: the config file (and the apiserver manifest), etcd (a scan, or --from-scan FILE), each
apiserver's /metrics, the state folder (rotation state, archived keys) and --policy. Writes: the
report to --out FILE or stdout, nothing else.

The report states when and by which atrest it was made, the etcd cluster (ID, members, version,
the revision the scan was pinned at), each apiserver and the config hash it reports, the config
file (path, sha256, mode, owner) with every resource's keys in order (names and fingerprints),
the rotation state, lint findings, and checks with evidence:
  ATR-C01 encryption config set        ATR-C06 nothing undecryptable / unknown key / corrupt
  ATR-C02 providers allowed by policy  ATR-C07 write keys younger than the maximum age
  ATR-C03 every apiserver on the file  ATR-C08 required resources covered
  ATR-C04 every object of an encrypted or  ATR-C09 config lint and file mode
          required resource encrypted with its write key
  ATR-C05 no plaintext where encryption is configured or required
  (ATR-C10 KMS v2 key IDs, when used)
Coverage per resource: encrypted with an allowed provider (the headline; plaintext counts
against it), with a discouraged one, or not at all; and encrypted with the write key.
It never contains a key or a secret value: only labels, fingerprints, hashes, counts and names.

Policy file (YAML; absent fields keep these defaults):
  allowedProviders: [kms-v2, secretbox, aesgcm]
  discouragedProviders: [aescbc, kms-v1]     # WARN instead of FAIL
  maxKeyAgeDays: 90
  requiredResources: [secrets]

Exit codes: 0 PASS, 1 FAIL, 2 could not complete.
`atrest report diff A.json B.json` prints what changed between two audits; it exits 1 only on a
regression (see `atrest report diff --help`).";

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub diff: Option<ReportSub>,
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
    /// Write the report here (default: stdout).
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
    /// Also read etcd's history and each member's db size (check ATR-C11, Residue section).
    #[arg(long)]
    pub history: bool,
    /// Decrypt every value while scanning (proves each one opens).
    #[arg(long)]
    pub verify: bool,
}

#[derive(Subcommand, Debug)]
pub enum ReportSub {
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
pub enum ReportFormat {
    Json,
    Md,
    Html,
}

const ROTATE_HELP: &str = "\
The runbook, one guarded step at a time (each refuses what would lose data):
  prepare    a new key becomes a read key everywhere (after an etcd snapshot)
  promote    once every apiserver runs that config: the new key becomes the write key,
             then a canary secret through each apiserver proves it writes with it
  reencrypt  every object rewritten through the apiserver, proven in etcd
  prune      after a fresh scan shows nothing uses them: old keys removed (and archived)
  run        all of the above in order;  abort  undo safely before prune
  run --if-older-than 28d   for a timer: exit 0 doing nothing while the write key is younger
             (and, for aesgcm, below the policy's aesgcmMaxWrites); a rotation in progress
             is resumed. One step at a time per state folder (rotate.lock): a second run while
             one is under way is refused (exit 2), never started twice.

Reads: the config file (and the apiserver manifest), etcd, each apiserver's /metrics, the state
folder. Writes: the config file (rotate is the only command that does; a backup first, into
the state folder), the state folder (rotation.json, backups/, the etcd snapshot, the reencrypt
checkpoint, key-archive.yaml, rotate.lock), canary secrets and object rewrites through the
apiserver. Never etcd.

Each step waits until every apiserver reports the new config hash on /metrics
(apiserver_encryption_config_controller_last_config_info). With several control-plane nodes,
give --sync-command to copy the file to the others after each write (e.g. 'for n in cp2 cp3; do
scp \"$ATREST_CONFIG_FILE\" $n:/etc/kubernetes/enc.yaml || exit 1; done'), or copy it yourself;
atrest waits until each apiserver has loaded it. A failed sync stops the step with the write
not yet committed: run the same command again and the sync runs again first.
State, backups, the snapshot, the checkpoint and the key archive live in the state folder
(default: an `atrest` folder beside the config). Every step can be re-run after a crash.

Exit codes:
  0  the step is done
  2  refused or could not complete (the message says why and what to do)
  3  interrupted during reencrypt; run the same command again";

#[derive(Subcommand, Debug)]
pub enum RotateCommand {
    /// Add a new key (or provider) as a read key everywhere the rotation touches.
    #[command(after_help = ROTATE_HELP)]
    Prepare(RotatePrepareArgs),
    /// Make the new key the write key (once every apiserver can read it).
    #[command(after_help = ROTATE_HELP)]
    Promote(RotateArgs),
    /// Rewrite every object of the rotated resources with the new write key.
    #[command(after_help = ROTATE_HELP)]
    Reencrypt(RotateArgs),
    /// Remove keys no stored value uses (proven by a fresh scan), archiving them; then show the
    /// old copies left (etcd history, members' free pages, atrest's snapshots) and how to drop
    /// them.
    #[command(after_help = ROTATE_HELP)]
    Prune(RotatePruneArgs),
    /// prepare, promote, reencrypt and prune in order, waiting for the apiservers at each step.
    #[command(after_help = ROTATE_HELP)]
    Run(RotatePrepareArgs),
    /// Undo the rotation safely (before prune).
    #[command(after_help = ROTATE_HELP)]
    Abort(RotateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RotateArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long to wait for every apiserver to load a new config (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Namespace of the canary secrets written after promote.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub canary_namespace: String,
    /// After every config write, run CMD (with `sh -c`, as given) to copy the file to the other
    /// control-plane nodes; it finds the file in $ATREST_CONFIG_FILE and its sha256 in
    /// $ATREST_CONFIG_SHA256, never key material. The step goes on only when CMD exits 0 (within
    /// --timeout); otherwise it stops (exit 2) and the same command run again retries the sync.
    #[arg(long, value_name = "CMD")]
    pub sync_command: Option<String>,
    #[command(flatten)]
    pub rewrite: RewriteArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RotatePruneArgs {
    #[command(flatten)]
    pub common: RotateArgs,
    /// After a successful prune, delete atrest's own snapshots of finished rotations (listed
    /// first). They still hold the data as it was stored before (plaintext, retired keys);
    /// copy any you must keep first. The snapshot of a rotation in progress is never removed.
    #[arg(long)]
    pub remove_snapshots: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RotatePrepareArgs {
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
    /// Only the rules covering these resources (secrets always); every resource of an edited
    /// rule is rotated with it.
    #[arg(long = "resource", value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// Where to write the etcd snapshot taken first (default: the state folder).
    #[arg(long, value_name = "FILE", conflicts_with = "no_snapshot")]
    pub snapshot: Option<PathBuf>,
    /// Skip the snapshot (recorded in the state and shown in reports).
    #[arg(long)]
    pub no_snapshot: bool,
    /// `rotate run` only: do nothing (exit 0) while the write key is younger than this (7d,
    /// 28d, 90d) and, for aesgcm, below the policy's aesgcmMaxWrites; a rotation already in
    /// progress is resumed. For timers.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub if_older_than: Option<std::time::Duration>,
    /// With --if-older-than: the audit policy file giving aesgcmMaxWrites (default 200000).
    #[arg(long, value_name = "FILE", requires = "if_older_than")]
    pub policy: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetArg {
    Aescbc,
    Aesgcm,
    Secretbox,
    Kms,
    Identity,
}

const REENCRYPT_HELP: &str = "\
How: the etcd scan finds each object not on its resource's write key (stale, or plaintext where the
config wants encryption); for each, atrest sends a JSON merge PATCH carrying only
metadata.resourceVersion (and uid) as preconditions. The apiserver rewrites a stale object with the
current write key and leaves a current one untouched; a concurrent change gets 409 and etcd is
re-checked, so no write is ever overwritten. Nothing is listed through the apiserver.

Progress is saved to the checkpoint every few seconds and on SIGINT/SIGTERM (in-flight writes
finish first); --resume continues where it stopped, and refuses if the config changed. At the end
etcd is read again: the result counts what is still not on its write key.

Reads: the config file (and the apiserver manifest), etcd, the apiservers' /metrics, the checkpoint.
Writes: objects, through the apiserver only (never etcd); the checkpoint in the state folder
(--checkpoint); nothing with --dry-run.

RBAC: patch on every resource rewritten (get/list are not needed); /metrics for the config check.

Exit codes:
  0  every object is now on its write key (proven in etcd)
  1  some objects were given up or are still not on their write key (listed)
  2  could not complete (bad config, etcd/apiserver unreachable, RBAC refused, apiserver lagging)
  3  interrupted by SIGINT/SIGTERM; the checkpoint is saved: run again with --resume";

const SCAN_HELP: &str = "\
What is read: for every resource the config names (and secrets always), the etcd key range the
apiserver stores it under; with a wildcard (*.*, *.<group>) every key under the prefix, each mapped
back to its resource. All pages are read at one pinned revision, so counts are a consistent snapshot.

Reads the config file (and the apiserver manifest), etcd (or the --snapshot file), and
--key-archive. Writes nothing:
the result goes to stdout, progress to stderr; etcd is only read. With --textfile DIR it also
writes the exporter's series to DIR/atrest.prom (atomically; with --state-dir, --policy and
--kubeconfig for key ages, limits and apiserver hashes), for node_exporter's textfile collector.

Without --verify values are classified by prefix, key name and shape; with it every value is
decrypted too (and a value no configured key opens is reported as undecryptable).

Backups and old copies: --snapshot FILE reads an etcd snapshot or a member's db file instead of
etcd (read-only, no restore) and names its sha256 and every key its values need; --history also
reads etcd's older revisions (and a file's free pages, or live each member's db size) and prints
the etcdctl compact/defrag commands that would drop what it finds. atrest never runs them.

Examples:
  atrest scan                                   on a control-plane node: settings from the manifest
  atrest scan --verify -o json > scan.json      decrypt every value; a stable JSON document
  atrest scan --history                         also plaintext left in etcd's history
  atrest scan --snapshot backup.db --config encryption.yaml --key-archive key-archive.yaml
                                                is this backup encrypted, and which keys open it?

Exit codes:
  0  every stored object is on its resource's write key (and, with --history or --snapshot, no
     residue: no plaintext or retired-key copy)
  1  findings: plaintext where encryption is configured, stale (on a read key), undecryptable,
     unknown key, or corrupt values — listed by namespace/name; residue
  2  the scan could not complete (bad config, etcd unreachable or refusing, a damaged or
     unreadable --snapshot file)";

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate with the apiserver's rules, lint, and print a per-resource summary.
    #[command(
        after_help = "Reads the config file (found through the apiserver manifest without --config). Writes \
nothing: the summary goes to stdout, and it never prints a key.\n\nExit codes:\n  0  valid (no finding at or above --fail-on)\n  1  valid, with findings at or above --fail-on\n  2  invalid (the apiserver would refuse to start)"
    )]
    Check(ConfigCheckArgs),
}

#[derive(Args, Debug)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    /// Lowest lint severity that makes the exit code 1.
    #[arg(long, value_enum, default_value_t = Severity::Error)]
    pub fail_on: Severity,
    /// table for people, json for scripts (stable schema, see the README).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print a new key entry for the config: name and a 32-byte secret from the OS random generator.
    ///
    /// This is the one command that prints key material, because you asked for it: the entry
    /// goes to stdout only, ready to paste under `keys:`. Keep it out of shell history and logs.
    /// `atrest rotate prepare` generates and writes keys without ever showing them.
    #[command(
        after_help = "Reads nothing but the OS random generator; writes the entry to stdout only.\n\n\
Exit codes:\n  0  printed\n  2  could not complete (no randomness, stdout closed)"
    )]
    Generate(KeysGenerateArgs),
}

#[derive(Args, Debug)]
pub struct KeysGenerateArgs {
    #[arg(long, value_enum, default_value_t = KeyProviderArg::Secretbox)]
    pub provider: KeyProviderArg,
    /// Key name (default: key-<UTC timestamp>).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProviderArg {
    Aescbc,
    Aesgcm,
    Secretbox,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// Where the EncryptionConfiguration comes from.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigSource {
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
pub struct EtcdFlags {
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

#[derive(Args, Debug)]
pub struct ScanArgs {
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
    /// check a restored snapshot.
    #[arg(long, value_name = "FILE")]
    pub key_archive: Option<PathBuf>,
    /// Read this etcd data file offline instead of a live etcd: a snapshot
    /// (`etcdctl snapshot save`, atrest's own under <state dir>/snapshots/) or a member's
    /// `member/snap/db`. No etcd process, no restore; the file is opened read-only. Copy a
    /// running member's db first: etcd keeps writing it.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Also look for old copies: every older revision etcd still keeps (live: since the last
    /// compaction; in a file: all of it), each member's db size against its size in use, and a
    /// file's free pages. Plaintext where the config encrypts, or values under a key the config
    /// no longer has, count as residue (exit 1).
    #[arg(long)]
    pub history: bool,
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
    /// With --textfile: the audit policy file (required resources, maxKeyAgeDays,
    /// aesgcmMaxWrites).
    #[arg(long, value_name = "FILE", requires = "textfile")]
    pub policy: Option<PathBuf>,
    /// With --textfile: the state folder whose rotation state gives key ages.
    #[arg(long, value_name = "DIR", requires = "textfile")]
    pub state_dir: Option<PathBuf>,
    /// With --textfile: a kubeconfig to ask each apiserver which config it loaded.
    #[arg(long, value_name = "FILE", requires = "textfile")]
    pub kubeconfig: Option<PathBuf>,
    /// With --textfile: an apiserver to ask directly (repeat for each).
    #[arg(long = "apiserver", value_name = "URL", requires = "textfile")]
    pub apiservers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Skip the etcd scan (config and settings only).
    #[arg(long)]
    pub no_scan: bool,
    /// table for people, json for scripts (stable schema, see the README).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct ReencryptArgs {
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

/// The Kubernetes API side, and atrest's state folder.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Kubeconfig for the apiserver [env: KUBECONFIG] (default: kube's usual chain, then
    /// /etc/kubernetes/admin.conf).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// atrest's state folder (default: an `atrest` folder beside the config file).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// An apiserver to check directly (repeat for each); default: the endpoints of
    /// default/kubernetes, else the kubeconfig's server.
    #[arg(long = "apiserver", value_name = "URL")]
    pub apiservers: Vec<String>,
}

/// How the re-encryption writes.
#[derive(Args, Debug, Clone)]
pub struct RewriteArgs {
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
    /// Progress on stderr: a bar on a terminal and a line every 10 s otherwise (auto), or
    /// always bar, lines, json (one object per line), none.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = crate::cli::progress::ProgressMode::Auto)]
    pub progress: crate::cli::progress::ProgressMode,
}

impl RewriteArgs {
    /// The engine's options with these set.
    pub fn options(&self) -> atrest::migrate::ReencryptOptions {
        atrest::migrate::ReencryptOptions {
            concurrency: self.concurrency,
            qps: self.qps,
            max_attempts: self.max_attempts,
            apiserver_patience: std::time::Duration::from_secs(self.apiserver_patience),
            ..Default::default()
        }
    }
}
