//! `flotilla deploy`: build the plan from the selection, `[defaults]` and flags, run it with
//! live progress, stop gracefully on the first signal, and choose the exit code.

use std::sync::Arc;

use flotilla_coordinator::{DeploymentPlan, DeploymentReport, Outcome, Stop};
use flotilla_core::DeploymentStatus;
use flotilla_runner::ErrorClass;

use super::{CommandResult, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, usage};
use crate::approve::CliApprover;
use crate::cli::{Cli, DeployArgs, Output};
use crate::project::{Project, selection};
use crate::{dry_run, render, signals};

pub(crate) async fn deploy(cli: &Cli, args: &DeployArgs) -> CommandResult {
    let project = Project::load(cli)?;
    let plan = plan(&project, args)?;
    for name in &args.approve {
        project.environment(name)?;
    }
    let json = cli.output == Output::Json;
    let approver = CliApprover::new(&args.approve, args.yes, json, "Deploy to");
    let coordinator = project.coordinator(Arc::new(approver));
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
                break report.map_err(usage)?;
            }
        }
    };
    progress.finish();
    if report.dry_run && report.outcome != Outcome::Refused {
        dry_run::print(&report, &plan.migrations, args.show_sql, cli.output);
    }
    render::report(&report, cli.output);
    Ok(signal.exit_code().unwrap_or_else(|| exit_code(&report)))
}

/// The plan: the selection, then `[defaults]`, then what the flags say.
fn plan(project: &Project, args: &DeployArgs) -> Result<DeploymentPlan, super::Failure> {
    let selection = selection(&args.select)
        .ok_or_else(|| usage("choose environments: -e a,b, --tag TAG or --all"))?;
    let mut builder = DeploymentPlan::builder(&project.registry)
        .select(selection)
        .migrations(project.migrations()?)
        .defaults(&project.config.defaults)
        .map_err(usage)?
        .verify_health(!args.skip_health_check)
        .auto_rollback(!args.no_rollback)
        .dry_run(args.dry_run)
        .rehearse(!args.no_rehearse);
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
        Outcome::Refused => EXIT_REFUSED,
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
