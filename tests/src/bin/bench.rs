//! One benchmark scenario per run, so each measures its own process's memory:
//! `flotilla-bench <flotilla|raw> <mem|kv|server> N MAX_CONCURRENT` prints one JSON line.
//!
//! `flotilla` deploys the bench fixture (5 migrations) to N targets with the coordinator
//! (parallel strategy, health checks, locks, drift checks, history). `raw` is the bar: the
//! same statements sent with the SurrealDB SDK directly, one `BEGIN … COMMIT` request per
//! migration, the same concurrency and connection reuse, and nothing else.
//! `rehearse mem N 1` rehearses N generated migrations on a scratch `mem://` database.
//! `journaled`, `shards:K`, `shard-child` and `noop` measure the control plane (see
//! `bench/control.rs`); `fleet-plan` and `fleet-deploy` measure fleets (see
//! `bench/fleets.rs`).
//! `cargo xtask bench` runs the matrix and prints the table.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_coordinator::{
    DeploymentCoordinator, DeploymentPlan, EnvironmentConfig, EnvironmentRegistry, Outcome,
};
use flotilla_core::{AuthLevel, Connection, MigrationSet};
use flotilla_runner::Backends;
use flotilla_strategies::StrategyKind;
use flotilla_surrealdb::SurrealRunner;
use flotilla_tests::{ROOT_PASS, ROOT_USER, TestServer};
use futures::StreamExt;

#[path = "bench/control.rs"]
mod control;
#[path = "bench/fleets.rs"]
mod fleets;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [tool, store, n, c] => n
            .parse::<usize>()
            .ok()
            .zip(c.parse::<usize>().ok())
            .map(|(n, c)| (tool.clone(), store.clone(), n, c)),
        _ => None,
    };
    let Some((tool, store, n, c)) = parsed else {
        eprintln!("usage: flotilla-bench <flotilla|raw|rehearse> <mem|kv|server> N MAX_CONCURRENT");
        return std::process::ExitCode::from(2);
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match runtime.block_on(scenario(&tool, &store, n, c)) {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("flotilla-bench: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn fixture() -> Arc<MigrationSet> {
    // `cargo xtask bench` names it: the path compiled in may be another checkout's that
    // shares this target directory.
    let dir = std::env::var_os("FLOTILLA_BENCH_FIXTURE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-fixture"),
        std::path::PathBuf::from,
    );
    Arc::new(MigrationSet::load(&dir).expect("the bench fixture is valid"))
}

/// Kibibytes of a `/proc/self/status` field (Linux); 0 elsewhere.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU milliseconds (user + system) a process has used so far, from `/proc/PID/stat`
/// (Linux); 0 elsewhere.
pub(crate) fn cpu_ms(pid: &str) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which is in parentheses and may hold spaces):
            // utime and stime are the 12th and 13th.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // Linux reports in USER_HZ, 100 per second on every architecture it supports.
    ticks as f64 * 10.0
}

pub(crate) struct Setup {
    urls: Vec<String>,
    credentials: bool,
    server: Option<TestServer>,
    _dirs: Option<tempfile::TempDir>,
}

pub(crate) fn setup(store: &str, n: usize) -> Result<Setup, String> {
    Ok(match store {
        "mem" => Setup {
            urls: vec!["mem://".to_owned(); n],
            credentials: false,
            server: None,
            _dirs: None,
        },
        "kv" => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let urls = (0..n)
                .map(|i| format!("surrealkv://{}", dir.path().join(format!("t{i}")).display()))
                .collect();
            Setup {
                urls,
                credentials: false,
                server: None,
                _dirs: Some(dir),
            }
        }
        // A server another bench process started (a shard of `shards:K`).
        "server" if std::env::var_os("FLOTILLA_BENCH_URL").is_some() => Setup {
            urls: vec![std::env::var("FLOTILLA_BENCH_URL").unwrap_or_default(); n],
            credentials: true,
            server: None,
            _dirs: None,
        },
        "server" => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let binary: PathBuf = exe.with_file_name(format!(
                "flotilla-test-server{}",
                std::env::consts::EXE_SUFFIX
            ));
            let server = TestServer::start(&binary);
            Setup {
                urls: vec![server.ws_url(); n],
                credentials: true,
                server: Some(server),
                _dirs: None,
            }
        }
        other => return Err(format!("unknown store `{other}` (mem, kv or server)")),
    })
}

