//! The exposition: every `atrest_*` series as a pure function of what the last scan found, the
//! rotation state, the apiservers' answers and the policy. Both the daemon (`atrest exporter`)
//! and the one-shot `atrest scan --textfile` render through [`render`], so the two say the same.
//!
//! Counts come from the scan's exact counters ([`ResourceReport::keys`]), never from its capped
//! samples. Labels carry resource names, key labels and fingerprints only: never key material.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::keys::fingerprint;
use crate::model::KeyProvider;
use crate::model::census::{ResourceReport, ScanReport};
use crate::model::{KeyLabel, Verdict, plaintext_is_finding};
use crate::report::{ApiserverSurvey, Policy};
use crate::state::KeyRecord;

/// The `Content-Type` of [`render`]'s output (Prometheus text format 0.0.4, which both
/// Prometheus and node_exporter's textfile collector read).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A successful scan and what it was read against.
#[derive(Clone, Debug)]
pub struct GoodScan {
    /// What the scan found (samples may be empty: only the counts are exported).
    pub report: ScanReport,
    /// `sha256:<hex>` of the config file the scan classified with.
    pub config_hash: String,
    /// How long the scan took.
    pub duration_seconds: f64,
    /// When it finished.
    pub finished: DateTime<Utc>,
}

/// When and at which etcd revision this exporter first saw a key as a write key: the fallback
/// for key age and the aesgcm write estimate when the rotation state has no record of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstSeen {
    /// When.
    pub at: DateTime<Utc>,
    /// etcd's revision then (the revision of the scan that saw it).
    pub revision: i64,
}

/// What a render is made of.
#[derive(Clone, Copy, Debug)]
pub struct SeriesInputs<'a> {
    /// The last good scan (`None` until one succeeds: then only the health series are shown).
    pub scan: Option<&'a GoodScan>,
    /// What each apiserver reported (`None` when they could not be asked).
    pub apiservers: Option<&'a ApiserverSurvey>,
    /// The rotation state's key records (label → dates, promote revision).
    pub keys: &'a BTreeMap<KeyLabel, KeyRecord>,
    /// Write keys this exporter has seen, with when (for keys the state does not know).
    pub first_seen: &'a BTreeMap<KeyLabel, FirstSeen>,
    /// The audit policy: what is required, the key age and aesgcm write limits.
    pub policy: &'a Policy,
    /// Failed scans since the exporter started; `None` for a one-shot textfile (no counter).
    pub scan_failures: Option<u64>,
    /// A scan is running now (its result is not in yet); `None` for a one-shot textfile.
    pub scan_in_progress: Option<bool>,
}

