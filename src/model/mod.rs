//! The words every command shares: which key a stored value is under ([`KeyLabel`]), what that
//! means for its resource ([`Verdict`], decided in exactly one place), exact counts
//! ([`VerdictCounts`]) and capped name samples ([`Sample`]), and the resources a scan covers.
//!
//! A count and a sample of names are two fields: a sample is capped for readability, a count
//! never is. Everything that prints a number takes it from a count.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::GroupResource;

/// The KMS API version of a KMS provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum KmsVersion {
    /// The deprecated v1 envelope (one DEK per value).
    #[serde(rename = "v1")]
    V1,
    /// KMS v2 (`EncryptedObject` with a key ID).
    #[serde(rename = "v2")]
    V2,
}

impl KmsVersion {
    /// `v1` or `v2`, as in the on-disk prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            KmsVersion::V1 => "v1",
            KmsVersion::V2 => "v2",
        }
    }
}

/// The key a value is stored under, or a resource writes with: `identity`, `aescbc:key1`,
/// `kms:v2:vault`. Key names may contain `:`; the provider part never does, so the label parses
/// back without ambiguity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyLabel {
    /// Stored unencrypted.
    Identity,
    /// A local key of aescbc, aesgcm or secretbox.
    Key {
        /// Which provider holds the key.
        provider: KeyProvider,
        /// The key's `name` in the config.
        name: String,
    },
    /// A KMS provider (the key lives in the plugin).
    Kms {
        /// v1 or v2.
        version: KmsVersion,
        /// The provider's `name` in the config.
        name: String,
    },
    /// An encrypted prefix atrest does not know (`unknown:zzz`): shown as read, never trusted.
    Unknown(String),
}

impl KeyLabel {
    /// The label of a local key.
    pub fn key(provider: KeyProvider, name: impl Into<String>) -> Self {
        KeyLabel::Key {
            provider,
            name: name.into(),
        }
    }

    /// The label of a KMS provider.
    pub fn kms(version: KmsVersion, name: impl Into<String>) -> Self {
        KeyLabel::Kms {
            version,
            name: name.into(),
        }
    }

    /// The provider as audit policies name it: `identity`, `aescbc`, `aesgcm`, `secretbox`,
    /// `kms-v1`, `kms-v2` (or `unknown`).
    pub fn provider_kind(&self) -> &'static str {
        match self {
            KeyLabel::Identity => "identity",
            KeyLabel::Key { provider, .. } => provider.name(),
            KeyLabel::Kms {
                version: KmsVersion::V1,
                ..
            } => "kms-v1",
            KeyLabel::Kms {
                version: KmsVersion::V2,
                ..
            } => "kms-v2",
            KeyLabel::Unknown(_) => "unknown",
        }
    }

    /// True for every label but identity.
    pub fn encrypts(&self) -> bool {
        !matches!(self, KeyLabel::Identity)
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLabel::Identity => f.write_str("identity"),
            KeyLabel::Key { provider, name } => write!(f, "{}:{name}", provider.name()),
            KeyLabel::Kms { version, name } => write!(f, "kms:{}:{name}", version.as_str()),
            KeyLabel::Unknown(s) => f.write_str(s),
        }
    }
}

/// A label that is not `identity`, `<provider>:<name>` or `kms:v1|v2:<name>`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a key label (expected identity, aescbc:NAME, aesgcm:NAME, secretbox:NAME or kms:v2:NAME)"
)]
pub struct KeyLabelError(String);

impl FromStr for KeyLabel {
    type Err = KeyLabelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "identity" {
            return Ok(KeyLabel::Identity);
        }
        if s == "unknown" || s.starts_with("unknown:") {
            return Ok(KeyLabel::Unknown(s.to_string()));
        }
        let bad = || KeyLabelError(s.to_string());
        let (head, rest) = s.split_once(':').ok_or_else(bad)?;
        let provider = match head {
            "aescbc" => KeyProvider::Aescbc,
            "aesgcm" => KeyProvider::Aesgcm,
            "secretbox" => KeyProvider::Secretbox,
            "kms" => {
                let (v, name) = rest.split_once(':').ok_or_else(bad)?;
                let version = match v {
                    "v1" => KmsVersion::V1,
                    "v2" => KmsVersion::V2,
                    _ => return Err(bad()),
                };
                if name.is_empty() {
                    return Err(bad());
                }
                return Ok(KeyLabel::kms(version, name));
            }
            _ => return Err(bad()),
        };
        if rest.is_empty() {
            return Err(bad());
        }
        Ok(KeyLabel::key(provider, rest))
    }
}

