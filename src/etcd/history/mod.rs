//! etcd's history: every older revision it still keeps. etcd keeps each superseded value until a
//! compaction passes it (the apiserver compacts every 5 minutes by default; not every cluster
//! keeps that default), so plaintext written before encryption was turned on, or values under a
//! key since removed, can still be read with `etcdctl get --rev`. This module classifies those
//! older values, live (every change since the compaction revision, with the value it
//! superseded: [`live`]) or in a db file (every revision in it), and says which compaction would
//! drop them. atrest never compacts.

mod live;

use std::collections::HashMap;

pub use live::live;

use super::scan::{Classifier, Visitor};
use crate::codec::ClassifyOptions;
use crate::config::Resolved;
use crate::model::census::{HistoryGroup, HistoryRef, HistoryReport};
use crate::model::{KeyLabel, Residue, Sample, State};

/// Counts every superseded value by resource, key and state, as live reads and db files hand
/// them over ([`Self::superseded`]).
pub struct HistoryBuilder {
    groups: Vec<HistoryGroup>,
    index: HashMap<(String, KeyLabel, State), usize>,
    /// The newest revision in each group's full sample: older ones replace it.
    newest_kept: Vec<i64>,
    list_limit: usize,
}

impl HistoryBuilder {
    /// Samples hold the `list_limit` oldest values per group (the same ones however the values
    /// arrive); counts are exact.
    pub fn new(list_limit: usize) -> Self {
        Self {
            groups: Vec::new(),
            index: HashMap::new(),
            newest_kept: Vec::new(),
            list_limit,
        }
    }

    fn group(
        &mut self,
        resource: &str,
        label: &KeyLabel,
        state: State,
        residue: Option<Residue>,
    ) -> usize {
        let id = (resource.to_string(), label.clone(), state);
        if let Some(i) = self.index.get(&id) {
            return *i;
        }
        self.groups.push(HistoryGroup {
            resource: resource.to_string(),
            stored_as: label.clone(),
            state,
            residue,
            values: 0,
            first_revision: i64::MAX,
            last_revision: 0,
            dropped_by_compaction_at: 0,
            sample: Sample::default(),
        });
        self.newest_kept.push(i64::MAX);
        self.index.insert(id, self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// Counts one value of `key` at `revision`, in group `g`, superseded at `at`.
    fn count(&mut self, g: usize, key: &[u8], revision: i64, at: i64) {
        let limit = self.list_limit;
        let newest_kept = &mut self.newest_kept[g];
        let g = &mut self.groups[g];
        g.values += 1;
        g.first_revision = g.first_revision.min(revision);
        g.last_revision = g.last_revision.max(revision);
        g.dropped_by_compaction_at = g.dropped_by_compaction_at.max(at);
        let sample = &mut g.sample;
        sample.total += 1;
        let named = || HistoryRef {
            key: String::from_utf8_lossy(key).into_owned(),
            revision,
        };
        if sample.objects.len() < limit {
            sample.objects.push(named());
            if sample.objects.len() == limit {
                *newest_kept = sample.objects.iter().map(|r| r.revision).max().unwrap_or(0);
            }
        } else if revision < *newest_kept {
            if let Some(newest) = sample.objects.iter_mut().max_by_key(|r| r.revision) {
                *newest = named();
            }
            *newest_kept = sample.objects.iter().map(|r| r.revision).max().unwrap_or(0);
        }
    }

    /// The group of `value` under `key`, classified; `None` for keys outside the plan's
    /// resources.
    fn classify(
        &mut self,
        classifier: &mut Classifier<'_>,
        options: &ClassifyOptions<'_>,
        key: &[u8],
        value: &[u8],
    ) -> Option<usize> {
        let range = classifier.range_of(key)?;
        let (resource, label, state, residue) =
            classifier.class_of(range, key, value, options, &mut Ignore, |info, _, c| {
                (
                    info.resource.to_string(),
                    c.label.clone().into_owned(),
                    c.state,
                    Residue::of(c.state, c.apiserver_readable, info.encrypts),
                )
            })?;
        Some(self.group(&resource, &label, state, residue))
    }

    /// `value` of `key` at `revision`, superseded by a write or delete at `at`,
    /// classified and counted; keys outside the plan's resources are skipped.
    pub(crate) fn superseded(
        &mut self,
        classifier: &mut Classifier<'_>,
        options: &ClassifyOptions<'_>,
        key: &[u8],
        revision: i64,
        value: &[u8],
        at: i64,
    ) {
        if let Some(g) = self.classify(classifier, options, key, value) {
            self.count(g, key, revision, at);
        }
    }

    /// The report: groups by resource (`secrets` first), key and state.
    pub fn finish(self, from_revision: i64, to_revision: i64) -> HistoryReport {
        let mut groups: Vec<HistoryGroup> =
            self.groups.into_iter().filter(|g| g.values > 0).collect();
        for g in &mut groups {
            g.sample
                .objects
                .sort_by(|a, b| (a.revision, &a.key).cmp(&(b.revision, &b.key)));
        }
        groups.sort_by(|a, b| {
            (
                a.resource != "secrets",
                &a.resource,
                a.stored_as.to_string(),
                a.state,
            )
                .cmp(&(
                    b.resource != "secrets",
                    &b.resource,
                    b.stored_as.to_string(),
                    b.state,
                ))
        });
        let older_values = groups.iter().map(|g| g.values).sum();
        let residue = groups
            .iter()
            .filter(|g| g.residue.is_some())
            .map(|g| g.values)
            .sum();
        let compact_to_drop_residue = groups
            .iter()
            .filter(|g| g.residue.is_some())
            .map(|g| g.dropped_by_compaction_at)
            .max();
        HistoryReport {
            from_revision,
            to_revision,
            older_values,
            residue,
            compact_to_drop_residue,
            groups,
        }
    }
}

/// A visitor for classification alone: history values are counted by the builder, not shown.
struct Ignore;

impl Visitor for Ignore {
    fn resource(&mut self, _resolved: &Resolved) {}
    fn visit(&mut self, _item: &super::scan::Item<'_>) {}
}
