//! The project a command works on: its configuration, environments, migrations, and the
//! coordinator built over them with the runner settings the flags and `[defaults]` give.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_coordinator::{
    Approver, DeploymentCoordinator, EnvironmentConfig, EnvironmentRegistry, Selection,
};
use flotilla_core::MigrationSet;
use flotilla_core::config::ProjectConfig;
use flotilla_runner::Backends;
use flotilla_surrealdb::{SurrealConfig, SurrealRunner};

use crate::cli::{Cli, SelectArgs};
use crate::commands::{Failure, usage};

/// Configuration, environments and runners of the project in the current directory.
pub(crate) struct Project {
    pub(crate) config: ProjectConfig,
    pub(crate) registry: EnvironmentRegistry,
    pub(crate) backends: Backends,
    pub(crate) migrations_dir: PathBuf,
    /// The config file's directory: relative paths in it are taken from here.
    pub(crate) base: PathBuf,
    /// Timeouts for every SurrealDB connection, the control store's too.
    pub(crate) runner_config: SurrealConfig,
}

impl Project {
    pub(crate) fn load(cli: &Cli) -> Result<Self, Failure> {
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
                .register(beside_config(configured, &base))
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
        }
        let mut backends = Backends::new();
        let runner_config = runner_config(cli, &config)?;
        SurrealRunner::with_config(runner_config.clone()).register(&mut backends);
        let migrations_dir = cli
            .migrations_dir
            .clone()
            .unwrap_or_else(|| config.migrations_dir());
        Ok(Self {
            config,
            registry,
            backends,
            migrations_dir,
            base,
            runner_config,
        })
    }

    /// The project with its fleets' tenants registered as environments: every source is
    /// listed (a source that cannot be is an error, exit 1).
    pub(crate) async fn with_fleets(cli: &Cli) -> Result<Self, Failure> {
        let project = Self::load(cli)?;
        let found = crate::fleets::environments(
            &project.config.fleets,
            &project.base,
            &project.runner_config,
        )
        .await?;
        let file = project.config.path.display().to_string();
        let mut origins = Origins::of(&project.registry, &file);
        for (fleet, environment) in found {
            let environment = beside_config(&environment, &project.base);
            origins.admit(&fleet, &environment)?;
            project
                .registry
                .register(environment)
                .map_err(|e| usage(format!("{file}: {e}")))?;
        }
        Ok(project)
    }

    pub(crate) fn migrations(&self) -> Result<Arc<MigrationSet>, Failure> {
        MigrationSet::load(&self.migrations_dir)
            .map(Arc::new)
            .map_err(|e| usage(format!("migrations: {e}")))
    }

    /// The environment called `name`, or a usage error naming the nearest one.
    pub(crate) fn environment(&self, name: &str) -> Result<EnvironmentConfig, Failure> {
        self.registry.lookup(name).map_err(usage)
    }

    /// The selected environments (all when nothing is selected), in plan order.
    pub(crate) fn select(&self, select: &SelectArgs) -> Result<Vec<EnvironmentConfig>, Failure> {
        let selection = selection(select).unwrap_or(Selection::All);
        self.registry.select(&selection).map_err(usage)
    }

    /// A coordinator over this project's runners.
    pub(crate) fn coordinator(&self, approver: Arc<dyn Approver>) -> DeploymentCoordinator {
        DeploymentCoordinator::new(self.backends.clone()).with_approver(approver)
    }
}

/// Where each environment came from, by name and by database: a tenant may take neither a
/// fixed environment's nor another tenant's name (`-e prod` would reach it) or database.
pub(crate) struct Origins<'a> {
    file: &'a str,
    by_name: std::collections::HashMap<String, String>,
    by_database: std::collections::HashMap<flotilla_runner::DatabaseKey, String>,
}

impl<'a> Origins<'a> {
    /// The fixed environments of `registry`, from `file`.
    pub(crate) fn of(registry: &EnvironmentRegistry, file: &'a str) -> Self {
        let mut origins = Self {
            file,
            by_name: Default::default(),
            by_database: Default::default(),
        };
        for environment in registry.list() {
            let origin = format!("the environment `{}` of {file}", environment.name);
            origins
                .by_database
                .insert(database_key(&environment), origin.clone());
            origins.by_name.insert(environment.name.clone(), origin);
        }
        origins
    }

