//! Fleet scenarios:
//! - `fleet-plan http N 1`: a fleet of N tenants listed by a paged HTTP endpoint on
//!   127.0.0.1 (1,000 tenants a page, each with a region), made into environments through a
//!   template, validated, registered and planned — everything before the first database is
//!   touched; wall time and the process's peak RSS;
//! - `fleet-deploy mem N C`: a fleet of N tenants (a static source), each its own namespace
//!   on one embedded `mem://` datastore, deployed at concurrency C; per-target time;
//! - `fleet-reads server N C`: N tenants on one real server, each its own namespace, deployed
//!   once (at C, not measured); then, each with a runner of its own as a new process would
//!   have, `status` of all N and a deploy with nothing to do: requests per tenant and wall
//!   time of each.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use std::time::{Duration, Instant};

use flotilla_coordinator::fleet::{HttpSource, StaticSource, TenantSource, expand};
use flotilla_coordinator::{DeploymentPlan, EnvironmentRegistry, Selection};
use flotilla_core::config::{Format, ProjectConfig};

use super::{Extra, deploy_all, fixture, proc_status_kib};

/// Tenants per page of the lister.
const PAGE: usize = 1000;

/// The scenario's JSON line, when `tool` is one of these.
pub(super) async fn scenario(
    tool: &str,
    store: &str,
    n: usize,
    c: usize,
) -> Option<Result<String, String>> {
    Some(match (tool, store) {
        ("fleet-plan", "http") => plan(n).await,
        ("fleet-deploy", "mem") => deploy(n, c).await,
        ("fleet-reads", "server") => reads(n, c).await,
        ("fleet-plan" | "fleet-deploy", other) => Err(format!(
            "`{tool}` runs on http (fleet-plan) or mem (fleet-deploy), not `{other}`"
        )),
        _ => return None,
    })
}

/// One fleet, `customers`, whose template puts each tenant in a namespace of its own on
/// `url`, tagged with its region.
fn fleet(url: &str) -> Result<flotilla_core::config::FleetConfig, String> {
    let text = format!(
        "[[fleets]]\nname = \"customers\"\nsource = {{ kind = \"static\", tenants = [] }}\n[fleets.template]\nurl = \"{url}\"\nnamespace = \"tenant_${{tenant}}\"\ndatabase = \"app\"\ntags = [\"${{tenant.region}}\"]\n"
    );
    let config = ProjectConfig::parse(Path::new("bench.toml"), &text, Format::Toml, &|_| None)
        .map_err(|e| e.to_string())?;
    config
        .fleets
        .into_iter()
        .next()
        .ok_or_else(|| "no fleet".to_owned())
}

fn region(i: usize) -> &'static str {
    ["eu", "us", "ap"][i % 3]
}

async fn plan(n: usize) -> Result<String, String> {
    let (url, pages) = lister(n)?;
    let fleet = fleet("ws://127.0.0.1:1")?;
    let started = Instant::now();
    let source = HttpSource::new(url, Some(flotilla_core::Secret::new("bench-token")));
    let environments = expand(&fleet, &source, &|_| None)
        .await
        .map_err(|e| e.to_string())?;
    let registry = EnvironmentRegistry::new();
    for environment in environments {
        registry.register(environment).map_err(|e| e.to_string())?;
    }
    let plan = DeploymentPlan::builder(&registry)
        .select(Selection::Tags(vec!["customers".into()]))
        .migrations(fixture())
        .build()
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if plan.environments.len() != n {
        return Err(format!("planned {} of {n}", plan.environments.len()));
    }
    Ok(serde_json::json!({
        "tool": "fleet-plan",
        "store": "http",
        "targets": n,
        "pages": pages.join().map_err(|_| "the lister panicked")?,
        "wall_ms": elapsed.as_secs_f64() * 1000.0,
        "peak_rss_kib": proc_status_kib("VmHWM:"),
    })
    .to_string())
}

