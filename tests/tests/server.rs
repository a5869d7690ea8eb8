//! The SurrealDB backend against a real server over WebSocket on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_core::{AuthLevel, Connection, MigrationSet, sha256_hex};
use flotilla_runner::testkit::{Harness, migrations};
use flotilla_runner::{
    DynRunner, ErrorClass, LockRequest, MigrationPlan, MigrationRunner, MigrationRunnerExt,
    RunnerError, TenantContext,
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

    fn tenant(&self, name: &str) -> TenantContext {
        TenantContext::new(name, root(&self.server.ws_url(), "conformance", name))
    }

    async fn snapshot(&self, tenant: &TenantContext) -> String {
        self.inspector.snapshot(tenant).await.expect("snapshot")
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
        let tenant = TenantContext::new(
            format!("tenant-{i}"),
            root(&server.ws_url(), &format!("t{i}"), "app"),
        );
        tasks.spawn(async move { runner.apply_locked(&tenant, &plan, &lock()).await });
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
    let tenant = TenantContext::new("staging", root(&url, "ns", "db"));
    let err = runner.health(&tenant).await.expect_err("nobody listens");
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
    let tenant = TenantContext::new("prod", connection);
    let err = runner.health(&tenant).await.expect_err("bad password");
    assert!(matches!(err, RunnerError::Authentication { .. }), "{err:?}");
    for rendered in [
        err.to_string(),
        format!("{err:?}"),
        format!("{tenant:?}"),
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
    let tenant = TenantContext::new("tenant-x", connection);
    let err = runner
        .health(&tenant)
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
    let tenant = TenantContext::new("http", root(&server.http_url(), "ns", "db"));
    let plan = MigrationPlan::up(migrations(&[("0001_a.surql", "DEFINE TABLE a;")]));
    let result = runner
        .apply_locked(&tenant, &plan, &lock())
        .await
        .expect("deploy over http");
    assert_eq!(result.applied.len(), 1);
    assert!(runner.health(&tenant).await.expect("healthy").initialised);
}

/// A database migrated by the surql toolkit: its rows count as applied when the files are
/// the same, and flotilla's extra fields join its SCHEMAFULL table without breaking it.
#[tokio::test]
async fn surql_toolkit_history_is_adopted() {
    let server = server();
    let runner = SurrealRunner::new();
    let tenant = TenantContext::new("legacy", root(&server.ws_url(), "legacy", "app"));
    let first = "-- @metadata\n-- version: 20260102_120000\n-- description: Create user table\n-- author: surql\n-- depends_on: []\n-- @up\nDEFINE TABLE user SCHEMAFULL;\nDEFINE FIELD email ON TABLE user TYPE string;\n-- @down\nREMOVE TABLE user;\n";
    let second = "-- @metadata\n-- version: 20260103_090000\n-- description: Seed\n-- @up\nCREATE user:one SET email = 'one@example.com';\n-- @down\nDELETE user:one;\n";

    // What the surql toolkit leaves behind after applying the first migration.
    let session = runner.session(&tenant).await.expect("session");
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

    let set = Arc::new(
        MigrationSet::from_files([
            (
                "migrations/20260102_120000_create_user.surql".into(),
                first.to_owned(),
            ),
            (
                "migrations/20260103_090000_seed.surql".into(),
                second.to_owned(),
            ),
        ])
        .expect("surql files load unchanged"),
    );
    // A deploy probes health first: the runner then knows the table exists.
    assert!(runner.health(&tenant).await.expect("health").initialised);
    let result = runner
        .apply_locked(&tenant, &MigrationPlan::up(set), &lock())
        .await
        .expect("adopts and continues");
    let applied: Vec<_> = result.applied.iter().map(ToString::to_string).collect();
    assert_eq!(
        applied,
        ["20260103_090000"],
        "the surql-applied migration is not re-run"
    );
    let history = runner.history(&tenant).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].applied_by, None, "surql's row is kept as it was");
    assert_eq!(history[0].execution_time_ms, Some(3));
    assert!(
        history[1].applied_by.is_some(),
        "flotilla's row has its extra fields"
    );
}
