//! The fault suite: the `flotilla` binary as a real process against a real SurrealDB server,
//! with real signals (SIGKILL, SIGSTOP, SIGINT, SIGTERM), a server killed and restarted, a
//! reply lost on the wire, an endpoint that never answers, and eight deployers at once.
//!
//! Every scenario ends by counting, per target, each migration's side effects (every
//! migration writes two records, so half of one shows as one), its history row, and what is
//! left of the lock: half-applied 0, applied twice 0, leases left 0. `FLOTILLA_FAULT_ROUNDS`
//! repeats each scenario (1 by default); docs/reliability.md has the figures.

#[path = "common/fleet.rs"]
mod fleet;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_runner::MigrationRunner;
use flotilla_surrealdb::SurrealRunner;
use flotilla_tests::{LossyProxy, ROOT_PASS, SilentEndpoint, TestServer};

use fleet::*;

fn rounds() -> usize {
    std::env::var("FLOTILLA_FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(1)
}

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    dir.join(format!(
        "flotilla-test-server{}",
        std::env::consts::EXE_SUFFIX
    ))
}

/// SIGKILL in the middle of a deploy, then the same deploy again: it waits out the dead
/// process's leases and finishes; every migration once, nothing half, no lease left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotilla_killed_mid_deploy_then_rerun() {
    let server = TestServer::start_beside_tests();
    for round in 0..rounds() {
        let project = Project::new(
            &server.ws_url(),
            6,
            &[
                Migration::quick(&format!("{round}001")),
                Migration::slow(&format!("{round}002"), "800ms"),
                Migration::quick(&format!("{round}003")),
            ],
        );
        let mut first = project.spawn(&args(&["--strategy", "parallel", "--max-concurrent", "3"]));
        first.wait_for("a target in progress", |v| is_event(v, "in_progress"));
        std::thread::sleep(Duration::from_millis(400));
        first.signal("KILL");
        first.wait(Duration::from_secs(10));
        let (code, out) = project.run(&args(&["--strategy", "parallel", "--max-concurrent", "3"]));
        assert_eq!(code, 0, "{out}");
        let figures = count(&project).await;
        assert_eq!(figures.applied, 6 * 3, "{figures:?}");
        assert_clean(&figures, &[&first.output(), &out]);
    }
}

/// The server is killed (SIGKILL) while migrations run and restarted with its data; the
/// deploy in flight ends — never hangs — and a rerun finishes: every migration once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_migration_restarted_then_rerun() {
    let data = tempfile::tempdir().expect("tempdir");
    let storage = format!("surrealkv://{}", data.path().join("db").display());
    let mut server =
        TestServer::start_with(&server_binary(), &storage, flotilla_tests::free_port());
    for round in 0..rounds() {
        let project = Project::new(
            &server.ws_url(),
            4,
            &[
                Migration::quick(&format!("{round}001")),
                Migration::slow(&format!("{round}002"), "2s"),
            ],
        );
        let mut deploy = project.spawn(&args(&["--strategy", "parallel", "--max-concurrent", "4"]));
        deploy.wait_for("a target in progress", |v| is_event(v, "in_progress"));
        std::thread::sleep(Duration::from_millis(700));
        server.kill();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        let code = deploy.wait(Duration::from_secs(120));
        assert_ne!(code, 0, "{}", deploy.output());
        let (code, out) = project.run(&args(&["--strategy", "parallel", "--max-concurrent", "4"]));
        assert_eq!(code, 0, "{out}");
        let figures = count(&project).await;
        assert_eq!(figures.applied, 4 * 2, "{figures:?}");
        assert_clean(&figures, &[&deploy.output(), &out]);
    }
}