    /// Admits tenant `environment` of `fleet`, or refuses it naming both origins (exit 2).
    pub(crate) fn admit(
        &mut self,
        fleet: &str,
        environment: &EnvironmentConfig,
    ) -> Result<(), Failure> {
        let tenant = environment.tenant.as_deref().unwrap_or(&environment.name);
        let origin = format!("tenant `{tenant}` of fleet `{fleet}`");
        let key = database_key(environment);
        if let Some(earlier) = self.by_name.get(&environment.name) {
            return Err(usage(format!(
                "{}: {origin} is named `{}`, as is {earlier}; rename one (a tenant never replaces an environment)",
                self.file, environment.name
            )));
        }
        if let Some(earlier) = self.by_database.get(&key) {
            return Err(usage(format!(
                "{}: {origin} writes to {key}, as does {earlier}; each environment needs a database of its own",
                self.file
            )));
        }
        self.by_name
            .insert(environment.name.clone(), origin.clone());
        self.by_database.insert(key, origin);
        Ok(())
    }
}

/// The database `environment` writes to.
fn database_key(environment: &EnvironmentConfig) -> flotilla_runner::DatabaseKey {
    let connection = &environment.connection;
    flotilla_runner::DatabaseKey::new(&connection.url, &connection.namespace, &connection.database)
}

/// What `-e`, `--tag` and `--all` select; `None` when none was given.
pub(crate) fn selection(select: &SelectArgs) -> Option<Selection> {
    // The surql toolkit's `-e all`; a fleet's name is a tag of each of its environments.
    let all = select.all || select.environments == ["all"];
    let names: &[String] = if all { &[] } else { &select.environments };
    let tags: Vec<String> = select.tag.iter().chain(&select.fleet).cloned().collect();
    selection_of(names, &tags, all)
}

/// Names, else tags, else all; `None` when none is given.
pub(crate) fn selection_of(names: &[String], tags: &[String], all: bool) -> Option<Selection> {
    if !names.is_empty() {
        Some(Selection::Names(names.to_vec()))
    } else if !tags.is_empty() {
        Some(Selection::Tags(tags.to_vec()))
    } else if all {
        Some(Selection::All)
    } else {
        None
    }
}

/// The SurrealDB runner's settings: flags over `[defaults]` over built-in defaults.
fn runner_config(cli: &Cli, config: &ProjectConfig) -> Result<SurrealConfig, Failure> {
    let defaults = &config.defaults;
    let pick = |flag: Option<std::time::Duration>,
                configured: Option<std::time::Duration>,
                default,
                name: &str| {
        let chosen = flag.or(configured).unwrap_or(default);
        if chosen.is_zero() {
            Err(usage(format!("{name} must be more than 0s")))
        } else {
            Ok(chosen)
        }
    };
    Ok(SurrealConfig {
        connect_timeout: pick(
            cli.connect_timeout,
            defaults.connect_timeout,
            SurrealConfig::DEFAULT_CONNECT_TIMEOUT,
            "connect timeout",
        )?,
        request_timeout: pick(
            cli.request_timeout,
            defaults.request_timeout,
            SurrealConfig::DEFAULT_REQUEST_TIMEOUT,
            "request timeout",
        )?,
        ..SurrealConfig::default()
    })
}

/// The environment as configured, its URL and password file [`beside`] the configuration
/// file.
fn beside_config(configured: &EnvironmentConfig, base: &Path) -> EnvironmentConfig {
    let mut environment = configured.clone();
    environment.connection.url = beside(&environment.connection.url, base);
    if let Some(flotilla_core::PasswordSource::File(path)) = &mut environment.password_source {
        *path = base.join(&*path);
    }
    environment
}

/// `url` with a relative `surrealkv://` path taken relative to the configuration file's
/// directory `base`, so commands work from any directory.
pub(crate) fn beside(url: &str, base: &Path) -> String {
    match url.strip_prefix("surrealkv://") {
        Some(path) if !path.starts_with('/') && !base.as_os_str().is_empty() => {
            format!("surrealkv://{}", base.join(path).display())
        }
        _ => url.to_owned(),
    }
}
