//! Writing a config back out. atrest writes a canonical YAML form: every string quoted, the
//! fields in the apiserver's order, so that what it writes always parses back to the same config.

use std::fmt::Write;

use zeroize::Zeroizing;

use super::{EncryptionConfig, Provider, Schema};
use crate::keys::yaml;
use crate::model::KeyLabel;

/// Why an edit of the config was refused; `rule` is the index in `resources`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// A rule the rotation recorded is not in the config (fewer rules than when it started).
    #[error("the config has no resources[{rule}]")]
    NoSuchRule {
        /// The missing index.
        rule: usize,
    },
    /// Promote found a rule where the new key is not a read key, so the apiservers may not be
    /// able to read what it would write.
    #[error("resources[{rule}] cannot promote {label}: it is not a read key there")]
    NotAReadKey {
        /// The rule's index.
        rule: usize,
        /// The key label that was to be promoted.
        label: KeyLabel,
    },
    /// A removal would take away a rule's write key, which would change what new writes use.
    #[error("resources[{rule}]: {label} is the write key and cannot be removed")]
    RemovesWriteKey {
        /// The rule's index.
        rule: usize,
        /// Its write key.
        label: KeyLabel,
    },
}

/// The config as YAML. The result holds key material, so it is built in one zeroizing buffer
/// (`keys::yaml`).
pub fn render_yaml(config: &EncryptionConfig) -> Zeroizing<String> {
    let (api_version, kind) = match config.schema {
        Schema::V1 => ("apiserver.config.k8s.io/v1", "EncryptionConfiguration"),
        Schema::LegacyV1 => ("v1", "EncryptionConfig"),
    };
    yaml::render(|y| {
        let _ = writeln!(y, "apiVersion: {api_version}\nkind: {kind}\nresources:");
        for rule in &config.rules {
            y.raw("  - resources:\n");
            for r in &rule.resources {
                y.raw("      - ");
                y.quoted(r);
                y.raw("\n");
            }
            y.raw("    providers:\n");
            for p in &rule.providers {
                match p {
                    Provider::Identity => y.raw("      - identity: {}\n"),
                    Provider::Keys { provider, keys } => {
                        let _ = writeln!(y, "      - {}:\n          keys:", provider.name());
                        for k in keys {
                            y.raw("            - name: ");
                            y.quoted(k.name());
                            y.raw("\n              secret: ");
                            y.quoted(&k.secret_base64());
                            y.raw("\n");
                        }
                    }
                    Provider::Kms(k) => {
                        let _ =
                            writeln!(y, "      - kms:\n          apiVersion: {}", k.version_str());
                        y.raw("          name: ");
                        y.quoted(&k.name);
                        y.raw("\n          endpoint: ");
                        y.quoted(&k.endpoint);
                        y.raw("\n");
                        if let Some(c) = k.cachesize {
                            let _ = writeln!(y, "          cachesize: {c}");
                        }
                        if let Some(t) = &k.timeout {
                            y.raw("          timeout: ");
                            y.quoted(t);
                            y.raw("\n");
                        }
                    }
                }
            }
        }
    })
}

/// What a rotation moves to: a new local key, a KMS provider, or plaintext.
#[derive(Clone, Debug)]
pub enum RotationTarget {
    /// A new aescbc, aesgcm or secretbox key, with its material.
    Key(std::sync::Arc<crate::keys::Key>),
    /// A KMS provider (its plugin does the encryption).
    Kms(super::KmsProvider),
    /// No encryption: new writes are plaintext.
    Identity,
}

impl RotationTarget {
    /// The label stored values get: `aescbc:key-…`, `kms:v2:name`, `identity`.
    pub fn label(&self) -> KeyLabel {
        match self {
            RotationTarget::Key(k) => KeyLabel::key(k.provider(), k.name()),
            RotationTarget::Kms(k) => KeyLabel::kms(k.version, &k.name),
            RotationTarget::Identity => KeyLabel::Identity,
        }
    }

    fn provider(&self) -> Provider {
        match self {
            RotationTarget::Key(k) => Provider::Keys {
                provider: k.provider(),
                keys: vec![k.clone()],
            },
            RotationTarget::Kms(k) => Provider::Kms(k.clone()),
            RotationTarget::Identity => Provider::Identity,
        }
    }
}

/// Where `label` sits in a provider list: (provider index, key index).
fn find(providers: &[Provider], label: &KeyLabel) -> Option<(usize, usize)> {
    providers.iter().enumerate().find_map(|(i, p)| {
        p.read_keys()
            .iter()
            .position(|l| l == label)
            .map(|j| (i, j))
    })
}

