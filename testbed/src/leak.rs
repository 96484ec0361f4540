//! The leak check (issue 18): no key, in raw, hex or base64 form, and no secret value a test
//! wrote may appear in anything atrest prints or writes, except in the two places that must
//! hold keys (`backups/` and `key-archive.yaml` in the state folder, which must be mode 0600).
//!
//! The needles live in one process-wide list. The test bed adds to it by itself: every key of
//! every encryption config it writes ([`register_config`], called by `ControlPlane::start` and
//! `write_config`), every key atrest wrote into a config, a backup or the key archive (harvested
//! after every run), the KMS test plugin's wrapping keys, and every secret value seeded through
//! `create_secrets`. A test can add more with [`register_key`], [`register_key_bytes`] and
//! [`register_value`]. The list is shared by all tests of one test binary: a key of one test
//! has no business in another test's output either, and random keys never collide.
//!
//! Every run of atrest (`crate::cli`) is checked: stdout, stderr, the files named by `--out`,
//! and the state folders ([`check_state_dir`]). The one command whose job is to print a key
//! (`atrest keys generate`) prints a key the list does not know yet, so its run passes.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::SystemTime;

use aho_corasick::AhoCorasick;
use base64::Engine;

/// Secret values shorter than this are not searched: "p", "one" or "fine" occur in ordinary
/// output (names, words), so a match would say nothing. Tests that want a value searched
/// use a distinctive one of at least this length.
pub const MIN_VALUE_LEN: usize = 8;

/// The file names in a state folder that must hold keys.
pub const ARCHIVE_FILE: &str = "key-archive.yaml";
/// The state folder's backups subfolder, searched like the rest.
pub const BACKUPS_DIR: &str = "backups";
/// etcd snapshots taken by atrest: searched for keys only (see [`check_state_dir`]).
pub const SNAPSHOTS_DIR: &str = "snapshots";

struct Needle {
    /// What it is (this text goes into panic messages): never a key; a seeded value is named
    /// as the test wrote it, to say which one leaked.
    label: String,
    bytes: Vec<u8>,
    /// Data etcd holds (a secret value, a KMS DEK or seed): not searched in etcd snapshots.
    value: bool,
}

#[derive(Default)]
struct Registry {
    needles: Vec<Needle>,
    seen: HashSet<Vec<u8>>,
    /// Files found clean, with their size and mtime and the number of needles then known:
    /// an unchanged file (an etcd snapshot, a finished report) is not read again.
    clean: HashMap<PathBuf, (u64, SystemTime, usize)>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere never leaves the list half-updated; keep using it.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    fn add(&mut self, label: String, bytes: Vec<u8>, value: bool) {
        if !bytes.is_empty() && self.seen.insert(bytes.clone()) {
            self.needles.push(Needle {
                label,
                bytes,
                value,
            });
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Registers key material in every form a program might print it: raw bytes, lower- and
/// uppercase hex, standard and URL-safe base64, each with and without padding.
pub fn register_key_bytes(material: &[u8], source: &str) {
    register_forms(material, source, false);
}

/// Like [`register_key_bytes`], for key material etcd itself may hold (the KMS DEKs and seeds
/// the apiserver had wrapped): searched everywhere but in copies of etcd's data (`snapshots/`),
/// which atrest takes byte for byte and which say nothing about atrest.
pub fn register_etcd_key_bytes(material: &[u8], source: &str) {
    register_forms(material, source, true);
}

fn register_forms(material: &[u8], source: &str, in_etcd: bool) {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    if material.is_empty() {
        return;
    }
    let mut r = registry();
    r.add(format!("{source} (raw bytes)"), material.to_vec(), in_etcd);
    let forms = [
        ("hex", hex::encode(material)),
        ("uppercase hex", hex::encode_upper(material)),
        ("base64", b64(material)),
        ("base64 without padding", STANDARD_NO_PAD.encode(material)),
        ("URL-safe base64", URL_SAFE.encode(material)),
        (
            "URL-safe base64 without padding",
            URL_SAFE_NO_PAD.encode(material),
        ),
    ];
    for (form, text) in forms {
        // Forms that coincide (no padding needed, no + or /) are kept once.
        r.add(format!("{source} ({form})"), text.into_bytes(), in_etcd);
    }
}

/// Registers a key as written in a config (`secret:`): the string itself, and when it is
/// base64, the decoded bytes in raw, hex and base64 form.
pub fn register_key(secret: &str, source: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_VALUE_LEN {
        return;
    }
    if let Ok(material) = base64::engine::general_purpose::STANDARD.decode(secret) {
        register_key_bytes(&material, source);
    }
    // Only new when not canonical base64 (or not base64 at all).
    registry().add(
        format!("{source} (as written)"),
        secret.as_bytes().to_vec(),
        false,
    );
}

/// Registers a secret value a test wrote, in plain and base64 form (the API serves `data` in
/// base64). Values shorter than [`MIN_VALUE_LEN`] are skipped: seeding helpers give every
/// object a distinctive value as well ([`crate::fixtures::seed_value_of`]), so that short test
/// values never leave an object unsearched.
pub fn register_value(value: &str) {
    if value.len() < MIN_VALUE_LEN {
        return;
    }
    let mut r = registry();
    r.add(
        format!("secret value {value:?}"),
        value.as_bytes().to_vec(),
        true,
    );
    r.add(
        format!("secret value {value:?} (base64)"),
        b64(value.as_bytes()).into_bytes(),
        true,
    );
}

/// Registers every key of an EncryptionConfiguration, a backup of one, or a key archive: each
/// `secret` field (parsed as YAML), and each `secret:` token of the text (the same keys when
/// the YAML parses; the only source when it does not, e.g. a deliberately broken config).
pub fn register_config(yaml: &str, source: &str) {
    fn walk(v: &serde_json::Value, source: &str) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(secret) = m.get("secret") {
                    let name = m.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                    let secret = match secret {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    register_key(&secret, &format!("key {name:?} from {source}"));
                }
                m.values().for_each(|x| walk(x, source));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, source)),
            _ => {}
        }
    }
    if let Ok(doc) = serde_saphyr::from_str::<serde_json::Value>(yaml) {
        walk(&doc, source);
    }
    for (i, _) in yaml.match_indices("secret:") {
        let rest = yaml[i + "secret:".len()..].trim_start_matches([' ', '\t']);
        let token: String = rest
            .chars()
            .take_while(|c| !matches!(c, ',' | '}' | ']' | '\n' | '\r' | ' ' | '#'))
            .collect();
        register_key(
            token.trim_matches(['"', '\'']),
            &format!("a key (secret: field) from {source}"),
        );
    }
}

