//! Commands: each turns parsed flags into resolved settings, calls the library, and renders.

pub mod args;
mod render;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use args::{Cli, Command, ConfigCommand, ConfigSource, EtcdFlags, KeysCommand, Output};
use atrest::GroupResource;
use atrest::config::{self, LoadedConfig};
use atrest::etcd::EtcdTarget;
use atrest::etcd::scan::{self, ClassifyConfig, ReportBuilder, ScanOptions, ScanReport};
use atrest::keys::{Key, KeyProvider};
use atrest::settings::{self, Flags, Settings};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FINDINGS: i32 = 1;
pub const EXIT_FAILED: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 3;

pub async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Config(ConfigCommand::Check(a)) => config_check(a),
        Command::Keys(KeysCommand::Generate(a)) => keys_generate(a),
        Command::Scan(a) => scan_cmd(a).await,
        Command::Status(a) => status_cmd(a).await,
        Command::Reencrypt(a) => reencrypt_cmd(a).await,
        Command::Rotate(c) => rotate_cmd(c).await,
        Command::Report(a) => report_cmd(a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}

fn flags(source: &ConfigSource, etcd: Option<&EtcdFlags>, kubeconfig: Option<PathBuf>) -> Flags {
    let etcd = etcd.cloned().unwrap_or_default();
    Flags {
        config: source.config.clone(),
        apiserver_manifest: source.apiserver_manifest.clone(),
        endpoints: etcd.endpoints,
        cacert: etcd.cacert,
        cert: etcd.cert,
        key: etcd.key,
        user: etcd.user,
        etcd_prefix: etcd.etcd_prefix,
        kubeconfig,
    }
}

fn load_config(s: &Settings) -> Result<LoadedConfig> {
    let path = s.config.as_ref().map(|c| c.value.clone()).ok_or_else(|| {
        anyhow!(
            "no EncryptionConfiguration given: pass --config FILE (or ATREST_CONFIG), or run on a control-plane node \
             where {} names --encryption-provider-config",
            settings::DEFAULT_MANIFEST
        )
    })?;
    Ok(config::load(&path)?)
}

fn config_check(a: args::ConfigCheckArgs) -> Result<i32> {
    let s = settings::resolve(&flags(&a.source, None, None))?;
    let path = s.config.as_ref().map(|c| c.value.clone());
    let loaded = match load_config(&s) {
        Ok(l) => l,
        Err(e) => {
            match (a.output, e.downcast_ref::<config::ConfigError>()) {
                (Output::Json, Some(config::ConfigError::Invalid { path, errors })) => {
                    render::print_json(&serde_json::json!({
                        "file": path, "valid": false, "errors": errors,
                    }));
                }
                (Output::Json, _) => {
                    render::print_json(&serde_json::json!({
                        "file": path, "valid": false, "errors": [{"field": "", "message": format!("{e:#}")}],
                    }));
                }
                _ => eprintln!("error: {e:#}"),
            }
            return Ok(EXIT_FAILED);
        }
    };
    let mut findings = config::lint(&loaded.config);
    findings.extend(config::lint_file_mode(loaded.file.mode));
    match a.output {
        Output::Json => render::print_json(&render::config_json(&loaded, &findings)),
        Output::Table => print!("{}", render::config_table(&loaded, &findings)),
    }
    Ok(if findings.iter().any(|f| f.severity >= a.fail_on) {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}

fn keys_generate(a: args::KeysGenerateArgs) -> Result<i32> {
    let provider = match a.provider {
        args::KeyProviderArg::Aescbc => KeyProvider::Aescbc,
        args::KeyProviderArg::Aesgcm => KeyProvider::Aesgcm,
        args::KeyProviderArg::Secretbox => KeyProvider::Secretbox,
    };
    let name = a
        .name
        .unwrap_or_else(|| atrest::keys::new_key_name(chrono::Utc::now()));
    let key = Key::generate(name, provider)?;
    let secret = key.secret_base64();
    println!(
        "# {} key {} ({}): add under {}.keys; first key = write key\n- name: {}\n  secret: {}",
        provider,
        key.name(),
        key.fingerprint(),
        provider,
        serde_json::to_string(key.name())?,
        secret.as_str()
    );
    Ok(EXIT_OK)
}

/// A progress bar on a terminal, nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(message: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_message(message);
        Bar(Some(pb))
    }
    fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl scan::Progress for Bar {
    fn total(&mut self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(n);
        }
    }
    fn advance(&mut self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }
}

