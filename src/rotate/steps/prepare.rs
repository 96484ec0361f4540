//! Step 1: a new key (or KMS provider, or identity) becomes a read key everywhere the rotation
//! touches. An etcd snapshot is taken first (unless skipped), and the new key material reaches
//! the disk through the journal before anything uses it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{
    self, EncryptionConfig, KmsProvider, KmsVersion, Provider, ResourceRule, RotationTarget,
};
use crate::keys::{self, Key};
use crate::kube::discover;
use crate::model::KeyLabel;
use crate::model::time::now;
use crate::rotate::{PrepareRequest, RotateError, Rotator, SnapshotChoice, TargetSpec, snapshot};
use crate::state::ConfigBefore;
use crate::state::{Rotation, RotationState, SnapshotRecord, Stage, Step};
use crate::{GroupResource, join_resources};

/// The rules a rotation edits and every resource they name.
#[derive(Clone)]
struct Scope {
    rules: Vec<usize>,
    resources: Vec<GroupResource>,
    /// Rule index → its write key before the rotation.
    previous: BTreeMap<usize, KeyLabel>,
}

impl Rotator<'_> {
    /// Starts a rotation: takes the etcd snapshot (unless skipped), adds the new key as a read
    /// key to every rule the rotation touches, and waits until every apiserver loaded it.
    /// Refused while another rotation is in progress.
    ///
    /// A rerun after its write was left pending (the sync command failed) syncs that write
    /// again, commits it and waits, instead of starting another rotation.
    pub async fn prepare(&self, req: &PrepareRequest) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        let (loaded, resumed) = self.load_resuming(&mut st, Step::Prepare)?;
        if let Some(hash) = resumed {
            self.wait_converged(&hash).await?;
            return Ok(());
        }
        if let Some(r) = &st.rotation {
            return Err(RotateError::AlreadyRotating {
                target: r.target.clone(),
                stage: r.stage,
            });
        }
        self.refuse_unsupported_apiservers().await?;
        self.refuse_unknown_resources(&req.resources).await?;
        let cfg = self.cover(&loaded.config, &req.resources);
        let target = target(req)?;
        let label = target.label();
        let scope = scope(&cfg, &req.resources);
        check_target(&cfg, &scope, &target)?;
        let id = format!("{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
        let snapshot = self.snapshot(&req.snapshot, &id).await?;
        record(&mut st, id, &target, scope.clone(), snapshot);
        let new = config::add_read_key(&cfg, &scope.rules, &target)?;
        let written =
            self.write_config_backed(&mut st, Step::Prepare, &new, Some(Stage::Prepared))?;
        let hash = written.hash;
        // The backup of the file as it was before prepare: what abort puts back, byte for byte.
        if let (Some(r), Some(path)) = (st.rotation.as_mut(), written.backup) {
            r.before = Some(ConfigBefore {
                path,
                hash: loaded.hash.clone(),
            });
            st.save(&self.state_dir)?;
        }
        (self.say)(&format!(
            "prepared: {label} is a read key for {}",
            join_resources(&scope.resources)
        ));
        self.wait_converged(&hash).await?;
        Ok(())
    }

    /// Every resource the rotation is for must be covered by a rule — the ones asked for, else
    /// secrets: a resource no rule covers gets one of its own with identity (an explicit
    /// identity rule changes nothing the apiserver does), so that the rotation turns encryption
    /// on for it like for any other.
    fn cover(&self, config: &EncryptionConfig, requested: &[GroupResource]) -> EncryptionConfig {
        let mut cfg = config.clone();
        let wanted = match requested {
            [] => vec![GroupResource::secrets()],
            some => some.to_vec(),
        };
        for gr in wanted.iter().rev() {
            if cfg.resolve(gr).entries.is_empty() {
                cfg.rules.insert(
                    0,
                    ResourceRule {
                        resources: vec![gr.config_name()],
                        providers: vec![Provider::Identity],
                    },
                );
                (self.say)(&format!(
                    "{0} is not covered by any rule: adding a rule for {0} (identity, as before) so that the rotation encrypts it too",
                    gr.config_name()
                ));
            }
        }
        cfg
    }

    /// A resource asked for by name must be one the apiserver serves: a typo would otherwise
    /// get a rule that protects nothing. Wildcards (`*.example.com`) are taken as written.
    async fn refuse_unknown_resources(
        &self,
        requested: &[GroupResource],
    ) -> Result<(), RotateError> {
        for gr in requested.iter().filter(|gr| !gr.is_wildcard()) {
            discover(&self.apiservers.base, gr).await?;
        }
        Ok(())
    }

    async fn snapshot(
        &self,
        choice: &SnapshotChoice,
        id: &str,
    ) -> Result<Option<SnapshotRecord>, RotateError> {
        let path = match choice {
            SnapshotChoice::Skip => {
                (self.say)("no etcd snapshot (--no-snapshot): recorded in the rotation state");
                return Ok(None);
            }
            SnapshotChoice::Path(p) => p.clone(),
            SnapshotChoice::Default => self
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
        Ok(Some(s))
    }
}

