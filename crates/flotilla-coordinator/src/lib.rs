//! flotilla's coordinator: one call deploys a set of migrations to many environments.
//!
//! [`EnvironmentRegistry`] names the environments; [`DeploymentPlan::builder`] selects them
//! and validates the strategy before anything runs; [`DeploymentCoordinator::deploy`]
//! resolves runners, asks for approvals, probes health concurrently, reads every target's
//! history (drift, pending), lints destructive statements, rehearses the pending migrations
//! on a scratch copy of a target's schema, runs the strategy, rolls back exactly what this
//! deployment applied when it fails, and reports every environment once, in plan order.
//! Status changes are events on a broadcast channel.
//!
//! Invariant: the coordinator never names a backend; it sees `dyn MigrationRunner` through
//! [`flotilla_runner::Backends`]. It never prints; it reports through values, events and
//! `tracing`.

mod approval;
mod command;
pub mod control;
mod coordinator;
mod environment;
mod error;
pub mod fleet;
mod gates;
mod hooks;
mod inspect;
mod passwords;
mod plan;
mod preflight;
mod rehearse;
mod report;
mod revert;
mod rollback;
mod shard;

pub use approval::{ApproveAll, ApproveList, Approver};
pub use command::kill_running;
pub use coordinator::DeploymentCoordinator;
pub use environment::{EnvironmentRegistry, Selection};
pub use error::PlanError;
pub use flotilla_core::config::{EnvironmentConfig, InvalidEnvironmentName, validate_name};
pub use flotilla_runner::{Rehearsal, RehearsalFinding, RehearsalProblem};
pub use flotilla_strategies::Stop;
pub use hooks::{CommandHook, EnvironmentHook, HookEvent, HookFailure, HookSummary};
pub use inspect::EnvironmentStatus;
pub use passwords::{PASSWORD_COMMAND_TIMEOUT, PasswordError, resolve_passwords};
pub use plan::{DeploymentPlan, DeploymentPlanBuilder};
pub use report::{DeploymentReport, EnvironmentReport, Gate, Outcome, Refusal};
pub use revert::{RollbackError, RollbackPlan};
pub use shard::{MAX_SHARDS, Shard};
