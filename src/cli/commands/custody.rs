//! `atrest keys seal|unseal|share-unwrap|combine`: custody of retired keys and config backups.

use anyhow::{Context as _, Result, bail};

use crate::cli::args::{self, CustodyDir, OpenFlags};
use crate::cli::{EXIT_FINDINGS, EXIT_OK};
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
