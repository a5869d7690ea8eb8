//! The read-only commands: `status`, `history`, and `lock status` / `lock release`
//! (the one that writes: it breaks a lock whose holder is gone).

use std::sync::Arc;

use flotilla_coordinator::{ApproveList, DeploymentCoordinator};

use super::{CommandResult, EXIT_FAILED, EXIT_OK, runner_failure, usage};
use crate::cli::{Cli, LockCommand, Output, SelectArgs};
use crate::project::Project;
use crate::render::{self, StatusRow};

/// A coordinator for commands that deploy nothing (so approve nothing).
pub(super) fn reader(project: &Project) -> DeploymentCoordinator {
    project.coordinator(Arc::new(ApproveList::default()))
}

pub(crate) async fn status(cli: &Cli, select: &SelectArgs) -> CommandResult {
    let project = Project::load(cli)?;
    let migrations = project.migrations()?;
    let environments = project.select(select)?;
    let statuses = reader(&project)
        .status(&environments, migrations)
        .await
        .map_err(usage)?;
    let healthy = statuses.iter().all(|s| s.healthy());
    let rows: Vec<StatusRow> = statuses.into_iter().map(StatusRow::from).collect();
    render::status(&rows, cli.output);
    Ok(if healthy { EXIT_OK } else { EXIT_FAILED })
}

pub(crate) async fn history(cli: &Cli, name: &str) -> CommandResult {
    let project = Project::load(cli)?;
    let environment = project.environment(name)?;
    let rows = reader(&project)
        .history(&environment)
        .await
        .map_err(runner_failure)?;
    render::history(&rows, cli.output);
    Ok(EXIT_OK)
}

pub(crate) async fn lock(cli: &Cli, command: &LockCommand) -> CommandResult {
    let project = Project::load(cli)?;
    let json = cli.output == Output::Json;
    let coordinator = reader(&project);
    let line = match command {
        LockCommand::Status { environment } => {
            let environment = project.environment(environment)?;
            match coordinator
                .lock_holder(&environment)
                .await
                .map_err(runner_failure)?
            {
                Some(lock) => format!(
                    "{}: locked by {} since {} (lease until {})",
                    environment.name, lock.owner, lock.acquired_at, lock.expires_at
                ),
                None => format!("{}: not locked", environment.name),
            }
        }
        LockCommand::Release { environment, force } => {
            let environment = project.environment(environment)?;
            if !force {
                return Err(usage(format!(
                    "refusing to break {}'s lock without --force: do it only when its holder is gone (see `flotilla lock status -e {}`)",
                    environment.name, environment.name
                )));
            }
            match coordinator
                .break_lock(&environment)
                .await
                .map_err(runner_failure)?
            {
                Some(lock) => format!(
                    "{}: removed the lock held by {} since {}",
                    environment.name, lock.owner, lock.acquired_at
                ),
                None => format!("{}: was not locked", environment.name),
            }
        }
    };
    render::lines(&[line], json);
    Ok(EXIT_OK)
}
