//! One file per command: resolve settings, call the library, render, pick the exit code.

pub(super) mod config;
pub(super) mod custody;
pub(super) mod exporter;
pub(super) mod reencrypt;
pub(super) mod report;
pub(super) mod rotate;
pub(super) mod scan;
pub(super) mod ship;
pub(super) mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use atrest::cluster::settings::Flags;

use super::args::{ConfigSource, EtcdFlags};
use atrest::cluster::Context;
use atrest::kube::Convergence;
use atrest::model::census::ScanReport;
use atrest::report::{ApiserverSurvey, Policy};
use atrest::state::RotationState;

/// The flags every command shares, as the library's settings resolver takes them.
pub(super) fn flags(
    source: &ConfigSource,
    etcd: Option<&EtcdFlags>,
    kubeconfig: Option<PathBuf>,
) -> Flags {
    let etcd = etcd.cloned().unwrap_or_default();
    Flags {
        config: source.config.clone(),
        apiserver_manifest: source.apiserver_manifest.clone(),
        endpoints: etcd.endpoints,
        cacert: etcd.cacert,
        cert: etcd.cert,
        key: etcd.key,
        user: etcd.user,
        etcd_prefix: etcd.etcd_prefix,
        kubeconfig,
    }
}

/// SIGINT/SIGTERM set `stop`: the engines stop issuing writes, finish those in flight, save.
pub(super) fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "atrest: signal received: finishing the writes in flight and saving the checkpoint"
        );
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

/// The audit policy: `--policy FILE`, else the built-in one (secrets required, residue and
/// sensitive plaintext warn).
pub(super) fn policy(path: Option<&std::path::Path>) -> anyhow::Result<Policy> {
    Ok(match path {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    })
}

/// What each apiserver reports having loaded, when atrest has a way to ask
/// ([`atrest::cluster::Context::apiservers_to_ask`]).
pub(super) async fn survey_apiservers(ctx: &Context, explicit: &[String]) -> Option<Convergence> {
    let apiservers = ctx.apiservers_to_ask(explicit).await?;
    Some(apiservers.survey(&ctx.config.hash).await)
}

/// The state folder to read, saying on stderr when state still sits in the old default.
pub(super) fn state_dir_to_read(ctx: &Context, given: Option<&std::path::Path>) -> PathBuf {
    let dir = ctx.state_dir(given);
    if let Some(note) = dir.note() {
        eprintln!("atrest: {note}");
    }
    dir.to_read().to_path_buf()
}

/// Judges `scan` ([`atrest::report::findings::judge`]) with the rotation in progress recorded
/// in the state folder (an unreadable state counts as none: every stale value is then a
/// finding).
pub(super) fn judge(
    ctx: &Context,
    scan: &mut ScanReport,
    policy: &Policy,
    state_dir: &std::path::Path,
    apiservers: Option<&ApiserverSurvey>,
) {
    let rotation = RotationState::load(state_dir, &ctx.config.path)
        .ok()
        .and_then(|s| s.rotation);
    atrest::report::findings::judge(scan, &ctx.config, policy, rotation.as_ref(), apiservers);
}
