//! Fleets from tenant sources, each feeding a real deploy of the `flotilla` binary to a real
//! SurrealDB server: a paged HTTP lister on 127.0.0.1 (bearer token, a page that fails once
//! and is retried, a page that fails for good), a file, a command, and a query against a
//! SurrealDB database. Bad and duplicate ids are refused naming the source and the id.

#[path = "common/fleet.rs"]
mod fleet;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flotilla_runner::MigrationRunner;
use flotilla_tests::{ROOT_PASS, ROOT_USER, TestServer};

use fleet::*;

const TOKEN: &str = "lister-token-5f2a";

/// A tenant lister on 127.0.0.1: page 1 lists acme and globex (with their regions) and the
/// cursor `p2`; page 2 answers 503 the first time, then lists initech and no cursor; the
/// cursor `broken` answers 404. Without the bearer token: 401. It serves at most 20
/// requests, for at most 60 s.
fn lister() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/tenants", listener.local_addr().expect("addr"));
    listener.set_nonblocking(true).expect("nonblocking");
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut failed_once = false;
        while Instant::now() < deadline && count.load(Ordering::SeqCst) < 20 {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            stream.set_nonblocking(false).expect("blocking");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line);
            }
            let path = head
                .first()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("")
                .to_owned();
            let authorised = head.iter().any(|l| {
                l.to_ascii_lowercase().starts_with("authorization:")
                    && l.contains(&format!("Bearer {TOKEN}"))
            });
            let (status, body) = if !authorised {
                ("401 Unauthorized", String::new())
            } else if path.ends_with("cursor=p2") && !failed_once {
                failed_once = true;
                ("503 Service Unavailable", String::new())
            } else if path.ends_with("cursor=p2") {
                (
                    "200 OK",
                    r#"{"tenants": [{"id": "initech", "region": "us"}]}"#.to_owned(),
                )
            } else if path.ends_with("cursor=broken") {
                ("404 Not Found", String::new())
            } else {
                (
                    "200 OK",
                    r#"{"tenants": [{"id": "acme", "region": "eu"}, {"id": "globex", "region": "us"}], "next_cursor": "p2"}"#
                        .to_owned(),
                )
            };
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, served)
}

/// A project of no fixed environment and one fleet with `source` (a TOML inline table),
/// whose tenants get a namespace each on `server`.
fn fleet_project(server: &TestServer, source: &str, namespace: &str) -> Project {
    let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
    let path = project.dir.path().join("flotilla.toml");
    let mut config = std::fs::read_to_string(&path).expect("config");
    config.push_str(&format!(
        "[[fleets]]\nname = \"customers\"\nsource = {source}\n[fleets.template]\nurl = \"{}\"\nnamespace = \"{namespace}\"\ndatabase = \"app\"\nusername = \"{ROOT_USER}\"\npassword = \"${{{PASSWORD_VARIABLE}}}\"\ntags = [\"tenant\"]\n",
        server.ws_url()
    ));
    std::fs::write(path, config).expect("config");
    project
}

