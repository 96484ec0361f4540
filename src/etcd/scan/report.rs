//! What a scan found: exact counts per resource, key and verdict, with capped samples of names.

use std::collections::BTreeMap;

use super::{Item, Visitor};
use crate::GroupResource;
use crate::codec::sensitive::find;
use crate::config::Resolved;
use crate::model::State;
use crate::model::census::{ObjectRef, ResourceReport, ScanReport, SensitiveObject};
use crate::model::{KeyCounts, Residue, Sample, Verdict, VerdictCounts};

/// Hits kept per object.
const HITS_PER_OBJECT: usize = 8;

/// A [`Visitor`] that builds a [`ScanReport`]; samples hold at most `list_limit` names each,
/// counts are exact.
pub struct ReportBuilder {
    by_resource: BTreeMap<GroupResource, ResourceReport>,
    list_limit: usize,
}

impl ReportBuilder {
    /// Samples capped at `list_limit` names per resource and verdict.
    pub fn new(list_limit: usize) -> Self {
        Self {
            by_resource: BTreeMap::new(),
            list_limit,
        }
    }

    /// The report, `secrets` first, then by name.
    pub fn finish(self, revision: i64, verified: bool) -> ScanReport {
        let mut resources: Vec<ResourceReport> = self.by_resource.into_values().collect();
        resources.sort_by_key(|r| (r.resource != "secrets", r.resource.clone()));
        ScanReport::new(revision, verified, resources)
    }
}

impl Visitor for ReportBuilder {
    fn resource(&mut self, resolved: &Resolved) {
        self.by_resource
            .entry(resolved.resource.clone())
            .or_insert_with(|| resource_report(resolved));
    }

    fn visit(&mut self, item: &Item<'_>) {
        let Some(r) = self.by_resource.get_mut(item.resource) else {
            return;
        };
        let class = item.class;
        let verdict = class.verdict();
        r.total += 1;
        r.verdicts.add(verdict);
        match r.keys.get_mut(class.label.as_ref()) {
            Some(c) => c.add(verdict),
            None => {
                let mut c = VerdictCounts::default();
                c.add(verdict);
                r.keys.insert(class.label.clone().into_owned(), c);
            }
        }
        if class.needs_rewrite() {
            r.needs_rewrite += 1;
        }
        if verdict == Verdict::UnknownKey && matches!(class.state, State::EncryptedOk | State::Kms)
        {
            r.outside_config += 1;
        }
        if Residue::of(class.state, class.apiserver_readable, item.encrypts).is_some() {
            r.residue += 1;
        }
        if verdict == Verdict::Plaintext
            && !item.encrypts
            && *item.resource != GroupResource::secrets()
        {
            let hits = find(item.resource, item.value, HITS_PER_OBJECT);
            if !hits.is_empty() {
                r.sensitive
                    .get_or_insert_with(Sample::default)
                    .push(self.list_limit, || SensitiveObject {
                        name: item.object.to_string(),
                        key: item.key.to_string(),
                        hits,
                    });
            }
        }
        if !class.verified && matches!(verdict, Verdict::OnWriteKey | Verdict::Stale) {
            r.unverified += 1;
        }
        if let Some(id) = class.kms.as_ref().and_then(|k| k.key_id.as_ref()) {
            match r.kms_key_ids.get_mut(id) {
                Some(n) => *n += 1,
                None => {
                    r.kms_key_ids.insert(id.clone(), 1);
                }
            }
        }
        if verdict == Verdict::OnWriteKey {
            return;
        }
        r.samples
            .entry(verdict)
            .or_default()
            .push(self.list_limit, || ObjectRef {
                name: item.object.to_string(),
                key: item.key.to_string(),
                mod_revision: item.mod_revision,
                stored_as: class.label.clone().into_owned(),
                detail: class.detail.clone(),
            });
    }
}

/// An empty report of the resource `resolved` names, with its rule and keys.
fn resource_report(resolved: &Resolved) -> ResourceReport {
    ResourceReport {
        resource: resolved.resource.to_string(),
        rule: resolved.rule_name.clone(),
        write_key: resolved.write_key(),
        read_keys: resolved.read_keys(),
        encrypts: resolved.encrypts(),
        total: 0,
        needs_rewrite: 0,
        unverified: 0,
        verdicts: VerdictCounts::default(),
        keys: KeyCounts::new(),
        outside_config: 0,
        sensitive: None,
        residue: 0,
        kms_key_ids: BTreeMap::new(),
        samples: BTreeMap::new(),
    }
}
