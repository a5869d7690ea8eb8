//! The read-only commands: `status`, `history`, `tenants list`, and `lock status` / `lock release`
//! (the one that writes: it breaks a lock whose holder is gone).

use std::sync::Arc;

use flotilla_coordinator::{ApproveList, DeploymentCoordinator, EnvironmentConfig};

use super::{CommandResult, EXIT_FAILED, EXIT_OK, runner_failure, usage};
use crate::cli::{Cli, LockCommand, Output, SelectArgs, TenantsCommand};
use crate::project::Project;
use crate::render::{self, StatusRow};

/// A coordinator for commands that deploy nothing (so approve nothing).
pub(super) fn reader(project: &Project) -> DeploymentCoordinator {
    project.coordinator(Arc::new(ApproveList::default()))
}

pub(crate) async fn status(cli: &Cli, select: &SelectArgs) -> CommandResult {
    let project = Project::with_fleets(cli).await?;
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
    let project = Project::with_fleets(cli).await?;
    let environment = project.environment(name)?;
    let rows = reader(&project)
        .history(&environment)
        .await
        .map_err(runner_failure)?;
    render::history(&rows, cli.output);
    Ok(EXIT_OK)
}

pub(crate) async fn lock(cli: &Cli, command: &LockCommand) -> CommandResult {
    let project = Project::with_fleets(cli).await?;
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

/// One line of `flotilla tenants list`: no password, the URL without credentials.
#[derive(Debug, serde::Serialize)]
struct TenantRow {
    fleet: String,
    tenant: String,
    environment: String,
    url: String,
    namespace: String,
    database: String,
    username: Option<String>,
    /// Where the password comes from (`password`, `password_file`, `password_command`);
    /// never the password. Sources are not read here.
    password: Option<&'static str>,
    tags: Vec<String>,
}

impl TenantRow {
    /// Environment `e` of fleet `fleet`, without its secrets.
    fn of(fleet: &str, e: EnvironmentConfig) -> Self {
        Self {
            fleet: fleet.to_owned(),
            tenant: e.tenant.clone().unwrap_or_default(),
            password: match (&e.password_source, &e.connection.credentials) {
                (Some(source), _) => Some(source.key()),
                (None, Some(_)) => Some("password"),
                (None, None) => None,
            },
            url: e.connection.redacted_url(),
            namespace: e.connection.namespace.clone(),
            database: e.connection.database.clone(),
            username: e
                .connection
                .credentials
                .as_ref()
                .map(|c| c.username.clone()),
            tags: e.tags,
            environment: e.name,
        }
    }
}

pub(crate) async fn tenants(cli: &Cli, command: &TenantsCommand) -> CommandResult {
    let project = Project::load(cli)?;
    let TenantsCommand::List { fleet } = command;
    let fleets: Vec<_> = project
        .config
        .fleets
        .iter()
        .filter(|f| fleet.as_ref().is_none_or(|name| &f.name == name))
        .collect();
    if let Some(name) = fleet
        && fleets.is_empty()
    {
        let known: Vec<&str> = project
            .config
            .fleets
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        return Err(usage(format!(
            "no fleet `{name}` (fleets: {})",
            known.join(", ")
        )));
    }
    let mut rows = Vec::new();
    // What a deploy would refuse, a listing refuses too: a tenant taking another's place.
    let file = project.config.path.display().to_string();
    let mut origins = crate::project::Origins::of(&project.registry, &file);
    for config in fleets {
        let found = crate::fleets::environments(
            std::slice::from_ref(config),
            &project.base,
            &project.runner_config,
        )
        .await?;
        for (fleet, environment) in found {
            origins.admit(&fleet, &environment)?;
            rows.push(TenantRow::of(&fleet, environment));
        }
    }
    if cli.output == Output::Json {
        for row in &rows {
            render::print_typed("tenant", row);
        }
        return Ok(EXIT_OK);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.fleet.clone(),
                r.tenant.clone(),
                r.environment.clone(),
                r.url.clone(),
                r.namespace.clone(),
                r.database.clone(),
                r.username.clone().unwrap_or_default(),
                r.password.unwrap_or_default().to_owned(),
                r.tags.join(","),
            ]
        })
        .collect();
    print!(
        "{}",
        render::table(
            &[
                "FLEET",
                "TENANT",
                "ENVIRONMENT",
                "URL",
                "NAMESPACE",
                "DATABASE",
                "USER",
                "PASSWORD",
                "TAGS"
            ],
            &cells
        )
    );
    Ok(EXIT_OK)
}
