//! The built `flotilla` binary against embedded targets and a real server over ws.
//!
//! These live in the CLI's own package because cargo hands `CARGO_BIN_EXE_flotilla` only
//! to the integration tests of the package that owns the binary.

mod common;

use std::time::Duration;

use common::{ACCOUNTS, TWO_EMBEDDED, flotilla, project, run, write};
use flotilla_core::{AuthLevel, Connection};
use flotilla_runner::{LockOwner, LockRequest, MigrationRunner, Target};
use flotilla_surrealdb::SurrealRunner;
use flotilla_tests::{ROOT_PASS, ROOT_USER, TestServer, free_port};

#[test]
fn a_newcomer_inits_deploys_checks_status_and_redeploys_with_nothing_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = run(flotilla(dir.path()).arg("init"));
    assert_eq!(code, 0, "{out}");
    let migration = std::fs::read_dir(dir.path().join("migrations"))
        .expect("migrations dir")
        .next()
        .expect("a first migration")
        .expect("entry")
        .file_name()
        .into_string()
        .expect("utf-8");
    let version = &migration[..15];

    let (code, out) = run(flotilla(dir.path()).args(["deploy", "--all"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deployed to 2 environment(s)"), "{out}");

    let (code, out) = run(flotilla(dir.path()).arg("status"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(version) && out.contains("dev") && out.contains("staging"),
        "{out}"
    );

    let (code, out) = run(flotilla(dir.path()).args(["deploy", "--all"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to do"), "{out}");

    // init refuses to overwrite.
    let (code, out) = run(flotilla(dir.path()).arg("init"));
    assert_eq!(code, 2, "{out}");
}

/// The surql toolkit's files, unchanged: timestamped `.surql` files with metadata/up/down
/// sections and an `environments.json` whose password comes from a variable.
#[test]
fn surql_style_files_work_unchanged_against_a_server_and_json_output_hides_the_password() {
    let server = TestServer::start_beside_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "environments.json",
        &format!(
            r#"{{"environments": [
                {{"name": "staging", "connection": {{"db_url": "{url}/rpc", "db_ns": "staging", "db": "main",
                  "username": "{ROOT_USER}", "password": "${{STAGING_PASSWORD}}"}},
                  "priority": 50, "tags": ["staging"], "require_approval": false, "allow_destructive": true}},
                {{"name": "production", "connection": {{"db_url": "{url}/rpc", "db_ns": "production", "db": "main",
                  "username": "{ROOT_USER}", "password": "${{PROD_PASSWORD}}"}},
                  "priority": 1, "tags": ["production"], "require_approval": true, "allow_destructive": false}}
            ]}}"#,
            url = server.ws_url()
        ),
    );
    write(
        dir.path(),
        "migrations/20260102_120000_create_user.surql",
        "-- @metadata\n-- version: 20260102_120000\n-- description: Create user table\n-- author: surql\n-- depends_on: []\n-- @up\nDEFINE TABLE user SCHEMAFULL;\nDEFINE FIELD email ON TABLE user TYPE string;\n-- @down\nREMOVE TABLE user;\n",
    );
    write(
        dir.path(),
        "migrations/20260103_090000_seed.surql",
        "-- @metadata\n-- version: 20260103_090000\n-- description: Seed\n-- depends_on: [20260102_120000]\n-- @up\nCREATE user:one SET email = 'one@example.com';\n-- @down\nDELETE user:one;\n",
    );
    let (code, out) = run(flotilla(dir.path())
        .args(["deploy", "--all", "--yes", "--output", "json"])
        .env("STAGING_PASSWORD", ROOT_PASS)
        .env("PROD_PASSWORD", ROOT_PASS));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(ROOT_PASS), "the password leaked: {out}");
    let output = flotilla(dir.path())
        .args(["deploy", "--all", "--yes", "--output", "json"])
        .env("STAGING_PASSWORD", ROOT_PASS)
        .env("PROD_PASSWORD", ROOT_PASS)
        .output()
        .expect("runs");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let report = lines.last().expect("a report line");
    assert_eq!(report["type"], "report");
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(
        report["environments"][0]["environment"], "production",
        "priority 1 first"
    );
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l["type"] == "event"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(ROOT_PASS) && !String::from_utf8_lossy(&output.stderr).contains(ROOT_PASS)
    );

    let (code, out) = run(flotilla(dir.path())
        .args(["history", "-e", "production"])
        .env("STAGING_PASSWORD", ROOT_PASS)
        .env("PROD_PASSWORD", ROOT_PASS));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("20260102_120000")
            && out.contains("Create user table")
            && out.contains("20260103_090000"),
        "{out}"
    );

    let (code, out) = run(flotilla(dir.path())
        .args(["deploy", "--all", "--yes"])
        .env("STAGING_PASSWORD", ROOT_PASS));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("PROD_PASSWORD") && out.contains("production"),
        "unset variable must be named: {out}"
    );
}

