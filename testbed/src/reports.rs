//! `atrest report` in all three formats against a control plane: the shared step of every test
//! that reads a report.

use std::path::PathBuf;

use serde_json::Value;

use crate::ControlPlane;

/// One report written in JSON, Markdown and HTML.
pub struct Reports {
    /// The exit code (0 PASS, 1 FAIL; the same for every format).
    pub code: i32,
    /// The JSON report.
    pub json: Value,
    /// The Markdown report.
    pub md: String,
    /// The HTML report.
    pub html: String,
    /// The three files, JSON first.
    pub files: Vec<PathBuf>,
}

impl ControlPlane {
    /// Runs `atrest report --verify` once per format into `<cluster>/reports/<name>.<format>`,
    /// with `extra` flags; every run must exit with `exit`, the code the scenario makes.
    pub fn reports(&self, name: &str, exit: i32, extra: &[&str]) -> Reports {
        let dir = self.path().join("reports");
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = Vec::new();
        let mut codes = Vec::new();
        for format in ["json", "md", "html"] {
            let out = dir.join(format!("{name}.{format}"));
            let mut args = vec![
                "report",
                "--verify",
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            let (c, _, stderr) = self.atrest(&args);
            assert_eq!(c, exit, "report {name} {format}: {stderr}");
            codes.push(c);
            files.push(out);
        }
        assert!(
            codes.windows(2).all(|w| w[0] == w[1]),
            "report {name}: exit codes differ between formats: {codes:?}"
        );
        let read = |i: usize| std::fs::read_to_string(&files[i]).unwrap();
        Reports {
            code: codes[0],
            json: serde_json::from_str(&read(0)).unwrap(),
            md: read(1),
            html: read(2),
            files,
        }
    }
}
