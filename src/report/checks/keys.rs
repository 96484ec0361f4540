//! The checks about keys: their age, KMS key IDs, custody of retired keys, the restore drill.

use super::*;

pub(super) fn key_age(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let policy = c.inp.policy;
    let mut ev = Vec::new();
    let mut st = Status::Pass;
    let mut seen = std::collections::BTreeSet::new();
    for v in c.cfg_views {
        let Some(k) = v.keys.first() else { continue };
        if k.provider == "identity" {
            ev.push(format!(
                "{}: not encrypted (the write key is identity): no key to age",
                v.resource
            ));
            continue;
        }
        if !seen.insert(k.label.clone()) {
            continue;
        }
        let since = key_in_use_since(k.promoted, k.added);
        match since {
            Some(t) => {
                let days = (c.inp.now - t).num_days();
                if days > policy.max_key_age_days as i64 {
                    st = Status::Fail;
                }
                ev.push(format!(
                    "{}: write key for {days} days (maximum {})",
                    k.label, policy.max_key_age_days
                ));
            }
            None => {
                ev.push(format!(
                    "{}: age unknown (not created by atrest, or no state file)",
                    k.label
                ));
                st = st.max(Status::Warn);
            }
        }
    }
    Some((st, ev))
}

pub(super) fn kms_key_ids(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let scan = c.inp.scan;
    let kms: Vec<&ResourceResult> = c
        .resources
        .iter()
        .filter(|r| !r.kms_key_ids.is_empty())
        .collect();
    if kms.is_empty() {
        return None;
    }
    let current: Vec<&String> = scan.kms_current_key_ids.values().collect();
    let mut ev: Vec<String> = scan
        .kms_current_key_ids
        .iter()
        .map(|(p, k)| format!("KMS provider {p}: the plugin's current key ID is {k}"))
        .collect();
    let mut old = 0u64;
    for r in &kms {
        let ids: Vec<String> = r
            .kms_key_ids
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        ev.push(format!("{}: key IDs {}", r.resource, ids.join(", ")));
        old += r
            .kms_key_ids
            .iter()
            .filter(|(k, _)| !current.contains(k))
            .map(|(_, n)| n)
            .sum::<u64>();
    }
    let st = if current.is_empty() {
        ev.push("the plugin's current key ID is unknown (plugin not reachable)".into());
        Status::Warn
    } else if old > 0 && !c.inp.policy.allow_old_kms_key_ids {
        ev.push(format!(
            "{old} values on a key ID other than the current one"
        ));
        Status::Fail
    } else {
        Status::Pass
    };
    Some((st, ev))
}

pub(super) fn custody(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let sealed_rule = c.inp.policy.custody == CustodyRule::Sealed;
    let view = match &c.inp.custody {
        Some(v) => v.clone(),
        None if sealed_rule => Default::default(),
        None => return None,
    };
    let mut ev = view.lines();
    let status = if sealed_rule && view.plaintext() {
        ev.push(
            "the policy asks `custody: sealed`: seal them with `atrest keys seal --seal-to RECIPIENT` (one per custodian)"
                .into(),
        );
        Status::Fail
    } else {
        if view.plaintext() {
            ev.push("plaintext is allowed by the policy (`custody: any`)".into());
        }
        Status::Pass
    };
    Some((status, ev))
}

pub(super) fn drill(c: &CheckInput<'_>) -> Option<(Status, Vec<String>)> {
    let d = c.inp.drill.as_ref()?;
    let mut ev = vec![format!(
        "{}: snapshot {} ({}, revision {}) restored with {}; {} of {} values opened",
        d.at,
        d.snapshot.path,
        d.snapshot.sha256,
        d.snapshot.revision,
        d.restored_with,
        d.values - d.unopened,
        d.values
    )];
    for k in &d.keys {
        ev.push(format!(
            "{}: {} values, {} did not open (key: {})",
            k.label,
            k.values,
            k.unopened,
            k.source.describe()
        ));
    }
    Some((
        if d.passed() {
            Status::Pass
        } else {
            Status::Fail
        },
        ev,
    ))
}
