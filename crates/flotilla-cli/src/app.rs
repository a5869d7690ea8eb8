//! The commands: load configuration, build the coordinator, run, choose an exit code.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flotilla_coordinator::{
    Approver, DeploymentCoordinator, DeploymentPlan, DeploymentReport, EnvironmentConfig,
    EnvironmentRegistry, Outcome, Stop,
};
use flotilla_core::config::{ProjectConfig, nearest};
use flotilla_core::{DeploymentStatus, MigrationSet, Version, current_version, rfc3339};
use flotilla_runner::execute::steps;
use flotilla_runner::{
    Backends, DynRunner, ErrorClass, LockRequest, MigrationPlan, Revert, RunnerError, TenantContext,
};
use flotilla_strategies::StrategyConfig;
use flotilla_surrealdb::{SurrealConfig, SurrealRunner};
use futures::StreamExt;

use crate::cli::{Cli, Command, DeployArgs, LockCommand, Output, RollbackArgs, SelectArgs};
use crate::render::{self, StatusRow};

pub(crate) const EXIT_OK: u8 = 0;
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_REFUSED: u8 = 3;

/// A command that could not do its job, with the exit code that says why.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

fn usage(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message: message.to_string(),
    }
}

type CommandResult = Result<u8, Failure>;

pub(crate) async fn run(cli: Cli) -> u8 {
    let json = cli.output == Output::Json;
    match dispatch(cli).await {
        Ok(code) => code,
        Err(failure) => {
            render::error(&failure.message, json);
            failure.code
        }
    }
}

async fn dispatch(cli: Cli) -> CommandResult {
    match &cli.command {
        Command::Init { dir } => init(dir, cli.output == Output::Json),
        Command::New { name } => new_migration(&cli, name),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "flotilla", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Deploy(args) => deploy(&cli, args).await,
        Command::Status(select) => status(&cli, select).await,
        Command::Validate(select) => validate(&cli, select).await,
        Command::History { environment } => history(&cli, environment).await,
        Command::Rollback(args) => rollback(&cli, args).await,
        Command::Lock(command) => lock(&cli, command).await,
    }
}

/// Configuration, environments and runners of the project in the current directory.
struct Project {
    config: ProjectConfig,
    registry: EnvironmentRegistry,
    backends: Backends,
    migrations_dir: PathBuf,
}

impl Project {
    fn load(cli: &Cli) -> Result<Self, Failure> {
        let path = match &cli.config {
            Some(path) => path.clone(),
            None => ["flotilla.toml", "environments.json"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| usage("no flotilla.toml or environments.json in this directory (run `flotilla init`, or pass --config FILE)"))?,
        };
        let config = ProjectConfig::load(&path).map_err(usage)?;
        let registry = EnvironmentRegistry::new();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for configured in &config.environments {
            registry
                .register(environment(configured, &base))
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
        }
        let defaults = &config.defaults;
        let runner = SurrealRunner::with_config(SurrealConfig {
            connect_timeout: cli
                .connect_timeout
                .or(defaults.connect_timeout)
                .unwrap_or(SurrealConfig::DEFAULT_CONNECT_TIMEOUT),
            request_timeout: cli
                .request_timeout
                .or(defaults.request_timeout)
                .unwrap_or(SurrealConfig::DEFAULT_REQUEST_TIMEOUT),
            ..SurrealConfig::default()
        });
        for (name, value) in [
            (
                "connect timeout",
                runner_config_check(cli.connect_timeout.or(defaults.connect_timeout)),
            ),
            (
                "request timeout",
                runner_config_check(cli.request_timeout.or(defaults.request_timeout)),
            ),
        ] {
            if let Err(problem) = value {
                return Err(usage(format!("{name} {problem}")));
            }
        }
        let mut backends = Backends::new();
        runner.register(&mut backends);
        let migrations_dir = cli
            .migrations_dir
            .clone()
            .unwrap_or_else(|| config.migrations_dir());
        Ok(Self {
            config,
            registry,
            backends,
            migrations_dir,
        })
    }

    fn migrations(&self) -> Result<Arc<MigrationSet>, Failure> {
        MigrationSet::load(&self.migrations_dir)
            .map(Arc::new)
            .map_err(|e| usage(format!("migrations: {e}")))
    }

    fn environment(&self, name: &str) -> Result<EnvironmentConfig, Failure> {
        self.registry.get(name).ok_or_else(|| {
            let names = self.registry.names();
            let hint = nearest(name, names.iter().map(String::as_str))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_else(|| format!(" (known: {})", names.join(", ")));
            usage(format!("unknown environment `{name}`{hint}"))
        })
    }

