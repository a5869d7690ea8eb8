//! The control plane with real processes: the `flotilla` binary journaling to a control store
//! on a real SurrealDB server — killed with SIGKILL and resumed, three shards started at once,
//! a quiesce set while a parallel rollout runs — and on the embedded default store: the
//! quiesce TTL bounds, a deploy refused while quiesced, an audit line per target event.

#[path = "common/fleet.rs"]
mod fleet;

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_tests::{ROOT_PASS, TestServer};

use fleet::*;

/// `deploy` with the suite's short leases and timeouts, and `extra`.
fn deploy<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["deploy"];
    all.extend_from_slice(FAST);
    all.extend_from_slice(extra);
    all
}

/// `deployments show ID` as JSON.
fn show(project: &Project, id: &str) -> serde_json::Value {
    let (code, out) = project.run(&["deployments", "show", id, "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "deployment")
        .unwrap_or_else(|| panic!("no deployment in:\n{out}"))
}

fn environments_of(detail: &serde_json::Value) -> Vec<String> {
    detail["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["environment"].as_str().expect("environment").to_owned())
        .collect()
}

fn statuses(report: &serde_json::Value, status: &str) -> Vec<String> {
    report["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .filter(|e| e["status"] == status)
        .map(|e| e["environment"].as_str().expect("name").to_owned())
        .collect()
}

/// SIGKILL mid-rollout: the deployment shows as running while the dead run's lease lasts,
/// then as interrupted; `--resume` deploys exactly the targets that had not succeeded, each
/// migration lands once, and `deployments show` lists every target once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_mid_way_is_shown_interrupted_and_resume_finishes_it() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(
        &server.ws_url(),
        12,
        &[Migration::quick("0001"), Migration::slow("0002", "150ms")],
    )
    .shared_control(&server.ws_url());
    let extra = [
        "--all",
        "--strategy",
        "parallel",
        "--max-concurrent",
        "2",
        "--deployment-id",
        "killed-1",
    ];
    let mut first = project.spawn(&deploy(&extra));
    // Six done: the journal writes in batches at most 200 ms apart, so some are recorded.
    for _ in 0..6 {
        first.wait_for("a target succeeding", |v| is_event(v, "success"));
    }
    first.signal("KILL");
    first.wait(Duration::from_secs(10));

    let detail = show(&project, "killed-1");
    assert_eq!(
        detail["state"], "running",
        "alive while its lease lasts: {detail}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let detail = show(&project, "killed-1");
    assert_eq!(detail["state"], "interrupted", "{detail}");
    let succeeded_before: BTreeSet<String> = detail["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["status"] == "success")
        .map(|t| t["environment"].as_str().expect("name").to_owned())
        .collect();
    assert!(
        !succeeded_before.is_empty() && succeeded_before.len() < 12,
        "{detail}"
    );

    let (code, out) = project.run(&deploy(&["--resume", "killed-1", "--lock-timeout", "10s"]));
    assert_eq!(code, 0, "{out}");
    let report = report_of(&out);
    assert_eq!(report["deployment_id"], "killed-1");
    // Every target is planned again; pre-flight finds those that succeeded up to date.
    let applied_now = applied_by(&report);
    for name in &succeeded_before {
        assert_eq!(applied_now.get(name), Some(&0), "{name} again: {report}");
    }
    assert_eq!(statuses(&report, "success").len(), 12, "{report}");

    let figures = count(&project).await;
    assert_eq!(figures.applied, 12 * 2, "{figures:?}");
    assert_clean(&figures, &[&out]);
    let detail = show(&project, "killed-1");
    let mut listed = environments_of(&detail);
    let total = listed.len();
    listed.dedup();
    assert_eq!(
        (total, listed.len()),
        (12, 12),
        "every target once: {detail}"
    );
    assert_eq!(detail["state"], "succeeded", "{detail}");
    assert_eq!(detail["runs"].as_array().map(Vec::len), Some(2));
}

/// Each environment of `report` and how many migrations it applied.
fn applied_by(report: &serde_json::Value) -> std::collections::BTreeMap<String, usize> {
    report["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .map(|e| {
            (
                e["environment"].as_str().expect("name").to_owned(),
                e["applied"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

/// The journal says a tenant succeeded, but it was rolled back since: a resume reads the
/// targets' own history and applies it there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_trusts_the_targets_history_not_the_journal() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 3, &[Migration::quick("0001")])
        .shared_control(&server.ws_url());
    let (code, out) = project.run(&deploy(&["--all", "--deployment-id", "trust-1"]));
    assert_eq!(code, 0, "{out}");
    let (code, out) = project.run(&["rollback", "-e", "t1", "--steps", "1", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&project).await.applied, 2);

    let (code, out) = project.run(&deploy(&["--resume", "trust-1"]));
    assert_eq!(code, 0, "{out}");
    let applied = applied_by(&report_of(&out));
    assert_eq!(
        (applied["t0"], applied["t1"], applied["t2"]),
        (0, 1, 0),
        "{out}"
    );
    let figures = count(&project).await;
    assert_eq!(figures.applied, 3, "{figures:?}");
    assert_clean(&figures, &[&out]);
}

/// A resume right after a SIGKILL does not wait out the dead run's lease: its process is gone
/// from this host (pid and start time recorded). A live holder — stopped with SIGSTOP, so it
/// renews nothing — is waited for until its lease runs out; with a lock timeout shorter than
/// that, the resume is refused naming the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_crash_goes_on_at_once_and_waits_for_a_live_holder() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 3, &[Migration::slow("0001", "2s")])
        .shared_control(&server.ws_url());
    // Rehearsal on (it sleeps 2 s on a scratch database, holding no target's lock) and a
    // lease far longer than the test: only the host check can end the run's claim early.
    let mut args = deploy(&["--all", "--deployment-id", "crash-1"]);
    args.retain(|a| *a != "--no-rehearse");
    if let Some(at) = args.iter().position(|a| *a == "--lease") {
        args[at + 1] = "60s";
    }
    let mut first = project.spawn(&args);
    let recorded = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        project.run(&["deployments", "show", "crash-1"]).0 == 0
    });
    assert!(recorded, "the run never started");
    first.signal("KILL");
    first.wait(Duration::from_secs(10));
    assert_eq!(
        show(&project, "crash-1")["state"],
        "running",
        "its lease lasts a minute"
    );
    let started = std::time::Instant::now();
    let (code, out) = project.run(&deploy(&["--resume", "crash-1", "--lock-timeout", "50s"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the dead run's 60 s lease was waited out: {:?}",
        started.elapsed()
    );
    assert_eq!(count(&project).await.applied, 3);

    // A live holder: stopped, so it neither finishes nor renews.
    let project = project.add(&[Migration::slow("0002", "300ms")]);
    let mut holder = project.spawn(&deploy(&[
        "--all",
        "--deployment-id",
        "held-1",
        "--max-concurrent",
        "1",
    ]));
    holder.wait_for("a target starting", |v| is_event(v, "in_progress"));
    holder.signal("STOP");
    let (code, out) = project.run(&deploy(&["--resume", "held-1", "--lock-timeout", "300ms"]));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("held by run held-1.") && out.contains(&format!("pid {}", holder.pid())),
        "{out}"
    );
    // With a lock timeout beyond its 1 s lease, the resume waits for the lease, then goes on.
    let (code, out) = project.run(&deploy(&["--resume", "held-1", "--lock-timeout", "20s"]));
    holder.signal("KILL");
    holder.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "{out}");
    let figures = count(&project).await;
    assert_eq!(figures.applied, 6, "{figures:?}");
    assert_clean(&figures, &[&out]);
}

/// A deployment's plan is its fingerprint: a resume with a migration added or edited since,
/// or a shard joining with another strategy, is refused naming the difference (exit 2); an
/// id that exists is not reused without `--resume`; one live run per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_differs_or_an_id_taken_is_refused_naming_why() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 4, &[Migration::quick("0001")])
        .shared_control(&server.ws_url());
    let (code, out) = project.run(&deploy(&["--all", "--deployment-id", "plan-1"]));
    assert_eq!(code, 0, "{out}");

    let (code, out) = project.run(&deploy(&["--all", "--deployment-id", "plan-1"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("`plan-1` exists already"), "{out}");

    // The same newest version and count, but 0001 edited: the digest differs.
    std::fs::write(
        project.dir.path().join("migrations/0001_step.surql"),
        Migration::quick("0001").text() + "-- edited\n",
    )
    .expect("edit");
    let (code, out) = project.run(&deploy(&["--resume", "plan-1"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the migrations differ: 0001"), "{out}");
    // A gate's refusal reads as one: `refused` in the table, each environment named once.
    let (code, out) = project.run(&["deploy", "--all", "--no-rehearse"]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(out.matches(" refused ").count(), 4, "{out}");
    assert!(!out.contains("failed") && !out.contains("t0: t0:"), "{out}");
    assert_eq!(out.matches("t0: migration 0001").count(), 1, "{out}");

    std::fs::write(
        project.dir.path().join("migrations/0001_step.surql"),
        Migration::quick("0001").text(),
    )
    .expect("restore");
    let (code, out) = project.run(&deploy(&["--resume", "no-such"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no deployment `no-such`"), "{out}");

    let project = project.add(&[Migration::slow("0002", "400ms")]);
    let shard = |index: &'static str, strategy: &'static str| {
        deploy(&[
            "--all",
            "--deployment-id",
            "plan-2",
            "--shard",
            index,
            "--strategy",
            strategy,
            "--lock-timeout",
            "300ms",
        ])
    };
    let mut first = project.spawn(&shard("0/2", "sequential"));
    first.wait_for("a target starting", |v| is_event(v, "in_progress"));
    let (code, out) = project.run(&shard("1/2", "parallel"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the strategy differ"), "{out}");
    let (code, out) = project.run(&shard("0/2", "sequential"));
    assert_eq!(code, 3, "one live run per shard: {out}");
    assert!(
        out.contains("shard 0/2 of deployment `plan-2` is held by run"),
        "{out}"
    );
    assert_eq!(first.wait(Duration::from_secs(60)), 0, "{}", first.output());
    let (code, out) = project.run(&shard("1/2", "sequential"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&project).await.applied, 8);
}

/// Eight deploys started together from one project directory on the embedded control store
/// take turns: each waits for the one before (bounded by its lock timeout), every one exits
/// 0, and every migration lands once. A deploy that cannot wait long enough is refused
/// naming the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_on_the_embedded_store_take_turns() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 3, &[Migration::quick("0001")]);
    let mut running: Vec<Running> = (0..8)
        .map(|_| project.spawn(&deploy(&["--all", "--lock-timeout", "120s"])))
        .collect();
    for deploy in &mut running {
        assert_eq!(
            deploy.wait(Duration::from_secs(150)),
            0,
            "{}",
            deploy.output()
        );
    }
    let figures = count(&project).await;
    assert_eq!(figures.applied, 3, "{figures:?}");
    assert!(figures.clean(), "{figures:?}");
    let (code, out) = project.run(&["deployments", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("\"type\":\"deployment\"").count(), 8, "{out}");

    let project = project.add(&[Migration::slow("0002", "1s")]);
    let mut holder = project.spawn(&deploy(&["--all", "--max-concurrent", "1"]));
    holder.wait_for("a target starting", |v| is_event(v, "in_progress"));
    let (code, out) = project.run(&deploy(&["--all", "--lock-timeout", "200ms"]));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("is in use by") && out.contains(&format!("pid {}", holder.pid())),
        "{out}"
    );
    assert_eq!(
        holder.wait(Duration::from_secs(60)),
        0,
        "{}",
        holder.output()
    );
}

/// Three processes, shards 0/3, 1/3 and 2/3 of one deployment, started at once over 30
/// targets: together they deploy every target, none twice, under one deployment id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_at_once_cover_the_fleet_once_under_one_id() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(
        &server.ws_url(),
        30,
        &[Migration::quick("0001"), Migration::quick("0002")],
    )
    .shared_control(&server.ws_url());
    let shards = ["0/3", "1/3", "2/3"];
    let mut running: Vec<Running> = shards
        .iter()
        .map(|shard| {
            project.spawn(&deploy(&[
                "--all",
                "--strategy",
                "parallel",
                "--max-concurrent",
                "4",
                "--deployment-id",
                "sharded-1",
                "--shard",
                shard,
            ]))
        })
        .collect();
    let mut union = Vec::new();
    for (process, shard) in running.iter_mut().zip(shards) {
        let code = process.wait(Duration::from_secs(120));
        assert_eq!(code, 0, "shard {shard}: {}", process.output());
        let report = process.report().expect("report");
        assert_eq!(report["deployment_id"], "sharded-1");
        let mine = statuses(&report, "success");
        assert_eq!(
            mine.len(),
            report["environments"].as_array().map_or(0, Vec::len)
        );
        assert!(!mine.is_empty(), "shard {shard} had a share");
        union.extend(mine);
    }
    let total = union.len();
    union.sort_unstable();
    union.dedup();
    assert_eq!(
        (total, union.len()),
        (30, 30),
        "no overlap, nothing missed: {union:?}"
    );
    let figures = count(&project).await;
    assert_eq!(figures.applied, 30 * 2, "{figures:?}");
    assert!(figures.clean(), "{figures:?}");
    let detail = show(&project, "sharded-1");
    assert_eq!(detail["runs"].as_array().map(Vec::len), Some(3), "{detail}");
    assert_eq!(environments_of(&detail).len(), 30);
    assert_eq!(detail["state"], "succeeded");
}

/// `quiesce set` from another process while a parallel rollout runs: the rollout starts no
/// further target, those running finish, it exits 3 as paused and rolls nothing back; once
/// cleared, `--resume` finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiesce_set_during_a_parallel_rollout_stops_new_targets() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 20, &[Migration::slow("0001", "200ms")])
        .shared_control(&server.ws_url());
    let extra = [
        "--all",
        "--strategy",
        "parallel",
        "--max-concurrent",
        "2",
        "--deployment-id",
        "quiet-1",
    ];
    let mut rollout = project.spawn(&deploy(&extra));
    rollout.wait_for("a target succeeding", |v| is_event(v, "success"));
    let (code, out) = project.run(&["quiesce", "set", "--ttl", "5m", "--reason", "incident 42"]);
    assert_eq!(code, 0, "{out}");
    let code = rollout.wait(Duration::from_secs(60));
    assert_eq!(code, 3, "{}", rollout.output());
    let report = rollout.report().expect("report");
    assert_eq!(report["outcome"], "paused", "{report}");
    let done = statuses(&report, "success");
    let skipped = statuses(&report, "skipped");
    assert!(
        done.len() < 10 && skipped.len() > 10,
        "stopped within a target's time: {report}"
    );
    assert!(
        report["environments"]
            .as_array()
            .expect("list")
            .iter()
            .all(|e| e["rolled_back"].as_array().is_some_and(Vec::is_empty))
    );
    let figures = count(&project).await;
    assert_eq!(figures.applied, done.len(), "{figures:?}");
    assert!(figures.clean(), "{figures:?}");

    let (code, out) = project.run(&deploy(&["--resume", "quiet-1"]));
    assert_eq!(code, 3, "still quiesced: {out}");
    assert!(out.contains("incident 42"), "{out}");
    let (code, out) = project.run(&["quiesce", "clear"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = project.run(&deploy(&["--resume", "quiet-1"]));
    assert_eq!(code, 0, "{out}");
    let figures = count(&project).await;
    assert_eq!(figures.applied, 20, "{figures:?}");
    assert!(figures.clean(), "{figures:?}");
    assert!(!out.contains(ROOT_PASS));
}

/// On the embedded default store: the TTL's bounds, a deploy refused while quiesced naming
/// the reason, who and the expiry, and one JSON line in the audit log per target event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_bounds_refusal_and_the_audit_log_on_the_embedded_store() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 3, &[Migration::quick("0001")]);
    for (ttl, says) in [
        ("0s", "more than 0s"),
        ("3h", "at most 2h"),
        ("121m", "at most 2h"),
    ] {
        let (code, out) = project.run(&["quiesce", "set", "--ttl", ttl, "--reason", "x"]);
        assert_eq!(code, 2, "{ttl}: {out}");
        assert!(out.contains(says), "{ttl}: {out}");
    }
    let (code, out) = project.run(&["quiesce", "set", "--ttl", "-5m", "--reason", "x"]);
    assert_eq!(code, 2, "a negative TTL: {out}");
    let (code, out) = project.run(&["quiesce", "status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("not quiesced"),
        "refused TTLs set nothing: {out}"
    );

    let (code, out) = project.run(&["quiesce", "set", "--reason", "db upgrade"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = project.run(&deploy(&["--all"]));
    assert_eq!(code, 3, "{out}");
    let report = report_of(&out);
    let reason = report["refusal"]["reasons"][0].as_str().expect("reason");
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    assert!(
        reason.contains("db upgrade") && reason.contains(&user) && reason.contains("until"),
        "{reason}"
    );
    assert_eq!(count(&project).await.applied, 0);
    let (code, _) = project.run(&["quiesce", "clear"]);
    assert_eq!(code, 0);

    let log = project.dir.path().join("audit.jsonl");
    let log_arg = log.to_str().expect("path");
    let (code, out) = project.run(&deploy(&[
        "--all",
        "--audit-log",
        log_arg,
        "--deployment-id",
        "audited-1",
    ]));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let of = |event: &str| {
        lines
            .iter()
            .filter(|l| l["event"] == event)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("deployment_started").len(), 1);
    assert_eq!(of("target_started").len(), 3);
    assert_eq!(of("target_finished").len(), 3);
    assert_eq!(of("deployment_finished").len(), 1);
    for line in of("target_finished") {
        assert_eq!(line["deployment_id"], "audited-1");
        assert_eq!(line["outcome"], "success");
        assert_eq!(line["versions"], serde_json::json!(["0001"]));
        assert!(
            line["actor"]["host"].is_string() && line["at"].is_string(),
            "{line}"
        );
    }
    assert!(
        !std::fs::read_to_string(&log)
            .expect("log")
            .contains(ROOT_PASS)
    );
    let (code, out) = project.run(&["deployments", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audited-1"), "{out}");
}

/// A control store that cannot be reached is an error at the start (exit 1), naming it;
/// nothing is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_control_store_stops_the_deploy_before_anything_runs() {
    let server = TestServer::start_beside_tests();
    let closed = format!("ws://127.0.0.1:{}", flotilla_tests::free_port());
    let project =
        Project::new(&server.ws_url(), 2, &[Migration::quick("0001")]).shared_control(&closed);
    let (code, out) = project.run(&deploy(&["--all"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("control store") && out.contains(&closed),
        "{out}"
    );
    assert_eq!(count(&project).await.applied, 0);
    assert!(!out.contains(ROOT_PASS));
}

/// `--shard-from-env` takes the shard from Kubernetes' Indexed Job variables; without them
/// it is a usage error naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_comes_from_an_indexed_jobs_variables() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 8, &[Migration::quick("0001")]);
    let args = deploy(&["--all", "--shard-from-env", "--deployment-id", "job-1"]);
    let (code, out) = project.run(&args);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("JOB_COMPLETION_INDEX"), "{out}");
    let mut union = Vec::new();
    for index in ["0", "1"] {
        let mut command = project.command(&args);
        command
            .env("JOB_COMPLETION_INDEX", index)
            .env("JOB_COMPLETIONS", "2");
        let mut running = Running::spawn(command);
        assert_eq!(
            running.wait(Duration::from_secs(60)),
            0,
            "{}",
            running.output()
        );
        let report = running.report().expect("report");
        union.extend(statuses(&report, "success"));
    }
    union.sort_unstable();
    union.dedup();
    assert_eq!(union.len(), 8, "{union:?}");
    assert_eq!(count(&project).await.applied, 8);
}

/// The namespaces on `server`, as its root user lists them.
async fn namespaces(server: &TestServer) -> Vec<String> {
    let runner = flotilla_surrealdb::SurrealRunner::new();
    let target = flotilla_runner::Target::new(
        "root",
        flotilla_core::Connection::new(server.ws_url(), "unused", "unused").with_credentials(
            flotilla_tests::ROOT_USER,
            ROOT_PASS,
            flotilla_core::AuthLevel::Root,
        ),
    );
    let session = runner.session(&target).await.expect("session");
    let mut reply = session.query("INFO FOR ROOT").await.expect("info");
    let info = reply
        .take::<surrealdb::types::Value>(0)
        .map(surrealdb::types::Value::into_json_value)
        .expect("info");
    info["namespaces"]
        .as_object()
        .map(|names| names.keys().cloned().collect())
        .unwrap_or_default()
}

/// `status`, `history`, `validate -e`, `lock status` and `deploy --dry-run` (with its health
/// probes and rehearsal's schema copy) leave the server as they found it: no namespace, no
/// database, no table; a missing one reads as not initialised. Only a deploy that applies
/// something creates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_create_nothing_on_the_server() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 3, &[Migration::quick("0001")]);
    let commands: [&[&str]; 6] = [
        &["status", "--all"],
        &["history", "-e", "t0"],
        &["validate", "-e", "t1"],
        &["lock", "status", "-e", "t2"],
        &["deploy", "--all", "--dry-run"],
        &["deploy", "--all", "--dry-run", "--output", "json"],
    ];
    let mut said = String::new();
    for args in commands {
        let (code, out) = project.run(args);
        assert_eq!(code, 0, "{args:?}: {out}");
        said.push_str(&out);
    }
    assert!(
        !namespaces(&server).await.contains(&project.namespace),
        "a read-only command created {}:\n{said}",
        project.namespace
    );
    let (code, out) = project.run(&["status", "--all", "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.matches("\"version\":null").count(),
        3,
        "not initialised: {out}"
    );

    let (code, out) = project.run(&deploy(&["--all"]));
    assert_eq!(code, 0, "{out}");
    assert!(namespaces(&server).await.contains(&project.namespace));
    assert_eq!(count(&project).await.applied, 3);
}

/// What a hook wrote on standard error is quoted in the report with every password flotilla
/// knows scrubbed: a hook that echoes one leaks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooks_stderr_is_scrubbed_of_known_passwords() {
    let server = TestServer::start_beside_tests();
    let project = Project::new(&server.ws_url(), 2, &[Migration::quick("0001")]);
    let hook = format!("echo \"leaked ${PASSWORD_VARIABLE}\" >&2; exit 1");
    let (code, out) = project.run(&deploy(&["--all", "--on-tenant", &hook]));
    assert_eq!(code, 0, "a failing hook changes no outcome: {out}");
    assert!(out.contains("leaked ***"), "{out}");
    assert!(!out.contains(ROOT_PASS), "{out}");
}
