//! What a census of etcd found — exact counts per resource, key and verdict, capped samples of
//! names, and the old copies beyond the current values — as every layer shares it: the scan
//! fills it, the engines, the report and the exporter read it. Names and counts only, never a
//! value or a key.

use std::collections::BTreeMap;

use super::{Finding, KeyCounts, KeyLabel, KnownKey, Sample, Verdict, VerdictCounts};

mod old_copies;
pub use old_copies::{
    BackupFile, DbInfo, FoundIn, FreeGroup, FreePages, HistoryGroup, HistoryRef, HistoryReport,
    KeyNeeded, KeySource, MemberDb, SnapshotSection, residue_tag,
};

/// One place in a stored object that looks like secret data: where and which rule, never the value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    /// Where: a field path (`spec.password`, `data.app.properties`), or [`OBJECT_BYTES`] when
    /// the object could not be walked.
    pub path: String,
    /// Which rule of [`RULES`] matched.
    pub rule: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An object that needs attention, by name (never its data).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ObjectRef {
    /// `namespace/name`, or `name` when cluster-scoped.
    pub name: String,
    /// The full etcd key.
    pub key: String,
    /// The etcd revision it was last written at (its resourceVersion).
    pub mod_revision: i64,
    /// The key it is stored under (`aescbc:key1`, `identity`).
    pub stored_as: KeyLabel,
    /// Why it did not open, when it did not; never key material.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An object whose plaintext looks like it holds secret data: where and by which rule, never
/// the value.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SensitiveObject {
    /// `namespace/name`, or `name` when cluster-scoped.
    pub name: String,
    /// The full etcd key.
    pub key: String,
    /// The field paths (or pattern names) that matched.
    pub hits: Vec<Hit>,
}

/// Exact counts, and capped samples of names, for one resource.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceReport {
    /// The group resource (`secrets`, `foos.example.com`).
    pub resource: String,
    /// The rule that covers it (`secrets`, `*.*`), or none.
    pub rule: Option<String>,
    /// What new writes of this resource get.
    pub write_key: KeyLabel,
    /// Every key the apiserver can read it with, in the order it tries them.
    pub read_keys: Vec<KeyLabel>,
    /// The write key encrypts (the first provider is not identity).
    pub encrypts: bool,
    /// Stored values read.
    pub total: u64,
    /// Values an unchanged write through the apiserver would rewrite (what `reencrypt`
    /// targets): stale ones, and plaintext where the config encrypts.
    pub needs_rewrite: u64,
    /// Encrypted values that were not decrypted here (no `--verify`, or a KMS v1 plugin that
    /// cannot be asked): classified by prefix, key name and shape only.
    pub unverified: u64,
    /// Exact count per verdict.
    pub verdicts: VerdictCounts,
    /// Exact count per stored key and verdict.
    pub keys: KeyCounts,
    /// Values under a key the resource's config does not have that a key atrest found elsewhere
    /// (another rule, the key archive, a config backup) opens — with `--verify` — or matches by
    /// name and shape: the apiserver cannot read them, but the key to restore exists.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outside_config: u64,
    /// Values that would be residue if this were an old copy ([`crate::model::Residue`]):
    /// plaintext where the config encrypts, or under a key the config does not have. What a
    /// backup (`scan --snapshot`) holds that the current config would not leave there.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub residue: u64,
    /// Objects stored as plaintext, in a resource the config does not encrypt, whose data looks
    /// like secrets (`total` exact, `objects` capped); `secrets` themselves are judged by
    /// the policy's required resources instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<Sample<SensitiveObject>>,
    /// KMS v2 key ID → number of stored values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kms_key_ids: BTreeMap<String, u64>,
    /// Names of the objects not on the write key, per verdict: `total` is exact, `objects`
    /// holds at most the list cap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<Verdict, Sample<ObjectRef>>,
}

impl ResourceReport {
    /// Nothing to rewrite and nothing unreadable: what makes `scan` exit 0.
    pub fn clean(&self) -> bool {
        self.needs_attention() == 0
    }

    /// Objects to rewrite or unreadable ([`crate::model::needs_attention`]).
    pub fn needs_attention(&self) -> u64 {
        self.verdicts.needing_attention(self.needs_rewrite)
    }

    /// The sample of one verdict (empty when there is none).
    pub fn sample(&self, v: Verdict) -> Option<&Sample<ObjectRef>> {
        self.samples.get(&v)
    }
}

/// The JSON schema of `atrest scan -o json`; fields are stable within a version.
pub const SCAN_SCHEMA: &str = "atrest.scan/v2";

/// What a scan read: every resource etcd holds under the prefix (the census), or only the
/// resources asked for.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// Every resource stored under the prefix was read; the config judged each, it did not
    /// choose them.
    #[serde(default)]
    pub census: bool,
    /// The etcd prefix read.
    #[serde(default)]
    pub prefix: String,
    /// Only these resources were read (`--resource`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
}

