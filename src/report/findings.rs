//! The one assessment every checking command prints and exits by (`scan`, `status`, `report`,
//! the exporter's `atrest_findings`): what the scan read, judged by the config and the policy,
//! as findings (exit 1) and warnings. The rule for a resource's counts is
//! [`crate::model::finding::resource_levels`]; this module adds what each finding names and the
//! fix, and the findings beyond stored values (residue, sensitive plaintext, apiservers).

use crate::GroupResource;
use crate::config::LoadedConfig;
use crate::model::census::{FoundIn, ResourceReport, ScanReport};
use crate::model::finding::{resource_levels, result_line};
use crate::model::{Finding, FindingKind, KeyLabel, Level, plaintext_is_finding};
use crate::state::Rotation;

use super::{ApiserverSurvey, Policy, policy::Action};
use crate::cluster::keybook::restore_rule;
use crate::model::showing;

/// What an assessment judges.
pub struct AssessInputs<'a> {
    /// The scan (with its residue sections when history was read).
    pub scan: &'a ScanReport,
    /// The config the scan was classified with.
    pub config: &'a LoadedConfig,
    /// What is required, and whether residue and sensitive plaintext fail or warn.
    pub policy: &'a Policy,
    /// The rotation in progress, if any: what it will rewrite only warns.
    pub rotation: Option<&'a Rotation>,
    /// What each apiserver reported, when they were asked.
    pub apiservers: Option<&'a ApiserverSurvey>,
}

/// Every finding and warning, in the order outputs list them.
pub fn assess(inp: &AssessInputs<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in &inp.scan.resources {
        resource_findings(inp, r, &mut out);
    }
    apiserver_findings(inp, &mut out);
    sensitive_findings(inp, &mut out);
    residue_findings(inp, &mut out);
    out.sort_by_key(|f| {
        (
            std::cmp::Reverse(f.level),
            FindingKind::ALL.iter().position(|k| *k == f.kind),
        )
    });
    out
}

/// Judges `scan` by the config and the policy and stores the findings and the result line
/// (`PASS with 1 warning`) in it: what `scan`, `status` and the exporter print and exit by.
pub fn judge(
    scan: &mut ScanReport,
    config: &LoadedConfig,
    policy: &Policy,
    rotation: Option<&Rotation>,
    apiservers: Option<&ApiserverSurvey>,
) {
    let findings = assess(&AssessInputs {
        scan,
        config,
        policy,
        rotation,
        apiservers,
    });
    scan.result = result_line(&findings);
    scan.findings = findings;
}

/// A resource's stored values are rewritten by the rotation in progress: it is written by one
/// of the rules the rotation edits.
fn rewriting(inp: &AssessInputs<'_>, resource: &GroupResource) -> bool {
    inp.rotation.is_some_and(|r| {
        inp.config
            .config
            .resolve(resource)
            .entries
            .first()
            .is_some_and(|e| r.rules.contains(&e.rule))
    })
}

fn resource_findings(inp: &AssessInputs<'_>, r: &ResourceReport, out: &mut Vec<Finding>) {
    let gr = GroupResource::parse(&r.resource);
    let required = inp.policy.requires(&r.resource);
    let plaintext_finding = plaintext_is_finding(r.encrypts, required);
    let rewriting = rewriting(inp, &gr);
    let next = inp
        .rotation
        .map(|rot| rot.stage.next_command())
        .unwrap_or("atrest reencrypt");
    if required && !r.encrypts && r.verdicts.plaintext == 0 {
        out.push(Finding {
            kind: FindingKind::Plaintext,
            level: Level::Warn,
            resource: Some(r.resource.clone()),
            count: 0,
            message: format!(
                "{}: the policy requires it encrypted, but the config writes it as plaintext (write key identity): every new one will be stored unencrypted.",
                r.resource
            ),
        });
    }
    for (kind, level, count) in resource_levels(&r.verdicts, plaintext_finding, rewriting) {
        let message = match kind {
            FindingKind::UnknownKey => unknown_key_message(inp, r, &gr, count),
            FindingKind::Unreadable => format!(
                "{}: {count} values no configured key opens ({} undecryptable, {} corrupt): the apiserver cannot serve them. A key removed too early, or a node on another config: `atrest scan --verify --key-archive FILE` tries retired keys.",
                r.resource, r.verdicts.undecryptable, r.verdicts.corrupt
            ),
            FindingKind::Plaintext => {
                let why = if r.encrypts {
                    format!("the config encrypts it (write key {})", r.write_key)
                } else {
                    "the policy requires it encrypted, and its config does not encrypt it (write key identity)"
                        .to_string()
                };
                let fix = if rewriting {
                    format!("the rotation in progress rewrites them: `{next}`")
                } else if r.encrypts {
                    "`atrest reencrypt` rewrites them with the write key".to_string()
                } else if gr == GroupResource::secrets() {
                    "`atrest rotate run` turns encryption on and rewrites them".to_string()
                } else {
                    format!(
                        "give {} an encrypting rule (README: encrypt configmaps and custom resources), then `atrest reencrypt`",
                        r.resource
                    )
                };
                format!(
                    "{}: {count} stored as plaintext, but {why}; {fix}.",
                    r.resource
                )
            }
            FindingKind::Stale => {
                let fix = if rewriting {
                    format!("the rotation in progress rewrites them: `{next}`")
                } else {
                    "`atrest reencrypt` rewrites them".to_string()
                };
                format!(
                    "{}: {count} on a read key, not the write key {}; {fix}.",
                    r.resource, r.write_key
                )
            }
            _ => continue,
        };
        out.push(Finding {
            kind,
            level,
            resource: Some(r.resource.clone()),
            count,
            message,
        });
    }
}