/// The rules deciding how the requested resources (none: every resource the config names,
/// secrets among them) are written. Every resource of such a rule is rotated too: they share
/// keys. Exactly what was asked for: `--provider identity --resource configmaps` decrypts
/// configmaps, never secrets too.
fn scope(cfg: &EncryptionConfig, requested: &[GroupResource]) -> Scope {
    let requested: Vec<GroupResource> = if requested.is_empty() {
        cfg.named_resources()
    } else {
        requested.to_vec()
    };
    let rules = config::rules_for(cfg, &requested);
    let mut resources: Vec<GroupResource> = Vec::new();
    for &r in &rules {
        for name in &cfg.rules[r].resources {
            let resource = GroupResource::parse(name);
            if !resources.contains(&resource) {
                resources.push(resource);
            }
        }
    }
    let previous = rules
        .iter()
        .map(|&r| {
            let write = cfg.rules[r].providers.first().map(|p| p.write_key());
            (r, write.unwrap_or(KeyLabel::Identity))
        })
        .collect();
    Scope {
        rules,
        resources,
        previous,
    }
}

fn target(req: &PrepareRequest) -> Result<RotationTarget, RotateError> {
    Ok(match &req.target {
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
    })
}

/// Refuses a rotation to what already writes everywhere, and a new key whose name is taken.
fn check_target(
    cfg: &EncryptionConfig,
    scope: &Scope,
    target: &RotationTarget,
) -> Result<(), RotateError> {
    let label = target.label();
    if scope.previous.values().all(|w| *w == label) {
        return Err(RotateError::NothingToDo { label });
    }
    if let RotationTarget::Key(k) = target
        && scope.rules.iter().any(|&r| {
            cfg.rules[r]
                .providers
                .iter()
                .flat_map(|p| p.read_keys())
                .any(|l| l == label)
        })
    {
        return Err(RotateError::KeyNameTaken {
            name: k.name().to_string(),
            label,
        });
    }
    Ok(())
}

/// The rotation's record in the state (saved with the journal's intent).
fn record(
    st: &mut RotationState,
    id: String,
    target: &RotationTarget,
    scope: Scope,
    snapshot: Option<SnapshotRecord>,
) {
    let label = target.label();
    let fingerprint = match target {
        RotationTarget::Key(k) => Some(k.fingerprint().to_string()),
        _ => None,
    };
    st.rotation = Some(Rotation {
        log: Vec::new(),
        id,
        target: label.clone(),
        target_fingerprint: fingerprint.clone(),
        rules: scope.rules,
        resources: scope.resources,
        previous_write_keys: scope.previous,
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
        before: None,
    });
    let key = st.keys.entry(label).or_default();
    key.added = Some(now());
    if fingerprint.is_some() {
        key.fingerprint = fingerprint;
    }
}
