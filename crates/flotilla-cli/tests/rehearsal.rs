//! Rehearsal from the command line: `validate` names each broken migration with file and
//! line and exits 2 having written nothing; `deploy` rehearses first and refuses what fails;
//! `deploy --dry-run` shows the plan.

mod common;

use common::{ACCOUNTS, TWO_EMBEDDED, flotilla, project, run, write};
use flotilla_core::{AuthLevel, Connection};
use flotilla_runner::{MigrationRunner, Target};
use flotilla_surrealdb::SurrealRunner;
use flotilla_tests::{ROOT_PASS, ROOT_USER, TestServer};

/// `validate --offline` on a project whose second migration is `migration`: exit code and
/// output — and nothing may have been created on disk.
fn validate_offline(migration: &str) -> (i32, String) {
    let dir = project(TWO_EMBEDDED);
    write(dir.path(), "migrations/0002_change.surql", migration);
    let result = run(flotilla(dir.path()).args(["validate", "--offline"]));
    assert!(
        !dir.path().join(".flotilla").exists(),
        "validate --offline wrote the embedded databases"
    );
    result
}

#[test]
fn validate_names_each_broken_migration_with_file_and_line_and_exits_2() {
    let (code, out) = validate_offline(
        "-- @up\nDEFINE FIELD verified ON account TYPE bool DEFAULT false;\nDEFINE FIELD email ON account TYPE string\n    ASSERT string::is::email($value);\n-- @down\nREMOVE FIELD verified ON account;\n",
    );
    assert_eq!(code, 2, "a function SurrealDB 3 renamed: {out}");
    assert!(
        out.contains("migrations/0002_change.surql:4")
            && out.contains("does not parse")
            && out.contains("string::is_email"),
        "{out}"
    );

    let (code, out) = validate_offline(
        "-- @up\nDEFINE FIELD name ON account TYPE option<string>;\n-- @down\nREMOVE FIELD name ON account;\nREMOVE FIELD nickname ON account;\n",
    );
    assert_eq!(code, 2, "a broken down: {out}");
    assert!(
        out.contains("migrations/0002_change.surql:5") && out.contains("fails going down"),
        "{out}"
    );

    let (code, out) = validate_offline(
        "-- @up\nDEFINE FIELD name ON account TYPE option<string>;\nDEFINE FIELD nickname ON account TYPE option<string>;\n-- @down\nREMOVE FIELD name ON account;\n",
    );
    assert_eq!(code, 2, "a down that leaves a field behind: {out}");
    assert!(
        out.contains("migrations/0002_change.surql:5")
            && out.contains("field account.nickname is still defined"),
        "{out}"
    );

    let (code, out) = validate_offline(
        "-- @up\nDEFINE FUNCTION fn::clean($s: string) { RETURN string::replace($s, /[;']/, ''); };\n-- @down\nREMOVE FUNCTION fn::clean;\n",
    );
    assert_eq!(
        code, 0,
        "a regex literal with a quote and a semicolon: {out}"
    );
    assert!(
        out.contains("rehearsal on an empty scratch database: 2 migration(s) ok"),
        "{out}"
    );
}