/// A deployer is stopped (SIGSTOP) in the middle of a migration for longer than its lease;
/// another deployer takes the lock over and finishes the job; the first, continued, commits
/// nothing more — not even the migration it was running — and says its lock was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_stopped_past_its_lease_commits_nothing_more() {
    let server = TestServer::start_beside_tests();
    for round in 0..rounds() {
        let project = Project::new(
            &server.ws_url(),
            1,
            &[
                Migration::quick(&format!("{round}001")),
                Migration::slow(&format!("{round}002"), "2500ms"),
                Migration::quick(&format!("{round}003")),
            ],
        )
        .shared_control(&server.ws_url());
        let mut first = project.spawn(&args(&[]));
        first.wait_for("the target in progress", |v| is_event(v, "in_progress"));
        std::thread::sleep(Duration::from_millis(300));
        first.signal("STOP");
        // Past the one-second lease, which nobody renews now.
        std::thread::sleep(Duration::from_millis(1800));
        let (code, second) = project.run(&args(&["--lock-timeout", "30s"]));
        assert_eq!(
            code, 0,
            "the second deployer takes over and finishes: {second}"
        );
        let report = report_of(&second);
        assert!(
            !report["environments"][0]["lock_takeover"].is_null(),
            "the takeover is reported: {report}"
        );
        first.signal("CONT");
        let first_code = first.wait(Duration::from_secs(60));
        assert_ne!(first_code, 0, "{}", first.output());
        let figures = count(&project).await;
        assert_eq!(figures.applied, 3, "{figures:?}");
        assert_clean(&figures, &[&first.output(), &second]);
        // Nothing after the first migration carries the stopped process's name.
        let history = SurrealRunner::new()
            .history(&project.target(0))
            .await
            .expect("history");
        let pid = format!("pid {}", first.pid());
        let by_first: Vec<String> = history
            .iter()
            .filter(|r| r.applied_by.as_deref().is_some_and(|b| b.contains(&pid)))
            .map(|r| r.version.to_string())
            .collect();
        assert!(
            by_first.iter().all(|v| v.ends_with("001")),
            "the stopped deployer committed {by_first:?} after losing its lease"
        );
    }
}

/// Eight deployers started at once on one fleet: all succeed, each migration runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_deployers_at_once() {
    let server = TestServer::start_beside_tests();
    for round in 0..rounds() {
        let project = Project::new(
            &server.ws_url(),
            10,
            &[
                Migration::quick(&format!("{round}001")),
                Migration::slow(&format!("{round}002"), "200ms"),
                Migration::quick(&format!("{round}003")),
            ],
        )
        .shared_control(&server.ws_url());
        let extra = [
            "--strategy",
            "parallel",
            "--max-concurrent",
            "4",
            "--lock-timeout",
            "60s",
        ];
        let mut all: Vec<Running> = (0..8).map(|_| project.spawn(&args(&extra))).collect();
        let mut outputs = Vec::new();
        for running in &mut all {
            let code = running.wait(Duration::from_secs(180));
            assert_eq!(code, 0, "{}", running.output());
            outputs.push(running.output());
        }
        let figures = count(&project).await;
        assert_eq!(figures.applied, 10 * 3, "{figures:?}");
        let shown: Vec<&str> = outputs.iter().map(String::as_str).collect();
        assert_clean(&figures, &shown);
    }
}

/// A final migration longer than the lease, on targets already migrated before: it commits
/// once, first time, while the heartbeat renews the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_migration_longer_than_the_lease() {
    let server = TestServer::start_beside_tests();
    for round in 0..rounds() {
        let project = Project::new(
            &server.ws_url(),
            2,
            &[Migration::quick(&format!("{round}001"))],
        );
        let (code, out) = project.run(&args(&[]));
        assert_eq!(code, 0, "{out}");
        let project = project.add(&[Migration::slow(&format!("{round}002"), "3s")]);
        let (code, out) = project.run(&args(&["--strategy", "parallel"]));
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("conflict"), "{out}");
        let figures = count(&project).await;
        assert_eq!(figures.applied, 2 * 2, "{figures:?}");
        assert_clean(&figures, &[&out]);
    }
}