/// The rules whose provider lists decide how `resources` are written: for each resource, the
/// rule of its first resolved provider. Sorted, unique.
pub fn rules_for(config: &EncryptionConfig, resources: &[crate::GroupResource]) -> Vec<usize> {
    let mut rules: Vec<usize> = resources
        .iter()
        .filter_map(|gr| config.resolve(gr).entries.first().map(|e| e.rule))
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

/// Step one of a rotation: `target` becomes readable (never written) in each rule: the second
/// key of the write provider when it is the same provider, else a second provider.
pub fn add_read_key(
    config: &EncryptionConfig,
    rules: &[usize],
    target: &RotationTarget,
) -> Result<EncryptionConfig, EditError> {
    let mut out = config.clone();
    let label = target.label();
    for &r in rules {
        let providers = &mut rule_mut(&mut out, r)?.providers;
        if find(providers, &label).is_some() {
            continue;
        }
        match (target, providers.first_mut()) {
            (RotationTarget::Key(k), Some(Provider::Keys { provider, keys }))
                if *provider == k.provider() =>
            {
                keys.insert(1.min(keys.len()), k.clone());
            }
            _ => providers.insert(1.min(providers.len()), target.provider()),
        }
    }
    Ok(out)
}

/// Step two: `target` becomes the write key (first key of the first provider) in each rule.
pub fn promote(
    config: &EncryptionConfig,
    rules: &[usize],
    label: &KeyLabel,
) -> Result<EncryptionConfig, EditError> {
    let mut out = config.clone();
    for &r in rules {
        let providers = &mut rule_mut(&mut out, r)?.providers;
        let (i, j) = find(providers, label).ok_or_else(|| EditError::NotAReadKey {
            rule: r,
            label: label.clone(),
        })?;
        if let Provider::Keys { keys, .. } = &mut providers[i] {
            let k = keys.remove(j);
            keys.insert(0, k);
        }
        let p = providers.remove(i);
        providers.insert(0, p);
    }
    Ok(out)
}

/// Removes keys and providers by label from each rule. The write key (first key of the first
/// provider) is never removed, and no list is left empty.
pub fn remove(
    config: &EncryptionConfig,
    rules: &[usize],
    labels: &std::collections::BTreeSet<KeyLabel>,
) -> Result<EncryptionConfig, EditError> {
    let mut out = config.clone();
    for &r in rules {
        let rule = rule_mut(&mut out, r)?;
        let write = rule
            .providers
            .first()
            .map_or(KeyLabel::Identity, |p| p.write_key());
        if labels.contains(&write) {
            return Err(EditError::RemovesWriteKey {
                rule: r,
                label: write,
            });
        }
        for p in &mut rule.providers {
            if let Provider::Keys { provider, keys } = p {
                keys.retain(|k| !labels.contains(&KeyLabel::key(*provider, k.name())));
            }
        }
        rule.providers.retain(|p| match p {
            Provider::Keys { keys, .. } => !keys.is_empty(),
            other => !labels.contains(&other.write_key()),
        });
    }
    Ok(out)
}

fn rule_mut(
    config: &mut EncryptionConfig,
    r: usize,
) -> Result<&mut super::ResourceRule, EditError> {
    config
        .rules
        .get_mut(r)
        .ok_or(EditError::NoSuchRule { rule: r })
}

/// Every provider label of each rule, in order, for diffs and state records (no material).
pub fn layout(config: &EncryptionConfig) -> Vec<RuleLayout> {
    config
        .rules
        .iter()
        .map(|r| RuleLayout {
            resources: r.resources.clone(),
            keys: r
                .providers
                .iter()
                .flat_map(|p| match p {
                    Provider::Keys { provider, keys } => keys
                        .iter()
                        .map(|k| LayoutKey {
                            label: KeyLabel::key(*provider, k.name()),
                            fingerprint: Some(k.fingerprint().to_string()),
                        })
                        .collect::<Vec<_>>(),
                    other => vec![LayoutKey {
                        label: other.write_key(),
                        fingerprint: None,
                    }],
                })
                .collect(),
        })
        .collect()
}

/// A rule's resources and its keys in order, with fingerprints.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleLayout {
    /// The rule's resources, as written in the config.
    pub resources: Vec<String>,
    /// Its keys in the order the apiserver tries them, the write key first.
    pub keys: Vec<LayoutKey>,
}

/// A key of a rule's layout: its label, with its fingerprint when it is a local key, so that a
/// changed secret under the same name shows. Stored (and printed) as `label (fingerprint)`.
#[derive(Clone, PartialEq, Eq)]
pub struct LayoutKey {
    /// `aescbc:key1`, `kms:v2:vault`, `identity`.
    pub label: KeyLabel,
    /// `sha256:…` of a local key's material; `None` for KMS and identity.
    pub fingerprint: Option<String>,
}