/// A field someone defined by hand on a real server's database: the migration that defines
/// it again passes on an empty scratch database, but `validate -e` rehearses it on a copy of
/// the target's schema and names it; `deploy` refuses it the same way, before anything runs.
/// The target is read, never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_conflicts_with_a_real_targets_schema_is_caught_before_it_runs() {
    let server = TestServer::start_beside_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "flotilla.toml",
        &format!(
            "[[environments]]\nname = \"prod\"\nurl = \"{}\"\nnamespace = \"app\"\ndatabase = \"prod\"\nusername = \"{ROOT_USER}\"\npassword = \"${{PROD_PASSWORD}}\"\n",
            server.ws_url()
        ),
    );
    write(dir.path(), "migrations/0001_accounts.surql", ACCOUNTS);
    let flotilla = |args: &[&str]| {
        run(flotilla(dir.path())
            .args(args)
            .env("PROD_PASSWORD", ROOT_PASS))
    };
    let (code, out) = flotilla(&["deploy", "--all"]);
    assert_eq!(code, 0, "{out}");

    let runner = SurrealRunner::new();
    let target = Target::new(
        "prod",
        Connection::new(server.ws_url(), "app", "prod").with_credentials(
            ROOT_USER,
            ROOT_PASS,
            AuthLevel::Root,
        ),
    );
    runner
        .session(&target)
        .await
        .expect("session")
        .query("DEFINE FIELD phone ON account TYPE string; CREATE account:one SET email = 'a@example.com', phone = '1';")
        .await
        .expect("query")
        .check()
        .expect("a hand-made field and a record");
    write(
        dir.path(),
        "migrations/0002_phone.surql",
        "-- @up\nDEFINE INDEX account_email ON account FIELDS email UNIQUE;\nDEFINE FIELD phone ON account TYPE option<string>;\n-- @down\nREMOVE FIELD phone ON account;\nREMOVE INDEX account_email ON account;\n",
    );
    let before = runner.snapshot(&target).await.expect("snapshot");

    let (code, out) = flotilla(&["validate", "--offline"]);
    assert_eq!(code, 0, "an empty database has no phone field: {out}");
    let (code, out) = flotilla(&["validate", "-e", "prod"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("rehearsal on a copy of prod's schema: FAILED: migrations/0002_phone.surql:3")
            && out.contains("already exists"),
        "{out}"
    );
    let (code, out) = flotilla(&["deploy", "--all"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("refused by the Rehearsal gate")
            && out.contains("migrations/0002_phone.surql:3"),
        "{out}"
    );
    assert_eq!(
        runner.snapshot(&target).await.expect("snapshot"),
        before,
        "validate and the refused deploy wrote nothing"
    );
    assert_eq!(runner.history(&target).await.expect("history").len(), 1);

    // Told not to rehearse, the deploy meets the conflict on the target itself, where the
    // migration's transaction rolls back.
    let (code, out) = flotilla(&["deploy", "--all", "--no-rehearse"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already exists"), "{out}");
    assert_eq!(runner.history(&target).await.expect("history").len(), 1);
}

#[test]
fn a_dry_run_names_what_would_run_where() {
    let dir = project(TWO_EMBEDDED);
    let (code, out) = run(flotilla(dir.path()).args(["deploy", "-e", "dev"]));
    assert_eq!(code, 0, "{out}");
    write(
        dir.path(),
        "migrations/0002_drop_email.surql",
        "-- @up\nDEFINE FIELD contact ON account TYPE option<string>;\nREMOVE FIELD email ON account;\n-- @down\nDEFINE FIELD email ON account TYPE string;\nREMOVE FIELD contact ON account;\n",
    );

    let (code, out) = run(flotilla(dir.path()).args(["deploy", "--all", "--dry-run"]));
    assert_eq!(code, 0, "{out}");
    for expected in [
        "dev: 0001 -> 0002, 1 migration(s):",
        "prod: - -> 0002, 2 migration(s):",
        "0001 accounts  migrations/0001_accounts.surql",
        "0002 drop_email  migrations/0002_drop_email.surql  DESTRUCTIVE (line 3: REMOVE FIELD)",
        "dry run: nothing was changed",
    ] {
        assert!(out.contains(expected), "{expected:?} in:\n{out}");
    }
    assert!(
        !out.contains("DEFINE FIELD contact"),
        "no SQL unless asked: {out}"
    );

    let (code, out) =
        run(flotilla(dir.path()).args(["deploy", "--all", "--dry-run", "--show-sql"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("        DEFINE FIELD contact ON account TYPE option<string>;")
            && out.contains("        REMOVE FIELD email ON account;"),
        "{out}"
    );

    let (code, out) = run(flotilla(dir.path()).args([
        "deploy",
        "--all",
        "--dry-run",
        "--show-sql",
        "--output",
        "json",
    ]));
    assert_eq!(code, 0, "{out}");
    let plan: serde_json::Value = out
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["type"] == "plan")
        .expect("a plan line");
    let groups = plan["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{plan}");
    assert_eq!(groups[0]["environments"], serde_json::json!(["dev"]));
    assert_eq!(groups[0]["ends_at"], "0002");
    let drop = &groups[0]["migrations"][0];
    assert_eq!(drop["version"], "0002");
    assert_eq!(
        drop["destructive"],
        serde_json::json!(["line 3: REMOVE FIELD"])
    );
    assert_eq!(
        drop["statements"][1], "REMOVE FIELD email ON account;",
        "{plan}"
    );
    assert_eq!(groups[1]["migrations"].as_array().map(Vec::len), Some(2));

    // Nothing was applied: dev is still at 0001.
    let (code, out) = run(flotilla(dir.path()).args(["history", "-e", "dev"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0001") && !out.contains("0002"), "{out}");
}
