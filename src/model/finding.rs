//! What a finding is and when one fails: one rule for `scan`, `status`, `report`, the
//! exporter's `atrest_findings` series and `report diff`. The exit codes these outcomes become
//! are decided in the CLI alone (`src/cli/mod.rs`).

use super::VerdictCounts;

/// What can be wrong with what atrest read.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Stored as plaintext where the config encrypts the resource or the policy requires it.
    Plaintext,
    /// On a read key rather than the write key (an unchanged write would re-encrypt it).
    Stale,
    /// Undecryptable or corrupt: no configured key opens it; the apiserver cannot serve it.
    Unreadable,
    /// Encrypted under a key its resource's config does not have (a rule or key removed while
    /// data still needed it): the apiserver cannot serve it.
    UnknownKey,
    /// Plaintext or retired-key copies in etcd's history, free pages or a backup file.
    Residue,
    /// Secret-looking data stored as plaintext in a resource the config does not encrypt.
    SensitivePlaintext,
    /// An apiserver reports a config other than the file: the proof is against a config it
    /// does not run.
    ApiserversDisagree,
}

impl FindingKind {
    /// Every kind, in the order outputs list them.
    pub const ALL: [FindingKind; 7] = [
        FindingKind::UnknownKey,
        FindingKind::Unreadable,
        FindingKind::Plaintext,
        FindingKind::Stale,
        FindingKind::ApiserversDisagree,
        FindingKind::SensitivePlaintext,
        FindingKind::Residue,
    ];

    /// The snake_case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Plaintext => "plaintext",
            FindingKind::Stale => "stale",
            FindingKind::Unreadable => "unreadable",
            FindingKind::UnknownKey => "unknown_key",
            FindingKind::Residue => "residue",
            FindingKind::SensitivePlaintext => "sensitive_plaintext",
            FindingKind::ApiserversDisagree => "apiservers_disagree",
        }
    }
}

/// Whether a finding fails (exit 1, report FAIL) or warns.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Shown, counted as a warning; the exit code stays 0.
    Warn,
    /// A finding: exit 1.
    Fail,
}

impl Level {
    /// `fail` or `warn`, as JSON and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }

    /// `FAIL` or `WARN`, as tables and reports show it.
    pub fn tag(self) -> &'static str {
        match self {
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One finding, with what to do about it. Never holds data or key material: counts, resource
/// and object names, key labels and fingerprints.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// Fail or warn.
    pub level: Level,
    /// The group resource, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// How many objects or copies (exact).
    pub count: u64,
    /// What was found and what to do, in one or a few lines.
    pub message: String,
}

/// The one rule for a resource's stored values: which counts are findings and at which level.
///
/// - plaintext is a finding where `plaintext_is_finding` ([`super::plaintext_is_finding`]);
/// - stale values are a finding;
/// - both only warn while `rewriting` (a rotation in progress will rewrite them: its next step
///   is due);
/// - undecryptable, corrupt and unknown-key values always fail: the apiserver cannot serve them.
pub fn resource_levels(
    counts: &VerdictCounts,
    plaintext_is_finding: bool,
    rewriting: bool,
) -> Vec<(FindingKind, Level, u64)> {
    let pending = if rewriting { Level::Warn } else { Level::Fail };
    let mut out = Vec::new();
    if counts.unknown_key > 0 {
        out.push((FindingKind::UnknownKey, Level::Fail, counts.unknown_key));
    }
    let unreadable = counts.undecryptable + counts.corrupt;
    if unreadable > 0 {
        out.push((FindingKind::Unreadable, Level::Fail, unreadable));
    }
    if plaintext_is_finding && counts.plaintext > 0 {
        out.push((FindingKind::Plaintext, pending, counts.plaintext));
    }
    if counts.stale > 0 {
        out.push((FindingKind::Stale, pending, counts.stale));
    }
    out
}

/// Whether any finding fails: what makes a checking command's outcome "findings" (the CLI maps
/// it to exit 1).
pub fn any_fails(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Fail)
}

/// Failing findings and warnings: `(fail, warn)`.
pub fn tally(findings: &[Finding]) -> (usize, usize) {
    let fail = findings.iter().filter(|f| f.level == Level::Fail).count();
    (fail, findings.len() - fail)
}

/// `PASS`, `PASS with 2 warnings`, `FAIL (3 findings, 1 warning)`: how every output says it.
pub fn result_line(findings: &[Finding]) -> String {
    let (fail, warn) = tally(findings);
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match (fail, warn) {
        (0, 0) => "PASS".to_string(),
        (0, w) => format!("PASS with {}", plural(w, "warning", "warnings")),
        (f, 0) => format!("FAIL ({})", plural(f, "finding", "findings")),
        (f, w) => format!(
            "FAIL ({}, {})",
            plural(f, "finding", "findings"),
            plural(w, "warning", "warnings")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(f: impl FnOnce(&mut VerdictCounts)) -> VerdictCounts {
        let mut c = VerdictCounts::default();
        f(&mut c);
        c
    }

    #[test]
    fn plaintext_is_a_finding_only_where_encryption_is_wanted() {
        let c = counts(|c| c.plaintext = 1600);
        assert_eq!(
            resource_levels(&c, true, false),
            vec![(FindingKind::Plaintext, Level::Fail, 1600)]
        );
        assert!(resource_levels(&c, false, false).is_empty());
        assert_eq!(
            resource_levels(&c, true, true),
            vec![(FindingKind::Plaintext, Level::Warn, 1600)],
            "a rotation in progress will rewrite them"
        );
    }

    #[test]
    fn unreadable_and_unknown_keys_always_fail() {
        let c = counts(|c| {
            c.unknown_key = 3;
            c.undecryptable = 2;
            c.corrupt = 1;
            c.stale = 4;
        });
        assert_eq!(
            resource_levels(&c, false, true),
            vec![
                (FindingKind::UnknownKey, Level::Fail, 3),
                (FindingKind::Unreadable, Level::Fail, 3),
                (FindingKind::Stale, Level::Warn, 4),
            ]
        );
    }

    #[test]
    fn the_exit_code_and_verdict_follow_the_levels() {
        let f = |level| Finding {
            kind: FindingKind::Residue,
            level,
            resource: None,
            count: 1,
            message: String::new(),
        };
        assert!(!any_fails(&[]));
        assert!(!any_fails(&[f(Level::Warn)]));
        assert!(any_fails(&[f(Level::Warn), f(Level::Fail)]));
        assert_eq!(result_line(&[]), "PASS");
        assert_eq!(result_line(&[f(Level::Warn)]), "PASS with 1 warning");
        assert_eq!(
            result_line(&[f(Level::Warn), f(Level::Warn)]),
            "PASS with 2 warnings"
        );
        assert_eq!(
            result_line(&[f(Level::Fail), f(Level::Warn)]),
            "FAIL (1 finding, 1 warning)"
        );
    }
}
