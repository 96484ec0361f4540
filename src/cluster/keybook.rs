//! Every key atrest can find beyond a resource's own rule: the other rules of the config, the
//! key archive, the config backups and the rotation state. A value stored under a key its
//! resource's config does not have (a rule removed by hand, a retired key) is named with what is
//! known of that key — its fingerprint and where it is kept — so an admin can put it back; the
//! keys with material are also tried on such values, to tell which one opens them.
//!
//! Only names, fingerprints and file paths leave this module: never key material.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{EncryptionConfig, Provider};
use crate::keys::custody::{Custody, Opener, SEALED_ARCHIVE_DIR, SEALED_SUFFIX, sealed_files};
use crate::keys::{Key, archive};
use crate::model::KeyLabel;
pub use crate::model::KnownKey;
use crate::state::{ARCHIVE_FILE, BACKUP_DIR, RotationState};

/// A sealed archive file or folder, or a sealed backup.
fn is_sealed(path: &Path) -> bool {
    path.is_dir() || path.to_string_lossy().ends_with(SEALED_SUFFIX)
}

/// What [`KeyBook::gather`] found.
#[derive(Default)]
pub struct KeyBook {
    /// Every key found, each fingerprint once (the first source found wins: config, archive,
    /// backups, state).
    pub known: Vec<KnownKey>,
    /// The keys with material among them, tried last on every value (after the resource's own
    /// providers): a value only one of them opens is one the apiserver cannot read.
    pub material: Vec<Arc<Key>>,
    /// Files that could not be read (permissions, a damaged backup); the scan goes on without
    /// them.
    pub unreadable: Vec<String>,
}

impl KeyBook {
    /// Gathers the keys of `config`'s rules, of `archives` (the state folder's key archive and
    /// any given with `--key-archive`), of the config backups in `state_dir/backups`, and the
    /// labels and fingerprints the rotation state records.
    ///
    /// Sealed archives and backups (`*.age`, a `key-archive/` folder) are opened with `opener`;
    /// without one, the custody file still names the sealed keys (label, fingerprint, where),
    /// and sealed backups are left out.
    pub fn gather(
        config: &EncryptionConfig,
        state_dir: Option<&Path>,
        archives: &[PathBuf],
        opener: Option<&Opener>,
    ) -> KeyBook {
        let mut book = KeyBook::default();
        book.add_config(config, "the config");
        let mut archive_files: Vec<PathBuf> = archives.to_vec();
        if let Some(dir) = state_dir {
            for own in [dir.join(ARCHIVE_FILE), dir.join(SEALED_ARCHIVE_DIR)] {
                if own.exists() && !archive_files.contains(&own) {
                    archive_files.push(own);
                }
            }
        }
        for path in &archive_files {
            if is_sealed(path) {
                book.add_sealed_archive(path, opener);
            } else {
                book.add_archive(path);
            }
        }
        if let Some(dir) = state_dir {
            if opener.is_none()
                && let Ok(Some(c)) = Custody::load(dir)
            {
                book.add_custody_index(dir, &c);
            }
            book.add_backups(&dir.join(BACKUP_DIR), opener);
            book.add_state(dir);
        }
        book
    }

