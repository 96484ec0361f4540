//! The second engine: StorageVersionMigration ([`crate::kube::svm`]). kube-controller-manager's
//! migrator rewrites every object of a resource through the apiserver; atrest decides which
//! resources to hand it, creates the migrations, follows them, and then runs its own engine
//! over everything, which rewrites whatever is still not on its write key (a migration that
//! failed, a resource the migrator cannot serve, objects written meanwhile) and proves the
//! result in etcd object by object. So the proof is the same whichever engine wrote.
//!
//! The migrator writes every object of the resource, stale or not; atrest's own engine writes
//! only the stale ones. `auto` picks the migrator only where nearly every object needs a
//! rewrite anyway ([`prefers_migrator`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ReencryptOptions;
use crate::GroupResource;
use crate::codec::ClassifyConfig;
use crate::config::LoadedConfig;
use crate::etcd::scan::{self, Progress, ReportBuilder, ScanOptions};
use crate::kms::KmsPlugins;
use crate::kube::svm::{self, Migration, Phase, Served};
use crate::kube::{Api, KubeError};

/// Which engine rewrites the stale objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// atrest's own targeted engine: only the stale objects, with checkpoints.
    #[default]
    Atrest,
    /// StorageVersionMigration for every resource with stale objects; atrest's engine after it.
    Svm,
    /// Per resource: the migrator where nearly every object is stale and it can serve the
    /// resource, atrest's engine elsewhere.
    Auto,
}

/// `auto` hands a resource to the migrator from this many objects on: below it, the
/// migration's own overhead (a controller sync and a status round trip) outweighs anything.
pub const AUTO_MIN_OBJECTS: u64 = 1000;

/// The `auto` rule: the migrator writes every object, so it is chosen only where at least 90%
/// need the write anyway, and the resource is large enough for it to matter.
pub fn prefers_migrator(objects: u64, stale: u64) -> bool {
    objects >= AUTO_MIN_OBJECTS && stale.saturating_mul(10) >= objects.saturating_mul(9)
}

/// Why the migrator could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum SvmError {
    /// The API is not served.
    #[error("--engine svm: StorageVersionMigration is {0}; nothing was written")]
    NotServed(Served),
    /// A migration atrest created was not picked up by any controller in time.
    #[error(
        "--engine svm: no storage version migrator answered within {} s (StorageVersionMigration {name} got no status.resourceVersion); the migrations atrest created were deleted and no object was rewritten. Run kube-controller-manager with the storage-version-migrator-controller and the garbage-collector-controller (both on by default in 1.37), or use --engine atrest",
        waited.as_secs()
    )]
    NoController {
        /// The migration that waited.
        name: String,
        /// How long.
        waited: Duration,
    },
    /// The API refused or failed (RBAC names the verb).
    #[error("--engine svm: {0}")]
    Kube(#[from] KubeError),
    /// A migration's outcome could not be recorded; it was left in place.
    #[error(
        "--engine svm: the outcome of StorageVersionMigration {name} could not be recorded ({message}); it was left in place"
    )]
    Journal {
        /// The migration.
        name: String,
        /// Why.
        message: String,
    },
    /// The census of what needs rewriting failed.
    #[error("--engine svm: reading etcd: {0}")]
    Etcd(#[from] crate::etcd::EtcdError),
}

/// What happened to one resource with stale objects.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceEngine {
    /// The resource.
    pub resource: GroupResource,
    /// Objects of it in etcd, at the census.
    pub objects: u64,
    /// Of them, not on the write key.
    pub stale: u64,
    /// `svm` or `atrest`: who was asked to rewrite it first.
    pub engine: Engine,
    /// Why that engine.
    pub reason: String,
    /// Migrations of this resource that someone else had created and that were still running:
    /// waited for, never duplicated.
    pub waited_for: Vec<String>,
    /// The migration atrest created, if any.
    pub migration: Option<MigrationRecord>,
}

