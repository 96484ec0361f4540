//! `atrest keys seal|unseal|share-unwrap|combine` and `atrest drill`: custody of retired keys
//! and config backups, and the proof that a backup still opens.

use anyhow::{Context as _, Result, bail};

use crate::cli::args::{self, CustodyDir, OpenFlags};
use crate::cli::{EXIT_FINDINGS, EXIT_OK};
use atrest::cluster::ScanRequest;
use atrest::cluster::drill::DrillRequest;
use atrest::keys::custody::{self, Custody, Opener};

/// Seals the state folder to the recipients given (or those it already has).
pub(crate) fn seal(a: args::KeysSealArgs) -> Result<i32> {
    let dir = &a.dir.state_dir;
    if a.seal.seal_to.is_empty() && Custody::load(dir)?.is_none() {
        bail!(
            "{} has no custody file yet: give the custodians' recipients with --seal-to (one per custodian)",
            dir.display()
        );
    }
    let done = custody::seal_state(dir, &a.seal.seal_to, a.seal.seal_threshold)?;
    let c = Custody::load(dir)?.context("custody file just written")?;
    eprintln!(
        "atrest: {} {}: {} archived keys and {} config backups sealed now, their plaintext removed",
        dir.display(),
        c.describe(),
        done.archived_keys,
        done.backups
    );
    Ok(EXIT_OK)
}

/// Opens every sealed file in memory and lists what it holds.
pub(crate) fn unseal(dir: &CustodyDir, open: &OpenFlags) -> Result<i32> {
    let dir = &dir.state_dir;
    let c = Custody::load(dir)?;
    if c.is_none() {
        bail!(
            "{} has no custody file (custody.yaml): nothing is sealed there",
            dir.display()
        );
    }
    let opener = Opener::new(c.as_ref(), &open.identities, &open.shares)?;
    let inv = custody::inventory(dir, &opener);
    for (f, r) in &inv.archive {
        match r {
            Ok(keys) => {
                for k in keys {
                    crate::cli::outln!(
                        "{}: {}:{} {} (retired {})",
                        f.display(),
                        k.provider.name(),
                        k.name,
                        k.fingerprint,
                        k.retired
                    );
                }
            }
            Err(e) => crate::cli::outln!("{}: DID NOT OPEN: {e}", f.display()),
        }
    }
    for (f, r) in &inv.backups {
        match r {
            Ok(()) => crate::cli::outln!("{}: opens (a valid config)", f.display()),
            Err(e) => crate::cli::outln!("{}: DID NOT OPEN: {e}", f.display()),
        }
    }
    eprintln!(
        "atrest: {} sealed archive files and {} sealed backups; {} did not open (nothing was written)",
        inv.archive.len(),
        inv.backups.len(),
        inv.failed()
    );
    Ok(if inv.failed() > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}

/// Unwraps this custodian's share into a share file.
pub(crate) fn share_unwrap(a: args::KeysShareUnwrapArgs) -> Result<i32> {
    let c = Custody::load_file(&a.custody)?;
    if c.threshold < 2 {
        bail!(
            "{} seals to each custodian directly (no threshold): pass your identity with -i to the command that needs the archive",
            a.custody.display()
        );
    }
    let opener = Opener::new(None, &a.identities, &[])?;
    let share = opener.share_of(&c).with_context(|| {
        format!(
            "no identity given opens a share of {} (its custodians: {})",
            a.custody.display(),
            c.fingerprints().join(", ")
        )
    })?;
    if a.out.exists() {
        bail!(
            "{} exists: atrest never overwrites a share file",
            a.out.display()
        );
    }
    atrest::fsutil::write_atomic(&a.out, &share, 0o600)?;
    eprintln!(
        "atrest: your share written to {} (0600); hand it over for the one command that needs it, then delete it",
        a.out.display()
    );
    Ok(EXIT_OK)
}

/// Restores a snapshot in a scratch folder and proves every value opens.
pub(crate) async fn drill(a: args::DrillArgs) -> Result<i32> {
    let ctx = atrest::cluster::Context::resolve(&super::flags(&a.source, None, None))?;
    let state_dir = super::state_dir_to_read(&ctx, a.state_dir.as_deref());
    let req = DrillRequest {
        snapshot: a.snapshot.clone(),
        etcdutl: a.etcdutl.clone(),
        scan: ScanRequest {
            max_list: 1000,
            key_archive: a.key_archive.clone(),
            state_dir: Some(state_dir),
            identities: a.open.identities.clone(),
            shares: a.open.shares.clone(),
            ..Default::default()
        },
    };
    let result = ctx.drill(&req).await?;
    let json = serde_json::to_string_pretty(&result)?;
    if let Some(out) = &a.out {
        atrest::fsutil::write_atomic(out, json.as_bytes(), 0o644)?;
    }
    match a.output {
        args::Output::Json => crate::cli::outln!("{json}"),
        args::Output::Table => {
            crate::cli::outln!(
                "snapshot {} ({}, revision {}) restored with {}",
                result.snapshot.path,
                result.snapshot.sha256,
                result.snapshot.revision,
                result.restored_with
            );
            for k in &result.keys {
                let fp = k.fingerprints.first().map(String::as_str).unwrap_or("");
                let status = if k.unopened > 0 {
                    format!("{} DO NOT OPEN", k.unopened)
                } else {
                    "all open".to_string()
                };
                crate::cli::outln!(
                    "  {}: {} values, {status} (key: {} {fp})",
                    k.label,
                    k.values,
                    k.source.describe()
                );
            }
            for o in &result.unopened_sample {
                crate::cli::outln!("  does not open: {} ({})", o.name, o.stored_as);
            }
            let shown = result.unopened_sample.len();
            let more = atrest::model::showing(shown, result.unopened, "");
            if !more.is_empty() {
                crate::cli::outln!("  values that do not open:{more}");
            }
            crate::cli::outln!(
                "{}: {} of {} values opened",
                result.result,
                result.values - result.unopened,
                result.values
            );
        }
    }
    Ok(if result.passed() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}
