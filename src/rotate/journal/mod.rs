//! Crash-safe config writes. Every write goes: intent recorded in the state (the new file's
//! hash, layout, the step that writes it and the stage it completes) → timestamped backup of the
//! previous file → atomic write → sync (the admin's `--sync-command` copies the file to the other
//! control-plane nodes) → commit (the state expects the new hash, the stage advances). A run that
//! finds an intent completes it when the file is the one intended — running the sync again, so a
//! sync that failed or was interrupted is always retried before the rotation moves on — and drops
//! it otherwise: the write never happened and the step is redone. The previous config is always
//! either in place or in a backup.

use std::path::{Path, PathBuf};

use super::sync::{SyncCommand, SyncFailed, SyncOutput};
use crate::config::{self, ConfigError, EncryptionConfig, LoadedConfig, RuleLayout};
use crate::fsutil;
use crate::keys::custody::Custody;
use crate::model::time::now;
use crate::state::{BACKUP_DIR, PendingWrite, RotationState, Stage, StateError, Step, StepRecord};

/// Why the config could not be loaded or written safely.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The config file cannot be read, or the new one would not be loaded by the apiserver (it
    /// is then never written).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state file could not be read, or the intent or commit could not be recorded.
    #[error(transparent)]
    RotationState(#[from] StateError),
    /// The backup or the new config file could not be written; the previous config is still in
    /// place.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    /// The config file is not the one atrest last wrote: someone edited it meanwhile.
    #[error(transparent)]
    Changed(Box<ConfigChanged>),
    /// The sync command did not succeed: the file is written here, the write stays pending, and
    /// the next run syncs again before anything else.
    #[error(transparent)]
    Sync(Box<SyncFailed>),
    /// The state folder seals backups, and sealing failed; the previous config is still in
    /// place.
    #[error(transparent)]
    Custody(#[from] crate::keys::custody::CustodyError),
}

impl From<SyncFailed> for JournalError {
    fn from(e: SyncFailed) -> Self {
        JournalError::Sync(Box::new(e))
    }
}

/// The config file is not the one atrest last wrote: what differs, by key name and provider.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} changed behind atrest's back (it expected {expected}, the file is {found}):\n{}",
    .path.display(),
    .diff.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n")
)]
pub struct ConfigChanged {
    /// The config file.
    pub path: PathBuf,
    /// The hash atrest last wrote (or accepted).
    pub expected: String,
    /// The hash of the file now.
    pub found: String,
    /// What differs, one line per change, in words an admin can act on.
    pub diff: Vec<String>,
    /// Where the configs atrest wrote before are kept, to restore one.
    pub backups: PathBuf,
    /// The state file; moving it away starts over from the current config.
    pub state: PathBuf,
}

/// A config write that reached the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// `sha256:<hex>` of the new file: what every apiserver must report before the step goes on.
    pub hash: String,
    /// Where the previous file was copied (none when there was no file).
    pub backup: Option<PathBuf>,
    /// What the sync command printed (none without one).
    pub synced: Option<SyncOutput>,
}

/// A write a previous run left pending, as the next run found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The intent that was found.
    pub write: PendingWrite,
    /// The file is the one intended: it was synced (when there is a sync command) and committed.
    /// Otherwise the write never happened and the intent was dropped.
    pub completed: bool,
    /// What the sync command printed, when it ran.
    pub synced: Option<SyncOutput>,
}

/// The config file and the state folder that records what atrest wrote to it.
#[derive(Clone, Copy, Debug)]
pub struct Journal<'a> {
    /// The encryption config file the apiservers load.
    pub config_path: &'a Path,
    /// The state folder: `rotation.json`, backups, snapshots, the key archive.
    pub state_dir: &'a Path,
    /// Copies the file to the other control-plane nodes after each write, before its commit;
    /// `None`: the admin copies it by other means.
    pub sync: Option<&'a SyncCommand>,
}