/// One migration atrest created, and how it ended.
#[derive(Clone, Debug, Serialize)]
pub struct MigrationRecord {
    /// Its name.
    pub name: String,
    /// How it ended (or where it stood when the run stopped).
    pub phase: Phase,
    /// From creation to the end.
    pub seconds: f64,
    /// atrest deleted it after recording this.
    pub deleted: bool,
}

/// How often a followed migration is read.
const POLL: Duration = Duration::from_millis(250);

/// Called with each migration atrest created once its outcome is known, before atrest deletes
/// it (a rotation writes it to its journal); an error keeps the migration and stops the run.
pub type Journal<'j> = dyn FnMut(&GroupResource, &MigrationRecord) -> Result<(), String> + 'j;

/// The migrator's pass, before atrest's engine runs.
pub struct SvmPass<'a> {
    /// The loaded config: the census judges by it.
    pub config: &'a LoadedConfig,
    /// KMS v2 plugins, for the census.
    pub plugins: Option<&'a KmsPlugins>,
    /// etcd, read only.
    pub etcd: &'a etcd_client::Client,
    /// The apiserver's `--etcd-prefix`.
    pub etcd_prefix: &'a str,
    /// The apiserver client that creates and reads migrations.
    pub api: &'a Api,
    /// The run's options (resources, engine, patience, stop flag).
    pub reencrypt: &'a ReencryptOptions,
}

/// What the apiserver is asked for SVM before anything is written: served or not.
pub async fn availability(api: &Api) -> Result<Served, KubeError> {
    svm::served(api).await
}

