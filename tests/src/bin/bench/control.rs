//! Control-plane scenarios:
//! - `journaled STORE N C`: `flotilla`, journaled and audited to a control store on the same
//!   store (and a JSON-lines audit file) — the journal's cost is this over `flotilla`;
//! - `shards:K server N C`: one server, K processes (`shard-child`) each deploying shard
//!   i/K of the N targets at C/K concurrency, journaled to one deployment; wall time from
//!   the first spawn to the last exit;
//! - `noop mem N C`: N targets migrated, then deployed again (journaled): requests the
//!   second deploy sends per target, to the targets and to the control store.

use std::sync::Arc;
use std::time::Instant;

use flotilla_coordinator::Shard;
use flotilla_coordinator::control::{Actor, Control, ControlStore};
use flotilla_core::{AuthLevel, Connection};
use flotilla_surrealdb::{SurrealConfig, SurrealControlStore, SurrealRunner};
use flotilla_tests::{ROOT_PASS, ROOT_USER};

use super::{Extra, Setup, cpu_ms, fixture, flotilla, proc_status_kib, setup};

/// The scenario's JSON line, when `tool` is one of these.
pub(super) async fn scenario(
    tool: &str,
    store: &str,
    n: usize,
    c: usize,
) -> Option<Result<String, String>> {
    Some(match tool {
        "journaled" => journaled(store, n, c).await,
        "shard-child" => shard_child(n, c).await,
        "noop" => noop(store, n, c).await,
        _ => match tool.strip_prefix("shards:").map(str::parse::<u32>) {
            Some(Ok(shards)) => shards_at_once(store, n, c, shards),
            Some(Err(_)) => Err(format!("`{tool}`: write shards:K")),
            None => return None,
        },
    })
}

