//! Deploys the bundled example migrations to a small fleet of embedded environments with
//! each strategy in turn, printing every environment's outcome.
//!
//! `cargo run --example fleet`

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_coordinator::{
    DeploymentCoordinator, DeploymentPlan, EnvironmentConfig, EnvironmentRegistry,
};
use flotilla_core::{Connection, MigrationSet};
use flotilla_runner::Backends;
use flotilla_strategies::StrategyKind;
use flotilla_surrealdb::SurrealRunner;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // At run time (`cargo run` sets it), not the path compiled in, which may be another
    // checkout's sharing the target directory.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..")
        .canonicalize()?;
    let migrations = Arc::new(MigrationSet::load(root.join("examples/migrations"))?);

    let runner = SurrealRunner::new();
    let mut backends = Backends::new();
    runner.register(&mut backends);
    let coordinator = DeploymentCoordinator::new(backends);

    for kind in StrategyKind::ALL {
        // A fresh fleet per strategy: dev first, then staging, then six tenants.
        let registry = EnvironmentRegistry::new();
        let fleet = |name: &str, priority: i32, tag: &str| {
            EnvironmentConfig::new(
                name,
                Connection::new("mem://", format!("{kind}-{name}"), "app"),
            )
            .map(|e| e.priority(priority).tags([tag]))
        };
        registry.register(fleet("dev", 10, "tier")?)?;
        registry.register(fleet("staging", 20, "tier")?)?;
        for i in 1..=6 {
            registry.register(fleet(&format!("tenant-{i}"), 30, "tenant")?)?;
        }
        let plan = DeploymentPlan::builder(&registry)
            .all()
            .migrations(Arc::clone(&migrations))
            .kind(kind)
            .batch_size(3)
            .canary_percentage(25.0)
            .max_concurrent(4)
            .build()?;
        let report = coordinator.deploy(&plan).await?;
        println!(
            "{kind}: {:?} in {} ms",
            report.outcome,
            report.duration.as_millis()
        );
        for environment in &report.environments {
            let applied: Vec<String> = environment
                .applied
                .iter()
                .map(ToString::to_string)
                .collect();
            println!(
                "  {:<10} {:<8} applied [{}]",
                environment.environment,
                environment.status.to_string(),
                applied.join(", ")
            );
        }
    }
    Ok(())
}
