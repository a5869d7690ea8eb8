//! The conformance suite against embedded SurrealDB: `mem://` and `surrealkv://`.

use std::sync::Arc;

use async_trait::async_trait;
use flotilla_core::Connection;
use flotilla_runner::testkit::Harness;
use flotilla_runner::{DynRunner, Target};
use flotilla_surrealdb::SurrealRunner;

/// Every check gets its own runner and so its own datastore.
struct Embedded {
    runner: SurrealRunner,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Embedded {
    fn memory() -> Self {
        Self {
            runner: SurrealRunner::new(),
            url: "mem://".to_owned(),
            _dir: None,
        }
    }

    fn surrealkv() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("surrealkv://{}", dir.path().join("db").display());
        Self {
            runner: SurrealRunner::new(),
            url,
            _dir: Some(dir),
        }
    }
}

#[async_trait]
impl Harness for Embedded {
    async fn runner(&self) -> DynRunner {
        // An embedded datastore belongs to one process: every "process" shares the runner.
        Arc::new(self.runner.clone())
    }

    fn target(&self, name: &str) -> Target {
        Target::new(name, Connection::new(self.url.clone(), "conformance", name))
    }

    async fn snapshot(&self, target: &Target) -> String {
        self.runner.snapshot(target).await.expect("snapshot")
    }
}

mod mem {
    flotilla_runner::conformance_tests!(super::Embedded::memory());
}

mod surrealkv {
    flotilla_runner::conformance_tests!(super::Embedded::surrealkv());
}

/// The runner remembers which targets have a history table, to leave its definitions out of
/// the lock request. A table removed behind its back is defined again, not an error.
#[tokio::test]
async fn a_history_table_removed_after_the_health_probe_is_defined_again() {
    use flotilla_runner::testkit::migrations;
    use flotilla_runner::{LockRequest, MigrationPlan, MigrationRunner};

    let runner = SurrealRunner::new();
    let target = Target::new("t", Connection::new("mem://", "removed", "app"));
    let first = MigrationPlan::up(migrations(&[(
        "0001_a.surql",
        "DEFINE TABLE IF NOT EXISTS a;",
    )]));
    let lock = LockRequest::new(Some("test".into()), std::time::Duration::from_secs(10));
    runner
        .apply_locked(&target, &first, &lock)
        .await
        .expect("first deploy");
    let health = runner.health(&target).await.expect("health");
    assert!(health.initialised);
    runner
        .session(&target)
        .await
        .expect("session")
        .query("REMOVE TABLE _migration_history")
        .await
        .expect("remove")
        .check()
        .expect("removed");
    let result = runner
        .apply_locked(&target, &first, &lock)
        .await
        .expect("deploy after the history table was removed");
    // Without its history the target looks new: 0001 is pending again.
    assert_eq!(result.applied.len(), 1);
    assert_eq!(runner.history(&target).await.expect("history").len(), 1);
}

/// `count` targets in one `mem://` datastore: databases `db0`, `db1`, … of `namespace`.
fn mem_targets(namespace: &str, count: usize) -> Vec<Target> {
    (0..count)
        .map(|i| {
            Target::new(
                format!("t{i}"),
                Connection::new("mem://", namespace, format!("db{i}")),
            )
        })
        .collect()
}

/// The round trips a deploy costs per target, counted: the lock request (which reads
/// history), one request for all pending migrations (which releases the lock with the
/// last), and nothing else; a re-run with nothing pending takes the lock and releases it.
#[tokio::test]
async fn a_deploy_is_two_requests_per_target() {
    use flotilla_runner::testkit::migrations;
    use flotilla_runner::{LockRequest, MigrationPlan, MigrationRunner};

    let runner = SurrealRunner::new();
    let plan = MigrationPlan::up(migrations(&[
        ("0001_a.surql", "DEFINE TABLE a; CREATE a:1;"),
        ("0002_b.surql", "DEFINE TABLE b; CREATE b:1;"),
        ("0003_c.surql", "DEFINE TABLE c; CREATE c:1;"),
    ]));
    let lock = LockRequest::new(Some("test".into()), std::time::Duration::from_secs(10));
    let count = 4;
    let targets = mem_targets("rt", count);
    for target in &targets {
        let result = runner
            .apply_locked(target, &plan, &lock)
            .await
            .expect("deploy");
        assert_eq!(result.applied.len(), 3);
    }
    assert_eq!(runner.request_count(), 2 * count as u64);
    for target in &targets {
        let probe = runner.probe(target).await.expect("probe");
        assert_eq!(probe.health.lock, None, "released with the last migration");
        assert_eq!(probe.history.map(|h| h.len()).ok(), Some(3));
    }
    assert_eq!(runner.request_count(), 3 * count as u64);
    for target in &targets {
        let result = runner
            .apply_locked(target, &plan, &lock)
            .await
            .expect("re-run");
        assert!(result.applied.is_empty());
    }
    assert_eq!(
        runner.request_count(),
        5 * count as u64,
        "nothing pending: lock, then release"
    );
}

/// Targets the health probe found never migrated — their databases not made yet, since the
/// probe made nothing — have their databases made in one request together, then each is
/// locked and migrated in one request:
/// the apply request takes the lease in its first migration's transaction. Its lock is the
/// apply's own: held while the migrations run, free after.
#[tokio::test]
async fn probed_new_targets_are_made_together_then_each_locked_and_migrated_in_one_request() {
    use flotilla_runner::testkit::migrations;
    use flotilla_runner::{LockRequest, MigrationPlan, MigrationRunner};

    let runner = SurrealRunner::new();
    let plan = MigrationPlan::up(migrations(&[
        ("0001_a.surql", "DEFINE TABLE a; CREATE a:1;"),
        ("0002_b.surql", "DEFINE TABLE b; CREATE b:1;"),
    ]));
    let lock = LockRequest::new(Some("test".into()), std::time::Duration::from_secs(10));
    let count = 4;
    let targets = mem_targets("one-request", count);
    for target in &targets {
        assert!(!runner.health(target).await.expect("health").initialised);
    }
    let before = runner.request_count();
    // What a coordinator does once every gate has passed.
    runner.prepare(&targets).await.expect("prepare");
    for target in &targets {
        let result = runner
            .apply_locked(target, &plan, &lock)
            .await
            .expect("deploy");
        assert_eq!(result.applied.len(), 2);
        assert_eq!(result.lock_takeover, None);
    }
    // The probes made nothing, so the databases are made first — all four in one request,
    // explicitly, when the rollout is prepared — then each target is locked and migrated in
    // one request.
    assert_eq!(runner.request_count() - before, count as u64 + 1);
    for target in &targets {
        let probe = runner.probe(target).await.expect("probe");
        assert!(probe.health.initialised);
        assert_eq!(probe.health.lock, None, "released with the last migration");
        assert_eq!(probe.history.map(|h| h.len()).ok(), Some(2));
    }

    // `acquire_lock` (a caller that holds the lock before deciding what to run) returns with
    // the lease on the target.
    let fresh = Target::new("held", Connection::new("mem://", "one-request", "held"));
    assert!(!runner.health(&fresh).await.expect("health").initialised);
    let guard = runner.acquire_lock(&fresh, &lock).await.expect("lock");
    let holder = runner.health(&fresh).await.expect("health").lock;
    assert_eq!(holder.map(|l| l.owner), Some(guard.info().owner));
    guard.release().await.expect("release");
}