fn deployed(out: &str) -> Vec<String> {
    let report = report_of(out);
    let mut names: Vec<String> = report["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .filter(|e| {
            e["status"] == "success" && e["applied"].as_array().is_some_and(|a| a.len() == 1)
        })
        .map(|e| e["environment"].as_str().expect("name").to_owned())
        .collect();
    names.sort_unstable();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_http_lister_feeds_a_deploy_with_a_bearer_token_and_retries() {
    let server = TestServer::start_beside_tests();
    let (url, served) = lister();
    let source = format!("{{ kind = \"http\", url = \"{url}\", token_env = \"LISTER_TOKEN\" }}");
    let project = fleet_project(&server, &source, "http_${tenant.region}_${tenant}");
    let mut command = project.command(&[
        "deploy",
        "--fleet",
        "customers",
        "--output",
        "json",
        "--no-rehearse",
    ]);
    command.env("LISTER_TOKEN", TOKEN);
    let mut running = Running::spawn(command);
    let code = running.wait(Duration::from_secs(120));
    let out = running.output();
    assert_eq!(code, 0, "{out}");
    assert_eq!(deployed(&out), ["acme", "globex", "initech"]);
    assert_eq!(
        served.load(Ordering::SeqCst),
        3,
        "two pages, the second retried once"
    );
    assert!(!out.contains(TOKEN) && !out.contains(ROOT_PASS), "{out}");
    let mut command = project.command(&["tenants", "list", "--output", "json"]);
    command.env("LISTER_TOKEN", "not-the-token");
    let mut running = Running::spawn(command);
    assert_eq!(
        running.wait(Duration::from_secs(60)),
        1,
        "a wrong token: {}",
        running.output()
    );
    assert!(
        running.output().contains("page 1: HTTP 401"),
        "{}",
        running.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_fails_for_good_is_named_and_nothing_runs() {
    let server = TestServer::start_beside_tests();
    let (url, _) = lister();
    let source = format!(
        "{{ kind = \"http\", url = \"{url}?from=x&cursor=broken\", token_env = \"LISTER_TOKEN\" }}"
    );
    let project = fleet_project(&server, &source, "broken_${tenant}");
    let mut command = project.command(&["deploy", "--all", "--output", "json"]);
    command.env("LISTER_TOKEN", TOKEN);
    let mut running = Running::spawn(command);
    assert_eq!(
        running.wait(Duration::from_secs(60)),
        1,
        "{}",
        running.output()
    );
    assert!(
        running.output().contains("page 1: HTTP 404"),
        "{}",
        running.output()
    );
}

/// A file, a command and a SurrealDB query, each a fleet of one project: one deploy reaches
/// every tenant they list (the query only the active ones), with the fields each gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_command_and_query_sources_feed_one_deploy() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
    std::fs::write(
        project.dir.path().join("tenants.txt"),
        "# customers\nacme\nglobex\n",
    )
    .expect("file");
    // The directory: a `tenant` table with one inactive tenant.
    let directory = flotilla_surrealdb::SurrealRunner::new();
    let target = flotilla_runner::Target::new(
        "directory",
        flotilla_core::Connection::new(server.ws_url(), "fleet_directory", "main")
            .with_credentials(ROOT_USER, ROOT_PASS, flotilla_core::AuthLevel::Root),
    );
    directory
        .session(&target)
        .await
        .expect("session")
        .query("CREATE tenant:hooli SET active = true, region = 'eu'; CREATE tenant:umbrella SET active = false, region = 'us'; CREATE tenant:stark SET active = true, region = 'us';")
        .await
        .expect("seed")
        .check()
        .expect("seeded");
    let url = server.ws_url();
    let template = |name: &str, namespace: &str| {
        format!(
            "[fleets.template]\nname = \"{name}\"\nurl = \"{url}\"\nnamespace = \"{namespace}\"\ndatabase = \"app\"\nusername = \"{ROOT_USER}\"\npassword = \"${{{PASSWORD_VARIABLE}}}\"\n"
        )
    };
    let fleets = format!(
        "[[fleets]]\nname = \"from-file\"\nsource = {{ kind = \"file\", path = \"tenants.txt\" }}\n{}\n\
         [[fleets]]\nname = \"from-command\"\nsource = {{ kind = \"command\", command = \"printf '%s' '[{{\\\"id\\\": \\\"initech\\\", \\\"tier\\\": \\\"gold\\\"}}]'\" }}\n{}\n\
         [[fleets]]\nname = \"from-query\"\nsource = {{ kind = \"surrealdb\", url = \"{url}\", namespace = \"fleet_directory\", database = \"main\", username = \"{ROOT_USER}\", password = \"${{{PASSWORD_VARIABLE}}}\", query = \"SELECT id, region FROM tenant WHERE active ORDER BY id\" }}\n{}\n",
        template("f-${tenant}", "file_${tenant}"),
        template("c-${tenant}", "cmd_${tenant.tier}_${tenant}"),
        template("q-${tenant}", "query_${tenant.region}_${tenant}"),
    );
    let path = project.dir.path().join("flotilla.toml");
    let config = std::fs::read_to_string(&path).expect("config") + &fleets;
    std::fs::write(&path, config).expect("config");

    let (code, out) = project.run(&[
        "deploy",
        "--all",
        "--strategy",
        "parallel",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        deployed(&out),
        ["c-initech", "f-acme", "f-globex", "q-hooli", "q-stark"]
    );
    let (code, listed) = project.run(&[
        "tenants",
        "list",
        "--fleet",
        "from-query",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{listed}");
    assert!(
        listed.contains("\"namespace\":\"query_eu_hooli\""),
        "{listed}"
    );
    assert!(!listed.contains(ROOT_PASS) && !out.contains(ROOT_PASS));
    // The migration really ran in each tenant's namespace.
    let history = directory
        .history(&flotilla_runner::Target::new(
            "c-initech",
            flotilla_core::Connection::new(server.ws_url(), "cmd_gold_initech", "app")
                .with_credentials(ROOT_USER, ROOT_PASS, flotilla_core::AuthLevel::Root),
        ))
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_duplicate_ids_are_refused_naming_the_source_and_the_id() {
    let server = TestServer::start_beside_tests();
    for (listing, says) in [
        ("acme\nbad id!\n", "`bad id!` is not a tenant id"),
        ("acme\nglobex\nacme\n", "tenant `acme` is listed twice"),
    ] {
        let project = fleet_project(
            &server,
            "{ kind = \"file\", path = \"tenants.txt\" }",
            "t_${tenant}",
        );
        std::fs::write(project.dir.path().join("tenants.txt"), listing).expect("file");
        let (code, out) = project.run(&["deploy", "--all", "--output", "json"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(says) && out.contains("tenants.txt"), "{out}");
    }
}

/// Appends `fleets` (TOML) to `project`'s configuration.
fn add_fleets(project: &Project, fleets: &str) {
    let path = project.dir.path().join("flotilla.toml");
    let config = std::fs::read_to_string(&path).expect("config") + fleets;
    std::fs::write(&path, config).expect("config");
}

/// A fleet of `tenants` on `url`, namespace `{prefix}_${tenant}`, signing in with `password`
/// (a TOML `key = value` line).
fn static_fleet(name: &str, tenants: &[&str], url: &str, prefix: &str, password: &str) -> String {
    let ids: Vec<String> = tenants.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[fleets]]\nname = \"{name}\"\nsource = {{ kind = \"static\", tenants = [{}] }}\n[fleets.template]\nurl = \"{url}\"\nnamespace = \"{prefix}_${{tenant}}\"\ndatabase = \"app\"\nusername = \"{ROOT_USER}\"\n{password}\n",
        ids.join(", ")
    )
}

fn statuses(out: &str) -> Vec<(String, String, usize)> {
    report_of(out)["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .map(|e| {
            (
                e["environment"].as_str().expect("name").to_owned(),
                e["status"].as_str().expect("status").to_owned(),
                e["applied"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

/// Passwords from a file shared by two tenants and from a command templated per tenant:
/// each source is read once per deployment, none is printed, `tenants list` reads none, and
/// a command that fails stops the deploy before anything runs, naming the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_come_from_a_file_and_a_per_tenant_command_once_each_and_never_print() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
    let dir = project.dir.path();
    std::fs::write(dir.join("root.pw"), format!("{ROOT_PASS}\n")).expect("password file");
    let url = server.ws_url();
    add_fleets(
        &project,
        &(static_fleet(
            "by-file",
            &["a", "b"],
            &url,
            "pwfile",
            "password_file = \"root.pw\"",
        ) + &static_fleet(
            "by-command",
            &["c", "d"],
            &url,
            "pwcmd",
            "password_command = \"echo ${tenant} >> calls.log; cat root.pw\"",
        )),
    );
    let (code, listed) = project.run(&["tenants", "list", "--output", "json"]);
    assert_eq!(code, 0, "{listed}");
    assert!(
        listed.contains("\"password\":\"password_command\"")
            && listed.contains("\"password\":\"password_file\""),
        "{listed}"
    );
    assert!(
        !dir.join("calls.log").exists(),
        "listing tenants runs no password command"
    );

    let (code, out) = project.run(&["deploy", "--all", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(deployed(&out), ["a", "b", "c", "d"]);
    let calls = std::fs::read_to_string(dir.join("calls.log")).expect("calls");
    let mut calls: Vec<&str> = calls.lines().collect();
    calls.sort_unstable();
    assert_eq!(
        calls,
        ["c", "d"],
        "one run per tenant's command, per deployment"
    );
    assert!(!out.contains(ROOT_PASS), "{out}");
    // --only-pending probes before it deploys: the passwords it read serve both.
    std::fs::remove_file(dir.join("calls.log")).expect("reset");
    std::fs::write(
        dir.join("migrations/0002_step.surql"),
        Migration::quick("0002").text(),
    )
    .expect("migration");
    let (code, out) = project.run(&["deploy", "--all", "--only-pending", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(statuses(&out).len(), 4, "{out}");
    let calls = std::fs::read_to_string(dir.join("calls.log")).expect("calls");
    let mut calls: Vec<&str> = calls.lines().collect();
    calls.sort_unstable();
    assert_eq!(calls, ["c", "d"], "probing and deploying read each once");

    // A failing command: exit 2 naming the environment and the key; nothing ran anywhere.
    let failing = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
    add_fleets(
        &failing,
        &(static_fleet(
            "fine",
            &["e"],
            &url,
            "pwfail",
            &format!("password = \"${{{PASSWORD_VARIABLE}}}\""),
        ) + &static_fleet(
            "vault",
            &["f"],
            &url,
            "pwfail",
            "password_command = \"echo vault sealed >&2; exit 3\"",
        )),
    );
    let (code, out) = failing.run(&["deploy", "--all", "--output", "json"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("environment `f`: `password_command` failed") && out.contains("vault sealed"),
        "{out}"
    );
    let runner = flotilla_surrealdb::SurrealRunner::new();
    let untouched = flotilla_runner::Target::new(
        "e",
        flotilla_core::Connection::new(url.as_str(), "pwfail_e", "app").with_credentials(
            ROOT_USER,
            ROOT_PASS,
            flotilla_core::AuthLevel::Root,
        ),
    );
    assert!(
        runner
            .history(&untouched)
            .await
            .unwrap_or_default()
            .is_empty(),
        "nothing ran"
    );
}

/// Four tenants, one whose data breaks the second migration. Isolated, the other three keep
/// both migrations, the broken one is rolled back alone, the hook is told of each with its
/// status, error class and versions, and the failed list names exactly it; a second deploy
/// from that list (the data fixed) finishes it and leaves an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_failures_roll_back_alone_and_the_failed_list_feeds_the_next_run() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
    let dir = project.dir.path();
    std::fs::write(
        dir.join("migrations/0002_unique_email.surql"),
        "-- @up\nDEFINE INDEX person_email ON person FIELDS email UNIQUE;\n-- @down\nREMOVE INDEX person_email ON person;\n",
    )
    .expect("migration");
    let url = server.ws_url();
    add_fleets(
        &project,
        &static_fleet(
            "customers",
            &["a", "b", "c", "d"],
            &url,
            "iso",
            &format!("password = \"${{{PASSWORD_VARIABLE}}}\""),
        ),
    );
    let runner = flotilla_surrealdb::SurrealRunner::new();
    let tenant = |id: &str| {
        flotilla_runner::Target::new(
            id,
            flotilla_core::Connection::new(url.as_str(), format!("iso_{id}"), "app")
                .with_credentials(ROOT_USER, ROOT_PASS, flotilla_core::AuthLevel::Root),
        )
    };
    let query = |id: &str, sql: &'static str| {
        let (runner, target) = (&runner, tenant(id));
        async move {
            runner
                .session(&target)
                .await
                .expect("session")
                .query(sql)
                .await
                .expect("query")
                .check()
                .expect("ran");
        }
    };
    query(
        "c",
        "CREATE person SET email = 'twice@example.com'; CREATE person SET email = 'twice@example.com';",
    )
    .await;
    let hook = "cat > hook-$FLOTILLA_TENANT.json; echo \"$FLOTILLA_STATUS $FLOTILLA_ERROR_CLASS $FLOTILLA_APPLIED\" > hook-$FLOTILLA_TENANT.txt";
    let (code, out) = project.run(&[
        "deploy",
        "--all",
        "--isolate",
        "--strategy",
        "parallel",
        "--no-rehearse",
        "--write-failed",
        "failed.txt",
        "--on-tenant",
        hook,
        "--output",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(report_of(&out)["outcome"], "failed", "{out}");
    let seen = statuses(&out);
    for id in ["a", "b", "d"] {
        assert!(
            seen.contains(&(id.to_owned(), "success".to_owned(), 2)),
            "{id}: {seen:?}"
        );
        assert_eq!(runner.history(&tenant(id)).await.expect("history").len(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("hook-{id}.txt"))).expect("hook ran"),
            "success  0001,0002\n"
        );
    }
    assert!(
        seen.contains(&("c".to_owned(), "rolled_back".to_owned(), 1)),
        "{seen:?}"
    );
    assert!(
        runner
            .history(&tenant("c"))
            .await
            .expect("history")
            .is_empty()
    );
    let told = std::fs::read_to_string(dir.join("hook-c.txt")).expect("hook ran for c");
    assert!(
        told.starts_with("rolled_back ") && told.trim_end().ends_with(" 0001"),
        "{told}"
    );
    assert!(
        told.split(' ')
            .nth(1)
            .is_some_and(|class| !class.is_empty()),
        "{told}"
    );
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hook-a.json")).expect("hook json"))
            .expect("hook input is JSON");
    assert_eq!(event["tenant"], "a");
    assert_eq!(event["environment"], "a");
    assert_eq!(event["deployment_id"], report_of(&out)["deployment_id"]);
    assert!(
        event["started_at"].is_string() && event["duration_ms"].is_u64(),
        "{event}"
    );
    assert!(!out.contains(ROOT_PASS));
    assert_eq!(
        std::fs::read_to_string(dir.join("failed.txt")).expect("failed list"),
        "c\n"
    );

    query("c", "DELETE person;").await;
    let (code, out) = project.run(&[
        "deploy",
        "--from-file",
        "failed.txt",
        "--isolate",
        "--no-rehearse",
        "--write-failed",
        "failed.txt",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(statuses(&out), [("c".to_owned(), "success".to_owned(), 2)]);
    assert_eq!(
        std::fs::read_to_string(dir.join("failed.txt")).expect("failed list"),
        ""
    );
}

/// `--only-pending --limit 2` rolls five tenants out two at a time, then says there is
/// nothing pending; a hook that fails is reported and changes nothing about the deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pending_with_a_limit_rolls_out_in_chunks() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
    add_fleets(
        &project,
        &static_fleet(
            "customers",
            &["t1", "t2", "t3", "t4", "t5"],
            &server.ws_url(),
            "chunk",
            &format!("password = \"${{{PASSWORD_VARIABLE}}}\""),
        ),
    );
    let chunk = &[
        "deploy",
        "--fleet",
        "customers",
        "--only-pending",
        "--limit",
        "2",
        "--output",
        "json",
    ];
    let mut first = chunk.to_vec();
    first.extend(["--on-tenant", "exit 7"]);
    let (code, out) = project.run(&first);
    assert_eq!(code, 0, "a failing hook does not fail the deploy: {out}");
    assert_eq!(deployed(&out), ["t1", "t2"]);
    let hooks = &report_of(&out)["hooks"];
    assert_eq!(hooks["ran"], 2, "{out}");
    assert_eq!(hooks["failed"].as_array().map(Vec::len), Some(2), "{out}");
    assert!(out.contains("exit status: 7"), "{out}");
    let (code, out) = project.run(chunk);
    assert_eq!(code, 0, "{out}");
    assert_eq!(deployed(&out), ["t3", "t4"]);
    let (code, out) = project.run(chunk);
    assert_eq!(code, 0, "{out}");
    assert_eq!(deployed(&out), ["t5"]);
    let (code, out) = project.run(chunk);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing pending"), "{out}");
}

/// Shell syntax a tenant directory might carry in a field.
const PAYLOADS: &[&str] = &[
    "$(touch pwned-1)",
    "`touch pwned-2`",
    "; touch pwned-3",
    "| touch pwned-4",
    "&& touch pwned-5",
    "& touch pwned-6",
    "x\ntouch pwned-7",
    "' ; touch pwned-8 '",
    "\" ; touch pwned-9 \"",
];

/// A tenant directory is input. Fields full of shell syntax reach a password command only as
/// environment variables — nothing they say runs, and the command sees each value exactly;
/// list items (tags) are templated; `${NAME}` is the process's variable even when a field has
/// that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_reach_commands_as_variables_and_never_run() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
    let dir = project.dir.path();
    std::fs::write(dir.join("root.pw"), format!("{ROOT_PASS}\n")).expect("password file");
    std::fs::create_dir_all(dir.join("calls")).expect("calls dir");
    let script = dir.join("pw.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s' \"$2\" > \"calls/$1\"\ncat root.pw\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let tenants: Vec<serde_json::Value> = PAYLOADS
        .iter()
        .enumerate()
        .map(|(i, note)| {
            serde_json::json!({
                "id": format!("t{i}"),
                "note": note,
                "region": if i % 2 == 0 { "eu" } else { "us" },
                "FLOTILLA_TEST_SUFFIX": "from-the-field",
            })
        })
        .collect();
    std::fs::write(
        dir.join("tenants.json"),
        serde_json::to_string(&tenants).expect("json"),
    )
    .expect("tenants");
    add_fleets(
        &project,
        &format!(
            "[[fleets]]\nname = \"hostile\"\nsource = {{ kind = \"command\", command = \"cat tenants.json\" }}\n\
             [fleets.template]\nurl = \"{}\"\nnamespace = \"inj_${{tenant}}_${{FLOTILLA_TEST_SUFFIX}}\"\ndatabase = \"app\"\n\
             username = \"{ROOT_USER}\"\npassword_command = \"./pw.sh ${{tenant}} ${{tenant.note}}\"\ntags = [\"tenant\", \"${{tenant.region}}\"]\n",
            server.ws_url()
        ),
    );
    let run = |args: &[&str]| {
        let mut command = project.command(args);
        command.env("FLOTILLA_TEST_SUFFIX", "from-env");
        let mut running = Running::spawn(command);
        let code = running.wait(Duration::from_secs(120));
        (code, running.output())
    };
    // A hook gets the fields as variables too.
    std::fs::create_dir_all(dir.join("hooks")).expect("hooks dir");
    let hook = "printf '%s' \"$FLOTILLA_TENANT_NOTE\" > \"hooks/$FLOTILLA_TENANT\"";
    // Tags are templated: `--tag eu` selects the tenants whose region field says so.
    let (code, out) = run(&[
        "deploy",
        "--tag",
        "eu",
        "--output",
        "json",
        "--on-tenant",
        hook,
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(deployed(&out), ["t0", "t2", "t4", "t6", "t8"]);
    let (code, out) = run(&["deploy", "--all", "--output", "json", "--on-tenant", hook]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(deployed(&out), ["t1", "t3", "t5", "t7"]);
    for (i, payload) in PAYLOADS.iter().enumerate() {
        assert!(
            !dir.join(format!("pwned-{}", i + 1)).exists(),
            "payload {payload:?} ran on the deployer"
        );
        let seen = std::fs::read_to_string(dir.join(format!("calls/t{i}"))).expect("called");
        assert_eq!(&seen, payload, "the command sees the value exactly");
        let told = std::fs::read_to_string(dir.join(format!("hooks/t{i}"))).expect("hooked");
        assert_eq!(&told, payload, "the hook sees the value exactly");
    }
    // The operator's variable, not the field of the same name, named the namespace.
    let history = flotilla_surrealdb::SurrealRunner::new()
        .history(&flotilla_runner::Target::new(
            "t0",
            flotilla_core::Connection::new(server.ws_url(), "inj_t0_from-env", "app")
                .with_credentials(ROOT_USER, ROOT_PASS, flotilla_core::AuthLevel::Root),
        ))
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
    assert!(!out.contains(ROOT_PASS));
}

/// A field that would change where a database is — `/ @ : # ?`, whitespace, a control
/// character in a namespace, any value in a URL's host without a declared pattern — is
/// refused (exit 2) naming the tenant and the field, before anything runs; a declared
/// pattern lets the operator allow a host field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_would_move_a_database_or_a_credential_are_refused() {
    let server = TestServer::start_beside_tests();
    let port = server.ws_url().rsplit(':').next().expect("port").to_owned();
    for value in [
        "a/b", "a@b", "a:b", "a#b", "a?b", "a b", "a\tb", "a\u{1b}b", "../x",
    ] {
        let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
        let tenants = serde_json::json!([{ "id": "acme", "shard": value }]);
        std::fs::write(project.dir.path().join("tenants.json"), tenants.to_string())
            .expect("tenants");
        add_fleets(
            &project,
            &format!(
                "[[fleets]]\nname = \"f\"\nsource = {{ kind = \"command\", command = \"cat tenants.json\" }}\n\
                 [fleets.template]\nurl = \"{}\"\nnamespace = \"ns_${{tenant.shard}}\"\ndatabase = \"app\"\nusername = \"{ROOT_USER}\"\npassword = \"${{{PASSWORD_VARIABLE}}}\"\n",
                server.ws_url()
            ),
        );
        let (code, out) = project.run(&["deploy", "--all", "--output", "json"]);
        assert_eq!(code, 2, "{value:?}: {out}");
        assert!(
            out.contains("tenant `acme`") && out.contains("shard"),
            "{value:?}: {out}"
        );
    }
    let host_fleet = |fields: &str| {
        let project = Project::new(&server.ws_url(), 0, &[Migration::quick("0001")]);
        let tenants = serde_json::json!([{ "id": "acme", "host": "127.0.0.1" }]);
        std::fs::write(project.dir.path().join("tenants.json"), tenants.to_string())
            .expect("tenants");
        add_fleets(
            &project,
            &format!(
                "[[fleets]]\nname = \"f\"\nsource = {{ kind = \"command\", command = \"cat tenants.json\" }}\n{fields}\
                 [fleets.template]\nurl = \"ws://${{tenant.host}}:{port}\"\nnamespace = \"host_${{tenant}}\"\ndatabase = \"app\"\nusername = \"{ROOT_USER}\"\npassword = \"${{{PASSWORD_VARIABLE}}}\"\n"
            ),
        );
        project.run(&["deploy", "--all", "--output", "json"])
    };
    let (code, out) = host_fleet("");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("host") && out.contains("pattern"), "{out}");
    let (code, out) = host_fleet("[fleets.fields]\nhost = '127\\.0\\.0\\.1'\n");
    assert_eq!(code, 0, "a declared pattern allows it: {out}");
    assert_eq!(deployed(&out), ["acme"]);
}

/// A tenant never takes a fixed environment's place, nor another fleet's tenant's (exit 2,
/// naming both); a 128-character id is a valid environment name; a template error exits 2
/// naming the tenant, not `${tenant}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_replace_environments_and_template_errors_name_the_tenant() {
    let server = TestServer::start_beside_tests();
    let url = server.ws_url();
    let password = format!("password = \"${{{PASSWORD_VARIABLE}}}\"");
    let project = Project::new(&url, 1, &[Migration::quick("0001")]);
    add_fleets(
        &project,
        &static_fleet("customers", &["t0"], &url, "coll", &password),
    );
    let (code, out) = project.run(&["deploy", "-e", "t0", "--output", "json"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("tenant `t0` of fleet `customers`") && out.contains("the environment `t0` of"),
        "{out}"
    );
    assert_eq!(count(&project).await.applied, 0, "nothing ran");

    let project = Project::new(&url, 0, &[Migration::quick("0001")]);
    add_fleets(
        &project,
        &(static_fleet("one", &["acme"], &url, "dup_a", &password)
            + &static_fleet("two", &["acme"], &url, "dup_b", &password)),
    );
    let (code, out) = project.run(&["tenants", "list", "--output", "json"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("tenant `acme` of fleet `two`")
            && out.contains("tenant `acme` of fleet `one`"),
        "{out}"
    );

    let long = "a".repeat(128);
    let project = Project::new(&url, 0, &[Migration::quick("0001")]);
    add_fleets(
        &project,
        &static_fleet("long", &[&long], &url, "long", &password),
    );
    let (code, out) = project.run(&["deploy", "--all", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(deployed(&out), [long]);

    let project = Project::new(&url, 0, &[Migration::quick("0001")]);
    add_fleets(
        &project,
        &static_fleet(
            "both",
            &["acme"],
            &url,
            "both",
            &format!("{password}\npassword_file = \"x.pw\""),
        ),
    );
    let (code, out) = project.run(&["deploy", "--all", "--output", "json"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("acme") && !out.contains("${tenant}"), "{out}");
}

/// Whether a process whose command line holds `marker` runs.
fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.filter_map(Result::ok).any(|entry| {
                std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|line| String::from_utf8_lossy(&line).contains(marker))
            })
        })
        .unwrap_or(false)
}

/// Signals are handled from the start: a SIGINT while a source command lists tenants ends
/// flotilla at once (exit 130) and kills the command with everything it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_listing_tenants_kills_the_source_command() {
    let server = TestServer::start_beside_tests();
    let project = fleet_project(
        &server,
        "{ kind = \"command\", command = \"sleep 30.6173 & sleep 30.6174; echo acme\" }",
        "sig_${tenant}",
    );
    let mut deploy = project.spawn(&["deploy", "--all", "--output", "json"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running_with("30.6174") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(running_with("30.6174"), "the source command never started");
    let started = Instant::now();
    deploy.signal("INT");
    assert_eq!(
        deploy.wait(Duration::from_secs(10)),
        130,
        "{}",
        deploy.output()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while (running_with("30.6173") || running_with("30.6174")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !running_with("30.6173") && !running_with("30.6174"),
        "the source command's processes outlived flotilla"
    );
}
