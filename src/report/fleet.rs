//! `atrest report merge`: one summary across clusters from their JSON reports — per cluster the
//! outcome, findings, oldest write key, last rotation and residue — as JSON, Markdown or a
//! self-contained HTML page whose table sorts by any column.

use std::path::{Path, PathBuf};

use maud::{DOCTYPE, PreEscaped, html};

use super::{Report, Status};
use crate::model::Level;
use crate::state::key_in_use_since;

/// One cluster's line in the fleet summary.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterLine {
    /// The report file it came from.
    pub file: PathBuf,
    /// The host atrest ran on.
    pub host: String,
    /// The etcd cluster ID.
    pub etcd_cluster_id: String,
    /// When the report was made.
    pub generated_at: String,
    /// PASS or FAIL.
    pub outcome: Status,
    /// The report's result line (`PASS with 1 warning`).
    pub result: String,
    /// Findings (exit-1 level) of the report.
    pub findings: usize,
    /// Warnings of the report.
    pub warnings: usize,
    /// The oldest write key in use and its age in days (`None`: unknown age).
    pub oldest_write_key: Option<String>,
    /// Its age in days, when known.
    pub oldest_write_key_days: Option<i64>,
    /// When the last rotation finished, if any.
    pub last_rotation: Option<String>,
    /// Old copies found (residue), when they were read.
    pub residue: Option<u64>,
    /// The signature was checked with `--key` and holds.
    pub signature_verified: bool,
}

/// The fleet: every cluster, and whether any has findings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fleet {
    /// `atrest.fleet/v1`.
    pub schema: String,
    /// One line per report, in the order given.
    pub clusters: Vec<ClusterLine>,
    /// Clusters whose report has findings.
    pub with_findings: usize,
}

/// Why a report could not join the fleet summary.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not the JSON of `atrest report --format json`.
    #[error("{path} is not the JSON of `atrest report --format json`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads one JSON report.
pub fn read(path: &Path) -> Result<Report, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FleetError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One report's line.
pub fn line(file: &Path, r: &Report, signature_verified: bool) -> ClusterLine {
    let now = chrono::DateTime::parse_from_rfc3339(&r.generated_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    // The oldest write key: the write key (first key) of each resource, by when it came into use.
    let oldest = r
        .config
        .resources
        .iter()
        .filter_map(|v| v.keys.first())
        .filter(|k| k.provider != "identity")
        .map(|k| {
            let days = key_in_use_since(k.promoted, k.added).map(|t| (now - t).num_days());
            (k.label.clone(), days)
        })
        .max_by_key(|(_, days)| days.unwrap_or(i64::MAX));
    ClusterLine {
        file: file.to_path_buf(),
        host: r.host.clone(),
        etcd_cluster_id: r.etcd.cluster_id.clone(),
        generated_at: r.generated_at.clone(),
        outcome: r.outcome,
        result: r.result.clone(),
        findings: r.findings.iter().filter(|f| f.level == Level::Fail).count(),
        warnings: r.findings.iter().filter(|f| f.level == Level::Warn).count(),
        oldest_write_key_days: oldest.as_ref().and_then(|(_, d)| *d),
        oldest_write_key: oldest.map(|(label, _)| label),
        last_rotation: r
            .rotation
            .as_ref()
            .and_then(|x| x.last_finished)
            .map(|t| crate::model::time::format(&t)),
        residue: r.residue.as_ref().map(|x| x.total),
        signature_verified,
    }
}

/// The summary of `lines`.
pub fn fleet(clusters: Vec<ClusterLine>) -> Fleet {
    Fleet {
        schema: "atrest.fleet/v1".into(),
        with_findings: clusters
            .iter()
            .filter(|c| c.findings > 0 || c.outcome == Status::Fail)
            .count(),
        clusters,
    }
}

fn days(d: Option<i64>) -> String {
    d.map(|d| format!("{d} days"))
        .unwrap_or_else(|| "unknown".into())
}

/// The summary as Markdown.
pub fn markdown(f: &Fleet) -> String {
    let mut o = format!(
        "# Encryption at rest across {} clusters: {} with findings\n\n| cluster | host | result | findings | warnings | oldest write key | last rotation | residue | signature | report |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        f.clusters.len(),
        f.with_findings
    );
    for c in &f.clusters {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |\n",
            c.etcd_cluster_id,
            c.host,
            c.result,
            c.findings,
            c.warnings,
            c.oldest_write_key.as_deref().unwrap_or("none"),
            days(c.oldest_write_key_days),
            c.last_rotation.as_deref().unwrap_or("none recorded"),
            c.residue
                .map(|r| r.to_string())
                .unwrap_or_else(|| "not read".into()),
            if c.signature_verified {
                "verified"
            } else {
                "not checked"
            },
            c.file.display()
        ));
    }
    o
}

/// Sorts the table by the clicked column (numbers numerically, where `data-sort` gives one).
const SORT: &str = "document.querySelectorAll('th').forEach((th,i)=>th.addEventListener('click',()=>{const tb=th.closest('table').tBodies[0];const rows=[...tb.rows];const asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';const key=r=>{const c=r.cells[i];const v=c.dataset.sort??c.textContent;const n=parseFloat(v);return isNaN(n)?v:n};rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(asc?1:-1)});rows.forEach(r=>tb.appendChild(r))}));";

/// The summary as one self-contained HTML page.
pub fn html(f: &Fleet) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Encryption at rest across " (f.clusters.len()) " clusters" }
                style { (PreEscaped("body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:80rem;padding:0 1rem}table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left}th{background:#f6f8fa;cursor:pointer}.FAIL{color:#a40e26;font-weight:700}.PASS{color:#116329;font-weight:700}")) }
            }
            body {
                h1 { "Encryption at rest across " (f.clusters.len()) " clusters: " (f.with_findings) " with findings" }
                p { "Click a column to sort." }
                table id="fleet" {
                    thead { tr {
                        th { "cluster" } th { "host" } th { "result" } th { "findings" } th { "warnings" }
                        th { "oldest write key" } th { "age" } th { "last rotation" } th { "residue" }
                        th { "signature" } th { "report" }
                    } }
                    tbody {
                        @for c in &f.clusters {
                            tr {
                                td { (c.etcd_cluster_id) }
                                td { (c.host) }
                                td class=(c.outcome.as_str()) { (c.result) }
                                td data-sort=(c.findings) { (c.findings) }
                                td data-sort=(c.warnings) { (c.warnings) }
                                td { (c.oldest_write_key.as_deref().unwrap_or("none")) }
                                td data-sort=(c.oldest_write_key_days.unwrap_or(-1)) { (days(c.oldest_write_key_days)) }
                                td { (c.last_rotation.as_deref().unwrap_or("none recorded")) }
                                td data-sort=(c.residue.map(|r| r as i64).unwrap_or(-1)) {
                                    (c.residue.map(|r| r.to_string()).unwrap_or_else(|| "not read".into()))
                                }
                                td { (if c.signature_verified { "verified" } else { "not checked" }) }
                                td { (c.file.display().to_string()) }
                            }
                        }
                    }
                }
                script { (PreEscaped(SORT)) }
            }
        }
    };
    page.into_string()
}
