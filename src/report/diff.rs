//! What changed between two audits (two JSON reports). Reads both schemas: v2, and v1 files
//! written by atrest 0.1 (whose per-resource `counts` map is the same exact count per key).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::Status;
use crate::model::VerdictCounts;

/// The parts of a report a diff compares, the same for every schema.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// `atrest.report/v1` or `/v2`.
    pub schema: String,
    /// When it was generated.
    pub generated_at: String,
    /// PASS or FAIL (the report's `verdict`).
    pub outcome: Status,
    /// The config file's path.
    pub config_path: String,
    /// Its hash.
    pub config_sha256: String,
    /// Check id → (title, status).
    pub checks: BTreeMap<String, (String, Status)>,
    /// Resource → write key, from the config section.
    pub write_keys: BTreeMap<String, String>,
    /// `label (fingerprint)` of every configured key.
    pub keys: BTreeSet<String>,
    /// Resource → stored counts.
    pub resources: BTreeMap<String, Stored>,
    /// The resources were read as the census of etcd (every resource stored), not only those
    /// the config named (atrest before 0.3) or `--resource` narrowed to.
    pub census: bool,
    /// `--resource` narrowed the scan to these.
    pub only: Vec<String>,
}

/// A resource's stored values in a report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    /// Stored values.
    pub total: u64,
    /// On the write key.
    pub on_write_key: u64,
    /// Objects that need attention: to rewrite, or unreadable (v2); not on the write key (v1).
    pub findings: u64,
    /// Undecryptable, unknown-key or corrupt: the apiserver cannot serve them (v2).
    pub unreadable: u64,
    /// Key label → stored values under it.
    pub by_key: BTreeMap<String, u64>,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A report's or a check's PASS, WARN or FAIL; anything else means the file is not a report.
fn status(v: &Value, what: &str) -> Result<Status, String> {
    serde_json::from_value(v.clone()).map_err(|_| format!("{what} is {v}, not PASS, WARN or FAIL"))
}

impl View {
    /// Reads a report of any supported schema.
    pub fn from_json(doc: &Value) -> Result<View, String> {
        let schema = text(&doc["schema"]);
        let v2 = match schema.as_str() {
            "atrest.report/v1" => false,
            "atrest.report/v2" => true,
            other => {
                return Err(format!(
                    "schema {other:?} is not an atrest report (atrest.report/v1 or /v2)"
                ));
            }
        };
        let mut view = View {
            generated_at: text(&doc["generated_at"]),
            outcome: status(&doc["verdict"], "verdict")?,
            config_path: text(&doc["config"]["path"]),
            config_sha256: text(&doc["config"]["sha256"]),
            census: doc["scope"]["scan"]["census"].as_bool().unwrap_or(false),
            only: doc["scope"]["scan"]["only"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect(),
            schema,
            ..Default::default()
        };
        for c in doc["checks"].as_array().into_iter().flatten() {
            let id = text(&c["id"]);
            let status = status(&c["status"], &format!("check {id}'s status"))?;
            view.checks.insert(id, (text(&c["title"]), status));
        }
        view.read_config_resources(doc);
        for r in doc["resources"].as_array().into_iter().flatten() {
            let stored = if v2 { stored_v2(r) } else { stored_v1(r) };
            view.resources.insert(text(&r["resource"]), stored);
        }
        Ok(view)
    }

    /// The config section's write key per resource and `label (fingerprint)` of every key.
    fn read_config_resources(&mut self, doc: &Value) {
        for r in doc["config"]["resources"].as_array().into_iter().flatten() {
            self.write_keys
                .insert(text(&r["resource"]), text(&r["write_key"]));
            for k in r["keys"].as_array().into_iter().flatten() {
                let fp = k["fingerprint"]
                    .as_str()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                self.keys.insert(format!("{}{fp}", text(&k["label"])));
            }
        }
    }
}

/// A v2 resource entry: verdict counts say what needs attention; keys map to per-state counts.
fn stored_v2(r: &Value) -> Stored {
    let verdicts: VerdictCounts = serde_json::from_value(r["verdicts"].clone()).unwrap_or_default();
    Stored {
        total: num(&r["total"]),
        on_write_key: num(&r["coverage"]["on_write_key"]),
        findings: verdicts.needing_attention(num(&r["needs_rewrite"])),
        unreadable: verdicts.unreadable(),
        by_key: r["keys"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, counts)| {
                let n = counts
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(_, n)| num(n))
                    .sum();
                (k.clone(), n)
            })
            .collect(),
    }
}

