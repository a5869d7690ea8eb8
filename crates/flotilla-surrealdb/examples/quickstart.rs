//! Deploys the bundled example migrations to an embedded SurrealDB database on disk and
//! prints what was applied. Run it twice: the second run has nothing to do.
//!
//! `cargo run -p flotilla-surrealdb --example quickstart [-- MIGRATIONS_DIR DATABASE_PATH]`

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_core::{Connection, MigrationSet};
use flotilla_runner::{LockRequest, MigrationPlan, MigrationRunner, Target};
use flotilla_surrealdb::SurrealRunner;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // At run time (`cargo run` sets it), not the path compiled in, which may be another
    // checkout's sharing the target directory.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..")
        .canonicalize()?;
    let mut args = std::env::args().skip(1);
    let migrations_dir = args
        .next()
        .map_or_else(|| root.join("examples/migrations"), PathBuf::from);
    let database = args
        .next()
        .map_or_else(|| root.join(".flotilla/quickstart.db"), PathBuf::from);

    let migrations = Arc::new(MigrationSet::load(&migrations_dir)?);
    let url = format!("surrealkv://{}", database.display());
    let target = Target::new("quickstart", Connection::new(url, "flotilla", "quickstart"));
    println!(
        "deploying {} migrations from {} to {}",
        migrations.len(),
        migrations_dir.display(),
        target.connection
    );

    let runner = SurrealRunner::new();
    let plan = MigrationPlan::up(Arc::clone(&migrations));
    let lock = LockRequest::new(None, LockRequest::DEFAULT_WAIT);
    let result = runner.apply_locked(&target, &plan, &lock).await?;
    if result.applied.is_empty() {
        println!(
            "nothing to do: already at version {}",
            display(result.version_after.as_ref())
        );
    }
    for version in &result.applied {
        let migration = migrations
            .get(version)
            .map_or("", |m| m.description.as_str());
        println!("  applied {version}  {migration}");
    }
    println!(
        "version {} -> {} in {} ms",
        display(result.version_before.as_ref()),
        display(result.version_after.as_ref()),
        result.duration.as_millis()
    );
    let health = runner.health(&target).await?;
    println!(
        "history table present: {}; lock free: {}",
        health.initialised,
        health.lock.is_none()
    );
    Ok(())
}

fn display(version: Option<&flotilla_core::Version>) -> String {
    version.map_or_else(|| "none".to_owned(), ToString::to_string)
}
