//! Crash-safe config writes. Every write goes: intent recorded in the state (the new file's
//! hash, layout and the stage it completes) → timestamped backup of the previous file → atomic
//! write → commit (the state expects the new hash, the stage advances). A run that finds an
//! intent completes it when the file is the one intended, and drops it otherwise: the write never
//! happened and the step is redone. The previous config is always either in place or in a backup.

use std::path::{Path, PathBuf};

use super::state::{PendingWrite, Stage, State, StateError};
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
}

/// The config file and the state folder that records what atrest wrote to it.
#[derive(Clone, Copy, Debug)]
pub struct Journal<'a> {
    /// The encryption config file the apiservers load.
    pub config_path: &'a Path,
    /// The state folder: `rotation.json`, backups, snapshots, the key archive.
    pub state_dir: &'a Path,
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
    /// a write that a crash interrupted.
    pub fn load_checked(&self, st: &mut State) -> Result<LoadedConfig, JournalError> {
        let loaded = config::load(self.config_path)?;
        self.recover(st, &loaded.hash)?;
        match &st.expected_hash {
            Some(h) if *h != loaded.hash => Err(JournalError::Changed(Box::new(ConfigChanged {
                path: self.config_path.to_path_buf(),
                expected: h.clone(),
                found: loaded.hash.clone(),
                diff: config::describe_diff(&st.expected_layout, &config::layout(&loaded.config)),
                backups: self.backups(),
                state: State::path(self.state_dir),
            }))),
            _ => Ok(loaded),
        }
    }

    /// A recorded intent: committed when the file on disk (`found`) is the intended one,
    /// dropped when the write never happened.
    fn recover(&self, st: &mut State, found: &str) -> Result<(), StateError> {
        let Some(p) = st.pending.clone() else {
            return Ok(());
        };
        if found == p.hash {
            self.commit(st, p)
        } else {
            st.pending = None;
            st.save(self.state_dir)
        }
    }

    /// Writes `new`, advancing the rotation to `stage` (`None`: the rotation is finished). The
    /// new key material reaches the disk here, before any use.
    pub fn write(
        &self,
        st: &mut State,
        new: &EncryptionConfig,
        stage: Option<Stage>,
    ) -> Result<Written, JournalError> {
        let text = config::render_yaml(new);
        // Refuse to write anything the apiserver would refuse to load.
        config::parse_str(self.config_path, &text)?;
        let pending = self.record_intent(st, text.as_bytes(), config::layout(new), stage)?;
        let backup = self.backup()?;
        fsutil::write_atomic(self.config_path, text.as_bytes(), 0o600)?;
        let hash = pending.hash.clone();
        self.commit(st, pending)?;
        Ok(Written { hash, backup })
    }

    fn record_intent(
        &self,
        st: &mut State,
        text: &[u8],
        layout: Vec<RuleLayout>,
        stage: Option<Stage>,
    ) -> Result<PendingWrite, StateError> {
        let pending = PendingWrite {
            hash: config::config_hash(text),
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
                .record_intent(&mut st, &self.new_text(), layout, stage)
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
            .write(&mut st, &f.new, Some(Stage::Promoted))
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
            .write(&mut st, &f.new, Some(Stage::Promoted))
            .unwrap();
        assert_eq!(w.hash, f.new_hash());
        assert_eq!(std::fs::read(&f.config_path).unwrap(), f.new_text());
        assert_eq!(std::fs::read_to_string(w.backup.unwrap()).unwrap(), f.old);
        assert_eq!(st.pending, None);
        assert!(st.rotation.as_ref().unwrap().promoted_at.is_some());
        assert_eq!(f.journal().load_state().unwrap(), st, "the commit is saved");
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
                .write(&mut st, &bad, Some(Stage::Promoted))
                .is_err()
        );
        assert_eq!(std::fs::read_to_string(&f.config_path).unwrap(), f.old);
        assert_eq!(f.journal().load_state().unwrap().pending, None);
    }
}
