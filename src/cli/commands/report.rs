//! `atrest report` and `atrest report diff`: the compliance audit report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cli::args;
use crate::cli::{EXIT_FINDINGS, EXIT_OK};
use atrest::cluster::Context;
use atrest::fsutil::write_atomic;
use atrest::keys::signing::{PublicKey, SigningKey};
use atrest::report;
use atrest::report::audit::{AuditRequest, Source, audit};

/// Exit 0 on PASS, 1 on FAIL (and for `diff`: 1 when the reports differ).
pub(crate) async fn run(a: args::ReportArgs) -> Result<i32> {
    match &a.diff {
        Some(args::ReportSub::Diff {
            a: first,
            b: second,
            fail_on_change,
        }) => return diff(first, second, *fail_on_change),
        Some(args::ReportSub::Verify { key, paths }) => return verify(key, paths),
        Some(args::ReportSub::Merge {
            reports,
            key,
            format,
            out,
        }) => return merge(reports, key.as_deref(), *format, out.as_deref()),
        None => {}
    }
    if a.sign.is_some() && a.out.as_deref() == Some(Path::new("-")) {
        anyhow::bail!("--sign signs a file: give --out FILE, not -");
    }
    // Read before the audit: a key that does not load stops the run before etcd is read.
    let signing = a.sign.as_deref().map(SigningKey::load).transpose()?;
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let policy = super::policy(a.policy.as_deref())?;
    let source = match (&a.from_scan, &a.snapshot) {
        (_, Some(file)) => Source::Snapshot(file.clone()),
        (Some(path), None) => Source::SavedScan(path.clone()),
        (None, None) => Source::Live {
            patience: Duration::from_secs(a.etcd.etcd_patience),
            backup_dirs: a.backup_dirs.clone(),
        },
    };
    let report = audit(
        &ctx,
        &AuditRequest {
            source,
            verify: !a.no_verify,
            history: !a.no_history,
            state_dir: super::state_dir_to_read(&ctx, a.cluster.state_dir.as_deref()),
            apiservers: &a.cluster.apiservers,
            policy: &policy,
            identities: &a.open.identities,
            shares: &a.open.shares,
            drill: a
                .drill
                .as_deref()
                .map(atrest::cluster::drill::DrillResult::load)
                .transpose()?,
        },
    )
    .await?;
    let text = render(a.format, &report)?;
    let out = output_path(&a);
    match &out {
        Some(path) => {
            write_atomic(path, text.as_bytes(), 0o644)?;
            if let Some(key) = &signing {
                sign(&report, path, key)?;
            }
            if a.out.is_none() {
                crate::cli::outln!("{}", summary(&report));
            }
            eprintln!(
                "atrest: report written to {} ({})",
                path.display(),
                report.result
            );
        }
        None => crate::cli::outln!("{text}"),
    }
    Ok(crate::cli::outcome_exit(report.outcome))
}

/// The report in the format asked for.
fn render(format: args::ReportFormat, report: &report::Report) -> Result<String> {
    Ok(match format {
        args::ReportFormat::Json => serde_json::to_string_pretty(report)?,
        args::ReportFormat::Md => report::markdown::render(report),
        args::ReportFormat::Html => report::html::render(report),
        args::ReportFormat::Oscal => serde_json::to_string_pretty(&report::oscal::render(
            report,
            &report
                .cis_benchmark
                .clone()
                .unwrap_or_else(|| report::controls::cis_of(&report.apiservers)),
        ))?,
    })
}

/// A report is a file: on a terminal, without --out, it goes to one beside the admin (and the
/// terminal gets its summary); `--out -` (or a pipe) takes the document itself.
fn output_path(a: &args::ReportArgs) -> Option<PathBuf> {
    match &a.out {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            Some(PathBuf::from(format!(
                "atrest-report-{}.{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                match a.format {
                    args::ReportFormat::Json => "json",
                    args::ReportFormat::Md => "md",
                    args::ReportFormat::Html => "html",
                    args::ReportFormat::Oscal => "oscal.json",
                }
            )))
        }
        None => None,
    }
}

/// What a terminal shows of a report written to a file: the verdict, each check, the findings.
fn summary(r: &report::Report) -> String {
    let mut lines = vec![format!("Encryption at rest audit: {}", r.result)];
    for c in &r.checks {
        lines.push(format!("  {} {} {}", c.status.as_str(), c.id, c.title));
    }
    for f in &r.findings {
        let first = f.message.lines().next().unwrap_or("");
        lines.push(format!("  {} {first}", f.level.tag()));
    }
    lines.join("\n")
}

