//! The fault suite: the `flotilla` binary as a real process against a real SurrealDB server,
//! with real signals (SIGKILL, SIGSTOP, SIGINT, SIGTERM), a server killed and restarted, a
//! reply lost on the wire, an endpoint that never answers, and eight deployers at once.
//!
//! Every scenario ends by counting, per target, each migration's side effects (every
//! migration writes two records, so half of one shows as one), its history row, and what is
//! left of the lock: half-applied 0, applied twice 0, leases left 0. `FLOTILLA_FAULT_ROUNDS`
//! repeats each scenario (1 by default); docs/reliability.md has the figures.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flotilla_core::{AuthLevel, Connection};
use flotilla_runner::{MigrationRunner, Target};
use flotilla_surrealdb::SurrealRunner;
use flotilla_tests::{LossyProxy, ROOT_PASS, ROOT_USER, SilentEndpoint, TestServer, send_signal};

/// The password every scenario's configuration takes from the environment: it must never
/// appear in any output.
const PASSWORD_VARIABLE: &str = "FAULT_DB_PASSWORD";

fn rounds() -> usize {
    std::env::var("FLOTILLA_FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(1)
}

/// A project on disk: `targets` environments on one server, `t0` … `tN`, and migrations.
struct Project {
    dir: tempfile::TempDir,
    url: String,
    namespace: String,
    targets: usize,
    migrations: Vec<Migration>,
}

/// One migration: its side effects are two records, with a pause between them.
#[derive(Clone)]
struct Migration {
    version: String,
    sleep: Option<&'static str>,
}

impl Migration {
    fn quick(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            sleep: None,
        }
    }

    fn slow(version: &str, sleep: &'static str) -> Self {
        Self {
            version: version.to_owned(),
            sleep: Some(sleep),
        }
    }

    fn text(&self) -> String {
        let v = &self.version;
        let pause = self
            .sleep
            .map(|s| format!("SLEEP {s};\n"))
            .unwrap_or_default();
        format!(
            "-- @up\nCREATE effect SET migration = '{v}', part = 1;\n{pause}CREATE effect SET migration = '{v}', part = 2;\n-- @down\nDELETE effect WHERE migration = '{v}';\n"
        )
    }
}

impl Project {
    fn new(url: &str, targets: usize, migrations: &[Migration]) -> Self {
        static PROJECTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let namespace = format!(
            "faults_{}",
            PROJECTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = String::from("migrations = \"migrations\"\n");
        for i in 0..targets {
            config.push_str(&format!(
                "[[environments]]\nname = \"t{i}\"\nurl = \"{url}\"\nnamespace = \"{namespace}\"\ndatabase = \"t{i}\"\nusername = \"{ROOT_USER}\"\npassword = \"${{{PASSWORD_VARIABLE}}}\"\n\n"
            ));
        }
        std::fs::write(dir.path().join("flotilla.toml"), config).expect("config");
        std::fs::create_dir_all(dir.path().join("migrations")).expect("migrations dir");
        let project = Self {
            dir,
            url: url.to_owned(),
            namespace,
            targets,
            migrations: Vec::new(),
        };
        project.add(migrations)
    }

    /// Journals to a control store on the server at `url` — as teams running deployers
    /// side by side do: the embedded default serves one process at a time.
    fn shared_control(self, url: &str) -> Self {
        let path = self.dir.path().join("flotilla.toml");
        let mut config = std::fs::read_to_string(&path).expect("config");
        config.push_str(&format!(
            "[control]\nurl = \"{url}\"\nnamespace = \"{}_control\"\nusername = \"{ROOT_USER}\"\npassword = \"${{{PASSWORD_VARIABLE}}}\"\n",
            self.namespace
        ));
        std::fs::write(path, config).expect("config");
        self
    }

    fn add(mut self, migrations: &[Migration]) -> Self {
        for migration in migrations {
            std::fs::write(
                self.dir
                    .path()
                    .join(format!("migrations/{}_step.surql", migration.version)),
                migration.text(),
            )
            .expect("migration");
            self.migrations.push(migration.clone());
        }
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command
            .current_dir(self.dir.path())
            .args(args)
            .env(PASSWORD_VARIABLE, ROOT_PASS)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    /// Runs flotilla to the end (bounded); exit code and everything it printed.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let mut running = self.spawn(args);
        let code = running.wait(Duration::from_secs(180));
        (code, running.output())
    }

    fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args))
    }

    fn target(&self, i: usize) -> Target {
        Target::new(
            format!("t{i}"),
            Connection::new(self.url.as_str(), self.namespace.as_str(), format!("t{i}"))
                .with_credentials(ROOT_USER, ROOT_PASS, AuthLevel::Root),
        )
    }
}