impl SvmPass<'_> {
    /// Counts each covered resource's objects and stale objects (one scan at one revision).
    async fn census(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<BTreeMap<GroupResource, (u64, u64)>, SvmError> {
        let plan = scan::plan_covered(
            &self.config.config,
            self.etcd_prefix,
            &self.reencrypt.resources,
        );
        let opts = ScanOptions {
            classify: ClassifyConfig::new(false, true, self.plugins, Vec::new()),
            patience: self.reencrypt.patience,
            follow_compaction: true,
            ..Default::default()
        };
        let mut builder = ReportBuilder::new(0);
        let run = scan::run(
            self.etcd,
            &self.config.config,
            self.etcd_prefix,
            &plan,
            &opts,
            &mut builder,
            progress,
        )
        .await?;
        let report = builder.finish(run.revision, false);
        Ok(report
            .resources
            .iter()
            .map(|r| {
                (
                    GroupResource::parse(&r.resource),
                    (r.total, r.needs_rewrite),
                )
            })
            .collect())
    }

    /// Groups served by an aggregated apiserver (an APIService with a service): the migrator
    /// cannot rewrite what the kube-apiserver does not store.
    async fn aggregated_groups(&self) -> Result<Vec<String>, KubeError> {
        let (status, body) = self
            .api
            .get_text("/apis/apiregistration.k8s.io/v1/apiservices")
            .await?;
        if status != 200 {
            return Ok(Vec::new());
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        Ok(v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|i| !i["spec"]["service"].is_null())
                    .filter_map(|i| i["spec"]["group"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Hands each chosen resource to the migrator, all at once (each migration first waits for
    /// the controller's cache to reach the revision it was created at, so their waits overlap),
    /// and follows them to the end; atrest's engine runs afterwards over every resource. Stops
    /// early (leaving running migrations in place, recorded as such) when the stop flag is set.
    pub async fn run(
        &self,
        progress: &mut dyn Progress,
        journal: &mut Journal<'_>,
    ) -> Result<Vec<ResourceEngine>, SvmError> {
        let served = svm::served(self.api).await?;
        if served != Served::Yes {
            if self.reencrypt.engine == Engine::Svm {
                return Err(SvmError::NotServed(served));
            }
            tracing::info!("auto engine: StorageVersionMigration is {served}");
        }
        let census = self.census(progress).await?;
        let aggregated = self.aggregated_groups().await?;
        let existing = if served == Served::Yes {
            svm::list(self.api).await?
        } else {
            Vec::new()
        };
        let mut entries: Vec<ResourceEngine> = census
            .into_iter()
            .filter(|(_, (_, stale))| *stale > 0)
            .map(|(resource, (objects, stale))| {
                self.choose(resource, objects, stale, &served, &aggregated)
            })
            .collect();
        let mut followed = self.start(&mut entries, &existing).await?;
        self.follow(&mut followed, progress).await?;
        for f in followed {
            if f.ours {
                let phase = f.phase.unwrap_or(Phase::Pending);
                let finished = phase.finished();
                // Recorded first, then removed: a removed migration's outcome is in the report.
                let mut record = MigrationRecord {
                    name: f.name.clone(),
                    phase,
                    seconds: f.seconds,
                    deleted: false,
                };
                if finished {
                    record.deleted = true;
                    journal(&entries[f.entry].resource, &record).map_err(|message| {
                        SvmError::Journal {
                            name: f.name.clone(),
                            message,
                        }
                    })?;
                    svm::delete(self.api, &f.name).await?;
                }
                entries[f.entry].migration = Some(record);
            }
        }
        Ok(entries)
    }

    /// Which engine a resource with stale objects gets first, and why.
    fn choose(
        &self,
        resource: GroupResource,
        objects: u64,
        stale: u64,
        served: &Served,
        aggregated: &[String],
    ) -> ResourceEngine {
        let (engine, reason) = if *served != Served::Yes {
            (
                Engine::Atrest,
                format!("StorageVersionMigration is {served}"),
            )
        } else if aggregated.contains(&resource.group) {
            (
                Engine::Atrest,
                format!(
                    "served by an aggregated apiserver ({}): the migrator cannot rewrite it",
                    resource.group
                ),
            )
        } else if self.reencrypt.engine == Engine::Auto && !prefers_migrator(objects, stale) {
            (
                Engine::Atrest,
                format!(
                    "{stale} of {objects} objects are stale: the targeted engine writes only those (auto picks the migrator from {AUTO_MIN_OBJECTS} objects with at least 90% stale)"
                ),
            )
        } else if self.reencrypt.engine == Engine::Auto {
            (
                Engine::Svm,
                format!("{stale} of {objects} objects are stale: the migrator rewrites them all"),
            )
        } else {
            (Engine::Svm, "asked for (--engine svm)".into())
        };
        ResourceEngine {
            resource,
            objects,
            stale,
            engine,
            reason,
            waited_for: Vec::new(),
            migration: None,
        }
    }

    /// For each resource handed to the migrator: someone else's unfinished migrations of it
    /// (waited for, never duplicated), else a new one of atrest's. A creation that fails removes
    /// the ones this run created before it.
    async fn start(
        &self,
        entries: &mut [ResourceEngine],
        existing: &[Migration],
    ) -> Result<Vec<Followed>, SvmError> {
        let mut followed = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            if entry.engine != Engine::Svm {
                continue;
            }
            let foreign: Vec<&Migration> = existing
                .iter()
                .filter(|m| m.resource == entry.resource && !m.phase.finished())
                .collect();
            if !foreign.is_empty() {
                for m in foreign {
                    tracing::info!(
                        "StorageVersionMigration {} of {} is already running (not created by this run): waiting for it",
                        m.name,
                        entry.resource
                    );
                    entry.waited_for.push(m.name.clone());
                    followed.push(Followed::new(i, &m.name, false));
                }
                entry.reason.push_str(
                    "; a migration someone else created was unfinished and was waited for instead of creating another",
                );
                continue;
            }
            match svm::create(self.api, &entry.resource).await {
                Ok(m) => {
                    tracing::info!(
                        "created StorageVersionMigration {} of {}",
                        m.name,
                        entry.resource
                    );
                    followed.push(Followed::new(i, &m.name, true));
                }
                Err(e) => {
                    self.remove_ours(&followed).await;
                    return Err(e.into());
                }
            }
        }
        Ok(followed)
    }

    /// Deletes the migrations this run created (best effort: the error being reported matters
    /// more).
    async fn remove_ours(&self, followed: &[Followed]) {
        for f in followed.iter().filter(|f| f.ours) {
            if let Err(e) = svm::delete(self.api, &f.name).await {
                tracing::warn!("could not delete StorageVersionMigration {}: {e}", f.name);
            }
        }
    }

    /// Reads every followed migration until each has succeeded or failed (or the stop flag is
    /// set). One still pending (no `status.resourceVersion`) after the controller patience,
    /// while none of the run's has been picked up: no controller runs, and with `svm` the run
    /// stops before anything was rewritten. Otherwise (some were picked up, or `auto`) one
    /// still pending is given up: atrest's own engine rewrites its resource.
    async fn follow(
        &self,
        followed: &mut [Followed],
        progress: &mut dyn Progress,
    ) -> Result<(), SvmError> {
        let started = Instant::now();
        let patience = self.reencrypt.svm_patience;
        let mut picked_up = false;
        loop {
            let mut read = Vec::new();
            for f in followed.iter().filter(|f| f.phase.is_none()) {
                read.push(svm::get(self.api, &f.name).await?);
            }
            let open: Vec<&mut Followed> =
                followed.iter_mut().filter(|f| f.phase.is_none()).collect();
            picked_up |= read
                .iter()
                .any(|m| m.as_ref().is_some_and(|m| m.phase != Phase::Pending));
            let overdue = started.elapsed() >= patience;
            // `svm` was asked for: no controller is an error. `auto` falls back instead (each
            // waiting migration is given up below).
            if overdue && !picked_up && self.reencrypt.engine == Engine::Svm {
                let name = open.first().map(|f| f.name.clone()).unwrap_or_default();
                self.remove_ours(followed).await;
                return Err(SvmError::NoController {
                    name,
                    waited: patience,
                });
            }
            let mut still_open = 0;
            for (f, m) in open.into_iter().zip(read) {
                f.seconds = started.elapsed().as_secs_f64();
                match m {
                    None => f.phase = Some(Phase::Failed("deleted before it finished".into())),
                    Some(m) if m.phase.finished() => f.phase = Some(m.phase),
                    Some(m) if m.phase == Phase::Pending && overdue => {
                        if f.ours {
                            svm::delete(self.api, &f.name).await?;
                        }
                        f.phase = Some(Phase::Failed(format!(
                            "not picked up by the migrator within {} s",
                            patience.as_secs()
                        )));
                    }
                    Some(m) => {
                        still_open += 1;
                        progress.migrating(&f.name, &format!("{:?}", m.phase), started.elapsed());
                        f.last = Some(m.phase);
                    }
                }
            }
            if still_open == 0 {
                return Ok(());
            }
            if self.reencrypt.stop.load(Ordering::Relaxed) {
                for f in followed.iter_mut().filter(|f| f.phase.is_none()) {
                    f.phase = f.last.take();
                }
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A migration being followed.
struct Followed {
    /// Index of its resource's entry.
    entry: usize,
    name: String,
    /// Created by this run.
    ours: bool,
    /// How it ended; `None` while it runs.
    phase: Option<Phase>,
    /// The phase last read.
    last: Option<Phase>,
    seconds: f64,
}

impl Followed {
    fn new(entry: usize, name: &str, ours: bool) -> Self {
        Self {
            entry,
            name: name.to_string(),
            ours,
            phase: None,
            last: None,
            seconds: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_hands_the_migrator_only_large_resources_that_are_nearly_all_stale() {
        assert!(prefers_migrator(10_000, 10_000));
        assert!(prefers_migrator(10_000, 9_000));
        assert!(!prefers_migrator(10_000, 8_999));
        assert!(!prefers_migrator(10_000, 1_000));
        assert!(!prefers_migrator(999, 999));
        assert!(prefers_migrator(AUTO_MIN_OBJECTS, AUTO_MIN_OBJECTS));
    }
}
