//! kube-controller-manager of the newest pair, started when a test asks: the storage version
//! migrator (`storage-version-migrator-controller`) and the garbage collector whose informers it
//! reads, with the admin kubeconfig, no leader election and no serving port.

use std::process::Command;

use super::ControlPlane;
use crate::proc::Proc;

impl ControlPlane {
    /// Starts kube-controller-manager with the storage version migrator, as the admin. Panics
    /// with how to get the binary when the test bed's folder lacks it (only the newest pair
    /// builds it).
    pub fn start_controller_manager(&mut self) {
        let admin = self.kubeconfig.clone();
        self.start_controller_manager_with(&admin);
    }

    /// Like [`Self::start_controller_manager`], with the credentials of `kubeconfig` (for
    /// example [`ControlPlane::controller_manager_kubeconfig`], with the rights a test granted).
    pub fn start_controller_manager_with(&mut self, kubeconfig: &std::path::Path) {
        let bin = self.bins.join("kube-controller-manager");
        assert!(
            bin.is_file(),
            "this test needs the real kube-controller-manager, but {} is missing.\n\
             Build it with: scripts/k8s/build.sh   (the newest pair; or run scripts/test.sh)",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--controllers=garbage-collector-controller,storage-version-migrator-controller"
                .to_string(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--v=2".into(),
        ]);
        let log = self.path().join("kube-controller-manager.log");
        self.controller_manager = Some(Proc::spawn("kube-controller-manager", cmd, log));
    }

    /// Stops kube-controller-manager (SIGKILL), if it runs.
    pub fn stop_controller_manager(&mut self) {
        if let Some(mut p) = self.controller_manager.take() {
            p.kill();
        }
    }

    /// The last lines of kube-controller-manager's log, for a failing assertion.
    pub fn controller_manager_log(&self) -> String {
        self.controller_manager
            .as_ref()
            .map(Proc::log_tail)
            .unwrap_or_default()
    }
}
