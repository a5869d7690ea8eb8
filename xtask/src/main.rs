//! flotilla's project automation, run as `cargo xtask <task>`:
//! - `ci`: what CI runs — formatting, clippy with warnings denied, every test (tidy among them);
//! - `test`: the test suite alone (cargo nextest when installed, else cargo test);
//! - `tidy`: the project rules no compiler checks, alone (`tests/tests/tidy.rs`);
//! - `dev-server [PORT]`: a local SurrealDB server (root/root, in memory) for trying things;
//! - `bench [--quick] [--runs R]`: flotilla against the raw SurrealDB SDK over a matrix of
//!   scenarios, each run R times (median), and the rehearsal of 200 migrations.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("tidy") => tidy(),
        Some("dev-server") => dev_server(args.get(1).map_or("8000", String::as_str)),
        Some("bench") => {
            runs(&args).and_then(|runs| bench(args.iter().any(|a| a == "--quick"), runs))
        }
        _ => Err("usage: cargo xtask <ci|test|tidy|dev-server [PORT]>\n\
             \n  ci          fmt check, clippy -D warnings, all tests (tidy among them)\
             \n  test        all tests (nextest if installed)\
             \n  tidy        module docs, workspace dependencies, no printing in libraries\
             \n  dev-server  a SurrealDB server on 127.0.0.1:PORT (root/root, memory)\
             \n  bench       flotilla vs the raw SDK: table on stdout, JSON in the target dir\
             \n              [--quick: N <= 100] [--runs R: median of R runs, default 3]"
            .to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    // Asked at run time (`cargo run` sets it): checkouts that share a target directory share
    // this binary, and the path compiled into it may be another checkout's, or gone.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let mut command = Command::new(program);
    // `cargo run` gave this process variables describing the xtask package; build scripts
    // (ring's, for one) watch some of them, and inheriting them would rebuild SurrealDB.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let from_cargo_run = name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            );
        if from_cargo_run {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn cargo() -> String {
    // The rustup proxy, not $CARGO: a toolchain-internal cargo resolves rustc and clippy by
    // other paths, which changes fingerprints and rebuilds all of SurrealDB.
    "cargo".to_owned()
}

fn ci() -> Result<(), String> {
    let cargo = cargo();
    run(&cargo, &["fmt", "--all", "--", "--check"])?;
    // Tidy runs with the tests (tests/tests/tidy.rs).
    run(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    test()
}

fn test() -> Result<(), String> {
    let cargo = cargo();
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nextest {
        // nextest does not run doctests; run them first so the log ends with the summary
        // of the real suite.
        run(&cargo, &["test", "--workspace", "--all-features", "--doc"])?;
        run(
            &cargo,
            &[
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ],
        )
    } else {
        run(
            &cargo,
            &["test", "--workspace", "--all-features", "--no-fail-fast"],
        )
    }
}

fn dev_server(port: &str) -> Result<(), String> {
    let bind = format!("127.0.0.1:{port}");
    eprintln!("SurrealDB on ws://{bind} (user root, password root, in memory); Ctrl-C stops it");
    run(
        &cargo(),
        &[
            "run",
            "--quiet",
            "-p",
            "flotilla-tests",
            "--bin",
            "flotilla-test-server",
            "--",
            "start",
            "--bind",
            &bind,
            "--user",
            "root",
            "--pass",
            "root",
            "memory",
        ],
    )
}

/// The project's tidy rules: one test file (`tests/tests/tidy.rs`) that `cargo test` runs with
/// the rest, so the rules are enforced wherever the suite runs; this runs it alone.
fn tidy() -> Result<(), String> {
    run(
        &cargo(),
        &["test", "--workspace", "--all-features", "--test", "tidy"],
    )
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// `--runs R` of `cargo xtask bench`; 3 when absent.
fn runs(args: &[String]) -> Result<usize, String> {
    match args.iter().position(|a| a == "--runs") {
        None => Ok(3),
        Some(at) => args
            .get(at + 1)
            .and_then(|r| r.parse().ok())
            .filter(|&r: &usize| r > 0)
            .ok_or_else(|| "--runs needs a positive number".to_owned()),
    }
}

/// The median of `values` (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs every scenario `runs` times, each run in its own process (so peak RSS is that run's),
/// raw and flotilla alternating so both see the same machine; prints a table of medians with
/// the flotilla/raw ratio and writes every run as JSON.
fn bench(quick: bool, runs: usize) -> Result<(), String> {
    run(
        &cargo(),
        &["build", "--workspace", "--all-targets", "--all-features"],
    )?;
    let binary = target_dir()
        .join("debug")
        .join(format!("flotilla-bench{}", std::env::consts::EXE_SUFFIX));
    let sizes: &[usize] = if quick { &[10, 100] } else { &[10, 100, 1000] };
    let mut matrix: Vec<(&str, usize, usize)> = Vec::new();
    for &n in sizes {
        for c in [1, 8, 32] {
            matrix.push(("mem", n, c));
            if n <= 100 {
                matrix.push(("kv", n, c));
            }
            matrix.push(("server", n, c));
        }
    }
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut growth = Vec::new();
    for (store, n, c) in matrix {
        // Per tool: wall ms, peak RSS, requests per target, server CPU ms.
        let mut samples: [[Vec<f64>; 4]; 2] = Default::default();
        for (slot, tool) in (0..runs).flat_map(|_| [(0, "raw"), (1, "flotilla")]) {
            let line = scenario(&binary, [tool, store, &n.to_string(), &c.to_string()])?;
            let wall = number(&line, "wall_ms");
            let peak = number(&line, "peak_rss_kib");
            eprintln!(
                "{tool:>8} {store:>6} N={n:<5} c={c:<3} {wall:>10.1} ms  peak {:.1} MiB",
                peak / 1024.0
            );
            samples[slot][0].push(wall);
            samples[slot][1].push(peak);
            samples[slot][2].push(number(&line, "requests_per_target"));
            samples[slot][3].push(number(&line, "server_cpu_ms"));
            json.push(line);
        }
        let [
            [raw, raw_peak, raw_requests, raw_cpu],
            [flotilla, peak, requests, cpu],
        ] = samples.map(|columns| columns.map(median));
        // Only a server scenario has a server process to measure.
        let cpu_ratio = if raw_cpu > 0.0 {
            format!("{:.2}x", cpu / raw_cpu)
        } else {
            "–".to_owned()
        };
        growth.push((
            store,
            n,
            c,
            raw / n as f64,
            flotilla / n as f64,
            raw_peak,
            peak,
        ));
        rows.push(format!(
            "| {store:<6} | {n:>5} | {c:>3} | {raw:>9.0} | {flotilla:>9.0} | {:>8.2} | {:>8.2} | {:>6.2}x | {cpu_ratio:>6} | {raw_requests:.1}, {requests:.2} | {:>7.1} | {:>7.1} |",
            raw / n as f64,
            flotilla / n as f64,
            flotilla / raw,
            raw_peak / 1024.0,
            peak / 1024.0
        ));
    }
    println!(
        "| store  |     N |   c |  raw (ms) | flotilla (ms) | raw/target | fl/target | fl/raw | server CPU fl/raw | requests/target (raw, fl) | raw RSS MiB | fl RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!("{row}");
    }
    // How cost and memory grow with N: per-target time at the largest N over the next size
    // down, and peak RSS added per extra target between them.
    println!();
    println!(
        "| store | c | N | per-target ms raw → fl | vs N/10 (raw, fl) | RSS KiB/extra target (raw, fl) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for &(store, n, c, raw, fl, raw_peak, peak) in &growth {
        let Some(&(_, small, _, raw0, fl0, raw_peak0, peak0)) = growth
            .iter()
            .find(|g| g.0 == store && g.2 == c && g.1 * 10 == n)
        else {
            continue;
        };
        let extra = (n - small) as f64;
        println!(
            "| {store} | {c} | {n} | {raw:.2} → {fl:.2} | {:+.0} %, {:+.0} % | {:.1}, {:.1} |",
            (raw / raw0 - 1.0) * 100.0,
            (fl / fl0 - 1.0) * 100.0,
            (raw_peak - raw_peak0) / extra,
            (peak - peak0) / extra
        );
    }
    rehearsal(&binary, runs, &mut json)?;
    control_plane(&binary, quick, runs, &mut json)?;
    fleets(&binary, quick, runs, &mut json)?;
    let out = target_dir().join("flotilla-bench.json");
    std::fs::write(&out, format!("[\n{}\n]\n", json.join(",\n")))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("results: {}", out.display());
    Ok(())
}

/// Rehearsal: 200 migrations on a scratch mem:// database, `runs` times; the goal is 2 s.
fn rehearsal(binary: &Path, runs: usize, json: &mut Vec<String>) -> Result<(), String> {
    let mut walls = Vec::new();
    for _ in 0..runs {
        let line = scenario(binary, ["rehearse", "mem", "200", "1"])?;
        walls.push(number(&line, "wall_ms"));
        json.push(line);
    }
    let wall = median(walls);
    println!();
    println!(
        "rehearsal: 200 migrations up, down and up again on mem:// in {wall:.0} ms (median of {runs}; goal <= 2000 ms: {})",
        if wall <= 2000.0 { "met" } else { "NOT MET" }
    );
    Ok(())
}

/// The control plane's three goals: the journal and audit cost at most 5 % on the server;
/// four shard processes finish within 1.1x one process at the same total concurrency; a
/// no-op redeploy sends at most one request per target. Medians of `runs`, pairs alternating.
fn control_plane(
    binary: &Path,
    quick: bool,
    runs: usize,
    json: &mut Vec<String>,
) -> Result<(), String> {
    let n = if quick { "100" } else { "1000" };
    let noop_n = if quick { "1000" } else { "10000" };
    let mut pairs: [[Vec<f64>; 2]; 2] = Default::default();
    let mut cpu: [Vec<f64>; 2] = Default::default();
    for _ in 0..runs {
        for (pair, slot, tool) in [
            (0, 0, "flotilla"),
            (0, 1, "journaled"),
            (1, 0, "shards:1"),
            (1, 1, "shards:4"),
        ] {
            let line = scenario(binary, [tool, "server", n, "8"])?;
            let wall = number(&line, "wall_ms");
            eprintln!("{tool:>10} server N={n:<5} c=8   {wall:>10.1} ms");
            pairs[pair][slot].push(wall);
            if pair == 0 {
                cpu[slot].push(number(&line, "client_cpu_ms") + number(&line, "server_cpu_ms"));
            }
            json.push(line);
        }
    }
    let [[plain, journaled], [one, four]] = pairs.map(|pair| pair.map(median));
    let [plain_cpu, journaled_cpu] = cpu.map(median);
    let noop = scenario(binary, ["noop", "mem", noop_n, "32"])?;
    let requests = number(&noop, "requests_per_target");
    json.push(noop.clone());
    let verdict = |met: bool| if met { "met" } else { "NOT MET" };
    println!();
    println!(
        "journal + audit, server N={n} c=8: {plain:.0} -> {journaled:.0} ms ({:+.1} %; goal <= 5 %: {}); client + server CPU {plain_cpu:.0} -> {journaled_cpu:.0} ms ({:+.1} %)",
        (journaled / plain - 1.0) * 100.0,
        verdict(journaled <= plain * 1.05),
        (journaled_cpu / plain_cpu - 1.0) * 100.0
    );
    println!(
        "4 shard processes x c=2 vs 1 process x c=8, server N={n}: {four:.0} vs {one:.0} ms ({:.2}x; goal <= 1.1x: {})",
        four / one,
        verdict(four <= one * 1.1)
    );
    println!(
        "no-op redeploy of {noop_n} mem:// targets: {requests:.3} requests/target in {:.0} ms (goal <= 1: {})",
        number(&noop, "wall_ms"),
        verdict(requests <= 1.0)
    );
    Ok(())
}

/// Fleets: 100,000 tenants from a paged HTTP lister planned within 2 s and 300 MiB; a fleet
/// of 10,000 tenants on mem:// deployed at the per-target cost of 1,000 (within 25 %); the
/// reads of 10,000 up-to-date tenants on one server (status, a no-op deploy) at <= 0.01
/// requests per tenant, status within 2 s.
/// Medians of `runs`.
fn fleets(binary: &Path, quick: bool, runs: usize, json: &mut Vec<String>) -> Result<(), String> {
    let (listed, small, large) = if quick {
        ("10000", "100", "1000")
    } else {
        ("100000", "1000", "10000")
    };
    let (mut walls, mut peaks) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let line = scenario(binary, ["fleet-plan", "http", listed, "1"])?;
        walls.push(number(&line, "wall_ms"));
        peaks.push(number(&line, "peak_rss_kib") / 1024.0);
        json.push(line);
    }
    let (wall, peak) = (median(walls), median(peaks));
    let mut per_target = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (slot, n) in [(0, small), (1, large)] {
            let line = scenario(binary, ["fleet-deploy", "mem", n, "32"])?;
            eprintln!(
                "fleet-deploy mem N={n:<6} c=32 {:>10.1} ms",
                number(&line, "wall_ms")
            );
            per_target[slot].push(number(&line, "per_target_ms"));
            json.push(line);
        }
    }
    let [small_ms, large_ms] = per_target.map(median);
    // Reads of an up-to-date fleet on one server: once (setting up `large` tenants is slow).
    let line = scenario(binary, ["fleet-reads", "server", large, "32"])?;
    let reads = (
        number(&line, "status_requests_per_target"),
        number(&line, "status_wall_ms"),
        number(&line, "noop_deploy_requests_per_target"),
    );
    json.push(line);
    let verdict = |met: bool| if met { "met" } else { "NOT MET" };
    println!();
    println!(
        "fleet of {listed} tenants from a paged HTTP lister, planned in {wall:.0} ms with peak RSS {peak:.0} MiB (goals <= 2000 ms, <= 300 MiB: {})",
        verdict(wall <= 2000.0 && peak <= 300.0)
    );
    println!(
        "fleet deploy on mem://, c=32: {small_ms:.2} ms/target at N={small}, {large_ms:.2} at N={large} ({:.2}x; goal flat, <= 1.25x: {})",
        large_ms / small_ms,
        verdict(large_ms <= small_ms * 1.25)
    );
    println!(
        "{large} up-to-date tenants on one server: status {:.4} requests/tenant in {:.0} ms, no-op deploy {:.4} requests/tenant (goals <= 0.01, <= 2000 ms, <= 0.01: {}, {}, {})",
        reads.0,
        reads.1,
        reads.2,
        verdict(reads.0 <= 0.01),
        verdict(reads.1 <= 2000.0),
        verdict(reads.2 <= 0.01)
    );
    Ok(())
}

/// One run of one scenario (`flotilla-bench TOOL STORE N C`) in its own process: its JSON line.
fn scenario(binary: &Path, args: [&str; 4]) -> Result<String, String> {
    let output = Command::new(binary)
        .args(args)
        .env("FLOTILLA_BENCH_FIXTURE", root().join("tests/bench-fixture"))
        // With backtraces on, every error inside SurrealDB captures one (the health probe of
        // a new target reads two missing tables): not what production pays.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || line.is_empty() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(line)
}

/// A number field of a flat JSON object line (the bench's own output).
fn number(line: &str, field: &str) -> f64 {
    let key = format!("\"{field}\":");
    line.find(&key)
        .map(|at| &line[at + key.len()..])
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}