impl PartialEq<str> for KeyLabel {
    fn eq(&self, other: &str) -> bool {
        let (head, mid, name) = self.parts();
        match self {
            KeyLabel::Identity | KeyLabel::Unknown(_) => head == other,
            KeyLabel::Key { .. } => other
                .strip_prefix(head)
                .and_then(|r| r.strip_prefix(':'))
                .is_some_and(|r| r == name),
            KeyLabel::Kms { .. } => other
                .strip_prefix("kms:")
                .and_then(|r| r.strip_prefix(mid))
                .and_then(|r| r.strip_prefix(':'))
                .is_some_and(|r| r == name),
        }
    }
}

impl PartialEq<&str> for KeyLabel {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl PartialOrd for KeyLabel {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl KeyLabel {
    /// The printed form in parts, for ordering without allocating.
    fn parts(&self) -> (&str, &str, &str) {
        match self {
            KeyLabel::Identity => ("identity", "", ""),
            KeyLabel::Key { provider, name } => (provider.name(), "", name),
            KeyLabel::Kms { version, name } => ("kms", version.as_str(), name),
            KeyLabel::Unknown(s) => (s, "", ""),
        }
    }
}

/// Ordered by provider, then KMS version, then name, so maps keyed by label read as printed.
impl Ord for KeyLabel {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl serde::Serialize for KeyLabel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyLabel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a stored value is, as the classifier read it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Stored unencrypted.
    Plaintext,
    /// Encrypted with a configured key (opened, or with `verify` off, well formed).
    EncryptedOk,
    /// Under a configured prefix and key name, but no configured key opens it.
    Undecryptable,
    /// Encrypted with a provider or key name the config does not have for this resource.
    UnknownKey,
    /// Malformed: no key could open these bytes.
    Corrupt,
    /// A KMS value that could not be opened here (no plugin to ask).
    Kms,
}

impl State {
    /// The kebab-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Plaintext => "plaintext",
            State::EncryptedOk => "encrypted-ok",
            State::Undecryptable => "undecryptable",
            State::UnknownKey => "unknown-key",
            State::Corrupt => "corrupt",
            State::Kms => "kms",
        }
    }
}

/// Why an old copy of a value (a superseded revision in etcd's history, a free page of a db
/// file, a backup) matters to an auditor: it holds data the current config would not leave
/// there. The one definition every residue count uses.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Residue {
    /// Stored unencrypted, and the config now encrypts the resource.
    Plaintext,
    /// Encrypted under a key the config does not have for the resource (retired, or never
    /// configured): whoever holds that key still reads it.
    RetiredKey,
}

impl Residue {
    /// The residue a copy is, from how it is stored and whether its resource's write provider
    /// encrypts; `None` for a copy the config could have written (or that nobody can read).
    pub fn of(state: State, apiserver_readable: bool, encrypts: bool) -> Option<Residue> {
        match state {
            State::Plaintext => encrypts.then_some(Residue::Plaintext),
            State::UnknownKey | State::Undecryptable => Some(Residue::RetiredKey),
            State::EncryptedOk | State::Kms => (!apiserver_readable).then_some(Residue::RetiredKey),
            State::Corrupt => None,
        }
    }

    /// `plaintext` or `retired-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Residue::Plaintext => "plaintext",
            Residue::RetiredKey => "retired-key",
        }
    }
}

/// What a stored value means for its resource: the one judgement every command counts by.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Encrypted with the resource's write key, and an unchanged write would not rewrite it.
    OnWriteKey,
    /// Encrypted and readable, but not with the write key (a read key, an old KMS key ID, the
    /// CBC fallback of KMS v1): an unchanged write re-encrypts it.
    Stale,
    /// Stored unencrypted (whether or not the config wants encryption: see [`needs_rewrite`]).
    Plaintext,
    /// Under a configured provider and key name, but no configured key opens it.
    Undecryptable,
    /// Under a provider or key name the resource's config does not have.
    UnknownKey,
    /// Malformed bytes.
    Corrupt,
}

impl Verdict {
    /// Every verdict, in the order reports list them.
    pub const ALL: [Verdict; 6] = [
        Verdict::OnWriteKey,
        Verdict::Stale,
        Verdict::Plaintext,
        Verdict::Undecryptable,
        Verdict::UnknownKey,
        Verdict::Corrupt,
    ];

