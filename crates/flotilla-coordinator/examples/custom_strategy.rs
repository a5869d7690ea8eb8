//! A deployment strategy of your own: waves by region. Environments are deployed one region
//! at a time (the region is an environment's first tag), each region's environments side by
//! side, and a region with a failure stops the rollout. The coordinator still runs every gate
//! before it, and auto-rollback after it — here a failing migration in the second region
//! rolls both regions back.
//!
//! `cargo run --example custom_strategy`

use std::sync::Arc;

use async_trait::async_trait;
use flotilla_coordinator::{
    DeploymentCoordinator, DeploymentPlan, EnvironmentConfig, EnvironmentRegistry,
};
use flotilla_core::{Connection, MigrationSet};
use flotilla_runner::Backends;
use flotilla_strategies::{Deployment, DeploymentStrategy, StrategyReport, any_failed, run_wave};
use flotilla_surrealdb::SurrealRunner;

/// One region at a time, in the order regions first appear in the plan.
#[derive(Debug)]
struct ByRegion {
    max_concurrent: usize,
}

#[async_trait]
impl DeploymentStrategy for ByRegion {
    fn name(&self) -> &str {
        "by-region"
    }

    async fn deploy(&self, deployment: Arc<Deployment>) -> StrategyReport {
        let mut regions: Vec<(String, Vec<usize>)> = Vec::new();
        for (index, destination) in deployment.destinations.iter().enumerate() {
            let region = destination.target.tags.first().cloned().unwrap_or_default();
            match regions.iter_mut().find(|(name, _)| *name == region) {
                Some((_, members)) => members.push(index),
                None => regions.push((region, vec![index])),
            }
        }
        let mut outcomes = vec![None; deployment.destinations.len()];
        for (region, members) in &regions {
            run_wave(
                &deployment,
                members,
                self.max_concurrent,
                false,
                &mut outcomes,
            )
            .await;
            if any_failed(&outcomes, members) {
                let halted = Some(format!("skipped: region {region} failed"));
                return StrategyReport::finish(&deployment, outcomes, halted);
            }
        }
        StrategyReport::finish(&deployment, outcomes, None)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let migration = |version: &str, up: &str, down: &str| {
        (
            format!("migrations/{version}_step.surql").into(),
            format!("-- @up\n{up}\n-- @down\n{down}\n"),
        )
    };
    let migrations = Arc::new(MigrationSet::from_files([
        migration("0001", "DEFINE TABLE account;", "REMOVE TABLE account;"),
        // Fails where `account:founder` exists already: planted in one eu environment.
        migration(
            "0002",
            "CREATE account:founder SET name = 'Founder';",
            "DELETE account:founder;",
        ),
    ])?);
    let registry = EnvironmentRegistry::new();
    for (name, region) in [
        ("us-1", "us"),
        ("us-2", "us"),
        ("eu-1", "eu"),
        ("eu-2", "eu"),
    ] {
        let connection = Connection::new("mem://", name, "app");
        registry.register(EnvironmentConfig::new(name, connection)?.tags([region]))?;
    }
    let runner = SurrealRunner::new();
    runner
        .session(&flotilla_runner::Target::new(
            "eu-2",
            Connection::new("mem://", "eu-2", "app"),
        ))
        .await?
        .query("CREATE account:founder SET name = 'Squatter'")
        .await?
        .check()?;
    let mut backends = Backends::new();
    runner.register(&mut backends);
    let plan = DeploymentPlan::builder(&registry)
        .environments(["us-1", "us-2", "eu-1", "eu-2"])
        .migrations(migrations)
        .custom_strategy(Arc::new(ByRegion { max_concurrent: 2 }))
        .build()?;
    let report = DeploymentCoordinator::new(backends).deploy(&plan).await?;
    println!("{}: {:?}", report.strategy, report.outcome);
    for environment in &report.environments {
        println!(
            "  {:<5} {:<12} applied {} rolled back {}",
            environment.environment,
            environment.status.to_string(),
            environment.applied.len(),
            environment.rolled_back.len()
        );
    }
    Ok(())
}