/// A v1 resource entry (atrest 0.1): anything off the write key is a finding; one count per key.
fn stored_v1(r: &Value) -> Stored {
    Stored {
        total: num(&r["total"]),
        on_write_key: num(&r["on_write_key"]),
        findings: num(&r["total"]).saturating_sub(num(&r["on_write_key"])),
        unreadable: 0,
        by_key: r["counts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| (k.clone(), num(n)))
            .collect(),
    }
}

/// One difference between two reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What changed, in one line.
    pub line: String,
    /// It is worse than before: the verdict or a check went towards FAIL, or more objects need
    /// attention.
    pub regression: bool,
}

/// Every difference, in the order an auditor reads them, each marked when it is a regression.
pub fn changes(a: &View, b: &View) -> Vec<Change> {
    let lines = diff(a, b);
    let mut out: Vec<Change> = lines
        .into_iter()
        .map(|line| Change {
            line,
            regression: false,
        })
        .collect();
    let mut mark = |prefix: String| {
        for c in out.iter_mut().filter(|c| c.line.starts_with(&prefix)) {
            c.regression = true;
        }
    };
    if b.outcome > a.outcome {
        mark("verdict:".into());
    }
    for (id, (_, status)) in &b.checks {
        let before = a.checks.get(id).map_or(Status::Pass, |(_, s)| *s);
        if *status > before {
            mark(format!("check {id} "));
        }
    }
    for (resource, r) in &b.resources {
        let before = a.resources.get(resource);
        let more_findings = r.findings > before.map_or(0, |o| o.findings);
        let more_unreadable = r.unreadable > before.map_or(0, |o| o.unreadable);
        if more_findings || more_unreadable {
            mark(format!("{resource}: "));
        }
    }
    for resource in a.resources.keys() {
        if !b.resources.contains_key(resource) && !narrowed_away(b, resource) {
            mark(format!("{resource}: no longer"));
        }
    }
    out
}

/// The later report was narrowed (`--resource`) to other resources: `resource` was not read.
fn narrowed_away(b: &View, resource: &str) -> bool {
    !b.only.is_empty() && !b.only.iter().any(|r| r == resource)
}