    /// The selected environments (all when nothing is selected), in plan order.
    fn select(&self, select: &SelectArgs) -> Result<Vec<EnvironmentConfig>, Failure> {
        if !select.environments.is_empty() {
            let mut chosen = select
                .environments
                .iter()
                .map(|name| self.environment(name))
                .collect::<Result<Vec<_>, _>>()?;
            chosen.sort_by_key(|e| e.priority);
            return Ok(chosen);
        }
        if !select.tag.is_empty() {
            let mut chosen = self.registry.list();
            chosen.retain(|e| e.tags.iter().any(|t| select.tag.contains(t)));
            if chosen.is_empty() {
                return Err(usage(format!(
                    "no environment has tag {}",
                    select.tag.join(" or ")
                )));
            }
            return Ok(chosen);
        }
        Ok(self.registry.list())
    }

    fn target(
        &self,
        environment: &EnvironmentConfig,
    ) -> Result<(TenantContext, DynRunner), Failure> {
        let tenant = tenant(environment);
        let runner = self.backends.runner_for(&tenant).map_err(usage)?;
        Ok((tenant, runner))
    }
}

/// A connect or request timeout must be more than nothing (the parser bounds it above).
fn runner_config_check(timeout: Option<Duration>) -> Result<(), &'static str> {
    match timeout {
        Some(timeout) if timeout.is_zero() => Err("must be more than 0s"),
        _ => Ok(()),
    }
}

fn tenant(environment: &EnvironmentConfig) -> TenantContext {
    TenantContext {
        environment: environment.name.clone(),
        connection: environment.connection.clone(),
        tags: environment.tags.clone(),
    }
}

/// The environment as configured, with a relative `surrealkv://` path taken relative to the
/// configuration file, so commands work from any directory.
fn environment(configured: &EnvironmentConfig, base: &Path) -> EnvironmentConfig {
    let mut environment = configured.clone();
    if let Some(path) = environment.connection.url.strip_prefix("surrealkv://")
        && !path.starts_with('/')
        && !base.as_os_str().is_empty()
    {
        environment.connection.url = format!("surrealkv://{}", base.join(path).display());
    }
    environment
}

/// Approves environments named on the command line, everything with `--yes`, and asks on a
/// terminal for the rest. Never blocks when stdin is not a terminal.
#[derive(Debug)]
struct CliApprover {
    approved: BTreeSet<String>,
    everything: bool,
    interactive: bool,
}

#[async_trait]
impl Approver for CliApprover {
    async fn approve(&self, environments: &[String]) -> Vec<String> {
        let mut approved = Vec::new();
        for name in environments {
            if self.everything || self.approved.contains(name) || (self.interactive && ask(name)) {
                approved.push(name.clone());
            }
        }
        approved
    }
}

