//! The command line: flags (`args`), one file per command (`commands`), output (`render`,
//! `progress`). This file dispatches and turns errors into messages with hints.

/// `print!` to stdout that ends the process quietly (exit 0) when stdout was closed, as in
/// `atrest scan | head`, instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::emit(&format!($($t)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => {
        $crate::cli::emit("\n")
    };
    ($($t:tt)*) => {
        $crate::cli::emit(&format!("{}\n", format_args!($($t)*)))
    };
}

use atrest::model::finding::{Finding, any_fails};
pub(crate) use {out, outln};

/// Writes `text` to stdout; a closed pipe ends the process with exit 0 (the reader has what it
/// wanted), any other write error with exit 2.
pub(crate) fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

pub(crate) mod args;
mod commands;
pub(crate) use commands::ship::command;
pub(crate) mod progress;
mod render;

use args::{Cli, Command, ConfigCommand, KeysCommand};

/// Success: config valid, every object on its write key, step done, report PASS.
pub(crate) const EXIT_OK: i32 = 0;
/// Findings: lint, objects not on their write key or unreadable, given up, report FAIL.
pub(crate) const EXIT_FINDINGS: i32 = 1;
/// Could not complete: invalid input, unreachable etcd or apiserver, refused step.
pub(crate) const EXIT_FAILED: i32 = 2;
/// Interrupted by SIGINT/SIGTERM during a rewrite; progress is saved.
pub(crate) const EXIT_INTERRUPTED: i32 = 3;

/// The exit code of a checking command's findings: 1 when any fails, else 0.
pub(crate) fn findings_exit(findings: &[Finding]) -> i32 {
    if any_fails(findings) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

/// The exit code of a report's outcome: 1 FAIL, else 0 (PASS, or PASS with warnings).
pub(crate) fn outcome_exit(verdict: atrest::report::Status) -> i32 {
    match verdict {
        atrest::report::Status::Fail => EXIT_FINDINGS,
        atrest::report::Status::Pass | atrest::report::Status::Warn => EXIT_OK,
    }
}

/// Runs one command and returns its exit code.
pub(crate) async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Config(ConfigCommand::Check(a)) => commands::config::check(a),
        Command::Keys(KeysCommand::Generate(a)) => commands::config::generate_key(a),
        Command::Keys(KeysCommand::SigningKey(a)) => commands::config::signing_key(a),
        Command::Keys(KeysCommand::Seal(a)) => commands::custody::seal(a),
        Command::Keys(KeysCommand::Unseal(a)) => commands::custody::unseal(&a.dir, &a.open),
        Command::Keys(KeysCommand::ShareUnwrap(a)) => commands::custody::share_unwrap(a),
        Command::Keys(KeysCommand::Combine(a)) => commands::custody::unseal(
            &a.dir,
            &args::OpenFlags {
                identities: Vec::new(),
                shares: a.shares,
            },
        ),
        Command::Scan(a) => commands::scan::run(a).await,
        Command::Drill(a) => commands::custody::drill(a).await,
        Command::Status(a) => commands::status::run(a).await,
        Command::Reencrypt(a) => commands::reencrypt::run(a).await,
        Command::Rotate(c) => commands::rotate::run(c).await,
        Command::Report(a) => commands::report::run(a).await,
        Command::Exporter(a) => commands::exporter::run(a).await,
        Command::Completions(a) => commands::ship::completions(a),
        Command::Man(a) => commands::ship::man(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", with_hint(&e));
            EXIT_FAILED
        }
    }
}

/// The error with its causes (each said once: a cause whose text the message already holds is
/// not repeated), and a hint for the errors a flag can fix. Every command that can raise these
/// errors has the flags the hints name.
pub(crate) fn with_hint(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    // The first error in the chain that a flag can fix decides the hint.
    let hint = e.chain().find_map(hint_for).unwrap_or("");
    format!("{message}{hint}")
}

/// What the admin can do about an error, when a flag fixes it. Every command that can raise
/// these errors has the flags the hints name.
fn hint_for(cause: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use atrest::cluster::ClusterError;
    use atrest::etcd::EtcdError;
    use atrest::kube::KubeError;
    if let Some(e) = cause.downcast_ref::<ClusterError>() {
        return match e {
            ClusterError::NoConfig { .. } => Some(
                "\n  hint: pass --config FILE (or ATREST_CONFIG), or --apiserver-manifest FILE naming --encryption-provider-config",
            ),
            ClusterError::MappedEtcdFile { .. } => {
                Some("\n  hint: pass --cacert, --cert and --key to name the host files directly")
            }
            ClusterError::MappedConfig { .. } | ClusterError::DistributionConfig { .. } => {
                Some("\n  hint: pass --config FILE to name the host file directly")
            }
            ClusterError::ManagedConfig { .. } => Some(
                "\n  hint: atrest scan, status and report still read this cluster (and `atrest reencrypt` rewrites stale objects); run the rotation with the distribution's command, then `atrest scan` to prove the result",
            ),
            // Only scan and report make an unreachable plugin fatal, and only with --verify.
            ClusterError::Kms(_) => {
                Some("\n  without --verify, KMS values are still classified by provider and key ID")
            }
            // Transparent: the inner error is not a separate link of the chain.
            ClusterError::Etcd(inner) => hint_for(inner),
            _ => None,
        };
    }
    match cause.downcast_ref::<EtcdError>() {
        // A refused user or password already names the settings to check (--user,
        // ETCDCTL_USER, ETCDCTL_PASSWORD): the endpoints and TLS files were right.
        Some(EtcdError::Connect { message, .. })
            if message.starts_with("authentication failed") =>
        {
            return None;
        }
        Some(EtcdError::Connect { .. }) => {
            return Some(
                "\n  hint: check --endpoints (or ETCDCTL_ENDPOINTS), and for TLS --cacert/--cert/--key; on a control-plane node atrest reads them from the kube-apiserver manifest",
            );
        }
        Some(_) => return None,
        None => {}
    }
    match cause.downcast_ref::<KubeError>() {
        Some(KubeError::NoConfig(_)) => Some(
            "\n  hint: pass --kubeconfig (or KUBECONFIG); on a kubeadm control-plane node /etc/kubernetes/admin.conf works",
        ),
        _ => None,
    }
}
