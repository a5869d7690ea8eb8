//! Reading a fleet without deploying: per-environment status (reachable, version, pending,
//! drift, lock holder), an environment's history, its lock — and breaking a lock whose holder
//! is known to be gone.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::config::EnvironmentConfig;
use flotilla_core::{AppliedMigration, MigrationSet, Version, current_version};
use flotilla_runner::execute::steps;
use flotilla_runner::{LockInfo, MigrationPlan, RunnerError, Target};
use futures::StreamExt;

use crate::coordinator::DeploymentCoordinator;
use crate::error::PlanError;

/// Read-only probes asked at once (see [`crate::preflight::PREFLIGHT_CONCURRENCY`]).
const PROBE_CONCURRENCY: usize = crate::preflight::PREFLIGHT_CONCURRENCY;

/// What `status` found on one environment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EnvironmentStatus {
    /// The environment.
    pub environment: String,
    /// Whether it answered its health probe.
    pub reachable: bool,
    /// Whether its history table exists.
    pub initialised: bool,
    /// The probe's round trip.
    #[serde(serialize_with = "flotilla_runner::util::serialize_millis")]
    pub latency: Duration,
    /// Its newest applied version.
    pub version: Option<Version>,
    /// How many migrations are pending there (unknown when history is unreadable or drifted).
    pub pending: Option<usize>,
    /// Why history and the migrations directory disagree, if they do.
    pub drift: Option<String>,
    /// Who holds its lock, if anyone.
    pub lock: Option<LockInfo>,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
}

impl EnvironmentStatus {
    /// Reachable, readable and without drift.
    pub fn healthy(&self) -> bool {
        self.reachable && self.drift.is_none() && self.error.is_none()
    }
}

impl DeploymentCoordinator {
    /// The status of each of `environments` against `migrations`, in the given order, probed
    /// concurrently; changes nothing.
    pub async fn status(
        &self,
        environments: &[EnvironmentConfig],
        migrations: Arc<MigrationSet>,
    ) -> Result<Vec<EnvironmentStatus>, PlanError> {
        let environments = crate::passwords::resolve_passwords(environments).await?;
        let targets = environments
            .iter()
            .map(|environment| {
                let target = target_of(environment);
                Ok((self.runner_for(&target)?, target))
            })
            .collect::<Result<Vec<_>, RunnerError>>()?;
        let up = MigrationPlan::up(migrations);
        Ok(futures::stream::iter(targets)
            .map(|(runner, target)| {
                let up = &up;
                async move {
                    let mut status = EnvironmentStatus {
                        environment: target.environment.clone(),
                        reachable: false,
                        initialised: false,
                        latency: Duration::ZERO,
                        version: None,
                        pending: None,
                        drift: None,
                        lock: None,
                        error: None,
                    };
                    let probe = match runner.probe(&target).await {
                        Ok(probe) => probe,
                        Err(error) => {
                            status.error = Some(error.to_string());
                            return status;
                        }
                    };
                    status.reachable = true;
                    status.initialised = probe.health.initialised;
                    status.latency = probe.health.latency;
                    status.lock = probe.health.lock;
                    match probe.history {
                        Err(error) => status.error = Some(error.to_string()),
                        Ok(history) => {
                            status.version = current_version(&history).cloned();
                            match steps(&target, up, &history) {
                                Ok(pending) => status.pending = Some(pending.len()),
                                Err(error) => status.drift = Some(error.to_string()),
                            }
                        }
                    }
                    status
                }
            })
            .buffered(PROBE_CONCURRENCY)
            .collect()
            .await)
    }

    /// `environment`'s applied migrations, oldest first.
    pub async fn history(
        &self,
        environment: &EnvironmentConfig,
    ) -> Result<Vec<AppliedMigration>, RunnerError> {
        let target = resolved_target(environment).await?;
        self.runner_for(&target)?.history(&target).await
    }

    /// Who holds `environment`'s lock (a live lease), if anyone.
    pub async fn lock_holder(
        &self,
        environment: &EnvironmentConfig,
    ) -> Result<Option<LockInfo>, RunnerError> {
        let target = resolved_target(environment).await?;
        Ok(self.runner_for(&target)?.health(&target).await?.lock)
    }

    /// Removes `environment`'s lock whoever holds it — only for a holder known to be gone;
    /// returns the lock removed.
    pub async fn break_lock(
        &self,
        environment: &EnvironmentConfig,
    ) -> Result<Option<LockInfo>, RunnerError> {
        let target = resolved_target(environment).await?;
        self.runner_for(&target)?.break_lock(&target).await
    }
}

/// The target `environment` names, its password read; a runner error naming it when the
/// password cannot be.
pub(crate) async fn resolved_target(
    environment: &EnvironmentConfig,
) -> Result<Target, RunnerError> {
    crate::passwords::resolve_one(environment)
        .await
        .map(|resolved| target_of(&resolved))
        .map_err(|error| RunnerError::Backend {
            environment: environment.name.clone(),
            source: Box::new(error),
        })
}

/// The target an environment names.
pub(crate) fn target_of(environment: &EnvironmentConfig) -> Target {
    Target {
        environment: environment.name.clone(),
        connection: environment.connection.clone(),
        tags: environment.tags.clone(),
    }
}
