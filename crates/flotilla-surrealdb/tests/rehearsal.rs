//! Rehearsal on embedded SurrealDB: what it finds (naming file and line), what it forgives,
//! that it is bounded in time, and that a base target it copies the schema of is only read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_core::{Connection, MigrationSet, Version};
use flotilla_runner::testkit::migrations;
use flotilla_runner::{
    LockRequest, MigrationPlan, MigrationRunner, Rehearsal, RehearsalPlan, RehearsalProblem, Target,
};
use flotilla_surrealdb::{SurrealConfig, SurrealRunner};

const ACCOUNTS: &str = "-- @up
DEFINE TABLE account SCHEMAFULL;
DEFINE FIELD email ON account TYPE string;
-- @down
REMOVE TABLE account;
";

async fn rehearse(set: Arc<MigrationSet>) -> Rehearsal {
    SurrealRunner::new()
        .rehearse(&RehearsalPlan::all(set))
        .await
        .expect("the rehearsal runs")
}

/// The one finding of a rehearsal: its problem, file and line.
fn only(rehearsal: &Rehearsal) -> (RehearsalProblem, String, Option<usize>) {
    assert_eq!(rehearsal.findings.len(), 1, "{rehearsal:#?}");
    let finding = &rehearsal.findings[0];
    (
        finding.problem,
        finding.file.display().to_string(),
        finding.line,
    )
}

#[tokio::test]
async fn good_migrations_pass_up_down_and_up_again() {
    let rehearsal = rehearse(migrations(&[
        ("0001_accounts.surql", ACCOUNTS),
        (
            "0002_clean.surql",
            "-- @up\nDEFINE FUNCTION fn::clean($s: string) { RETURN string::replace($s, /[;']/, ''); };\n-- @down\nREMOVE FUNCTION fn::clean;\n",
        ),
        // A data migration into a table nobody defined: SurrealDB defines it, empty, and the
        // down that deletes the records undoes the migration all the same.
        (
            "0003_seed.surql",
            "-- @up\nCREATE setting:theme SET value = 'dark';\n-- @down\nDELETE setting:theme;\n",
        ),
    ]))
    .await;
    assert!(rehearsal.passed(), "{rehearsal:#?}");
    assert_eq!(rehearsal.rehearsed, 3);
}

#[tokio::test]
async fn a_function_surrealdb_3_renamed_is_named_with_file_and_line() {
    let rehearsal = rehearse(migrations(&[
        ("0001_accounts.surql", ACCOUNTS),
        (
            "0002_check.surql",
            "-- @up\nDEFINE FIELD verified ON account TYPE bool DEFAULT false;\nDEFINE FIELD email ON account TYPE string\n    ASSERT string::is::email($value);\n-- @down\nREMOVE FIELD verified ON account;\n",
        ),
    ]))
    .await;
    assert_eq!(
        only(&rehearsal),
        (
            RehearsalProblem::Syntax,
            "migrations/0002_check.surql".into(),
            Some(4)
        )
    );
    assert!(
        rehearsal.findings[0].detail.contains("string::is_email"),
        "SurrealDB's own message is kept: {rehearsal:#?}"
    );
}

#[tokio::test]
async fn a_down_that_fails_is_named_with_its_statement() {
    let rehearsal = rehearse(migrations(&[
        ("0001_accounts.surql", ACCOUNTS),
        (
            "0002_name.surql",
            "-- @up\nDEFINE FIELD name ON account TYPE option<string>;\n-- @down\nREMOVE FIELD name ON account;\nREMOVE FIELD nickname ON account;\n",
        ),
    ]))
    .await;
    assert_eq!(
        only(&rehearsal),
        (
            RehearsalProblem::DownFailed,
            "migrations/0002_name.surql".into(),
            Some(5)
        )
    );
}