/// Registers the keys of a file that holds a config, a backup of one, or a key archive.
pub fn register_config_file(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        register_config(&text, &path.display().to_string());
    }
}

/// Registers the keys atrest keeps in a state folder (the archive and the config backups), so
/// that the check knows them before it looks anywhere else.
pub fn register_state_dir_keys(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if holds_keys(dir, &p) && p.is_file() {
                register_config_file(&p);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join(BACKUPS_DIR)) {
        for e in entries.flatten() {
            register_config_file(&e.path());
        }
    }
}

/// What the registered needles find in `haystack`: one line per needle found (label and first
/// offset, never a key). `values`: also search the secret values.
pub fn find(haystack: &[u8], values: bool) -> Vec<String> {
    let r = registry();
    let needles: Vec<&Needle> = r.needles.iter().filter(|n| values || !n.value).collect();
    if needles.is_empty() {
        return Vec::new();
    }
    let ac = AhoCorasick::new(needles.iter().map(|n| &n.bytes)).unwrap();
    let mut found: Vec<(usize, usize)> = Vec::new();
    for m in ac.find_overlapping_iter(haystack) {
        if !found.iter().any(|(p, _)| *p == m.pattern().as_usize()) {
            found.push((m.pattern().as_usize(), m.start()));
        }
    }
    found
        .into_iter()
        .map(|(p, at)| format!("{} at byte {at}", needles[p].label))
        .collect()
}

/// Panics if `haystack` holds a registered key or secret value; `what` names it.
pub fn check_bytes(haystack: &[u8], what: &str) {
    let found = find(haystack, true);
    assert!(
        found.is_empty(),
        "leak check: {what} holds\n  {}",
        found.join("\n  ")
    );
}

/// Panics if the file holds a registered key or secret value (a report, an output file).
pub fn check_file(path: &Path) {
    check_file_for(path, true);
}

fn check_file_for(path: &Path, values: bool) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let stamp = (
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    );
    {
        let r = registry();
        if r.clean.get(path) == Some(&(stamp.0, stamp.1, r.needles.len())) {
            return;
        }
    }
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    let found = find(&bytes, values);
    assert!(
        found.is_empty(),
        "leak check: {} (written by atrest) holds\n  {}",
        path.display(),
        found.join("\n  ")
    );
    let mut r = registry();
    let n = r.needles.len();
    r.clean.insert(path.to_path_buf(), (stamp.0, stamp.1, n));
}

