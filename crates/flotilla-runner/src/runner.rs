//! The `MigrationRunner` trait, its conveniences, and choosing a runner by URL scheme.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flotilla_core::{AppliedMigration, Version};

use crate::error::{Result, RunnerError};

use crate::lock::{LockGuard, LockRequest};
use crate::target::{HealthStatus, MigrationPlan, MigrationResult, Probe, Target};

/// The shared handle strategies and the coordinator hold.
pub type DynRunner = Arc<dyn MigrationRunner>;

/// Applies migrations to targets of one kind of database.
///
/// A runner may serve many targets over one connection (many tenants on one server is the
/// common case). Implementations must:
/// - apply each migration's statements and its history row atomically;
/// - compute what to apply from history read while the lock is held, refusing to execute
///   without the lock ([`RunnerError::NotLocked`]), and apply nothing once the lease is lost;
/// - fail on drift before changing anything ([`flotilla_core::pending`] does the comparing).
///
/// The conformance suite in `flotilla_runner::testkit` (feature `testkit`) checks all this.
/// [`MigrationRunner::apply_locked`] and [`MigrationRunner::probe`] are provided with the plain
/// composition of the others; a backend may override them with a path that takes fewer round
/// trips, keeping what the composition promises.
// `unused_parens`: mockall's expansion needs the guard's `'static` spelled out, and the
// grammar needs the parentheses around `dyn LockGuard + 'static`; the lint misreads them.
#[allow(unused_parens)]
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait MigrationRunner: Send + Sync + fmt::Debug {
    /// Connects, authenticates and queries the target; reports whether it is initialised
    /// and who holds its lock. Errors say why the target is not healthy.
    async fn health(&self, target: &Target) -> Result<HealthStatus>;

    /// The target's applied migrations, oldest first. Reads only.
    async fn history(&self, target: &Target) -> Result<Vec<AppliedMigration>>;

    /// Health and history together, as a pre-flight reads them. The default asks
    /// [`MigrationRunner::health`], then [`MigrationRunner::history`].
    async fn probe(&self, target: &Target) -> Result<Probe> {
        let health = self.health(target).await?;
        let history = self.history(target).await;
        Ok(Probe { health, history })
    }

    /// Takes the target's lock, waiting up to `request.wait` for a live lease to go away.
    /// When this returns, the lease is on the target and the guard's heartbeat renews it.
    async fn acquire_lock(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<Box<dyn LockGuard>>;

    /// Checks `plan` against the target without changing anything (no lock, no writes) and
    /// returns the versions executing it now would apply (up) or revert (down). The default
    /// reads [`MigrationRunner::history`] and applies the shared rules of
    /// [`crate::execute::steps`].
    async fn validate_migration(
        &self,
        target: &Target,
        plan: &MigrationPlan,
    ) -> Result<Vec<Version>> {
        let history = self.history(target).await?;
        Ok(crate::execute::steps(target, plan, &history)?
            .into_iter()
            .map(|m| m.version.clone())
            .collect())
    }

    /// Removes the target's lease whoever holds it, for a holder known to be gone; returns
    /// the lease removed. The holder's next fenced apply then fails with `LockLost`.
    async fn break_lock(&self, target: &Target) -> Result<Option<crate::LockInfo>>;

    /// Executes `plan` on the target under `lock`, which this runner's
    /// [`MigrationRunner::acquire_lock`] returned for this target; anything else is refused
    /// ([`RunnerError::NotLocked`]). Does not release the lock.
    async fn execute_migration(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        lock: &(dyn LockGuard + 'static),
    ) -> Result<MigrationResult>;

    /// Rehearses `plan` on a scratch database of this backend's kind — every up, every down
    /// (newest first) compared with the schema before its up, every up again — and reports
    /// what fails or does not undo itself. Changes no target (a base target is only read).
    /// The default says the backend cannot rehearse.
    async fn rehearse(&self, plan: &crate::RehearsalPlan) -> Result<crate::Rehearsal> {
        let _ = plan;
        Err(RunnerError::Unsupported {
            what: "rehearsing migrations",
        })
    }

    /// Called once before a rollout writes to `targets` (every gate has passed): a backend
    /// may prepare them together. SurrealDB makes the databases its probes found missing,
    /// many per request. The default does nothing; a failure here only costs each target
    /// preparing itself.
    async fn prepare(&self, targets: &[Target]) -> Result<()> {
        let _ = targets;
        Ok(())
    }

    /// Lock, execute, release — the lock is released on every path, including errors, and
    /// the result reports a taken-over lease. The default is exactly
    /// [`lock_execute_release`]; a backend may do the same in fewer round trips (take the
    /// lease with the first apply, release it with the last), never holding less of a lock.
    async fn apply_locked(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        lock: &LockRequest,
    ) -> Result<MigrationResult> {
        lock_execute_release(self, target, plan, lock).await
    }
}

/// [`MigrationRunner::apply_locked`]'s plain form: [`MigrationRunner::acquire_lock`], then
/// [`MigrationRunner::execute_migration`], then [`LockGuard::release`] whatever happened.
pub async fn lock_execute_release<R: MigrationRunner + ?Sized>(
    runner: &R,
    target: &Target,
    plan: &MigrationPlan,
    lock: &LockRequest,
) -> Result<MigrationResult> {
    let guard = runner.acquire_lock(target, lock).await?;
    let outcome = runner.execute_migration(target, plan, guard.as_ref()).await;
    let took_over = guard.took_over();
    let released = guard.release().await;
    settle_release(target, outcome, took_over, released)
}

/// The result of lock → execute → release from its parts: the execution's outcome decides
/// (every apply was fenced by the lease, so what committed is sound), the lease taken over
/// is reported, and a release that failed — the lease was gone already — is only logged.
pub fn settle_release(
    target: &Target,
    outcome: Result<MigrationResult>,
    took_over: Option<crate::LockInfo>,
    released: Result<()>,
) -> Result<MigrationResult> {
    if let Err(error) = released {
        tracing::warn!(environment = %target.environment, %error, "releasing the migration lock failed");
    }
    outcome.map(|result| MigrationResult {
        lock_takeover: took_over,
        ..result
    })
}

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

    /// The runner for `target`'s URL.
    pub fn runner_for(&self, target: &Target) -> Result<DynRunner> {
        self.by_scheme
            .get(&target.connection.scheme())
            .cloned()
            .ok_or_else(|| RunnerError::UnsupportedUrl {
                environment: target.environment.clone(),
                url: target.connection.redacted_url(),
                supported: self
                    .by_scheme
                    .keys()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}
