//! What the CLI's test files share: running the built binary in a project directory.

#![allow(dead_code)] // each test file uses its own share of these

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;

/// The built `flotilla`, run in `dir`, without colour or inherited logging.
pub(crate) fn flotilla(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("flotilla").expect("flotilla binary");
    command
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    command
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs and returns (exit code, stdout + stderr).
pub(crate) fn run(command: &mut Command) -> (i32, String) {
    let output = command.output().expect("runs");
    (output.status.code().unwrap_or(-1), text(&output))
}

/// Writes `contents` to `dir/name`, making the directories it needs.
pub(crate) fn write(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, contents).expect("write");
}

/// Two embedded environments, `dev` and `prod`, in the project's `.flotilla/`.
pub(crate) const TWO_EMBEDDED: &str = r#"
[[environments]]
name = "dev"
url = "surrealkv://.flotilla/dev.db"
namespace = "app"
database = "dev"
priority = 10

[[environments]]
name = "prod"
url = "surrealkv://.flotilla/prod.db"
namespace = "app"
database = "prod"
priority = 20
"#;

pub(crate) const ACCOUNTS: &str = "-- @up\nDEFINE TABLE account SCHEMAFULL;\nDEFINE FIELD email ON account TYPE string;\n-- @down\nREMOVE TABLE account;\n";

/// A project with `config` and the accounts migration.
pub(crate) fn project(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "flotilla.toml", config);
    write(dir.path(), "migrations/0001_accounts.surql", ACCOUNTS);
    dir
}