pub(crate) fn connection(setup: &Setup, index: usize) -> Connection {
    let connection = Connection::new(setup.urls[index].clone(), format!("bench{index}"), "app");
    if setup.credentials {
        connection.with_credentials(ROOT_USER, ROOT_PASS, AuthLevel::Root)
    } else {
        connection
    }
}

async fn scenario(tool: &str, store: &str, n: usize, c: usize) -> Result<String, String> {
    if tool == "rehearse" {
        return rehearse(store, n).await;
    }
    if let Some(line) = control::scenario(tool, store, n, c).await {
        return line;
    }
    if let Some(line) = fleets::scenario(tool, store, n, c).await {
        return line;
    }
    let migrations = fixture();
    let setup = setup(store, n)?;
    let rss_before = proc_status_kib("VmRSS:");
    let server_pid = setup.server.as_ref().map(|s| s.pid().to_string());
    let client_cpu_before = cpu_ms("self");
    let server_cpu_before = server_pid.as_deref().map_or(0.0, cpu_ms);
    let (elapsed, requests) = match tool {
        "flotilla" => flotilla(&setup, n, c, &migrations, Extra::default()).await?,
        "raw" => raw(&setup, n, c, &migrations).await?,
        other => return Err(format!("unknown tool `{other}` (flotilla or raw)")),
    };
    let peak = proc_status_kib("VmHWM:");
    let client_cpu = cpu_ms("self") - client_cpu_before;
    let server_cpu = server_pid.as_deref().map_or(0.0, cpu_ms) - server_cpu_before;
    Ok(serde_json::json!({
        "tool": tool,
        "store": store,
        "targets": n,
        "max_concurrent": c,
        "migrations": migrations.len(),
        "wall_ms": elapsed.as_secs_f64() * 1000.0,
        "per_target_ms": elapsed.as_secs_f64() * 1000.0 / n as f64,
        "rss_before_kib": rss_before,
        "peak_rss_kib": peak,
        "requests": requests,
        "requests_per_target": requests as f64 / n as f64,
        "client_cpu_ms": client_cpu,
        "server_cpu_ms": server_cpu,
    })
    .to_string())
}

/// `rehearse mem N`: N generated migrations (tables with fields, indexes and a seed record,
/// and every third one changing a table all share) rehearsed on an embedded `mem://` scratch
/// database — up, down, up again.
async fn rehearse(store: &str, n: usize) -> Result<String, String> {
    if store != "mem" {
        return Err(format!("rehearsal runs on mem:// only, not `{store}`"));
    }
    let files = (1..=n).map(|i| {
        let shared = if i % 3 == 0 {
            (
                format!("DEFINE FIELD f{i} ON shared TYPE option<int>;\n"),
                format!("REMOVE FIELD f{i} ON shared;\n"),
            )
        } else {
            (String::new(), String::new())
        };
        let text = format!(
            "-- @up\nDEFINE TABLE t{i} SCHEMAFULL;\nDEFINE FIELD name ON t{i} TYPE string;\nDEFINE FIELD created ON t{i} TYPE datetime DEFAULT time::now();\nDEFINE INDEX t{i}_name ON t{i} FIELDS name UNIQUE;\nCREATE t{i}:seed SET name = 'seed; {i}';\n{}-- @down\n{}REMOVE TABLE t{i};\n",
            shared.0, shared.1
        );
        (PathBuf::from(format!("migrations/{i:04}_table_{i}.surql")), text)
    });
    let migrations = Arc::new(MigrationSet::from_files(files).map_err(|e| e.to_string())?);
    let runner = SurrealRunner::new();
    let started = Instant::now();
    let rehearsal = flotilla_runner::MigrationRunner::rehearse(
        &runner,
        &flotilla_runner::RehearsalPlan::all(migrations),
    )
    .await
    .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if !rehearsal.passed() || rehearsal.rehearsed != n {
        return Err(format!("the rehearsal did not pass: {rehearsal:?}"));
    }
    Ok(serde_json::json!({
        "tool": "rehearse",
        "store": store,
        "migrations": n,
        "wall_ms": elapsed.as_secs_f64() * 1000.0,
        "peak_rss_kib": proc_status_kib("VmHWM:"),
    })
    .to_string())
}

/// What a control-plane scenario adds to a plain deploy.
#[derive(Default)]
struct Extra {
    control: Option<flotilla_coordinator::control::Control>,
    shard: Option<flotilla_coordinator::Shard>,
    deployment_id: Option<String>,
    /// The runner (and so, for `mem://`, the datastore) of an earlier deploy.
    runner: Option<SurrealRunner>,
}

