//! Rolling one environment back on request (`flotilla rollback`): through the approval gate,
//! under the environment's lock, choosing what to revert from history read under that lock.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::config::EnvironmentConfig;
use flotilla_core::{DriftPolicy, MigrationSet};
use flotilla_runner::{LockRequest, MigrationPlan, MigrationResult, Revert, RunnerError};

use crate::coordinator::DeploymentCoordinator;

/// What to roll back where, and how to lock it.
#[derive(Clone, Debug)]
pub struct RollbackPlan {
    /// The environment.
    pub environment: EnvironmentConfig,
    /// The migrations directory (down sections come from here).
    pub migrations: Arc<MigrationSet>,
    /// What to revert, decided under the lock.
    pub revert: Revert,
    /// How long to wait for the environment's lock.
    pub lock_timeout: Duration,
    /// The lock's lease length.
    pub lease: Duration,
    /// Which history/directory disagreements are tolerated.
    pub drift_policy: DriftPolicy,
}

impl RollbackPlan {
    /// Revert `revert` on `environment` with default lock settings.
    pub fn new(
        environment: EnvironmentConfig,
        migrations: Arc<MigrationSet>,
        revert: Revert,
    ) -> Self {
        Self {
            environment,
            migrations,
            revert,
            lock_timeout: LockRequest::DEFAULT_WAIT,
            lease: LockRequest::DEFAULT_LEASE,
            drift_policy: DriftPolicy::default(),
        }
    }
}

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// The environment requires approval, and the approver did not give it.
    #[error("{0} requires approval and was not approved")]
    NotApproved(String),
    /// The runner could not (see the error's class).
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

impl DeploymentCoordinator {
    /// Reverts what `plan` selects, newest first, each revert atomic; asks the approver first
    /// when the environment requires approval.
    pub async fn rollback(&self, plan: &RollbackPlan) -> Result<MigrationResult, RollbackError> {
        let environment = &plan.environment;
        if environment.require_approval {
            let name = vec![environment.name.clone()];
            if !self
                .approver()
                .approve(&name)
                .await
                .contains(&environment.name)
            {
                return Err(RollbackError::NotApproved(environment.name.clone()));
            }
        }
        let target = crate::inspect::resolved_target(environment).await?;
        let runner = self.runner_for(&target)?;
        let down = MigrationPlan::revert(Arc::clone(&plan.migrations), plan.revert.clone())
            .with_policy(plan.drift_policy);
        let lock = LockRequest::new(None, plan.lock_timeout).with_lease(plan.lease);
        Ok(runner.apply_locked(&target, &down, &lock).await?)
    }
}
