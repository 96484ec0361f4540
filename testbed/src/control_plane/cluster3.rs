//! A multi-member etcd cluster, as in a stacked HA control plane: the control plane's own etcd
//! is grown by runtime reconfiguration (`member add`, then the new member started with
//! `--initial-cluster-state=existing`), one member at a time, each a voting member with its own
//! data folder, client and peer port. Apiservers added afterwards can talk to their own member
//! (`--etcd-servers=`), as each control-plane node's apiserver talks to its local etcd.

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client as EtcdClient, ConnectOptions};

use super::ControlPlane;
use crate::proc::{Proc, free_port};

/// The members a [`ControlPlane::grow_etcd_cluster`] added; they are killed when this is dropped.
pub struct EtcdMembers {
    /// The client URL of every member, the control plane's own first.
    pub endpoints: Vec<String>,
    /// The processes of the added members (the first member is the control plane's).
    pub procs: Vec<Proc>,
}

impl EtcdMembers {
    /// How many members etcd itself lists as started (named), asked through `endpoint`.
    pub async fn started(&self, endpoint: &str) -> usize {
        let mut c = connect(endpoint).await.expect("connect to an etcd member");
        let list = c.member_list().await.expect("etcd member list");
        list.members()
            .iter()
            .filter(|m| !m.name().is_empty())
            .count()
    }
}

async fn connect(endpoint: &str) -> Result<EtcdClient, etcd_client::Error> {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    EtcdClient::connect([endpoint], Some(opts)).await
}

impl ControlPlane {
    /// Grows this control plane's etcd to `members` voting members (plain HTTP etcd only) and
    /// waits until etcd lists every one as started.
    pub async fn grow_etcd_cluster(&self, members: usize) -> EtcdMembers {
        assert!(
            self.etcd_tls.is_none(),
            "grow_etcd_cluster supports plain HTTP etcd"
        );
        let arg = |name: &str| {
            self.etcd_args
                .iter()
                .find_map(|a| a.strip_prefix(&format!("--{name}=")))
                .expect("the first member's flag")
                .to_string()
        };
        let mut cluster = vec![format!(
            "{}={}",
            arg("name"),
            arg("initial-advertise-peer-urls")
        )];
        let mut out = EtcdMembers {
            endpoints: vec![self.etcd_endpoint.clone()],
            procs: Vec::new(),
        };
        for n in 2..=members {
            let name = format!("member-{n}");
            let (client_port, peer_port) = (free_port(), free_port());
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            // etcd refuses a new member until the last one has been connected for a few seconds
            // ("unhealthy cluster"): retried until it accepts.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match self.etcd().await.member_add([peer.as_str()], None).await {
                    Ok(_) => break,
                    Err(e) if e.to_string().contains("unhealthy cluster") => {
                        assert!(Instant::now() < deadline, "etcd member add {name}: {e}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("etcd member add {name}: {e}"),
                }
            }
            cluster.push(format!("{name}={peer}"));
            let mut cmd = Command::new(self.bins.join("etcd"));
            cmd.args([
                format!("--name={name}"),
                format!(
                    "--data-dir={}",
                    self.path().join(format!("etcd-{name}")).display()
                ),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={}", cluster.join(",")),
                "--initial-cluster-state=existing".into(),
                "--log-level=warn".into(),
                "--quota-backend-bytes=8589934592".into(),
            ]);
            let log = self.path().join(format!("etcd-{name}.log"));
            let mut p = Proc::spawn("etcd", cmd, log);
            out.endpoints.push(client.clone());
            // Joined when the cluster lists it by name and it answers reads itself.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = p.exited() {
                    panic!("etcd {name} exited with {status}:\n{}", p.log_tail());
                }
                let listed = out.started(&self.etcd_endpoint).await == n;
                let answers = match connect(&client).await {
                    Ok(mut c) => c.get("/", None).await.is_ok(),
                    Err(_) => false,
                };
                if listed && answers {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd {name} did not join within 60 s:\n{}",
                    p.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            out.procs.push(p);
        }
        out
    }
}