async fn flotilla(
    setup: &Setup,
    n: usize,
    c: usize,
    migrations: &Arc<MigrationSet>,
    extra: Extra,
) -> Result<(Duration, u64), String> {
    let registry = EnvironmentRegistry::new();
    for index in 0..n {
        let environment = EnvironmentConfig::new(format!("t{index}"), connection(setup, index))
            .map_err(|e| e.to_string())?;
        registry.register(environment).map_err(|e| e.to_string())?;
    }
    deploy_all(&registry, c, migrations, extra).await
}

/// Deploys `migrations` to every environment of `registry`, parallel at `c`: wall time and
/// requests sent.
async fn deploy_all(
    registry: &EnvironmentRegistry,
    c: usize,
    migrations: &Arc<MigrationSet>,
    extra: Extra,
) -> Result<(Duration, u64), String> {
    let mut plan = DeploymentPlan::builder(registry)
        .all()
        .migrations(Arc::clone(migrations))
        .kind(StrategyKind::Parallel)
        .max_concurrent(c);
    if let Some(shard) = extra.shard {
        plan = plan.shard(shard);
    }
    if let Some(id) = extra.deployment_id {
        plan = plan.deployment_id(id);
    }
    let plan = plan.build().map_err(|e| e.to_string())?;
    let mut backends = Backends::new();
    let runner = extra.runner.unwrap_or_default();
    let requests_before = runner.request_count();
    runner.register(&mut backends);
    let mut coordinator = DeploymentCoordinator::new(backends);
    if let Some(control) = extra.control {
        coordinator = coordinator.with_control(control);
    }
    let started = Instant::now();
    let report = coordinator.deploy(&plan).await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if report.outcome != Outcome::Succeeded {
        return Err(format!(
            "deploy did not succeed: {:?} {:?} {:?}",
            report.outcome,
            report.refusal,
            report.environments.iter().find_map(|e| e.error.as_ref())
        ));
    }
    Ok((elapsed, runner.request_count() - requests_before))
}

async fn raw(
    setup: &Setup,
    n: usize,
    c: usize,
    migrations: &Arc<MigrationSet>,
) -> Result<(Duration, u64), String> {
    let requests: Vec<String> = migrations
        .as_slice()
        .iter()
        .map(|m| {
            let statements: Vec<&str> = m.up.iter().map(|s| s.text.as_str()).collect();
            format!(
                "BEGIN TRANSACTION;\n{};\nCOMMIT TRANSACTION;",
                statements.join(";\n")
            )
        })
        .collect();
    let started = Instant::now();
    // One connection per distinct URL, shared by its tenants — as flotilla does: one sign-in
    // per endpoint, and each tenant's session authenticates with its token (a clone of a
    // signed-in client would replay the sign-in, and the server's password check is slow by
    // design).
    let mut clients: std::collections::HashMap<
        String,
        (
            surrealdb::Surreal<surrealdb::engine::any::Any>,
            Option<surrealdb::opt::auth::AccessToken>,
        ),
    > = std::collections::HashMap::new();
    for url in &setup.urls {
        if !clients.contains_key(url) {
            let client = surrealdb::engine::any::connect(url.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let token = if setup.credentials {
                let token = client
                    .clone()
                    .signin(surrealdb::opt::auth::Root {
                        username: ROOT_USER.to_owned(),
                        password: ROOT_PASS.to_owned(),
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                Some(token.access)
            } else {
                None
            };
            clients.insert(url.clone(), (client, token));
        }
    }
    let results: Vec<Result<(), String>> = futures::stream::iter(0..n)
        .map(|index| {
            let (client, token) = &clients[&setup.urls[index]];
            let session = client.clone();
            let token = token.clone();
            let requests = &requests;
            async move {
                if let Some(token) = token {
                    session
                        .authenticate(surrealdb::opt::auth::Token::from(token))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                session
                    .use_ns(format!("bench{index}"))
                    .use_db("app")
                    .await
                    .map_err(|e| e.to_string())?;
                for request in requests {
                    session
                        .query(request.as_str())
                        .await
                        .map_err(|e| e.to_string())?
                        .check()
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        })
        .buffer_unordered(c.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    // Per target: authenticate (with credentials), `USE`, one per migration.
    let per_target = u64::from(setup.credentials) + 1 + requests.len() as u64;
    Ok((elapsed, per_target * n as u64))
}
