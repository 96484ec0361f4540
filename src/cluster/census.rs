//! The scan of `scan`, `status` and `report`, defined once: the census of etcd (or a db file)
//! with every key atrest can find, what is known of the keys values need, and their history.

use std::path::{Path, PathBuf};

use super::{ClusterError, Context, ScanRequest, keybook, plugins_or_warnings};
use crate::codec::ClassifyConfig;
use crate::etcd::copies::{cleanup_commands, member_sizes};
use crate::etcd::dbfile::DbFile;
use crate::etcd::scan::{self, Progress, ReportBuilder, ScanOptions};
use crate::keys::archive;
use crate::keys::custody::{Custody, Opener, SEALED_SUFFIX, sealed_files};
use crate::kms::KmsPlugins;
use crate::model::KeyLabel;
use crate::model::census::{ScanReport, SnapshotSection};

impl Context {
    /// What every scan starts from: the key ranges, the KMS plugins (when verifying) with the
    /// ones that could not be asked, and every key atrest can find beyond the config (tried
    /// last, and named in findings).
    async fn scan_inputs(&self, req: &ScanRequest) -> Result<ScanInputs, ClusterError> {
        let plan = scan::plan(&self.config.config, &self.target.prefix, &req.resources);
        let required = req.verify && !req.kms_may_be_unreachable;
        let (plugins, kms_not_asked) = plugins_or_warnings(&self.config.config, required).await?;
        let opener = self.opener(req)?;
        // An archive named on the command line must load; the state folder's own is best effort.
        if let Some(p) = &req.key_archive {
            match &opener {
                Some(o) if p.is_dir() || p.to_string_lossy().ends_with(SEALED_SUFFIX) => {
                    for f in sealed_files(p) {
                        o.archive_keys(&f)?;
                    }
                }
                _ => {
                    archive::load(p)?;
                }
            }
        }
        let archives: Vec<PathBuf> = req.key_archive.iter().cloned().collect();
        let book = keybook::KeyBook::gather(
            &self.config.config,
            req.state_dir.as_deref(),
            &archives,
            opener.as_ref(),
        );
        for e in &book.unreadable {
            tracing::warn!("{e}; its keys are not used to name stored values");
        }
        Ok(ScanInputs {
            plan,
            plugins,
            kms_not_asked,
            book,
        })
    }

    /// Scans the covered (or requested) resources at one revision: the scan of `scan`,
    /// `status` and `report`.
    pub async fn scan(
        &self,
        client: &etcd_client::Client,
        req: &ScanRequest,
        progress: &mut dyn Progress,
    ) -> Result<ScanReport, ClusterError> {
        let ScanInputs {
            plan,
            plugins,
            kms_not_asked,
            book,
        } = self.scan_inputs(req).await?;
        let opts = ScanOptions {
            classify: classify(req.verify, &plugins, &book),
            patience: req.patience,
            ..Default::default()
        };
        let mut builder = ReportBuilder::new(req.max_list);
        let run = scan::run(
            client,
            &self.config.config,
            &self.target.prefix,
            &plan,
            &opts,
            &mut builder,
            progress,
        )
        .await
        .map_err(|source| ClusterError::ScanStopped {
            target: self.target.describe(),
            source,
        })?;
        if run.retries > 0 {
            tracing::warn!(
                "etcd was briefly unavailable; {} reads were retried",
                run.retries
            );
        }
        let mut report = builder.finish(run.revision, req.verify);
        report.scope = plan.scope(&self.target.prefix);
        report.kms_not_asked = kms_not_asked;
        report.unknown_keys = unknown_keys(&report, &book);
        if req.history {
            let history = crate::etcd::history::live(
                client,
                &self.config.config,
                &self.target.prefix,
                &plan,
                &opts,
                run.revision,
                run.splits.keys(),
                req.max_list,
            )
            .await
            .map_err(|source| ClusterError::ScanStopped {
                target: self.target.describe(),
                source,
            })?;
            let members = member_sizes(client, &self.target)
                .await
                .map_err(|e| self.name_mapped_file(e))?;
            report.cleanup = cleanup_commands(&self.target, Some(&history), &members);
            report.history = Some(history);
            report.members = Some(members);
        }
        if let Some(p) = &plugins {
            report.kms_current_key_ids = p.current_key_ids().into_iter().collect();
        }
        Ok(report)
    }

