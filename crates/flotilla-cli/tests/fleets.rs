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
    let project = fleet_project(&server, &source, "http_${region}_${tenant}");
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
        template("c-${tenant}", "cmd_${tier}_${tenant}"),
        template("q-${tenant}", "query_${region}_${tenant}"),
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