/// `identity 1202 plaintext, aescbc:key1 3`: how a resource's values are stored.
fn stored_as(r: &Stored) -> String {
    if r.by_key.is_empty() {
        return "nothing stored".to_string();
    }
    r.by_key
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per difference, in the order an auditor reads them.
pub fn diff(a: &View, b: &View) -> Vec<String> {
    let mut out = Vec::new();
    if a.outcome != b.outcome {
        out.push(format!("verdict: {} -> {}", a.outcome, b.outcome));
    }
    if a.config_sha256 != b.config_sha256 {
        out.push(format!(
            "config {}: {} -> {}",
            b.config_path, a.config_sha256, b.config_sha256
        ));
    }
    for (id, (title, status)) in &b.checks {
        match a.checks.get(id) {
            Some((_, old)) if old != status => {
                out.push(format!("check {id} ({title}): {old} -> {status}"))
            }
            None => out.push(format!("check {id} ({title}): new, {status}")),
            _ => {}
        }
    }
    for (resource, write) in &b.write_keys {
        match a.write_keys.get(resource) {
            Some(old) if old != write => {
                out.push(format!("{resource}: write key {old} -> {write}"))
            }
            None => out.push(format!("{resource}: newly covered, write key {write}")),
            _ => {}
        }
    }
    for k in b.keys.difference(&a.keys) {
        out.push(format!("key added: {k}"));
    }
    for k in a.keys.difference(&b.keys) {
        out.push(format!("key removed: {k}"));
    }
    for (resource, r) in &b.resources {
        if let Some(line) = resource_change(a, resource, r) {
            out.push(line);
        }
    }
    for (resource, old) in &a.resources {
        if !b.resources.contains_key(resource) {
            out.push(resource_gone(b, resource, old));
        }
    }
    out
}

/// The line for a resource of the later report, `None` when its counts did not change.
fn resource_change(a: &View, resource: &str, r: &Stored) -> Option<String> {
    Some(match a.resources.get(resource) {
        Some(old) if old == r => return None,
        Some(old) => format!(
            "{resource}: stored as {} -> {}; on write key {}/{} -> {}/{}{}",
            stored_as(old),
            stored_as(r),
            old.on_write_key,
            old.total,
            r.on_write_key,
            r.total,
            unreadable_change(old.unreadable, r.unreadable)
        ),
        None if a.census || r.total == 0 => format!(
            "{resource}: newly stored: {}; on write key {}/{}",
            stored_as(r),
            r.on_write_key,
            r.total
        ),
        None => format!(
            "{resource}: not in the earlier report (it read only the resources its config named); now stored as {}; on write key {}/{}",
            stored_as(r),
            r.on_write_key,
            r.total
        ),
    })
}

/// The line for a resource the later report lacks: narrowed away, or no longer stored.
fn resource_gone(b: &View, resource: &str, old: &Stored) -> String {
    if narrowed_away(b, resource) {
        format!("{resource}: not read by the later report (narrowed with --resource)")
    } else {
        format!(
            "{resource}: no longer reported (it held {}): it left the census, or the later report read less",
            stored_as(old)
        )
    }
}

fn unreadable_change(before: u64, after: u64) -> String {
    if before == after {
        String::new()
    } else {
        format!("; unreadable {before} -> {after}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Value {
        serde_json::json!({
            "schema": "atrest.report/v1", "generated_at": "2026-01-01T00:00:00Z", "verdict": "FAIL",
            "config": {"path": "/etc/k/enc.yaml", "sha256": "sha256:aa", "resources": [
                {"resource": "secrets", "write_key": "aescbc:key1",
                 "keys": [{"label": "aescbc:key1", "fingerprint": "sha256:11"}]}]},
            "checks": [{"id": "ATR-C04", "title": "t", "status": "FAIL"}],
            "resources": [{"resource": "secrets", "total": 10, "on_write_key": 4,
                           "counts": {"aescbc:key1": 4, "identity": 6}}]
        })
    }

    #[test]
    fn reads_v1_and_compares_with_v2() {
        let a = View::from_json(&v1()).unwrap();
        assert_eq!(a.resources["secrets"].by_key["identity"], 6);
        let b = View::from_json(&serde_json::json!({
            "schema": "atrest.report/v2", "generated_at": "2026-02-01T00:00:00Z", "verdict": "PASS",
            "config": {"path": "/etc/k/enc.yaml", "sha256": "sha256:bb", "resources": [
                {"resource": "secrets", "write_key": "aescbc:key2",
                 "keys": [{"label": "aescbc:key2", "fingerprint": "sha256:22"}]}]},
            "checks": [{"id": "ATR-C04", "title": "t", "status": "PASS"}],
            "resources": [{"resource": "secrets", "total": 10,
                           "coverage": {"on_write_key": 10},
                           "keys": {"aescbc:key2": {"on_write_key": 10}}}]
        }))
        .unwrap();
        let lines = diff(&a, &b);
        for want in [
            "verdict: FAIL -> PASS",
            "config /etc/k/enc.yaml: sha256:aa -> sha256:bb",
            "check ATR-C04 (t): FAIL -> PASS",
            "secrets: write key aescbc:key1 -> aescbc:key2",
            "key added: aescbc:key2 (sha256:22)",
            "key removed: aescbc:key1 (sha256:11)",
            "secrets: stored as aescbc:key1 4, identity 6 -> aescbc:key2 10; on write key 4/10 -> 10/10",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} not in {lines:#?}");
        }
        assert!(diff(&b, &b).is_empty());
        // v1 FAIL -> v2 PASS is an improvement; the other way round is a regression.
        assert!(
            changes(&a, &b).iter().all(|c| !c.regression),
            "{:#?}",
            changes(&a, &b)
        );
        let back = changes(&b, &a);
        for want in ["verdict:", "check ATR-C04 ", "secrets: stored as"] {
            assert!(
                back.iter()
                    .any(|c| c.regression && c.line.starts_with(want)),
                "{want} is a regression in {back:#?}"
            );
        }
        assert!(View::from_json(&serde_json::json!({"schema": "x"})).is_err());
    }

    fn census(resources: Value) -> Value {
        serde_json::json!({
            "schema": "atrest.report/v2", "generated_at": "t", "verdict": "PASS",
            "scope": {"scan": {"census": true, "prefix": "/registry/"}},
            "config": {"path": "/e.yaml", "sha256": "sha256:aa", "resources": []},
            "checks": [], "resources": resources
        })
    }

    #[test]
    fn leaving_the_census_or_becoming_unreadable_is_a_regression() {
        let a = View::from_json(&census(serde_json::json!([
            {"resource": "secrets", "total": 5, "coverage": {"on_write_key": 5},
             "keys": {"aescbc:k1": {"on_write_key": 5}}, "needs_rewrite": 0, "verdicts": {"on_write_key": 5}},
            {"resource": "configmaps", "total": 1202, "coverage": {"on_write_key": 0},
             "keys": {"identity": {"plaintext": 1202}}, "needs_rewrite": 0, "verdicts": {"plaintext": 1202}},
            {"resource": "widgets.example.com", "total": 3, "coverage": {"on_write_key": 3},
             "keys": {"aescbc:k1": {"on_write_key": 3}}, "needs_rewrite": 0, "verdicts": {"on_write_key": 3}}
        ])))
        .unwrap();
        // configmaps covered since (all on the write key); widgets unreadable; secrets gone.
        let b = View::from_json(&census(serde_json::json!([
            {"resource": "configmaps", "total": 41202, "coverage": {"on_write_key": 41202},
             "keys": {"aescbc:k1": {"on_write_key": 41202}}, "needs_rewrite": 0, "verdicts": {"on_write_key": 41202}},
            {"resource": "widgets.example.com", "total": 3, "coverage": {"on_write_key": 0},
             "keys": {"aescbc:k1": {"unknown_key": 3}}, "needs_rewrite": 0, "verdicts": {"unknown_key": 3}}
        ])))
        .unwrap();
        assert!(b.census);
        let got = changes(&a, &b);
        let line = |p: &str| {
            got.iter()
                .find(|c| c.line.starts_with(p))
                .unwrap_or_else(|| panic!("{p} in {got:#?}"))
        };
        let cm = line("configmaps: ");
        assert_eq!(
            cm.line,
            "configmaps: stored as identity 1202 -> aescbc:k1 41202; on write key 0/1202 -> 41202/41202"
        );
        assert!(!cm.regression, "newly covered is no regression");
        let w = line("widgets.example.com: ");
        assert!(
            w.regression && w.line.ends_with("unreadable 0 -> 3"),
            "{w:?}"
        );
        let s = line("secrets: no longer reported");
        assert!(s.regression, "{s:?}");
        // A later report narrowed with --resource did not read secrets: no regression.
        let mut narrowed = b.clone();
        narrowed.only = vec!["configmaps".into(), "widgets.example.com".into()];
        let got = changes(&a, &narrowed);
        let s = got
            .iter()
            .find(|c| c.line.starts_with("secrets: "))
            .unwrap();
        assert!(!s.regression && s.line.contains("narrowed"), "{s:?}");
    }
}
