//! Project rules no compiler checks, run by `cargo test` like any other test (as
//! rust-analyzer's `tidy.rs` does), so every runner of the suite enforces them:
//! - every `.rs` file opens with a module doc (`//!`): what it is for;
//! - member manifests take every dependency from the workspace (`foo.workspace = true`), so
//!   versions live in one place — `serde = "1"`, `{ version = … }` and `{ path = … }` are not
//!   allowed outside the root manifest;
//! - library crates print nothing: `println!`, `eprintln!`, `print!`, `eprint!` and `dbg!`
//!   belong to the CLI, xtask and tests.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .map(Path::to_path_buf)
        .expect("the workspace root")
}

fn files(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files(&path, keep, out);
            }
        } else if keep(&path) {
            out.push(path);
        }
    }
}

fn workspace_files(keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let root = root();
    let mut out = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        files(&root.join(dir), keep, &mut out);
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_rust_file_opens_with_its_module_doc() {
    let mut missing = Vec::new();
    let rust = workspace_files(&|p| p.extension().is_some_and(|e| e == "rs"));
    for file in &rust {
        let text = std::fs::read_to_string(file).expect("readable");
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(relative(file));
        }
    }
    assert!(rust.len() > 50, "found only {} files", rust.len());
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc:\n  {}",
        missing.join("\n  ")
    );
}

/// The dependency lines of a member manifest that do not come from the workspace.
fn local_dependencies(manifest: &str) -> Vec<String> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let dependencies = section.contains("dependencies");
        let is_entry = line.contains('=') && !line.starts_with('#');
        if dependencies && is_entry && !line.contains("workspace = true") {
            found.push(format!("{section} {line}"));
        }
    }
    found
}

#[test]
fn member_manifests_take_dependencies_from_the_workspace() {
    let manifests = workspace_files(&|p| p.file_name().is_some_and(|n| n == "Cargo.toml"));
    assert!(manifests.len() >= 7, "found only {}", manifests.len());
    let mut problems = Vec::new();
    for manifest in &manifests {
        let text = std::fs::read_to_string(manifest).expect("readable");
        for line in local_dependencies(&text) {
            problems.push(format!("{}: {line}", relative(manifest)));
        }
    }
    assert!(
        problems.is_empty(),
        "use `.workspace = true`:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_manifest_rule_catches_each_local_form() {
    let manifest = "[package]\nversion = \"0.1.0\"\n[dependencies]\nserde = \"1\"\ntokio = { version = \"1\" }\nlocal = { path = \"../x\" }\nfine.workspace = true\nalso = { workspace = true, features = [\"x\"] }\n";
    let found = local_dependencies(manifest);
    assert_eq!(found.len(), 3, "{found:?}");
}

#[test]
fn library_crates_print_nothing() {
    let root = root();
    let mut sources = Vec::new();
    for krate in [
        "flotilla-core",
        "flotilla-runner",
        "flotilla-surrealdb",
        "flotilla-strategies",
        "flotilla-coordinator",
    ] {
        files(
            &root.join("crates").join(krate).join("src"),
            &|p| p.extension().is_some_and(|e| e == "rs"),
            &mut sources,
        );
    }
    assert!(sources.len() > 20, "found only {}", sources.len());
    let mut printing = Vec::new();
    for file in &sources {
        let text = std::fs::read_to_string(file).expect("readable");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if ["println!", "eprintln!", "print!(", "eprint!(", "dbg!("]
                .iter()
                .any(|m| code.contains(m))
            {
                printing.push(format!(
                    "{}:{}: {}",
                    relative(file),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        printing.is_empty(),
        "library code prints (report through values, events or tracing instead):\n  {}",
        printing.join("\n  ")
    );
}
