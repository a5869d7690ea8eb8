//! Exactly once, atomic and locked when things go wrong, checked against real SurrealDB: a
//! server that stops answering, an endpoint that never answers, many long migrations at once
//! on one endpoint, a revert racing another, lost replies, a rollback that fails, a deploy
//! that is stopped. (The same faults with the `flotilla` binary as a real process are in
//! `crates/flotilla-cli/tests/faults.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_coordinator::{
    DeploymentCoordinator, DeploymentPlan, EnvironmentConfig, EnvironmentRegistry, Outcome, Stop,
};
use flotilla_core::{AppliedMigration, AuthLevel, Connection, DeploymentStatus, Version};
use flotilla_runner::testkit::migrations;
use flotilla_runner::{
    Backends, DynRunner, ErrorClass, HealthStatus, LockGuard, LockInfo, LockRequest, MemoryRunner,
    MigrationPlan, MigrationResult, MigrationRunner, Result, RunnerError, Target,
};
use flotilla_strategies::StrategyKind;
use flotilla_surrealdb::{SurrealConfig, SurrealRunner};
use flotilla_tests::{ROOT_PASS, ROOT_USER, SilentEndpoint, TestServer};

fn server() -> TestServer {
    TestServer::start(Path::new(env!("CARGO_BIN_EXE_flotilla-test-server")))
}

fn root(url: &str, namespace: &str, database: &str) -> Connection {
    Connection::new(url, namespace, database).with_credentials(
        ROOT_USER,
        ROOT_PASS,
        AuthLevel::Root,
    )
}

fn quick(seconds: u64) -> SurrealConfig {
    SurrealConfig {
        connect_timeout: Duration::from_secs(seconds),
        request_timeout: Duration::from_secs(seconds),
        ..SurrealConfig::default()
    }
}

/// Forty targets on one endpoint each running a migration longer than their lease, all at
/// once: more than the 32 sessions deploys get, so some wait for a session while holding a
/// lease. Their renewals must not wait behind the migrations: another process trying every
/// lock meanwhile finds each one held, and every migration commits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewals_never_queue_behind_migrations() {
    let server = server();
    let runner = SurrealRunner::new();
    let targets: Vec<Target> = (0..40)
        .map(|i| {
            Target::new(
                format!("t{i}"),
                root(&server.ws_url(), "renewals", &format!("db{i}")),
            )
        })
        .collect();
    let base = migrations(&[("0001_a.surql", "DEFINE TABLE a;")]);
    for target in &targets {
        runner
            .apply_locked(target, &MigrationPlan::up(Arc::clone(&base)), &lock(30, 30))
            .await
            .expect("first migration");
    }
    let slow = migrations(&[
        ("0001_a.surql", "DEFINE TABLE a;"),
        ("0002_slow.surql", "SLEEP 2500ms;\nCREATE a:slow;"),
    ]);
    let lease = LockRequest::new(Some("slow".into()), Duration::from_secs(30))
        .with_lease(Duration::from_millis(900));
    let deploys = futures::future::join_all(targets.iter().map(|target| {
        let plan = MigrationPlan::up(Arc::clone(&slow));
        let runner = runner.clone();
        let lease = lease.clone();
        async move { runner.apply_locked(target, &plan, &lease).await }
    }));
    let other = SurrealRunner::new();
    let intruder = async {
        // Well past a lease length into the migrations.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let mut taken = 0;
        for target in &targets {
            match other
                .acquire_lock(target, &LockRequest::new(None, Duration::ZERO))
                .await
            {
                Ok(guard) => {
                    taken += 1;
                    guard.release().await.expect("release");
                }
                Err(RunnerError::LockHeld { .. }) => {}
                Err(error) => panic!("unexpected: {error}"),
            }
        }
        taken
    };
    let (results, taken) = tokio::join!(deploys, intruder);
    assert_eq!(
        taken, 0,
        "a lease expired while its holder waited to migrate"
    );
    for (target, result) in targets.iter().zip(results) {
        let result = result.unwrap_or_else(|e| panic!("{}: {e}", target.environment));
        assert_eq!(result.applied.len(), 1, "{}", target.environment);
    }
}

