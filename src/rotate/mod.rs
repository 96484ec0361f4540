//! The key-rotation runbook as a guarded state machine: prepare (new key readable everywhere)
//! → promote (new key writes) → reencrypt (every object rewritten, proven in etcd) → prune (old
//! keys removed only after a fresh scan shows nothing uses them, and archived). Each step checks
//! that every apiserver runs the config it expects, records where it is, and can be re-run
//! after a crash at any point.

pub mod converge;
pub mod snapshot;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

pub use converge::{ApiserverStatus, Apiservers, Convergence};
pub use state::{KeyRecord, PendingWrite, Rotation, SnapshotRecord, Stage, State};

use crate::GroupResource;
use crate::codec::{Options, ProviderTable};
use crate::config::{
    self, ConfigError, EditError, EncryptionConfig, KmsProvider, KmsVersion, LoadedConfig,
    Provider, ResourceRule, RotationTarget,
};
use crate::etcd::EtcdError;
use crate::etcd::scan::{self, ClassifyConfig, Item, ScanOptions, Visitor};
use crate::fsutil;
use crate::keys::{self, Key, KeyProvider, archive};
use crate::kms::KmsPlugins;
use crate::kube::KubeError;
use crate::migrate::{self, MigrateError, ReencryptOptions, ReencryptReport};

pub const ARCHIVE_FILE: &str = "key-archive.yaml";
pub const CHECKPOINT_FILE: &str = "reencrypt-checkpoint.json";

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Changed(Box<ConfigChanged>),
    #[error("{0}")]
    Stage(String),
    /// The requested end state is already there (a re-run after the rotation finished).
    #[error("{0}")]
    NothingToDo(String),
    #[error(
        "not every apiserver runs {want} after {waited:?}:\n{}\n{hint}",
        .lagging.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
    )]
    NotConverged {
        want: String,
        waited: Duration,
        lagging: Vec<String>,
        hint: String,
    },
    #[error(
        "prune refused: {count} stored objects are not on their write key, so their keys are still needed:\n{}\n  Run `atrest rotate reencrypt` again (or `atrest reencrypt`), then prune.",
        .objects.iter().map(|o| format!("  - {o}")).collect::<Vec<_>>().join("\n")
    )]
    PruneRefused { count: u64, objects: Vec<String> },
    #[error(
        "canary secret written through {url} is stored as {got}, not the write key {want}: that apiserver does not write with the promoted key"
    )]
    Canary {
        url: String,
        got: String,
        want: String,
    },
    #[error("reencrypt did not finish: {0}")]
    Incomplete(String),
    #[error("interrupted; run the same command again to continue")]
    Interrupted,
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Migrate(Box<MigrateError>),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Kms(#[from] crate::kms::KmsError),
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
}

impl From<MigrateError> for RotateError {
    fn from(e: MigrateError) -> Self {
        RotateError::Migrate(Box::new(e))
    }
}

/// The config file is not the one atrest last wrote: what differs, by key name and provider.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} changed behind atrest's back (it expected {expected}, the file is {found}):\n{}\n  atrest stops rather than overwrite it. If the change is intended, finish or abort the rotation from a file atrest wrote (the backups are in {backups}), or move {state} away to start over from the current file.",
    .diff.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n")
)]
pub struct ConfigChanged {
    pub path: PathBuf,
    pub expected: String,
    pub found: String,
    pub diff: Vec<String>,
    pub backups: PathBuf,
    pub state: PathBuf,
}

/// What `prepare` moves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Key(KeyProvider),
    KmsV2 {
        name: String,
        endpoint: String,
        timeout: Option<String>,
    },
    Identity,
}

#[derive(Clone, Debug)]
pub enum SnapshotChoice {
    /// In the state folder.
    Default,
    Path(PathBuf),
    Skip,
}

#[derive(Clone, Debug)]
pub struct PrepareRequest {
    pub target: TargetSpec,
    pub key_name: Option<String>,
    /// Empty: every resource the config names (and secrets).
    pub resources: Vec<GroupResource>,
    pub snapshot: SnapshotChoice,
}