#[tokio::test]
async fn a_down_that_leaves_a_field_behind_says_which() {
    let rehearsal = rehearse(migrations(&[
        ("0001_accounts.surql", ACCOUNTS),
        (
            "0002_profile.surql",
            "-- @up\nDEFINE FIELD name ON account TYPE option<string>;\nDEFINE FIELD nickname ON account TYPE option<string>;\n-- @down\nREMOVE FIELD name ON account;\n",
        ),
    ]))
    .await;
    assert_eq!(
        only(&rehearsal),
        (
            RehearsalProblem::DownLeavesSchema,
            "migrations/0002_profile.surql".into(),
            Some(5)
        )
    );
    let detail = &rehearsal.findings[0].detail;
    assert!(
        detail.contains("field account.nickname is still defined") && detail.contains("line 3"),
        "{detail}"
    );
    assert!(!detail.contains("account.name"), "{detail}");
}

#[tokio::test]
async fn a_down_that_removes_the_wrong_field_is_found() {
    let rehearsal = rehearse(migrations(&[
        ("0001_accounts.surql", ACCOUNTS),
        (
            "0002_name.surql",
            "-- @up\nDEFINE FIELD name ON account TYPE option<string>;\n-- @down\nREMOVE FIELD email ON account;\n",
        ),
    ]))
    .await;
    assert_eq!(only(&rehearsal).0, RehearsalProblem::DownLeavesSchema);
    let detail = &rehearsal.findings[0].detail;
    assert!(
        detail.contains("field account.name is still defined")
            && detail.contains("field account.email is gone"),
        "{detail}"
    );
}

#[tokio::test]
async fn an_up_that_cannot_run_twice_after_its_down_is_found() {
    let rehearsal = rehearse(migrations(&[(
        "0001_counter.surql",
        "-- @up\nCREATE counter:visits SET n = 0;\n-- @down\nUPDATE counter:visits SET n = 0;\n",
    )]))
    .await;
    assert_eq!(
        only(&rehearsal),
        (
            RehearsalProblem::NotRerunnable,
            "migrations/0001_counter.surql".into(),
            Some(2)
        )
    );
}

#[tokio::test]
async fn an_up_that_fails_stops_the_walk_there() {
    let rehearsal = rehearse(migrations(&[
        ("0001_accounts.surql", ACCOUNTS),
        (
            "0002_again.surql",
            "-- @up\nDEFINE FIELD age ON account TYPE int;\nDEFINE TABLE account SCHEMAFULL;\n-- @down\nREMOVE FIELD age ON account;\n",
        ),
        (
            "0003_later.surql",
            "-- @up\nDEFINE FIELD later ON account TYPE int;\n",
        ),
    ]))
    .await;
    assert_eq!(
        only(&rehearsal),
        (
            RehearsalProblem::UpFailed,
            "migrations/0002_again.surql".into(),
            Some(3)
        )
    );
}

/// A migration that never finishes on the scratch database ends the rehearsal at the
/// request timeout instead of hanging it.
#[tokio::test]
async fn a_rehearsal_is_bounded_by_the_request_timeout() {
    let runner = SurrealRunner::with_config(SurrealConfig {
        request_timeout: Duration::from_millis(300),
        ..SurrealConfig::default()
    });
    let started = Instant::now();
    let rehearsal = runner
        .rehearse(&RehearsalPlan::all(migrations(&[(
            "0001_slow.surql",
            "-- @up\nSLEEP 30s;\n-- @down\nSLEEP 30s;\n",
        )])))
        .await
        .expect("the rehearsal runs");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{rehearsal:#?}"
    );
    assert_eq!(only(&rehearsal).0, RehearsalProblem::UpFailed);
    assert!(
        rehearsal.findings[0]
            .detail
            .contains("no answer within 300ms"),
        "{rehearsal:#?}"
    );
}

