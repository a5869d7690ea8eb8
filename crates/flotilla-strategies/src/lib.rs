//! Deployment strategies for flotilla: [`Sequential`], [`Parallel`], [`Rolling`] and
//! [`Canary`] behind the [`DeploymentStrategy`] trait, plus the per-target step they all run
//! ([`Deployment::deploy_target`]: lock → execute → release, always) and live progress.
//!
//! Invariant: strategies see only `dyn MigrationRunner`; they know no backend. Concurrency is
//! bounded by a semaphore and targets start in plan order.

mod deployment;
mod strategy;

pub use deployment::{
    Deployment, Destination, EnvironmentSnapshot, Progress, Stop, TargetError, TargetListener,
    TargetOutcome,
};
pub use strategy::{
    Canary, DeploymentStrategy, Parallel, Rolling, Sequential, StrategyConfig, StrategyError,
    StrategyKind, StrategyReport, any_failed, canary_count, run_wave,
};