async fn deploy(n: usize, c: usize) -> Result<String, String> {
    let fleet = fleet("mem://")?;
    let ids: Vec<String> = (0..n).map(|i| format!("t{i:06}")).collect();
    let source = StaticSource(ids);
    let tenants = source.tenants().await.map_err(|e| e.to_string())?;
    let registry = EnvironmentRegistry::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let fields = [("region".to_owned(), region(i).to_owned())].into();
        let environment = fleet.environment(&tenant.id, &fields, &|_| None)?;
        registry.register(environment).map_err(|e| e.to_string())?;
    }
    let (elapsed, requests) = deploy_all(&registry, c, &fixture(), Extra::default()).await?;
    Ok(serde_json::json!({
        "tool": "fleet-deploy",
        "store": "mem",
        "targets": n,
        "max_concurrent": c,
        "wall_ms": elapsed.as_secs_f64() * 1000.0,
        "per_target_ms": elapsed.as_secs_f64() * 1000.0 / n as f64,
        "requests_per_target": requests as f64 / n as f64,
        "peak_rss_kib": proc_status_kib("VmHWM:"),
    })
    .to_string())
}

async fn reads(n: usize, c: usize) -> Result<String, String> {
    let setup = super::setup("server", n)?;
    let registry = EnvironmentRegistry::new();
    for index in 0..n {
        let environment = flotilla_core::config::EnvironmentConfig::new(
            format!("t{index}"),
            super::connection(&setup, index),
        )
        .map_err(|e| e.to_string())?;
        registry.register(environment).map_err(|e| e.to_string())?;
    }
    let migrations = fixture();
    deploy_all(&registry, c, &migrations, Extra::default()).await?;

    let runner = flotilla_surrealdb::SurrealRunner::new();
    let mut backends = flotilla_runner::Backends::new();
    runner.register(&mut backends);
    let coordinator = flotilla_coordinator::DeploymentCoordinator::new(backends);
    let environments = registry.list();
    let server = setup.server.as_ref().map(|s| s.pid().to_string());
    let server_cpu = || server.as_deref().map_or(0.0, super::cpu_ms);
    let (server_before, client_before) = (server_cpu(), super::cpu_ms("self"));
    let started = Instant::now();
    let statuses = coordinator
        .status(&environments, std::sync::Arc::clone(&migrations))
        .await
        .map_err(|e| e.to_string())?;
    let status_wall = started.elapsed();
    let status_requests = runner.request_count();
    let status_server_cpu = server_cpu() - server_before;
    let status_client_cpu = super::cpu_ms("self") - client_before;
    if let Some(bad) = statuses
        .iter()
        .find(|s| s.pending != Some(0) || s.error.is_some())
    {
        return Err(format!("not up to date: {bad:?}"));
    }
    let noop = flotilla_surrealdb::SurrealRunner::new();
    let (noop_wall, noop_requests) = deploy_all(
        &registry,
        c,
        &migrations,
        Extra {
            runner: Some(noop),
            ..Extra::default()
        },
    )
    .await?;
    Ok(serde_json::json!({
        "tool": "fleet-reads",
        "store": "server",
        "targets": n,
        "max_concurrent": c,
        "status_wall_ms": status_wall.as_secs_f64() * 1000.0,
        "status_requests_per_target": status_requests as f64 / n as f64,
        "status_server_cpu_ms": status_server_cpu,
        "status_client_cpu_ms": status_client_cpu,
        "noop_deploy_wall_ms": noop_wall.as_secs_f64() * 1000.0,
        "noop_deploy_requests_per_target": noop_requests as f64 / n as f64,
        "peak_rss_kib": proc_status_kib("VmHWM:"),
    })
    .to_string())
}

/// A lister of `n` tenants on 127.0.0.1, `PAGE` a page, the cursor being the offset; it
/// serves each page once, for at most 60 s. Its URL, and a handle
/// that returns how many pages it served.
fn lister(n: usize) -> Result<(String, std::thread::JoinHandle<usize>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}/tenants",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        let pages = n.div_ceil(PAGE).max(1);
        while Instant::now() < deadline && served < pages {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let Ok(mut reader) = stream.try_clone().map(BufReader::new) else {
                continue;
            };
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let offset: usize = request
                .split_whitespace()
                .nth(1)
                .and_then(|path| path.split_once("cursor="))
                .and_then(|(_, cursor)| cursor.parse().ok())
                .unwrap_or(0);
            let end = (offset + PAGE).min(n);
            let tenants: Vec<String> = (offset..end)
                .map(|i| format!(r#"{{"id":"tenant-{i:06}","region":"{}"}}"#, region(i)))
                .collect();
            let next = if end < n {
                format!(r#","next_cursor":"{end}""#)
            } else {
                String::new()
            };
            let body = format!(r#"{{"tenants":[{}]{next}}}"#, tenants.join(","));
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            served += 1;
        }
        served
    });
    Ok((url, handle))
}
