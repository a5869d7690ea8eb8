//! The database-agnostic seam of flotilla: the [`MigrationRunner`] and [`LockGuard`] traits
//! every backend implements, the data that crosses them ([`Target`],
//! [`MigrationPlan`], [`MigrationResult`], [`HealthStatus`]), an error enum a caller can act
//! on, [`Backends`] to pick a runner by URL scheme, and [`MemoryRunner`], an in-memory
//! reference runner with fault injection.
//!
//! Invariant: this crate knows no database. Backends live in their own crates and prove
//! themselves against the conformance suite in [`testkit`] (feature `testkit`); mockall mocks
//! of the traits (`MockMigrationRunner`, `MockLockGuard`) come with feature `mock`.

pub mod control;
mod error;
pub mod execute;
pub mod fleet;
mod lock;
mod memory;
mod rehearsal;
mod runner;
mod target;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod util;

pub use error::{BoxError, ErrorClass, Result, RunnerError};
#[cfg(any(test, feature = "mock"))]
pub use lock::MockLockGuard;
pub use lock::{
    Attempt, Backoff, Heartbeat, LeaseWatch, LocalHold, LocalLocks, LockGuard, LockInfo, LockOwner,
    LockRequest, Renewal, jitter, wait_for_lock,
};
pub use memory::MemoryRunner;
pub use rehearsal::{Problem as RehearsalProblem, Rehearsal, RehearsalFinding, RehearsalPlan};
#[cfg(any(test, feature = "mock"))]
pub use runner::MockMigrationRunner;
pub use runner::{Backends, DynRunner, MigrationRunner, lock_execute_release, settle_release};
pub use target::{
    DatabaseKey, Direction, HealthStatus, MigrationObserver, MigrationPlan, MigrationResult, Probe,
    Revert, Target,
};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_core::Connection;

    use super::*;

    #[tokio::test]
    async fn backends_choose_by_scheme_and_name_the_supported_ones() {
        let mut backends = Backends::new();
        let memory: DynRunner = Arc::new(MemoryRunner::new());
        backends.register(&["mem"], memory);
        let ok = Target::new("dev", Connection::new("MEM://", "ns", "db"));
        assert!(backends.runner_for(&ok).is_ok());
        let bad = Target::new(
            "prod",
            Connection::new("postgres://u:secret@h/db", "ns", "db"),
        );
        let err = backends.runner_for(&bad).expect_err("unsupported");
        let message = err.to_string();
        assert!(
            message.contains("prod") && message.contains("mem://"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }

    #[tokio::test]
    async fn the_default_apply_locked_releases_the_lock_when_execution_fails() {
        let mut runner = MockMigrationRunner::new();
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&released);
        runner.expect_acquire_lock().returning(move |_, _| {
            let mut guard = MockLockGuard::new();
            let flag = Arc::clone(&flag);
            guard.expect_took_over().return_const(None);
            guard.expect_release().returning(move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            });
            Ok(Box::new(guard))
        });
        runner.expect_execute_migration().returning(|target, _, _| {
            Err(RunnerError::Unreachable {
                environment: target.environment.clone(),
                endpoint: "mem://".into(),
                source: "gone".into(),
            })
        });
        let target = Target::new("dev", Connection::new("mem://", "ns", "db"));
        let plan = MigrationPlan::up(Arc::new(flotilla_core::MigrationSet::default()));
        let request = LockRequest::new(None, std::time::Duration::from_millis(10));
        let err = lock_execute_release(&runner, &target, &plan, &request)
            .await
            .expect_err("execution fails");
        assert_eq!(err.class(), ErrorClass::TargetUnreachable);
        assert!(
            released.load(std::sync::atomic::Ordering::SeqCst),
            "lock must be released"
        );
    }
}
