//! One file per command: resolve settings, call the library, render, pick the exit code.

pub mod config;
pub mod exporter;
pub mod reencrypt;
pub mod report;
pub mod rotate;
pub mod scan;
pub mod ship;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use atrest::cluster::settings::Flags;

use super::args::{ConfigSource, EtcdFlags};

/// The flags every command shares, as the library's settings resolver takes them.
pub fn flags(
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
pub fn stop_on_signal() -> Arc<AtomicBool> {
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
