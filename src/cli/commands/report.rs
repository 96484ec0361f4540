//! `atrest report` and `atrest report diff`: the compliance audit report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::cli::args;
use crate::cli::{EXIT_FINDINGS, EXIT_OK};
use atrest::cluster::{Context, ScanRequest};
use atrest::etcd::EtcdTarget;
use atrest::model::census::ScanReport;
use atrest::report::{self, ApiserverSurvey, EtcdInfo, KeyAge, RotationInfo};

/// Names kept per resource and verdict in a report (counts stay exact).
const REPORT_NAMES: usize = 1000;

/// Exit 0 on PASS, 1 on FAIL (and for `diff`: 1 when the reports differ).
pub(crate) async fn run(a: args::ReportArgs) -> Result<i32> {
    if let Some(args::ReportSub::Diff {
        a: first,
        b: second,
        fail_on_change,
    }) = &a.diff
    {
        return diff(first, second, *fail_on_change);
    }
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let policy = super::policy(a.policy.as_deref())?;
    let dir = super::state_dir_to_read(&ctx, a.cluster.state_dir.as_deref());
    let history = !a.no_history;
    let (scan, etcd_info) = match (&a.from_scan, &a.snapshot) {
        (_, Some(file)) => {
            let req = ScanRequest {
                verify: a.verify,
                max_list: REPORT_NAMES,
                history,
                state_dir: Some(dir.clone()),
                ..Default::default()
            };
            let scan = ctx.scan_file(file, &req, &mut ()).await?;
            let info = EtcdInfo {
                endpoints: vec![format!("file {}", file.display())],
                cluster_id: "offline: a db file".into(),
                revision: scan.revision,
                ..Default::default()
            };
            (scan, info)
        }
        (Some(path), None) => {
            let scan = read_scan(path)?;
            let mut info = match ctx.etcd().await {
                Ok(c) => etcd_cluster_info(&c, &ctx.target).await,
                Err(_) => EtcdInfo {
                    endpoints: vec![ctx.target.describe()],
                    cluster_id: "not reachable".into(),
                    ..Default::default()
                },
            };
            info.revision = scan.revision;
            (scan, info)
        }
        (None, None) => {
            let client = ctx.etcd().await?;
            let mut info = etcd_cluster_info(&client, &ctx.target).await;
            let req = ScanRequest {
                verify: a.verify,
                max_list: REPORT_NAMES,
                patience: Duration::from_secs(a.etcd.etcd_patience),
                history,
                state_dir: Some(dir.clone()),
                ..Default::default()
            };
            let mut scan = ctx.scan(&client, &req, &mut ()).await?;
            if history {
                scan.backups = Some(ctx.survey_backups(&dir, &a.backup_dirs).await?);
            }
            info.revision = scan.revision;
            (scan, info)
        }
    };
    let loaded = &ctx.config;
    let apiservers = match a.snapshot {
        // A backup's audit is about the file alone.
        Some(_) => None,
        None => super::survey_apiservers(&ctx, &a.cluster.apiservers)
            .await
            .map(|c| ApiserverSurvey::of(&c)),
    };
    let state = atrest::state::RotationState::load(&dir, &loaded.path)
        .ok()
        .filter(|st| st.expected_hash.is_some() || !st.history.is_empty());
    let report = report::build(&report::Inputs {
        config: loaded,
        scan: &scan,
        etcd: etcd_info,
        apiservers,
        manifest_sets_config: ctx.manifest_sets_config(),
        rotation: state
            .as_ref()
            .map(|st| rotation_info(st, atrest::state::RotationState::path(&dir))),
        in_progress: state.as_ref().and_then(|st| st.rotation.clone()),
        key_ages: state
            .as_ref()
            .map(|st| {
                st.keys
                    .iter()
                    .map(|(label, k)| {
                        (
                            label.clone(),
                            KeyAge {
                                added: k.added,
                                promoted: k.promoted,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        policy: &policy,
        now: chrono::Utc::now(),
    });
    let text = match a.format {
        args::ReportFormat::Json => serde_json::to_string_pretty(&report)?,
        args::ReportFormat::Md => report::markdown::render(&report),
        args::ReportFormat::Html => report::html::render(&report),
    };
    // A report is a file: on a terminal, without --out, it goes to one beside the admin and
    // the terminal gets its summary; `--out -` (or a pipe) takes the document itself.
    let out = match &a.out {
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
                }
            )))
        }
        None => None,
    };
    match &out {
        Some(path) => {
            atrest::fsutil::write_atomic(path, text.as_bytes(), 0o644)?;
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
    Ok(crate::cli::verdict_exit(report.verdict))
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

fn read_scan(path: &PathBuf) -> Result<ScanReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the JSON of `atrest scan -o json` ({})",
            path.display(),
            atrest::model::census::SCAN_SCHEMA
        )
    })
}

fn rotation_info(s: &atrest::state::RotationState, state_file: PathBuf) -> RotationInfo {
    let current = s.rotation.as_ref().or(s.history.last());
    RotationInfo {
        state_file,
        stage: s.rotation.as_ref().map(|r| r.stage.to_string()),
        target: s.rotation.as_ref().map(|r| r.target.clone()),
        last_finished: s.history.last().and_then(|r| r.finished_at),
        snapshot: current.and_then(|r| r.snapshot.as_ref()).map(|x| {
            format!(
                "{} ({}, revision {})",
                x.path.display(),
                x.sha256,
                x.revision
            )
        }),
        snapshot_skipped: current.is_some_and(|r| r.snapshot_skipped),
    }
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

async fn etcd_cluster_info(client: &etcd_client::Client, target: &EtcdTarget) -> EtcdInfo {
    let mut info = EtcdInfo {
        endpoints: vec![target.describe()],
        ..Default::default()
    };
    let mut c = client.clone();
    if let Ok(st) = c.status().await {
        info.version = st.version().to_string();
        info.cluster_id = st
            .header()
            .map(|h| format!("{:x}", h.cluster_id()))
            .unwrap_or_default();
    }
    if let Ok(m) = c.member_list().await {
        info.members = m
            .members()
            .iter()
            .map(|m| report::EtcdMember {
                id: format!("{:x}", m.id()),
                name: m.name().to_string(),
                client_urls: m.client_urls().to_vec(),
            })
            .collect();
    }
    info
}
