//! Fresh etcd scans (every value decrypted, every resource etcd holds) that prove what a step
//! may do: prune only when no object of the rotation is off its write key and no value anywhere
//! is stored under a key it removes, abort only when nothing uses the new key yet.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{RotateError, Rotator};
use crate::GroupResource;
use crate::codec::ClassifyConfig;
use crate::config::LoadedConfig;
use crate::etcd::scan::{self, Item, ScanOptions, Visitor};
use crate::model::KeyLabel;
use crate::state::Rotation;

/// How many matching objects a proof lists by name (all are counted).
const LISTED: usize = 50;

/// Objects a scan matched: how many, and the first few by name.
pub(super) struct Found {
    pub count: u64,
    pub names: Vec<String>,
}

struct Matching<F> {
    matches: F,
    found: Found,
}

impl<F: Fn(&Item<'_>) -> bool> Visitor for Matching<F> {
    fn visit(&mut self, item: &Item<'_>) {
        if !(self.matches)(item) {
            return;
        }
        self.found.count += 1;
        if self.found.names.len() < LISTED {
            self.found.names.push(format!(
                "{} {} ({}, {})",
                item.resource,
                item.object,
                item.class.label,
                item.class.state.as_str()
            ));
        }
    }
}

impl Rotator<'_> {
    /// Stored objects of the rotation's rules that are not on their write key, and values of
    /// any resource stored under one of the `retiring` labels (a resource whose rule was
    /// dropped still needs its key: removing it would make the loss permanent).
    pub(super) async fn not_on_write_key(
        &self,
        loaded: &LoadedConfig,
        r: &Rotation,
        retiring: &std::collections::BTreeSet<KeyLabel>,
    ) -> Result<Found, RotateError> {
        let config = &loaded.config;
        // Whether a resource is written by one of the rotation's rules, resolved once each.
        let in_rotation: RefCell<HashMap<GroupResource, bool>> = Default::default();
        let found = self
            .find(loaded, |item| {
                // Under a key prune removes, in a resource whose own rule cannot read it: the
                // config file is the last place the apiserver could get that key from.
                if !item.class.apiserver_readable && retiring.contains(&*item.class.label) {
                    return true;
                }
                if item.class.on_write_key() {
                    return false;
                }
                *in_rotation
                    .borrow_mut()
                    .entry(item.resource.clone())
                    .or_insert_with(|| {
                        config
                            .resolve(item.resource)
                            .entries
                            .first()
                            .is_some_and(|e| r.rules.contains(&e.rule))
                    })
            })
            .await?;
        (self.say)(&format!(
            "fresh etcd scan: {} objects not on their write key",
            found.count
        ));
        Ok(found)
    }

    /// Scans every resource etcd holds (decrypting every value) and lists the objects `matches`
    /// picks, with their key and state.
    pub(super) async fn find(
        &self,
        loaded: &LoadedConfig,
        matches: impl Fn(&Item<'_>) -> bool,
    ) -> Result<Found, RotateError> {
        let plan = scan::plan(&loaded.config, &self.etcd_prefix, &[]);
        let plugins = self.plugins(&loaded.config).await?;
        let opts = ScanOptions {
            classify: ClassifyConfig::new(true, false, plugins.as_ref(), Vec::new()),
            patience: self.reencrypt.patience,
            ..Default::default()
        };
        let mut visitor = Matching {
            matches,
            found: Found {
                count: 0,
                names: Vec::new(),
            },
        };
        scan::run(
            self.etcd,
            &loaded.config,
            &self.etcd_prefix,
            &plan,
            &opts,
            &mut visitor,
            &mut (),
        )
        .await?;
        Ok(visitor.found)
    }
}
