//! `atrest reencrypt`: rewrite through the apiserver what etcd shows is not on its write key.

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::cli::args::{self, Output};
use crate::cli::progress::Bar;
use crate::cli::render::{self, reencrypt::reencrypt_table};
use crate::cli::{EXIT_FINDINGS, EXIT_INTERRUPTED, EXIT_OK};
use atrest::cluster::{Context, connect_plugins, parse_resources};
use atrest::config::LoadedConfig;

/// Exit 0 when everything targeted is proven on its write key, 1 when objects were given up or
/// remain, 3 when interrupted (the checkpoint is saved).
pub async fn run(a: args::ReencryptArgs) -> Result<i32> {
    let ctx = Context::resolve(&super::flags(
        &a.source,
        Some(&a.etcd),
        a.cluster.kubeconfig.clone(),
    ))?;
    let etcd = ctx.etcd().await?;
    let kubeconfig = ctx.settings.kubeconfig.as_ref().map(|k| k.value.as_path());
    let api = atrest::kube::connect(kubeconfig).await?;
    let loaded = &ctx.config;
    let checkpoint = a.checkpoint.clone().unwrap_or_else(|| {
        ctx.state_dir(a.cluster.state_dir.as_deref())
            .join(atrest::rotate::CHECKPOINT_FILE)
    });
    let opts = atrest::migrate::ReencryptOptions {
        resources: parse_resources(&a.resources)?,
        dry_run: a.dry_run,
        checkpoint,
        resume: a.resume,
        patience: Duration::from_secs(a.etcd.etcd_patience),
        stop: super::stop_on_signal(),
        max_list: a.max_list,
        ..a.rewrite.options()
    };
    let plugins = connect_plugins(&loaded.config, true).await?;
    // Before the first write (never when there is nothing to rewrite): every apiserver runs
    // this config, and has seen the KMS plugins' current key IDs.
    let apiservers = atrest::rotate::Apiservers {
        base: api.clone(),
        explicit: a.cluster.apiservers.clone(),
    };
    let preflight = {
        let (apiservers, api, plugins) = (&apiservers, &api, plugins.as_ref());
        Box::pin(async move {
            check_loaded(apiservers, loaded)
                .await
                .map_err(|e| format!("{e:#}"))?;
            if let Some(p) = plugins {
                check_kms_key_ids(api, p)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
            }
            Ok(())
        })
    };
    let mut engine = atrest::migrate::Reencrypt {
        preflight: Some(preflight),
        config: loaded,
        plugins: plugins.as_ref(),
        etcd: &etcd,
        etcd_prefix: &ctx.target.prefix,
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
    let report = report.map_err(|e| {
        let resumable = matches!(
            e,
            atrest::migrate::MigrateError::Forbidden { .. }
                | atrest::migrate::MigrateError::NotLoaded { .. }
        );
        let e = anyhow::Error::from(e);
        if resumable {
            e.context("stopped; progress is saved: run again with --resume to continue")
        } else {
            e
        }
    })?;
    match a.output {
        Output::Json => render::print_json(&report),
        Output::Table => print!("{}", reencrypt_table(&report)),
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

/// Refuses to write when the apiserver reports another config than the file: its writes would
/// use another write key.
async fn check_loaded(
    apiservers: &atrest::rotate::Apiservers,
    loaded: &LoadedConfig,
) -> Result<()> {
    let c = apiservers.survey(&loaded.hash).await;
    let lagging: Vec<String> = c
        .apiservers
        .iter()
        .filter(|a| a.config_hash.as_ref().is_some_and(|h| *h != loaded.hash))
        .map(|a| format!("  - {}: reports {}", a.name(), a.reported()))
        .collect();
    if !lagging.is_empty() {
        return Err(anyhow!(
            "{} is {}, but not every apiserver has loaded it yet:\n{}\n  \
             With --encryption-provider-config-automatic-reload an apiserver reloads within about a minute; without it, restart it. Then run again.",
            loaded.path.display(),
            loaded.hash,
            lagging.join("\n")
        ));
    }
    for a in c.apiservers.iter().filter(|a| a.config_hash.is_none()) {
        tracing::warn!(
            "{}: {}; the result is still proven in etcd",
            a.name(),
            a.reported()
        );
    }
    Ok(())
}

/// Refuses to rewrite KMS values before the apiserver has seen the plugin's current key ID
/// (it would not consider the old ones stale, and write nothing).
async fn check_kms_key_ids(
    api: &atrest::kube::Api,
    plugins: &atrest::kms::KmsPlugins,
) -> Result<()> {
    let seen = atrest::kube::metrics::kms_key_id_hashes(api)
        .await
        .unwrap_or_default();
    for (provider, key_id) in plugins.current_key_ids() {
        let want = atrest::rotate::converge::id_hash(&key_id);
        if seen.get(&provider).is_some_and(|h| *h != want) {
            return Err(anyhow!(
                "the apiserver at {} has not seen KMS provider {provider}'s current key ID yet (its last Status gave {}, the plugin now reports a key ID hashing to {want}); kube-apiserver asks about once a minute: wait, then run again",
                api.url,
                seen[&provider]
            ));
        }
    }
    Ok(())
}