/// Thirty targets on an endpoint that accepts connections and never answers fail together,
/// after one connect attempt, not thirty in turn.
#[tokio::test]
async fn a_silent_endpoint_fails_every_target_on_it_with_one_connect() {
    let silent = SilentEndpoint::start();
    let runner = SurrealRunner::with_config(quick(1));
    let targets: Vec<Target> = (0..30)
        .map(|i| {
            Target::new(
                format!("t{i}"),
                root(&silent.ws_url(), "silent", &format!("db{i}")),
            )
        })
        .collect();
    let probes = tokio::time::timeout(
        Duration::from_secs(20),
        futures::future::join_all(targets.iter().map(|t| runner.health(t))),
    )
    .await
    .expect("never a hang");
    for probe in probes {
        let error = probe.expect_err("nobody answers");
        assert_eq!(error.class(), ErrorClass::TargetUnreachable, "{error}");
    }
    assert_eq!(runner.connect_attempts(), 1);
    assert_eq!(silent.accepted(), 1, "one connection for thirty targets");
}

/// A server that stops answering (SIGSTOP) makes requests fail after the request timeout,
/// with a clear error; once it answers again, so does the runner.
#[tokio::test]
async fn a_stalled_server_fails_requests_after_the_timeout_and_recovers() {
    let server = server();
    let runner = SurrealRunner::with_config(quick(1));
    let target = Target::new("stalled", root(&server.ws_url(), "stalled", "app"));
    let plan = MigrationPlan::up(migrations(&[("0001_a.surql", "DEFINE TABLE a;")]));
    runner
        .apply_locked(&target, &plan, &lock(5, 30))
        .await
        .expect("deploy");
    server.signal("STOP");
    let error = tokio::time::timeout(Duration::from_secs(15), runner.history(&target))
        .await
        .expect("never a hang")
        .expect_err("the server is stopped");
    assert_eq!(error.class(), ErrorClass::TargetUnreachable, "{error}");
    assert!(error.to_string().contains("did not answer"), "{error}");
    let others: Vec<Target> = (0..10)
        .map(|i| {
            Target::new(
                format!("o{i}"),
                root(&server.ws_url(), "stalled", &format!("o{i}")),
            )
        })
        .collect();
    let probes = tokio::time::timeout(
        Duration::from_secs(15),
        futures::future::join_all(others.iter().map(|t| runner.health(t))),
    )
    .await
    .expect("never a hang");
    assert!(probes.iter().all(Result::is_err));
    server.signal("CONT");
    let history = retry_until_ok(|| runner.history(&target)).await;
    assert_eq!(history.len(), 1);
}