#[test]
fn bad_configuration_and_files_exit_2_naming_the_culprit() {
    let typo = project(&TWO_EMBEDDED.replace(
        "namespace = \"app\"\ndatabase = \"prod\"",
        "namespace = \"app\"\ndatabse = \"prod\"",
    ));
    let (code, out) = run(flotilla(typo.path()).args(["deploy", "--all"]));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("`databse`") && out.contains("did you mean `database`"),
        "{out}"
    );

    let malformed = project(TWO_EMBEDDED);
    write(
        malformed.path(),
        "migrations/0002_broken.surql",
        "-- @up\nDEFINE TABLE x;\nCREATE x SET note = 'never closed;\n",
    );
    let (code, out) = run(flotilla(malformed.path()).args(["deploy", "--all"]));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("0002_broken.surql:3") && out.contains("unterminated string"),
        "{out}"
    );

    let fine = project(TWO_EMBEDDED);
    let (code, out) = run(flotilla(fine.path()).args(["deploy", "-e", "prdo"]));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("unknown environment `prdo`") && out.contains("did you mean `prod`"),
        "{out}"
    );
    let (code, out) = run(flotilla(fine.path()).args([
        "deploy",
        "--all",
        "--strategy",
        "canary",
        "--canary-percent",
        "0",
    ]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("canary_percentage"), "{out}");
    let (code, _) = run(flotilla(fine.path()).args(["deploy", "--all", "--bogus-flag"]));
    assert_eq!(code, 2);
    for sub in [
        "deploy", "status", "validate", "history", "rollback", "lock", "init", "new",
    ] {
        let (code, out) = run(flotilla(fine.path()).args([sub, "--help"]));
        assert_eq!(code, 0, "{sub} --help: {out}");
        assert!(
            out.contains("Example"),
            "{sub} --help has no example: {out}"
        );
    }
}

#[test]
fn gates_refuse_with_exit_3_and_say_why() {
    // Missing approval: nothing runs, and stdin is not a terminal, so no prompt blocks.
    let gated =
        project(&TWO_EMBEDDED.replace("priority = 20", "priority = 20\nrequire_approval = true"));
    let (code, out) = run(flotilla(gated.path()).args(["deploy", "--all"]));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("prod requires approval"), "{out}");
    let (code, out) = run(flotilla(gated.path()).args(["deploy", "--all", "--approve", "prod"]));
    assert_eq!(code, 0, "{out}");

    // Destructive change towards an environment that forbids it.
    let strict =
        project(&TWO_EMBEDDED.replace("priority = 20", "priority = 20\nallow_destructive = false"));
    write(
        strict.path(),
        "migrations/0002_drop.surql",
        "-- @up\nREMOVE FIELD email ON account;\n-- @down\nDEFINE FIELD email ON account TYPE string;\n",
    );
    let (code, out) = run(flotilla(strict.path()).args(["deploy", "--all"]));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("REMOVE FIELD")
            && out.contains("0002_drop.surql:2")
            && out.contains("statement 1"),
        "{out}"
    );

    // Drift: an applied file edited afterwards.
    let drift = project(TWO_EMBEDDED);
    let (code, out) = run(flotilla(drift.path()).args(["deploy", "--all"]));
    assert_eq!(code, 0, "{out}");
    write(
        drift.path(),
        "migrations/0001_accounts.surql",
        &ACCOUNTS.replace("TYPE string", "TYPE string ASSERT $value != ''"),
    );
    let (code, out) = run(flotilla(drift.path()).args(["deploy", "--all"]));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("0001_accounts.surql") && out.contains("changed after it was applied"),
        "{out}"
    );

    // Unreachable environment in pre-flight.
    let dead = project(&format!(
        "{TWO_EMBEDDED}\n[[environments]]\nname = \"remote\"\nurl = \"ws://127.0.0.1:{}\"\nnamespace = \"a\"\ndatabase = \"b\"\n",
        free_port()
    ));
    let (code, out) = run(flotilla(dead.path()).args(["deploy", "--all"]));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("remote") && out.contains("cannot reach"),
        "{out}"
    );
}