fn ask(environment: &str) -> bool {
    eprint!("{environment} requires approval. Deploy to {environment}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}

async fn deploy(cli: &Cli, args: &DeployArgs) -> CommandResult {
    let project = Project::load(cli)?;
    let migrations = project.migrations()?;
    let defaults = &project.config.defaults;
    let kind = args
        .strategy
        .as_deref()
        .or(defaults.strategy.as_deref())
        .unwrap_or("sequential")
        .parse()
        .map_err(usage)?;
    let base = StrategyConfig::default();
    let strategy = StrategyConfig {
        kind,
        batch_size: args
            .batch_size
            .or(defaults.batch_size)
            .unwrap_or(base.batch_size),
        canary_percentage: args
            .canary_percent
            .or(defaults.canary_percentage)
            .unwrap_or(base.canary_percentage),
        max_concurrent: args
            .max_concurrent
            .or(defaults.max_concurrent)
            .unwrap_or(base.max_concurrent),
        fail_fast: args.fail_fast || defaults.fail_fast.unwrap_or(false),
        pause: Duration::ZERO,
    };
    let builder = DeploymentPlan::builder(&project.registry);
    let builder = if !args.select.environments.is_empty() {
        builder.environments(args.select.environments.iter().cloned())
    } else if !args.select.tag.is_empty() {
        builder.tags(args.select.tag.iter().cloned())
    } else if args.select.all {
        builder.all()
    } else {
        return Err(usage("choose environments: -e a,b, --tag TAG or --all"));
    };
    let plan = builder
        .migrations(migrations)
        .strategy(strategy)
        .verify_health(!args.skip_health_check)
        .auto_rollback(!args.no_rollback)
        .dry_run(args.dry_run)
        .lock_timeout(
            args.lock_timeout
                .or(defaults.lock_timeout)
                .unwrap_or(LockRequest::DEFAULT_WAIT),
        )
        .lease(
            args.lease
                .or(defaults.lease)
                .unwrap_or(LockRequest::DEFAULT_LEASE),
        )
        .build()
        .map_err(usage)?;
    for name in &args.approve {
        project.environment(name)?;
    }
    let json = cli.output == Output::Json;
    let approver = CliApprover {
        approved: args.approve.iter().cloned().collect(),
        everything: args.yes,
        interactive: !json && std::io::stdin().is_terminal(),
    };
    let coordinator =
        DeploymentCoordinator::new(project.backends.clone()).with_approver(Arc::new(approver));
    let mut events = coordinator.subscribe();
    let mut progress = render::Progress::new(cli.output, &plan.environment_names());
    let stop = Stop::new();
    let signal = crate::signals::watch(stop.clone());
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
    render::report(&report, cli.output);
    Ok(signal
        .exit_code()
        .unwrap_or_else(|| deploy_exit_code(&report)))
}

fn deploy_exit_code(report: &DeploymentReport) -> u8 {
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

async fn status(cli: &Cli, select: &SelectArgs) -> CommandResult {
    let project = Project::load(cli)?;
    let migrations = project.migrations()?;
    let environments = project.select(select)?;
    let targets = environments
        .iter()
        .map(|environment| project.target(environment))
        .collect::<Result<Vec<_>, _>>()?;
    // Read-only probes, several at once: a fleet's status should not take a round trip per
    // tenant in sequence.
    let rows: Vec<StatusRow> = futures::stream::iter(targets)
        .map(|(tenant, runner)| {
            let migrations = Arc::clone(&migrations);
            async move { status_row(&tenant, &runner, migrations).await }
        })
        .buffered(PROBE_CONCURRENCY)
        .collect()
        .await;
    let healthy = rows
        .iter()
        .all(|row| row.reachable && row.drift.is_none() && row.error.is_none());
    render::status(&rows, cli.output);
    Ok(if healthy { EXIT_OK } else { EXIT_FAILED })
}

/// Read-only probes in flight at once for `status` and `validate`.
const PROBE_CONCURRENCY: usize = 32;

async fn status_row(
    tenant: &TenantContext,
    runner: &DynRunner,
    migrations: Arc<MigrationSet>,
) -> StatusRow {
    let mut row = StatusRow {
        environment: tenant.environment.clone(),
        reachable: false,
        version: None,
        pending: None,
        drift: None,
        lock: None,
        error: None,
    };
    let health = match runner.health(tenant).await {
        Ok(health) => health,
        Err(error) => {
            row.error = Some(error.to_string());
            return row;
        }
    };
    row.reachable = true;
    row.lock = health
        .lock
        .map(|l| format!("{} since {}", l.owner, l.acquired_at));
    match runner.history(tenant).await {
        Err(error) => row.error = Some(error.to_string()),
        Ok(history) => {
            row.version = current_version(&history).map(ToString::to_string);
            match steps(tenant, &MigrationPlan::up(migrations), &history) {
                Ok(pending) => row.pending = Some(pending.len()),
                Err(error) => row.drift = Some(error.to_string()),
            }
        }
    }
    row
}

async fn validate(cli: &Cli, select: &SelectArgs) -> CommandResult {
    let project = Project::load(cli)?;
    let migrations = project.migrations()?;
    let environments = project.select(select)?;
    let json = cli.output == Output::Json;
    let mut lines = vec![
        format!(
            "config: {} ok ({} environments)",
            project.config.path.display(),
            project.registry.len()
        ),
        format!(
            "migrations: {} ok ({} migrations)",
            project.migrations_dir.display(),
            migrations.len()
        ),
    ];
    let findings: Vec<_> = migrations
        .as_slice()
        .iter()
        .flat_map(flotilla_core::lint::destructive)
        .collect();
    let strict: Vec<&str> = environments
        .iter()
        .filter(|e| !e.allow_destructive)
        .map(|e| e.name.as_str())
        .collect();
    for finding in &findings {
        let note = if strict.is_empty() {
            String::new()
        } else {
            format!(
                " (refused towards {} while pending there)",
                strict.join(", ")
            )
        };
        lines.push(format!("lint: {finding}{note}"));
    }
    let targets = environments
        .iter()
        .map(|environment| project.target(environment))
        .collect::<Result<Vec<_>, _>>()?;
    let probes: Vec<(String, Result<flotilla_runner::HealthStatus, RunnerError>)> =
        futures::stream::iter(targets)
            .map(|(tenant, runner)| async move {
                let health = runner.health(&tenant).await;
                (tenant.environment, health)
            })
            .buffered(PROBE_CONCURRENCY)
            .collect()
            .await;
    let mut failures = 0;
    for (name, probe) in probes {
        match probe {
            Ok(health) => lines.push(format!(
                "connectivity: {name} ok ({} ms{})",
                health.latency.as_millis(),
                if health.initialised {
                    ""
                } else {
                    ", not initialised yet"
                }
            )),
            Err(error) => {
                failures += 1;
                lines.push(format!("connectivity: {name} FAILED: {error}"));
            }
        }
    }
    render::lines(&lines, json);
    Ok(if failures == 0 { EXIT_OK } else { EXIT_FAILED })
}

async fn history(cli: &Cli, name: &str) -> CommandResult {
    let project = Project::load(cli)?;
    let environment = project.environment(name)?;
    let (tenant, runner) = project.target(&environment)?;
    let rows = runner.history(&tenant).await.map_err(runner_failure)?;
    render::history(&rows, cli.output);
    Ok(EXIT_OK)
}

fn runner_failure(error: RunnerError) -> Failure {
    let code = match error.class() {
        ErrorClass::LockTimeout | ErrorClass::ChecksumMismatch | ErrorClass::Drift => EXIT_REFUSED,
        _ => EXIT_FAILED,
    };
    Failure {
        code,
        message: error.to_string(),
    }
}

async fn rollback(cli: &Cli, args: &RollbackArgs) -> CommandResult {
    let project = Project::load(cli)?;
    let migrations = project.migrations()?;
    let environment = project.environment(&args.environment)?;
    if environment.require_approval {
        let interactive = cli.output == Output::Human && std::io::stdin().is_terminal();
        if !(args.yes || (interactive && ask(&environment.name))) {
            return Err(Failure {
                code: EXIT_REFUSED,
                message: format!(
                    "{} requires approval; pass --yes to roll it back",
                    environment.name
                ),
            });
        }
    }
    let (tenant, runner) = project.target(&environment)?;
    // What to revert is decided from history read under the target's lock, not before it.
    let revert = match (&args.steps, &args.to) {
        (Some(steps), _) => Revert::Newest(*steps),
        (None, Some(to)) => Revert::NewerThan(
            Version::parse(to)
                .ok_or_else(|| usage(format!("`{to}` is not a migration version")))?,
        ),
        (None, None) => return Err(usage("pass --steps N or --to VERSION")),
    };
    let plan = MigrationPlan::revert(migrations, revert);
    let defaults = &project.config.defaults;
    let lock = LockRequest::new(
        None,
        args.lock_timeout
            .or(defaults.lock_timeout)
            .unwrap_or(LockRequest::DEFAULT_WAIT),
    )
    .with_lease(
        args.lease
            .or(defaults.lease)
            .unwrap_or(LockRequest::DEFAULT_LEASE),
    );
    let result = runner
        .apply_locked(&tenant, &plan, &lock)
        .await
        .map_err(|error| match error {
            RunnerError::NotApplied { .. } => usage(format!(
                "{error}; see `flotilla history -e {}`",
                environment.name
            )),
            other => runner_failure(other),
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
    render::lines(&[line], cli.output == Output::Json);
    Ok(EXIT_OK)
}

async fn lock(cli: &Cli, command: &LockCommand) -> CommandResult {
    let project = Project::load(cli)?;
    let json = cli.output == Output::Json;
    match command {
        LockCommand::Status { environment } => {
            let environment = project.environment(environment)?;
            let (tenant, runner) = project.target(&environment)?;
            let health = runner.health(&tenant).await.map_err(runner_failure)?;
            let line = match health.lock {
                Some(lock) => format!(
                    "{}: locked by {} since {} (lease until {})",
                    environment.name, lock.owner, lock.acquired_at, lock.expires_at
                ),
                None => format!("{}: not locked", environment.name),
            };
            render::lines(&[line], json);
            Ok(EXIT_OK)
        }
        LockCommand::Release { environment, force } => {
            let environment = project.environment(environment)?;
            if !force {
                return Err(usage(format!(
                    "refusing to break {}'s lock without --force: do it only when its holder is gone (see `flotilla lock status -e {}`)",
                    environment.name, environment.name
                )));
            }
            let (tenant, runner) = project.target(&environment)?;
            let removed = runner.break_lock(&tenant).await.map_err(runner_failure)?;
            let line = match removed {
                Some(lock) => format!(
                    "{}: removed the lock held by {} since {}",
                    environment.name, lock.owner, lock.acquired_at
                ),
                None => format!("{}: was not locked", environment.name),
            };
            render::lines(&[line], json);
            Ok(EXIT_OK)
        }
    }
}

fn timestamp() -> String {
    timestamp_of(SystemTime::now())
}

/// `YYYYMMDD_HHMMSS` in UTC.
fn timestamp_of(time: SystemTime) -> String {
    let iso = rfc3339(time); // 2026-11-22T05:01:19.123Z
    let digits: String = iso.chars().filter(char::is_ascii_digit).collect();
    format!("{}_{}", &digits[..8], &digits[8..14])
}

fn new_migration(cli: &Cli, name: &str) -> CommandResult {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(usage(format!(
            "migration name `{name}` must be letters, digits and underscores, e.g. add_user_email"
        )));
    }
    let dir = match &cli.migrations_dir {
        Some(dir) => dir.clone(),
        None => Project::load(cli)
            .map(|p| p.migrations_dir)
            .unwrap_or_else(|_| PathBuf::from("migrations")),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    let existing = MigrationSet::load(&dir).map_err(|e| usage(format!("migrations: {e}")))?;
    let mut time = SystemTime::now();
    let path = loop {
        let stamp = timestamp_of(time);
        let taken = Version::parse(&stamp).is_some_and(|v| existing.get(&v).is_some());
        if !taken {
            break dir.join(format!("{stamp}_{name}.surql"));
        }
        time += Duration::from_secs(1);
    };
    let text = format!(
        "-- @metadata\n-- description: {}\n-- @up\n-- Write the change here, one statement per `;`.\n\n-- @down\n-- Write what undoes it here.\n",
        name.replace('_', " ")
    );
    std::fs::write(&path, text)
        .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
    render::lines(
        &[format!("created {}", path.display())],
        cli.output == Output::Json,
    );
    Ok(EXIT_OK)
}

const CONFIG_TEMPLATE: &str = r#"# flotilla configuration. Docs: docs/configuration.md
migrations = "migrations"

[defaults]
strategy = "sequential"
max_concurrent = 8
lock_timeout_secs = 30

# Embedded databases on disk: nothing to install.
[[environments]]
name = "dev"
url = "surrealkv://.flotilla/dev.db"
namespace = "app"
database = "dev"
priority = 10
tags = ["local"]

[[environments]]
name = "staging"
url = "surrealkv://.flotilla/staging.db"
namespace = "app"
database = "staging"
priority = 20
tags = ["local"]

# A server over WebSocket; secrets come from the environment.
# [[environments]]
# name = "production"
# url = "wss://db.example.com"
# namespace = "app"
# database = "main"
# username = "${PROD_DB_USER:-deployer}"
# password = "${PROD_DB_PASSWORD}"
# auth = "root"            # root, namespace or database
# priority = 100
# tags = ["live"]
# require_approval = true
# allow_destructive = false
"#;

fn init(dir: &Path, json: bool) -> CommandResult {
    let config = dir.join("flotilla.toml");
    if config.exists() {
        return Err(usage(format!(
            "{} already exists; nothing changed",
            config.display()
        )));
    }
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations)
        .map_err(|e| usage(format!("cannot create {}: {e}", migrations.display())))?;
    std::fs::write(&config, CONFIG_TEMPLATE)
        .map_err(|e| usage(format!("cannot write {}: {e}", config.display())))?;
    let first = migrations.join(format!("{}_create_example.surql", timestamp()));
    let text = "-- @metadata\n-- description: an example table to start from\n-- @up\nDEFINE TABLE example SCHEMAFULL;\nDEFINE FIELD name ON example TYPE string;\nDEFINE FIELD created_at ON example TYPE datetime DEFAULT time::now();\n-- @down\nREMOVE TABLE example;\n";
    std::fs::write(&first, text)
        .map_err(|e| usage(format!("cannot write {}: {e}", first.display())))?;
    render::lines(
        &[
            format!("created {}", config.display()),
            format!("created {}", first.display()),
            "next: flotilla deploy --all".to_owned(),
        ],
        json,
    );
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_sortable_versions() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3_661);
        assert_eq!(timestamp_of(t), "20260101_010101");
        assert!(Version::parse(&timestamp_of(SystemTime::now())).is_some());
    }
}
