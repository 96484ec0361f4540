//! The report as an OSCAL assessment-results document (OSCAL 1.1.2 JSON), for compliance
//! tooling: one result per report; each check an observation with its evidence (counts,
//! revisions, hashes — never values or keys); one finding per control the checks give evidence
//! for ([`super::controls`]), satisfied unless a check mapped to it fails; the subjects are the
//! etcd cluster, each apiserver and the config file.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::controls::{CisBenchmark, Control, Framework, controls};
use super::{Report, Status};

/// The OSCAL version the document follows.
pub const OSCAL_VERSION: &str = "1.1.2";

/// A random (version 4) UUID, as OSCAL requires for every identifier.
fn uuid() -> String {
    let mut b = [0u8; 16];
    // The kernel's random source does not fail once the system has booted; should it, the
    // identifiers are still well-formed (uniqueness is all OSCAL asks of them).
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The control's identifier in the document: NIST controls as NIST's catalog spells them
/// (`sc-28.1`), the others prefixed by their framework (`cis-1.12-1.2.27`, `pci-dss-4.0-3.5.1`,
/// `disa-srg-V-233220`).
pub fn control_id(c: &Control, cis: &CisBenchmark) -> String {
    match c.framework {
        Framework::Nist => c.id.to_lowercase().replace('(', ".").replace(')', ""),
        Framework::Cis => format!("{}-{}", cis.version, c.id),
        Framework::Pci => format!("pci-dss-4.0-{}", c.id),
        Framework::Disa => format!("disa-srg-{}", c.id),
    }
}

fn prop(name: &str, value: impl ToString) -> Value {
    json!({"name": name, "ns": "https://github.com/atrest/atrest", "value": value.to_string()})
}

/// The subjects: the etcd cluster, each apiserver, and the config file.
fn components(r: &Report) -> (Vec<Value>, Vec<Value>) {
    let mut comps = Vec::new();
    let mut subjects = Vec::new();
    let mut add = |title: String, description: String, props: Vec<Value>| {
        let id = uuid();
        comps.push(json!({
            "uuid": id, "type": "service", "title": title, "description": description,
            "props": props, "status": {"state": "operational"},
        }));
        subjects.push(json!({"subject-uuid": id, "type": "component"}));
    };
    add(
        format!("etcd cluster {}", r.etcd.cluster_id),
        format!("etcd read at revision {}", r.etcd.revision),
        vec![
            prop("etcd-cluster-id", &r.etcd.cluster_id),
            prop("etcd-revision", r.etcd.revision),
        ],
    );
    for a in &r.apiservers {
        add(
            format!("kube-apiserver {}", a.name),
            format!("reports {}", a.reported),
            vec![prop("apiserver", &a.name)],
        );
    }
    add(
        format!("EncryptionConfiguration {}", r.config.path.display()),
        "the kube-apiserver encryption provider config".into(),
        vec![prop("config-sha256", &r.config.sha256)],
    );
    (comps, subjects)
}

/// Control id → the worst status of the checks mapped to it, the control, and their
/// observations.
type ByControl = BTreeMap<String, (Status, Control, Vec<String>)>;

/// Each check as an observation of every subject, and the controls the checks give evidence for.
fn observations(r: &Report, cis: &CisBenchmark, subjects: &[Value]) -> (Vec<Value>, ByControl) {
    let mut observations = Vec::new();
    let mut by_control = ByControl::new();
    for c in &r.checks {
        let obs = uuid();
        let evidence: Vec<Value> = c
            .evidence
            .iter()
            .map(|e| json!({"description": e}))
            .collect();
        observations.push(json!({
            "uuid": obs,
            "title": format!("{} {}", c.id, c.title),
            "description": format!("{}: {}", c.id, c.status.as_str()),
            "props": [prop("check", &c.id), prop("status", c.status.as_str())],
            "methods": ["TEST"],
            "types": ["control-objective"],
            "subjects": subjects,
            "relevant-evidence": if evidence.is_empty() { vec![json!({"description": "no evidence recorded"})] } else { evidence },
            "collected": r.generated_at,
        }));
        for control in controls(&c.id, cis) {
            let entry = by_control
                .entry(control_id(&control, cis))
                .or_insert_with(|| (Status::Pass, control.clone(), Vec::new()));
            entry.0 = entry.0.max(c.status);
            entry.2.push(obs.clone());
        }
    }
    (observations, by_control)
}

/// The whole report as an OSCAL assessment-results document, controls numbered per `cis`.
pub fn render(r: &Report, cis: &CisBenchmark) -> Value {
    let (components, subjects) = components(r);
    let (observations, by_control) = observations(r, cis, &subjects);
    let findings: Vec<Value> = by_control
        .iter()
        .map(|(id, (status, control, obs))| {
            let (state, reason) = match status {
                Status::Fail => ("not-satisfied", "fail"),
                Status::Warn => ("satisfied", "other"),
                Status::Pass => ("satisfied", "pass"),
            };
            json!({
                "uuid": uuid(),
                "title": format!("{} {}", control.framework.as_str(), control.id),
                "description": control.title,
                "props": [prop("framework", control.framework.as_str()), prop("atrest-status", status.as_str())],
                "target": {
                    "type": "objective-id",
                    "target-id": id,
                    "status": {"state": state, "reason": reason},
                },
                "related-observations": obs.iter().map(|o| json!({"observation-uuid": o})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let nist: Vec<Value> = by_control
        .iter()
        .filter(|(_, (_, c, _))| c.framework == Framework::Nist)
        .map(|(id, _)| json!({"control-id": id}))
        .collect();
    json!({
        "assessment-results": {
            "uuid": uuid(),
            "metadata": {
                "title": format!("Encryption at rest audit: {}", r.result),
                "last-modified": r.generated_at,
                "version": format!("atrest {}", r.atrest_version),
                "oscal-version": OSCAL_VERSION,
                "props": [prop("cis-benchmark", &cis.version), prop("host", &r.host)],
            },
            "import-ap": {"href": "https://github.com/atrest/atrest#assessment-plan"},
            "local-definitions": {},
            "results": [{
                "uuid": uuid(),
                "title": format!("atrest report: {}", r.result),
                "description": format!(
                    "Every stored value etcd holds, read at revision {}, judged against the config {} and the policy.",
                    r.etcd.revision, r.config.sha256
                ),
                "start": r.generated_at,
                "end": r.generated_at,
                "props": [prop("verdict", r.outcome.as_str())],
                "local-definitions": {"components": components},
                "reviewed-controls": {"control-selections": [{"include-controls": nist}]},
                "observations": observations,
                "findings": findings,
            }],
        }
    })
}