#[test]
fn a_held_lock_exits_3_naming_its_holder() {
    let server = TestServer::start_beside_tests();
    let dir = project(&format!(
        "[[environments]]\nname = \"shared\"\nurl = \"{}\"\nnamespace = \"app\"\ndatabase = \"main\"\nusername = \"{ROOT_USER}\"\npassword = \"${{DB_PASSWORD}}\"\n",
        server.ws_url()
    ));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let runner = SurrealRunner::new();
    let target = Target::new(
        "shared",
        Connection::new(server.ws_url(), "app", "main").with_credentials(
            ROOT_USER,
            ROOT_PASS,
            AuthLevel::Root,
        ),
    );
    let owner = LockOwner {
        host: "ci-runner-7".into(),
        pid: 4711,
        deployment_id: Some("nightly".into()),
    };
    let guard = runtime
        .block_on(runner.acquire_lock(
            &target,
            &LockRequest {
                owner,
                ..LockRequest::new(None, Duration::ZERO)
            },
        ))
        .expect("hold the lock");

    let (code, out) = run(flotilla(dir.path())
        .args(["deploy", "--all", "--lock-timeout", "1"])
        .env("DB_PASSWORD", ROOT_PASS));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("lock held by ci-runner-7 pid 4711 (deployment nightly) since"),
        "{out}"
    );

    let (code, out) = run(flotilla(dir.path())
        .args(["lock", "status", "-e", "shared"])
        .env("DB_PASSWORD", ROOT_PASS));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("locked by ci-runner-7"), "{out}");
    let (code, out) = run(flotilla(dir.path())
        .args(["lock", "release", "-e", "shared"])
        .env("DB_PASSWORD", ROOT_PASS));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--force"), "{out}");
    let (code, out) = run(flotilla(dir.path())
        .args(["lock", "release", "--force", "-e", "shared"])
        .env("DB_PASSWORD", ROOT_PASS));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("removed the lock held by ci-runner-7"),
        "{out}"
    );
    let (code, out) = run(flotilla(dir.path())
        .args(["deploy", "--all"])
        .env("DB_PASSWORD", ROOT_PASS));
    assert_eq!(code, 0, "{out}");
    assert!(
        runtime.block_on(guard.release()).is_err(),
        "the broken lease is gone"
    );
}

