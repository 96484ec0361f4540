//! Step 4: keys no stored value uses are removed from the rules (and archived), after a fresh
//! scan proves it. There is no way to skip the proof.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{self, LoadedConfig, Provider};
use crate::keys::custody::{Custody, SEALED_ARCHIVE_DIR};
use crate::keys::{Key, archive};
use crate::model::KeyLabel;
use crate::model::time::now;
use crate::rotate::{RotateError, Rotator};
use crate::state::{ARCHIVE_FILE, CHECKPOINT_FILE, Rotation, Stage, Step};

/// What prune removes: labels, and the local keys among them (to archive).
struct Retired {
    labels: BTreeSet<KeyLabel>,
    keys: Vec<Arc<Key>>,
}

impl Rotator<'_> {
    /// Finishes the rotation: after a fresh scan proves no stored object needs them, removes
    /// every key but the write key from the rotation's rules, archiving local ones first.
    /// Returns the key labels removed.
    ///
    /// A rerun after its write was left pending (the sync command failed) syncs it again,
    /// commits it (the rotation is then finished) and waits for the apiservers.
    pub async fn prune(&self) -> Result<Vec<KeyLabel>, RotateError> {
        let mut st = self.load_state()?;
        let (loaded, resumed) = self.load_resuming(&mut st, Step::Prune)?;
        if let Some(hash) = resumed {
            let removed = st
                .history
                .last()
                .map(|r| r.retired.clone())
                .unwrap_or_default();
            return self.pruned(&hash, removed).await;
        }
        self.require_stage(&st, Step::Prune, Stage::Reencrypted)?;
        self.wait_converged(&loaded.hash).await?;
        let r = self.rotation(&st, Step::Prune)?.clone();
        let retired = retired(&loaded, &r);
        let found = self.not_on_write_key(&loaded, &r, &retired.labels).await?;
        if found.count > 0 {
            return Err(RotateError::PruneRefused {
                count: found.count,
                objects: found.names,
            });
        }
        self.archive(&retired.keys)?;
        for k in &retired.keys {
            let record = st
                .keys
                .entry(KeyLabel::key(k.provider(), k.name()))
                .or_default();
            record.archived.get_or_insert(now());
        }
        let remove = retired.labels;
        let new = config::remove(&loaded.config, &r.rules, &remove)?;
        if let Some(rot) = st.rotation.as_mut() {
            rot.retired = remove.iter().cloned().collect();
        }
        for label in &remove {
            st.keys.entry(label.clone()).or_default().retired = Some(now());
        }
        let hash = self.write_config(&mut st, Step::Prune, &new, None)?;
        self.pruned(&hash, remove.into_iter().collect()).await
    }

    /// After prune's write: says what it removed, waits for the apiservers, drops the checkpoint.
    async fn pruned(
        &self,
        hash: &str,
        removed: Vec<KeyLabel>,
    ) -> Result<Vec<KeyLabel>, RotateError> {
        (self.say)(&format!(
            "pruned: removed {}",
            if removed.is_empty() {
                "nothing".to_string()
            } else {
                removed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        self.wait_converged(hash).await?;
        let _ = std::fs::remove_file(self.state_dir.join(CHECKPOINT_FILE));
        Ok(removed)
    }

    /// Retired local keys go to the key archive (0600) before the config forgets them.
    fn archive(&self, keys: &[Arc<Key>]) -> Result<(), RotateError> {
        if keys.is_empty() {
            return Ok(());
        }
        let retired = crate::model::time::format(&now());
        if let Some(mut custody) = Custody::load(&self.state_dir)? {
            // Sealed with the recorded recipients: no identity needed, no plaintext written.
            custody.archive_keys(&self.state_dir, keys, &retired)?;
            (self.say)(&format!(
                "archived {} retired keys in {}, {}",
                keys.len(),
                self.state_dir.join(SEALED_ARCHIVE_DIR).display(),
                custody.describe()
            ));
            return Ok(());
        }
        let path = self.state_dir.join(ARCHIVE_FILE);
        archive::append(&path, keys, &retired)?;
        (self.say)(&format!(
            "archived {} retired keys in {} (0600, NOT sealed: `atrest keys seal --seal-to RECIPIENT` seals it)",
            keys.len(),
            path.display()
        ));
        Ok(())
    }
}

/// Every key and provider of the rotation's rules other than each rule's write key.
fn retired(loaded: &LoadedConfig, r: &Rotation) -> Retired {
    let mut out = Retired {
        labels: BTreeSet::new(),
        keys: Vec::new(),
    };
    for &i in &r.rules {
        let rule = &loaded.config.rules[i];
        let write = rule
            .providers
            .first()
            .map_or(KeyLabel::Identity, |p| p.write_key());
        for p in &rule.providers {
            match p {
                Provider::Keys { provider, keys } => {
                    for k in keys {
                        let label = KeyLabel::key(*provider, k.name());
                        if label != write {
                            out.labels.insert(label);
                            out.keys.push(Arc::clone(k));
                        }
                    }
                }
                other if other.write_key() != write => {
                    out.labels.insert(other.write_key());
                }
                _ => {}
            }
        }
    }
    out
}
