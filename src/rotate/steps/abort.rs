//! Undoing a rotation safely: before promote, the config goes back to the file as it was before
//! prepare, byte for byte (a scan first proves no stored value needs a key that file lacks),
//! even when it was edited by hand since; after promote, the previous write keys write again and
//! the rotation continues with reencrypt and prune to remove the new key.

use std::collections::BTreeSet;

use crate::config::{self, LoadedConfig};
use crate::model::Verdict;
use crate::rotate::{JournalError, RotateError, Rotator};
use crate::state::{Rotation, RotationState, Stage, Step};

impl Rotator<'_> {
    /// Undoes the rotation in progress. Before promote the new key is removed, refused while any
    /// stored object uses it; after promote the previous write keys write again, and the
    /// rotation stays at promoted so reencrypt and prune finish removing the new key.
    ///
    /// A rerun after its write was left pending (the sync command failed) syncs it again,
    /// commits it and waits for the apiservers.
    pub async fn abort(&self) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        let prepared_with_copy = st
            .rotation
            .as_ref()
            .is_some_and(|r| r.stage == Stage::Prepared && r.before.is_some());
        let (loaded, resumed) = match self.load_resuming(&mut st, Step::Abort) {
            // Before promote the copy of the file before prepare is what abort writes: a hand
            // edit since is discarded, and said so.
            Err(RotateError::Journal(JournalError::Changed(c))) if prepared_with_copy => {
                (self.say)(&format!(
                    "{} was edited by hand during the rotation; abort puts back the file as it was before prepare and discards the edit:\n{}",
                    c.path.display(),
                    c.diff
                        .iter()
                        .map(|d| format!("  - {d}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
                (config::load(&self.config_path)?, None)
            }
            other => other?,
        };
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
        st: &mut RotationState,
        loaded: &LoadedConfig,
        r: &Rotation,
    ) -> Result<(), RotateError> {
        let found = self
            .find(loaded, |item| *item.class.label == r.target)
            .await?;
        if found.count > 0 {
            return Err(RotateError::TargetInUse {
                target: r.target.clone(),
                count: found.count,
                objects: found.names,
            });
        }
        // The file as it was before prepare, when there is a copy: every stored value must
        // open with it. Without one (a rotation started by an older atrest), the new key is
        // removed from the current file.
        let before = r
            .before
            .as_ref()
            .and_then(|b| config::load(&b.path).ok().filter(|l| l.hash == b.hash));
        let new = match &before {
            Some(b) => {
                let needs = self
                    .find(b, |item| {
                        matches!(
                            item.class.verdict(),
                            Verdict::UnknownKey | Verdict::Undecryptable
                        )
                    })
                    .await?;
                if needs.count > 0 {
                    return Err(RotateError::RestoreRefused {
                        before: b.path.clone(),
                        count: needs.count,
                        objects: needs.names,
                    });
                }
                b.config.clone()
            }
            None => config::remove(
                &loaded.config,
                &r.rules,
                &BTreeSet::from([r.target.clone()]),
            )?,
        };
        if let Some(rot) = st.rotation.as_mut() {
            rot.aborted = true;
        }
        let hash = self.write_config(st, Step::Abort, &new, None)?;
        (self.say)(&match &before {
            Some(b) => format!(
                "aborted: {} removed; the config is the file as it was before prepare, byte for byte ({})",
                r.target, b.hash
            ),
            None => format!(
                "aborted: {} removed; the config is as before the rotation",
                r.target
            ),
        });
        self.wait_converged(&hash).await?;
        Ok(())
    }

    async fn abort_promoted(
        &self,
        st: &mut RotationState,
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