impl Journal<'_> {
    /// The rotation state (fresh when there is none yet), as it is on disk: a write a crash
    /// interrupted is only completed by [`Journal::load_checked`].
    pub fn load_state(&self) -> Result<RotationState, StateError> {
        RotationState::load(self.state_dir, self.config_path)
    }

    /// The folder of config backups ([`BACKUP_DIR`] in the state folder).
    pub fn backups(&self) -> PathBuf {
        self.state_dir.join(BACKUP_DIR)
    }

    /// Loads the config and checks it is the file atrest last wrote; first completes (or drops)
    /// a write that a crash or a failed sync interrupted.
    pub fn load_checked(&self, st: &mut RotationState) -> Result<LoadedConfig, JournalError> {
        self.load_recovering(st).map(|(loaded, _)| loaded)
    }

    /// [`Journal::load_checked`], also saying which interrupted write it found and what became of
    /// it.
    pub fn load_recovering(
        &self,
        st: &mut RotationState,
    ) -> Result<(LoadedConfig, Option<Recovered>), JournalError> {
        let loaded = config::load(self.config_path)?;
        let recovered = self.recover(st, &loaded.hash)?;
        match &st.expected_hash {
            Some(h) if *h != loaded.hash => Err(JournalError::Changed(Box::new(ConfigChanged {
                path: self.config_path.to_path_buf(),
                expected: h.clone(),
                found: loaded.hash.clone(),
                diff: config::describe_diff(&st.expected_layout, &config::layout(&loaded.config)),
                backups: self.backups(),
                state: RotationState::path(self.state_dir),
            }))),
            _ => Ok((loaded, recovered)),
        }
    }

    /// A recorded intent: synced again and committed when the file on disk (`found`) is the
    /// intended one, dropped when the write never happened. A failed sync leaves it pending.
    fn recover(
        &self,
        st: &mut RotationState,
        found: &str,
    ) -> Result<Option<Recovered>, JournalError> {
        let Some(p) = st.pending.clone() else {
            return Ok(None);
        };
        if found == p.hash {
            let synced = self.sync(&p)?;
            self.commit(st, p.clone())?;
            Ok(Some(Recovered {
                write: p,
                completed: true,
                synced,
            }))
        } else {
            st.pending = None;
            // A prepare whose first write never reached the file started no rotation: the new key
            // is nowhere, and the next prepare starts over.
            if p.step == Some(Step::Prepare)
                && st
                    .rotation
                    .as_ref()
                    .is_some_and(|r| r.stage == Stage::Prepared && r.prepared_at.is_none())
            {
                st.rotation = None;
            }
            st.save(self.state_dir)?;
            Ok(Some(Recovered {
                write: p,
                completed: false,
                synced: None,
            }))
        }
    }

    /// Runs the sync command (if any) for the file of `p`, already on disk.
    fn sync(&self, p: &PendingWrite) -> Result<Option<SyncOutput>, SyncFailed> {
        let Some(sync) = self.sync else {
            return Ok(None);
        };
        let step = p.step.map(Step::as_str).unwrap_or("unknown");
        sync.run(self.config_path, &p.hash, step).map(Some)
    }

    /// Writes `new` for `step`, advancing the rotation to `stage` (`None`: the rotation is
    /// finished). The new key material reaches the disk here, before any use. The write is
    /// committed only once the sync command (if any) copied it; when the sync fails the file is
    /// written, the intent stays recorded, and the next run syncs again before it goes on.
    pub fn write(
        &self,
        st: &mut RotationState,
        step: Step,
        new: &EncryptionConfig,
        stage: Option<Stage>,
    ) -> Result<Written, JournalError> {
        // The file as it was before the rotation, when `new` holds exactly its keys (an abort
        // before promote, a prune after an abort): its own bytes, comments and all.
        let text = match before_bytes(st, new) {
            Some(before) => before,
            None => config::render_yaml(new),
        };
        // Refuse to write anything the apiserver would refuse to load.
        config::parse_str(self.config_path, &text)?;
        let pending = self.record_intent(st, step, text.as_bytes(), config::layout(new), stage)?;
        fsutil::crash_point("journal:after-intent");
        let backup = self.backup()?;
        fsutil::crash_point("journal:after-backup");
        fsutil::write_atomic(self.config_path, text.as_bytes(), 0o600)?;
        fsutil::crash_point("journal:after-config");
        let synced = self.sync(&pending)?;
        fsutil::crash_point("journal:after-sync");
        let hash = pending.hash.clone();
        self.commit(st, pending)?;
        Ok(Written {
            hash,
            backup,
            synced,
        })
    }

    /// Accepts the config file as it is now as the one atrest expects (a hand edit made while no
    /// rotation is in progress): returns it and what changed, by rule and key name and
    /// fingerprint.
    pub fn adopt(
        &self,
        st: &mut RotationState,
    ) -> Result<(LoadedConfig, Vec<String>), JournalError> {
        let loaded = config::load(self.config_path)?;
        let layout = config::layout(&loaded.config);
        let diff = config::describe_diff(&st.expected_layout, &layout);
        st.expected_hash = Some(loaded.hash.clone());
        st.expected_layout = layout;
        st.save(self.state_dir)?;
        Ok((loaded, diff))
    }

    fn record_intent(
        &self,
        st: &mut RotationState,
        step: Step,
        text: &[u8],
        layout: Vec<RuleLayout>,
        stage: Option<Stage>,
    ) -> Result<PendingWrite, StateError> {
        let pending = PendingWrite {
            hash: config::config_hash(text),
            step: Some(step),
            stage,
            layout,
        };
        st.pending = Some(pending.clone());
        st.save(self.state_dir)?;
        Ok(pending)
    }

    /// A copy of the config before it is written: sealed to the custodians when the state
    /// folder has a custody file (the plaintext copy is never written), else 0600.
    fn backup(&self) -> Result<Option<PathBuf>, JournalError> {
        if !self.config_path.exists() {
            return Ok(None);
        }
        match Custody::load(self.state_dir)? {
            Some(c) => Ok(Some(c.backup(self.config_path, &self.backups())?)),
            None => Ok(Some(fsutil::backup(self.config_path, &self.backups())?)),
        }
    }

    /// The write is on disk: the state expects it, and the rotation moves on.
    fn commit(&self, st: &mut RotationState, p: PendingWrite) -> Result<(), StateError> {
        st.expected_hash = Some(p.hash.clone());
        st.expected_layout = p.layout.clone();
        if let Some(r) = st.rotation.as_mut() {
            if let Some(step) = p.step {
                r.log
                    .push(StepRecord::now(step, format!("config {} written", p.hash)));
            }
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
        st.save(self.state_dir)
    }
}

/// The bytes of the config as it was before the rotation in progress, when they still hash as
/// recorded and their keys are exactly `new`'s.
fn before_bytes(st: &RotationState, new: &EncryptionConfig) -> Option<zeroize::Zeroizing<String>> {
    let before = st.rotation.as_ref()?.before.as_ref()?;
    // It holds keys: wiped when dropped, like every config text atrest handles.
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(&before.path).ok()?);
    if config::config_hash(text.as_bytes()) != before.hash {
        return None;
    }
    let parsed = config::parse_str(&before.path, &text).ok()?;
    (config::layout(&parsed) == config::layout(new)).then_some(text)
}

#[cfg(test)]
mod tests;
