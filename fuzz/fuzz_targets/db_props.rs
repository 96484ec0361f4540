//! Shared between the `db_file` fuzz target, `tests/fuzz_regressions.rs` and the mutation test
//! of `tests/snapshot.rs`: an arbitrary file through every offline reader atrest has (open and
//! index, current-value scan, history, free-page census). Any input must end in `Ok` or an
//! error that names the file, never a panic, and the file must be left as it was.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use atrest::etcd::dbfile::{DbFile, free};
use atrest::etcd::scan::{self, ReportBuilder, ScanOptions};

const CONFIG: &str = r#"apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, configmaps]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
      - identity: {}
"#;

/// A file of this process for the input (the readers take a path).
fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("atrest-db-props-{}.db", std::process::id()))
}

/// Runs every reader over `data` written to a scratch file.
pub(crate) fn check(data: &[u8]) {
    let path = scratch();
    std::fs::write(&path, data).unwrap();
    check_file(&path);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data,
        "the readers changed the file"
    );
    let _ = std::fs::remove_file(&path);
}

/// Runs every reader over the file at `path`.
pub(crate) fn check_file(path: &Path) {
    let config = atrest::config::parse_bytes(Path::new("props.yaml"), CONFIG.as_bytes())
        .expect("the props config parses");
    let plan = scan::plan(&config, "/registry", &[]);
    let opts = ScanOptions::default();
    let mut db = match DbFile::open(path, "/registry") {
        Ok(db) => db,
        Err(e) => {
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "the error names the file: {e}"
            );
            return;
        }
    };
    let sum = db.sha256().expect("a file that opened hashes").to_string();
    assert!(sum.starts_with("sha256:") && sum.len() == 7 + 64, "{sum}");
    let mut builder = ReportBuilder::new(10);
    let scanned = futures::executor::block_on(db.scan(
        &config,
        "/registry",
        &plan,
        &opts,
        &mut builder,
        &mut (),
    ));
    if let Err(e) = scanned {
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
    let report = builder.finish(db.info.revision, false);
    // Every value counted has exactly one verdict.
    for r in &report.resources {
        assert_eq!(
            r.total,
            r.verdicts.total(),
            "{}: total vs verdicts",
            r.resource
        );
    }
    let h = futures::executor::block_on(db.history(&config, "/registry", &plan, &opts, 10));
    if let Ok(h) = h {
        let sum: u64 = h.groups.iter().map(|g| g.values).sum();
        assert_eq!(sum, h.older_values, "history counts add up");
    }
    if let Ok(f) = free::census(&mut db, &config, "/registry", &plan) {
        assert!(f.free_pages <= f.pages, "{f:?}");
        assert!(f.leaf_pages <= f.free_pages, "{f:?}");
    }
}
