//! The conformance suite every backend must pass.
//!
//! A backend implements [`Harness`] (how to get a runner, a fresh target, and a snapshot of
//! a target's schema and data) and expands [`conformance_tests!`](crate::conformance_tests)
//! in its tests; each check becomes its own `#[tokio::test]`. The suite's migrations are
//! ordinary SurrealQL; `THROW` is the statement that fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_core::{MigrationSet, Version};

use crate::lock::{LockOwner, LockRequest};
use crate::runner::DynRunner;
use crate::target::{MigrationPlan, Target};

/// What the suite needs from a backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A runner (a new one per call, or a shared one).
    async fn runner(&self) -> DynRunner;
    /// A target no other check uses; `name` is unique per check.
    fn target(&self, name: &str) -> Target;
    /// The target's schema and data, rendered so that equal states render equally.
    async fn snapshot(&self, target: &Target) -> String;
}

/// Expands to one `#[tokio::test]` per conformance check, each calling `$harness` (an
/// expression evaluating to something implementing [`Harness`]) afresh.
mod apply;
mod lock;
mod revert;

pub use apply::*;
pub use lock::*;
pub use revert::*;

#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            applies_pending_once_and_is_idempotent,
            failing_migration_leaves_nothing_behind,
            drift_is_detected_before_anything_runs,
            missing_files_and_out_of_order_are_errors_unless_allowed,
            concurrent_appliers_apply_each_migration_once,
            live_lock_is_never_taken,
            expired_lock_is_taken_over,
            heartbeat_keeps_the_lease_alive,
            execute_requires_the_lock,
            revert_is_atomic_and_exact,
            a_failed_revert_stops_there,
            health_is_truthful,
            validation_changes_nothing,
            lock_is_released_when_a_migration_fails,
            a_failed_execution_keeps_the_lease_until_release,
            a_broken_lock_is_free_and_its_holder_applies_nothing,
            a_long_final_migration_commits_once_while_the_lease_is_renewed,
            a_lease_lost_during_a_migration_stops_the_next_one,
            a_takeover_during_a_migration_rolls_it_back,
            a_revert_never_leaves_a_newer_version_applied,
            a_deployment_reverts_exactly_what_it_applied,
            one_process_holds_one_lease_per_database,
        );
    };
    (@each $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $harness;
                $crate::testkit::$check(&harness).await;
            }
        )*
    };
}

const PEOPLE: &str = "-- @up
DEFINE TABLE person SCHEMAFULL;
DEFINE FIELD name ON person TYPE string;
DEFINE INDEX person_name ON person FIELDS name UNIQUE;
-- @down
REMOVE TABLE person;
";

const SEED: &str = "-- @up
CREATE person:ada SET name = 'Ada; the first';
CREATE person:bob SET name = \"Bob {not a block}\";
-- @down
DELETE person:ada;
DELETE person:bob;
";

const GREET: &str = "-- @up
DEFINE FUNCTION fn::greet($who: string) {
    LET $greeting = 'hello; ' + $who;
    RETURN $greeting;
};
-- @down
REMOVE FUNCTION fn::greet;
";

/// Its 4th statement fails after three that would leave a table, a field and a record.
const FAILING: &str = "-- @up
DEFINE TABLE audit SCHEMAFULL;
DEFINE FIELD note ON audit TYPE string;
CREATE audit:1 SET note = 'written before the failure';
THROW 'injected failure at statement 4';
-- @down
REMOVE TABLE audit;
";

/// The same migration without its failing statement.
const FIXED: &str = "-- @up
DEFINE TABLE audit SCHEMAFULL;
DEFINE FIELD note ON audit TYPE string;
CREATE audit:1 SET note = 'written before the failure';
-- @down
REMOVE TABLE audit;
";

/// Runs after [`FAILING`] in the same deploy: it must not run at all.
const AFTER_FAILING: &str = "-- @up
DEFINE TABLE later SCHEMALESS;
CREATE later:1 SET note = 'must not exist after 0004 failed';
-- @down
REMOVE TABLE later;
";

/// A migration set from `(file name, contents)`.
pub fn migrations(files: &[(&str, &str)]) -> Arc<MigrationSet> {
    let set = MigrationSet::from_files(files.iter().map(|(name, text)| {
        (
            PathBuf::from(format!("migrations/{name}")),
            (*text).to_owned(),
        )
    }))
    .expect("the suite's migrations are valid");
    Arc::new(set)
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("0001_people.surql", PEOPLE),
        ("0002_seed.surql", SEED),
        ("0003_greet.surql", GREET),
    ]
}

fn lock(wait: Duration) -> LockRequest {
    LockRequest::new(Some("conformance".into()), wait)
}

fn owner(name: &str) -> LockOwner {
    LockOwner {
        host: format!("{name}-host"),
        pid: 4242,
        deployment_id: Some(name.to_owned()),
    }
}

fn versions(list: &[Version]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

async fn history_versions(runner: &DynRunner, target: &Target) -> Vec<String> {
    let history = runner.history(target).await.expect("history");
    history.iter().map(|row| row.version.to_string()).collect()
}

async fn apply(
    runner: &DynRunner,
    target: &Target,
    plan: &MigrationPlan,
) -> crate::Result<crate::MigrationResult> {
    runner
        .apply_locked(target, plan, &lock(Duration::from_secs(30)))
        .await
}

/// The in-memory runner's harness, also a model for backends' own.
#[derive(Debug, Default)]
pub struct MemoryHarness {
    runner: crate::MemoryRunner,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn runner(&self) -> DynRunner {
        Arc::new(self.runner.clone())
    }

    fn target(&self, name: &str) -> Target {
        Target::new(
            name,
            flotilla_core::Connection::new("mem://", "conformance", name),
        )
    }

    async fn snapshot(&self, target: &Target) -> String {
        format!("{:?}", self.runner.objects(target))
    }
}
