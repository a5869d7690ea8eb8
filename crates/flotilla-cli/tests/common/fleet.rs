//! A fleet on a real SurrealDB server for tests that run the `flotilla` binary as real
//! processes: a project of targets and migrations whose side effects can be counted, a
//! running process whose JSON lines are collected, and the counting itself (half-applied,
//! applied twice, leases left). Shared by the fault suite and the control-plane tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flotilla_core::{AuthLevel, Connection};
use flotilla_runner::{MigrationRunner, Target};
use flotilla_surrealdb::SurrealRunner;
use flotilla_tests::{ROOT_PASS, ROOT_USER, send_signal};

/// The password every project's configuration takes from the environment: it must never
/// appear in any output.
pub(crate) const PASSWORD_VARIABLE: &str = "FAULT_DB_PASSWORD";

/// A project on disk: `targets` environments on one server, `t0` … `tN`, and migrations.
pub(crate) struct Project {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) targets: usize,
    pub(crate) migrations: Vec<Migration>,
}

/// One migration: its side effects are two records, with a pause between them.
#[derive(Clone)]
pub(crate) struct Migration {
    pub(crate) version: String,
    pub(crate) sleep: Option<&'static str>,
}

impl Migration {
    pub(crate) fn quick(version: &str) -> Self {
        Self {
            version: version.to_owned(),
            sleep: None,
        }
    }

    pub(crate) fn slow(version: &str, sleep: &'static str) -> Self {
        Self {
            version: version.to_owned(),
            sleep: Some(sleep),
        }
    }

    pub(crate) fn text(&self) -> String {
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
    pub(crate) fn new(url: &str, targets: usize, migrations: &[Migration]) -> Self {
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
    pub(crate) fn shared_control(self, url: &str) -> Self {
        let path = self.dir.path().join("flotilla.toml");
        let mut config = std::fs::read_to_string(&path).expect("config");
        config.push_str(&format!(
            "[control]\nurl = \"{url}\"\nnamespace = \"{}_control\"\nusername = \"{ROOT_USER}\"\npassword = \"${{{PASSWORD_VARIABLE}}}\"\n",
            self.namespace
        ));
        std::fs::write(path, config).expect("config");
        self
    }

    pub(crate) fn add(mut self, migrations: &[Migration]) -> Self {
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

    pub(crate) fn command(&self, args: &[&str]) -> Command {
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
    pub(crate) fn run(&self, args: &[&str]) -> (i32, String) {
        let mut running = self.spawn(args);
        let code = running.wait(Duration::from_secs(180));
        (code, running.output())
    }

    pub(crate) fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args))
    }

    pub(crate) fn target(&self, i: usize) -> Target {
        Target::new(
            format!("t{i}"),
            Connection::new(self.url.as_str(), self.namespace.as_str(), format!("t{i}"))
                .with_credentials(ROOT_USER, ROOT_PASS, AuthLevel::Root),
        )
    }
}

/// A flotilla process whose stdout lines are collected as they come. Killed when dropped.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
    pub(crate) stderr: PathBuf,
    pub(crate) _stderr_dir: tempfile::TempDir,
}

impl Running {
    pub(crate) fn spawn(mut command: Command) -> Self {
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a JSON event line for which `wanted` holds.
    pub(crate) fn wait_for(&mut self, what: &str, wanted: impl Fn(&serde_json::Value) -> bool) {
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
    pub(crate) fn wait(&mut self, limit: Duration) -> i32 {
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

    pub(crate) fn drain(&mut self) {
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

    pub(crate) fn output(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{}\n{stderr}", self.seen.join("\n"))
    }

    /// The final JSON report, if it printed one.
    pub(crate) fn report(&self) -> Option<serde_json::Value> {
        self.seen
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|v| v["type"] == "report")
    }

    pub(crate) fn signal(&self, signal: &str) {
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
pub(crate) fn report_of(output: &str) -> serde_json::Value {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "report")
        .unwrap_or_else(|| panic!("no report in:\n{output}"))
}

pub(crate) fn is_event(value: &serde_json::Value, status: &str) -> bool {
    value["type"] == "event" && value["event"]["status"] == status
}

/// What the fleet holds, counted from the database.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    /// Migrations with one of their two side effects, or effects without a history row.
    pub(crate) half_applied: usize,
    /// Migrations whose side effects are there more than once.
    pub(crate) double_applied: usize,
    /// Lock or lease records left behind.
    pub(crate) leases_left: usize,
    /// Migrations applied (history rows).
    pub(crate) applied: usize,
}

impl Figures {
    pub(crate) fn clean(&self) -> bool {
        self.half_applied == 0 && self.double_applied == 0 && self.leases_left == 0
    }
}

/// Counts `project`'s fleet, retrying while the server comes back.
pub(crate) async fn count(project: &Project) -> Figures {
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

pub(crate) fn take(reply: &mut surrealdb::IndexedResults, index: usize) -> Vec<serde_json::Value> {
    reply
        .take::<surrealdb::types::Value>(index)
        .map(surrealdb::types::Value::into_json_value)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

pub(crate) async fn retry<T, F, Fut>(mut attempt: F) -> T
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
pub(crate) fn assert_clean(figures: &Figures, outputs: &[&str]) {
    assert!(figures.clean(), "{figures:?}");
    for output in outputs {
        assert!(
            !output.contains(ROOT_PASS),
            "the password printed:\n{output}"
        );
    }
}

/// Short leases and timeouts so faults show quickly; no rehearsal, which would sleep through
/// the slow migrations on a scratch database too — these tests are about the fleet.
pub(crate) const FAST: &[&str] = &[
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

pub(crate) fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all: Vec<&str> = vec!["deploy", "--all"];
    all.extend_from_slice(FAST);
    all.extend_from_slice(extra);
    all
}
