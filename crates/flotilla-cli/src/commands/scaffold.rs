//! `flotilla init` and `flotilla new`: scaffolding a project and a migration.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flotilla_core::{MigrationSet, Version, rfc3339};

use super::{CommandResult, EXIT_OK, usage};
use crate::cli::{Cli, Output};
use crate::project::Project;
use crate::render;

fn timestamp() -> String {
    timestamp_of(SystemTime::now())
}

/// `YYYYMMDD_HHMMSS` in UTC.
fn timestamp_of(time: SystemTime) -> String {
    let iso = rfc3339(time); // 2026-11-22T05:01:19.123Z
    let digits: String = iso.chars().filter(char::is_ascii_digit).collect();
    format!("{}_{}", &digits[..8], &digits[8..14])
}

pub(crate) fn new_migration(cli: &Cli, name: &str) -> CommandResult {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(usage(format!(
            "migration name `{name}` must be letters, digits and underscores, e.g. add_user_email"
        )));
    }
    let dir = match &cli.migrations_dir {
        Some(dir) => dir.clone(),
        None => Project::load(cli)
            .map(|p| p.migrations_dir)
            .unwrap_or_else(|_| PathBuf::from("migrations")),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    let existing = MigrationSet::load(&dir).map_err(|e| usage(format!("migrations: {e}")))?;
    let mut time = SystemTime::now();
    let path = loop {
        let stamp = timestamp_of(time);
        let taken = Version::parse(&stamp).is_some_and(|v| existing.get(&v).is_some());
        if !taken {
            break dir.join(format!("{stamp}_{name}.surql"));
        }
        time += Duration::from_secs(1);
    };
    let text = format!(
        "-- @metadata\n-- description: {}\n-- @up\n-- Write the change here, one statement per `;`.\n\n-- @down\n-- Write what undoes it here.\n",
        name.replace('_', " ")
    );
    std::fs::write(&path, text)
        .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
    render::lines(
        &[format!("created {}", path.display())],
        cli.output == Output::Json,
    );
    Ok(EXIT_OK)
}

const CONFIG_TEMPLATE: &str = r#"# flotilla configuration. Docs: docs/configuration.md
migrations = "migrations"

[defaults]
strategy = "sequential"
max_concurrent = 8
lock_timeout_secs = 30

# Embedded databases on disk: nothing to install.
[[environments]]
name = "dev"
url = "surrealkv://.flotilla/dev.db"
namespace = "app"
database = "dev"
priority = 10
tags = ["local"]

[[environments]]
name = "staging"
url = "surrealkv://.flotilla/staging.db"
namespace = "app"
database = "staging"
priority = 20
tags = ["local"]

# A server over WebSocket; secrets come from the environment.
# [[environments]]
# name = "production"
# url = "wss://db.example.com"
# namespace = "app"
# database = "main"
# username = "${PROD_DB_USER:-deployer}"
# password = "${PROD_DB_PASSWORD}"
# auth = "root"            # root, namespace or database
# priority = 100
# tags = ["live"]
# require_approval = true
# allow_destructive = false
"#;

pub(crate) fn init(dir: &Path, json: bool) -> CommandResult {
    let config = dir.join("flotilla.toml");
    if config.exists() {
        return Err(usage(format!(
            "{} already exists; nothing changed",
            config.display()
        )));
    }
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations)
        .map_err(|e| usage(format!("cannot create {}: {e}", migrations.display())))?;
    std::fs::write(&config, CONFIG_TEMPLATE)
        .map_err(|e| usage(format!("cannot write {}: {e}", config.display())))?;
    let first = migrations.join(format!("{}_create_example.surql", timestamp()));
    let text = "-- @metadata\n-- description: an example table to start from\n-- @up\nDEFINE TABLE example SCHEMAFULL;\nDEFINE FIELD name ON example TYPE string;\nDEFINE FIELD created_at ON example TYPE datetime DEFAULT time::now();\n-- @down\nREMOVE TABLE example;\n";
    std::fs::write(&first, text)
        .map_err(|e| usage(format!("cannot write {}: {e}", first.display())))?;
    render::lines(
        &[
            format!("created {}", config.display()),
            format!("created {}", first.display()),
            "next: flotilla deploy --all".to_owned(),
        ],
        json,
    );
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_sortable_versions() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3_661);
        assert_eq!(timestamp_of(t), "20260101_010101");
        assert!(Version::parse(&timestamp_of(SystemTime::now())).is_some());
    }
}