/// A control store on `setup`'s store: the same server, or an embedded one of its own.
fn store_for(setup: &Setup) -> Result<Arc<SurrealControlStore>, String> {
    let url = setup
        .urls
        .first()
        .cloned()
        .unwrap_or_else(|| "mem://".to_owned());
    let connection = Connection::new(url, "flotilla_bench", "control");
    let connection = if setup.credentials {
        connection.with_credentials(ROOT_USER, ROOT_PASS, AuthLevel::Root)
    } else {
        connection
    };
    SurrealControlStore::new(connection, SurrealConfig::default())
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

fn control(store: &Arc<SurrealControlStore>, audit_log: Option<std::path::PathBuf>) -> Control {
    let mut control = Control::new(
        Arc::clone(store) as Arc<dyn ControlStore>,
        Actor {
            user: "bench".into(),
            host: "bench".into(),
            pid: std::process::id(),
            commit: None,
            pipeline: None,
        },
    );
    control.audit_log = audit_log;
    control
}

fn line(
    tool: &str,
    store: &str,
    n: usize,
    c: usize,
    wall_ms: f64,
    requests: u64,
    control_requests: u64,
) -> String {
    serde_json::json!({
        "tool": tool,
        "store": store,
        "targets": n,
        "max_concurrent": c,
        "wall_ms": wall_ms,
        "per_target_ms": wall_ms / n as f64,
        "peak_rss_kib": proc_status_kib("VmHWM:"),
        "requests": requests,
        "control_requests": control_requests,
        "requests_per_target": (requests + control_requests) as f64 / n as f64,
    })
    .to_string()
}

async fn journaled(store: &str, n: usize, c: usize) -> Result<String, String> {
    let setup = setup(store, n)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let control_store = store_for(&setup)?;
    let extra = Extra {
        control: Some(control(
            &control_store,
            Some(dir.path().join("audit.jsonl")),
        )),
        ..Extra::default()
    };
    let server_pid = setup.server.as_ref().map(|s| s.pid().to_string());
    let client_cpu = cpu_ms("self");
    let server_cpu = server_pid.as_deref().map_or(0.0, cpu_ms);
    let (elapsed, requests) = flotilla(&setup, n, c, &fixture(), extra).await?;
    let mut result: serde_json::Value = serde_json::from_str(&line(
        "journaled",
        store,
        n,
        c,
        elapsed.as_secs_f64() * 1000.0,
        requests,
        control_store.request_count(),
    ))
    .map_err(|e| e.to_string())?;
    result["client_cpu_ms"] = serde_json::json!(cpu_ms("self") - client_cpu);
    result["server_cpu_ms"] =
        serde_json::json!(server_pid.as_deref().map_or(0.0, cpu_ms) - server_cpu);
    Ok(result.to_string())
}

/// One shard of `shards:K`: the server and the shard come from the environment.
async fn shard_child(n: usize, c: usize) -> Result<String, String> {
    let shard: Shard = std::env::var("FLOTILLA_BENCH_SHARD")
        .map_err(|_| "FLOTILLA_BENCH_SHARD is not set".to_owned())?
        .parse()?;
    let setup = setup("server", n)?;
    let control_store = store_for(&setup)?;
    let extra = Extra {
        control: Some(control(&control_store, None)),
        shard: Some(shard),
        deployment_id: std::env::var("FLOTILLA_BENCH_DEPLOYMENT").ok(),
        runner: None,
    };
    let (elapsed, requests) = flotilla(&setup, n, c, &fixture(), extra).await?;
    Ok(line(
        "shard-child",
        "server",
        n,
        c,
        elapsed.as_secs_f64() * 1000.0,
        requests,
        control_store.request_count(),
    ))
}

fn shards_at_once(store: &str, n: usize, c: usize, shards: u32) -> Result<String, String> {
    if store != "server" || shards == 0 || !c.is_multiple_of(shards as usize) {
        return Err(format!(
            "shards:{shards} runs on server, with C a multiple of K"
        ));
    }
    let setup = setup("server", n)?;
    let url = setup.urls.first().cloned().unwrap_or_default();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let per_shard = (c / shards as usize).to_string();
    let deployment = format!("bench-shards-{}", std::process::id());
    let started = Instant::now();
    let children: Vec<std::process::Child> = (0..shards)
        .map(|index| {
            std::process::Command::new(&exe)
                .args(["shard-child", "server", &n.to_string(), &per_shard])
                .env("FLOTILLA_BENCH_URL", &url)
                .env("FLOTILLA_BENCH_SHARD", format!("{index}/{shards}"))
                .env("FLOTILLA_BENCH_DEPLOYMENT", &deployment)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut requests = 0.0;
    for child in children {
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("a shard failed: {text}"));
        }
        let child_line: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
        requests += child_line["requests_per_target"].as_f64().unwrap_or(0.0);
    }
    let wall = started.elapsed().as_secs_f64() * 1000.0;
    Ok(serde_json::json!({
        "tool": format!("shards:{shards}"),
        "store": store,
        "targets": n,
        "max_concurrent": c,
        "wall_ms": wall,
        "per_target_ms": wall / n as f64,
        "requests_per_target_summed_over_shards": requests,
    })
    .to_string())
}

async fn noop(store: &str, n: usize, c: usize) -> Result<String, String> {
    let setup = setup(store, n)?;
    let control_store = store_for(&setup)?;
    // One runner for both deploys: for `mem://` it is the datastore.
    let runner = SurrealRunner::new();
    let first = Extra {
        runner: Some(runner.clone()),
        ..Extra::default()
    };
    flotilla(&setup, n, c, &fixture(), first).await?;
    let before = control_store.request_count();
    let again = Extra {
        control: Some(control(&control_store, None)),
        runner: Some(runner),
        ..Extra::default()
    };
    let started = Instant::now();
    let (_, total) = flotilla(&setup, n, c, &fixture(), again).await?;
    let wall = started.elapsed().as_secs_f64() * 1000.0;
    Ok(line(
        "noop",
        store,
        n,
        c,
        wall,
        total,
        control_store.request_count() - before,
    ))
}