impl Scope {
    /// One line for every output's scope section.
    pub fn describe(&self) -> String {
        if self.census {
            format!(
                "every resource stored under {} (the census: etcd decides what is read, the config judges it)",
                self.prefix
            )
        } else if !self.only.is_empty() {
            format!(
                "only {} under {} (narrowed with --resource; other resources were not read)",
                self.only.join(", "),
                self.prefix
            )
        } else {
            format!("the resources the config covers under {}", self.prefix)
        }
    }
}

/// The whole answer of a scan.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScanReport {
    /// [`SCAN_SCHEMA`].
    pub schema: String,
    /// The etcd revision every value was read at.
    pub revision: i64,
    /// Every value was decrypted (`--verify`).
    pub verified: bool,
    /// What was read.
    #[serde(default)]
    pub scope: Scope,
    /// Per resource found (and each the config names, even with no object), `secrets` first.
    pub resources: Vec<ResourceReport>,
    /// What atrest knows of each key that values are stored under without their resource's
    /// config having it: fingerprints and where each key is kept (never the key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_keys: Vec<KnownKey>,
    /// KMS v2 provider → the key ID its plugin reports now (values on another are stale).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kms_current_key_ids: BTreeMap<String, String>,
    /// KMS plugins that could not be asked, each with why: their values were classified by
    /// prefix, provider and key ID only, and are counted in each resource's `unverified`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kms_not_asked: Vec<String>,
    /// The db file read instead of a live etcd (`scan --snapshot`), and the keys it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSection>,
    /// Older revisions still kept (`--history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryReport>,
    /// What the free pages of the db file still hold (`--snapshot` with `--history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_pages: Option<FreePages>,
    /// Each member's db size against its size in use (live `--history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberDb>>,
    /// The etcdctl commands that would drop the residue found (live `--history`); atrest never
    /// runs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup: Vec<String>,
    /// Every backup file found in the state folder's snapshots, the rotation records and
    /// `--backup-dir` folders, with its residue (when history was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<Vec<BackupFile>>,
    /// What the scan found, judged by the config and the policy: findings (exit 1) and
    /// warnings, each with what to do ([`crate::model::finding`]).
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// `PASS`, `PASS with N warnings` or `FAIL (…)`, from `findings`.
    #[serde(default)]
    pub result: String,
}

impl ScanReport {
    /// A report of these resources, with no KMS key IDs and none of the optional sections.
    pub fn new(revision: i64, verified: bool, resources: Vec<ResourceReport>) -> Self {
        ScanReport {
            schema: SCAN_SCHEMA.to_string(),
            revision,
            verified,
            scope: Scope::default(),
            resources,
            unknown_keys: Vec::new(),
            kms_current_key_ids: BTreeMap::new(),
            kms_not_asked: Vec::new(),
            snapshot: None,
            history: None,
            free_pages: None,
            members: None,
            cleanup: Vec::new(),
            backups: None,
            findings: Vec::new(),
            result: String::new(),
        }
    }

    /// Encrypted values that were not decrypted (all of them without `--verify`).
    pub fn unverified(&self) -> u64 {
        self.resources.iter().map(|r| r.unverified).sum()
    }

    /// Everything on its write key, nothing unreadable, and no residue in what was read of
    /// history and free pages.
    pub fn clean(&self) -> bool {
        self.resources.iter().all(ResourceReport::clean) && self.residue() == 0
    }

    /// Old copies that are residue ([`crate::model::Residue`]): in history and free pages, when
    /// they were read, in the backup files found, and for a db file (a backup) its current
    /// values too.
    pub fn residue(&self) -> u64 {
        let backup: u64 = if self.snapshot.is_some() {
            self.resources.iter().map(|r| r.residue).sum()
        } else {
            0
        };
        backup
            + self.history.as_ref().map_or(0, |h| h.residue)
            + self.free_pages.as_ref().map_or(0, |f| f.residue)
            + self
                .backups
                .iter()
                .flatten()
                .map(|b| b.residue())
                .sum::<u64>()
    }

    /// Counts over every resource.
    pub fn totals(&self) -> VerdictCounts {
        let mut t = VerdictCounts::default();
        for r in &self.resources {
            t.merge(&r.verdicts);
        }
        t
    }
}

/// One etcd member.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EtcdMember {
    /// Member ID, hex.
    pub id: String,
    /// Member name.
    pub name: String,
    /// Its client URLs.
    pub client_urls: Vec<String>,
}

/// The etcd cluster the scan read.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EtcdInfo {
    /// The endpoints atrest connected to.
    pub endpoints: Vec<String>,
    /// Cluster ID, hex.
    pub cluster_id: String,
    /// Server version.
    pub version: String,
    /// Every member.
    pub members: Vec<EtcdMember>,
    /// The revision the scan was pinned at.
    pub revision: i64,
}
