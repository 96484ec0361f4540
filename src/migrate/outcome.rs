//! How a re-encryption run ends: the last save, the proof read from etcd, each finished rewrite
//! judged, and the errors that stop a run.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::run::{Finished, RunState, advance, settle};
use super::worker::{Collector, Done, Remaining, Shared, Target, TaskResult};
use super::{CheckpointError, MigrateError, Reencrypt, ReencryptReport};
use crate::GroupResource;
use crate::codec::ClassifyConfig;
use crate::etcd::scan::{self, Progress, Scan, ScanOptions, ScanPlan};
use crate::kube::rewrite::WritePath;
use crate::kube::{self as k8s, ApiPath};

impl<'a> Reencrypt<'a> {
    /// Ends the targeting scan, saves the checkpoint a last time (finished only when every
    /// range was read through) and fills the report's counters. A fatal error is returned here,
    /// after the save. Also tells whether everything was read, which the proof needs.
    pub(super) async fn conclude(
        &self,
        st: RunState,
        scan: Scan<'_>,
    ) -> Result<(ReencryptReport, bool), MigrateError> {
        let opts = &self.opts;
        let RunState {
            mut cp,
            mut report,
            fatal,
            ..
        } = st;
        let interrupted = opts.stop.load(Ordering::SeqCst);
        let read_everything = !interrupted && fatal.is_none();
        let run = scan.finish(&mut Collector::default()).await;
        report.revision = run.revision;
        cp.finished = read_everything && !opts.dry_run;
        cp.updated = crate::model::time::now();
        if !opts.dry_run {
            cp.save(&opts.checkpoint)?;
        }
        report.resources = cp.counters.clone();
        report.total = cp.total();
        report.given_up = cp.given_up.clone();
        report.interrupted = interrupted;
        if let Some(mut e) = fatal {
            if let MigrateError::NotLoaded { reported, .. } = &mut e {
                *reported = match k8s::metrics::config_report(self.api).await {
                    Ok(r) => r.config_hash.unwrap_or_else(|| "no hash".into()),
                    Err(err) => format!("unknown: {err}"),
                };
            }
            return Err(e);
        }
        Ok((report, read_everything))
    }

