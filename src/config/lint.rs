//! Lint findings: a config the apiserver accepts can still be a poor one. Separate from
//! validation, each finding has a stable id an admin can look up or silence in a policy.

use std::fmt;

use super::{EncryptionConfig, KmsVersion, Provider};
use crate::GroupResource;
use crate::model::KeyProvider;

/// How much a finding matters; `--fail-on` picks the lowest that fails the command.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, nothing to fix now (e.g. aesgcm keys need regular rotation).
    Info,
    /// Works, but weaker or riskier than it should be.
    Warning,
    /// Secrets are not protected as intended (e.g. stored as plaintext, or the file readable by
    /// others).
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One lint finding about a config the apiserver accepts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Stable id, `AR` + number.
    pub id: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// Where in the file, when it is about one place.
    pub field: Option<String>,
    /// What is wrong and what to do, in a sentence.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id, self.severity)?;
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Findings about the config's content.
pub fn lint(config: &EncryptionConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let names = rule.resources.join(", ");
        if let Some(Provider::Identity) = rule.providers.first() {
            let covers_secrets = rule
                .resources
                .iter()
                .any(|r| matches!(r.as_str(), "secrets" | "*." | "*.*"));
            out.push(Finding {
                id: "AR001",
                severity: if covers_secrets {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                field: Some(format!("resources[{i}].providers[0]")),
                message: format!(
                    "identity is the first provider for {names}: new writes are stored as plaintext"
                ),
            });
        }
        for (j, p) in rule.providers.iter().enumerate() {
            let field = Some(format!("resources[{i}].providers[{j}]"));
            match p {
                Provider::Keys { provider: KeyProvider::Aescbc, .. } => out.push(Finding {
                    id: "AR002",
                    severity: Severity::Warning,
                    field,
                    message: format!(
                        "aescbc is used for {names}: it is weak (padding-oracle attacks) and not recommended; prefer secretbox or KMS v2"
                    ),
                }),
                Provider::Keys { provider: KeyProvider::Aesgcm, .. } => out.push(Finding {
                    id: "AR003",
                    severity: Severity::Info,
                    field,
                    message: format!(
                        "aesgcm is used for {names}: rotate each key before about 200,000 writes (random 96-bit nonces)"
                    ),
                }),
                Provider::Kms(k) if k.version == KmsVersion::V1 => out.push(Finding {
                    id: "AR005",
                    severity: Severity::Warning,
                    field,
                    message: format!(
                        "KMS v1 provider {:?} is deprecated and disabled by default since Kubernetes 1.29 (feature gate KMSv1); move to KMS v2",
                        k.name
                    ),
                }),
                _ => {}
            }
        }
    }
    let secrets = config.resolve(&GroupResource::secrets());
    if secrets.entries.is_empty() {
        out.push(Finding {
            id: "AR004",
            severity: Severity::Error,
            field: None,
            message: "secrets are not covered by any rule: they are stored as plaintext".into(),
        });
    }
    out
}

/// Findings about the file itself: it holds the keys, so only its owner may read it.
pub fn lint_file_mode(mode: u32) -> Option<Finding> {
    (mode & 0o077 != 0).then(|| Finding {
        id: "AR006",
        severity: Severity::Error,
        field: None,
        message: format!(
            "the config file holds keys but has mode {:04o}: readable or writable by group or others; chmod 600",
            mode & 0o7777
        ),
    })
}
