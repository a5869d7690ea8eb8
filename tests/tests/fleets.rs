//! Fleet rollouts through the library: the per-environment hook is told of every environment
//! that ran exactly once, with its final status, whichever way the deployment ends (all or
//! nothing, isolated, no rollback); password sources are read once per source. Targets are
//! real embedded SurrealDB databases.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flotilla_coordinator::{
    DeploymentCoordinator, DeploymentPlan, EnvironmentConfig, EnvironmentHook, EnvironmentRegistry,
    HookEvent, Outcome, resolve_passwords,
};
use flotilla_core::{AuthLevel, Connection, DeploymentStatus, PasswordSource};
use flotilla_runner::testkit::migrations;
use flotilla_runner::{Backends, Target};
use flotilla_strategies::StrategyKind;
use flotilla_surrealdb::SurrealRunner;

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, DeploymentStatus, Option<String>)>>);

#[async_trait]
impl EnvironmentHook for Recorder {
    async fn finished(&self, event: &HookEvent) -> Result<(), String> {
        self.0.lock().expect("recorder").push((
            event.report.environment.clone(),
            event.report.status,
            event.tenant.clone(),
        ));
        Ok(())
    }
}

/// Three tenants on `mem://`; the middle one already holds the record the second migration
/// creates, so it fails there.
async fn fleet(prefix: &str) -> (EnvironmentRegistry, Backends) {
    let registry = EnvironmentRegistry::new();
    let runner = SurrealRunner::new();
    for i in 0..3 {
        let name = format!("{prefix}{i}");
        let mut environment = EnvironmentConfig::new(
            name.as_str(),
            Connection::new("mem://", name.as_str(), "app"),
        )
        .expect("name");
        environment.tenant = Some(format!("tenant-{i}"));
        if i == 1 {
            runner
                .session(&Target::new(name.as_str(), environment.connection.clone()))
                .await
                .expect("session")
                .query("CREATE effect:b SET planted = true")
                .await
                .expect("plant");
        }
        registry.register(environment).expect("register");
    }
    let mut backends = Backends::new();
    runner.register(&mut backends);
    (registry, backends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_hears_each_environment_once_with_its_final_status() {
    let pair = migrations(&[
        (
            "0001_a.surql",
            "-- @up\nCREATE effect:a;\n-- @down\nDELETE effect:a;\n",
        ),
        (
            "0002_b.surql",
            "-- @up\nCREATE effect:b;\n-- @down\nDELETE effect:b;\n",
        ),
    ]);
    for (prefix, isolate, rollback, outcome) in [
        ("all", false, true, Outcome::RolledBack),
        ("iso", true, true, Outcome::Failed),
        ("keep", false, false, Outcome::Failed),
    ] {
        let (registry, backends) = fleet(prefix).await;
        let recorder = Arc::new(Recorder::default());
        let coordinator = DeploymentCoordinator::new(backends)
            .with_hook(Arc::clone(&recorder) as Arc<dyn EnvironmentHook>);
        let plan = DeploymentPlan::builder(&registry)
            .all()
            .migrations(Arc::clone(&pair))
            .kind(StrategyKind::Parallel)
            .rehearse(false)
            .isolate(isolate)
            .auto_rollback(rollback)
            .build()
            .expect("plan");
        let mut events = coordinator.subscribe();
        let report = coordinator.deploy(&plan).await.expect("deploy");
        assert_eq!(report.outcome, outcome, "{prefix}: {report:#?}");
        // The event ending each turn carries when it started, how long it took, and the
        // error's class.
        let mut ends = Vec::new();
        while let Ok(event) = events.try_recv() {
            if event.duration_ms.is_some() {
                assert!(event.started_at.is_some(), "{event:?}");
                ends.push((event.environment, event.status, event.error_class));
            }
        }
        ends.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            ends,
            [
                (format!("{prefix}0"), DeploymentStatus::Success, None),
                (
                    format!("{prefix}1"),
                    DeploymentStatus::Failed,
                    Some("statement_failed".to_owned())
                ),
                (format!("{prefix}2"), DeploymentStatus::Success, None),
            ],
            "{prefix}"
        );
        let mut told = recorder.0.lock().expect("recorder").clone();
        told.sort_by(|a, b| a.0.cmp(&b.0));
        let finals: Vec<_> = report
            .environments
            .iter()
            .enumerate()
            .map(|(i, e)| (e.environment.clone(), e.status, Some(format!("tenant-{i}"))))
            .collect();
        assert_eq!(told, finals, "{prefix}: told once each, the final status");
        assert_eq!(report.hooks.as_ref().map(|h| h.ran), Some(3));
        let expected_ok = if isolate || !rollback {
            DeploymentStatus::Success
        } else {
            DeploymentStatus::RolledBack
        };
        assert_eq!(report.environments[0].status, expected_ok, "{prefix}");
        assert_eq!(report.environments[2].status, expected_ok, "{prefix}");
    }
}

/// A hook command that hangs is killed at its timeout with everything it started and
/// reported; one that exits leaving a process that holds its output is done when it exits,
/// that process killed with its group. Neither holds up nor fails the deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_killed_at_its_timeout_and_reported() {
    let (registry, backends) = fleet("hang").await;
    registry.unregister("hang1");
    let hook = flotilla_coordinator::CommandHook {
        command: "if [ \"$FLOTILLA_ENVIRONMENT\" = hang0 ]; then sleep 30.4173; true; else sleep 30.4175 & true; fi".into(),
        dir: std::env::temp_dir(),
        timeout: std::time::Duration::from_millis(300),
    };
    let coordinator = DeploymentCoordinator::new(backends).with_hook(Arc::new(hook));
    let plan = DeploymentPlan::builder(&registry)
        .all()
        .migrations(migrations(&[(
            "0001_a.surql",
            "-- @up\nCREATE effect:a;\n-- @down\nDELETE effect:a;\n",
        )]))
        .kind(StrategyKind::Parallel)
        .rehearse(false)
        .build()
        .expect("plan");
    let started = std::time::Instant::now();
    let report = coordinator.deploy(&plan).await.expect("deploy");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let hooks = report.hooks.expect("hooks ran");
    assert_eq!(hooks.ran, 2);
    let failed: Vec<(&str, &str)> = hooks
        .failed
        .iter()
        .map(|f| (f.environment.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(failed, [("hang0", "did not finish within 300ms; killed")]);
    // A SIGKILL lands a moment after `kill` returns: give it up to 2 s, not the sleeps' 30.
    let survivors = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .filter(|cmdline| cmdline.starts_with("sleep 30.417"))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !survivors().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let survivors = survivors();
    assert!(survivors.is_empty(), "left running: {survivors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_password_source_is_read_once_and_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls.log");
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").expect("file");
    let command = format!("echo run >> {}; printf from-command", log.display());
    let environment = |name: &str, source: PasswordSource| {
        let mut environment = EnvironmentConfig::new(
            name,
            Connection::new("mem://", name, "app").with_credentials("u", "", AuthLevel::Root),
        )
        .expect("name");
        environment.password_source = Some(source);
        environment
    };
    let environments = vec![
        environment("a", PasswordSource::command(command.clone())),
        environment("b", PasswordSource::command(command.clone())),
        environment("c", PasswordSource::File(file.clone())),
    ];
    let resolved = resolve_passwords(&environments).await.expect("resolved");
    let passwords: Vec<&str> = resolved
        .iter()
        .map(|e| {
            assert!(e.password_source.is_none());
            e.connection
                .credentials
                .as_ref()
                .expect("credentials")
                .password
                .expose()
        })
        .collect();
    assert_eq!(passwords, ["from-command", "from-command", "from-file"]);
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "run\n");
    assert_eq!(
        format!("{:?}", PasswordSource::command(command)),
        "Command(***)"
    );

    let empty = vec![environment("d", PasswordSource::command("true"))];
    let error = resolve_passwords(&empty).await.expect_err("empty");
    assert_eq!(
        error.to_string(),
        "environment `d`: `password_command` gave an empty password"
    );
}

/// A loopback HTTP server answering each request with `answer(path)` (status line, body),
/// for at most `requests` requests and 30 s; its base URL.
fn serve(
    requests: usize,
    answer: impl Fn(&str) -> (&'static str, String) + Send + 'static,
) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/tenants", listener.local_addr().expect("addr"));
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut served = 0;
        while served < requests && std::time::Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            };
            served += 1;
            stream.set_nonblocking(false).expect("blocking");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (status, body) = answer(&path);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

async fn listing(source: &flotilla_coordinator::fleet::HttpSource) -> Result<usize, String> {
    use flotilla_coordinator::fleet::TenantSource;
    source
        .tenants()
        .await
        .map(|tenants| tenants.len())
        .map_err(|error| error.to_string())
}

/// An HTTP listing is bounded: a cursor seen before, a tenant listed on two pages and a page
/// over 16 MiB each end it with an error naming the page; a pause between attempts is at
/// most 5 s whatever backoff is configured; a bearer token is never sent over plain
/// `http://` to another machine (refused before anything connects); and the URL's query,
/// which may carry a key, is not printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_listing_is_bounded_and_keeps_its_secrets() {
    use flotilla_coordinator::fleet::HttpSource;
    let looping = serve(10, |_| {
        (
            "200 OK",
            r#"{"tenants": [], "next_cursor": "same"}"#.to_owned(),
        )
    });
    let error = listing(&HttpSource::new(looping, None))
        .await
        .expect_err("a cursor that repeats");
    assert!(error.contains("cursor seen before"), "{error}");

    let twice = serve(10, |path| {
        if path.contains("cursor=") {
            ("200 OK", r#"{"tenants": ["b", "a"]}"#.to_owned())
        } else {
            (
                "200 OK",
                r#"{"tenants": ["a"], "next_cursor": "p2"}"#.to_owned(),
            )
        }
    });
    let error = listing(&HttpSource::new(twice, None))
        .await
        .expect_err("a duplicate");
    assert!(
        error.contains("page 2: tenant `a` is listed twice"),
        "{error}"
    );

    let huge = serve(2, |_| {
        let padding = " ".repeat(17 << 20);
        ("200 OK", format!(r#"{{"tenants": []{padding}}}"#))
    });
    let error = listing(&HttpSource::new(huge, None))
        .await
        .expect_err("a page too big");
    assert!(error.contains("over 16 MiB"), "{error}");

    let busy = serve(5, |_| ("503 Service Unavailable", String::new()));
    let mut patient = HttpSource::new(busy, None);
    patient.attempts = 2;
    patient.backoff = std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    let error = listing(&patient).await.expect_err("always busy");
    assert!(error.contains("HTTP 503"), "{error}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the pause was not capped: {:?}",
        started.elapsed()
    );

    let token = flotilla_core::Secret::new("tok-3c1e");
    let error = listing(&HttpSource::new(
        "http://tenants.example/v1?api_key=key-77f0",
        Some(token),
    ))
    .await
    .expect_err("a token over plain http");
    assert!(error.contains("not sent over plain http://"), "{error}");
    assert!(
        !error.contains("key-77f0") && !error.contains("tok-3c1e"),
        "{error}"
    );
}

/// A source command's leading `NAME=value` words (a token for the lister) are never printed.
#[tokio::test]
async fn a_source_commands_assignments_are_never_printed() {
    use flotilla_coordinator::fleet::{CommandSource, TenantSource};
    let source = CommandSource {
        command: "API_TOKEN=tok-91ab ./no-such-lister --json".to_owned(),
        dir: std::env::temp_dir(),
        timeout: std::time::Duration::from_secs(10),
    };
    assert_eq!(source.describe(), "the command `./no-such-lister`");
    let error = source
        .tenants()
        .await
        .expect_err("no such lister")
        .to_string();
    assert!(!error.contains("tok-91ab"), "{error}");
}
