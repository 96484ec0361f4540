//! The controls auditors cite for encryption at rest, and which of them each atrest check gives
//! evidence for: one table, shown in every report format, in OSCAL findings and in
//! `atrest report --help`. CIS numbers come from the benchmark that applies to the cluster's
//! Kubernetes release (kube-bench's `cfg/config.yaml` version mapping and `cfg/cis-*/master.yaml`).

use crate::kube::version::major_minor;

/// A control framework auditors cite.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Framework {
    /// CIS Kubernetes Benchmark (numbered per benchmark version).
    #[serde(rename = "CIS Kubernetes Benchmark")]
    Cis,
    /// NIST SP 800-53 Rev. 5.
    #[serde(rename = "NIST SP 800-53")]
    Nist,
    /// PCI DSS v4.0.
    #[serde(rename = "PCI DSS v4.0")]
    Pci,
    /// DISA Container Platform SRG.
    #[serde(rename = "DISA Container Platform SRG")]
    Disa,
}

impl Framework {
    /// Its short name, for tables (`CIS`, `NIST`, `PCI DSS`, `DISA`).
    pub fn short(self) -> &'static str {
        match self {
            Framework::Cis => "CIS",
            Framework::Nist => "NIST",
            Framework::Pci => "PCI DSS",
            Framework::Disa => "DISA",
        }
    }

    /// As reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Cis => "CIS Kubernetes Benchmark",
            Framework::Nist => "NIST SP 800-53",
            Framework::Pci => "PCI DSS v4.0",
            Framework::Disa => "DISA Container Platform SRG",
        }
    }
}

/// One control a check gives evidence for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Control {
    /// Which framework.
    pub framework: Framework,
    /// Its identifier there (`1.2.27`, `SC-28(1)`, `3.5.1`, `V-233220`).
    pub id: String,
    /// What it asks, in a few words.
    pub title: String,
}

/// A CIS recommendation about encryption at rest, numbered differently in each benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CisRule {
    /// "Ensure that the --encryption-provider-config argument is set as appropriate".
    ConfigSet,
    /// "Ensure that encryption providers are appropriately configured".
    ProvidersConfigured,
}

/// The CIS Kubernetes Benchmark that applies to a Kubernetes release.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CisBenchmark {
    /// kube-bench's name of it (`cis-1.12`).
    pub version: String,
    /// The Kubernetes releases it was written for (`1.32–1.34`).
    pub releases: String,
    /// The cluster's release is newer than any the published benchmarks map: the newest applies
    /// until a newer one is published.
    pub newest_for_a_newer_release: bool,
    /// Its number for "--encryption-provider-config is set".
    pub config_set: String,
    /// Its number for "encryption providers are appropriately configured".
    pub providers_configured: String,
}

/// kube-bench's version mapping (newest last): the last Kubernetes minor each benchmark
/// covers, its name, its releases, and its two numbers.
const CIS: &[(u32, &str, &str, &str, &str)] = &[
    (15, "cis-1.5", "1.15", "1.2.33", "1.2.34"),
    (18, "cis-1.6", "1.16–1.18", "1.2.33", "1.2.34"),
    (21, "cis-1.20", "1.19–1.21", "1.2.32", "1.2.33"),
    (23, "cis-1.23", "1.22–1.23", "1.2.30", "1.2.31"),
    (24, "cis-1.24", "1.24", "1.2.29", "1.2.30"),
    (25, "cis-1.7", "1.25", "1.2.29", "1.2.30"),
    (26, "cis-1.8", "1.26", "1.2.28", "1.2.29"),
    (27, "cis-1.9", "1.27", "1.2.27", "1.2.28"),
    (28, "cis-1.10", "1.28", "1.2.27", "1.2.28"),
    (31, "cis-1.11", "1.29–1.31", "1.2.27", "1.2.28"),
    (34, "cis-1.12", "1.32–1.34", "1.2.27", "1.2.28"),
];

/// The benchmark for Kubernetes 1.`minor` (`None`: unknown release: the newest is used).
pub fn cis_benchmark(minor: Option<u32>) -> CisBenchmark {
    let newest = CIS[CIS.len() - 1];
    let row = match minor {
        Some(m) => CIS.iter().find(|r| m <= r.0).copied().unwrap_or(newest),
        None => newest,
    };
    CisBenchmark {
        version: row.1.to_string(),
        releases: row.2.to_string(),
        newest_for_a_newer_release: minor.is_none_or(|m| m > newest.0),
        config_set: row.3.to_string(),
        providers_configured: row.4.to_string(),
    }
}