/// On a copy of a real target's schema, a migration that conflicts with what is really
/// there — a field someone defined by hand — fails, though it passes on an empty database;
/// the target is read, never written.
#[tokio::test]
async fn rehearsing_on_a_targets_schema_finds_what_conflicts_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("surrealkv://{}", dir.path().join("db").display());
    let runner = SurrealRunner::new();
    let target = Target::new("prod", Connection::new(url, "app", "prod"));
    let first = migrations(&[("0001_accounts.surql", ACCOUNTS)]);
    let lock = LockRequest::new(Some("test".into()), Duration::from_secs(10));
    runner
        .apply_locked(&target, &MigrationPlan::up(Arc::clone(&first)), &lock)
        .await
        .expect("deploy the first migration");
    let session = runner.session(&target).await.expect("session");
    session
        .query("DEFINE FIELD phone ON account TYPE string; CREATE account:one SET email = 'a@example.com', phone = '1';")
        .await
        .expect("query")
        .check()
        .expect("a hand-made field and a record");
    let both = migrations(&[
        ("0001_accounts.surql", ACCOUNTS),
        (
            "0002_phone.surql",
            "-- @up\nDEFINE INDEX account_email ON account FIELDS email UNIQUE;\nDEFINE FIELD phone ON account TYPE option<string>;\n-- @down\nREMOVE FIELD phone ON account;\nREMOVE INDEX account_email ON account;\n",
        ),
    ]);
    assert!(rehearse(Arc::clone(&both)).await.passed());

    let before = runner.snapshot(&target).await.expect("snapshot");
    let plan = RehearsalPlan {
        migrations: Arc::clone(&both),
        only: Some(vec![Version::parse("0002").expect("version")]),
        base: Some(target.clone()),
    };
    let rehearsal = runner.rehearse(&plan).await.expect("the rehearsal runs");
    assert_eq!(
        only(&rehearsal),
        (
            RehearsalProblem::UpFailed,
            "migrations/0002_phone.surql".into(),
            Some(3)
        )
    );
    assert!(
        rehearsal.findings[0].detail.contains("already exists"),
        "{rehearsal:#?}"
    );
    assert_eq!(
        runner.snapshot(&target).await.expect("snapshot"),
        before,
        "the base target is unchanged"
    );
}

/// A target nothing was ever deployed to is an empty schema to rehearse on, and stays
/// untouched.
#[tokio::test]
async fn rehearsing_on_an_empty_target_reads_nothing_into_it() {
    let runner = SurrealRunner::new();
    let target = Target::new("fresh", Connection::new("mem://", "app", "fresh"));
    let before = runner.snapshot(&target).await.expect("snapshot");
    let rehearsal = runner
        .rehearse(&RehearsalPlan {
            migrations: migrations(&[("0001_accounts.surql", ACCOUNTS)]),
            only: None,
            base: Some(target.clone()),
        })
        .await
        .expect("the rehearsal runs");
    assert!(rehearsal.passed(), "{rehearsal:#?}");
    assert_eq!(runner.snapshot(&target).await.expect("snapshot"), before);
}

/// Database-level definitions are compared too: a function (with a `::` path) and a param
/// the down forgets.
#[tokio::test]
async fn a_down_that_leaves_a_function_or_a_param_behind_is_found() {
    let rehearsal = rehearse(migrations(&[(
        "0001_helpers.surql",
        "-- @up\nDEFINE FUNCTION fn::text::clean($s: string) { RETURN $s; };\nDEFINE PARAM $page_size VALUE 50;\n-- @down\nREMOVE PARAM $page_size;\n",
    )]))
    .await;
    assert_eq!(only(&rehearsal).0, RehearsalProblem::DownLeavesSchema);
    assert!(
        rehearsal.findings[0]
            .detail
            .contains("function text::clean is still defined"),
        "{rehearsal:#?}"
    );
    let rehearsal = rehearse(migrations(&[(
        "0001_helpers.surql",
        "-- @up\nDEFINE FUNCTION fn::text::clean($s: string) { RETURN $s; };\nDEFINE PARAM $page_size VALUE 50;\n-- @down\nREMOVE FUNCTION fn::text::clean;\n",
    )]))
    .await;
    assert!(
        rehearsal.findings[0]
            .detail
            .contains("param page_size is still defined"),
        "{rehearsal:#?}"
    );
}
