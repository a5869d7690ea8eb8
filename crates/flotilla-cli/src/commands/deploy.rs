//! `flotilla deploy`: build the plan from the selection, `[defaults]` and flags — or, resuming,
//! from what the control store recorded — run it with live progress, journaled, stop
//! gracefully on the first signal, and choose the exit code.

use std::sync::Arc;

use std::path::Path;

use flotilla_coordinator::{
    CommandHook, DeploymentPlan, DeploymentReport, Outcome, PlanError, Stop,
};
use flotilla_core::DeploymentStatus;
use flotilla_runner::ErrorClass;

use super::resume::{Choices, Resume};
use super::{CommandResult, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, Failure, usage};
use crate::approve::CliApprover;
use crate::cli::{Cli, DeployArgs, Output};
use crate::project::Project;
use crate::{dry_run, render, signals};

pub(crate) async fn deploy(cli: &Cli, args: &DeployArgs) -> CommandResult {
    let project = Project::with_fleets(cli).await?;
    for name in &args.approve {
        project.environment(name)?;
    }
    let json = cli.output == Output::Json;
    let control = if args.dry_run {
        None
    } else {
        let wait = args
            .lock_timeout
            .or(project.config.defaults.lock_timeout)
            .unwrap_or(flotilla_runner::LockRequest::DEFAULT_WAIT);
        Some(crate::control::control(&project, args.audit_log.as_deref(), wait).await?)
    };
    let shard = super::resume::shard(args)?;
    let choices = match chosen(&project, args).await? {
        Ok(choices) => choices,
        Err(nothing) => {
            render::lines(&[nothing], json);
            return Ok(EXIT_OK);
        }
    };
    let (plan, resume) = match (&args.resume, &control) {
        (Some(id), Some(control)) => {
            let resume = Resume::load(control, id).await?;
            let choices = choices.over(&resume.choices);
            let plan = plan(&project, &choices, Some(&resume), args, shard)?;
            resume.check(&plan)?;
            (plan, Some(resume))
        }
        _ => (plan(&project, &choices, None, args, shard)?, None),
    };
    if let Some(nothing) = super::resume::nothing_to_do(&plan, resume.as_ref(), shard) {
        render::lines(&[nothing], json);
        return Ok(EXIT_OK);
    }
    let approver = CliApprover::new(&args.approve, args.yes, json, "Deploy to");
    let mut coordinator = project.coordinator(Arc::new(approver));
    if let Some(control) = control {
        coordinator = coordinator.with_control(control);
    }
    if let Some(hook) = hook(&project, args) {
        coordinator = coordinator.with_hook(Arc::new(hook));
    }
    let mut events = coordinator.subscribe();
    let mut progress = render::Progress::new(cli.output, &plan.environment_names());
    let stop = Stop::new();
    let signal = signals::watch(stop.clone());
    let deployment = coordinator.deploy_until(&plan, stop);
    tokio::pin!(deployment);
    let report = loop {
        tokio::select! {
            biased;
            event = events.recv() => {
                if let Ok(event) = event {
                    progress.event(&event);
                }
            }
            report = &mut deployment => {
                while let Ok(event) = events.try_recv() {
                    progress.event(&event);
                }
                break report.map_err(plan_failure)?;
            }
        }
    };
    progress.finish();
    if report.dry_run && report.outcome != Outcome::Refused {
        dry_run::print(&report, &plan.migrations, args.show_sql, cli.output);
    }
    render::report(&report, cli.output);
    if let Some(file) = args.write_failed.as_ref().filter(|_| !report.dry_run) {
        write_failed(file, &report)?;
    }
    Ok(signal.exit_code().unwrap_or_else(|| exit_code(&report)))
}

/// What the command line chooses, with `--from-file`, `--only-pending` and `--limit` made into
/// the names they leave; `Err` says why there is nothing to deploy.
async fn chosen(project: &Project, args: &DeployArgs) -> Result<Result<Choices, String>, Failure> {
    let mut choices = Choices::of(args);
    if let Some(file) = &args.from_file {
        choices.environments = names_from_file(file)?;
        if choices.environments.is_empty() {
            return Ok(Err(format!(
                "{} names no environment: nothing to deploy",
                file.display()
            )));
        }
    }
    if args.only_pending || args.limit.is_some() {
        let Some(chunk) = chunk(project, &choices, args).await? else {
            return Ok(Err(
                "nothing pending in the selection: nothing to deploy".to_owned()
            ));
        };
        choices.environments = chunk;
        choices.tags.clear();
        choices.all = false;
    }
    Ok(Ok(choices))
}

/// The environments `file` names, one per line; blank lines and `#` comments skipped.
fn names_from_file(file: &Path) -> Result<Vec<String>, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| usage(format!("--from-file {}: cannot read: {e}", file.display())))?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The selection narrowed to what `--only-pending` and `--limit` keep, in plan order;
/// `None` when that is nothing.
async fn chunk(
    project: &Project,
    choices: &Choices,
    args: &DeployArgs,
) -> Result<Option<Vec<String>>, Failure> {
    if args.limit == Some(0) {
        return Err(usage("--limit must be at least 1"));
    }
    let selection = choices
        .selection()
        .ok_or_else(|| usage("choose environments: -e a,b, --tag TAG or --all"))?;
    let mut selected = project.registry.select(&selection).map_err(usage)?;
    if args.only_pending {
        // Passwords read for the probes are kept for the deploy: each source once.
        if selected.iter().any(|e| e.password_source.is_some()) {
            selected = flotilla_coordinator::resolve_passwords(&selected)
                .await
                .map_err(usage)?
                .into_owned();
            for environment in &selected {
                project
                    .registry
                    .register(environment.clone())
                    .map_err(usage)?;
            }
        }
        let coordinator =
            project.coordinator(Arc::new(flotilla_coordinator::ApproveList::default()));
        let statuses = coordinator
            .status(&selected, project.migrations()?)
            .await
            .map_err(usage)?;
        // Unreadable ones stay: they fail at their turn and are reported, not hidden.
        let current: std::collections::HashSet<String> = statuses
            .into_iter()
            .filter(|status| status.pending == Some(0))
            .map(|status| status.environment)
            .collect();
        selected.retain(|environment| !current.contains(&environment.name));
    }
    if let Some(limit) = args.limit {
        selected.truncate(limit);
    }
    Ok((!selected.is_empty()).then(|| selected.into_iter().map(|e| e.name).collect()))
}

