//! The `MigrationRunner` trait, its conveniences, and choosing a runner by URL scheme.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flotilla_core::{AppliedMigration, Version};

use crate::error::{Result, RunnerError};
use crate::lock::{LockGuard, LockRequest};
use crate::tenant::{HealthStatus, MigrationPlan, MigrationResult, TenantContext};

/// The shared handle strategies and the coordinator hold.
pub type DynRunner = Arc<dyn MigrationRunner>;

/// Applies migrations to targets of one kind of database.
///
/// A runner may serve many targets over one connection (many tenants on one server is the
/// common case). Implementations must:
/// - apply each migration's statements and its history row atomically;
/// - compute what to apply from history read while the lock is held, refusing to execute
///   without the lock ([`RunnerError::NotLocked`]);
/// - fail on drift before changing anything ([`flotilla_core::pending`] does the comparing).
///
/// The conformance suite in `flotilla_runner::testkit` (feature `testkit`) checks all this.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait MigrationRunner: Send + Sync + fmt::Debug {
    /// Connects, authenticates and queries the target; reports whether it is initialised
    /// and who holds its lock. Errors say why the target is not healthy.
    async fn health(&self, tenant: &TenantContext) -> Result<HealthStatus>;

    /// The target's applied migrations, oldest first. Reads only.
    async fn history(&self, tenant: &TenantContext) -> Result<Vec<AppliedMigration>>;

    /// Takes the target's lock, waiting up to `request.wait` for a live lease to go away.
    async fn acquire_lock(
        &self,
        tenant: &TenantContext,
        request: &LockRequest,
    ) -> Result<Box<dyn LockGuard>>;

    /// Checks `plan` against the target without changing anything (no lock, no writes) and
    /// returns the versions executing it now would apply (up) or revert (down). The default
    /// reads [`MigrationRunner::history`] and applies the shared rules of
    /// [`crate::execute::steps`].
    async fn validate_migration(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
    ) -> Result<Vec<Version>> {
        let history = self.history(tenant).await?;
        Ok(crate::execute::steps(tenant, plan, &history)?
            .into_iter()
            .map(|m| m.version.clone())
            .collect())
    }

    /// Removes the target's lease whoever holds it, for a holder known to be gone; returns
    /// the lease removed. The holder's next fenced apply then fails with `LockLost`.
    async fn break_lock(&self, tenant: &TenantContext) -> Result<Option<crate::LockInfo>>;

    /// Executes `plan` on the target; the caller must hold the target's lock.
    async fn execute_migration(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
    ) -> Result<MigrationResult>;
}

/// Conveniences over any [`MigrationRunner`].
#[async_trait]
pub trait MigrationRunnerExt: MigrationRunner {
    /// Lock, execute, release — the lock is released on every path, including errors. The
    /// lock is [`LockRequest::deferrable`]: a backend may take it with the first apply.
    async fn apply_locked(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
        lock: &LockRequest,
    ) -> Result<MigrationResult> {
        let lock = lock.clone().deferrable();
        let guard = self.acquire_lock(tenant, &lock).await?;
        let plan = plan.clone().releasing_after();
        let outcome = self.execute_migration(tenant, &plan).await;
        let took_over = guard.took_over();
        let released = guard.release().await;
        match (outcome, released) {
            (Ok(mut result), Ok(())) => {
                result.lock_takeover = took_over;
                Ok(result)
            }
            (Ok(result), Err(error)) => {
                // Every apply was fenced by the lease, so what committed is sound; the
                // failed release only means the lease was already gone.
                tracing::warn!(environment = %tenant.environment, %error, "releasing the migration lock failed");
                Ok(MigrationResult {
                    lock_takeover: took_over,
                    ..result
                })
            }
            (Err(error), released) => {
                if let Err(release_error) = released {
                    tracing::warn!(environment = %tenant.environment, error = %release_error, "releasing the migration lock failed");
                }
                Err(error)
            }
        }
    }
}

impl<T: MigrationRunner + ?Sized> MigrationRunnerExt for T {}

/// Chooses the runner for a target by its URL scheme.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    by_scheme: BTreeMap<String, DynRunner>,
}

impl Backends {
    /// No backends.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves URLs with any of `schemes` (`"mem"`, `"ws"`, …) by `runner`.
    pub fn register(&mut self, schemes: &[&str], runner: DynRunner) -> &mut Self {
        for scheme in schemes {
            self.by_scheme
                .insert(scheme.to_ascii_lowercase(), Arc::clone(&runner));
        }
        self
    }

    /// The runner for `tenant`'s URL.
    pub fn runner_for(&self, tenant: &TenantContext) -> Result<DynRunner> {
        self.by_scheme
            .get(&tenant.connection.scheme())
            .cloned()
            .ok_or_else(|| RunnerError::UnsupportedUrl {
                environment: tenant.environment.clone(),
                url: tenant.connection.redacted_url(),
                supported: self
                    .by_scheme
                    .keys()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}
