//! `atrest rotate …`: the runbook, one guarded step at a time.

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::cli::args::{self, RotateCommand as R};
use crate::cli::progress::Bar;
use crate::cli::{EXIT_INTERRUPTED, EXIT_OK};
use atrest::GroupResource;
use atrest::cluster::Context;
use atrest::keys::KeyProvider;
use atrest::rotate::{PrepareRequest, Rotator, SnapshotChoice, TargetSpec};

fn request(p: &args::RotatePrepareArgs) -> Result<PrepareRequest> {
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
}

/// Exit 0 when the step is done, 2 when refused or failed, 3 when interrupted.
pub async fn run(c: args::RotateCommand) -> Result<i32> {
    let (common, prepare) = match &c {
        R::Prepare(p) | R::Run(p) => (p.common.clone(), Some(request(p)?)),
        R::Promote(a) | R::Reencrypt(a) | R::Abort(a) => (a.clone(), None),
        R::Prune(p) => (p.common.clone(), None),
    };
    let flags = super::flags(
        &common.source,
        Some(&common.etcd),
        common.cluster.kubeconfig.clone(),
    );
    let ctx = Context::resolve(&flags)?;
    if !matches!(c, R::Reencrypt(_)) {
        // Every step but reencrypt edits the config file.
        atrest::cluster::refuse_managed_config(&ctx.settings)?;
    }
    let etcd = ctx.etcd().await?;
    let kubeconfig = ctx.settings.kubeconfig.as_ref().map(|k| k.value.as_path());
    let api = atrest::kube::connect(kubeconfig).await?;
    let say = |m: &str| eprintln!("atrest: {m}");
    let rotator = Rotator {
        config_path: ctx.config.path.clone(),
        state_dir: ctx.state_dir(common.cluster.state_dir.as_deref()),
        etcd: &etcd,
        etcd_prefix: ctx.target.prefix.clone(),
        apiservers: atrest::kube::Apiservers {
            base: api,
            explicit: common.cluster.apiservers.clone(),
        },
        wait_timeout: Duration::from_secs(common.timeout),
        automatic_reload: ctx.manifest_reload(),
        canary_namespace: common.canary_namespace.clone(),
        sync: common
            .sync_command
            .clone()
            .map(|command| atrest::rotate::SyncCommand {
                command,
                timeout: Duration::from_secs(common.timeout),
            }),
        reencrypt: atrest::migrate::ReencryptOptions {
            patience: Duration::from_secs(common.etcd.etcd_patience),
            stop: super::stop_on_signal(),
            ..common.rewrite.options()
        },
        say: &say,
    };
    // One rotate step at a time per state folder: a timer firing while another run (or an
    // admin's step) is under way is refused, never started twice. Held until this process ends.
    let _lock = atrest::rotate::schedule::RotationLock::acquire(&rotator.state_dir)?;
    if let R::Run(p) = &c
        && let Some(max_age) = p.if_older_than
        && !rotation_due(&rotator, &ctx, p, max_age).await?
    {
        return Ok(EXIT_OK);
    }
    let mut bar = Bar::new("re-encrypting", common.rewrite.progress);
    // `prune --remove-snapshots` after a finished rotation only removes snapshots.
    let only_remove = matches!(&c, R::Prune(p) if p.remove_snapshots)
        && atrest::rotate::State::load(&rotator.state_dir, &rotator.config_path)?
            .rotation
            .is_none();
    let result = match (&c, &prepare) {
        (R::Prune(_), _) if only_remove => Ok(()),
        (R::Prepare(_), Some(req)) => rotator.prepare(req).await,
        (R::Run(_), Some(req)) => rotator.run(req, &mut bar).await,
        (R::Promote(_), _) => rotator.promote().await,
        (R::Reencrypt(_), _) => rotator.reencrypt(&mut bar).await.map(|_| ()),
        (R::Prune(_), _) => rotator.prune().await.map(|_| ()),
        (R::Abort(_), _) => rotator.abort().await,
        (R::Prepare(_) | R::Run(_), None) => unreachable!("prepare and run carry their request"),
    };
    bar.finish();
    match result {
        Ok(()) => {
            let st = atrest::rotate::State::load(&rotator.state_dir, &rotator.config_path)?;
            match &st.rotation {
                Some(r) => crate::cli::outln!(
                    "rotation to {}: stage {}; next: {}",
                    r.target,
                    r.stage,
                    r.stage.next_command()
                ),
                None => crate::cli::outln!(
                    "no rotation in progress; config {}",
                    st.expected_hash.as_deref().unwrap_or("-")
                ),
            }
            let finished = st.rotation.is_none() && st.history.last().is_some_and(|r| !r.aborted);
            if finished && matches!(c, R::Prune(_) | R::Run(_)) {
                let remove = matches!(&c, R::Prune(p) if p.remove_snapshots);
                // The rotation changed the config: judge what is left by the new one.
                let now = Context::resolve(&flags)?;
                after_prune(&now, &etcd, &rotator.state_dir, remove).await?;
            }
            Ok(EXIT_OK)
        }
        Err(e @ atrest::rotate::RotateError::NothingToDo { .. }) if matches!(c, R::Run(_)) => {
            crate::cli::outln!("{e}");
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

/// After a finished rotation: what old copies are left and how to drop them; with
/// `--remove-snapshots`, atrest's own snapshots of finished rotations are listed, then deleted.
async fn after_prune(
    ctx: &Context,
    etcd: &etcd_client::Client,
    state_dir: &std::path::Path,
    remove_snapshots: bool,
) -> Result<()> {
    eprintln!("atrest: looking for old copies (etcd history, members' free pages, snapshots)…");
    let survey = ctx.residue_survey(etcd, state_dir, 10).await?;
    crate::cli::out!(
        "{}",
        crate::cli::render::residue::after_rotation(&survey, remove_snapshots)
    );
    if remove_snapshots {
        let removed =
            atrest::cluster::residue::remove_finished_snapshots(state_dir, &ctx.config.path)?;
        if removed.is_empty() {
            crate::cli::outln!("No snapshot of a finished rotation to remove.");
        }
        for p in removed {
            crate::cli::outln!("removed {}", p.display());
        }
    }
    Ok(())
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
        E::Journal(JournalError::Sync(f)) => format!(
            "The write is not committed: fix the command (or the node it copies to), then run the same atrest command again; it runs the sync again before anything else. {} on this node is the file to copy.",
            f.path.display()
        ),
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

/// `rotate run --if-older-than`: a rotation in progress is resumed; otherwise the rotation runs
/// only when a write key it would replace is past the age (or, for aesgcm, the write) limit.
async fn rotation_due(
    rotator: &Rotator<'_>,
    ctx: &Context,
    p: &args::RotatePrepareArgs,
    max_age: Duration,
) -> Result<bool> {
    let st = atrest::rotate::State::load(&rotator.state_dir, &rotator.config_path)?;
    if let Some(r) = &st.rotation {
        crate::cli::outln!(
            "a rotation to {} is in progress (stage {}): resuming it",
            r.target,
            r.stage
        );
        return Ok(true);
    }
    let policy = match &p.policy {
        Some(f) => atrest::report::Policy::load(f)?,
        None => atrest::report::Policy::default(),
    };
    let revision = atrest::rotate::snapshot::current_revision(rotator.etcd).await?;
    let resources: Vec<GroupResource> = p
        .resources
        .iter()
        .map(|r| GroupResource::parse(r))
        .collect();
    let s = atrest::rotate::schedule::schedule(
        &ctx.config.config,
        &resources,
        &st,
        atrest::rotate::schedule::Limits {
            max_age,
            aesgcm_max_writes: policy.aesgcm_max_writes,
        },
        chrono::Utc::now(),
        revision,
    );
    for k in &s.keys {
        crate::cli::outln!(
            "{}: {}{}",
            k.label,
            k.why,
            if k.due { " — due" } else { "" }
        );
    }
    if !s.due() {
        crate::cli::outln!("no write key is due for rotation: nothing to do");
    }
    Ok(s.due())
}
