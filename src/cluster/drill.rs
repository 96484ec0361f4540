//! The restore drill: proves that an etcd backup can still be restored and read. The snapshot
//! is restored into a scratch folder with the node's `etcdutl` (which checks its integrity, as
//! a real restore would), nothing is started, and the restored db file is scanned offline with
//! every value decrypted by the config plus every key in custody (the archive, sealed or not,
//! and the config backups). Evidence for NIST SC-12(1): the keys stay available.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ClusterError, Context, ScanRequest};
use crate::model::census::{KeySource, ObjectRef, ScanReport};
use crate::model::{KeyLabel, Verdict};

/// The JSON schema of a drill result (`atrest drill --out`, `report --drill`).
pub const DRILL_SCHEMA: &str = "atrest.drill/v1";

/// What to drill.
#[derive(Clone, Debug, Default)]
pub struct DrillRequest {
    /// The etcd snapshot (`etcdctl snapshot save`).
    pub snapshot: PathBuf,
    /// The `etcdutl` to restore with (default: `etcdutl` on the PATH).
    pub etcdutl: Option<PathBuf>,
    /// What the scan reads keys from: state folder, `--key-archive`, identities, shares.
    pub scan: ScanRequest,
}

/// One key the snapshot's values are stored under.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DrillKey {
    /// `aescbc:key1`, `identity`.
    pub label: KeyLabel,
    /// Values stored under it.
    pub values: u64,
    /// Of them, values that did not open.
    pub unopened: u64,
    /// Where the key was found (config, archive, missing, KMS, none).
    pub source: KeySource,
    /// Its fingerprints, when a local key was found.
    pub fingerprints: Vec<String>,
}

/// The outcome of a drill.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DrillResult {
    /// [`DRILL_SCHEMA`].
    pub schema: String,
    /// When it ran (RFC 3339).
    pub at: String,
    /// The snapshot: path, size, sha256, revision.
    pub snapshot: crate::model::census::DbInfo,
    /// The etcdutl that restored it, and its version line.
    pub restored_with: String,
    /// Every value read.
    pub values: u64,
    /// Values that did not open (undecryptable, corrupt, under a key found nowhere, or under a
    /// KMS key no plugin was asked for).
    pub unopened: u64,
    /// Per key.
    pub keys: Vec<DrillKey>,
    /// Some of the values that did not open (`showing N of M`).
    pub unopened_sample: Vec<ObjectRef>,
    /// `PASS` when every value opened, else `FAIL`.
    pub result: String,
}

impl DrillResult {
    /// A result written by `atrest drill --out`.
    pub fn load(path: &Path) -> Result<DrillResult, DrillError> {
        let err = |message: String| DrillError::Read {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let r: DrillResult = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if r.schema != DRILL_SCHEMA {
            return Err(err(format!(
                "schema {:?}, expected {DRILL_SCHEMA}",
                r.schema
            )));
        }
        Ok(r)
    }

    /// Every value opened.
    pub fn passed(&self) -> bool {
        self.unopened == 0
    }

    /// The drill's result out of the offline scan of the restored file.
    fn of(scan: &ScanReport, restored_with: String) -> Option<DrillResult> {
        let section = scan.snapshot.as_ref()?;
        let mut unopened = 0;
        let mut sample = Vec::new();
        for r in &scan.resources {
            let v = &r.verdicts;
            unopened += v.undecryptable
                + v.corrupt
                + v.unknown_key.saturating_sub(r.outside_config)
                + r.unverified;
            for verdict in [
                Verdict::Undecryptable,
                Verdict::Corrupt,
                Verdict::UnknownKey,
            ] {
                if let Some(s) = r.sample(verdict) {
                    sample.extend(s.objects.iter().take(20).cloned());
                }
            }
        }
        let keys = section
            .keys_needed
            .iter()
            .map(|k| {
                let counts = scan
                    .resources
                    .iter()
                    .filter_map(|r| r.keys.get(&k.label))
                    .fold((0, 0, 0), |a, c| {
                        (
                            a.0 + c.total(),
                            a.1 + c.undecryptable + c.corrupt,
                            a.2 + c.unknown_key,
                        )
                    });
                let lost = match k.source {
                    KeySource::Missing => counts.2,
                    _ => 0,
                };
                DrillKey {
                    label: k.label.clone(),
                    values: counts.0,
                    unopened: counts.1 + lost,
                    source: k.source,
                    fingerprints: k.fingerprints.clone(),
                }
            })
            .collect();
        let values = scan.resources.iter().map(|r| r.total).sum();
        Some(DrillResult {
            schema: DRILL_SCHEMA.into(),
            at: crate::model::time::format(&chrono::Utc::now()),
            snapshot: section.file.clone(),
            restored_with,
            values,
            unopened,
            keys,
            unopened_sample: if unopened > 0 { sample } else { Vec::new() },
            result: if unopened == 0 { "PASS" } else { "FAIL" }.into(),
        })
    }
}

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// etcdutl could not be run.
    #[error("cannot run {etcdutl}: {message} (install etcdutl, or name it with --etcdutl)")]
    Etcdutl {
        /// The program.
        etcdutl: String,
        /// Why.
        message: String,
    },
    /// The snapshot did not restore.
    #[error("{snapshot} does not restore: etcdutl snapshot restore said: {stderr}")]
    Restore {
        /// The snapshot.
        snapshot: PathBuf,
        /// etcdutl's message.
        stderr: String,
    },
    /// The scratch folder could not be made.
    #[error("cannot make a scratch folder for the restore: {0}")]
    Scratch(std::io::Error),
    /// Reading the restored file failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A drill result given to the report does not read.
    #[error(
        "cannot read drill result {path}: {message} (write one with `atrest drill --out FILE`)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl Context {
    /// Restores `req.snapshot` into a scratch folder (removed afterwards) and proves every value
    /// opens with the keys atrest can find.
    pub async fn drill(&self, req: &DrillRequest) -> Result<DrillResult, DrillError> {
        let etcdutl = req
            .etcdutl
            .clone()
            .unwrap_or_else(|| PathBuf::from("etcdutl"));
        let version = run(&etcdutl, &["version"])?;
        let scratch = tempfile::Builder::new()
            .prefix("atrest-drill-")
            .tempdir()
            .map_err(DrillError::Scratch)?;
        let data = scratch.path().join("etcd");
        let out = Command::new(&etcdutl)
            .arg("snapshot")
            .arg("restore")
            .arg(&req.snapshot)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .map_err(|e| DrillError::Etcdutl {
                etcdutl: etcdutl.display().to_string(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(DrillError::Restore {
                snapshot: req.snapshot.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let db = data.join("member").join("snap").join("db");
        let scan_req = ScanRequest {
            verify: true,
            history: false,
            ..req.scan.clone()
        };
        let mut scan = self.scan_file(&db, &scan_req, &mut ()).await?;
        // The evidence names the snapshot given, not the scratch copy.
        if let Some(s) = scan.snapshot.as_mut() {
            s.file = crate::etcd::dbfile::DbFile::identify(&req.snapshot, &self.target.prefix)
                .unwrap_or_else(|_| s.file.clone());
        }
        let restored_with = format!(
            "{} ({})",
            etcdutl.display(),
            version.lines().next().unwrap_or("").trim()
        );
        Ok(DrillResult::of(&scan, restored_with).expect("an offline scan has its file section"))
    }
}

fn run(program: &Path, args: &[&str]) -> Result<String, DrillError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| DrillError::Etcdutl {
            etcdutl: program.display().to_string(),
            message: e.to_string(),
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
