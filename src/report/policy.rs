//! The audit policy: what the checks demand. Defaults follow the Kubernetes docs' advice
//! (KMS v2 recommended; secretbox strong; aesgcm fine with rotation; aescbc not recommended),
//! and a small YAML file overrides them.

use crate::model::KeyLabel;
use std::path::Path;

/// What `atrest report` holds the cluster to; `--policy FILE` overrides any field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Providers that pass: `kms-v2`, `secretbox`, `aesgcm`, `aescbc`, `kms-v1`.
    #[serde(default = "default_allowed")]
    pub allowed_providers: Vec<String>,
    /// Providers that warn instead of failing.
    #[serde(default = "default_discouraged")]
    pub discouraged_providers: Vec<String>,
    /// A write key older than this fails.
    #[serde(default = "default_max_age")]
    pub max_key_age_days: u32,
    /// Resources that must be encrypted.
    #[serde(default = "default_required")]
    pub required_resources: Vec<String>,
    /// KMS v2 values may stay on an older key ID than the plugin's current one.
    #[serde(default)]
    pub allow_old_kms_key_ids: bool,
    /// An aesgcm write key is due for rotation after this many writes (the Kubernetes docs:
    /// every 200,000 writes, for the random 96-bit nonces). Used by the exporter's alert and by
    /// `atrest rotate run --if-older-than`.
    #[serde(default = "default_aesgcm_max_writes")]
    pub aesgcm_max_writes: u64,
    /// What residue (plaintext or retired-key copies in etcd history, free pages or a backup)
    /// is: `warn` (the default: history lasts until the next compaction) or `fail` (a finding:
    /// exit 1, check ATR-C11 fails).
    #[serde(default)]
    pub residue: Action,
    /// What secret-looking data stored as plaintext in a resource the config does not encrypt
    /// is: `warn` (the default) or `fail` (check ATR-C12).
    #[serde(default)]
    pub sensitive_plaintext: Action,
    /// Where retired keys and config backups may be kept: `any` (the default; plaintext,
    /// mode 0600, is shown) or `sealed` (a plaintext key archive or config backup in the state
    /// folder fails check ATR-C13: `atrest keys seal --seal-to RECIPIENT` seals them).
    #[serde(default)]
    pub custody: CustodyRule,
}

/// How the policy wants retired keys and config backups kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustodyRule {
    /// Plaintext (0600) or sealed: shown either way.
    #[default]
    Any,
    /// Sealed to custodians (`atrest keys seal`); plaintext is a finding.
    Sealed,
}

/// Whether something the policy names fails or only warns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A warning: shown, exit code unchanged.
    #[default]
    Warn,
    /// A finding: exit 1, the report fails.
    Fail,
}

/// The name before `sensitivePlaintext` joined it.
pub type ResidueAction = Action;

fn default_allowed() -> Vec<String> {
    ["kms-v2", "secretbox", "aesgcm"].map(String::from).to_vec()
}
fn default_discouraged() -> Vec<String> {
    ["aescbc", "kms-v1"].map(String::from).to_vec()
}
fn default_max_age() -> u32 {
    90
}
fn default_aesgcm_max_writes() -> u64 {
    200_000
}
fn default_required() -> Vec<String> {
    vec!["secrets".to_string()]
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_providers: default_allowed(),
            discouraged_providers: default_discouraged(),
            max_key_age_days: default_max_age(),
            required_resources: default_required(),
            allow_old_kms_key_ids: false,
            aesgcm_max_writes: default_aesgcm_max_writes(),
            residue: Action::Warn,
            sensitive_plaintext: Action::Warn,
            custody: CustodyRule::Any,
        }
    }
}

/// A policy file that could not be read or has unknown fields or wrong types.
#[derive(Debug, thiserror::Error)]
#[error("policy {path}: {message}")]
pub struct PolicyError {
    /// The policy file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl Policy {
    /// What the policy says of values stored under `key`: PASS for an allowed provider, WARN
    /// for a discouraged one, FAIL otherwise (identity always fails).
    pub fn judge(&self, key: &KeyLabel) -> super::Status {
        let kind = key.provider_kind();
        if kind == "identity" {
            super::Status::Fail
        } else if self.allowed_providers.iter().any(|p| p == kind) {
            super::Status::Pass
        } else if self.discouraged_providers.iter().any(|p| p == kind) {
            super::Status::Warn
        } else {
            super::Status::Fail
        }
    }

    /// The policy requires `resource` (`secrets`, `foos.example.com`) to be encrypted.
    pub fn requires(&self, resource: &str) -> bool {
        let gr = crate::GroupResource::parse(resource);
        self.required_resources
            .iter()
            .any(|r| crate::GroupResource::parse(r) == gr)
    }

    /// Reads a policy file; absent fields keep their defaults, unknown fields are errors.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let err = |message: String| PolicyError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let p: Policy = serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))?;
        let known = [
            "kms-v2",
            "kms-v1",
            "secretbox",
            "aesgcm",
            "aescbc",
            "identity",
        ];
        for name in p.allowed_providers.iter().chain(&p.discouraged_providers) {
            if !known.contains(&name.as_str()) {
                return Err(err(format!(
                    "unknown provider {name:?}: expected one of {known:?}"
                )));
            }
        }
        Ok(p)
    }
}