/// A flotilla process whose stdout lines are collected as they come. Killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let stderr_dir = tempfile::tempdir().expect("tempdir");
        let stderr = stderr_dir.path().join("stderr");
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn flotilla");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            _stderr_dir: stderr_dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a JSON event line for which `wanted` holds.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let matched = serde_json::from_str(&line).is_ok_and(|v| wanted(&v));
                    self.seen.push(line);
                    if matched {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("never saw {what}; output:\n{}", self.output());
    }

    /// Waits (bounded) for the process to exit; its exit code, or 128 + signal.
    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.drain();
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "flotilla did not exit within {limit:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn drain(&mut self) {
        // The reader thread ends with the process; give it a moment to hand over the rest.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn output(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{}\n{stderr}", self.seen.join("\n"))
    }

    /// The final JSON report, if it printed one.
    fn report(&self) -> Option<serde_json::Value> {
        self.seen
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|v| v["type"] == "report")
    }

    fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        send_signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON report among `output`'s lines.
fn report_of(output: &str) -> serde_json::Value {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "report")
        .unwrap_or_else(|| panic!("no report in:\n{output}"))
}

fn is_event(value: &serde_json::Value, status: &str) -> bool {
    value["type"] == "event" && value["event"]["status"] == status
}

/// What the fleet holds, counted from the database.
#[derive(Debug, Default, PartialEq, Eq)]
struct Figures {
    /// Migrations with one of their two side effects, or effects without a history row.
    half_applied: usize,
    /// Migrations whose side effects are there more than once.
    double_applied: usize,
    /// Lock or lease records left behind.
    leases_left: usize,
    /// Migrations applied (history rows).
    applied: usize,
}

impl Figures {
    fn clean(&self) -> bool {
        self.half_applied == 0 && self.double_applied == 0 && self.leases_left == 0
    }
}

/// Counts `project`'s fleet, retrying while the server comes back.
async fn count(project: &Project) -> Figures {
    let runner = SurrealRunner::new();
    let mut figures = Figures::default();
    for i in 0..project.targets {
        let target = project.target(i);
        let history = retry(|| runner.history(&target)).await;
        let applied: Vec<String> = history.iter().map(|r| r.version.to_string()).collect();
        let session = retry(|| runner.session(&target)).await;
        let mut reply = session
            .query("SELECT migration, count() AS n FROM effect GROUP BY migration; SELECT count() AS n FROM _migration_lock GROUP ALL; SELECT count() AS n FROM _migration_lease GROUP ALL;")
            .await
            .expect("count");
        let effects: Vec<serde_json::Value> = take(&mut reply, 0);
        let per_migration: BTreeMap<String, u64> = effects
            .iter()
            .filter_map(|row| Some((row["migration"].as_str()?.to_owned(), row["n"].as_u64()?)))
            .collect();
        for migration in &project.migrations {
            let effects = per_migration.get(&migration.version).copied().unwrap_or(0);
            let recorded = applied.contains(&migration.version);
            match (recorded, effects) {
                (true, 2) | (false, 0) => {}
                (_, n) if n > 2 => figures.double_applied += 1,
                _ => figures.half_applied += 1,
            }
        }
        figures.applied += applied.len();
        for index in [1, 2] {
            let rows: Vec<serde_json::Value> = take(&mut reply, index);
            figures.leases_left += rows
                .first()
                .and_then(|r| r["n"].as_u64())
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
    figures
}

fn take(reply: &mut surrealdb::IndexedResults, index: usize) -> Vec<serde_json::Value> {
    reply
        .take::<surrealdb::types::Value>(index)
        .map(surrealdb::types::Value::into_json_value)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

async fn retry<T, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = flotilla_runner::Result<T>>,
{
    let mut last = None;
    for _ in 0..80 {
        match attempt().await {
            Ok(value) => return value,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("never succeeded: {last:?}");
}

/// Asserts `figures` are clean and `output` never shows the password.
fn assert_clean(figures: &Figures, outputs: &[&str]) {
    assert!(figures.clean(), "{figures:?}");
    for output in outputs {
        assert!(
            !output.contains(ROOT_PASS),
            "the password printed:\n{output}"
        );
    }
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

/// Short leases and timeouts so faults show quickly; no rehearsal, which would sleep through
/// the slow migrations on a scratch database too — these tests are about the fleet.
const FAST: &[&str] = &[
    "--no-rehearse",
    "--output",
    "json",
    "--lease",
    "1s",
    "--request-timeout",
    "3s",
    "--connect-timeout",
    "3s",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all: Vec<&str> = vec!["deploy", "--all"];
    all.extend_from_slice(FAST);
    all.extend_from_slice(extra);
    all
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
