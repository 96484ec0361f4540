//! A config edited by hand during a rotation: continued from, once a fresh scan proves the
//! edit keeps every key the stored data needs and the rotation's rules and key where the stage
//! needs them. Outside a rotation every step adopts a hand edit by itself.

use crate::config::{self, LayoutKey, LoadedConfig};
use crate::model::Verdict;
use crate::rotate::{JournalError, RotateError, Rotator};
use crate::state::{Rotation, RotationState, Stage, Step};

impl Rotator<'_> {
    /// Makes the config file as it is now the one the rotation in progress continues from.
    pub async fn adopt(&self) -> Result<(), RotateError> {
        let mut st = self.load_state()?;
        let loaded = match self.load_recovering(&mut st) {
            Ok((loaded, _)) => {
                (self.say)(&format!(
                    "{} is the file atrest expects ({}): nothing to adopt",
                    self.config_path.display(),
                    loaded.hash
                ));
                return Ok(());
            }
            Err(RotateError::Journal(JournalError::Changed(_))) => config::load(&self.config_path)?,
            Err(e) => return Err(e),
        };
        let r = self.rotation(&st, Step::Adopt)?.clone();
        check_rotation_kept(&st, &loaded, &r)?;
        let found = self
            .find(&loaded, |item| {
                matches!(
                    item.class.verdict(),
                    Verdict::UnknownKey | Verdict::Undecryptable
                )
            })
            .await?;
        if found.count > 0 {
            return Err(RotateError::AdoptRefused {
                reason: format!(
                    "with the edited file, {} stored values could not be read (a key they need is gone):",
                    found.count
                ),
                objects: found.names,
            });
        }
        let (loaded, diff) = self.journal().adopt(&mut st)?;
        (self.say)(&format!(
            "adopted {} ({}) for the rotation to {} at stage {}; a fresh scan read every stored value with it. What changed:\n{}",
            self.config_path.display(),
            loaded.hash,
            r.target,
            r.stage,
            diff.iter()
                .map(|d| format!("  - {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
        self.wait_converged(&loaded.hash).await?;
        (self.say)(&format!("next: {}", r.stage.next_command()));
        Ok(())
    }
}

/// The rotation's rules still cover what they covered, and its new key is where the stage needs
/// it: a read key after prepare, the write key after promote.
fn check_rotation_kept(
    st: &RotationState,
    loaded: &LoadedConfig,
    r: &Rotation,
) -> Result<(), RotateError> {
    let now = config::layout(&loaded.config);
    let refuse = |reason: String| RotateError::AdoptRefused {
        reason,
        objects: Vec::new(),
    };
    for &i in &r.rules {
        let (Some(before), Some(after)) = (st.expected_layout.get(i), now.get(i)) else {
            return Err(refuse(format!(
                "the rotation edits resources[{i}], which the edited file no longer has; keep the rotation's rules in place"
            )));
        };
        if before.resources != after.resources {
            return Err(refuse(format!(
                "resources[{i}] covered {:?} and now covers {:?}; keep the rotation's rules in place (add new rules after them)",
                before.resources, after.resources
            )));
        }
        // The same key, not just the same name: its fingerprint when it is a local key.
        let is_target =
            |k: &LayoutKey| k.label == r.target && k.fingerprint == r.target_fingerprint;
        let position = after.keys.iter().position(is_target);
        match (r.stage, position) {
            (_, None) => {
                return Err(refuse(format!(
                    "resources[{i}] ({}) no longer has {}, the key the rotation moves to",
                    after.resources.join(", "),
                    r.target
                )));
            }
            (Stage::Prepared, Some(0)) => {
                return Err(refuse(format!(
                    "resources[{i}] ({}) writes with {} already: promote with `atrest rotate promote`, which first proves every apiserver can read it",
                    after.resources.join(", "),
                    r.target
                )));
            }
            (Stage::Promoted | Stage::Reencrypted, Some(p)) if p != 0 && !r.aborted => {
                return Err(refuse(format!(
                    "resources[{i}] ({}) no longer writes with {}: to go back, use `atrest rotate abort`",
                    after.resources.join(", "),
                    r.target
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