    /// Scans an etcd data file offline (a snapshot or a member's `member/snap/db`): the same
    /// classification and counts as a live scan at the file's revision, plus the file's identity
    /// and the keys it needs; with `history`, every older revision in it and its free pages.
    /// The file is opened read-only.
    pub async fn scan_file(
        &self,
        path: &Path,
        req: &ScanRequest,
        progress: &mut dyn Progress,
    ) -> Result<ScanReport, ClusterError> {
        let ScanInputs {
            plan,
            plugins,
            kms_not_asked,
            book,
        } = self.scan_inputs(req).await?;
        let opts = ScanOptions {
            classify: classify(req.verify, &plugins, &book),
            ..Default::default()
        };
        let mut db = DbFile::open(path, &self.target.prefix)?;
        let mut builder = ReportBuilder::new(req.max_list);
        db.scan(
            &self.config.config,
            &self.target.prefix,
            &plan,
            &opts,
            &mut builder,
            progress,
        )
        .await?;
        let mut report = builder.finish(db.info.revision, req.verify);
        report.scope = plan.scope(&self.target.prefix);
        report.kms_not_asked = kms_not_asked;
        report.unknown_keys = unknown_keys(&report, &book);
        if req.history {
            report.history = Some(
                db.history(
                    &self.config.config,
                    &self.target.prefix,
                    &plan,
                    &opts,
                    req.max_list,
                )
                .await?,
            );
            report.free_pages = Some(crate::etcd::dbfile::free::census(
                &mut db,
                &self.config.config,
                &self.target.prefix,
                &plan,
            )?);
        }
        if let Some(p) = &plugins {
            report.kms_current_key_ids = p.current_key_ids().into_iter().collect();
        }
        db.sha256()?;
        let keys_needed =
            crate::etcd::copies::keys_needed(&report, &self.config.config, &book.material);
        report.snapshot = Some(SnapshotSection {
            file: db.info.clone(),
            keys_needed,
        });
        Ok(report)
    }
}

/// What is known of every key that values are stored under without their resource's config
/// having it.
impl Context {
    /// What opens sealed files, when identities or shares were given: the custody file of the
    /// state folder, else the one beside a `--key-archive` folder (a copy taken off the node).
    fn opener(&self, req: &ScanRequest) -> Result<Option<Opener>, ClusterError> {
        if req.identities.is_empty() && req.shares.is_empty() {
            return Ok(None);
        }
        let mut custody = match &req.state_dir {
            Some(d) => Custody::load(d)?,
            None => None,
        };
        if custody.is_none()
            && let Some(parent) = req.key_archive.as_ref().and_then(|p| p.parent())
        {
            custody = Custody::load(parent)?;
        }
        Ok(Some(Opener::new(
            custody.as_ref(),
            &req.identities,
            &req.shares,
        )?))
    }
}

/// What every scan starts from ([`Context::scan_inputs`]).
struct ScanInputs {
    plan: scan::ScanPlan,
    plugins: Option<KmsPlugins>,
    /// Plugins that could not be asked, and why (only when they may be).
    kms_not_asked: Vec<String>,
    book: keybook::KeyBook,
}

/// How a scan classifies: the config's keys, the KMS plugins (when verifying), then every key
/// found beyond the config.
fn classify<'a>(
    verify: bool,
    plugins: &'a Option<KmsPlugins>,
    book: &keybook::KeyBook,
) -> ClassifyConfig<'a> {
    ClassifyConfig::new(verify, false, plugins.as_ref(), book.material.clone())
}

fn unknown_keys(report: &ScanReport, book: &keybook::KeyBook) -> Vec<keybook::KnownKey> {
    let mut labels: Vec<&KeyLabel> = report
        .resources
        .iter()
        .flat_map(|r| r.keys.iter())
        .filter(|(_, c)| c.unknown_key > 0)
        .map(|(l, _)| l)
        .collect();
    labels.sort();
    labels.dedup();
    labels
        .into_iter()
        .flat_map(|l| book.named(l).cloned())
        .collect()
}
