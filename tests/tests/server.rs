//! The SurrealDB backend against a real server over WebSocket on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_core::{AuthLevel, Connection, MigrationSet, sha256_hex};
use flotilla_runner::testkit::{Harness, migrations};
use flotilla_runner::{
    DynRunner, ErrorClass, LockRequest, MigrationPlan, MigrationRunner, RunnerError, Target,
};
use flotilla_surrealdb::{SurrealConfig, SurrealRunner};
use flotilla_tests::{ROOT_PASS, ROOT_USER, TestServer, free_port};

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

/// Every "process" gets its own runner and so its own connection, as separate deploys would.
struct Server {
    server: TestServer,
    inspector: SurrealRunner,
}

impl Server {
    fn start() -> Self {
        Self {
            server: server(),
            inspector: SurrealRunner::new(),
        }
    }
}

#[async_trait]
impl Harness for Server {
    async fn runner(&self) -> DynRunner {
        Arc::new(SurrealRunner::new())
    }

    fn target(&self, name: &str) -> Target {
        Target::new(name, root(&self.server.ws_url(), "conformance", name))
    }

    async fn snapshot(&self, target: &Target) -> String {
        self.inspector.snapshot(target).await.expect("snapshot")
    }
}

mod conformance {
    flotilla_runner::conformance_tests!(super::Server::start());
}

fn lock() -> LockRequest {
    LockRequest::new(Some("server-test".into()), Duration::from_secs(10))
}