/// A migration running when the server stops answering is given up once no renewal of its
/// lease has succeeded for a lease length — not waited on forever — and what it did is then
/// unknown or failed, never reported applied. After the server answers again, a rerun
/// applies it exactly once.
#[tokio::test]
async fn a_migration_on_a_server_that_stops_answering_is_given_up_and_rerun_once() {
    let server = server();
    let runner = SurrealRunner::with_config(quick(1));
    let target = Target::new("given-up", root(&server.ws_url(), "given", "up"));
    let set = migrations(&[
        ("0001_a.surql", "DEFINE TABLE a;"),
        ("0002_slow.surql", "SLEEP 2s;\nCREATE effect SET n = 1;"),
    ]);
    runner
        .apply_locked(
            &target,
            &MigrationPlan::up(migrations(&[("0001_a.surql", "DEFINE TABLE a;")])),
            &lock(5, 30),
        )
        .await
        .expect("first migration");
    let request = LockRequest::new(Some("stalled".into()), Duration::from_secs(5))
        .with_lease(Duration::from_millis(900));
    let plan = MigrationPlan::up(Arc::clone(&set));
    let deploying = runner.apply_locked(&target, &plan, &request);
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.signal("STOP");
    };
    let (outcome, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(deploying, stopping)
    })
    .await
    .expect("never a hang");
    let error = outcome.expect_err("the server stopped answering");
    assert!(
        matches!(
            error.class(),
            ErrorClass::TargetUnreachable | ErrorClass::OutcomeUnknown
        ),
        "{error}"
    );
    assert!(error.applied_before_failure().is_empty(), "{error:?}");
    server.signal("CONT");
    let after = SurrealRunner::with_config(quick(5));
    let patient = lock(10, 30);
    let result = retry_until_ok(|| after.apply_locked(&target, &plan, &patient)).await;
    let history = retry_until_ok(|| after.history(&target)).await;
    assert_eq!(history.len(), 2, "{result:?}");
    let session = after.session(&target).await.expect("session");
    let mut counted = session
        .query("SELECT count() FROM effect GROUP ALL")
        .await
        .expect("count");
    let count: Option<serde_json::Value> = counted
        .take::<surrealdb::types::Value>(0)
        .ok()
        .map(surrealdb::types::Value::into_json_value);
    assert_eq!(
        count,
        Some(serde_json::json!([{ "count": 1 }])),
        "the slow migration committed exactly once"
    );
}

/// A revert finds its history row gone (someone reverted it meanwhile, with a view of
/// history older than ours): the revert's fence refuses, and nothing is reverted twice.
#[tokio::test]
async fn a_revert_whose_row_is_gone_reverts_nothing_twice() {
    let runner = SurrealRunner::new();
    let target = Target::new("twice", Connection::new("mem://", "twice", "app"));
    let set = migrations(&[
        (
            "0001_a.surql",
            "-- @up\nDEFINE TABLE a;\n-- @down\nREMOVE TABLE a;",
        ),
        (
            "0002_b.surql",
            "-- @up\nCREATE a:1;\n-- @down\nDELETE a:1;\nCREATE undone:1;",
        ),
    ]);
    runner
        .apply_locked(&target, &MigrationPlan::up(Arc::clone(&set)), &lock(5, 30))
        .await
        .expect("deploy");
    let guard = runner
        .acquire_lock(&target, &lock(5, 30))
        .await
        .expect("lock");
    // Another deployer's revert of 0002, after our lock read history.
    runner
        .session(&target)
        .await
        .expect("session")
        .query("DELETE _migration_history WHERE version = '0002'")
        .await
        .expect("delete")
        .check()
        .expect("deleted");
    let down = MigrationPlan::down(Arc::clone(&set), vec![Version::parse("0002").expect("v")]);
    let error = runner
        .execute_migration(&target, &down, guard.as_ref())
        .await
        .expect_err("the row is gone");
    assert!(
        matches!(error, RunnerError::AlreadyReverted { .. }),
        "{error:?}"
    );
    guard.release().await.expect("release");
    let snapshot = runner.snapshot(&target).await.expect("snapshot");
    assert!(!snapshot.contains("undone"), "0002's down ran: {snapshot}");
}

/// A reply lost after its migration committed is settled from history: the result says
/// exactly what was applied, and a rerun applies nothing twice.
#[tokio::test]
async fn a_lost_reply_is_settled_from_history() {
    let runner = MemoryRunner::new();
    let target = Target::new("lost", Connection::new("mem://", "lost", "app"));
    let set = migrations(&[
        ("0001_a.surql", "CREATE a:1;"),
        ("0002_b.surql", "CREATE b:1;"),
        ("0003_c.surql", "CREATE c:1;"),
    ]);
    runner.lose_reply_after_commit("0002");
    let result = runner
        .apply_locked(&target, &MigrationPlan::up(Arc::clone(&set)), &lock(5, 30))
        .await
        .expect("the lost reply is settled");
    let applied: Vec<String> = result.applied.iter().map(ToString::to_string).collect();
    assert_eq!(applied, ["0001", "0002", "0003"]);
    assert_eq!(
        runner.objects(&target),
        ["CREATE a:1", "CREATE b:1", "CREATE c:1"]
    );
    let again = runner
        .apply_locked(&target, &MigrationPlan::up(set), &lock(5, 30))
        .await
        .expect("rerun");
    assert!(again.applied.is_empty());
}