    /// The proof: read etcd again, every value of the same resources, and report what is still
    /// not on its write key (new objects included).
    pub(super) async fn prove(
        &self,
        plan: &ScanPlan,
        report: &mut ReencryptReport,
    ) -> Result<(), MigrateError> {
        let mut remaining = Remaining {
            count: 0,
            names: Vec::new(),
            limit: self.opts.max_list,
        };
        let verify_opts = ScanOptions {
            classify: ClassifyConfig::new(false, false, self.plugins, Vec::new()),
            patience: self.opts.patience,
            page_keys: self.opts.page_keys,
            ..Default::default()
        };
        scan::run(
            self.etcd,
            &self.config.config,
            self.etcd_prefix,
            plan,
            &verify_opts,
            &mut remaining,
            &mut (),
        )
        .await?;
        report.remaining = remaining.count;
        report.remaining_objects = remaining.names;
        Ok(())
    }
    /// The next finished rewrite. Meanwhile, every second, says how long the apiserver has
    /// answered nothing (once that passes 5 s), and declares the outage when it reaches the
    /// patience: a request that hangs is counted from when it was sent, so the run stops at
    /// its patience, not at the patience plus a request deadline.
    pub(super) async fn next_finished(
        &self,
        tasks: &mut JoinSet<TaskResult>,
        shared: &Shared,
        progress: &mut dyn Progress,
    ) -> Finished {
        let patience = shared.apiserver_patience;
        loop {
            if tasks.is_empty() {
                return Finished::None;
            }
            match tokio::time::timeout(Duration::from_secs(1), tasks.join_next()).await {
                Ok(Some(Ok(r))) => return Finished::Task(Box::new(r)),
                Ok(Some(Err(e))) => {
                    if !e.is_cancelled() {
                        tracing::error!("a rewrite task failed: {e}");
                    }
                    return Finished::None;
                }
                Ok(None) => return Finished::None,
                Err(_) => {
                    let Some(silent) = shared.health.silent_for() else {
                        continue;
                    };
                    if silent >= Duration::from_secs(5) {
                        progress.stalled(&format!("apiserver {}", self.api.url), silent, patience);
                    }
                    if silent >= patience && !shared.abort.swap(true, Ordering::SeqCst) {
                        return Finished::Outage(self.unreachable(
                            silent,
                            format!(
                                "no answer to the requests in flight for {} s",
                                silent.as_secs()
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Saves the checkpoint when `save_every` has passed since the last save.
    pub(super) fn save_if_due(&self, st: &mut RunState) -> Result<(), CheckpointError> {
        if !self.opts.dry_run && st.last_save.elapsed() >= self.opts.save_every {
            st.cp.updated = crate::model::time::now();
            st.cp.save(&self.opts.checkpoint)?;
            st.last_save = Instant::now();
        }
        Ok(())
    }

    pub(super) fn stopping(&self, fatal: &Option<MigrateError>) -> bool {
        fatal.is_some() || self.opts.stop.load(Ordering::SeqCst)
    }

    /// Counts one finished rewrite in the checkpoint. Only an object proven on its write key
    /// (or gone) settles its page, so that the cursor never passes one that `--resume` must
    /// target again; an outage, an RBAC refusal or an apiserver on an older config becomes the
    /// run's fatal error.
    pub(super) fn handle(&self, r: TaskResult, st: &mut RunState) {
        let resource = r.target.resource.clone();
        let c = st.cp.counters.entry(resource.clone()).or_default();
        c.writes += r.writes;
        c.put_writes += r.put_writes;
        c.conflicts += r.conflicts;
        match r.done {
            Done::Rewritten => {
                c.rewritten += 1;
                c.rewritten_by_put += u64::from(r.via == Some(WritePath::Put));
            }
            Done::AlreadyCurrent => c.already_current += 1,
            Done::Gone => c.gone += 1,
            // Not proven on the write key: counted, but the cursor must not pass it, so that
            // --resume targets it again.
            Done::Unchanged => {
                c.unchanged += 1;
                return;
            }
            Done::GivenUp(why) => {
                c.given_up += 1;
                if st.cp.given_up.len() < self.opts.max_list {
                    st.cp
                        .given_up
                        .push(format!("{resource} {}: {why}", r.target.object));
                }
                return;
            }
            Done::Outage { waited, last_error } => {
                st.fatal.get_or_insert(self.unreachable(waited, last_error));
                return;
            }
            Done::Abandoned => return,
            Done::Forbidden(message) => {
                st.fatal.get_or_insert(self.forbidden(
                    &r.target,
                    resource.to_string(),
                    message,
                    &st.paths,
                ));
                // Not done: the cursor must not pass it.
                return;
            }
            Done::Lagging(stored_as) => {
                st.fatal
                    .get_or_insert(self.not_loaded(&r.target, resource.to_string(), stored_as));
            }
        }
        settle(&mut st.pages, r.page);
        advance(&mut st.pages, &mut st.cp);
    }

    /// The apiserver answered nothing for `waited`: the run stops, no object given up.
    pub(super) fn unreachable(&self, waited: Duration, last_error: String) -> MigrateError {
        MigrateError::ApiserverUnreachable {
            url: self.api.url.clone(),
            waited,
            last_error,
            checkpoint: self.opts.checkpoint.clone(),
        }
    }

    /// RBAC refused the rewrite of `target`: the error names the rule to grant.
    pub(super) fn forbidden(
        &self,
        target: &Target,
        resource: String,
        message: String,
        paths: &HashMap<GroupResource, ApiPath>,
    ) -> MigrateError {
        let path = paths.get(&target.resource);
        MigrateError::Forbidden {
            resource,
            object: target.object.clone(),
            group: path.map(|p| p.group.clone()).unwrap_or_default(),
            plural: path
                .map(|p| p.plural.clone())
                .unwrap_or_else(|| target.resource.resource.clone()),
            message,
            checkpoint: self.opts.checkpoint.clone(),
        }
    }

    /// `target` was written but etcd shows it as `stored_as`: the apiserver has not loaded the
    /// config (the hash it reports is filled in when the run ends).
    pub(super) fn not_loaded(
        &self,
        target: &Target,
        resource: String,
        stored_as: String,
    ) -> MigrateError {
        MigrateError::NotLoaded {
            url: self.api.url.clone(),
            resource,
            object: target.object.clone(),
            stored_as,
            write_key: self.config.config.resolve(&target.resource).write_key(),
            reported: String::from("(see below)"),
            config: self.config.path.clone(),
            file_hash: self.config.hash.clone(),
        }
    }
}
