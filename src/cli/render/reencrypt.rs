//! `reencrypt`: counters, and the proof read back from etcd.

use std::fmt::Write;

use atrest::model::showing;

/// Which request rewrote how many: ` (10 by protobuf PUT, 2 by merge PATCH)`.
fn by_path(c: &atrest::migrate::Counters) -> String {
    if c.rewritten == 0 {
        return String::new();
    }
    format!(
        " ({} by protobuf PUT, {} by merge PATCH)",
        c.rewritten_by_put,
        c.rewritten - c.rewritten_by_put
    )
}

/// The counters of a run and the proof read back from etcd.
pub(crate) fn reencrypt_table(r: &atrest::migrate::ReencryptReport) -> String {
    let mut out = String::new();
    let t = &r.total;
    if r.dry_run {
        let _ = writeln!(
            out,
            "dry run at etcd revision {}: {} objects would be rewritten",
            r.revision, t.targeted
        );
        let showing = showing(r.would_rewrite.len(), t.targeted, "");
        if !showing.is_empty() {
            let _ = writeln!(out, " {}", showing.trim_start());
        }
        for name in &r.would_rewrite {
            let _ = writeln!(out, "  {name}");
        }
        return out;
    }
    let _ = writeln!(
        out,
        "reencrypt{}: {} targeted, {} rewritten{}, {} already current, {} conflicts re-checked, {} gone, {} given up, {} requests ({:.1} s)",
        if r.resumed { " (resumed)" } else { "" },
        t.targeted,
        t.rewritten,
        by_path(t),
        t.already_current,
        t.conflicts,
        t.gone,
        t.given_up,
        t.writes,
        r.elapsed_seconds
    );
    if r.resources.len() > 1 {
        for (res, c) in &r.resources {
            let _ = writeln!(
                out,
                "  {res}: {} targeted, {} rewritten{}, {} already current, {} gone, {} given up",
                c.targeted,
                c.rewritten,
                by_path(c),
                c.already_current,
                c.gone,
                c.given_up
            );
        }
    }
    if t.unchanged > 0 {
        let _ = writeln!(
            out,
            "{} objects were accepted without a write: the apiserver did not see them as stale (has it loaded the config?)",
            t.unchanged
        );
    }
    let sample = showing(r.given_up.len(), t.given_up, "");
    if !sample.is_empty() {
        let _ = writeln!(out, "  given up{sample}:");
    }
    for g in &r.given_up {
        let _ = writeln!(out, "  given up: {g}");
    }
    if r.interrupted {
        let _ = writeln!(
            out,
            "interrupted: progress saved in {}; run `atrest reencrypt --resume` to continue",
            r.checkpoint.display()
        );
        return out;
    }
    if r.remaining == 0 {
        let _ = writeln!(
            out,
            "proof: etcd read again: every object is on its write key"
        );
    } else {
        let showing = showing(r.remaining_objects.len(), r.remaining, "");
        let _ = writeln!(
            out,
            "proof: etcd read again: {} objects are still not on their write key{showing}:",
            r.remaining
        );
        for name in &r.remaining_objects {
            let _ = writeln!(out, "  {name}");
        }
    }
    out
}