/// The per-environment command hook: `--on-tenant`, else `[hooks] on_tenant`.
fn hook(project: &Project, args: &DeployArgs) -> Option<CommandHook> {
    let hooks = &project.config.hooks;
    let command = args.on_tenant.clone().or_else(|| hooks.on_tenant.clone())?;
    Some(CommandHook {
        command,
        dir: project.base.clone(),
        timeout: args.hook_timeout.or(hooks.timeout).unwrap_or(HOOK_TIMEOUT),
    })
}

/// How long one hook run may take by default.
const HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes the environments that did not succeed to `file`, one per line (an empty file when
/// all did), for `--from-file`.
fn write_failed(file: &Path, report: &DeploymentReport) -> Result<(), Failure> {
    let mut text = String::new();
    for environment in &report.environments {
        if environment.status != DeploymentStatus::Success {
            text.push_str(&environment.environment);
            text.push('\n');
        }
    }
    std::fs::write(file, text).map_err(|e| Failure {
        code: EXIT_FAILED,
        message: format!("--write-failed {}: cannot write: {e}", file.display()),
    })
}

/// A plan-level error: the control store unusable is a failure (exit 1), the rest usage.
fn plan_failure(error: PlanError) -> Failure {
    use flotilla_coordinator::control::{ControlError, Refusal};
    match error {
        // Another live run holds this part of the deployment: a refusal, like a held lock.
        PlanError::Control(
            error @ ControlError::Refused {
                refusal: Refusal::Held { .. },
                ..
            },
        ) => Failure {
            code: EXIT_REFUSED,
            message: error.to_string(),
        },
        // A taken id, a missing deployment, another plan: the command line asked for it.
        PlanError::Control(error @ ControlError::Refused { .. }) => usage(error),
        PlanError::Control(error) => Failure {
            code: EXIT_FAILED,
            message: error.to_string(),
        },
        other => usage(other),
    }
}

/// The plan: the selection, then `[defaults]`, then what the flags (or, resuming, the
/// recorded flags) say; sharded. A resume plans every selected environment again: the
/// targets' own history, read by pre-flight, says which are up to date — not the journal.
fn plan(
    project: &Project,
    args: &Choices,
    resume: Option<&Resume>,
    flags: &DeployArgs,
    shard: Option<flotilla_coordinator::Shard>,
) -> Result<DeploymentPlan, Failure> {
    let selection = args
        .selection()
        .ok_or_else(|| usage("choose environments: -e a,b, --tag TAG or --all"))?;
    let mut builder = DeploymentPlan::builder(&project.registry)
        .select(selection)
        .migrations(project.migrations()?)
        .defaults(&project.config.defaults)
        .map_err(usage)?
        .verify_health(!args.skip_health_check)
        .auto_rollback(!args.no_rollback)
        .dry_run(flags.dry_run)
        .rehearse(!args.no_rehearse)
        .record(serde_json::to_value(args).map_err(usage)?);
    match (resume, &flags.deployment_id) {
        (Some(resume), _) => {
            builder = builder
                .deployment_id(resume.deployment_id.clone())
                .resuming();
        }
        (None, Some(id)) => builder = builder.deployment_id(crate::control::deployment_id(id)?),
        (None, None) if shard.is_some() => {
            return Err(usage(
                "a shard needs --deployment-id ID: every shard of a deployment names the same id",
            ));
        }
        (None, None) => {}
    }
    if let Some(shard) = shard {
        builder = builder.shard(shard);
    }
    if let Some(kind) = &args.strategy {
        builder = builder.kind(kind.parse().map_err(usage)?);
    }
    if let Some(size) = args.batch_size {
        builder = builder.batch_size(size);
    }
    if let Some(percent) = args.canary_percent {
        builder = builder.canary_percentage(percent);
    }
    if let Some(max) = args.max_concurrent {
        builder = builder.max_concurrent(max);
    }
    if args.fail_fast {
        builder = builder.fail_fast(true);
    }
    if args.isolate {
        builder = builder.isolate(true);
    }
    if let Some(wait) = args.lock_timeout {
        builder = builder.lock_timeout(wait);
    }
    if let Some(lease) = args.lease {
        builder = builder.lease(lease);
    }
    builder.build().map_err(usage)
}

fn exit_code(report: &DeploymentReport) -> u8 {
    match report.outcome {
        Outcome::Succeeded | Outcome::DryRun => EXIT_OK,
        Outcome::Refused | Outcome::Paused => EXIT_REFUSED,
        Outcome::Interrupted | Outcome::RollbackFailed => EXIT_FAILED,
        Outcome::Failed | Outcome::RolledBack => {
            let classes: Vec<ErrorClass> = report
                .environments
                .iter()
                .filter(|e| e.status == DeploymentStatus::Failed)
                .filter_map(|e| e.error.as_ref().map(|error| error.class))
                .collect();
            if !classes.is_empty() && classes.iter().all(|c| *c == ErrorClass::LockTimeout) {
                EXIT_REFUSED
            } else {
                EXIT_FAILED
            }
        }
    }
}