/// Where the rotation runs and how patient it is.
pub struct Rotator<'a> {
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub etcd: &'a etcd_client::Client,
    pub etcd_prefix: String,
    pub apiservers: Apiservers,
    pub wait_timeout: Duration,
    /// From the manifest: whether the apiserver reloads the config by itself.
    pub automatic_reload: Option<bool>,
    pub canary_namespace: String,
    /// Template for the re-encryption pass (concurrency, QPS, stop flag).
    pub reencrypt: ReencryptOptions,
    /// Progress messages for the admin (stderr in the CLI).
    pub say: &'a (dyn Fn(&str) + Sync),
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Rotator<'_> {
    fn load_state(&self) -> Result<State, RotateError> {
        Ok(State::load(&self.state_dir, &self.config_path)?)
    }

    /// Loads the config and checks it is the file atrest last wrote; completes a write that a
    /// crash interrupted between writing the file and recording it.
    fn load_checked(&self, st: &mut State) -> Result<LoadedConfig, RotateError> {
        let loaded = config::load(&self.config_path)?;
        if let Some(p) = st.pending.clone() {
            if loaded.hash == p.hash {
                self.commit(st, p)?;
            } else {
                // The write never happened; the step will be redone.
                st.pending = None;
                st.save(&self.state_dir)?;
            }
        }
        match &st.expected_hash {
            Some(h) if *h != loaded.hash => Err(RotateError::Changed(Box::new(ConfigChanged {
                path: self.config_path.clone(),
                expected: h.clone(),
                found: loaded.hash.clone(),
                diff: config::describe_diff(&st.expected_layout, &config::layout(&loaded.config)),
                backups: self.state_dir.join("backups"),
                state: State::path(&self.state_dir),
            }))),
            _ => Ok(loaded),
        }
    }

    fn commit(&self, st: &mut State, p: PendingWrite) -> Result<(), RotateError> {
        st.expected_hash = Some(p.hash.clone());
        st.expected_layout = p.layout.clone();
        if let Some(r) = st.rotation.as_mut() {
            match p.stage {
                Some(stage) => {
                    r.stage = stage;
                    let t = Some(now());
                    match stage {
                        Stage::Prepared => r.prepared_at = t,
                        Stage::Promoted => r.promoted_at = t,
                        Stage::Reencrypted => r.reencrypted_at = t,
                    }
                }
                None => {
                    // The rotation is finished (pruned, or aborted before promote).
                    let mut done = st.rotation.take().expect("checked above");
                    done.finished_at = Some(now());
                    st.history.push(done);
                }
            }
        }
        st.pending = None;
        st.save(&self.state_dir)?;
        Ok(())
    }

    /// Writes a new config: intent recorded first, a timestamped backup, the atomic write,
    /// then the commit. The new key material reaches the disk here, before any use.
    fn write_config(
        &self,
        st: &mut State,
        new: &EncryptionConfig,
        stage: Option<Stage>,
    ) -> Result<String, RotateError> {
        let text = config::render_yaml(new);
        let hash = config::config_hash(text.as_bytes());
        // Refuse to write anything the apiserver would refuse to load.
        config::parse_str(&self.config_path, &text)?;
        let pending = PendingWrite {
            hash: hash.clone(),
            stage,
            layout: config::layout(new),
        };
        st.pending = Some(pending.clone());
        st.save(&self.state_dir)?;
        if self.config_path.exists() {
            let b = fsutil::backup(&self.config_path, &self.state_dir.join("backups"))?;
            (self.say)(&format!("backup of the previous config: {}", b.display()));
        }
        fsutil::write_atomic(&self.config_path, text.as_bytes(), 0o600)?;
        (self.say)(&format!("wrote {} ({hash})", self.config_path.display()));
        self.commit(st, pending)?;
        Ok(hash)
    }

    /// Waits until every apiserver reports `want`, showing who lags.
    pub async fn wait_converged(&self, want: &str) -> Result<Convergence, RotateError> {
        match self.automatic_reload {
            Some(false) => (self.say)(&format!(
                "kube-apiserver runs without --encryption-provider-config-automatic-reload: restart every kube-apiserver now so it loads {} ({want}); waiting up to {:?}",
                self.config_path.display(),
                self.wait_timeout
            )),
            _ => (self.say)(&format!(
                "waiting for every apiserver to load {want} (automatic reload polls once a minute; up to {:?})",
                self.wait_timeout
            )),
        }
        let mut last: Vec<String> = Vec::new();
        let mut told_copy = false;
        let say = self.say;
        let path = self.config_path.display().to_string();
        let mut update = |c: &Convergence| {
            if c.leases.len() > 1 && !told_copy {
                say(&format!(
                    "{} apiservers hold identity leases: copy {path} to the same path on every control-plane node (by your own means); atrest waits until each reports {want}",
                    c.leases.len()
                ));
                told_copy = true;
            }
            let lines: Vec<String> = c
                .apiservers
                .iter()
                .map(|a| {
                    format!(
                        "  {} {}",
                        a.url,
                        a.config_hash
                            .as_deref()
                            .or(a.error.as_deref())
                            .unwrap_or("no hash")
                    )
                })
                .collect();
            if lines != last {
                for l in &lines {
                    say(l);
                }
                last = lines;
            }
        };
        match self.apiservers.wait(want, self.wait_timeout, &mut update).await {
            Ok(c) => {
                (self.say)(&format!("every apiserver ({}) runs {want}", c.apiservers.len()));
                Ok(c)
            }
            Err(c) => Err(RotateError::NotConverged {
                want: want.to_string(),
                waited: self.wait_timeout,
                lagging: c.lagging(),
                hint: match self.automatic_reload {
                    Some(false) => "  Restart the lagging kube-apiservers so they load the file, then run the same command again.".into(),
                    _ => format!("  Make sure {} is the same on every control-plane node; a reload failure shows in apiserver_encryption_config_controller_automatic_reloads_total{{status=\"failure\"}}. Then run the same command again.", self.config_path.display()),
                },
            }),
        }
    }

    /// The KMS v2 plugins of a config (none without KMS v2 providers); unreachable is an error.
    async fn plugins(&self, config: &EncryptionConfig) -> Result<Option<KmsPlugins>, RotateError> {
        if KmsPlugins::providers(config).is_empty() {
            return Ok(None);
        }
        let (plugins, errors) = KmsPlugins::connect(config).await;
        if let Some(e) = errors.into_iter().next() {
            return Err(e.into());
        }
        for s in plugins.status() {
            (self.say)(&format!(
                "KMS plugin {} at {}: healthz {}, key ID {}",
                s.provider, s.endpoint, s.healthz, s.key_id
            ));
        }
        Ok(Some(plugins))
    }

    /// Before a KMS provider writes: its plugin answers `Status` healthy, and every apiserver's
    /// `/readyz/kms-providers` check passes.
    async fn kms_healthy(&self, config: &EncryptionConfig) -> Result<(), RotateError> {
        if let Some(p) = self.plugins(config).await? {
            for s in p.status() {
                if s.healthz != "ok" {
                    return Err(RotateError::Stage(format!(
                        "KMS plugin {} at {} reports healthz {:?}, not \"ok\": not promoting",
                        s.provider, s.endpoint, s.healthz
                    )));
                }
            }
        }
        for url in self.apiservers.urls().await {
            let api = self.apiservers.base.for_url(&url)?;
            let (status, body) = api.get_text("/readyz/kms-providers").await?;
            if status != 200 {
                return Err(RotateError::Stage(format!(
                    "{url}/readyz/kms-providers answers {status}: {}: not promoting",
                    body.trim()
                )));
            }
            (self.say)(&format!("{url}/readyz/kms-providers: ok"));
        }
        Ok(())
    }

    /// Waits until every apiserver's last KMS `Status` returned the key ID the plugin reports now;
    /// before that, the apiserver does not consider values on the old key ID stale.
    async fn wait_kms_key_ids(&self, plugins: &KmsPlugins) -> Result<(), RotateError> {
        let want: BTreeMap<String, String> = plugins
            .current_key_ids()
            .into_iter()
            .map(|(p, k)| (p, converge::id_hash(&k)))
            .collect();
        let deadline = std::time::Instant::now() + self.wait_timeout;
        loop {
            let mut lagging = Vec::new();
            for url in self.apiservers.urls().await {
                let api = self.apiservers.base.for_url(&url)?;
                let seen = crate::kube::metrics::kms_key_id_hashes(&api).await?;
                for (provider, hash) in &want {
                    if seen.get(provider) != Some(hash) {
                        lagging.push(format!("{url}: provider {provider} last saw key ID hash {} (the plugin's current key ID is {hash})", seen.get(provider).map(String::as_str).unwrap_or("none")));
                    }
                }
            }
            if lagging.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(RotateError::NotConverged {
                    want: "the KMS plugin's current key ID".into(),
                    waited: self.wait_timeout,
                    lagging,
                    hint: "  kube-apiserver asks the plugin's Status about once a minute; wait, then run the same command again.".into(),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    fn rotation<'s>(&self, st: &'s State, step: &str) -> Result<&'s Rotation, RotateError> {
        st.rotation.as_ref().ok_or_else(|| RotateError::Stage(format!("no rotation in progress (state {}); start one with `atrest rotate prepare`, not `{step}`", State::path(&self.state_dir).display())))
    }

    fn require_stage(&self, st: &State, step: &str, want: Stage) -> Result<(), RotateError> {
        let r = self.rotation(st, step)?;
        if r.stage != want {
            return Err(RotateError::Stage(format!(
                "`atrest rotate {step}` needs stage {want:?}, but the rotation to {} is at {:?}: the next step is `{}`",
                r.target,
                r.stage,
                r.stage.next_command()
            )));
        }
        Ok(())
    }

    /// Step 1: a new key (or KMS provider, or identity) becomes a read key everywhere.
    pub async fn prepare(&self, req: &PrepareRequest) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        if let Some(r) = &st.rotation {
            return Err(RotateError::Stage(format!(
                "a rotation to {} is already at stage {:?}: run `{}` (or `atrest rotate abort`)",
                r.target,
                r.stage,
                r.stage.next_command()
            )));
        }
        let loaded = self.load_checked(&mut st)?;
        let mut cfg = loaded.config.clone();
        // Secrets must be covered: an explicit identity rule changes nothing the apiserver does.
        if cfg.resolve(&GroupResource::secrets()).entries.is_empty() {
            cfg.rules.insert(
                0,
                ResourceRule {
                    resources: vec!["secrets".into()],
                    providers: vec![Provider::Identity],
                },
            );
            (self.say)(
                "secrets were not covered by any rule: adding `secrets` (identity, as before) to rotate them too",
            );
        }
        let requested: Vec<GroupResource> = if req.resources.is_empty() {
            cfg.named_resources()
        } else {
            let mut v = req.resources.clone();
            if !v.contains(&GroupResource::secrets()) {
                v.push(GroupResource::secrets());
            }
            v
        };
        let rules = config::rules_for(&cfg, &requested);
        // Every resource of a rule it edits is rotated too: they share the rule's keys.
        let mut resources: Vec<String> = Vec::new();
        for &r in &rules {
            for name in &cfg.rules[r].resources {
                if !resources.contains(name) {
                    resources.push(name.clone());
                }
            }
        }
        let target = match &req.target {
            TargetSpec::Key(p) => {
                let name = req
                    .key_name
                    .clone()
                    .unwrap_or_else(|| keys::new_key_name(chrono::Utc::now()));
                RotationTarget::Key(Arc::new(Key::generate(name, *p)?))
            }
            TargetSpec::KmsV2 {
                name,
                endpoint,
                timeout,
            } => RotationTarget::Kms(KmsProvider {
                version: KmsVersion::V2,
                name: name.clone(),
                endpoint: endpoint.clone(),
                cachesize: None,
                timeout: timeout.clone(),
            }),
            TargetSpec::Identity => RotationTarget::Identity,
        };
        let label = target.label();
        let previous: BTreeMap<usize, String> = rules
            .iter()
            .map(|&r| {
                (
                    r,
                    cfg.rules[r]
                        .providers
                        .first()
                        .map(|p| p.write_label())
                        .unwrap_or_default(),
                )
            })
            .collect();
        if previous.values().all(|w| *w == label) {
            return Err(RotateError::NothingToDo(format!(
                "{label} is already the write key of every rule it would touch: nothing to rotate"
            )));
        }
        if let RotationTarget::Key(k) = &target
            && rules.iter().any(|&r| {
                cfg.rules[r]
                    .providers
                    .iter()
                    .flat_map(|p| p.read_labels())
                    .any(|l| l == label)
            })
        {
            return Err(RotateError::Stage(format!(
                "a key named {} already exists for {}: choose another --key-name",
                k.name(),
                label
            )));
        }
        let id = format!("{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
        let snapshot = match &req.snapshot {
            SnapshotChoice::Skip => {
                (self.say)("no etcd snapshot (--no-snapshot): recorded in the rotation state");
                None
            }
            choice => {
                let path = match choice {
                    SnapshotChoice::Path(p) => p.clone(),
                    _ => self
                        .state_dir
                        .join("snapshots")
                        .join(format!("etcd-{id}.db")),
                };
                let s = snapshot::take(self.etcd, &path).await?;
                (self.say)(&format!(
                    "etcd snapshot {} ({} bytes, {}, revision {})",
                    s.path.display(),
                    s.size,
                    s.sha256,
                    s.revision
                ));
                Some(s)
            }
        };
        st.rotation = Some(Rotation {
            id,
            target: label.clone(),
            target_fingerprint: match &target {
                RotationTarget::Key(k) => Some(k.fingerprint().to_string()),
                _ => None,
            },
            rules: rules.clone(),
            resources,
            previous_write_keys: previous,
            stage: Stage::Prepared,
            started: now(),
            prepared_at: None,
            promoted_at: None,
            reencrypted_at: None,
            finished_at: None,
            snapshot_skipped: snapshot.is_none(),
            snapshot,
            aborted: false,
            retired: Vec::new(),
        });
        st.keys.entry(label.clone()).or_default().added = Some(now());
        if let RotationTarget::Key(k) = &target {
            st.keys.entry(label.clone()).or_default().fingerprint =
                Some(k.fingerprint().to_string());
        }
        let new = config::add_read_key(&cfg, &rules, &target)?;
        let hash = self.write_config(&mut st, &new, Some(Stage::Prepared))?;
        (self.say)(&format!(
            "prepared: {label} is a read key for {}",
            st.rotation
                .as_ref()
                .map(|r| r.resources.join(", "))
                .unwrap_or_default()
        ));
        self.wait_converged(&hash).await?;
        Ok(())
    }

    /// Step 2: the new key becomes the write key, once every apiserver can read it.
    pub async fn promote(&self) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        let loaded = self.load_checked(&mut st)?;
        self.require_stage(&st, "promote", Stage::Prepared)?;
        self.wait_converged(&loaded.hash).await?;
        let r = self.rotation(&st, "promote")?.clone();
        if r.target.starts_with("kms:") {
            self.kms_healthy(&loaded.config).await?;
        }
        let new = config::promote(&loaded.config, &r.rules, &r.target)?;
        let hash = self.write_config(&mut st, &new, Some(Stage::Promoted))?;
        st.keys.entry(r.target.clone()).or_default().promoted = Some(now());
        st.save(&self.state_dir)?;
        self.wait_converged(&hash).await?;
        self.canary().await?;
        (self.say)(&format!("promoted: {} is the write key", r.target));
        Ok(())
    }

    /// Step 3: every object rewritten through the apiserver, proven in etcd.
    pub async fn reencrypt(
        &self,
        progress: &mut dyn scan::Progress,
    ) -> Result<ReencryptReport, RotateError> {
        let mut st = self.load_state()?;
        let loaded = self.load_checked(&mut st)?;
        // Without a rotation in progress this re-encrypts whatever is stale (for example
        // after the KMS plugin rotated its key ID); re-running after a refused prune is allowed.
        let resources: Vec<GroupResource> = match &st.rotation {
            None => {
                (self.say)(
                    "no rotation in progress: re-encrypting every object that is not on its write key (e.g. after a KMS key ID change)",
                );
                loaded.config.named_resources()
            }
            Some(r) => {
                if r.stage != Stage::Reencrypted {
                    self.require_stage(&st, "reencrypt", Stage::Promoted)?;
                }
                r.resources
                    .iter()
                    .map(|s| GroupResource::parse(s))
                    .collect()
            }
        };
        self.wait_converged(&loaded.hash).await?;
        let plugins = self.plugins(&loaded.config).await?;
        if let Some(p) = &plugins {
            self.wait_kms_key_ids(p).await?;
        }
        let checkpoint = self.state_dir.join(CHECKPOINT_FILE);
        let resume = migrate::Checkpoint::load(&checkpoint)
            .is_ok_and(|c| c.config_hash == loaded.hash && !c.finished);
        let opts = ReencryptOptions {
            resources,
            checkpoint,
            resume,
            ..self.reencrypt.clone()
        };
        // Convergence was proven above; nothing more to check before the first write.
        let mut engine = migrate::Reencrypt {
            preflight: None,
            config: &loaded,
            plugins: plugins.as_ref(),
            etcd: self.etcd,
            etcd_prefix: &self.etcd_prefix,
            api: &self.apiservers.base,
            opts,
        };
        let report = engine.run(progress).await?;
        if report.interrupted {
            return Err(RotateError::Interrupted);
        }
        if !report.complete() {
            return Err(RotateError::Incomplete(format!(
                "{} objects given up, {} still not on their write key: {}",
                report.total.given_up,
                report.remaining,
                report
                    .given_up
                    .iter()
                    .chain(report.remaining_objects.iter())
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        if let Some(rot) = st.rotation.as_mut() {
            rot.stage = Stage::Reencrypted;
            rot.reencrypted_at = Some(now());
        }
        st.save(&self.state_dir)?;
        (self.say)(&format!(
            "reencrypted: {} rewritten, proven in etcd",
            report.total.rewritten
        ));
        Ok(report)
    }

    /// Step 4: keys no stored value uses are removed from the rules (and archived), after a
    /// fresh scan proves it. There is no way to skip the proof.
    pub async fn prune(&self) -> Result<Vec<String>, RotateError> {
        let mut st = self.load_state()?;
        let loaded = self.load_checked(&mut st)?;
        self.require_stage(&st, "prune", Stage::Reencrypted)?;
        self.wait_converged(&loaded.hash).await?;
        let r = self.rotation(&st, "prune")?.clone();
        let (count, objects) = self.not_on_write_key(&loaded, &r).await?;
        if count > 0 {
            return Err(RotateError::PruneRefused { count, objects });
        }
        let mut remove: BTreeSet<String> = BTreeSet::new();
        let mut retired_keys: Vec<Arc<Key>> = Vec::new();
        for &i in &r.rules {
            let rule = &loaded.config.rules[i];
            let write = rule
                .providers
                .first()
                .map(|p| p.write_label())
                .unwrap_or_default();
            for p in &rule.providers {
                match p {
                    Provider::Keys { provider, keys } => {
                        for k in keys {
                            let label = config::key_label(*provider, k.name());
                            if label != write {
                                remove.insert(label);
                                retired_keys.push(Arc::clone(k));
                            }
                        }
                    }
                    other if other.write_label() != write => {
                        remove.insert(other.write_label());
                    }
                    _ => {}
                }
            }
        }
        if !retired_keys.is_empty() {
            let path = self.state_dir.join(ARCHIVE_FILE);
            archive::append(&path, &retired_keys, &now())?;
            (self.say)(&format!(
                "archived {} retired keys in {} (0600)",
                retired_keys.len(),
                path.display()
            ));
        }
        let new = config::remove(&loaded.config, &r.rules, &remove)?;
        if let Some(rot) = st.rotation.as_mut() {
            rot.retired = remove.iter().cloned().collect();
        }
        for label in &remove {
            st.keys.entry(label.clone()).or_default().retired = Some(now());
        }
        let hash = self.write_config(&mut st, &new, None)?;
        (self.say)(&format!(
            "pruned: removed {}",
            if remove.is_empty() {
                "nothing".to_string()
            } else {
                remove.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        ));
        self.wait_converged(&hash).await?;
        let _ = std::fs::remove_file(self.state_dir.join(CHECKPOINT_FILE));
        Ok(remove.into_iter().collect())
    }

    /// Stored objects of the rotation's rules that are not on their write key.
    async fn not_on_write_key(
        &self,
        loaded: &LoadedConfig,
        r: &Rotation,
    ) -> Result<(u64, Vec<String>), RotateError> {
        let config = &loaded.config;
        // Whether a resource is written by one of the rotation's rules, resolved once each.
        let in_rotation: std::cell::RefCell<HashMap<GroupResource, bool>> = Default::default();
        let (count, names) = self
            .find(loaded, r, |item| {
                if item.class.on_write_key() {
                    return false;
                }
                *in_rotation
                    .borrow_mut()
                    .entry(item.resource.clone())
                    .or_insert_with(|| {
                        config
                            .resolve(item.resource)
                            .entries
                            .first()
                            .is_some_and(|e| r.rules.contains(&e.rule))
                    })
            })
            .await?;
        (self.say)(&format!(
            "fresh etcd scan: {count} objects not on their write key"
        ));
        Ok((count, names))
    }

    /// Scans the rotation's resources (decrypting every value) and lists the objects `matches`
    /// picks, with their key and state.
    async fn find(
        &self,
        loaded: &LoadedConfig,
        r: &Rotation,
        matches: impl Fn(&Item<'_>) -> bool,
    ) -> Result<(u64, Vec<String>), RotateError> {
        struct Matching<F> {
            matches: F,
            count: u64,
            names: Vec<String>,
        }
        impl<F: Fn(&Item<'_>) -> bool> Visitor for Matching<F> {
            fn visit(&mut self, item: &Item<'_>) {
                if (self.matches)(item) {
                    self.count += 1;
                    if self.names.len() < 50 {
                        self.names.push(format!(
                            "{} {} ({}, {})",
                            item.resource,
                            item.object,
                            item.class.label,
                            item.class.state.as_str()
                        ));
                    }
                }
            }
        }
        let resources: Vec<GroupResource> = r
            .resources
            .iter()
            .map(|s| GroupResource::parse(s))
            .collect();
        let plan = scan::plan(&loaded.config, &self.etcd_prefix, &resources);
        let plugins = self.plugins(&loaded.config).await?;
        let opts = ScanOptions {
            classify: ClassifyConfig::new(true, false, plugins.as_ref(), Vec::new()),
            patience: self.reencrypt.patience,
            ..Default::default()
        };
        let mut found = Matching {
            matches,
            count: 0,
            names: Vec::new(),
        };
        scan::run(
            self.etcd,
            &loaded.config,
            &self.etcd_prefix,
            &plan,
            &opts,
            &mut found,
            &mut (),
        )
        .await?;
        Ok((found.count, found.names))
    }

    /// Writes a canary secret through each apiserver and checks etcd stores it with the write key.
    async fn canary(&self) -> Result<(), RotateError> {
        let loaded = config::load(&self.config_path)?;
        let resolved = loaded.config.resolve(&GroupResource::secrets());
        let want = resolved.write_label();
        let table = ProviderTable::new(&resolved);
        let ns = &self.canary_namespace;
        for (i, url) in self.apiservers.urls().await.into_iter().enumerate() {
            let api = self.apiservers.base.for_url(&url)?;
            let name = format!(
                "atrest-canary-{}-{i}",
                chrono::Utc::now().format("%H%M%S%3f")
            );
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "atrest"}},
                "data": {"canary": base64::engine::general_purpose::STANDARD.encode("atrest")}
            });
            let req = http::Request::post(format!("/api/v1/namespaces/{ns}/secrets"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(kube::client::Body::from(body.to_string().into_bytes()))
                .map_err(|e| KubeError::Request {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            let resp = api.client.send(req).await.map_err(|e| KubeError::Request {
                url: url.clone(),
                message: e.to_string(),
            })?;
            if !resp.status().is_success() {
                return Err(KubeError::Request {
                    url: url.clone(),
                    message: format!("creating canary secret {ns}/{name}: {}", resp.status()),
                }
                .into());
            }
            let key = format!(
                "{}secrets/{ns}/{name}",
                crate::etcd::layout::normalize_prefix(&self.etcd_prefix)
            );
            let mut kv = self.etcd.kv_client();
            let stored = kv
                .get(key.clone(), None)
                .await
                .map_err(|e| EtcdError::Request {
                    message: crate::etcd::explain(&e),
                    hint: "",
                })?;
            let got = stored
                .kvs()
                .first()
                .map(|v| {
                    table
                        .classify(v.key(), v.value(), &Options::default())
                        .label
                        .to_string()
                })
                .unwrap_or_else(|| "nothing".into());
            let _ = api
                .client
                .send(
                    http::Request::delete(format!("/api/v1/namespaces/{ns}/secrets/{name}"))
                        .body(kube::client::Body::empty())
                        .expect("static request"),
                )
                .await;
            if got != want {
                return Err(RotateError::Canary { url, got, want });
            }
            (self.say)(&format!("canary through {url}: stored as {want}"));
        }
        Ok(())
    }

    /// Undoes a rotation safely: before promote, the new key is removed (a scan first proves
    /// nothing uses it); after promote, the previous write key writes again and the rotation
    /// continues with reencrypt and prune to remove the new key.
    pub async fn abort(&self) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        let loaded = self.load_checked(&mut st)?;
        let r = self.rotation(&st, "abort")?.clone();
        match r.stage {
            Stage::Prepared => {
                let (count, objects) = self
                    .find(&loaded, &r, |item| *item.class.label == *r.target.as_str())
                    .await?;
                if count > 0 {
                    return Err(RotateError::Stage(format!(
                        "{count} objects already use {}; cannot remove it: {}",
                        r.target,
                        objects.join("; ")
                    )));
                }
                let new = config::remove(
                    &loaded.config,
                    &r.rules,
                    &BTreeSet::from([r.target.clone()]),
                )?;
                if let Some(rot) = st.rotation.as_mut() {
                    rot.aborted = true;
                }
                let hash = self.write_config(&mut st, &new, None)?;
                (self.say)(&format!(
                    "aborted: {} removed; the config is as before the rotation",
                    r.target
                ));
                self.wait_converged(&hash).await?;
            }
            Stage::Promoted | Stage::Reencrypted => {
                let mut new = loaded.config.clone();
                for (&rule, previous) in &r.previous_write_keys {
                    new = config::promote(&new, &[rule], previous)?;
                }
                if let Some(rot) = st.rotation.as_mut() {
                    rot.aborted = true;
                }
                let hash = self.write_config(&mut st, &new, Some(Stage::Promoted))?;
                (self.say)(&format!(
                    "aborted: the previous write keys write again; {} stays readable for objects already written with it. Finish with `atrest rotate reencrypt` and `atrest rotate prune` to remove it.",
                    r.target
                ));
                self.wait_converged(&hash).await?;
            }
        }
        Ok(())
    }

    /// Every step in order, from wherever the rotation stands.
    pub async fn run(
        &self,
        req: &PrepareRequest,
        progress: &mut dyn scan::Progress,
    ) -> Result<(), RotateError> {
        if self.load_state()?.rotation.is_none() {
            self.prepare(req).await?;
        }
        loop {
            let st = self.load_state()?;
            let Some(r) = st.rotation else { return Ok(()) };
            match r.stage {
                Stage::Prepared => self.promote().await?,
                Stage::Promoted => {
                    self.reencrypt(progress).await?;
                }
                Stage::Reencrypted => {
                    self.prune().await?;
                }
            }
        }
    }
}