/// The key archive and its temporary siblings (`.key-archive.yaml.XXXX.tmp`, left by a write
/// killed half-way) hold keys by design.
fn holds_keys(state_dir: &Path, path: &Path) -> bool {
    if path.parent() != Some(state_dir) {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == ARCHIVE_FILE
        || (name.starts_with(&format!(".{ARCHIVE_FILE}.")) && name.ends_with(".tmp"))
}

fn assert_private(path: &Path) {
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    assert_eq!(
        mode,
        0o600,
        "leak check: {} holds keys and must be mode 0600, is {mode:o}",
        path.display()
    );
}

/// Walks atrest's state folder (missing: nothing to check). `backups/*` and `key-archive.yaml`
/// must hold keys: they are only checked for mode 0600. `snapshots/` (etcd snapshots) is
/// searched for keys only: etcd never stores a key, but it does store the secret values,
/// legitimately in plaintext for resources under identity, so a value there proves nothing.
/// Everything else (rotation.json, reencrypt-checkpoint.json, …) is searched for keys and
/// values.
pub fn check_state_dir(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    register_state_dir_keys(dir);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let top = p
                .strip_prefix(dir)
                .ok()
                .and_then(|r| r.components().next())
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("");
            if holds_keys(dir, &p) || top == BACKUPS_DIR {
                assert_private(&p);
            } else if top == SNAPSHOTS_DIR {
                check_file_for(&p, false);
            } else {
                check_file_for(&p, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        getrandom::fill(&mut b).unwrap();
        b
    }

    #[test]
    fn a_key_in_any_form_is_found_and_never_printed() {
        let key = random(32);
        let config = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: k1, secret: {}}}]}}}}]\n",
            b64(&key)
        );
        register_config(&config, "the self-test");
        for (form, text) in [
            (
                "base64",
                format!("error: bad key {} here", b64(&key)).into_bytes(),
            ),
            ("hex", format!("dump {}", hex::encode(&key)).into_bytes()),
            ("raw bytes", [b"x".as_slice(), &key, b"y"].concat()),
        ] {
            let found = find(&text, true);
            assert!(
                found.iter().any(|f| f.contains(form) && f.contains("k1")),
                "{form}: {found:?}"
            );
            for f in &found {
                assert!(!f.contains(&b64(&key)) && !f.contains(&hex::encode(&key)));
            }
            let err = std::panic::catch_unwind(|| check_bytes(&text, "stdout of the self-test"));
            assert!(err.is_err(), "{form}: check_bytes must fail");
        }
        check_bytes(
            b"nothing to see: aescbc:k1 fingerprint sha256:00",
            "clean text",
        );
    }

    #[test]
    fn values_are_found_but_not_in_snapshots_and_key_holders_must_be_private() {
        let value = format!("value-{}", hex::encode(random(6)));
        register_value(&value);
        register_value("short");
        assert!(!find(format!("x {value} y").as_bytes(), true).is_empty());
        assert!(!find(b64(value.as_bytes()).as_bytes(), true).is_empty());
        assert!(find(format!("x {value} y").as_bytes(), false).is_empty());
        assert!(
            find(b"a short word", true).is_empty(),
            "short values are skipped"
        );

        let key = random(32);
        register_key_bytes(&key, "a state-dir self-test key");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("snapshots")).unwrap();
        std::fs::write(d.join("snapshots/etcd.db"), &value).unwrap();
        check_state_dir(d);
        std::fs::write(d.join("rotation.json"), format!("{{\"v\": \"{value}\"}}")).unwrap();
        assert!(std::panic::catch_unwind(|| check_state_dir(d)).is_err());
        std::fs::remove_file(d.join("rotation.json")).unwrap();
        std::fs::write(d.join("snapshots/etcd.db"), &key).unwrap();
        assert!(
            std::panic::catch_unwind(|| check_state_dir(d)).is_err(),
            "a key in a snapshot"
        );
        std::fs::remove_file(d.join("snapshots/etcd.db")).unwrap();
        std::fs::write(d.join(ARCHIVE_FILE), b64(&key)).unwrap();
        std::fs::set_permissions(d.join(ARCHIVE_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(
            std::panic::catch_unwind(|| check_state_dir(d)).is_err(),
            "the archive must be 0600"
        );
        std::fs::set_permissions(d.join(ARCHIVE_FILE), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        check_state_dir(d);
    }
}
