//! Which providers the apiserver uses for a group resource (`transformerFromOverrides`): the
//! exact group resource, else `*.<group>`, else `*.*`, else identity. The same group resource in
//! several entries gets their provider lists concatenated, earlier entry first.

use super::{EncryptionConfig, Provider};
use crate::GroupResource;
use crate::model::KeyLabel;

/// How a group resource found its providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    /// The rule names the group resource itself (`secrets`).
    Exact,
    /// `*.<group>` (or `*.` for the core group).
    Group,
    /// `*.*`.
    All,
    /// Nothing matched: the apiserver stores it as plaintext.
    Default,
}

/// One provider in a resolved list, with where it came from in the file.
#[derive(Clone, Debug)]
pub struct ProviderEntry {
    /// The provider as configured.
    pub provider: Provider,
    /// `resources[rule].providers[index]`.
    pub rule: usize,
    /// Position of the provider within that rule's `providers`.
    pub index: usize,
}

/// One configured key as it is shown: label, provider, fingerprint (local keys) or endpoint
/// (KMS).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfiguredKey {
    /// `aescbc:key1`, `kms:v2:vault`, `identity`.
    pub label: KeyLabel,
    /// `aescbc`, `aesgcm`, `secretbox`, `kms` or `identity`.
    pub provider: &'static str,
    /// `sha256:` + 16 hex digits of the key bytes (local keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The plugin's socket (KMS only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl ConfiguredKey {
    fn plain(label: KeyLabel, provider: &'static str) -> Self {
        ConfiguredKey {
            label,
            provider,
            fingerprint: None,
            endpoint: None,
        }
    }
}

/// The ordered provider list for one group resource, as the apiserver walks it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The group resource this list is for.
    pub resource: GroupResource,
    /// The config name that matched (`secrets`, `*.apps`, `*.*`), if any.
    pub rule_name: Option<String>,
    /// Which kind of rule matched: exact, group wildcard, `*.*`, or none.
    pub matched_by: MatchedBy,
    /// Empty for [`MatchedBy::Default`], where identity applies.
    pub entries: Vec<ProviderEntry>,
}

impl Resolved {
    /// The key new writes get: `aescbc:key1`, `kms:v2:name` or `identity`.
    pub fn write_key(&self) -> KeyLabel {
        self.entries
            .first()
            .map(|e| e.provider.write_key())
            .unwrap_or(KeyLabel::Identity)
    }

    /// True when new writes are stored encrypted.
    pub fn encrypts(&self) -> bool {
        !matches!(
            self.entries.first().map(|e| &e.provider),
            None | Some(Provider::Identity)
        )
    }

    /// The providers in the order the apiserver tries them; the first writes.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.entries.iter().map(|e| &e.provider)
    }

    /// Every key some provider of this resource can read, in walk order.
    pub fn read_keys(&self) -> Vec<KeyLabel> {
        if self.entries.is_empty() {
            return vec![KeyLabel::Identity];
        }
        self.providers().flat_map(|p| p.read_keys()).collect()
    }

    /// Every key in the order the apiserver tries them, with what an admin needs to recognise
    /// it (never the key itself): the one list that `config check`, `status` and the report show.
    pub fn keys_in_order(&self) -> Vec<ConfiguredKey> {
        if self.entries.is_empty() {
            return vec![ConfiguredKey::plain(KeyLabel::Identity, "identity")];
        }
        let mut out = Vec::new();
        for p in self.providers() {
            match p {
                Provider::Identity => {
                    out.push(ConfiguredKey::plain(KeyLabel::Identity, "identity"))
                }
                Provider::Keys { provider, keys } => {
                    out.extend(keys.iter().map(|k| ConfiguredKey {
                        label: KeyLabel::key(*provider, k.name()),
                        provider: provider.name(),
                        fingerprint: Some(k.fingerprint().to_string()),
                        endpoint: None,
                    }))
                }
                Provider::Kms(k) => out.push(ConfiguredKey {
                    label: p.write_key(),
                    provider: "kms",
                    fingerprint: None,
                    endpoint: Some(k.endpoint.clone()),
                }),
            }
        }
        out
    }
}

impl EncryptionConfig {
    /// Providers for `gr` exactly as the apiserver resolves them.
    pub fn resolve(&self, gr: &GroupResource) -> Resolved {
        let candidates = [
            (gr.clone(), MatchedBy::Exact),
            (GroupResource::new(gr.group.clone(), "*"), MatchedBy::Group),
            (GroupResource::new("*", "*"), MatchedBy::All),
        ];
        for (key, how) in candidates {
            let entries = self.entries_for(&key);
            if !entries.is_empty() {
                return Resolved {
                    resource: gr.clone(),
                    rule_name: Some(key.config_name()),
                    matched_by: how,
                    entries,
                };
            }
        }
        Resolved {
            resource: gr.clone(),
            rule_name: None,
            matched_by: MatchedBy::Default,
            entries: Vec::new(),
        }
    }

    /// The concatenated lists of every entry naming exactly `key`.
    fn entries_for(&self, key: &GroupResource) -> Vec<ProviderEntry> {
        let mut out = Vec::new();
        for (rule_index, rule) in self.rules.iter().enumerate() {
            if rule
                .resources
                .iter()
                .any(|r| GroupResource::parse(r) == *key)
            {
                out.extend(
                    rule.providers
                        .iter()
                        .enumerate()
                        .map(|(i, p)| ProviderEntry {
                            provider: p.clone(),
                            rule: rule_index,
                            index: i,
                        }),
                );
            }
        }
        out
    }

    /// Every group resource named in the config, as written (wildcards included), in order.
    pub fn named_resources(&self) -> Vec<GroupResource> {
        let mut out: Vec<GroupResource> = Vec::new();
        for rule in &self.rules {
            for r in &rule.resources {
                let gr = GroupResource::parse(r);
                if !out.contains(&gr) {
                    out.push(gr);
                }
            }
        }
        out
    }
}
