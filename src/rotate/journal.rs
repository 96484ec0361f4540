//! Crash-safe config writes. Every write goes: intent recorded in the state (the new file's
//! hash, layout, the step that writes it and the stage it completes) → timestamped backup of the
//! previous file → atomic write → sync (the admin's `--sync-command` copies the file to the other
//! control-plane nodes) → commit (the state expects the new hash, the stage advances). A run that
//! finds an intent completes it when the file is the one intended — running the sync again, so a
//! sync that failed or was interrupted is always retried before the rotation moves on — and drops
//! it otherwise: the write never happened and the step is redone. The previous config is always
//! either in place or in a backup.

use std::path::{Path, PathBuf};

use super::Step;
use super::state::{PendingWrite, Stage, State, StateError};
use super::sync::{SyncCommand, SyncFailed, SyncOutput};
use crate::config::{self, ConfigError, EncryptionConfig, LoadedConfig, RuleLayout};
use crate::fsutil;

/// The subfolder of the state folder that keeps a timestamped copy of every config atrest replaced.
pub const BACKUP_DIR: &str = "backups";

/// Why the config could not be loaded or written safely.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The config file cannot be read, or the new one would not be loaded by the apiserver (it
    /// is then never written).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state file could not be read, or the intent or commit could not be recorded.
    #[error(transparent)]
    State(#[from] StateError),
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

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Journal<'_> {
    /// The rotation state (fresh when there is none yet), as it is on disk: a write a crash
    /// interrupted is only completed by [`Journal::load_checked`].
    pub fn load_state(&self) -> Result<State, StateError> {
        State::load(self.state_dir, self.config_path)
    }

    /// The folder of config backups ([`BACKUP_DIR`] in the state folder).
    pub fn backups(&self) -> PathBuf {
        self.state_dir.join(BACKUP_DIR)
    }

    /// Loads the config and checks it is the file atrest last wrote; first completes (or drops)
    /// a write that a crash or a failed sync interrupted.
    pub fn load_checked(&self, st: &mut State) -> Result<LoadedConfig, JournalError> {
        self.load_recovering(st).map(|(loaded, _)| loaded)
    }

    /// [`Journal::load_checked`], also saying which interrupted write it found and what became of
    /// it.
    pub fn load_recovering(
        &self,
        st: &mut State,
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
                state: State::path(self.state_dir),
            }))),
            _ => Ok((loaded, recovered)),
        }
    }

    /// A recorded intent: synced again and committed when the file on disk (`found`) is the
    /// intended one, dropped when the write never happened. A failed sync leaves it pending.
    fn recover(&self, st: &mut State, found: &str) -> Result<Option<Recovered>, JournalError> {
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
        st: &mut State,
        step: Step,
        new: &EncryptionConfig,
        stage: Option<Stage>,
    ) -> Result<Written, JournalError> {
        let text = config::render_yaml(new);
        // Refuse to write anything the apiserver would refuse to load.
        config::parse_str(self.config_path, &text)?;
        let pending = self.record_intent(st, step, text.as_bytes(), config::layout(new), stage)?;
        let backup = self.backup()?;
        fsutil::write_atomic(self.config_path, text.as_bytes(), 0o600)?;
        let synced = self.sync(&pending)?;
        let hash = pending.hash.clone();
        self.commit(st, pending)?;
        Ok(Written {
            hash,
            backup,
            synced,
        })
    }

    fn record_intent(
        &self,
        st: &mut State,
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

    fn backup(&self) -> Result<Option<PathBuf>, fsutil::WriteError> {
        if !self.config_path.exists() {
            return Ok(None);
        }
        fsutil::backup(self.config_path, &self.backups()).map(Some)
    }

    /// The write is on disk: the state expects it, and the rotation moves on.
    fn commit(&self, st: &mut State, p: PendingWrite) -> Result<(), StateError> {
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
        st.save(self.state_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotate::state::Rotation;

    const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dXY=";

    fn yaml(keys: &[&str]) -> String {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| format!("{{name: {k}, secret: {SECRET}}}"))
            .collect();
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{}]}}}}, {{identity: {{}}}}]\n",
            keys.join(", ")
        )
    }

    /// A config file (`key1` writes, `key2` reads) and a state whose rotation to `key2` is
    /// prepared: the next write promotes `key2`.
    struct Fixture {
        _dir: tempfile::TempDir,
        config_path: PathBuf,
        state_dir: PathBuf,
        old: String,
        new: EncryptionConfig,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let config_path = dir.path().join("encryption.yaml");
            let state_dir = dir.path().join("atrest");
            let old = yaml(&["key1", "key2"]);
            std::fs::write(&config_path, &old).unwrap();
            let new = config::parse_str(&config_path, &yaml(&["key2", "key1"])).unwrap();
            let f = Fixture {
                _dir: dir,
                config_path,
                state_dir,
                old,
                new,
            };
            let loaded = config::load(&f.config_path).unwrap();
            let mut st = f.journal().load_state().unwrap();
            st.expected_hash = Some(loaded.hash);
            st.expected_layout = config::layout(&loaded.config);
            st.rotation = Some(rotation(Stage::Prepared));
            st.save(&f.state_dir).unwrap();
            f
        }

        fn journal(&self) -> Journal<'_> {
            Journal {
                config_path: &self.config_path,
                state_dir: &self.state_dir,
                sync: None,
            }
        }

        fn journal_syncing<'a>(&'a self, sync: &'a SyncCommand) -> Journal<'a> {
            Journal {
                sync: Some(sync),
                ..self.journal()
            }
        }

        fn new_text(&self) -> Vec<u8> {
            config::render_yaml(&self.new).as_bytes().to_vec()
        }

        fn new_hash(&self) -> String {
            config::config_hash(&self.new_text())
        }

        /// What a fresh run reads from the disk.
        fn restart(&self) -> (State, Result<LoadedConfig, JournalError>) {
            let mut st = self.journal().load_state().unwrap();
            let loaded = self.journal().load_checked(&mut st);
            (st, loaded)
        }

        fn backups(&self) -> Vec<String> {
            let Ok(dir) = std::fs::read_dir(self.journal().backups()) else {
                return Vec::new();
            };
            dir.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect()
        }

        fn crash_after_intent(&self, stage: Option<Stage>) -> State {
            let mut st = self.journal().load_state().unwrap();
            let layout = config::layout(&self.new);
            self.journal()
                .record_intent(&mut st, Step::Promote, &self.new_text(), layout, stage)
                .unwrap();
            st
        }
    }

    fn rotation(stage: Stage) -> Rotation {
        Rotation {
            id: "t".into(),
            target: "aescbc:key2".into(),
            target_fingerprint: None,
            rules: vec![0],
            resources: vec!["secrets".into()],
            previous_write_keys: Default::default(),
            stage,
            started: now(),
            prepared_at: Some(now()),
            promoted_at: None,
            reencrypted_at: None,
            finished_at: None,
            snapshot: None,
            snapshot_skipped: true,
            aborted: false,
            retired: Vec::new(),
        }
    }

    fn assert_write_redone(f: &Fixture, mut st: State) {
        let w = f
            .journal()
            .write(&mut st, Step::Promote, &f.new, Some(Stage::Promoted))
            .unwrap();
        assert_eq!(w.hash, f.new_hash());
        let (st, loaded) = f.restart();
        assert_eq!(loaded.unwrap().hash, f.new_hash());
        assert_eq!(st.rotation.unwrap().stage, Stage::Promoted);
    }

    /// After a crash before the file was written, the next run drops the intent: the previous
    /// config is in place and expected, the stage did not move, and the step can be redone.
    fn assert_rolled_back(f: &Fixture) -> State {
        let (st, loaded) = f.restart();
        let loaded = loaded.unwrap();
        assert_eq!(std::fs::read_to_string(&f.config_path).unwrap(), f.old);
        assert_eq!(st.expected_hash.as_deref(), Some(loaded.hash.as_str()));
        assert_eq!(st.pending, None);
        assert_eq!(st.rotation.as_ref().unwrap().stage, Stage::Prepared);
        assert_eq!(
            f.journal().load_state().unwrap(),
            st,
            "the recovery is saved"
        );
        st
    }

    #[test]
    fn a_write_records_backs_up_writes_and_commits() {
        let f = Fixture::new();
        let mut st = f.journal().load_state().unwrap();
        let w = f
            .journal()
            .write(&mut st, Step::Promote, &f.new, Some(Stage::Promoted))
            .unwrap();
        assert_eq!(w.hash, f.new_hash());
        assert_eq!(std::fs::read(&f.config_path).unwrap(), f.new_text());
        assert_eq!(std::fs::read_to_string(w.backup.unwrap()).unwrap(), f.old);
        assert_eq!(st.pending, None);
        assert!(st.rotation.as_ref().unwrap().promoted_at.is_some());
        assert_eq!(f.journal().load_state().unwrap(), st, "the commit is saved");
    }

    fn sync(command: String) -> SyncCommand {
        SyncCommand {
            command,
            timeout: std::time::Duration::from_secs(10),
        }
    }

    #[test]
    fn the_sync_runs_after_the_write_and_before_the_commit() {
        let f = Fixture::new();
        let copy = f._dir.path().join("node-b.yaml");
        // While it runs, the new file is in place and the intent is still recorded.
        let sync = sync(format!(
            "grep -q '\"step\": \"promote\"' {state} && cp \"$ATREST_CONFIG_FILE\" {copy}",
            state = State::path(&f.state_dir).display(),
            copy = copy.display()
        ));
        let mut st = f.journal().load_state().unwrap();
        let w = f
            .journal_syncing(&sync)
            .write(&mut st, Step::Promote, &f.new, Some(Stage::Promoted))
            .unwrap();
        assert!(w.synced.is_some());
        assert_eq!(std::fs::read(&copy).unwrap(), f.new_text());
        assert_eq!(st.pending, None);
        assert_eq!(st.rotation.as_ref().unwrap().stage, Stage::Promoted);
    }

    #[test]
    fn a_failed_sync_leaves_the_write_pending_and_the_next_run_syncs_again() {
        let f = Fixture::new();
        let copy = f._dir.path().join("node-b.yaml");
        let failing = sync("echo node-b unreachable >&2; exit 1".into());
        let mut st = f.journal().load_state().unwrap();
        let e = f
            .journal_syncing(&failing)
            .write(&mut st, Step::Promote, &f.new, Some(Stage::Promoted))
            .unwrap_err();
        match &e {
            JournalError::Sync(s) => assert_eq!(s.stderr, "node-b unreachable"),
            other => panic!("expected a sync failure, got {other}"),
        }
        // The file is written here, the previous one is backed up, the stage did not move.
        assert_eq!(std::fs::read(&f.config_path).unwrap(), f.new_text());
        assert_eq!(f.backups(), [f.old.as_str()]);
        let on_disk = f.journal().load_state().unwrap();
        let p = on_disk.pending.as_ref().expect("the write stays pending");
        assert_eq!(
            (p.step, p.hash.clone()),
            (Some(Step::Promote), f.new_hash())
        );
        assert_eq!(on_disk.rotation.as_ref().unwrap().stage, Stage::Prepared);

        // Still failing: still pending, nothing committed.
        let mut st = f.journal().load_state().unwrap();
        assert!(matches!(
            f.journal_syncing(&failing).load_recovering(&mut st),
            Err(JournalError::Sync(_))
        ));
        assert!(f.journal().load_state().unwrap().pending.is_some());

        // A working command: synced, then committed.
        let working = sync(format!("cp \"$ATREST_CONFIG_FILE\" {}", copy.display()));
        let mut st = f.journal().load_state().unwrap();
        let (loaded, recovered) = f
            .journal_syncing(&working)
            .load_recovering(&mut st)
            .unwrap();
        let recovered = recovered.unwrap();
        assert!(recovered.completed && recovered.synced.is_some());
        assert_eq!(recovered.write.step, Some(Step::Promote));
        assert_eq!(loaded.hash, f.new_hash());
        assert_eq!(std::fs::read(&copy).unwrap(), f.new_text());
        assert_eq!(st.pending, None);
        assert_eq!(st.rotation.as_ref().unwrap().stage, Stage::Promoted);
        assert_eq!(f.journal().load_state().unwrap(), st, "the commit is saved");
    }

    #[test]
    fn a_write_that_never_happened_is_dropped_without_a_sync() {
        let f = Fixture::new();
        f.crash_after_intent(Some(Stage::Promoted));
        let never = sync("exit 1".into());
        let mut st = f.journal().load_state().unwrap();
        let (_, recovered) = f.journal_syncing(&never).load_recovering(&mut st).unwrap();
        assert!(!recovered.unwrap().completed);
        assert_eq!(st.pending, None);
    }

    #[test]
    fn a_prepare_whose_write_never_happened_started_no_rotation() {
        let f = Fixture::new();
        let mut st = f.journal().load_state().unwrap();
        let mut r = st.rotation.take().unwrap();
        r.prepared_at = None;
        st.rotation = Some(r);
        f.journal()
            .record_intent(
                &mut st,
                Step::Prepare,
                &f.new_text(),
                config::layout(&f.new),
                Some(Stage::Prepared),
            )
            .unwrap();
        let (st, loaded) = f.restart();
        assert!(loaded.is_ok());
        assert_eq!((st.pending, st.rotation), (None, None));
    }

    #[test]
    fn crash_after_the_intent_is_recorded_rolls_back() {
        let f = Fixture::new();
        f.crash_after_intent(Some(Stage::Promoted));
        assert!(f.journal().load_state().unwrap().pending.is_some());
        let st = assert_rolled_back(&f);
        assert!(f.backups().is_empty());
        assert_write_redone(&f, st);
    }

    #[test]
    fn crash_after_the_backup_rolls_back_and_keeps_the_backup() {
        let f = Fixture::new();
        f.crash_after_intent(Some(Stage::Promoted));
        f.journal().backup().unwrap().unwrap();
        let st = assert_rolled_back(&f);
        assert_eq!(f.backups(), [f.old.as_str()]);
        assert_write_redone(&f, st);
    }

    #[test]
    fn crash_after_the_write_before_the_commit_rolls_forward() {
        let f = Fixture::new();
        f.crash_after_intent(Some(Stage::Promoted));
        f.journal().backup().unwrap().unwrap();
        fsutil::write_atomic(&f.config_path, &f.new_text(), 0o600).unwrap();
        let (st, loaded) = f.restart();
        assert_eq!(loaded.unwrap().hash, f.new_hash());
        assert_eq!(st.expected_hash, Some(f.new_hash()));
        assert_eq!(st.expected_layout, config::layout(&f.new));
        assert_eq!(st.pending, None);
        let r = st.rotation.as_ref().unwrap();
        assert_eq!(r.stage, Stage::Promoted);
        assert!(r.promoted_at.is_some());
        // The previous config is never lost.
        assert_eq!(f.backups(), [f.old.as_str()]);
        assert_eq!(f.journal().load_state().unwrap(), st, "the commit is saved");
    }

    #[test]
    fn crash_after_the_last_write_finishes_the_rotation() {
        let f = Fixture::new();
        f.crash_after_intent(None);
        fsutil::write_atomic(&f.config_path, &f.new_text(), 0o600).unwrap();
        let (st, loaded) = f.restart();
        assert!(loaded.is_ok());
        assert_eq!(st.rotation, None);
        assert_eq!(st.history.len(), 1);
        assert!(st.history[0].finished_at.is_some());
    }

    #[test]
    fn a_file_changed_behind_atrests_back_is_refused_with_what_differs() {
        let f = Fixture::new();
        std::fs::write(&f.config_path, yaml(&["key1", "key2", "key3"])).unwrap();
        let (_, loaded) = f.restart();
        match loaded {
            Err(JournalError::Changed(c)) => {
                assert_eq!(c.path, f.config_path);
                assert_eq!(c.diff.len(), 1, "{:?}", c.diff);
                assert!(c.diff[0].contains("aescbc:key3"), "{:?}", c.diff);
                assert!(c.diff[0].ends_with("was added"), "{:?}", c.diff);
            }
            other => panic!("expected a refusal, got {:?}", other.map(|l| l.hash)),
        }
    }

    #[test]
    fn a_config_the_apiserver_would_refuse_is_never_written() {
        let f = Fixture::new();
        let mut bad = f.new.clone();
        bad.rules[0].providers.clear();
        let mut st = f.journal().load_state().unwrap();
        assert!(
            f.journal()
                .write(&mut st, Step::Promote, &bad, Some(Stage::Promoted))
                .is_err()
        );
        assert_eq!(std::fs::read_to_string(&f.config_path).unwrap(), f.old);
        assert_eq!(f.journal().load_state().unwrap().pending, None);
    }
}
