//! Undoing a rotation safely: before promote, the new key is removed (a scan first proves
//! nothing uses it); after promote, the previous write keys write again and the rotation
//! continues with reencrypt and prune to remove the new key.

use std::collections::BTreeSet;

use crate::config::{self, LoadedConfig};
use crate::rotate::{RotateError, Rotation, Rotator, Stage, State, Step};

impl Rotator<'_> {
    /// Undoes the rotation in progress. Before promote the new key is removed, refused while any
    /// stored object uses it; after promote the previous write keys write again, and the
    /// rotation stays at promoted so reencrypt and prune finish removing the new key.
    ///
    /// A rerun after its write was left pending (the sync command failed) syncs it again,
    /// commits it and waits for the apiservers.
    pub async fn abort(&self) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        let (loaded, resumed) = self.load_resuming(&mut st, Step::Abort)?;
        if let Some(hash) = resumed {
            (self.say)("aborted: the undo written by the previous run is now committed");
            self.wait_converged(&hash).await?;
            return Ok(());
        }
        let r = self.rotation(&st, Step::Abort)?.clone();
        match r.stage {
            Stage::Prepared => self.abort_prepared(&mut st, &loaded, &r).await,
            Stage::Promoted | Stage::Reencrypted => self.abort_promoted(&mut st, &loaded, &r).await,
        }
    }

    async fn abort_prepared(
        &self,
        st: &mut State,
        loaded: &LoadedConfig,
        r: &Rotation,
    ) -> Result<(), RotateError> {
        let found = self
            .find(loaded, r, |item| *item.class.label == *r.target.as_str())
            .await?;
        if found.count > 0 {
            return Err(RotateError::TargetInUse {
                target: r.target.clone(),
                count: found.count,
                objects: found.names,
            });
        }
        let new = config::remove(
            &loaded.config,
            &r.rules,
            &BTreeSet::from([r.target.clone()]),
        )?;
        if let Some(rot) = st.rotation.as_mut() {
            rot.aborted = true;
        }
        let hash = self.write_config(st, Step::Abort, &new, None)?;
        (self.say)(&format!(
            "aborted: {} removed; the config is as before the rotation",
            r.target
        ));
        self.wait_converged(&hash).await?;
        Ok(())
    }

    async fn abort_promoted(
        &self,
        st: &mut State,
        loaded: &LoadedConfig,
        r: &Rotation,
    ) -> Result<(), RotateError> {
        let mut new = loaded.config.clone();
        for (&rule, previous) in &r.previous_write_keys {
            new = config::promote(&new, &[rule], previous)?;
        }
        if let Some(rot) = st.rotation.as_mut() {
            rot.aborted = true;
        }
        let hash = self.write_config(st, Step::Abort, &new, Some(Stage::Promoted))?;
        (self.say)(&format!(
            "aborted: the previous write keys write again; {} stays readable for objects already written with it. Finish with `atrest rotate reencrypt` and `atrest rotate prune` to remove it.",
            r.target
        ));
        self.wait_converged(&hash).await?;
        Ok(())
    }
}
