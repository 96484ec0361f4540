//! `atrest rotate …`: the runbook, one guarded step at a time.

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::cli::args::{self, RotateCommand as R};
use crate::cli::progress::Bar;
use crate::cli::{EXIT_INTERRUPTED, EXIT_OK};
use atrest::cluster::settings::Flags;
use atrest::cluster::{Context, parse_rule_resources, refuse_managed_config};
use atrest::migrate::ReencryptOptions;
use atrest::model::KeyProvider;
use atrest::rotate::SyncCommand;
use atrest::rotate::schedule::{Due, Limits};
use atrest::rotate::{PrepareRequest, Rotator, SnapshotChoice, TargetSpec};
use atrest::state::{RotationLock, RotationState};

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
        resources: parse_rule_resources(&p.resources),
        snapshot: match (&p.snapshot, p.no_snapshot) {
            (_, true) => SnapshotChoice::Skip,
            (Some(path), false) => SnapshotChoice::Path(path.clone()),
            (None, false) => SnapshotChoice::Default,
        },
    })
}

/// What one rotate step takes beyond the flags every step has.
struct StepArgs<'a> {
    common: &'a args::RotateArgs,
    prepare: Option<PrepareRequest>,
    /// How the re-encryption writes (reencrypt and run only).
    rewrite: Option<&'a args::RewriteArgs>,
    canary_namespace: &'a str,
}

fn step_args(c: &args::RotateCommand) -> Result<StepArgs<'_>> {
    const CANARY: &str = "kube-system";
    Ok(match c {
        R::Prepare(p) => StepArgs {
            common: &p.common,
            prepare: Some(request(p)?),
            rewrite: None,
            canary_namespace: CANARY,
        },
        R::Run(r) => StepArgs {
            common: &r.prepare.common,
            prepare: Some(request(&r.prepare)?),
            rewrite: Some(&r.rewrite),
            canary_namespace: &r.canary_namespace,
        },
        R::Promote(p) => StepArgs {
            common: &p.common,
            prepare: None,
            rewrite: None,
            canary_namespace: &p.canary_namespace,
        },
        R::Reencrypt(r) => StepArgs {
            common: &r.common,
            prepare: None,
            rewrite: Some(&r.rewrite),
            canary_namespace: CANARY,
        },
        R::Prune(p) => StepArgs {
            common: &p.common,
            prepare: None,
            rewrite: None,
            canary_namespace: CANARY,
        },
        R::Abort(a) | R::Adopt(a) => StepArgs {
            common: a,
            prepare: None,
            rewrite: None,
            canary_namespace: CANARY,
        },
    })
}

