//! `atrest rotate --sync-command` on an HA control plane: three kube-apiservers (three
//! identities, each reading its own copy of the config in its own folder, each talking to its own
//! member of a three-member etcd cluster). The sync command copies each write to the other two
//! nodes; a failing one stops the step with nothing lost, and a node it misses blocks promote.

use atrest_testbed as support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::control_plane::cluster3::EtcdMembers;
use support::scan_json::{stored, verdict};
use support::{ControlPlane, create_namespace, create_secrets, resource};
use support::{text, write_private};

const SECRETS: usize = 20;

/// The control plane of three nodes: node A is the test bed's own apiserver (it reads
/// `cp.config_path`), B and C read their own copies and talk to their own etcd member.
struct Ha {
    cp: ControlPlane,
    _etcd: EtcdMembers,
    /// Config file of each node, A first.
    files: [PathBuf; 3],
    /// `--apiserver` flags for the three.
    urls: Vec<String>,
}

async fn ha_cluster() -> Ha {
    let mut cp = support::key1_secrets_cluster().await;
    let etcd = cp.grow_etcd_cluster(3).await;
    assert_eq!(
        etcd.started(&etcd.endpoints[2]).await,
        3,
        "three etcd members"
    );
    let mut files = vec![cp.config_path.clone()];
    for (i, (node, bind)) in [("node-b", "127.0.0.2"), ("node-c", "127.0.0.3")]
        .into_iter()
        .enumerate()
    {
        let dir = cp.path().join(node);
        std::fs::create_dir(&dir).unwrap();
        let copy = dir.join("encryption-config.yaml");
        std::fs::copy(&cp.config_path, &copy).unwrap();
        cp.add_apiserver_as(
            bind,
            Some(node),
            &[
                format!("--encryption-provider-config={}", copy.display()),
                format!("--etcd-servers={}", etcd.endpoints[i + 1]),
            ],
        )
        .await;
        files.push(copy);
    }
    let client = cp.client().await;
    create_namespace(&client, "r").await;
    let names: Vec<String> = (0..SECRETS).map(|i| format!("s-{i:03}")).collect();
    create_secrets(&client, "r", &names, "rotate-me").await;
    support::create_rich_objects(&client, "r", 3).await;
    let urls = cp
        .apiservers
        .iter()
        .map(|a| format!("--apiserver={}", a.url))
        .collect();
    Ha {
        cp,
        _etcd: etcd,
        files: files.try_into().unwrap(),
        urls,
    }
}