    /// The one definition: a value's verdict from its state, whether the apiserver would
    /// consider it current (read by the first provider's first key, not stale) and whether the
    /// apiserver can read it at all. A value only a key outside the resource's config opens (a
    /// retired key of the archive, a key of another rule) is under an unknown key for the
    /// apiserver, whoever else can open it.
    pub fn of(state: State, on_write_key: bool, apiserver_readable: bool) -> Verdict {
        match state {
            State::Plaintext => Verdict::Plaintext,
            State::Undecryptable => Verdict::Undecryptable,
            State::UnknownKey => Verdict::UnknownKey,
            State::Corrupt => Verdict::Corrupt,
            State::EncryptedOk | State::Kms if !apiserver_readable => Verdict::UnknownKey,
            State::EncryptedOk | State::Kms if on_write_key => Verdict::OnWriteKey,
            State::EncryptedOk | State::Kms => Verdict::Stale,
        }
    }

    /// The snake_case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::OnWriteKey => "on_write_key",
            Verdict::Stale => "stale",
            Verdict::Plaintext => "plaintext",
            Verdict::Undecryptable => "undecryptable",
            Verdict::UnknownKey => "unknown_key",
            Verdict::Corrupt => "corrupt",
        }
    }

    /// A short form for counts in a table (`1500 stale`, `3 on the write key`).
    pub fn short(self) -> &'static str {
        match self {
            Verdict::OnWriteKey => "on the write key",
            Verdict::Stale => "stale",
            Verdict::Plaintext => "plaintext",
            Verdict::Undecryptable => "undecryptable",
            Verdict::UnknownKey => "unknown key",
            Verdict::Corrupt => "corrupt",
        }
    }

    /// What an admin reads in a table.
    pub fn describe(self) -> &'static str {
        match self {
            Verdict::OnWriteKey => "on the write key",
            Verdict::Stale => "stale: on a read key, not the write key",
            Verdict::Plaintext => "plaintext",
            Verdict::Undecryptable => "undecryptable: no configured key opens it",
            Verdict::UnknownKey => "unknown key: a provider or key the config does not have",
            Verdict::Corrupt => "corrupt: malformed stored value",
        }
    }

    /// No key at hand can open it: data the apiserver cannot serve.
    pub fn unreadable(self) -> bool {
        matches!(
            self,
            Verdict::Undecryptable | Verdict::UnknownKey | Verdict::Corrupt
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one definition of "an unchanged write through the apiserver would rewrite it": a
/// readable value (plaintext or encrypted) that the apiserver's read path marks stale, or that
/// is not under the write key. Plaintext under an identity write key is current; plaintext
/// where the first provider encrypts is always stale. A value the apiserver cannot read (only a
/// key outside the resource's config opens it) cannot be rewritten through it.
pub fn needs_rewrite(state: State, on_write_key: bool, apiserver_readable: bool) -> bool {
    match state {
        State::Plaintext => !on_write_key,
        State::EncryptedOk | State::Kms => apiserver_readable && !on_write_key,
        _ => false,
    }
}

/// The one definition of "needs the admin's attention": the object must be rewritten, or the
/// apiserver cannot read it (the two never overlap). Behind `scan`'s exit code, what a
/// re-encryption counts as remaining, and a report diff's regressions.
pub fn needs_attention(needs_rewrite: bool, verdict: Verdict) -> bool {
    needs_rewrite || verdict.unreadable()
}

/// The one definition of "plaintext here is a finding" (report checks ATR-C04/C05, the
/// exporter's `atrest_encryption_expected`): the resource's write key encrypts, or the audit
/// policy requires the resource encrypted. Plaintext under an identity write key that no policy
/// requires is what the admin configured.
pub fn plaintext_is_finding(write_key_encrypts: bool, required_by_policy: bool) -> bool {
    write_key_encrypts || required_by_policy
}

/// Exact counts per verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerdictCounts {
    /// Encrypted with the write key.
    #[serde(default)]
    pub on_write_key: u64,
    /// Encrypted, readable, not with the write key.
    #[serde(default)]
    pub stale: u64,
    /// Stored unencrypted.
    #[serde(default)]
    pub plaintext: u64,
    /// No configured key opens it.
    #[serde(default)]
    pub undecryptable: u64,
    /// A provider or key name the config does not have.
    #[serde(default)]
    pub unknown_key: u64,
    /// Malformed.
    #[serde(default)]
    pub corrupt: u64,
}

impl VerdictCounts {
    /// How many need attention ([`needs_attention`]) when `needs_rewrite` of them must be
    /// rewritten.
    pub fn needing_attention(&self, needs_rewrite: u64) -> u64 {
        needs_rewrite + self.unreadable()
    }

    /// The count of one verdict.
    pub fn get(&self, v: Verdict) -> u64 {
        match v {
            Verdict::OnWriteKey => self.on_write_key,
            Verdict::Stale => self.stale,
            Verdict::Plaintext => self.plaintext,
            Verdict::Undecryptable => self.undecryptable,
            Verdict::UnknownKey => self.unknown_key,
            Verdict::Corrupt => self.corrupt,
        }
    }

    fn slot(&mut self, v: Verdict) -> &mut u64 {
        match v {
            Verdict::OnWriteKey => &mut self.on_write_key,
            Verdict::Stale => &mut self.stale,
            Verdict::Plaintext => &mut self.plaintext,
            Verdict::Undecryptable => &mut self.undecryptable,
            Verdict::UnknownKey => &mut self.unknown_key,
            Verdict::Corrupt => &mut self.corrupt,
        }
    }

    /// Counts one value.
    pub fn add(&mut self, v: Verdict) {
        *self.slot(v) += 1;
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, o: &VerdictCounts) {
        for v in Verdict::ALL {
            *self.slot(v) += o.get(v);
        }
    }

    /// All values counted.
    pub fn total(&self) -> u64 {
        Verdict::ALL.iter().map(|v| self.get(*v)).sum()
    }

    /// Undecryptable + unknown key + corrupt.
    pub fn unreadable(&self) -> u64 {
        self.undecryptable + self.unknown_key + self.corrupt
    }

    /// Encrypted and readable (on the write key or stale).
    pub fn encrypted(&self) -> u64 {
        self.on_write_key + self.stale
    }

    /// The non-zero verdicts, in [`Verdict::ALL`] order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Verdict, u64)> + '_ {
        Verdict::ALL
            .into_iter()
            .map(|v| (v, self.get(v)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Exact counts per stored key label and verdict.
pub type KeyCounts = BTreeMap<KeyLabel, VerdictCounts>;

/// A capped list of examples; `total` is exact, `objects` holds at most the cap.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample<T> {
    /// How many there are in all.
    pub total: u64,
    /// The first ones met, at most the cap.
    pub objects: Vec<T>,
}

impl<T> Default for Sample<T> {
    fn default() -> Self {
        Self {
            total: 0,
            objects: Vec::new(),
        }
    }
}

impl<T> Sample<T> {
    /// Counts one, keeping it when fewer than `cap` are kept.
    pub fn push(&mut self, cap: usize, item: impl FnOnce() -> T) {
        self.total += 1;
        if self.objects.len() < cap {
            self.objects.push(item());
        }
    }

    /// How many are listed.
    pub fn shown(&self) -> usize {
        self.objects.len()
    }

    /// More exist than are listed.
    pub fn truncated(&self) -> bool {
        (self.objects.len() as u64) < self.total
    }

    /// `showing N of M` when capped, empty otherwise: the words every output uses.
    pub fn showing(&self) -> String {
        showing(self.objects.len(), self.total, "")
    }
}

/// ` (showing N of M[; more])` when `shown` names stand for `total` objects, empty when every
/// one is shown: how every output says that a list is a sample.
pub fn showing(shown: usize, total: u64, more: &str) -> String {
    if (shown as u64) >= total {
        return String::new();
    }
    if more.is_empty() {
        format!(" (showing {shown} of {total})")
    } else {
        format!(" (showing {shown} of {total}; {more})")
    }
}

/// The one rule for which resources a scan covers: the ones asked for, or else every resource
/// the config names (wildcards included) with `secrets` always first when the config does not
/// name it, because secrets are what an audit is about.
pub fn covered_resources(named: Vec<GroupResource>, only: &[GroupResource]) -> Vec<GroupResource> {
    if !only.is_empty() {
        return only.to_vec();
    }
    let mut out = named;
    if !out.contains(&GroupResource::secrets()) {
        out.insert(0, GroupResource::secrets());
    }
    out
}

pub mod census;
pub mod finding;
mod key_provider;
mod known_key;
pub mod time;
pub use finding::{Finding, FindingKind, Level};
pub use key_provider::KeyProvider;
pub use known_key::KnownKey;

#[cfg(test)]
mod tests;