/// The benchmark for the cluster whose `apiservers` these are: by the oldest Kubernetes release
/// they answered with (the newest benchmark when none answered).
pub fn cis_of(apiservers: &[super::ApiserverView]) -> CisBenchmark {
    let minor = apiservers
        .iter()
        .filter_map(|a| a.version.as_deref())
        .filter_map(major_minor)
        .filter(|(major, _)| *major == 1)
        .map(|(_, minor)| minor)
        .min();
    cis_benchmark(minor)
}

/// What each framework's control asks, in a few words.
const TITLES: &[(&str, &str)] = &[
    ("SC-28", "Protection of information at rest"),
    (
        "SC-28(1)",
        "Protection of information at rest: cryptographic protection",
    ),
    ("SC-12", "Cryptographic key establishment and management"),
    (
        "SC-12(1)",
        "Cryptographic key establishment and management: availability",
    ),
    ("3.5.1", "Stored account data is rendered unreadable"),
    ("3.6.1", "Cryptographic keys are protected"),
    (
        "3.7.1",
        "Key-management procedures: generation of strong keys",
    ),
    (
        "3.7.2",
        "Key-management procedures: secure key distribution",
    ),
    ("3.7.4", "Key changes at the end of the cryptoperiod"),
    (
        "3.7.6",
        "Split knowledge and dual control for manual cleartext key operations",
    ),
    ("3.7.5", "Retirement or replacement of keys"),
    (
        "V-233220",
        "Protect information at rest with cryptography (SC-28(1))",
    ),
];

fn title(id: &str) -> String {
    TITLES
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

/// A check and the controls it gives evidence for: CIS rules (numbered per benchmark), NIST
/// SP 800-53, PCI DSS v4.0, and whether DISA SRG V-233220.
type Mapping = (
    &'static str,
    &'static [CisRule],
    &'static [&'static str],
    &'static [&'static str],
    bool,
);

/// Which controls each check gives evidence for (CIS rules resolved per benchmark).
const MAP: &[Mapping] = &[
    // (check, CIS rules, NIST, PCI DSS, DISA V-233220)
    (
        "ATR-C01",
        &[CisRule::ConfigSet],
        &["SC-28"],
        &["3.5.1"],
        true,
    ),
    (
        "ATR-C02",
        &[CisRule::ProvidersConfigured],
        &["SC-28", "SC-28(1)"],
        &["3.5.1"],
        true,
    ),
    // The same config, so the same keys, reached every apiserver (key distribution).
    (
        "ATR-C03",
        &[CisRule::ConfigSet],
        &["SC-28"],
        &["3.7.2"],
        false,
    ),
    (
        "ATR-C04",
        &[CisRule::ProvidersConfigured],
        &["SC-28(1)", "SC-12"],
        &["3.5.1", "3.7.4"],
        true,
    ),
    (
        "ATR-C05",
        &[CisRule::ProvidersConfigured],
        &["SC-28", "SC-28(1)"],
        &["3.5.1"],
        true,
    ),
    ("ATR-C06", &[], &["SC-12(1)"], &["3.6.1"], false),
    ("ATR-C07", &[], &["SC-12"], &["3.7.4"], false),
    (
        "ATR-C08",
        &[CisRule::ProvidersConfigured],
        &["SC-28"],
        &["3.5.1"],
        true,
    ),
    // Keys of a valid length for their provider, no weak provider, the file only its owner's.
    (
        "ATR-C09",
        &[CisRule::ProvidersConfigured],
        &["SC-12"],
        &["3.6.1", "3.7.1", "3.7.2"],
        false,
    ),
    ("ATR-C10", &[], &["SC-12"], &["3.7.4"], false),
    (
        "ATR-C11",
        &[],
        &["SC-28", "SC-12"],
        &["3.5.1", "3.7.5"],
        false,
    ),
    ("ATR-C12", &[], &["SC-28"], &["3.5.1"], false),
    // Retired keys sealed to custodians (K of N: split knowledge), stored in the fewest places.
    ("ATR-C13", &[], &["SC-12"], &["3.6.1", "3.7.6"], false),
    // An old backup still opens: the keys stayed available.
    ("ATR-C14", &[], &["SC-12(1)"], &["3.6.1"], false),
];