impl Ha {
    /// A sync script in the test folder: `body` runs with `set -e`.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.cp.path().join(name);
        write_private(&path, format!("set -e\n{body}\n").as_bytes());
        format!("sh {}", path.display())
    }

    /// Copies the written file to the listed nodes' files (atomically: copy, then rename).
    fn copy_to(&self, nodes: &[usize]) -> String {
        nodes
            .iter()
            .map(|&n| {
                let f = self.files[n].display();
                format!("cp \"$ATREST_CONFIG_FILE\" {f}.tmp && mv {f}.tmp {f}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn rotate(&self, step: &str, extra: &[String]) -> Command {
        let mut cmd = self.cp.atrest_command(&["rotate", step]);
        cmd.args(&self.urls).args(extra);
        cmd
    }

    fn hash(&self, node: usize) -> String {
        atrest::config::config_hash(&std::fs::read(&self.files[node]).unwrap())
    }

    fn state(&self) -> Value {
        let t = std::fs::read_to_string(self.cp.state_dir().join("rotation.json")).unwrap();
        serde_json::from_str(&t).unwrap()
    }

    /// The providers of node A's secrets rule, as labels.
    fn labels(&self) -> Vec<String> {
        atrest::config::load(&self.files[0])
            .unwrap()
            .config
            .resolve(&atrest::GroupResource::secrets())
            .read_keys()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Every secret of namespace `r`, whole (API and opened etcd bytes).
    async fn data(&self) -> support::Objects {
        self.cp.objects("r", &[support::SECRETS]).await
    }

    /// Every apiserver reports the hash of node A's file, and every node's file is that file.
    async fn assert_converged(&self) {
        let want = self.hash(0);
        for n in 0..3 {
            assert_eq!(self.hash(n), want, "node {n}'s file");
            assert_eq!(
                self.cp.loaded_config_hash(n).await.as_deref(),
                Some(want.as_str()),
                "apiserver {n} runs {want}"
            );
        }
    }

    /// Every secret is stored with `label` (scan --verify), nothing unreadable.
    fn assert_secrets_on(&self, label: &str) {
        let (code, stdout, stderr) =
            self.cp
                .atrest(&["scan", "--verify", "-o", "json", "--resource", "secrets"]);
        assert_eq!(code, 0, "secrets all on {label}, the write key: {stderr}");
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        let r = resource(&doc, "secrets");
        assert_eq!(
            stored(r).into_keys().collect::<Vec<_>>(),
            [label],
            "secrets all on {label}: {r:#}"
        );
        for v in ["undecryptable", "unknown_key", "corrupt"] {
            assert_eq!(verdict(r, v), 0, "{v}: {r:#}");
        }
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The apiservers a not-converged error lists as lagging (its `  - https://…` lines).
fn lagging(err: &str) -> Vec<String> {
    err.lines()
        .filter(|l| l.starts_with("  - https://"))
        .map(str::to_string)
        .collect()
}

/// A write through each node's apiserver lands on key2 in etcd.
async fn writes_via_each_node_use_key2(ha: &Ha) {
    for i in 0..3 {
        let client = ha.cp.client_for(i).await;
        create_secrets(&client, "r", &[format!("via-{i}")], "x").await;
        let (v, _) = ha
            .cp
            .raw(&format!("/registry/secrets/r/via-{i}"))
            .await
            .unwrap();
        assert!(v.starts_with(b"k8s:enc:aescbc:v1:key2:"), "via node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_run_with_a_sync_command_converges_all_three_apiservers_on_the_new_key() {
    let mut ha = ha_cluster().await;
    let before = ha.data().await;
    let sync = ha.script(
        "sync.sh",
        &format!(
            "{}\necho \"copied $ATREST_CONFIG_SHA256 for $ATREST_STEP\"",
            ha.copy_to(&[1, 2])
        ),
    );
    let cmd = ha.rotate(
        "run",
        &[
            "--provider=aescbc".into(),
            "--key-name=key2".into(),
            format!("--sync-command={sync}"),
            "--timeout=120".into(),
        ],
    );
    let out = ha.cp.run_restarting_expect(cmd, 0).await;
    let err = stderr(&out);
    // One sync per config write: prepare, promote, prune.
    for step in ["prepare", "promote", "prune"] {
        assert!(
            err.lines()
                .any(|l| l.contains("sync: copied ") && l.ends_with(&format!(" for {step}"))),
            "{step}: {err}"
        );
    }
    assert_eq!(
        err.matches(&format!("sync command `{sync}` succeeded"))
            .count(),
        3,
        "{err}"
    );
    assert_eq!(ha.labels(), ["aescbc:key2"]);
    ha.assert_converged().await;
    ha.assert_secrets_on("aescbc:key2");
    before.assert_kept(&ha.data().await, "every object kept");
    writes_via_each_node_use_key2(&ha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sync_command_stops_with_exit_2_and_a_rerun_completes() {
    let mut ha = ha_cluster().await;
    let before = ha.data().await;
    let old = [ha.hash(0), ha.hash(1), ha.hash(2)];
    let failing = ha.script(
        "sync-fails.sh",
        "echo 'node-b: connection refused' >&2\nexit 1",
    );
    let prepare_args = |sync: &str| -> Vec<String> {
        vec![
            "--provider=aescbc".into(),
            "--key-name=key2".into(),
            format!("--sync-command={sync}"),
            "--timeout=120".into(),
        ]
    };
    let out = ha
        .cp
        .run_restarting_expect(ha.rotate("run", &prepare_args(&failing)), 2)
        .await;
    let err = stderr(&out);
    assert!(
        err.contains(&format!("sync command `{failing}` exited with status 1"))
            && err.contains("node-b: connection refused"),
        "the error names the command, its status and its stderr: {err}"
    );
    // Nothing else changed: the other nodes keep their file, the write on node A is pending
    // (not committed), the previous file is backed up, nothing is stored with key2.
    assert_eq!([ha.hash(1), ha.hash(2)], [old[1].clone(), old[2].clone()]);
    assert_ne!(ha.hash(0), old[0]);
    let st = ha.state();
    assert_eq!(st["pending"]["step"], "prepare", "{st:#}");
    assert_eq!(st["pending"]["hash"], ha.hash(0).as_str(), "{st:#}");
    assert_ne!(
        st["expected_hash"],
        ha.hash(0).as_str(),
        "not committed: {st:#}"
    );
    assert!(
        st["rotation"]["prepared_at"].is_null(),
        "not committed: {st:#}"
    );
    let backups: Vec<String> = std::fs::read_dir(ha.cp.state_dir().join("backups"))
        .unwrap()
        .map(|e| atrest::config::config_hash(&std::fs::read(e.unwrap().path()).unwrap()))
        .collect();
    assert_eq!(backups, [old[0].clone()]);
    assert_eq!(
        ha.labels(),
        ["aescbc:key1", "aescbc:key2", "identity"],
        "key2 is only a read key"
    );
    ha.assert_secrets_on("aescbc:key1");

    // The same step again, with a working command: it syncs that write first, then finishes.
    let sync = ha.script("sync.sh", &ha.copy_to(&[1, 2]));
    let out = ha
        .cp
        .run_restarting_expect(ha.rotate("prepare", &prepare_args(&sync)), 0)
        .await;
    assert!(
        stderr(&out).contains("completed the config write of `prepare`"),
        "{}",
        text(&out)
    );
    let st = ha.state();
    assert!(st["pending"].is_null(), "{st:#}");
    assert_eq!(st["rotation"]["stage"], "prepared", "{st:#}");
    assert!(
        st["rotation"]["prepared_at"].is_string(),
        "committed: {st:#}"
    );
    ha.assert_converged().await;

    // And the rest of the rotation.
    ha.cp
        .run_restarting_expect(ha.rotate("run", &prepare_args(&sync)), 0)
        .await;
    assert_eq!(ha.labels(), ["aescbc:key2"]);
    ha.assert_converged().await;
    ha.assert_secrets_on("aescbc:key2");
    before.assert_kept(&ha.data().await, "every object kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_sync_misses_is_named_and_blocks_promote() {
    let mut ha = ha_cluster().await;
    let c_url = ha.cp.apiservers[2].url.clone();
    let c_old = ha.hash(2);
    // The sync reaches node B only.
    let partial = ha.script("sync-b-only.sh", &ha.copy_to(&[1]));
    let sync = format!("--sync-command={partial}");
    let out = ha
        .cp
        .run_restarting_expect(
            ha.rotate(
                "prepare",
                &[
                    "--provider=aescbc".into(),
                    "--key-name=key2".into(),
                    sync.clone(),
                    "--timeout=15".into(),
                ],
            ),
            2,
        )
        .await;
    let err = stderr(&out);
    let lag = lagging(&err);
    assert!(
        lag.len() == 1 && lag[0].contains(&c_url),
        "only node C lags: {err}"
    );
    assert_eq!(ha.hash(1), ha.hash(0), "node B has the new file");
    assert_eq!(ha.hash(2), c_old, "node C does not");
    assert_eq!(
        ha.cp.loaded_config_hash(2).await.as_deref(),
        Some(c_old.as_str())
    );

    // promote refuses while C runs the old file, names it, and changes nothing.
    let out = ha
        .cp
        .run_restarting_expect(ha.rotate("promote", &[sync, "--timeout=10".into()]), 2)
        .await;
    let err = stderr(&out);
    let lag = lagging(&err);
    assert!(
        lag.len() == 1 && lag[0].contains(&c_url),
        "promote names node C: {err}"
    );
    assert_eq!(ha.state()["rotation"]["stage"], "prepared");
    assert_eq!(ha.labels(), ["aescbc:key1", "aescbc:key2", "identity"]);
    ha.assert_secrets_on("aescbc:key1");
}