    /// Every key found under `label`.
    pub fn named<'a>(&'a self, label: &'a KeyLabel) -> impl Iterator<Item = &'a KnownKey> + 'a {
        self.known.iter().filter(move |k| &k.label == label)
    }

    fn push(&mut self, k: KnownKey, material: Option<&Arc<Key>>) {
        let seen = self
            .known
            .iter()
            .any(|o| o.label == k.label && o.fingerprint == k.fingerprint);
        if !seen {
            self.known.push(k);
        }
        if let Some(m) = material
            && !self
                .material
                .iter()
                .any(|o| o.fingerprint() == m.fingerprint() && o.name() == m.name())
        {
            self.material.push(Arc::clone(m));
        }
    }

    fn add_config(&mut self, config: &EncryptionConfig, what: &str) {
        for (i, rule) in config.rules.iter().enumerate() {
            let source = format!(
                "{what}, rule resources[{i}] ({})",
                rule.resources.join(", ")
            );
            for p in &rule.providers {
                match p {
                    Provider::Identity => {}
                    Provider::Keys { provider, keys } => {
                        for k in keys {
                            self.push(
                                KnownKey {
                                    label: KeyLabel::key(*provider, k.name()),
                                    fingerprint: Some(k.fingerprint().to_string()),
                                    source: source.clone(),
                                    endpoint: None,
                                },
                                Some(k),
                            );
                        }
                    }
                    Provider::Kms(k) => self.push(
                        KnownKey {
                            label: p.write_key(),
                            fingerprint: None,
                            source: source.clone(),
                            endpoint: Some(k.endpoint.clone()),
                        },
                        None,
                    ),
                }
            }
        }
    }

    fn add_archive(&mut self, path: &Path) {
        let (listed, keys) = match (archive::list(path), archive::load(path)) {
            (Ok(l), Ok(k)) => (l, k),
            (Err(e), _) | (_, Err(e)) => {
                self.unreadable.push(e.to_string());
                return;
            }
        };
        for (entry, key) in listed.iter().zip(&keys) {
            self.push(
                KnownKey {
                    label: KeyLabel::key(entry.provider, &entry.name),
                    fingerprint: Some(entry.fingerprint.clone()),
                    source: format!("key archive {} (retired {})", path.display(), entry.retired),
                    endpoint: None,
                },
                Some(key),
            );
        }
    }

    fn add_sealed_archive(&mut self, path: &Path, opener: Option<&Opener>) {
        let Some(opener) = opener else { return };
        for file in sealed_files(path) {
            let text = match opener.open_text(&file) {
                Ok(t) => t,
                Err(e) => {
                    self.unreadable.push(e.to_string());
                    continue;
                }
            };
            let (listed, keys) = match (
                archive::list_text(&file, &text),
                archive::load_text(&file, &text),
            ) {
                (Ok(l), Ok(k)) => (l, k),
                (Err(e), _) | (_, Err(e)) => {
                    self.unreadable.push(e.to_string());
                    continue;
                }
            };
            for (entry, key) in listed.iter().zip(&keys) {
                self.push(
                    KnownKey {
                        label: KeyLabel::key(entry.provider, &entry.name),
                        fingerprint: Some(entry.fingerprint.clone()),
                        source: format!(
                            "sealed key archive {} (retired {})",
                            file.display(),
                            entry.retired
                        ),
                        endpoint: None,
                    },
                    Some(key),
                );
            }
        }
    }

    /// The sealed archive's keys as the custody file records them: named, not opened.
    fn add_custody_index(&mut self, dir: &Path, c: &Custody) {
        for f in &c.archive {
            for entry in &f.keys {
                self.push(
                    KnownKey {
                        label: KeyLabel::key(entry.provider, &entry.name),
                        fingerprint: Some(entry.fingerprint.clone()),
                        source: format!(
                            "sealed key archive {} (retired {}; {}: open it with -i IDENTITY)",
                            dir.join(SEALED_ARCHIVE_DIR).join(&f.file).display(),
                            entry.retired,
                            c.describe()
                        ),
                        endpoint: None,
                    },
                    None,
                );
            }
        }
    }

    fn add_backups(&mut self, dir: &Path, opener: Option<&Opener>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        // Newest first: backups are named by time.
        files.sort();
        files.reverse();
        for f in files {
            if is_sealed(&f) {
                let Some(opener) = opener else { continue };
                let parsed = opener
                    .open_text(&f)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        crate::config::parse_str(&f, &text).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(config) => {
                        self.add_config(&config, &format!("sealed config backup {}", f.display()))
                    }
                    Err(e) => self.unreadable.push(e),
                }
                continue;
            }
            match crate::config::load(&f) {
                Ok(loaded) => {
                    self.add_config(&loaded.config, &format!("config backup {}", f.display()))
                }
                Err(e) => self.unreadable.push(e.to_string()),
            }
        }
    }

    fn add_state(&mut self, dir: &Path) {
        let Ok(text) = std::fs::read_to_string(RotationState::path(dir)) else {
            return;
        };
        let Ok(st) = serde_json::from_str::<RotationState>(&text) else {
            return;
        };
        let mut seen: BTreeSet<(KeyLabel, Option<String>)> = BTreeSet::new();
        for (label, rec) in &st.keys {
            let parsed = label.clone();
            if !seen.insert((label.clone(), rec.fingerprint.clone())) {
                continue;
            }
            let when = rec
                .retired
                .map(|t| format!("retired {}", crate::model::time::format(&t)))
                .or(rec
                    .added
                    .map(|t| format!("added {}", crate::model::time::format(&t))))
                .unwrap_or_else(|| "recorded".into());
            self.push(
                KnownKey {
                    label: parsed,
                    fingerprint: rec.fingerprint.clone(),
                    source: format!(
                        "rotation state {} ({when}; the state holds no copy of the key)",
                        RotationState::path(dir).display()
                    ),
                    endpoint: None,
                },
                None,
            );
        }
    }
}