impl std::fmt::Display for LayoutKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fingerprint {
            Some(fp) => write!(f, "{} ({fp})", self.label),
            None => write!(f, "{}", self.label),
        }
    }
}

/// As its text, quoted: what messages listing a layout show.
impl std::fmt::Debug for LayoutKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl std::str::FromStr for LayoutKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (label, fingerprint) = match s.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
            Some((label, fp)) if fp.starts_with("sha256:") => (label, Some(fp.to_string())),
            _ => (s, None),
        };
        Ok(LayoutKey {
            label: label
                .parse()
                .map_err(|e| format!("{s:?} is not a key of a layout: {e}"))?,
            fingerprint,
        })
    }
}

impl serde::Serialize for LayoutKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for LayoutKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What differs between two layouts, in words an admin can act on.
pub fn describe_diff(expected: &[RuleLayout], found: &[RuleLayout]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..expected.len().max(found.len()) {
        match (expected.get(i), found.get(i)) {
            (Some(e), Some(f)) if e == f => {}
            (Some(e), Some(f)) => {
                let before = out.len();
                if e.resources != f.resources {
                    out.push(format!(
                        "resources[{i}]: resources {:?} became {:?}",
                        e.resources, f.resources
                    ));
                }
                for k in e.keys.iter().filter(|k| !f.keys.contains(k)) {
                    out.push(format!("resources[{i}]: {k} was removed or changed"));
                }
                for k in f.keys.iter().filter(|k| !e.keys.contains(k)) {
                    out.push(format!("resources[{i}]: {k} was added"));
                }
                if out.len() == before {
                    out.push(format!(
                        "resources[{i}]: provider order changed: {:?} became {:?}",
                        e.keys, f.keys
                    ));
                }
            }
            (Some(e), None) => out.push(format!(
                "resources[{i}] ({}) was removed",
                e.resources.join(", ")
            )),
            (None, Some(f)) => out.push(format!(
                "resources[{i}] ({}) was added",
                f.resources.join(", ")
            )),
            (None, None) => {}
        }
    }
    if out.is_empty() {
        out.push("the key layout is the same; only formatting or comments differ".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout key reads back from the text state files keep, and prints as it was.
    #[test]
    fn layout_keys_keep_their_text_form() {
        for text in [
            "aescbc:key1 (sha256:0123456789abcdef)",
            "aescbc:a:b (c) (sha256:0123456789abcdef)",
            "kms:v2:vault",
            "identity",
        ] {
            let k: LayoutKey = text.parse().unwrap();
            assert_eq!(k.to_string(), text);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<LayoutKey>(&json).unwrap(), k);
        }
        let k: LayoutKey = "aescbc:key1 (sha256:0123456789abcdef)".parse().unwrap();
        assert_eq!(k.fingerprint.as_deref(), Some("sha256:0123456789abcdef"));
        assert_eq!(
            format!("{:?}", vec![k]),
            r#"["aescbc:key1 (sha256:0123456789abcdef)"]"#
        );
        assert!("nonsense".parse::<LayoutKey>().is_err());
    }

    fn rule(resources: &[&str], keys: &[&str]) -> RuleLayout {
        RuleLayout {
            resources: resources.iter().map(|s| s.to_string()).collect(),
            keys: keys.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn describe_diff_reports_a_write_key_change_in_a_later_rule() {
        let expected = [
            rule(&["secrets"], &["aescbc:a (fp-a)"]),
            rule(&["configmaps"], &["aescbc:b (fp-b)", "identity"]),
        ];
        let found = [
            // The first rule differs too: a key was added.
            rule(&["secrets"], &["aescbc:a (fp-a)", "aescbc:x (fp-x)"]),
            // The second rule's write key changed: same keys, another order.
            rule(&["configmaps"], &["identity", "aescbc:b (fp-b)"]),
        ];
        let diff = describe_diff(&expected, &found);
        assert_eq!(
            diff,
            [
                "resources[0]: aescbc:x (fp-x) was added",
                "resources[1]: provider order changed: [\"aescbc:b (fp-b)\", \"identity\"] became [\"identity\", \"aescbc:b (fp-b)\"]",
            ]
        );
    }

    #[test]
    fn describe_diff_of_equal_layouts_says_only_formatting_differs() {
        let l = [rule(&["secrets"], &["identity"])];
        assert_eq!(
            describe_diff(&l, &l),
            ["the key layout is the same; only formatting or comments differ"]
        );
    }
}
