//! How a report is made from its inputs: the checks, the views of config, resources, scope and
//! old copies, the key lifecycle.

use super::*;

/// Everything a report is made from: plain values, gathered by the caller.
pub struct ReportInputs<'a> {
    /// The config file as loaded.
    pub config: &'a LoadedConfig,
    /// The scan.
    pub scan: &'a ScanReport,
    /// The etcd cluster.
    pub etcd: EtcdInfo,
    /// The apiservers, when they could be asked.
    pub apiservers: Option<ApiserverSurvey>,
    /// The apiserver manifest says `--encryption-provider-config` is set.
    pub manifest_sets_config: Option<bool>,
    /// The rotation state, when there is one.
    pub rotation: Option<RotationInfo>,
    /// The rotation in progress: what it will rewrite only warns.
    pub in_progress: Option<Rotation>,
    /// Key label → when atrest added and promoted it.
    pub key_records: BTreeMap<KeyLabel, KeyRecord>,
    /// The keys of the key archive, for the key lifecycle (`None`: the archive could not be
    /// read, so nothing is said of what it no longer holds).
    pub archived: Option<Vec<ArchivedKey>>,
    /// The rotation log ([`lifecycle::rotation_log`]).
    pub rotation_log: Vec<LogLine>,
    /// Where the state folder keeps retired keys and config backups.
    pub custody: Option<CustodyView>,
    /// A restore drill's result (`--drill`).
    pub drill: Option<DrillResult>,
    /// What the checks demand.
    pub policy: &'a Policy,
    /// The report's time (key ages are measured to it).
    pub now: DateTime<Utc>,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn config_views(inp: &ReportInputs<'_>) -> Vec<ResourceConfigView> {
    let cfg = &inp.config.config;
    covered_resources(cfg.named_resources(), &[])
        .iter()
        .map(|gr| {
            let r = cfg.resolve(gr);
            let keys = r
                .keys_in_order()
                .into_iter()
                .map(|k| {
                    let age = inp.key_records.get(&k.label);
                    let label = k.label.to_string();
                    KeyView {
                        provider: k.provider.to_string(),
                        fingerprint: k.fingerprint,
                        added: age.and_then(|a| a.added),
                        promoted: age.and_then(|a| a.promoted),
                        label,
                    }
                })
                .collect();
            ResourceConfigView {
                resource: gr.config_name(),
                rule: r.rule_name.clone(),
                write_key: r.write_key(),
                keys,
            }
        })
        .collect()
}

/// Builds the report and its outcome.
pub fn build(inp: &ReportInputs<'_>) -> Report {
    let resources_cfg = config_views(inp);
    let mut lint = crate::config::lint(&inp.config.config);
    lint.extend(lint_file_mode(inp.config.file.mode));
    let resources = resource_results(inp);
    let findings = findings::assess(&findings::AssessInputs {
        scan: inp.scan,
        config: inp.config,
        policy: inp.policy,
        rotation: inp.in_progress.as_ref(),
        apiservers: inp.apiservers.as_ref(),
    });
    let checks = checks::run(&checks::CheckInput {
        inp,
        resources: &resources,
        cfg_views: &resources_cfg,
        lint: &lint,
        findings: &findings,
    });
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warnings = checks.iter().filter(|c| c.status == Status::Warn).count();
    let verdict = if failed > 0 {
        Status::Fail
    } else {
        Status::Pass
    };
    let result = checks_result_line(failed, warnings, checks.len());
    let survey = inp.apiservers.clone().unwrap_or_default();
    let cis = controls::cis_of(&survey.apiservers);
    let mut checks = checks;
    for c in &mut checks {
        c.controls = controls::controls(&c.id, &cis);
    }
    let key_lifecycle = lifecycle::lifecycle(
        &resources_cfg,
        &inp.key_records,
        inp.archived.as_deref(),
        inp.custody.as_ref(),
        inp.policy,
        inp.etcd.revision,
        inp.now,
    );
    Report {
        schema: SCHEMA.to_string(),
        generated_at: inp.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        atrest_version: env!("CARGO_PKG_VERSION").to_string(),
        host: host(),
        outcome: verdict,
        warnings: warnings as u64,
        result,
        scope: report_scope(inp),
        etcd: inp.etcd.clone(),
        apiservers: survey.apiservers,
        apiserver_leases: survey.leases,
        config: config_info(inp, resources_cfg),
        rotation: inp.rotation.clone(),
        lint: lint_view(&lint),
        policy: inp.policy.clone(),
        checks,
        findings,
        verified: inp.scan.verified,
        kms_current_key_ids: inp.scan.kms_current_key_ids.clone(),
        resources,
        backup: inp.scan.snapshot.clone(),
        residue: residue_view(inp),
        cis_benchmark: Some(cis),
        key_lifecycle,
        rotation_log: inp.rotation_log.clone(),
        custody: inp.custody.clone(),
        drill: inp.drill.clone(),
    }
}

/// Each scanned resource with whether the policy requires it encrypted, and its coverage.
fn resource_results(inp: &ReportInputs<'_>) -> Vec<ResourceResult> {
    inp.scan
        .resources
        .iter()
        .map(|r| ResourceResult {
            required: inp.policy.requires(&r.resource),
            coverage: Coverage::of(r, inp.policy),
            scan: r.clone(),
        })
        .collect()
}

/// What the report read: the scan's scope and which extra sources it had.
fn report_scope(inp: &ReportInputs<'_>) -> ReportScope {
    ReportScope {
        scan: inp.scan.scope.clone(),
        history: inp.scan.history.is_some(),
        backup_files: inp.scan.backups.as_ref().map(Vec::len),
        apiservers: inp.apiservers.is_some(),
        decrypted: inp.scan.verified,
        not_decrypted: inp.scan.unverified(),
        kms_not_asked: inp.scan.kms_not_asked.clone(),
    }
}

/// The config file: where, its hash and file mode, and what it says per resource.
fn config_info(inp: &ReportInputs<'_>, resources: Vec<ResourceConfigView>) -> ConfigInfo {
    ConfigInfo {
        path: inp.config.path.clone(),
        sha256: inp.config.hash.clone(),
        mode: format!("{:04o}", inp.config.file.mode),
        uid: inp.config.file.uid,
        gid: inp.config.file.gid,
        resources,
    }
}

/// The config lint's findings as the report shows them.
fn lint_view(lint: &[crate::config::Finding]) -> Vec<LintFinding> {
    lint.iter()
        .map(|f| LintFinding {
            id: f.id.to_string(),
            severity: f.severity,
            field: f.field.clone(),
            message: f.message.clone(),
        })
        .collect()
}

/// The old copies section, when the scan read history, a snapshot or backup files.
fn residue_view(inp: &ReportInputs<'_>) -> Option<ResidueView> {
    (inp.scan.history.is_some() || inp.scan.snapshot.is_some() || inp.scan.backups.is_some()).then(
        || ResidueView {
            total: inp.scan.residue(),
            history: inp.scan.history.clone(),
            free_pages: inp.scan.free_pages.clone(),
            members: inp.scan.members.clone().unwrap_or_default(),
            cleanup: inp.scan.cleanup.clone(),
            backups: inp.scan.backups.clone().unwrap_or_default(),
        },
    )
}