fn diff(first: &PathBuf, second: &PathBuf, fail_on_change: bool) -> Result<i32> {
    let read = |p: &PathBuf| -> Result<report::diff::View> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
        report::diff::View::from_json(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let (ra, rb) = (read(first)?, read(second)?);
    let changes = report::diff::changes(&ra, &rb);
    if changes.is_empty() {
        crate::cli::outln!(
            "no differences between {} ({}) and {} ({})",
            first.display(),
            ra.generated_at,
            second.display(),
            rb.generated_at
        );
        return Ok(EXIT_OK);
    }
    crate::cli::outln!(
        "{} ({}) -> {} ({}):",
        first.display(),
        ra.generated_at,
        second.display(),
        rb.generated_at
    );
    for c in &changes {
        crate::cli::outln!(
            "  {}{}",
            if c.regression { "REGRESSION " } else { "" },
            c.line
        );
    }
    let regressions = changes.iter().filter(|c| c.regression).count();
    crate::cli::outln!("{} differences, {regressions} regressions", changes.len());
    Ok(if regressions > 0 || fail_on_change {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}

/// Writes `FILE.intoto.json` beside the report file `path`: the signed statement of its sha256.
fn sign(report: &report::Report, path: &Path, key: &SigningKey) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = PathBuf::from(path.file_name().unwrap_or_default());
    let envelope = report::attest::sign(report, dir, std::slice::from_ref(&name), key)?;
    let out = dir.join(format!(
        "{}{}",
        name.display(),
        report::attest::ENVELOPE_SUFFIX
    ));
    write_atomic(&out, &serde_json::to_vec_pretty(&envelope)?, 0o644)?;
    eprintln!(
        "atrest: signed with {}: {}",
        key.public().key_id(),
        out.display()
    );
    Ok(())
}

/// `atrest report verify`: exit 0 when every envelope and file verifies, 1 on any mismatch.
fn verify(key: &Path, paths: &[PathBuf]) -> Result<i32> {
    let key = PublicKey::load(key)?;
    let mut envelopes = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.to_string_lossy()
                        .ends_with(report::attest::ENVELOPE_SUFFIX)
                })
                .collect();
            if found.is_empty() {
                anyhow::bail!(
                    "{} holds no envelope (*{})",
                    p.display(),
                    report::attest::ENVELOPE_SUFFIX
                );
            }
            found.sort();
            envelopes.extend(found);
        } else {
            envelopes.push(p.clone());
        }
    }
    let mut failed = 0;
    for env in &envelopes {
        match report::attest::verify(env, &key) {
            Ok(statement) => {
                let files: Vec<&str> = statement.subject.iter().map(|s| s.name.as_str()).collect();
                crate::cli::outln!(
                    "OK {}: signed by {}, {} ({})",
                    env.display(),
                    key.key_id(),
                    statement.predicate["result"].as_str().unwrap_or("?"),
                    files.join(", ")
                );
            }
            Err(
                e @ (report::attest::AttestError::Read { .. }
                | report::attest::AttestError::Malformed { .. }),
            ) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                crate::cli::outln!("FAILED {e}");
            }
        }
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FINDINGS })
}

/// `atrest report merge`: the fleet summary; exit 1 when a cluster has findings or a signature
/// does not verify.
fn merge(
    reports: &[PathBuf],
    key: Option<&Path>,
    format: args::MergeFormat,
    out: Option<&Path>,
) -> Result<i32> {
    let key = key.map(PublicKey::load).transpose()?;
    let mut lines = Vec::new();
    let mut bad_signatures = 0;
    for path in reports {
        let r = report::fleet::read(path)?;
        let verified = match &key {
            None => false,
            Some(k) => {
                let env = PathBuf::from(format!(
                    "{}{}",
                    path.display(),
                    report::attest::ENVELOPE_SUFFIX
                ));
                match report::attest::verify(&env, k) {
                    Ok(_) => true,
                    Err(e) => {
                        eprintln!("atrest: {}: not verified: {e}", path.display());
                        bad_signatures += 1;
                        false
                    }
                }
            }
        };
        lines.push(report::fleet::line(path, &r, verified));
    }
    let fleet = report::fleet::fleet(lines);
    let text = match format {
        args::MergeFormat::Json => serde_json::to_string_pretty(&fleet)?,
        args::MergeFormat::Md => report::fleet::markdown(&fleet),
        args::MergeFormat::Html => report::fleet::html(&fleet),
    };
    match out {
        Some(p) => {
            write_atomic(p, text.as_bytes(), 0o644)?;
            eprintln!(
                "atrest: fleet summary of {} clusters written to {} ({} with findings)",
                fleet.clusters.len(),
                p.display(),
                fleet.with_findings
            );
        }
        None => crate::cli::outln!("{text}"),
    }
    Ok(if fleet.with_findings > 0 || bad_signatures > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
