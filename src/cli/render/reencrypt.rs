//! `reencrypt`: counters, and the proof read back from etcd.

use std::fmt::Write;

use atrest::migrate::{Counters, ReencryptReport};
use atrest::model::showing;

/// Which request rewrote how many: ` (10 by protobuf PUT, 2 by merge PATCH)`.
fn by_path(c: &Counters) -> String {
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
pub(crate) fn reencrypt_table(r: &ReencryptReport) -> String {
    let mut out = String::new();
    if r.dry_run {
        dry_run(&mut out, r);
        return out;
    }
    engines(&mut out, r);
    counters(&mut out, r);
    given_up(&mut out, r);
    if r.interrupted {
        let _ = writeln!(
            out,
            "interrupted: progress saved in {}; run `atrest reencrypt --resume` to continue",
            r.checkpoint.display()
        );
        return out;
    }
    proof(&mut out, r);
    out
}

/// With `--engine svm` or `auto`: who was asked first per resource, and what each
/// StorageVersionMigration did.
fn engines(out: &mut String, r: &ReencryptReport) {
    use atrest::migrate::svm::Engine;
    for e in &r.engines {
        let who = match e.engine {
            Engine::Svm => "StorageVersionMigration",
            _ => "atrest",
        };
        let _ = writeln!(
            out,
            "{}: {} of {} objects stale; first engine: {who} ({})",
            e.resource, e.stale, e.objects, e.reason
        );
        for name in &e.waited_for {
            let _ = writeln!(
                out,
                "  waited for StorageVersionMigration {name} (not created by atrest)"
            );
        }
        if let Some(m) = &e.migration {
            let _ = writeln!(
                out,
                "  StorageVersionMigration {}: {:?} in {:.1} s{}",
                m.name,
                m.phase,
                m.seconds,
                if m.deleted {
                    ", deleted by atrest"
                } else {
                    ", left in place"
                }
            );
        }
    }
    if !r.engines.is_empty() {
        let _ = writeln!(
            out,
            "then atrest's engine: every object still not on its write key is rewritten below, and all are proven in etcd"
        );
    }
}

/// A dry run: how many objects would be rewritten, and their names.
fn dry_run(out: &mut String, r: &ReencryptReport) {
    let t = &r.total;
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
}

/// The run's counters in all, then per resource when there are several, and the objects the
/// apiserver accepted without a write.
fn counters(out: &mut String, r: &ReencryptReport) {
    let t = &r.total;
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
}

/// The objects given up on, by name (capped, with `showing N of M`).
fn given_up(out: &mut String, r: &ReencryptReport) {
    let sample = showing(r.given_up.len(), r.total.given_up, "");
    if !sample.is_empty() {
        let _ = writeln!(out, "  given up{sample}:");
    }
    for g in &r.given_up {
        let _ = writeln!(out, "  given up: {g}");
    }
}

/// What etcd read again after the run shows: every object on its write key, or the ones that
/// are not.
fn proof(out: &mut String, r: &ReencryptReport) {
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
}