/// Ctrl-C (SIGINT) in the middle of a rollout: no new target starts, the running one
/// finishes, what the deploy applied is rolled back, every lease is released, the report is
/// printed, and flotilla exits 130. SIGTERM does the same with 143. A rerun then finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_sigterm_stop_gracefully() {
    let server = TestServer::start_beside_tests();
    for round in 0..rounds() {
        for (signal, expected) in [("INT", 130), ("TERM", 143)] {
            let project = Project::new(
                &server.ws_url(),
                6,
                &[Migration::slow(&format!("{round}001"), "400ms")],
            );
            let mut deploy = project.spawn(&args(&[]));
            deploy.wait_for("the first target done", |v| is_event(v, "success"));
            deploy.signal(signal);
            let code = deploy.wait(Duration::from_secs(60));
            assert_eq!(code, expected, "{}", deploy.output());
            let report = deploy.report().expect("the report is printed");
            assert_eq!(report["interrupted"], true, "{report}");
            let statuses: Vec<&str> = report["environments"]
                .as_array()
                .expect("environments")
                .iter()
                .map(|e| e["status"].as_str().unwrap_or_default())
                .collect();
            assert!(statuses.contains(&"skipped"), "{statuses:?}");
            assert!(
                statuses
                    .iter()
                    .all(|s| ["rolled_back", "skipped"].contains(s)),
                "{statuses:?}\n{}",
                deploy.output()
            );
            let figures = count(&project).await;
            assert_eq!(figures.applied, 0, "rolled back: {figures:?}");
            assert_clean(&figures, &[&deploy.output()]);
            let (code, out) = project.run(&args(&[]));
            assert_eq!(code, 0, "{out}");
            let figures = count(&project).await;
            assert_eq!(figures.applied, 6, "{figures:?}");
            assert_clean(&figures, &[&out]);
        }
    }
}

/// A second Ctrl-C exits at once, even while a long migration runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 1, &[Migration::slow("0001", "20s")]);
    let mut deploy = project.spawn(&args(&[]));
    deploy.wait_for("the target in progress", |v| is_event(v, "in_progress"));
    deploy.signal("INT");
    std::thread::sleep(Duration::from_millis(200));
    deploy.signal("INT");
    let started = Instant::now();
    let code = deploy.wait(Duration::from_secs(10));
    assert_eq!(code, 130, "{}", deploy.output());
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The reply to a migration request is lost on the wire after the request reached the
/// server (a proxy drops the connection instead of passing the answer back): flotilla reads
/// history back, reports exactly what committed, and nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_commit_is_settled_from_history() {
    let server = TestServer::start_beside_tests();
    for round in 0..rounds() {
        let proxy = LossyProxy::start(server.addr(), "CREATE effect", Duration::from_millis(1500));
        let project = Project::new(
            &proxy.ws_url(),
            2,
            &[
                Migration::quick(&format!("{round}001")),
                Migration::quick(&format!("{round}002")),
            ],
        );
        // One target at a time: the dropped connection is shared, and a second target's
        // request in flight on it would fail too (correctly, but not what this is about).
        let (code, out) = project.run(&args(&[]));
        assert_eq!(proxy.fired(), 1, "the proxy lost a reply: {out}");
        assert_eq!(code, 0, "{out}");
        let report = report_of(&out);
        for environment in report["environments"].as_array().expect("environments") {
            assert_eq!(
                environment["applied"].as_array().map(Vec::len),
                Some(2),
                "{environment}"
            );
        }
        let figures = count(&project).await;
        assert_eq!(figures.applied, 2 * 2, "{figures:?}");
        assert_clean(&figures, &[&out]);
    }
}

/// Twenty targets on an endpoint that accepts connections and never answers: the deploy is
/// refused by its health gate after about one connect timeout, having connected once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers() {
    let silent = SilentEndpoint::start();
    let project = Project::new(&silent.ws_url(), 20, &[Migration::quick("0001")]);
    let started = Instant::now();
    let (code, out) = project.run(&[
        "deploy",
        "--all",
        "--connect-timeout",
        "2s",
        "--request-timeout",
        "2s",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("t19") && out.contains("did not answer"),
        "{out}"
    );
    assert!(silent.accepted() <= 2, "{} connections", silent.accepted());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(!out.contains(ROOT_PASS));
}