/// The rule that makes `resource`'s values under `labels` readable again. A resource no rule
/// covers gets its rule back as it must have been: the missing keys first (the first writes
/// again), then identity for what was written as plaintext meanwhile. A resource whose rule
/// lacks a key gets it added after the providers it has (new writes do not change). Secrets
/// are named by fingerprint and where they are kept, never shown.
pub fn restore_rule(
    config: &EncryptionConfig,
    resource: &crate::GroupResource,
    labels: &[KeyLabel],
    known: &[KnownKey],
) -> String {
    let resolved = config.resolve(resource);
    let mut lines = Vec::new();
    let covered = resolved.rule_name.is_some();
    match &resolved.rule_name {
        Some(rule) => lines.push(format!(
            "add to the providers of the rule for {rule}, after the ones it has:"
        )),
        None => {
            lines.push(format!("- resources: [{}]", resource.config_name()));
            lines.push("  providers:".to_string());
        }
    }
    for label in labels {
        let known: Vec<&KnownKey> = known.iter().filter(|k| &k.label == label).collect();
        match label {
            KeyLabel::Key { provider, name } => {
                let secret = match known.iter().find(|k| k.fingerprint.is_some()) {
                    Some(k) => format!(
                        "<the secret of {label} {}: {}>",
                        k.fingerprint.as_deref().unwrap_or(""),
                        k.source
                    ),
                    None => format!("<the secret of {label}: not found by atrest>"),
                };
                lines.push(format!("  - {}:", provider.name()));
                lines.push("      keys:".to_string());
                lines.push(format!("      - name: {name}"));
                lines.push(format!("        secret: {secret}"));
            }
            KeyLabel::Kms { version, name } => {
                let endpoint = known
                    .iter()
                    .find_map(|k| k.endpoint.clone())
                    .unwrap_or_else(|| "<the plugin's unix:// endpoint>".into());
                lines.push("  - kms:".to_string());
                lines.push(format!("      apiVersion: {}", version.as_str()));
                lines.push(format!("      name: {name}"));
                lines.push(format!("      endpoint: {endpoint}"));
            }
            KeyLabel::Identity | KeyLabel::Unknown(_) => {
                lines.push(format!(
                    "  # {label}: a prefix atrest does not know; no rule can read it"
                ));
            }
        }
    }
    if !covered {
        lines.push("  - identity: {}".to_string());
        lines.push(format!(
            "# to stop encrypting {} instead: put identity first, run `atrest reencrypt`, then remove the key",
            resource.config_name()
        ));
    }
    lines.join("\n")
}
