//! Step 2: the new key becomes the write key, once every apiserver can read it; a canary
//! written through each apiserver proves it writes with it.

use crate::config;
use crate::model::KeyLabel;
use crate::model::time::now;
use crate::rotate::snapshot::current_revision;
use crate::rotate::{RotateError, Rotator};
use crate::state::{Stage, Step};

impl Rotator<'_> {
    /// Makes the prepared key the write key, once every apiserver runs the prepared config (and
    /// a KMS plugin is healthy and ready on each); then a canary through each apiserver proves
    /// it writes with it. A rerun after its write was left pending (the sync command failed)
    /// syncs it again, commits it, and goes on with the waits and the canary.
    pub async fn promote(&self) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        let (loaded, resumed) = self.load_resuming(&mut st, Step::Promote)?;
        let r = self.rotation(&st, Step::Promote)?.clone();
        let hash = match resumed {
            Some(hash) => {
                // The write of a previous run, completed now: its record was saved with the
                // write's intent, before the file changed. A state from an atrest that recorded
                // it only afterwards gets it now (the best still known).
                let record = st.keys.entry(r.target.clone()).or_default();
                if record.promoted_revision.is_none() {
                    record.promoted = Some(now());
                    record.promoted_revision = current_revision(self.etcd).await.ok();
                    st.save(&self.state_dir)?;
                }
                hash
            }
            None => {
                self.require_stage(&st, Step::Promote, Stage::Prepared)?;
                self.wait_converged(&loaded.hash).await?;
                if matches!(r.target, KeyLabel::Kms { .. }) {
                    self.kms_healthy(&loaded.config).await?;
                }
                let new = config::promote(&loaded.config, &r.rules, &r.target)?;
                // Every write with the new key comes after this revision (the aesgcm write
                // estimate): read before the file changes, and saved with the write's intent,
                // so that a rerun after a crash keeps it rather than reading a later one.
                let record = st.keys.entry(r.target.clone()).or_default();
                record.promoted = Some(now());
                record.promoted_revision = current_revision(self.etcd).await.ok();
                for previous in r.previous_write_keys.values() {
                    if *previous != r.target {
                        st.keys
                            .entry(previous.clone())
                            .or_default()
                            .demoted
                            .get_or_insert(now());
                    }
                }
                self.write_config(&mut st, Step::Promote, &new, Some(Stage::Promoted))?
            }
        };
        self.wait_converged(&hash).await?;
        self.canary().await?;
        (self.say)(&format!("promoted: {} is the write key", r.target));
        Ok(())
    }
}