fn lock(wait: u64, lease: u64) -> LockRequest {
    LockRequest::new(Some("reliability".into()), Duration::from_secs(wait))
        .with_lease(Duration::from_secs(lease))
}

/// Retries `attempt` (bounded: 60 tries, 250 ms apart) until it succeeds — for a server
/// coming back.
async fn retry_until_ok<T, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = None;
    for _ in 0..60 {
        match attempt().await {
            Ok(value) => return value,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("never succeeded: {last:?}");
}

/// A runner that wraps another and, for one environment, reports every apply as unknown
/// (its reply lost, history unreadable at that moment) after the inner runner applied it —
/// the coordinator must learn from history what was applied there.
#[derive(Debug)]
struct LosesReplies {
    inner: MemoryRunner,
    unlucky: String,
}

#[async_trait]
impl MigrationRunner for LosesReplies {
    async fn health(&self, target: &Target) -> Result<HealthStatus> {
        self.inner.health(target).await
    }
    async fn history(&self, target: &Target) -> Result<Vec<AppliedMigration>> {
        self.inner.history(target).await
    }
    async fn acquire_lock(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<Box<dyn LockGuard>> {
        self.inner.acquire_lock(target, request).await
    }
    async fn break_lock(&self, target: &Target) -> Result<Option<LockInfo>> {
        self.inner.break_lock(target).await
    }
    async fn execute_migration(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        lock: &(dyn LockGuard + 'static),
    ) -> Result<MigrationResult> {
        let result = self.inner.execute_migration(target, plan, lock).await?;
        if target.environment == self.unlucky && plan.direction == flotilla_runner::Direction::Up {
            return Err(RunnerError::OutcomeUnknown {
                environment: target.environment.clone(),
                versions: result.applied,
                source: Box::new(RunnerError::Backend {
                    environment: target.environment.clone(),
                    source: "the reply was lost (injected)".into(),
                }),
            });
        }
        Ok(result)
    }
}

fn memory_fleet(names: &[&str]) -> EnvironmentRegistry {
    let registry = EnvironmentRegistry::new();
    for name in names {
        registry
            .register(
                EnvironmentConfig::new(*name, Connection::new("mem://", *name, "app"))
                    .expect("valid"),
            )
            .expect("register");
    }
    registry
}

fn coordinator(runner: DynRunner) -> DeploymentCoordinator {
    let mut backends = Backends::new();
    backends.register(&["mem"], runner);
    DeploymentCoordinator::new(backends)
}

/// A target whose outcome is unknown is read back from history, so the report says exactly
/// what this deployment applied there, and auto-rollback reverts exactly that.
#[tokio::test]
async fn an_unknown_outcome_is_read_back_and_rolled_back_exactly() {
    let inner = MemoryRunner::new();
    let runner: DynRunner = Arc::new(LosesReplies {
        inner: inner.clone(),
        unlucky: "b".into(),
    });
    let registry = memory_fleet(&["a", "b"]);
    let set = migrations(&[
        ("0001_a.surql", "-- @up\nCREATE a:1;\n-- @down\nDELETE a:1;"),
        ("0002_b.surql", "-- @up\nCREATE b:1;\n-- @down\nDELETE b:1;"),
    ]);
    let plan = DeploymentPlan::builder(&registry)
        .all()
        .migrations(set)
        .kind(StrategyKind::Parallel)
        .build()
        .expect("plan");
    let report = coordinator(runner).deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    let b = report.environment("b").expect("b");
    assert_eq!(b.applied.len(), 2, "read back from history: {b:#?}");
    assert_eq!(b.rolled_back.len(), 2, "{b:#?}");
    for name in ["a", "b"] {
        let target = Target::new(name, Connection::new("mem://", name, "app"));
        assert!(
            inner.history(&target).await.expect("history").is_empty(),
            "{name}"
        );
        assert!(inner.objects(&target).is_empty(), "{name}");
    }
}

/// When auto-rollback itself fails, the report says per target what was reverted and what
/// is still applied, and the outcome says the rollback failed.
#[tokio::test]
async fn a_failed_rollback_is_reported_with_what_is_still_applied() {
    let runner = MemoryRunner::new();
    let registry = memory_fleet(&["a"]);
    let set = migrations(&[
        (
            "0001_a.surql",
            "-- @up\nCREATE a:1;\n-- @down\nTHROW 'cannot undo 0001';",
        ),
        ("0002_b.surql", "-- @up\nCREATE b:1;\n-- @down\nDELETE b:1;"),
        ("0003_c.surql", "-- @up\nCREATE c:1;\n-- @down\nDELETE c:1;"),
    ]);
    runner.fail_statement("0003", 1);
    let plan = DeploymentPlan::builder(&registry)
        .all()
        .migrations(set)
        .build()
        .expect("plan");
    let report = coordinator(Arc::new(runner.clone()))
        .deploy(&plan)
        .await
        .expect("deploy");
    assert_eq!(report.outcome, Outcome::RollbackFailed, "{report:#?}");
    let a = report.environment("a").expect("a");
    assert_eq!(a.status, DeploymentStatus::Failed);
    let list = |v: &[Version]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(list(&a.applied), ["0001", "0002"]);
    assert_eq!(list(&a.rolled_back), ["0002"]);
    assert_eq!(list(&a.still_applied), ["0001"]);
    let message = &a.error.as_ref().expect("error").message;
    assert!(
        message.contains("auto-rollback failed") && message.contains("0001"),
        "{message}"
    );
}

/// A stopped deployment starts no further target, lets the running one finish, rolls back
/// what it applied, leaves no lease, and says it was interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_deployment_winds_down_gracefully() {
    let runner = MemoryRunner::new();
    let names = ["a", "b", "c", "d"];
    let registry = memory_fleet(&names);
    let set = migrations(&[(
        "0001_slow.surql",
        "-- @up\nSLEEP 300ms;\nCREATE a:1;\n-- @down\nDELETE a:1;",
    )]);
    let plan = DeploymentPlan::builder(&registry)
        .all()
        .migrations(set)
        .build()
        .expect("plan");
    let stop = Stop::new();
    let coordinator = coordinator(Arc::new(runner.clone()));
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(450)).await;
        stop.stop();
    };
    let (report, ()) = tokio::join!(coordinator.deploy_until(&plan, stop.clone()), stopping);
    let report = report.expect("deploy");
    assert!(report.interrupted);
    assert_eq!(report.outcome, Outcome::Interrupted, "{report:#?}");
    let statuses: Vec<DeploymentStatus> = report.environments.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            DeploymentStatus::RolledBack,
            DeploymentStatus::RolledBack,
            DeploymentStatus::Skipped,
            DeploymentStatus::Skipped
        ],
        "{report:#?}"
    );
    let skipped = report.environment("c").expect("c");
    assert_eq!(
        skipped.error.as_ref().map(|e| e.class),
        Some(ErrorClass::Cancelled)
    );
    for name in names {
        let target = Target::new(name, Connection::new("mem://", name, "app"));
        let health = runner.health(&target).await.expect("health");
        assert_eq!(health.lock, None, "{name}: no lease left");
        assert!(runner.objects(&target).is_empty(), "{name}");
    }
}
