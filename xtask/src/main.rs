//! flotilla's project automation, run as `cargo xtask <task>`:
//! - `ci`: what CI runs — formatting, tidy, clippy with warnings denied, every test;
//! - `test`: the test suite alone (cargo nextest when installed, else cargo test);
//! - `tidy`: project rules that no compiler checks (module docs, workspace dependencies);
//! - `dev-server [PORT]`: a local SurrealDB server (root/root, in memory) for trying things.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("tidy") => tidy(),
        Some("dev-server") => dev_server(args.get(1).map_or("8000", String::as_str)),
        _ => Err("usage: cargo xtask <ci|test|tidy|dev-server [PORT]>\n\
             \n  ci          fmt check, tidy, clippy -D warnings, all tests\
             \n  test        all tests (nextest if installed)\
             \n  tidy        module docs and workspace-dependency rules\
             \n  dev-server  a SurrealDB server on 127.0.0.1:PORT (root/root, memory)"
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
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
    tidy()?;
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
        run(
            &cargo,
            &[
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ],
        )?;
        // nextest does not run doctests.
        run(&cargo, &["test", "--workspace", "--all-features", "--doc"])
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

/// Every `.rs` file opens with a module doc (`//!`), and member manifests take shared
/// dependencies from the workspace.
fn tidy() -> Result<(), String> {
    let root = root();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        collect(&root.join(dir), &mut files);
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let relative = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        if file.extension().is_some_and(|e| e == "rs") {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                problems.push(format!(
                    "{relative}: does not start with a `//!` module doc"
                ));
            }
        }
        if file.file_name().is_some_and(|n| n == "Cargo.toml") {
            let mut section = String::new();
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with('[') {
                    section = line.to_owned();
                    continue;
                }
                let dependency_section = section.contains("dependencies");
                let inline_version = line.contains("version =") || line.contains("path =");
                let from_workspace = line.contains("workspace = true");
                let self_package = section == "[package]";
                if dependency_section && !self_package && inline_version && !from_workspace {
                    problems.push(format!(
                        "{relative}: `{line}` in {section} should use `.workspace = true`"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        eprintln!("tidy: {} files checked, all in order", files.len());
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                collect(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            || path.file_name().is_some_and(|n| n == "Cargo.toml")
        {
            out.push(path);
        }
    }
}