/// Names the keys, what atrest knows of each, and the rule that makes the values readable.
fn unknown_key_message(
    inp: &AssessInputs<'_>,
    r: &ResourceReport,
    gr: &GroupResource,
    count: u64,
) -> String {
    let labels: Vec<(&KeyLabel, u64)> = r
        .keys
        .iter()
        .filter(|(_, c)| c.unknown_key > 0)
        .map(|(l, c)| (l, c.unknown_key))
        .collect();
    let why = match &r.rule {
        None => format!("no rule of the config covers {}", r.resource),
        Some(rule) => format!("its rule {rule} does not list the key"),
    };
    let mut lines = vec![format!(
        "{}: {count} values are encrypted under a key the config does not give {} ({why}): the apiserver cannot read them (kubectl get fails for each).",
        r.resource, r.resource
    )];
    for (label, n) in &labels {
        let known: Vec<String> = inp
            .scan
            .unknown_keys
            .iter()
            .filter(|k| &k.label == *label)
            .map(|k| k.describe())
            .collect();
        let known = if known.is_empty() {
            "atrest found no copy of this key (not in the config, its state folder, key archive or backups)".to_string()
        } else {
            known.join("; ")
        };
        lines.push(format!("  {label}: {n} values — {known}"));
    }
    if r.outside_config > 0 {
        lines.push(if inp.scan.verified {
            format!(
                "  {} of them open with a key atrest found.",
                r.outside_config
            )
        } else {
            format!(
                "  {} of them match a key atrest found, by name and shape (--verify opens them to be sure).",
                r.outside_config
            )
        });
    }
    let wanted: Vec<KeyLabel> = labels.iter().map(|(l, _)| (*l).clone()).collect();
    lines.push("  To make them readable again, restore the key as a read key:".to_string());
    let rule = restore_rule(&inp.config.config, gr, &wanted, &inp.scan.unknown_keys);
    lines.extend(rule.lines().map(|l| format!("    {l}")));
    lines.join("\n")
}

fn apiserver_findings(inp: &AssessInputs<'_>, out: &mut Vec<Finding>) {
    let Some(s) = inp.apiservers else { return };
    for lease in &s.unreached {
        out.push(Finding {
            kind: FindingKind::ApiserversDisagree,
            level: Level::Warn,
            resource: None,
            count: 1,
            message: format!(
                "identity lease {lease}: no apiserver asked answered for it, so which config it runs is not proven (name every apiserver with --apiserver URL)"
            ),
        });
    }
    for a in &s.apiservers {
        match &a.config_hash {
            Some(h) if *h != inp.config.hash => out.push(Finding {
                kind: FindingKind::ApiserversDisagree,
                level: Level::Fail,
                resource: None,
                count: 1,
                message: format!(
                    "apiserver {} runs config {h}, not the file {} ({}): it reads and writes with another config. Copy the file to its node (or wait for its automatic reload, up to a minute).",
                    a.name,
                    inp.config.path.display(),
                    inp.config.hash
                ),
            }),
            Some(_) => {}
            None => out.push(Finding {
                kind: FindingKind::ApiserversDisagree,
                level: Level::Warn,
                resource: None,
                count: 1,
                message: format!(
                    "apiserver {}: {}; which config it runs is not proven",
                    a.name, a.reported
                ),
            }),
        }
    }
}

