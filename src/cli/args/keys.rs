//! `atrest config`, `atrest keys` (keys, signing key, custody) and `atrest drill`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Validate with the apiserver's rules, lint, and print a per-resource summary.
    #[command(
        after_help = "Reads the config file (found through the apiserver manifest without --config). Writes \
nothing: the summary goes to stdout, and it never prints a key.\n\nExit codes:\n  0  valid (no finding at or above --fail-on)\n  1  valid, with findings at or above --fail-on\n  2  invalid (the apiserver would refuse to start)"
    )]
    Check(ConfigCheckArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ConfigCheckArgs {
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
pub(crate) enum KeysCommand {
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
    /// Make an Ed25519 key that signs report evidence (`atrest report --sign FILE`).
    ///
    /// The private key is written to FILE (PKCS#8 PEM, mode 0600; an existing file is never
    /// overwritten) and never printed; the public key (PEM) goes to stdout — give it to the
    /// auditors who verify with `atrest report verify --key PUBFILE` or the in-toto tools.
    #[command(
        name = "signing-key",
        after_help = "Writes FILE only; prints the public key.\n\n\
Exit codes:\n  0  written\n  2  could not complete (FILE exists, no randomness, not writable)"
    )]
    SigningKey(KeysSigningKeyArgs),
    /// Seal the key archive and config backups to their custodians (age), and remove the
    /// plaintext forms.
    ///
    /// Sets up custody in the state folder (custody.yaml: the recipients, public) so that every
    /// later rotation seals retired keys and backups itself, needing no identity. Existing
    /// plaintext `key-archive.yaml` and `backups/*` are sealed, checked, then removed. With
    /// --seal-threshold K, a fresh archive key is split K-of-N among the recipients.
    #[command(
        after_help = "Exit codes:\n  0  sealed (or already sealed to the same recipients)\n  2  refused: a malformed recipient, a threshold that does not fit, custody already set to other recipients, a damaged archive (nothing removed)"
    )]
    Seal(KeysSealArgs),
    /// Open the sealed key archive and backups in memory and list what they hold (writes
    /// nothing): proves the identities or shares given still open them.
    #[command(
        after_help = "Exit codes:\n  0  every sealed file opened\n  1  some sealed file did not open (listed)\n  2  could not complete (too few shares, no identity file)"
    )]
    Unseal(KeysUnsealArgs),
    /// A custodian unwraps their share of a K-of-N custody file with their identity, on their
    /// own machine, into a share file (0600) to hand to the one running the command that needs
    /// the archive (`--share FILE`).
    #[command(
        name = "share-unwrap",
        after_help = "Exit codes:\n  0  written\n  2  the identity holds no share of this custody file, or OUT exists"
    )]
    ShareUnwrap(KeysShareUnwrapArgs),
    /// Combine share files in memory and list what the sealed archive holds (writes nothing):
    /// `atrest keys unseal --share …`.
    #[command(
        after_help = "Exit codes:\n  0  the shares open every sealed file\n  1  some sealed file did not open\n  2  too few shares, or shares of another custody file"
    )]
    Combine(KeysCombineArgs),
}

#[derive(Args, Debug)]
pub(crate) struct DrillArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    /// The etcd snapshot to restore (`etcdctl snapshot save`).
    #[arg(long, value_name = "FILE")]
    pub snapshot: PathBuf,
    /// The etcdutl to restore with (default: etcdutl on the PATH).
    #[arg(long, value_name = "FILE")]
    pub etcdutl: Option<PathBuf>,
    /// A key archive besides the state folder's: `key-archive.yaml`, a sealed `*.age` file or a
    /// sealed `key-archive/` folder.
    #[arg(long, value_name = "PATH")]
    pub key_archive: Option<PathBuf>,
    #[command(flatten)]
    pub open: OpenFlags,
    /// atrest's state folder [env: ATREST_STATE_DIR] (its archive, backups and custody file).
    #[arg(long, value_name = "DIR", env = "ATREST_STATE_DIR", hide_env = true)]
    pub state_dir: Option<PathBuf>,
    /// Also write the result (JSON, `atrest.drill/v1`) here, for `atrest report --drill`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The state folder of the custody commands.
#[derive(Args, Debug, Clone)]
pub(crate) struct CustodyDir {
    /// atrest's state folder (or a copy of it) [env: ATREST_STATE_DIR].
    #[arg(long, value_name = "DIR", env = "ATREST_STATE_DIR", hide_env = true, default_value = atrest::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct KeysSealArgs {
    #[command(flatten)]
    pub dir: CustodyDir,
    #[command(flatten)]
    pub seal: SealFlags,
}

#[derive(Args, Debug)]
pub(crate) struct KeysUnsealArgs {
    #[command(flatten)]
    pub dir: CustodyDir,
    #[command(flatten)]
    pub open: OpenFlags,
}

#[derive(Args, Debug)]
pub(crate) struct KeysShareUnwrapArgs {
    /// The custody file (custody.yaml of the state folder, or a copy).
    #[arg(long, value_name = "FILE")]
    pub custody: PathBuf,
    /// This custodian's identity file.
    #[arg(short = 'i', long = "identity", value_name = "FILE", required = true)]
    pub identities: Vec<PathBuf>,
    /// Where to write the share (0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct KeysCombineArgs {
    #[command(flatten)]
    pub dir: CustodyDir,
    /// Share files from `atrest keys share-unwrap`.
    #[arg(value_name = "SHARE", required = true)]
    pub shares: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct KeysSigningKeyArgs {
    /// Where to write the private key.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct KeysGenerateArgs {
    #[arg(long, value_enum, default_value_t = KeyProviderArg::Secretbox)]
    pub provider: KeyProviderArg,
    /// Key name (default: key-<UTC timestamp>).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyProviderArg {
    Aescbc,
    Aesgcm,
    Secretbox,
}