/// The controls check `check` gives evidence for, with CIS numbered as in `cis`.
pub fn controls(check: &str, cis: &CisBenchmark) -> Vec<Control> {
    let Some((_, rules, nist, pci, disa)) = MAP.iter().find(|r| r.0 == check) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in *rules {
        let (id, title) = match r {
            CisRule::ConfigSet => (
                &cis.config_set,
                "Ensure that the --encryption-provider-config argument is set as appropriate",
            ),
            CisRule::ProvidersConfigured => (
                &cis.providers_configured,
                "Ensure that encryption providers are appropriately configured",
            ),
        };
        out.push(Control {
            framework: Framework::Cis,
            id: id.clone(),
            title: title.to_string(),
        });
    }
    for (framework, ids) in [(Framework::Nist, *nist), (Framework::Pci, *pci)] {
        out.extend(ids.iter().map(|id| Control {
            framework,
            id: id.to_string(),
            title: title(id),
        }));
    }
    if *disa {
        out.push(Control {
            framework: Framework::Disa,
            id: "V-233220".into(),
            title: title("V-233220"),
        });
    }
    out
}

/// `CIS 1.2.27 · NIST SC-28 · PCI DSS 3.5.1`: how tables cite a check's controls.
pub fn cited(controls: &[Control]) -> String {
    controls
        .iter()
        .map(|c| format!("{} {}", c.framework.short(), c.id))
        .collect::<Vec<_>>()
        .join(" · ")
}

impl CisBenchmark {
    /// `CIS Kubernetes Benchmark cis-1.12 (Kubernetes 1.32–1.34)`, and when the cluster is newer
    /// than any benchmark, that the newest applies until a newer one is published.
    pub fn statement(&self) -> String {
        let mut s = format!(
            "CIS numbers are those of the CIS Kubernetes Benchmark {} (Kubernetes {})",
            self.version, self.releases
        );
        if self.newest_for_a_newer_release {
            s.push_str(", the newest published: the cluster's release is newer than any benchmark maps, or its release is unknown");
        }
        s
    }
}

/// The checks atrest has, for tables of the mapping.
pub fn mapped_checks() -> impl Iterator<Item = &'static str> {
    MAP.iter().map(|r| r.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cis_numbers_follow_the_benchmark_of_the_release() {
        let b = cis_benchmark(Some(26));
        assert_eq!(
            (b.version.as_str(), b.config_set.as_str()),
            ("cis-1.8", "1.2.28")
        );
        let b = cis_benchmark(Some(34));
        assert_eq!(b.version, "cis-1.12");
        assert!(!b.newest_for_a_newer_release);
        let b = cis_benchmark(Some(37));
        assert_eq!(b.version, "cis-1.12");
        assert!(b.newest_for_a_newer_release);
        let c = controls("ATR-C01", &cis_benchmark(Some(34)));
        assert_eq!(c[0].id, "1.2.27");
        assert!(
            c.iter()
                .any(|c| c.framework == Framework::Disa && c.id == "V-233220")
        );
    }

    #[test]
    fn every_check_maps_to_a_nist_control_with_a_title() {
        let cis = cis_benchmark(Some(34));
        for check in mapped_checks() {
            let c = controls(check, &cis);
            assert!(c.iter().any(|c| c.framework == Framework::Nist), "{check}");
            assert!(c.iter().all(|c| !c.title.is_empty()), "{check}: {c:?}");
        }
    }

    /// The README's control table is this table (CIS as in cis-1.12), row by row.
    #[test]
    fn the_readme_table_is_the_library_table() {
        let readme = include_str!("../../README.md");
        let cis = cis_benchmark(Some(34));
        let rows: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("| ATR-C"))
            .collect();
        assert_eq!(
            rows.len(),
            mapped_checks().count(),
            "one README row per check"
        );
        for row in rows {
            let cols: Vec<&str> = row.split('|').map(str::trim).collect();
            let check = &cols[1][..7];
            let c = controls(check, &cis);
            let ids = |f: Framework| {
                c.iter()
                    .filter(|c| c.framework == f)
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            assert_eq!(cols[2], ids(Framework::Cis), "{check} CIS");
            assert_eq!(cols[3], ids(Framework::Nist), "{check} NIST");
            assert_eq!(cols[4], ids(Framework::Pci), "{check} PCI DSS");
            assert_eq!(cols[5], ids(Framework::Disa), "{check} DISA");
        }
    }
}
