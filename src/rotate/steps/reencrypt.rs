//! Step 3: every object of the rotation rewritten through the apiserver, proven in etcd.
//! Without a rotation in progress it re-encrypts whatever is stale (for example after the KMS
//! plugin rotated its key ID); re-running after a refused prune is allowed.

use crate::GroupResource;
use crate::config::EncryptionConfig;
use crate::etcd::scan;
use crate::migrate::svm::{Engine, MigrationRecord, SvmPass};
use crate::migrate::{self, ReencryptOptions, ReencryptReport};
use crate::model::time::now;
use crate::rotate::{RotateError, Rotator};
use crate::state::{CHECKPOINT_FILE, RotationState, Stage, Step, StepRecord};

impl Rotator<'_> {
    /// Rewrites every object of the rotation's resources through the apiserver (resuming from the
    /// checkpoint when the config is unchanged) and proves in etcd that none is left off its
    /// write key. Without a rotation in progress, it covers every resource the config names.
    pub async fn reencrypt(
        &self,
        progress: &mut dyn scan::Progress,
    ) -> Result<ReencryptReport, RotateError> {
        let mut st = self.load_state()?;
        let loaded = self.load_checked(&mut st)?;
        let resources = self.reencrypt_resources(&st, &loaded.config)?;
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
        // The migrator first when asked; each migration atrest created is written to the
        // rotation's journal before atrest deletes it.
        let mut engines = Vec::new();
        if opts.engine != Engine::Atrest {
            let pass = SvmPass {
                config: &loaded,
                plugins: plugins.as_ref(),
                etcd: self.etcd,
                etcd_prefix: &self.etcd_prefix,
                api: &self.apiservers.base,
                reencrypt: &opts,
            };
            let state_dir = &self.state_dir;
            let st = &mut st;
            let mut journal = |resource: &GroupResource, m: &MigrationRecord| {
                if let Some(rot) = st.rotation.as_mut() {
                    rot.log.push(StepRecord::now(
                        Step::Reencrypt,
                        format!(
                            "StorageVersionMigration {} of {resource}: {:?} in {:.1} s; deleted by atrest",
                            m.name, m.phase, m.seconds
                        ),
                    ));
                    st.save(state_dir).map_err(|e| e.to_string())?;
                }
                Ok(())
            };
            engines = pass.run(progress, &mut journal).await?;
        }
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
        let mut report = engine.run(progress).await?;
        report.engines = engines;
        check_finished(&report)?;
        if let Some(rot) = st.rotation.as_mut() {
            rot.stage = Stage::Reencrypted;
            rot.reencrypted_at = Some(now());
            rot.log.push(StepRecord::now(
                Step::Reencrypt,
                format!(
                    "{} rewritten, {} already on the write key; proven in etcd",
                    report.total.rewritten, report.total.already_current
                ),
            ));
        }
        st.save(&self.state_dir)?;
        (self.say)(&format!(
            "reencrypted: {} rewritten, proven in etcd",
            report.total.rewritten
        ));
        Ok(report)
    }

    /// The rotation's resources, or every resource the config names without a rotation.
    fn reencrypt_resources(
        &self,
        st: &RotationState,
        config: &EncryptionConfig,
    ) -> Result<Vec<GroupResource>, RotateError> {
        match &st.rotation {
            None => {
                (self.say)(
                    "no rotation in progress: re-encrypting every object that is not on its write key (e.g. after a KMS key ID change)",
                );
                Ok(config.named_resources())
            }
            Some(r) => {
                if r.stage != Stage::Reencrypted {
                    self.require_stage(st, Step::Reencrypt, Stage::Promoted)?;
                }
                Ok(r.resources.clone())
            }
        }
    }
}

fn check_finished(report: &ReencryptReport) -> Result<(), RotateError> {
    if report.interrupted {
        return Err(RotateError::Interrupted);
    }
    if !report.complete() {
        return Err(RotateError::Incomplete {
            given_up: report.total.given_up,
            remaining: report.remaining,
            sample: report
                .given_up
                .iter()
                .chain(report.remaining_objects.iter())
                .take(20)
                .cloned()
                .collect(),
        });
    }
    Ok(())
}
