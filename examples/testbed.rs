//! Starts the test bed's local control plane (real etcd + kube-apiserver) for scripts:
//!
//!   cargo run --example testbed -- ENV_FILE [CONFIG_FILE]
//!
//! When ready it writes ENV_FILE with shell `export` lines (KUBECONFIG, ETCDCTL_ENDPOINTS,
//! ATREST_CONFIG, …) and runs until it gets SIGINT/SIGTERM, then tears everything down.
//! SIGHUP restarts kube-apiserver (it then loads the config file at once, without waiting for
//! the one-minute reload) and appends a line to ENV_FILE.restarts when it is ready again.
//! ATREST_TESTBED_CONTROLLER_MANAGER=1 also runs kube-controller-manager with the storage
//! version migrator (`reencrypt --engine svm`).

use atrest_testbed as support;

use std::io::Write;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(env_file) = args.next() else {
        eprintln!("usage: testbed ENV_FILE [CONFIG_FILE]");
        std::process::exit(2);
    };
    let config_yaml = args
        .next()
        .map(|p| std::fs::read_to_string(p).expect("read CONFIG_FILE"));
    let mut cp = support::ControlPlane::start(support::Options {
        config_yaml,
        ..Default::default()
    })
    .await;
    if std::env::var_os("ATREST_TESTBED_CONTROLLER_MANAGER").is_some_and(|v| v == "1") {
        cp.start_controller_manager();
    }
    let manifest = cp.path().join("kube-apiserver.yaml");
    cp.write_manifest(&manifest);
    let lines = [
        ("ATREST_TESTBED_DIR", cp.path().display().to_string()),
        ("KUBECONFIG", cp.kubeconfig.display().to_string()),
        ("ETCDCTL_ENDPOINTS", cp.etcd_endpoint.clone()),
        ("ATREST_CONFIG", cp.config_path.display().to_string()),
        ("ATREST_APISERVER_MANIFEST", manifest.display().to_string()),
        ("ATREST_APISERVER_URL", cp.url().to_string()),
        ("ATREST_K8S_BIN", cp.bins.display().to_string()),
    ];
    let tmp = format!("{env_file}.tmp");
    let mut f = std::fs::File::create(&tmp).expect("write ENV_FILE");
    for (k, v) in lines {
        writeln!(f, "export {k}={}", shell_quote(&v)).unwrap();
    }
    drop(f);
    std::fs::rename(&tmp, &env_file).unwrap();
    eprintln!(
        "testbed: control plane ready at {} (etcd {})",
        cp.url(),
        cp.etcd_endpoint
    );

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).unwrap();
    let mut hup = signal(SignalKind::hangup()).unwrap();
    let mut restarts = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                cp.restart_apiserver(0).await;
                restarts += 1;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(format!("{env_file}.restarts"))
                    .unwrap();
                writeln!(f, "{restarts}").unwrap();
                eprintln!("testbed: kube-apiserver restarted");
            }
        }
    }
    eprintln!("testbed: stopping");
    drop(cp);
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
