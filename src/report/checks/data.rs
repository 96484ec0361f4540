//! The checks about what etcd stores: on the write key, no plaintext, readable, residue,
//! secret-looking plaintext.

use super::*;

pub(super) fn on_write_key(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    let mut unchecked = Vec::new();
    for r in c.resources {
        if !r.plaintext_is_finding() {
            if r.verdicts.stale > 0 {
                ev.push(format!(
                    "{}: {} stale (on a read key, not the write key {})",
                    r.resource, r.verdicts.stale, r.write_key
                ));
            } else {
                unchecked.push(r.resource.as_str());
            }
            continue;
        }
        // Plaintext counts against it even under an identity write key: an encrypted or
        // required resource must be encrypted with its write key. Unreadable values are C06's.
        if !r.encrypts {
            ev.push(format!(
                "{}: NOT encrypted: its write key is identity; {} of {} stored as plaintext",
                r.resource, r.verdicts.plaintext, r.total
            ));
        } else {
            ev.push(format!(
                "{}: {}/{} encrypted with the write key {} ({} stale, {} plaintext, {} unreadable)",
                r.resource,
                r.verdicts.on_write_key,
                r.total,
                r.write_key,
                r.verdicts.stale,
                r.verdicts.plaintext,
                r.verdicts.unreadable()
            ));
        }
        ev.extend(sample_evidence(
            r,
            Verdict::Stale,
            "not on the write key (stale)",
        ));
    }
    if !unchecked.is_empty() {
        ev.push(format!(
            "{} other resources are written as plaintext by the config and not required by the policy (their stored values are counted in coverage): {}",
            unchecked.len(),
            unchecked.join(", ")
        ));
    }
    ev.extend(
        c.of(&[FindingKind::Stale, FindingKind::Plaintext])
            .map(|f| f.message.clone()),
    );
    Some((
        c.status_of(&[FindingKind::Stale, FindingKind::Plaintext]),
        ev,
    ))
}

pub(super) fn no_plaintext(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    let mut plain = 0u64;
    for r in c.resources.iter().filter(|r| r.plaintext_is_finding()) {
        plain += r.verdicts.plaintext;
        ev.extend(sample_evidence(
            r,
            Verdict::Plaintext,
            "stored as plaintext",
        ));
    }
    let wanted = c
        .resources
        .iter()
        .filter(|r| r.plaintext_is_finding())
        .count();
    if plain == 0 {
        ev.push(format!(
            "no plaintext object in the {wanted} resources the config encrypts or the policy requires encrypted"
        ));
    } else {
        ev.insert(
            0,
            format!("{plain} plaintext objects where encryption is configured or required"),
        );
    }
    Some((c.status_of(&[FindingKind::Plaintext]), ev))
}

pub(super) fn readable(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev = Vec::new();
    for r in c.resources {
        for (v, what) in [
            (Verdict::Undecryptable, "undecryptable"),
            (Verdict::UnknownKey, "under a key its config does not have"),
            (Verdict::Corrupt, "corrupt"),
        ] {
            ev.extend(sample_evidence(r, v, what));
        }
    }
    let kinds = [FindingKind::UnknownKey, FindingKind::Unreadable];
    ev.extend(c.of(&kinds).map(|f| f.message.clone()));
    if c.of(&kinds).next().is_none() {
        let total: u64 = c.resources.iter().map(|r| r.total).sum();
        ev.push(format!(
            "0 undecryptable, 0 unknown-key, 0 corrupt among {total} stored values of {} resources",
            c.resources.len()
        ));
    }
    let mut status = c.status_of(&kinds);
    let unverified = c.inp.scan.unverified();
    if c.inp.scan.verified && unverified > 0 {
        let per: Vec<String> = c
            .resources
            .iter()
            .filter(|r| r.unverified > 0)
            .map(|r| format!("{} {}", r.unverified, r.resource))
            .collect();
        let why = if c.inp.scan.kms_not_asked.is_empty() {
            "their KMS plugin does not serve the API that opens them".to_string()
        } else {
            c.inp.scan.kms_not_asked.join("; ")
        };
        ev.push(format!(
            "{unverified} encrypted values were NOT decrypted ({}): {why}; they are classified by prefix, provider and key ID only, so this check cannot show that they open",
            per.join(", ")
        ));
        status = status.max(Status::Warn);
    }
    if !c.inp.scan.verified {
        ev.push(
            "values were classified by prefix and key name only (--no-verify): none was decrypted, so this check cannot show that they open"
                .into(),
        );
        // No PASS covers more than was read.
        status = status.max(Status::Warn);
    }
    Some((status, ev))
}

/// Applies when history, a db file or backup files were read: residue warns or fails as the
/// policy says.
pub(super) fn residue(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let scan = c.inp.scan;
    if scan.history.is_none() && scan.snapshot.is_none() && scan.backups.is_none() {
        return None;
    }
    let mut ev = Vec::new();
    if let Some(s) = &scan.snapshot {
        let backup: u64 = scan.resources.iter().map(|r| r.residue).sum();
        ev.push(format!(
            "backup {} ({}, revision {}): {backup} current values are plaintext where the config encrypts or under a key it no longer has",
            s.file.path, s.file.sha256, s.file.revision
        ));
    }
    if let Some(h) = &scan.history {
        ev.push(format!(
            "history (revisions {}..{}): {} older values, {} residue",
            h.from_revision, h.to_revision, h.older_values, h.residue
        ));
        ev.extend(h.residue_groups().map(|g| g.summary()));
    } else if scan.snapshot.is_none() {
        ev.push("etcd history was not read (--no-history)".into());
    }
    if let Some(f) = &scan.free_pages {
        ev.push(format!(
            "free pages: {} of {} pages free, {} value copies that are residue",
            f.free_pages, f.pages, f.residue
        ));
    }
    for m in scan.members.iter().flatten() {
        ev.push(format!(
            "member {}: db {} bytes, {} in use ({} free until defragmented)",
            m.name,
            m.db_size,
            m.db_size_in_use,
            m.free_bytes()
        ));
    }
    match &scan.backups {
        Some(b) if b.is_empty() => ev.push(
            "backup files: none in atrest's snapshots folder, none recorded, none in a --backup-dir"
                .into(),
        ),
        Some(b) => ev.extend(
            b.iter()
                .map(|b| format!("backup {}: {}", b.describe(), b.holds())),
        ),
        None => {}
    }
    for cmd in &scan.cleanup {
        ev.push(format!("to drop: {cmd}"));
    }
    Some((c.status_of(&[FindingKind::Residue]), ev))
}

/// Secret-looking data stored as plaintext outside the encrypted resources.
pub(super) fn sensitive(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let mut ev: Vec<String> = c
        .of(&[FindingKind::SensitivePlaintext])
        .map(|f| f.message.clone())
        .collect();
    if ev.is_empty() {
        let (objects, resources) = c
            .resources
            .iter()
            .filter(|r| !r.encrypts && r.resource != "secrets")
            .fold((0u64, 0usize), |(o, n), r| {
                (o + r.verdicts.plaintext, n + 1)
            });
        ev.push(format!(
            "no secret-looking data in the {objects} plaintext objects of the {resources} resources the config does not encrypt (PEM private keys, kubeconfigs, tokens, cloud credentials, fields named like passwords and keys)"
        ));
    }
    Some((c.status_of(&[FindingKind::SensitivePlaintext]), ev))
}
