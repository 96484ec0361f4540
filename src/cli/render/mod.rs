//! Human tables and JSON documents. Nothing here ever sees key material: keys are shown by
//! label and fingerprint only.

use std::fmt::Write;

pub(super) mod config;
pub(super) mod old_copies;
pub(super) mod reencrypt;
pub(super) mod scan;
pub(super) mod status;

pub(super) fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => crate::cli::outln!("{s}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

pub(super) fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "  {line}");
        }
    }
}
