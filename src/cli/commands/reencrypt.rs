//! `atrest reencrypt`: rewrite through the apiserver what etcd shows is not on its write key.

use std::time::Duration;

use anyhow::Result;

use crate::cli::args::{self, Output};
use crate::cli::progress::Bar;
use crate::cli::render::{self, reencrypt::reencrypt_table};
use crate::cli::{EXIT_FINDINGS, EXIT_INTERRUPTED, EXIT_OK};
use atrest::cluster::{Context, PreflightError, parse_resources, plugins, write_preflight};
use atrest::kube::svm::Served;
use atrest::migrate::svm::{self, Engine, SvmError, SvmPass};
use atrest::migrate::{
    MigrateError, PreflightRefusal, Reencrypt, ReencryptOptions, ReencryptReport,
};
use atrest::state::CHECKPOINT_FILE;

/// Exit 0 when everything targeted is proven on its write key, 1 when objects were given up or
/// remain, 2 when the run could not complete (an apiserver that answered nothing for the
/// patience among others), 3 when interrupted (the checkpoint is saved).
pub(crate) async fn run(a: args::ReencryptArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let etcd = ctx.etcd().await?;
    let apiservers = ctx.apiservers(&a.cluster.apiservers).await?;
    let api = apiservers.base.clone();
    let loaded = &ctx.config;
    let checkpoint = match a.checkpoint.clone() {
        Some(c) => c,
        None => ctx
            .state_dir(a.cluster.state_dir.as_deref())
            .to_write(&|m| eprintln!("atrest: {m}"))?
            .join(CHECKPOINT_FILE),
    };
    let opts = ReencryptOptions {
        resources: parse_resources(&a.resources)?,
        dry_run: a.dry_run,
        checkpoint,
        resume: a.resume,
        patience: Duration::from_secs(a.etcd.etcd_patience),
        stop: super::stop_on_signal(),
        max_list: a.max_list,
        ..a.rewrite.options()
    };
    let plugins = plugins(&loaded.config, true).await?;
    // Before the first write (never when there is nothing to rewrite): every apiserver runs
    // this config, and has seen the KMS plugins' current key IDs.
    let preflight = {
        let (apiservers, plugins) = (&apiservers, plugins.as_ref());
        Box::pin(async move {
            write_preflight(apiservers, loaded, plugins)
                .await
                .map_err(PreflightRefusal::from)
        })
    };
    // The migrator first (after the same preflight: every apiserver runs this config), then
    // atrest's engine over everything, which rewrites what is left and proves it.
    let engine_choice = opts.engine;
    let started = std::time::Instant::now();
    let mut engines = Vec::new();
    let mut preflight: Option<atrest::migrate::Preflight<'_>> = Some(preflight);
    if engine_choice != Engine::Atrest {
        let served = svm::availability(&api).await?;
        if engine_choice == Engine::Svm && served != Served::Yes {
            return Err(SvmError::NotServed(served).into());
        }
        if !a.dry_run {
            if let Some(p) = preflight.take() {
                p.await.map_err(|e| failure(MigrateError::Preflight(e)))?;
            }
            let pass = SvmPass {
                config: loaded,
                plugins: plugins.as_ref(),
                etcd: &etcd,
                etcd_prefix: &ctx.target.prefix,
                api: &api,
                reencrypt: &opts,
            };
            let mut bar = Bar::new("migrating (StorageVersionMigration)", a.rewrite.progress);
            // Outside a rotation, the outcome goes to the report only.
            let done = pass.run(&mut bar, &mut |_, _| Ok(())).await;
            bar.finish();
            engines = done?;
        }
    }
    let mut engine = Reencrypt {
        preflight,
        config: loaded,
        plugins: plugins.as_ref(),
        etcd: &etcd,
        etcd_prefix: &ctx.target.prefix,
        api: &api,
        opts,
    };
    let mut bar = Bar::new(
        if a.dry_run {
            "scanning (dry run)"
        } else {
            "re-encrypting"
        },
        a.rewrite.progress,
    );
    let report = engine.run(&mut bar).await;
    bar.finish();
    let mut report = report.map_err(failure)?;
    if !engines.is_empty() {
        // The migrator's time belongs to the run.
        report.elapsed_seconds = started.elapsed().as_secs_f64();
    }
    report.engines = engines;
    match a.output {
        Output::Json => render::print_json(&report),
        Output::Table => crate::cli::out!("{}", reencrypt_table(&report)),
    }
    Ok(exit_code(&report))
}

/// The run's error with what the admin can do about it.
fn failure(e: MigrateError) -> anyhow::Error {
    use atrest::migrate::MigrateError as M;
    let hint = match &e {
        M::Forbidden { .. } | M::NotLoaded { .. } => {
            Some("progress is saved: run again with --resume to continue")
        }
        M::ApiserverUnreachable { .. } => Some(
            "once the apiserver answers again, run again with --resume: it targets every object not yet on its write key (--apiserver-patience SECONDS waits longer)",
        ),
        M::Preflight(p) => p.downcast_ref::<PreflightError>().map(preflight_hint),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::anyhow!("{}\n  {h}", anyhow::Error::from(e)),
        None => e.into(),
    }
}

/// 3 interrupted; 1 when a dry run found work or a run left objects; else 0.
fn exit_code(report: &ReencryptReport) -> i32 {
    if report.interrupted {
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
    }
}

/// What the admin can do when the preflight refuses.
fn preflight_hint(e: &PreflightError) -> &'static str {
    match e {
        PreflightError::ConfigNotLoaded { .. } => {
            "With --encryption-provider-config-automatic-reload an apiserver reloads within about a minute; without it, restart it. Then run again."
        }
        PreflightError::KmsKeyIds(_) => {
            "kube-apiserver asks the KMS plugin about once a minute: wait, then run again."
        }
    }
}