type Labels = Vec<(&'static str, String)>;

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge<i64>> {
    let f = Family::<Labels, Gauge<i64>>::default();
    reg.register(name, help, f.clone());
    f
}

fn float_gauge(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    reg.register(name, help, g);
}

fn int_gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

/// Since when the write key `label` is in use, and why we think so: the rotation state's
/// promote (else add) date, else when this exporter first saw it.
fn in_use_since(inp: &SeriesInputs<'_>, label: &KeyLabel) -> Option<DateTime<Utc>> {
    inp.keys
        .get(label)
        .and_then(KeyRecord::in_use_since)
        .or_else(|| inp.first_seen.get(label).map(|f| f.at))
}

/// An upper bound of the writes an aesgcm write key has made: the etcd revisions since it
/// became the write key (every etcd write raises the revision by one, whatever it writes), from
/// the promote revision the rotation state records, else from the revision this exporter first
/// saw it at (then a bound only of the writes since). `(estimate, basis)`.
pub fn aesgcm_writes_estimate(
    label: &KeyLabel,
    revision: i64,
    keys: &BTreeMap<KeyLabel, KeyRecord>,
    first_seen: &BTreeMap<KeyLabel, FirstSeen>,
) -> Option<(u64, &'static str)> {
    let (base, basis) = match keys.get(label).and_then(|k| k.promoted_revision) {
        Some(r) => (r, "promote_revision"),
        None => (first_seen.get(label)?.revision, "first_seen_revision"),
    };
    Some((revision.saturating_sub(base).max(0) as u64, basis))
}

/// The distinct write keys of the scanned resources, in label order.
pub fn write_keys(report: &ScanReport) -> BTreeSet<KeyLabel> {
    report
        .resources
        .iter()
        .map(|r| r.write_key.clone())
        .collect()
}

fn stored_objects(fam: &Family<Labels, Gauge<i64>>, r: &ResourceReport) {
    // Every state of every key present (and of the write key), so a series drops to 0 rather
    // than vanishing when the last such object is rewritten.
    let mut labels: Vec<&KeyLabel> = r.keys.keys().collect();
    if !r.keys.contains_key(&r.write_key) {
        labels.push(&r.write_key);
    }
    for label in labels {
        let counts = r.keys.get(label).copied().unwrap_or_default();
        for v in Verdict::ALL {
            fam.get_or_create(&vec![
                ("resource", r.resource.clone()),
                ("key", label.to_string()),
                ("state", v.as_str().to_string()),
            ])
            .set(counts.get(v) as i64);
        }
    }
}

/// Renders every series in the Prometheus text format.
pub fn render(inp: &SeriesInputs<'_>) -> String {
    let mut reg = Registry::default();
    let policy = inp.policy;
    int_gauge(
        &mut reg,
        "atrest_policy_max_key_age_seconds",
        "The policy's maxKeyAgeDays, in seconds: a write key older than this is due for rotation",
        i64::from(policy.max_key_age_days) * 86_400,
    );
    int_gauge(
        &mut reg,
        "atrest_policy_aesgcm_max_writes",
        "The policy's aesgcmMaxWrites: an aesgcm write key is due for rotation after this many writes",
        policy.aesgcm_max_writes.min(i64::MAX as u64) as i64,
    );
    if let Some(failures) = inp.scan_failures {
        let c = Counter::<u64>::default();
        c.inc_by(failures);
        reg.register(
            "atrest_scan_failures",
            "Scans that failed since the exporter started (etcd unreachable, config unreadable)",
            c,
        );
    }
    if let Some(running) = inp.scan_in_progress {
        int_gauge(
            &mut reg,
            "atrest_scan_in_progress",
            "1 while a scan runs (the values shown are still the last good scan's), else 0",
            i64::from(running),
        );
    }
    if let Some(s) = inp.scan {
        scan_series(&mut reg, inp, s);
    }
    if let Some(a) = inp.apiservers {
        let info = gauge_family(
            &mut reg,
            "atrest_apiserver_config_info",
            "1 per apiserver, labelled with the hash of the encryption config it reports having loaded (empty: it reports none)",
        );
        for v in &a.apiservers {
            info.get_or_create(&vec![
                ("apiserver", v.name.clone()),
                ("hash", v.config_hash.clone().unwrap_or_default()),
            ])
            .set(1);
        }
        int_gauge(
            &mut reg,
            "atrest_apiservers_converged",
            "1 when every apiserver reports the config file's hash and none is missing, else 0",
            i64::from(a.converged),
        );
    }
    let mut text = String::new();
    // Writing into a String cannot fail; an error here would be a bug in the encoder.
    prometheus_text::encode(&mut text, &reg).expect("encoding into a String");
    text
}

/// The series of a good scan, in their registration (and so exposition) order.
fn scan_series(reg: &mut Registry, inp: &SeriesInputs<'_>, s: &GoodScan) {
    scan_info_series(reg, s);
    resource_series(reg, inp, &s.report);
    finding_series(reg, &s.report);
    write_key_series(reg, inp, s);
}

/// When, at which revision and against which config file the last good scan ran.
fn scan_info_series(reg: &mut Registry, s: &GoodScan) {
    int_gauge(
        reg,
        "atrest_scan_revision",
        "The etcd revision the last good scan read every value at",
        s.report.revision,
    );
    float_gauge(
        reg,
        "atrest_scan_duration_seconds",
        "How long the last good scan took",
        s.duration_seconds,
    );
    float_gauge(
        reg,
        "atrest_last_scan_success_timestamp_seconds",
        "When the last good scan finished (Unix time)",
        s.finished.timestamp_millis() as f64 / 1000.0,
    );
    let config = gauge_family(
        reg,
        "atrest_config_info",
        "1, labelled with the hash of the EncryptionConfiguration file the last good scan classified with",
    );
    config
        .get_or_create(&vec![("hash", s.config_hash.clone())])
        .set(1);
}

/// Per resource: stored objects by key and state, the write key, whether plaintext is a
/// finding, and the KMS v2 key IDs.
fn resource_series(reg: &mut Registry, inp: &SeriesInputs<'_>, report: &ScanReport) {
    let stored = gauge_family(
        reg,
        "atrest_stored_objects",
        "Objects stored in etcd per resource, stored key (identity for plaintext) and state, exactly as `atrest scan -o json` counts them",
    );
    let write = gauge_family(
        reg,
        "atrest_write_key_info",
        "1 per resource, labelled with the key new writes of it get",
    );
    let expected = gauge_family(
        reg,
        "atrest_encryption_expected",
        "1 when plaintext of this resource is a finding (its write key encrypts, or the policy requires encryption), else 0",
    );
    let kms = gauge_family(
        reg,
        "atrest_kms_stored_objects",
        "KMS v2 values per resource and key ID (as sha256: and the first 16 hex digits of the key ID's SHA-256)",
    );
    for r in &report.resources {
        stored_objects(&stored, r);
        write
            .get_or_create(&vec![
                ("resource", r.resource.clone()),
                ("key", r.write_key.to_string()),
            ])
            .set(1);
        expected
            .get_or_create(&vec![("resource", r.resource.clone())])
            .set(i64::from(plaintext_is_finding(
                r.encrypts,
                inp.policy.requires(&r.resource),
            )));
        for (id, n) in &r.kms_key_ids {
            kms.get_or_create(&vec![
                ("resource", r.resource.clone()),
                ("key_id", fingerprint(id.as_bytes())),
            ])
            .set(*n as i64);
        }
    }
}

/// The scan's findings, counted per kind, level and resource.
fn finding_series(reg: &mut Registry, report: &ScanReport) {
    let findings = gauge_family(
        reg,
        "atrest_findings",
        "What the last good scan found, as `atrest scan` judges it: objects (or copies) per finding kind, level (fail: `atrest scan` exits 1; warn) and resource (empty when not about one resource)",
    );
    for f in &report.findings {
        findings
            .get_or_create(&vec![
                ("kind", f.kind.as_str().to_string()),
                ("level", f.level.as_str().to_string()),
                ("resource", f.resource.clone().unwrap_or_default()),
            ])
            .inc_by(f.count.min(i64::MAX as u64) as i64);
    }
}

/// Each encrypting write key's age and, for aesgcm keys, the bound of the writes it made.
fn write_key_series(reg: &mut Registry, inp: &SeriesInputs<'_>, s: &GoodScan) {
    let report = &s.report;
    let age = gauge_family(
        reg,
        "atrest_key_age_seconds",
        "Seconds since the write key became the write key (rotation state), else since this exporter first saw it; as of the last good scan",
    );
    let writes = gauge_family(
        reg,
        "atrest_aesgcm_writes_estimate",
        "Upper bound of the writes made with an aesgcm write key: etcd revisions since it was promoted (basis promote_revision), else since this exporter first saw it (basis first_seen_revision)",
    );
    for label in write_keys(report).iter().filter(|l| l.encrypts()) {
        if let Some(since) = in_use_since(inp, label) {
            let secs = (s.finished - since).num_seconds().max(0);
            age.get_or_create(&vec![("key", label.to_string())])
                .set(secs);
        }
        let aesgcm = matches!(
            label,
            KeyLabel::Key {
                provider: KeyProvider::Aesgcm,
                ..
            }
        );
        if !aesgcm {
            continue;
        }
        if let Some((n, basis)) =
            aesgcm_writes_estimate(label, report.revision, inp.keys, inp.first_seen)
        {
            writes
                .get_or_create(&vec![("key", label.to_string()), ("basis", basis.into())])
                .set(n.min(i64::MAX as u64) as i64);
        }
    }
}

#[cfg(test)]
mod tests;
