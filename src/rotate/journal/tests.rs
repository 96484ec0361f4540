//! Unit tests, kept apart so the module reads as its one responsibility.

use super::*;
use crate::GroupResource;
use crate::state::{ConfigBefore, Rotation};

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
    fn restart(&self) -> (RotationState, Result<LoadedConfig, JournalError>) {
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

    fn crash_after_intent(&self, stage: Option<Stage>) -> RotationState {
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
        log: Vec::new(),
        id: "t".into(),
        target: "aescbc:key2".parse().unwrap(),
        target_fingerprint: None,
        rules: vec![0],
        resources: vec![GroupResource::secrets()],
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
        before: None,
    }
}

fn assert_write_redone(f: &Fixture, mut st: RotationState) {
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
fn assert_rolled_back(f: &Fixture) -> RotationState {
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
        state = RotationState::path(&f.state_dir).display(),
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

#[test]
fn a_write_with_the_keys_of_the_file_before_the_rotation_writes_its_bytes() {
    let f = Fixture::new();
    // The admin's file before the rotation: comments and their own formatting.
    let before_text = format!("# keep: reviewed\n{}", yaml(&["key1"]));
    let before_path = f.state_dir.join("before.yaml");
    std::fs::write(&before_path, &before_text).unwrap();
    let mut st = f.journal().load_state().unwrap();
    st.rotation.as_mut().unwrap().before = Some(ConfigBefore {
        path: before_path.clone(),
        hash: config::config_hash(before_text.as_bytes()),
    });
    st.save(&f.state_dir).unwrap();
    // The same keys as before the rotation: its exact bytes.
    let same = config::parse_str(&f.config_path, &yaml(&["key1"])).unwrap();
    f.journal()
        .write(&mut st, Step::Abort, &same, Some(Stage::Prepared))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&f.config_path).unwrap(),
        before_text
    );
    // Other keys: rendered as usual.
    f.journal()
        .write(&mut st, Step::Promote, &f.new, Some(Stage::Promoted))
        .unwrap();
    assert_eq!(std::fs::read(&f.config_path).unwrap(), f.new_text());
    // A copy that no longer hashes as recorded is not trusted.
    std::fs::write(&before_path, format!("# changed\n{before_text}")).unwrap();
    f.journal()
        .write(&mut st, Step::Abort, &same, Some(Stage::Prepared))
        .unwrap();
    assert_ne!(
        std::fs::read_to_string(&f.config_path).unwrap(),
        before_text
    );
}

#[test]
fn adopt_takes_the_file_as_it_is_and_says_what_changed() {
    let f = Fixture::new();
    let edited = format!("{}# a comment\n", f.old);
    std::fs::write(&f.config_path, &edited).unwrap();
    let mut st = f.journal().load_state().unwrap();
    assert!(matches!(
        f.journal().load_checked(&mut st),
        Err(JournalError::Changed(_))
    ));
    let (loaded, diff) = f.journal().adopt(&mut st).unwrap();
    assert_eq!(loaded.hash, config::config_hash(edited.as_bytes()));
    assert_eq!(
        diff,
        vec!["the key layout is the same; only formatting or comments differ".to_string()]
    );
    let (_, reloaded) = f.restart();
    assert_eq!(
        reloaded.unwrap().hash,
        loaded.hash,
        "the state expects it now"
    );
}