/// Exit 0 when the step is done, 2 when refused or failed, 3 when interrupted.
pub(crate) async fn run(c: args::RotateCommand) -> Result<i32> {
    let step = step_args(&c)?;
    let common = step.common;
    let flags = super::flags(
        &common.source,
        Some(&common.etcd),
        common.cluster.kubeconfig.clone(),
    );
    let ctx = Context::resolve(&flags)?;
    // The distribution writes the config and runs its own rotation (and re-encryption): no
    // step of atrest's runbook starts there, not even `rotate reencrypt`, which would write the
    // state folder and rewrite objects as a rotation step. `atrest reencrypt` still can.
    refuse_managed_config(&ctx.settings)?;
    let etcd = ctx.etcd().await?;
    let say = |m: &str| eprintln!("atrest: {m}");
    let rotator = rotator(&ctx, &step, &etcd, &say).await?;
    // One rotate step at a time per state folder: a timer firing while another run (or an
    // admin's step) is under way is refused, never started twice. Held until this process ends.
    let _lock = RotationLock::acquire(&rotator.state_dir)?;
    seal_if_asked(&common.seal, &rotator.state_dir, &say)?;
    if let R::Run(r) = &c
        && let Some(max_age) = r.if_older_than
        && !rotation_due(&rotator, &ctx, r, max_age).await?
    {
        return Ok(EXIT_OK);
    }
    // Only the steps that re-encrypt show re-encryption progress.
    let mut bar = Bar::new(
        "re-encrypting",
        step.rewrite
            .map(|r| r.progress)
            .unwrap_or(crate::cli::progress::ProgressMode::None),
    );
    // What `scan --history` and `report` advise: `prune --remove-snapshots` after a rotation.
    let only_remove = matches!(&c, R::Prune(p) if p.remove_snapshots)
        && rotator.prune_only_removes_snapshots()?;
    let result = match (&c, &step.prepare) {
        (R::Prune(_), _) if only_remove => Ok(()),
        (R::Prepare(_), Some(req)) => rotator.prepare(req).await,
        (R::Run(_), Some(req)) => rotator.run(req, &mut bar).await,
        (R::Promote(_), _) => rotator.promote().await,
        (R::Reencrypt(_), _) => rotator.reencrypt(&mut bar).await.map(|_| ()),
        (R::Prune(_), _) => rotator.prune().await.map(|_| ()),
        (R::Abort(_), _) => rotator.abort().await,
        (R::Adopt(_), _) => rotator.adopt().await,
        (R::Prepare(_) | R::Run(_), None) => unreachable!("prepare and run carry their request"),
    };
    bar.finish();
    match result {
        Ok(()) => {
            done(&c, &rotator, only_remove, &flags, &etcd).await?;
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

/// `--seal-to`: custody first, so this step's backup and prune already seal.
fn seal_if_asked(
    seal: &args::SealFlags,
    state_dir: &std::path::Path,
    say: &dyn Fn(&str),
) -> Result<()> {
    if seal.seal_to.is_empty() {
        return Ok(());
    }
    let done = atrest::keys::custody::seal_state(state_dir, &seal.seal_to, seal.seal_threshold)?;
    if done.new_custody || done.archived_keys + done.backups > 0 {
        say(&format!(
            "custody set: {} archived keys and {} backups sealed, their plaintext removed",
            done.archived_keys, done.backups
        ));
    }
    Ok(())
}

/// The rotator of this step: the state folder to write, the apiservers, the timeouts, the sync
/// command and how re-encryption writes.
async fn rotator<'a>(
    ctx: &Context,
    step: &StepArgs<'_>,
    etcd: &'a etcd_client::Client,
    say: &'a (dyn Fn(&str) + Sync),
) -> Result<Rotator<'a>> {
    let common = step.common;
    Ok(Rotator {
        config_path: ctx.config.path.clone(),
        state_dir: ctx
            .state_dir(common.cluster.state_dir.as_deref())
            .to_write(say)?,
        etcd,
        etcd_prefix: ctx.target.prefix.clone(),
        apiservers: ctx.apiservers(&common.cluster.apiservers).await?,
        wait_timeout: Duration::from_secs(common.timeout),
        automatic_reload: ctx.manifest_reload(),
        canary_namespace: step.canary_namespace.to_string(),
        sync: common.sync_command.clone().map(|command| SyncCommand {
            command,
            timeout: Duration::from_secs(common.timeout),
        }),
        reencrypt: ReencryptOptions {
            patience: Duration::from_secs(common.etcd.etcd_patience),
            stop: super::stop_on_signal(),
            ..step
                .rewrite
                .map(args::RewriteArgs::options)
                .unwrap_or_default()
        },
        say,
    })
}

/// A step done: where the rotation stands and the next command; after a finished rotation (or
/// `prune --remove-snapshots` alone), the old copies left and how to drop them.
async fn done(
    c: &args::RotateCommand,
    rotator: &Rotator<'_>,
    only_remove: bool,
    flags: &Flags,
    etcd: &etcd_client::Client,
) -> Result<()> {
    let st = RotationState::load(&rotator.state_dir, &rotator.config_path)?;
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
    if only_remove || (st.finished() && matches!(c, R::Prune(_) | R::Run(_))) {
        let (remove, backup_dirs) = match c {
            R::Prune(p) => (p.remove_snapshots, p.backup_dirs.clone()),
            _ => (false, Vec::new()),
        };
        // The rotation changed the config: judge what is left by the new one.
        let now = Context::resolve(flags)?;
        after_prune(&now, etcd, &rotator.state_dir, &backup_dirs, remove).await?;
    }
    Ok(())
}

/// After a finished rotation: what old copies are left and how to drop them; with
/// `--remove-snapshots`, atrest's own snapshots (of finished rotations, and any file of its
/// snapshots folder no rotation records) are listed, then deleted.
async fn after_prune(
    ctx: &Context,
    etcd: &etcd_client::Client,
    state_dir: &std::path::Path,
    backup_dirs: &[std::path::PathBuf],
    remove_snapshots: bool,
) -> Result<()> {
    eprintln!("atrest: looking for old copies (etcd history, members' free pages, backup files)…");
    let survey = ctx.residue_survey(etcd, state_dir, backup_dirs, 10).await?;
    crate::cli::out!(
        "{}",
        crate::cli::render::old_copies::after_rotation(&survey, remove_snapshots)
    );
    if remove_snapshots {
        let backups = survey.backups.clone().unwrap_or_default();
        let removed =
            atrest::cluster::survey::remove_snapshots(state_dir, &ctx.config.path, &backups)?;
        if removed.is_empty() {
            crate::cli::outln!("No snapshot to remove.");
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
            "Run `atrest rotate reencrypt` again (or `atrest reencrypt`), then prune. Objects listed as unknown-key belong to a resource whose rule lacks the key: `atrest scan` prints the rule that gives it back.".into()
        }
        E::Journal(JournalError::Sync(f)) => format!(
            "The write is not committed: fix the command (or the node it copies to), then run the same atrest command again; it runs the sync again before anything else. {} on this node is the file to copy.",
            f.path.display()
        ),
        E::Journal(JournalError::Changed(_)) => "A rotation is in progress, so atrest stops rather than overwrite the edit. To keep the edit, `atrest rotate adopt` continues the rotation from it (once a fresh scan proves it keeps every key the stored data needs); to drop it, `atrest rotate abort` undoes the rotation (before promote: the file goes back to how it was before prepare, byte for byte).".to_string(),
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

/// `rotate run --if-older-than` ([`Rotator::due`]), said on stdout.
async fn rotation_due(
    rotator: &Rotator<'_>,
    ctx: &Context,
    p: &args::RotateRunArgs,
    max_age: Duration,
) -> Result<bool> {
    let policy = super::policy(p.policy.as_deref())?;
    let limits = Limits {
        max_age,
        aesgcm_max_writes: policy.aesgcm_max_writes,
    };
    let resources = parse_rule_resources(&p.prepare.resources);
    let due = rotator.due(&ctx.config.config, &resources, limits).await?;
    match &due {
        Due::InProgress(r) => crate::cli::outln!(
            "a rotation to {} is in progress (stage {}): resuming it",
            r.target,
            r.stage
        ),
        Due::Scheduled(s) => {
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
        }
    }
    Ok(due.due())
}