/// The config's KMS v2 plugins. Unreachable plugins are fatal when values must be opened
/// (`required`), and otherwise a warning: KMS values are then classified without them.
pub(crate) async fn connect_plugins(
    config: &atrest::config::EncryptionConfig,
    required: bool,
) -> Result<Option<atrest::kms::KmsPlugins>> {
    use atrest::kms::Unreachable;
    let unreachable = if required {
        Unreachable::Fatal
    } else {
        Unreachable::Warn
    };
    let connected = atrest::kms::connect_plugins(config, unreachable).await?;
    for e in connected.warnings {
        eprintln!("atrest: warning: {e}\n  KMS values are still classified by provider and key ID");
    }
    Ok(connected.plugins)
}

/// Loads the config, connects to etcd and scans: the shared core of scan, status and report.
pub(crate) async fn scan_cluster(
    s: &Settings,
    loaded: &LoadedConfig,
    etcd: &EtcdFlags,
    resources: &[String],
    verify: bool,
    max_list: usize,
    key_archive: Option<&std::path::Path>,
) -> Result<ScanReport> {
    let target = EtcdTarget::from_settings(s);
    let client = target.connect().await?;
    let only: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    if let Some(w) = only.iter().find(|gr| gr.is_wildcard()) {
        return Err(anyhow!(
            "--resource takes a resource such as secrets or foos.example.com, not the wildcard {}",
            w.config_name()
        ));
    }
    let plan = scan::plan(&loaded.config, &target.prefix, &only);
    // Fatal only with --verify (status never verifies).
    let plugins = connect_plugins(&loaded.config, verify).await.map_err(|e| {
        anyhow!("{e:#}\n  without --verify, KMS values are still classified by provider and key ID")
    })?;
    let archive = match key_archive {
        Some(p) => atrest::keys::archive::load(p)?,
        None => Vec::new(),
    };
    let opts = ScanOptions {
        classify: ClassifyConfig::new(verify, false, plugins.as_ref(), archive),
        patience: Duration::from_secs(etcd.etcd_patience),
        ..Default::default()
    };
    let mut builder = ReportBuilder::new(max_list);
    let mut bar = Bar::new(if verify {
        "scanning (verify)"
    } else {
        "scanning"
    });
    let run = scan::run(
        &client,
        &loaded.config,
        &target.prefix,
        &plan,
        &opts,
        &mut builder,
        &mut bar,
    )
    .await
    .with_context(|| format!("scan of etcd at {} stopped", target.describe()))?;
    bar.finish();
    if run.retries > 0 {
        tracing::warn!(
            "etcd was briefly unavailable; {} reads were retried",
            run.retries
        );
    }
    let mut report = builder.finish(run.revision, verify);
    if let Some(p) = &plugins {
        report.kms_current_key_ids = p.current_key_ids().into_iter().collect();
    }
    Ok(report)
}