#[test]
fn rollback_reverts_the_newest_migrations() {
    let dir = project(TWO_EMBEDDED);
    write(
        dir.path(),
        "migrations/0002_nickname.surql",
        "-- @up\nDEFINE FIELD nickname ON account TYPE option<string>;\n-- @down\nREMOVE FIELD nickname ON account;\n",
    );
    assert_eq!(run(flotilla(dir.path()).args(["deploy", "--all"])).0, 0);
    let (code, out) = run(flotilla(dir.path()).args(["rollback", "-e", "dev", "--steps", "1"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rolled back 0002") && out.contains("now at 0001"),
        "{out}"
    );
    let (code, out) = run(flotilla(dir.path()).args(["status", "--output", "json"]));
    assert_eq!(code, 0, "{out}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let dev = rows
        .iter()
        .find(|r| r["environment"] == "dev")
        .expect("dev row");
    assert_eq!(
        (dev["version"].as_str(), dev["pending"].as_u64()),
        (Some("0001"), Some(1))
    );
}

#[test]
fn validate_checks_config_files_and_connectivity() {
    let dir = project(TWO_EMBEDDED);
    let (code, out) = run(flotilla(dir.path()).arg("validate"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("connectivity: dev ok") && out.contains("migrations:"),
        "{out}"
    );
    let dead = project(&format!(
        "{TWO_EMBEDDED}\n[[environments]]\nname = \"remote\"\nurl = \"ws://127.0.0.1:{}\"\nnamespace = \"a\"\ndatabase = \"b\"\n",
        free_port()
    ));
    let (code, out) = run(flotilla(dead.path()).arg("validate"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("connectivity: remote FAILED"), "{out}");
}

/// The live progress display, in a real pseudo-terminal (util-linux `script`).
#[test]
fn progress_is_drawn_live_on_a_terminal() {
    let dir = project(TWO_EMBEDDED);
    let binary = assert_cmd::cargo::cargo_bin("flotilla");
    let output = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} deploy --all", binary.display()),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .output()
        .expect("`script` (util-linux) runs the CLI in a pseudo-terminal");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    assert!(
        screen.contains("\x1b[2K") && screen.contains("\x1b[32m"),
        "no live redraw or colour on a TTY: {screen:?}"
    );
    assert!(
        screen.contains("2 done, 0 in progress, 0 failed"),
        "{screen:?}"
    );
    // The same deploy without a terminal prints plain lines, no escape codes.
    let (code, out) = run(flotilla(dir.path()).args(["deploy", "--all"]));
    assert_eq!(code, 0);
    assert!(!out.contains('\x1b'), "{out:?}");
}

/// On a terminal, an environment needing approval is asked about; the answer decides.
#[test]
fn approval_is_asked_interactively_on_a_terminal() {
    let binary = assert_cmd::cargo::cargo_bin("flotilla");
    let gated =
        project(&TWO_EMBEDDED.replace("priority = 20", "priority = 20\nrequire_approval = true"));
    let in_terminal = |answer: &str| {
        let mut child = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("{} deploy --all", binary.display()),
                "/dev/null",
            ])
            .current_dir(gated.path())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(answer.as_bytes())
            .expect("answer");
        let output = child.wait_with_output().expect("finishes");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, screen) = in_terminal("n\n");
    assert!(
        screen.contains("prod requires approval. Deploy to prod? [y/N]"),
        "{screen}"
    );
    assert_eq!(code, Some(3), "{screen}");
    let (code, screen) = in_terminal("y\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("deployed to 2 environment(s)"), "{screen}");
}

#[test]
fn completions_are_generated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = run(flotilla(dir.path()).args(["completions", "bash"]));
    assert_eq!(code, 0);
    assert!(out.contains("flotilla") && out.contains("deploy"), "{out}");
}

/// Numbers out of range — a huge wait, a lease too short, more concurrency than anything
/// holds, a zero timeout — are configuration errors (exit 2) naming the setting, never a
/// panic.
#[test]
fn bad_numbers_are_configuration_errors_not_panics() {
    let fine = project(TWO_EMBEDDED);
    for (args, names) in [
        (
            vec!["--lock-timeout", "99999999999999999999"],
            "lock-timeout",
        ),
        (vec!["--lock-timeout", "30000h"], "lock-timeout"),
        (
            vec!["--max-concurrent", "18446744073709551615"],
            "max_concurrent",
        ),
        (vec!["--max-concurrent", "100000"], "max_concurrent"),
        (vec!["--lease", "1ms"], "lease"),
        (vec!["--connect-timeout", "0s"], "connect timeout"),
        (vec!["--request-timeout=-3s"], "request-timeout"),
        (vec!["--batch-size=-1"], "batch-size"),
    ] {
        let mut command = flotilla(fine.path());
        command.args(["deploy", "--all"]).args(&args);
        let (code, out) = run(&mut command);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(names), "{args:?} should name {names}: {out}");
        assert!(!out.contains("panicked"), "{args:?}: {out}");
    }
    let crowded = project(&format!(
        "[defaults]\nmax_concurrent = 99999999\n{TWO_EMBEDDED}"
    ));
    let (code, out) = run(flotilla(crowded.path()).args(["deploy", "--all"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("max_concurrent"), "{out}");
}

/// No password prints, whatever goes wrong: a password written as a number, a syntax error
/// on the password's line, a URL whose password holds `/`, `?` and `#`, a JSON config with a
/// numeric password — in human and JSON output, with debug logging on.
#[test]
fn secrets_never_print() {
    let secret = "98765432123";
    let url_secret = "S3cr/t?x#y";
    let cases = [
        (
            "flotilla.toml",
            format!(
                "[[environments]]\nname = \"prod\"\nurl = \"ws://127.0.0.1:1\"\nnamespace = \"a\"\ndatabase = \"b\"\nusername = \"admin\"\npassword = {secret}\n"
            ),
        ),
        (
            "flotilla.toml",
            format!(
                "[[environments]]\nname = \"prod\"\nurl = \"ws://127.0.0.1:1\"\nnamespace = \"a\"\ndatabase = \"b\"\nusername = \"admin\"\npassword = \"{secret}\" trailing\n"
            ),
        ),
        (
            "flotilla.toml",
            format!(
                "[[environments]]\nname = \"prod\"\nurl = \"ws://admin:{url_secret}@127.0.0.1:{}/rpc\"\nnamespace = \"a\"\ndatabase = \"b\"\nusername = \"admin\"\npassword = \"{secret}\"\n",
                free_port()
            ),
        ),
        (
            "environments.json",
            format!(
                r#"{{"environments": [{{"name": "prod", "connection": {{"db_url": "ws://127.0.0.1:1", "db_ns": "a", "db": "b", "username": "admin", "password": {secret}}}}}]}}"#
            ),
        ),
    ];
    for (file, text) in &cases {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), file, text);
        write(dir.path(), "migrations/0001_a.surql", ACCOUNTS);
        for args in [
            vec!["deploy", "--all", "--connect-timeout", "2s"],
            vec![
                "deploy",
                "--all",
                "--connect-timeout",
                "2s",
                "--output",
                "json",
                "-vv",
            ],
            vec!["status", "--connect-timeout", "2s", "-vv"],
            vec!["validate", "--connect-timeout", "2s", "--output", "json"],
            vec!["lock", "status", "-e", "prod", "--connect-timeout", "2s"],
        ] {
            let (code, out) = run(flotilla(dir.path()).args(&args));
            assert_ne!(code, 0, "{file} {args:?}: {out}");
            for shown in [secret, url_secret, "S3cr", "admin:"] {
                assert!(
                    !out.contains(shown),
                    "{file} {args:?} printed a secret ({shown}):\n{out}"
                );
            }
        }
    }
}

/// Text that came from a database (a migration's description, here with terminal escape
/// sequences in it) is shown with its control characters escaped, not obeyed.
#[test]
fn database_text_is_shown_without_terminal_escapes() {
    let dir = project(TWO_EMBEDDED);
    write(
        dir.path(),
        "migrations/0002_sneaky.surql",
        "-- @metadata\n-- description: innocent\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\n-- @up\nDEFINE TABLE sneaky;\n-- @down\nREMOVE TABLE sneaky;\n",
    );
    let (code, out) = run(flotilla(dir.path()).args(["deploy", "-e", "dev"]));
    assert_eq!(code, 0, "{out}");
    for args in [
        vec!["history", "-e", "dev"],
        vec!["history", "-e", "dev", "--output", "json"],
    ] {
        let output = flotilla(dir.path()).args(&args).output().expect("runs");
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(shown.contains("innocent"), "{shown}");
        for raw in ['\u{1b}', '\u{7}', '\u{9b}'] {
            assert!(
                !shown.contains(raw),
                "{args:?} printed {raw:?} raw: {shown:?}"
            );
        }
    }
}

#[test]
fn init_speaks_json_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = flotilla(dir.path())
        .args(["init", "--output", "json"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    for line in stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(value["type"], "message", "{line}");
    }
    assert!(stdout.contains("flotilla.toml"), "{stdout}");
}