#[tokio::test]
async fn one_connection_serves_every_tenant_on_a_server() {
    let server = server();
    let runner = SurrealRunner::new();
    let plan = MigrationPlan::up(migrations(&[(
        "0001_a.surql",
        "DEFINE TABLE a; CREATE a:1;",
    )]));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let runner = runner.clone();
        let plan = plan.clone();
        let target = Target::new(
            format!("tenant-{i}"),
            root(&server.ws_url(), &format!("t{i}"), "app"),
        );
        tasks.spawn(async move { runner.apply_locked(&target, &plan, &lock()).await });
    }
    while let Some(result) = tasks.join_next().await {
        let result = result.expect("task").expect("deploy");
        assert_eq!(result.applied.len(), 1);
    }
    assert_eq!(
        runner.connection_count(),
        1,
        "tenants on one server share one connection"
    );
    assert_eq!(
        runner.sign_in_count(),
        1,
        "the other sessions authenticate with the first sign-in's token"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_specific_error() {
    let runner = SurrealRunner::with_config(SurrealConfig {
        connect_timeout: Duration::from_secs(5),
        ..SurrealConfig::default()
    });
    let url = format!("ws://127.0.0.1:{}", free_port());
    let target = Target::new("staging", root(&url, "ns", "db"));
    let err = runner.health(&target).await.expect_err("nobody listens");
    assert!(matches!(err, RunnerError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::TargetUnreachable);
    let message = err.to_string();
    assert!(
        message.contains("staging") && message.contains(&url),
        "{message}"
    );
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error_that_hides_the_password() {
    let server = server();
    let runner = SurrealRunner::new();
    let connection = Connection::new(server.ws_url(), "ns", "db").with_credentials(
        ROOT_USER,
        "not-the-password-xyzzy",
        AuthLevel::Root,
    );
    let target = Target::new("prod", connection);
    let err = runner.health(&target).await.expect_err("bad password");
    assert!(matches!(err, RunnerError::Authentication { .. }), "{err:?}");
    for rendered in [
        err.to_string(),
        format!("{err:?}"),
        format!("{target:?}"),
        format!("{runner:?}"),
    ] {
        assert!(!rendered.contains("xyzzy"), "{rendered}");
    }
    assert!(err.to_string().contains("prod"));
}

#[tokio::test]
async fn missing_namespace_for_a_namespace_user_is_a_specific_error() {
    let server = server();
    let runner = SurrealRunner::new();
    let connection = Connection::new(server.ws_url(), "nowhere", "db").with_credentials(
        "someone",
        "pw",
        AuthLevel::Namespace,
    );
    let target = Target::new("tenant-x", connection);
    let err = runner
        .health(&target)
        .await
        .expect_err("namespace does not exist");
    // SurrealDB does not reveal whether the namespace or the password is wrong; the message
    // names both possibilities and the namespace.
    assert!(matches!(err, RunnerError::Authentication { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("tenant-x")
            && message.contains("namespace `nowhere`")
            && message.contains("exists"),
        "{message}"
    );
}

#[tokio::test]
async fn http_endpoints_work_too() {
    let server = server();
    let runner = SurrealRunner::new();
    let target = Target::new("http", root(&server.http_url(), "ns", "db"));
    let plan = MigrationPlan::up(migrations(&[("0001_a.surql", "DEFINE TABLE a;")]));
    let result = runner
        .apply_locked(&target, &plan, &lock())
        .await
        .expect("deploy over http");
    assert_eq!(result.applied.len(), 1);
    assert!(runner.health(&target).await.expect("healthy").initialised);
}

/// A database migrated by the surql toolkit: its rows count as applied when the files are
/// the same, and flotilla's extra fields join its SCHEMAFULL table without breaking it.
#[tokio::test]
async fn surql_toolkit_history_is_adopted() {
    let server = server();
    let runner = SurrealRunner::new();
    let target = Target::new("legacy", root(&server.ws_url(), "legacy", "app"));
    let first = "-- @metadata\n-- version: 20260102_120000\n-- description: Create user table\n-- author: surql\n-- depends_on: []\n-- @up\nDEFINE TABLE user SCHEMAFULL;\nDEFINE FIELD email ON TABLE user TYPE string;\n-- @down\nREMOVE TABLE user;\n";
    let second = "-- @metadata\n-- version: 20260103_090000\n-- description: Seed\n-- @up\nCREATE user:one SET email = 'one@example.com';\n-- @down\nDELETE user:one;\n";

    surql_applies_first(&runner, &target, first).await;

    let set = files(&[
        ("migrations/20260102_120000_create_user.surql", first),
        ("migrations/20260103_090000_seed.surql", second),
    ]);
    // A deploy probes health first: the runner then knows the table exists.
    assert!(runner.health(&target).await.expect("health").initialised);
    let result = runner
        .apply_locked(&target, &MigrationPlan::up(set), &lock())
        .await
        .expect("adopts and continues");
    let applied: Vec<_> = result.applied.iter().map(ToString::to_string).collect();
    assert_eq!(
        applied,
        ["20260103_090000"],
        "the surql-applied migration is not re-run"
    );
    let history = runner.history(&target).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].applied_by, None, "surql's row is kept as it was");
    assert_eq!(history[0].execution_time_ms, Some(3));
    assert!(
        history[1].applied_by.is_some(),
        "flotilla's row has its extra fields"
    );
}

/// A migration set of `(path, text)` files, loaded as they are.
fn files(files: &[(&str, &str)]) -> Arc<MigrationSet> {
    Arc::new(
        MigrationSet::from_files(
            files
                .iter()
                .map(|(path, text)| ((*path).into(), (*text).to_owned())),
        )
        .expect("the files load unchanged"),
    )
}

/// What the surql toolkit leaves behind after applying `first` (its first migration): a
/// SCHEMAFULL history table without flotilla's fields, and one row.
async fn surql_applies_first(runner: &SurrealRunner, target: &Target, first: &str) {
    let session = runner.session(target).await.expect("session");
    session
        .query(
            "DEFINE TABLE IF NOT EXISTS _migration_history SCHEMAFULL;
             DEFINE FIELD IF NOT EXISTS version ON TABLE _migration_history TYPE string;
             DEFINE FIELD IF NOT EXISTS description ON TABLE _migration_history TYPE string;
             DEFINE FIELD IF NOT EXISTS applied_at ON TABLE _migration_history TYPE datetime;
             DEFINE FIELD IF NOT EXISTS checksum ON TABLE _migration_history TYPE string;
             DEFINE FIELD IF NOT EXISTS execution_time_ms ON TABLE _migration_history TYPE option<int>;
             DEFINE INDEX IF NOT EXISTS version_idx ON TABLE _migration_history COLUMNS version UNIQUE;
             DEFINE TABLE user SCHEMAFULL;
             DEFINE FIELD email ON TABLE user TYPE string;
             CREATE type::record('_migration_history', '20260102_120000') SET version = '20260102_120000',
                 description = 'Create user table', applied_at = time::now(), checksum = $checksum,
                 execution_time_ms = 3;",
        )
        .bind(("checksum", sha256_hex(&[first.as_bytes()])))
        .await
        .expect("surql setup")
        .check()
        .expect("surql setup statements");
}

/// The health probe found no history table, so the lock request defines it plainly, without
/// flotilla's two fields; when another tool made a SCHEMAFULL one in between, that request
/// fails on the existing table and goes again with every definition.
#[tokio::test]
async fn a_history_table_made_after_the_health_probe_gets_flotillas_fields() {
    let server = server();
    let runner = SurrealRunner::new();
    let target = Target::new("raced", root(&server.ws_url(), "raced", "app"));
    assert!(!runner.health(&target).await.expect("health").initialised);
    let first =
        "-- @up\nDEFINE TABLE user SCHEMAFULL;\nDEFINE FIELD email ON TABLE user TYPE string;\n";
    surql_applies_first(&runner, &target, first).await;
    let set = files(&[
        ("migrations/20260102_120000_user.surql", first),
        (
            "migrations/20260103_090000_next.surql",
            "DEFINE TABLE next;",
        ),
    ]);
    let result = runner
        .apply_locked(&target, &MigrationPlan::up(set), &lock())
        .await
        .expect("the lock request goes again with the fields");
    let applied: Vec<_> = result.applied.iter().map(ToString::to_string).collect();
    assert_eq!(applied, ["20260103_090000"]);
    let history = runner.history(&target).await.expect("history");
    assert_eq!(history.len(), 2);
    assert!(history[1].applied_by.is_some());
}

/// On a new target flotilla's history table is schemaless and needs no field definitions.
#[tokio::test]
async fn a_new_targets_history_table_is_schemaless_without_field_definitions() {
    let server = server();
    let runner = SurrealRunner::new();
    let target = Target::new("new", root(&server.ws_url(), "new", "app"));
    assert!(!runner.health(&target).await.expect("health").initialised);
    let plan = MigrationPlan::up(migrations(&[("0001_a.surql", "DEFINE TABLE a;")]))
        .with_deployment_id("deploy-1");
    runner
        .apply_locked(&target, &plan, &lock())
        .await
        .expect("deploy");
    let session = runner.session(&target).await.expect("session");
    let mut info = session
        .query("INFO FOR TABLE _migration_history")
        .await
        .expect("info");
    let info = info
        .take::<surrealdb::types::Value>(0)
        .expect("table info")
        .into_json_value();
    assert_eq!(info["fields"], serde_json::json!({}), "{info}");
    let history = runner.history(&target).await.expect("history");
    assert_eq!(history.len(), 1);
    assert!(history[0].applied_by.is_some());
    assert_eq!(history[0].deployment_id.as_deref(), Some("deploy-1"));
}

/// A fleet's health probes to one server share requests, and each target still gets its own
/// answer: its history, its lock, whether it is initialised.
#[tokio::test]
async fn health_probes_share_requests_and_answer_per_target() {
    let server = server();
    let runner = SurrealRunner::new();
    let targets: Vec<Target> = (0..40)
        .map(|i| {
            Target::new(
                format!("t{i}"),
                root(&server.ws_url(), "probes", &format!("db{i}")),
            )
        })
        .collect();
    let files = [
        ("0001_a.surql", "DEFINE TABLE a;"),
        ("0002_b.surql", "DEFINE TABLE b;"),
        ("0003_c.surql", "DEFINE TABLE c;"),
        ("0004_d.surql", "DEFINE TABLE d;"),
        ("0005_e.surql", "DEFINE TABLE e;"),
    ];
    let applied = |i: usize| if i.is_multiple_of(3) { i % 5 + 1 } else { 0 };
    for (i, target) in targets.iter().enumerate() {
        if applied(i) > 0 {
            let plan = MigrationPlan::up(migrations(&files[..applied(i)]));
            runner
                .apply_locked(target, &plan, &lock())
                .await
                .expect("setup");
        }
    }
    let other = SurrealRunner::new();
    let _held = other
        .acquire_lock(&targets[7], &lock())
        .await
        .expect("another process locks t7");

    let before = runner.request_count();
    let probes = futures::future::join_all(targets.iter().map(|t| runner.probe(t))).await;
    let sent = runner.request_count() - before;

    for (i, probe) in probes.into_iter().enumerate() {
        let probe = probe.expect("healthy");
        let history = probe.history.expect("history read");
        let health = probe.health;
        assert_eq!(history.len(), applied(i), "t{i}");
        let versions: Vec<String> = history.iter().map(|m| m.version.to_string()).collect();
        let expected: Vec<String> = (1..=applied(i)).map(|v| format!("000{v}")).collect();
        assert_eq!(versions, expected, "t{i}");
        // Locking t7 defined its tables.
        assert_eq!(health.initialised, applied(i) > 0 || i == 7, "t{i}");
        assert_eq!(health.lock.is_some(), i == 7, "t{i}");
    }
    assert!(sent <= 8, "{sent} requests for 40 probes");
}

/// What a process that crashed after locking `target` and before its first migration
/// committed leaves behind: a lease of `crashed-host` pid 7 expiring at `expires` (SurrealQL).
async fn leave_lease(runner: &SurrealRunner, target: &Target, expires: &str) {
    let session = runner.session(target).await.expect("session");
    session
        .query(format!(
            "CREATE _migration_lock:lock CONTENT {{ token: 'gone', host: 'crashed-host', pid: 7, \
             acquired_at: time::now() - 2h, expires_at: {expires} }}"
        ))
        .await
        .expect("leave a lease")
        .check()
        .expect("lease left");
}

/// A lease left on a target that has no history table (a process that crashed after locking
/// and before its first migration committed): the health probe sees an empty target, the
/// lock request that assumes one fails on the lease, and the one sent after it takes the
/// expired lease over — or, when the lease is live, reports its holder.
#[tokio::test]
async fn a_lease_left_on_an_empty_target_is_taken_over_or_reported() {
    let server = server();
    let runner = SurrealRunner::new();
    for (name, expires, live) in [
        ("expired", "time::now() - 1m", false),
        ("live", "time::now() + 1h", true),
    ] {
        let target = Target::new(name, root(&server.ws_url(), "left", name));
        leave_lease(&runner, &target, expires).await;
        let health = runner.health(&target).await.expect("health");
        assert!(!health.initialised, "{name}: no history table");
        assert_eq!(health.lock.is_some(), live, "{name}");

        let acquired = runner
            .acquire_lock(&target, &LockRequest::new(None, Duration::ZERO))
            .await;
        if live {
            match acquired {
                Err(RunnerError::LockHeld { holder, .. }) => {
                    assert_eq!(holder.owner.host, "crashed-host");
                }
                other => panic!("expected LockHeld, got {:?}", other.map(|g| g.info())),
            }
        } else {
            let guard = acquired.expect("the expired lease is taken over");
            let previous = guard.took_over().expect("the takeover is reported");
            assert_eq!(previous.owner.host, "crashed-host");
            assert_eq!(previous.owner.pid, 7);
            guard.release().await.expect("release");
            assert!(runner.health(&target).await.expect("health").initialised);
        }
    }
}

/// A deploy to a target the health probe found empty takes the lock in its apply request. A
/// lease left there stops that take, and nothing runs; the lock is then asked for on its own,
/// as always: a live lease is reported with its holder and nothing is applied, an expired one
/// is taken over, reported, and the deploy goes on.
#[tokio::test]
async fn a_lease_left_on_an_empty_target_stops_the_deploy_that_takes_the_lock() {
    let server = server();
    let runner = SurrealRunner::new();
    let plan = MigrationPlan::up(migrations(&[
        ("0001_a.surql", "DEFINE TABLE a; CREATE a:1;"),
        ("0002_b.surql", "DEFINE TABLE b;"),
    ]));
    let short = LockRequest::new(None, Duration::from_millis(200));
    for (name, expires, live) in [
        ("expired", "time::now() - 1m", false),
        ("live", "time::now() + 1h", true),
    ] {
        let target = Target::new(name, root(&server.ws_url(), "left-deploy", name));
        leave_lease(&runner, &target, expires).await;
        assert!(!runner.health(&target).await.expect("health").initialised);

        let deployed = runner.apply_locked(&target, &plan, &short).await;
        let snapshot = runner.snapshot(&target).await.expect("snapshot");
        if live {
            match deployed {
                Err(RunnerError::LockHeld { holder, .. }) => {
                    assert_eq!(holder.owner.host, "crashed-host");
                }
                other => panic!("expected LockHeld, got {other:?}"),
            }
            assert!(!snapshot.contains("a: "), "nothing applied: {snapshot}");
            let health = runner.health(&target).await.expect("health");
            assert_eq!(
                health.lock.map(|l| l.owner.host).as_deref(),
                Some("crashed-host"),
                "the live lease is left alone"
            );
        } else {
            let result = deployed.expect("the expired lease is taken over");
            assert_eq!(result.applied.len(), 2);
            let previous = result.lock_takeover.expect("the takeover is reported");
            assert_eq!(previous.owner.host, "crashed-host");
            assert_eq!(previous.owner.pid, 7);
            let probe = runner.probe(&target).await.expect("probe");
            assert_eq!(probe.health.lock, None, "released");
            assert_eq!(probe.history.map(|h| h.len()).ok(), Some(2));
        }
    }
}

/// Two processes deploying to the same new target at once, each having probed it empty: one
/// takes the lock with its apply request, the other's take fails, it waits for the lock as
/// usual and then finds nothing pending. Every migration runs once.
#[tokio::test]
async fn two_deploys_racing_to_a_new_target_apply_each_migration_once() {
    let server = server();
    let plan = MigrationPlan::up(migrations(&[
        ("0001_a.surql", "DEFINE TABLE a; CREATE a:1;"),
        ("0002_b.surql", "DEFINE TABLE b; CREATE b:1;"),
        ("0003_c.surql", "DEFINE TABLE c; CREATE c:1;"),
    ]));
    for round in 0..5 {
        let target = Target::new(
            format!("race-{round}"),
            root(&server.ws_url(), "race", &format!("db{round}")),
        );
        let (one, two) = (SurrealRunner::new(), SurrealRunner::new());
        assert!(!one.health(&target).await.expect("health").initialised);
        assert!(!two.health(&target).await.expect("health").initialised);
        let lock = lock();
        let (first, second) = tokio::join!(
            one.apply_locked(&target, &plan, &lock),
            two.apply_locked(&target, &plan, &lock),
        );
        let (first, second) = (first.expect("first"), second.expect("second"));
        let mut applied: Vec<String> = first
            .applied
            .iter()
            .chain(&second.applied)
            .map(ToString::to_string)
            .collect();
        applied.sort();
        assert_eq!(applied, ["0001", "0002", "0003"], "round {round}");
        let snapshot = one.snapshot(&target).await.expect("snapshot");
        assert!(snapshot.contains("a: [{\"id\":\"a:1\"}]"), "{snapshot}");
        let probe = one.probe(&target).await.expect("probe");
        assert_eq!(probe.health.lock, None);
        assert_eq!(probe.history.map(|h| h.len()).ok(), Some(3));
    }
}

/// A runner whose probe saw a target empty still reverts what another process applied since:
/// a revert has nothing to apply on an empty target, so its lock is taken the usual way and
/// the revert works from the history read with it.
#[tokio::test]
async fn a_revert_after_a_stale_empty_probe_reads_history_under_the_lock() {
    let server = server();
    let set = migrations(&[
        (
            "0001_a.surql",
            "-- @up\nDEFINE TABLE a;\n-- @down\nREMOVE TABLE a;\n",
        ),
        (
            "0002_b.surql",
            "-- @up\nDEFINE TABLE b;\n-- @down\nREMOVE TABLE b;\n",
        ),
    ]);
    let target = Target::new("stale", root(&server.ws_url(), "stale", "app"));
    let (stale, other) = (SurrealRunner::new(), SurrealRunner::new());
    assert!(!stale.health(&target).await.expect("health").initialised);
    let deployed = other
        .apply_locked(&target, &MigrationPlan::up(set.clone()), &lock())
        .await
        .expect("another process deploys");
    assert_eq!(deployed.applied.len(), 2);

    let down = MigrationPlan::down(set, vec![flotilla_core::Version::parse("0002").expect("v")]);
    let reverted = stale
        .apply_locked(&target, &down, &lock())
        .await
        .expect("revert");
    let reverted: Vec<String> = reverted.applied.iter().map(ToString::to_string).collect();
    assert_eq!(reverted, ["0002"]);
    let history = stale.history(&target).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(stale.health(&target).await.expect("health").lock, None);
}

/// On a new target the lease is taken in the first migration's transaction; when that
/// migration fails, the take is undone with it: the failure names the statement, and the
/// target is left as it was — no tables, no history, no lease.
#[tokio::test]
async fn a_failing_first_migration_on_a_new_target_leaves_it_untouched() {
    let server = server();
    let runner = SurrealRunner::new();
    let target = Target::new("untouched", root(&server.ws_url(), "untouched", "app"));
    assert!(!runner.health(&target).await.expect("health").initialised);
    let broken = MigrationPlan::up(migrations(&[
        (
            "0001_a.surql",
            "DEFINE TABLE a SCHEMAFULL; DEFINE FIELD n ON a TYPE int; CREATE a:1 SET n = 'x';",
        ),
        ("0002_b.surql", "DEFINE TABLE b;"),
    ]));
    let before = runner.request_count();
    let error = runner
        .apply_locked(&target, &broken, &lock())
        .await
        .expect_err("the first migration fails");
    assert_eq!(
        runner.request_count() - before,
        2,
        "the database made, one try; no second, no release: there was never a lease"
    );
    match &error {
        RunnerError::StatementFailed {
            version, statement, ..
        } => {
            assert_eq!(version.to_string(), "0001");
            assert_eq!(*statement, 3, "{error}");
        }
        other => panic!("expected StatementFailed, got {other:?}"),
    }
    let snapshot = runner.snapshot(&target).await.expect("snapshot");
    assert!(!snapshot.contains("_migration"), "{snapshot}");
    assert!(!snapshot.contains("\"a\""), "{snapshot}");
    let health = runner.health(&target).await.expect("health");
    assert!(!health.initialised);
    assert_eq!(health.lock, None);

    let fixed = MigrationPlan::up(migrations(&[("0001_a.surql", "DEFINE TABLE a;")]));
    let result = runner
        .apply_locked(&target, &fixed, &lock())
        .await
        .expect("the fixed migration deploys");
    assert_eq!(result.applied.len(), 1);
}