async fn scan_cmd(a: args::ScanArgs) -> Result<i32> {
    let s = settings::resolve(&flags(&a.source, Some(&a.etcd), None))?;
    let loaded = load_config(&s)?;
    let report = scan_cluster(
        &s,
        &loaded,
        &a.etcd,
        &a.resources,
        a.verify,
        a.max_list,
        a.key_archive.as_deref(),
    )
    .await?;
    match a.output {
        Output::Json => render::print_json(&report),
        Output::Table => print!("{}", render::scan_table(&report)),
    }
    Ok(if report.clean() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

async fn status_cmd(a: args::StatusArgs) -> Result<i32> {
    let s = settings::resolve(&flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let loaded = load_config(&s)?;
    let mut findings = config::lint(&loaded.config);
    findings.extend(config::lint_file_mode(loaded.file.mode));
    let scan = if a.no_scan {
        None
    } else {
        Some(scan_cluster(&s, &loaded, &a.etcd, &[], false, 20, None).await)
    };
    let dir = state_dir(a.cluster.state_dir.as_ref(), &loaded);
    let state = atrest::rotate::State::load(&dir, &loaded.path).ok();
    let archive_path = dir.join(atrest::rotate::ARCHIVE_FILE);
    let archived = if archive_path.exists() {
        atrest::keys::archive::list(&archive_path).unwrap_or_default()
    } else {
        Vec::new()
    };
    let convergence =
        match atrest::kube::connect(s.kubeconfig.as_ref().map(|k| k.value.as_path())).await {
            Ok(api) => {
                let aps = atrest::kube::Apiservers {
                    base: api,
                    explicit: a.cluster.apiservers.clone(),
                };
                Ok(aps.survey(&loaded.hash).await)
            }
            Err(e) => Err(e.to_string()),
        };
    let extra = render::StatusExtra {
        state_path: atrest::rotate::State::path(&dir),
        state,
        archived,
        convergence,
    };
    let scan_ok = matches!(scan, None | Some(Ok(_)));
    match a.output {
        Output::Json => render::print_json(&render::status_json(
            &s,
            &loaded,
            &findings,
            scan.as_ref(),
            &extra,
        )),
        Output::Table => print!(
            "{}",
            render::status_table(&s, &loaded, &findings, scan.as_ref(), &extra)
        ),
    }
    let clean = scan.is_none() || matches!(&scan, Some(Ok(r)) if r.clean());
    Ok(if !scan_ok {
        EXIT_FAILED
    } else if clean {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

/// The state folder: `--state-dir`, else an `atrest` folder beside the config file.
pub(crate) fn state_dir(explicit: Option<&PathBuf>, loaded: &LoadedConfig) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| {
        loaded
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join("atrest")
    })
}

/// SIGINT/SIGTERM set `stop`: the engines stop issuing writes, finish those in flight, save.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "atrest: signal received: finishing the writes in flight and saving the checkpoint"
        );
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

/// Refuses to write when the apiserver reports another config than the file: its writes would
/// use another write key.
pub(crate) async fn check_loaded(
    apiservers: &atrest::kube::Apiservers,
    loaded: &LoadedConfig,
) -> Result<()> {
    use atrest::kube::converge::{Agreement, require_config};
    let c = require_config(
        apiservers,
        &loaded.hash,
        Agreement::NoneDiffers,
        Duration::ZERO,
        &mut |_| {},
    )
    .await
    .map_err(|e| {
        anyhow!(
            "{} is {}, but not every apiserver has loaded it yet:\n{}\n  \
             With --encryption-provider-config-automatic-reload an apiserver reloads within about a minute; without it, restart it. Then run again.",
            loaded.path.display(),
            loaded.hash,
            e.lagging
                .iter()
                .map(|l| format!("  - {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    for a in c.apiservers.iter().filter(|a| a.config_hash.is_none()) {
        tracing::warn!(
            "{}: {}; the result is still proven in etcd",
            a.name(),
            a.reported()
        );
    }
    Ok(())
}

/// Refuses to rewrite KMS values before the apiservers have seen the plugin's current key ID
/// (they would not consider the old ones stale, and write nothing).
async fn check_kms_key_ids(
    apiservers: &atrest::kube::Apiservers,
    plugins: &atrest::kms::KmsPlugins,
) -> Result<()> {
    use atrest::kube::converge::{Agreement, require_kms_key_ids};
    require_kms_key_ids(
        apiservers,
        &plugins.current_key_ids(),
        Agreement::NoneDiffers,
        Duration::ZERO,
    )
    .await
    .map_err(|e| {
        anyhow!(
            "{e}\n  kube-apiserver asks the KMS plugin about once a minute: wait, then run again"
        )
    })
}

/// What a command that reads etcd and writes through the apiserver starts from.
struct Cluster {
    settings: Settings,
    loaded: LoadedConfig,
    target: EtcdTarget,
    etcd: etcd_client::Client,
    api: atrest::kube::Api,
}

async fn open_cluster(
    source: &ConfigSource,
    etcd: &EtcdFlags,
    cluster: &args::ClusterArgs,
) -> Result<Cluster> {
    let settings = settings::resolve(&flags(source, Some(etcd), cluster.kubeconfig.clone()))?;
    let loaded = load_config(&settings)?;
    let target = EtcdTarget::from_settings(&settings);
    let etcd = target.connect().await?;
    let api =
        atrest::kube::connect(settings.kubeconfig.as_ref().map(|k| k.value.as_path())).await?;
    Ok(Cluster {
        settings,
        loaded,
        target,
        etcd,
        api,
    })
}

async fn reencrypt_cmd(a: args::ReencryptArgs) -> Result<i32> {
    let Cluster {
        loaded,
        target,
        etcd,
        api,
        ..
    } = open_cluster(&a.source, &a.etcd, &a.cluster).await?;
    let resources: Vec<GroupResource> = a
        .resources
        .iter()
        .map(|r| GroupResource::parse(r))
        .collect();
    if let Some(w) = resources.iter().find(|gr| gr.is_wildcard()) {
        return Err(anyhow!(
            "--resource takes a resource such as secrets, not the wildcard {}",
            w.config_name()
        ));
    }
    let checkpoint = a.checkpoint.clone().unwrap_or_else(|| {
        state_dir(a.cluster.state_dir.as_ref(), &loaded).join("reencrypt-checkpoint.json")
    });
    let opts = atrest::migrate::ReencryptOptions {
        resources,
        dry_run: a.dry_run,
        checkpoint,
        resume: a.resume,
        patience: Duration::from_secs(a.etcd.etcd_patience),
        stop: stop_on_signal(),
        max_list: a.max_list,
        ..a.rewrite.options()
    };
    let plugins = connect_plugins(&loaded.config, true).await?;
    // Before the first write (never when there is nothing to rewrite): every apiserver runs
    // this config, and has seen the KMS plugins' current key IDs.
    let apiservers = atrest::kube::Apiservers {
        base: api.clone(),
        explicit: a.cluster.apiservers.clone(),
    };
    let preflight = {
        let (apiservers, loaded, plugins) = (&apiservers, &loaded, plugins.as_ref());
        Box::pin(async move {
            check_loaded(apiservers, loaded)
                .await
                .map_err(|e| format!("{e:#}"))?;
            if let Some(p) = plugins {
                check_kms_key_ids(apiservers, p)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
            }
            Ok(())
        })
    };
    let mut engine = atrest::migrate::Reencrypt {
        preflight: Some(preflight),
        config: &loaded,
        plugins: plugins.as_ref(),
        etcd: &etcd,
        etcd_prefix: &target.prefix,
        api: &api,
        opts,
    };
    let mut bar = Bar::new(if a.dry_run {
        "scanning (dry run)"
    } else {
        "re-encrypting"
    });
    let report = engine.run(&mut bar).await;
    bar.finish();
    let report = report?;
    match a.output {
        Output::Json => render::print_json(&report),
        Output::Table => print!("{}", render::reencrypt_table(&report)),
    }
    Ok(if report.interrupted {
        EXIT_INTERRUPTED
    } else if report.dry_run {
        if report.total.targeted == 0 {
            EXIT_OK
        } else {
            EXIT_FINDINGS
        }
    } else if report.complete() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

fn manifest_reload(s: &Settings) -> Option<bool> {
    s.manifest
        .as_ref()
        .and_then(|m| settings::read_manifest(m).ok())
        .map(|m| m.automatic_reload.unwrap_or(false))
}

async fn rotate_cmd(c: args::RotateCommand) -> Result<i32> {
    use args::RotateCommand as R;
    use atrest::rotate::{PrepareRequest, Rotator, SnapshotChoice, TargetSpec};
    let (common, prepare) = match &c {
        R::Prepare(p) | R::Run(p) => (p.common.clone(), Some(p.clone())),
        R::Promote(a) | R::Reencrypt(a) | R::Prune(a) | R::Abort(a) => (a.clone(), None),
    };
    let Cluster {
        settings: s,
        loaded,
        target,
        etcd,
        api,
    } = open_cluster(&common.source, &common.etcd, &common.cluster).await?;
    let say = |m: &str| eprintln!("atrest: {m}");
    let rotator = Rotator {
        config_path: loaded.path.clone(),
        state_dir: state_dir(common.cluster.state_dir.as_ref(), &loaded),
        etcd: &etcd,
        etcd_prefix: target.prefix.clone(),
        apiservers: atrest::kube::Apiservers {
            base: api,
            explicit: common.cluster.apiservers.clone(),
        },
        wait_timeout: Duration::from_secs(common.timeout),
        automatic_reload: manifest_reload(&s),
        canary_namespace: common.canary_namespace.clone(),
        reencrypt: atrest::migrate::ReencryptOptions {
            patience: Duration::from_secs(common.etcd.etcd_patience),
            stop: stop_on_signal(),
            ..common.rewrite.options()
        },
        say: &say,
    };
    let request = |p: &args::RotatePrepareArgs| -> Result<PrepareRequest> {
        Ok(PrepareRequest {
            target: match p.provider {
                args::TargetArg::Aescbc => TargetSpec::Key(KeyProvider::Aescbc),
                args::TargetArg::Aesgcm => TargetSpec::Key(KeyProvider::Aesgcm),
                args::TargetArg::Secretbox => TargetSpec::Key(KeyProvider::Secretbox),
                args::TargetArg::Identity => TargetSpec::Identity,
                args::TargetArg::Kms => TargetSpec::KmsV2 {
                    name: p
                        .kms_name
                        .clone()
                        .ok_or_else(|| anyhow!("--provider kms needs --kms-name"))?,
                    endpoint: p
                        .kms_endpoint
                        .clone()
                        .ok_or_else(|| anyhow!("--provider kms needs --kms-endpoint"))?,
                    timeout: p.kms_timeout.clone(),
                },
            },
            key_name: p.key_name.clone(),
            resources: p
                .resources
                .iter()
                .map(|r| GroupResource::parse(r))
                .collect(),
            snapshot: match (&p.snapshot, p.no_snapshot) {
                (_, true) => SnapshotChoice::Skip,
                (Some(path), false) => SnapshotChoice::Path(path.clone()),
                (None, false) => SnapshotChoice::Default,
            },
        })
    };
    let mut bar = Bar::new("re-encrypting");
    let result = match &c {
        R::Prepare(_) => {
            rotator
                .prepare(&request(prepare.as_ref().expect("prepare args"))?)
                .await
        }
        R::Promote(_) => rotator.promote().await,
        R::Reencrypt(_) => rotator.reencrypt(&mut bar).await.map(|_| ()),
        R::Prune(_) => rotator.prune().await.map(|_| ()),
        R::Run(_) => {
            rotator
                .run(&request(prepare.as_ref().expect("run args"))?, &mut bar)
                .await
        }
        R::Abort(_) => rotator.abort().await,
    };
    bar.finish();
    match result {
        Ok(()) => {
            let st = atrest::rotate::State::load(&rotator.state_dir, &rotator.config_path)?;
            match &st.rotation {
                Some(r) => println!(
                    "rotation to {}: stage {}; next: {}",
                    r.target,
                    r.stage,
                    r.stage.next_command()
                ),
                None => println!(
                    "no rotation in progress; config {}",
                    st.expected_hash.as_deref().unwrap_or("-")
                ),
            }
            Ok(EXIT_OK)
        }
        Err(e @ atrest::rotate::RotateError::NothingToDo { .. }) if matches!(c, R::Run(_)) => {
            println!("{e}");
            Ok(EXIT_OK)
        }
        Err(atrest::rotate::RotateError::Interrupted) => {
            eprintln!("atrest: interrupted; run the same command again to continue");
            Ok(EXIT_INTERRUPTED)
        }
        Err(e) => Err(
            match rotate_hint(&e, rotator.automatic_reload, &rotator.config_path) {
                Some(hint) => anyhow!("{e}\n  {hint}"),
                None => e.into(),
            },
        ),
    }
}

/// What the admin can do about a rotation step that stopped.
fn rotate_hint(
    e: &atrest::rotate::RotateError,
    automatic_reload: Option<bool>,
    config: &std::path::Path,
) -> Option<String> {
    use atrest::kube::converge::Awaited;
    use atrest::rotate::{JournalError, RotateError as E};
    Some(match e {
        E::NoRotation { .. } => "start one with `atrest rotate prepare`".into(),
        E::WrongStage { found, .. } => format!("the next step is `{}`", found.next_command()),
        E::AlreadyRotating { stage, .. } => {
            format!("run `{}` (or `atrest rotate abort`)", stage.next_command())
        }
        E::KeyNameTaken { .. } => "choose another --key-name".into(),
        E::PruneRefused { .. } => {
            "Run `atrest rotate reencrypt` again (or `atrest reencrypt`), then prune.".into()
        }
        E::Journal(JournalError::Changed(c)) => format!(
            "atrest stops rather than overwrite it. If the change is intended, finish or abort the rotation from a file atrest wrote (the backups are in {}), or move {} away to start over from the current file.",
            c.backups.display(),
            c.state.display()
        ),
        E::NotConverged(n) => {
            let unreached = if n.unreached.is_empty() {
                ""
            } else {
                "Pass --apiserver URL for every apiserver that atrest does not find by itself.\n  "
            };
            let then = match (&n.awaited, automatic_reload) {
                (Awaited::KmsKeyIds, _) => "kube-apiserver asks the plugin's Status about once a minute; wait, then run the same command again.".to_string(),
                (Awaited::Config { .. }, Some(false)) => "Restart the lagging kube-apiservers so they load the file, then run the same command again.".to_string(),
                (Awaited::Config { .. }, _) => format!(
                    "Make sure {} is the same on every control-plane node; a reload failure shows in apiserver_encryption_config_controller_automatic_reloads_total{{status=\"failure\"}}. Then run the same command again.",
                    config.display()
                ),
            };
            format!("{unreached}{then}")
        }
        _ => return None,
    })
}

async fn etcd_cluster_info(
    client: &etcd_client::Client,
    target: &EtcdTarget,
) -> atrest::report::EtcdInfo {
    let mut info = atrest::report::EtcdInfo {
        endpoints: vec![target.describe()],
        ..Default::default()
    };
    let mut c = client.clone();
    if let Ok(st) = c.status().await {
        info.version = st.version().to_string();
        info.cluster_id = st
            .header()
            .map(|h| format!("{:x}", h.cluster_id()))
            .unwrap_or_default();
    }
    if let Ok(m) = c.member_list().await {
        info.members = m
            .members()
            .iter()
            .map(|m| atrest::report::EtcdMember {
                id: format!("{:x}", m.id()),
                name: m.name().to_string(),
                client_urls: m.client_urls().to_vec(),
            })
            .collect();
    }
    info
}

async fn report_cmd(a: args::ReportArgs) -> Result<i32> {
    if let Some(args::ReportSub::Diff {
        a: first,
        b: second,
    }) = &a.diff
    {
        let read = |p: &PathBuf| -> Result<atrest::report::Report> {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not an atrest JSON report ({})",
                    p.display(),
                    atrest::report::SCHEMA
                )
            })
        };
        let (ra, rb) = (read(first)?, read(second)?);
        let lines = atrest::report::diff::diff(&ra, &rb);
        if lines.is_empty() {
            println!(
                "no differences between {} ({}) and {} ({})",
                first.display(),
                ra.generated_at,
                second.display(),
                rb.generated_at
            );
            return Ok(EXIT_OK);
        }
        println!(
            "{} ({}) -> {} ({}):",
            first.display(),
            ra.generated_at,
            second.display(),
            rb.generated_at
        );
        for l in lines {
            println!("  {l}");
        }
        return Ok(EXIT_FINDINGS);
    }
    let s = settings::resolve(&flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let loaded = load_config(&s)?;
    let policy = match &a.policy {
        Some(p) => atrest::report::Policy::load(p)?,
        None => atrest::report::Policy::default(),
    };
    let target = EtcdTarget::from_settings(&s);
    let (scan, etcd_info) = match &a.from_scan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let scan: ScanReport = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not the JSON of `atrest scan -o json`",
                    path.display()
                )
            })?;
            let mut info = match target.connect().await {
                Ok(c) => etcd_cluster_info(&c, &target).await,
                Err(_) => atrest::report::EtcdInfo {
                    endpoints: vec![target.describe()],
                    cluster_id: "not reachable".into(),
                    ..Default::default()
                },
            };
            info.revision = scan.revision;
            (scan, info)
        }
        None => {
            let client = target.connect().await?;
            let mut info = etcd_cluster_info(&client, &target).await;
            let scan = scan_cluster(&s, &loaded, &a.etcd, &[], a.verify, 1000, None).await?;
            info.revision = scan.revision;
            (scan, info)
        }
    };
    let convergence =
        match atrest::kube::connect(s.kubeconfig.as_ref().map(|k| k.value.as_path())).await {
            Ok(api) => Some(
                atrest::kube::Apiservers {
                    base: api,
                    explicit: a.cluster.apiservers.clone(),
                }
                .survey(&loaded.hash)
                .await,
            ),
            Err(e) => {
                tracing::warn!("apiservers not checked: {e}");
                None
            }
        };
    let dir = state_dir(a.cluster.state_dir.as_ref(), &loaded);
    let state = atrest::rotate::State::load(&dir, &loaded.path)
        .ok()
        .filter(|st| st.expected_hash.is_some() || !st.history.is_empty());
    let manifest_sets_config = s
        .manifest
        .as_ref()
        .and_then(|m| settings::read_manifest(m).ok())
        .map(|m| m.encryption_provider_config.is_some());
    let report = atrest::report::build(&atrest::report::Inputs {
        config: &loaded,
        scan: &scan,
        etcd: etcd_info,
        convergence: convergence.as_ref(),
        manifest_sets_config,
        state: state
            .as_ref()
            .map(|st| (st, atrest::rotate::State::path(&dir))),
        policy: &policy,
        now: chrono::Utc::now(),
    });
    let text = match a.format {
        args::ReportFormat::Json => serde_json::to_string_pretty(&report)?,
        args::ReportFormat::Md => atrest::report::markdown::render(&report),
        args::ReportFormat::Html => atrest::report::html::render(&report),
    };
    match &a.out {
        Some(path) => {
            atrest::fsutil::write_atomic(path, text.as_bytes(), 0o644)?;
            eprintln!(
                "atrest: report written to {} (verdict {})",
                path.display(),
                report.verdict.as_str()
            );
        }
        None => println!("{text}"),
    }
    Ok(atrest::report::exit_code(&report))
}