fn sensitive_findings(inp: &AssessInputs<'_>, out: &mut Vec<Finding>) {
    let level = match inp.policy.sensitive_plaintext {
        Action::Warn => Level::Warn,
        Action::Fail => Level::Fail,
    };
    for r in &inp.scan.resources {
        let Some(s) = r.sensitive.as_ref().filter(|s| s.total > 0) else {
            continue;
        };
        let mut lines = vec![format!(
            "{}: {} objects hold secret-looking data stored as plaintext (the config does not encrypt {}):",
            r.resource, s.total, r.resource
        )];
        for o in s.objects.iter().take(20) {
            let hits: Vec<String> = o
                .hits
                .iter()
                .map(|h| format!("{} ({})", h.path, h.rule))
                .collect();
            lines.push(format!("  {}: {}", o.name, hits.join(", ")));
        }
        let more = showing(s.objects.len().min(20), s.total, "");
        if !more.is_empty() {
            lines.push(format!(" {more}"));
        }
        lines.push(format!(
            "  Encrypt {} (README: encrypt configmaps and custom resources), or move the data into Secrets.",
            r.resource
        ));
        out.push(Finding {
            kind: FindingKind::SensitivePlaintext,
            level,
            resource: Some(r.resource.clone()),
            count: s.total,
            message: lines.join("\n"),
        });
    }
}

fn residue_findings(inp: &AssessInputs<'_>, out: &mut Vec<Finding>) {
    let level = match inp.policy.residue {
        Action::Warn => Level::Warn,
        Action::Fail => Level::Fail,
    };
    let scan = inp.scan;
    let mut unread = Vec::new();
    let mut push = |count: u64, message: String| {
        out.push(Finding {
            kind: FindingKind::Residue,
            level,
            resource: None,
            count,
            message,
        })
    };
    if let Some(h) = scan.history.as_ref().filter(|h| h.residue > 0) {
        let mut lines = vec![format!(
            "etcd history (revisions {}..{}): {} older copies stored as plaintext where the config now encrypts, or under keys it no longer has; a compaction at {} drops them:",
            h.from_revision,
            h.to_revision,
            h.residue,
            h.compact_to_drop_residue.unwrap_or(h.to_revision)
        )];
        lines.extend(h.residue_groups().map(|g| format!("  {}", g.summary())));
        lines.extend(scan.cleanup.iter().map(|c| format!("  to drop: {c}")));
        push(h.residue, lines.join("\n"));
    }
    if let Some(f) = scan.free_pages.as_ref().filter(|f| f.residue > 0) {
        push(
            f.residue,
            format!(
                "free pages of the file: {} copies that are residue, until the file is replaced by a defragmented one",
                f.residue
            ),
        );
    }
    if scan.snapshot.is_some() {
        let current: u64 = scan.resources.iter().map(|r| r.residue).sum();
        if current > 0 {
            push(
                current,
                format!(
                    "this backup holds {current} current values stored as plaintext where the config encrypts, or under keys it no longer has"
                ),
            );
        }
    }
    for b in scan.backups.iter().flatten() {
        if b.residue() > 0 {
            let fix = if b.in_progress {
                "the restore point of the rotation in progress: kept until the rotation finishes"
                    .to_string()
            } else if matches!(b.found_in, FoundIn::BackupDir { .. }) {
                "a backup taken elsewhere: once the cluster is clean, take a new backup and delete this one".to_string()
            } else {
                "`atrest rotate prune --remove-snapshots` deletes it (copy it first if you must keep it)".to_string()
            };
            push(
                b.residue(),
                format!("backup {}: {}; {fix}", b.describe(), b.holds()),
            );
        } else if let Some(e) = &b.error {
            unread.push(format!("backup {} was not checked: {e}", b.describe()));
        }
    }
    out.extend(unread.into_iter().map(|message| Finding {
        kind: FindingKind::Residue,
        level: Level::Warn,
        resource: None,
        count: 0,
        message,
    }));
}
