//! `flotilla rollback`: revert the newest migrations of one environment, through the
//! approval gate, choosing what to revert under the environment's lock.

use std::sync::Arc;

use flotilla_coordinator::{RollbackError, RollbackPlan};
use flotilla_core::Version;
use flotilla_runner::{LockRequest, Revert, RunnerError};

use super::{CommandResult, EXIT_OK, EXIT_REFUSED, Failure, runner_failure, usage};
use crate::approve::CliApprover;
use crate::cli::{Cli, Output, RollbackArgs};
use crate::project::Project;
use crate::render;

pub(crate) async fn rollback(cli: &Cli, args: &RollbackArgs) -> CommandResult {
    let project = Project::with_fleets(cli).await?;
    let environment = project.environment(&args.environment)?;
    let revert = match (&args.steps, &args.to) {
        (Some(steps), _) => Revert::Newest(*steps),
        (None, Some(to)) => Revert::NewerThan(
            Version::parse(to)
                .ok_or_else(|| usage(format!("`{to}` is not a migration version")))?,
        ),
        (None, None) => return Err(usage("pass --steps N or --to VERSION")),
    };
    let defaults = &project.config.defaults;
    let plan = RollbackPlan {
        lock_timeout: args
            .lock_timeout
            .or(defaults.lock_timeout)
            .unwrap_or(LockRequest::DEFAULT_WAIT),
        lease: args
            .lease
            .or(defaults.lease)
            .unwrap_or(LockRequest::DEFAULT_LEASE),
        ..RollbackPlan::new(environment.clone(), project.migrations()?, revert)
    };
    let json = cli.output == Output::Json;
    let approver = CliApprover::new(&[], args.yes, json, "Roll back");
    let result = project
        .coordinator(Arc::new(approver))
        .rollback(&plan)
        .await
        .map_err(|error| match error {
            RollbackError::NotApproved(name) => Failure {
                code: EXIT_REFUSED,
                message: format!("{name} requires approval; pass --yes to roll it back"),
            },
            RollbackError::Runner(RunnerError::NotApplied { .. }) => usage(format!(
                "{error}; see `flotilla history -e {}`",
                environment.name
            )),
            RollbackError::Runner(other) => runner_failure(other),
            other => usage(other),
        })?;
    let reverted: Vec<String> = result.applied.iter().map(ToString::to_string).collect();
    let line = if reverted.is_empty() {
        format!("{}: nothing to roll back", environment.name)
    } else {
        format!(
            "{}: rolled back {} (now at {})",
            environment.name,
            reverted.join(", "),
            result
                .version_after
                .as_ref()
                .map_or("no migration".to_owned(), ToString::to_string)
        )
    };
    render::lines(&[line], json);
    Ok(EXIT_OK)
}
