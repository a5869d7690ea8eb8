//! What a deployment did, per environment, in plan order.

use std::time::Duration;

use flotilla_core::{DeploymentStatus, Version};
use flotilla_runner::LockInfo;
use flotilla_runner::util::serialize_millis;
use flotilla_strategies::TargetError;

/// The result of [`crate::DeploymentCoordinator::deploy`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DeploymentReport {
    /// The deployment's id.
    pub deployment_id: String,
    /// The strategy used (its name).
    pub strategy: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Set when a gate refused the deployment before anything ran.
    pub refusal: Option<Refusal>,
    /// Why the strategy stopped early, if it did.
    pub halted: Option<String>,
    /// Whether the deployment was stopped (a signal, a cancelled token) before it finished.
    pub interrupted: bool,
    /// Why the rollout was paused (the fleet was quiesced), when it was: targets not started
    /// were skipped, what ran is kept, and `flotilla deploy --resume` finishes it.
    pub paused: Option<String>,
    /// What the journal and audit trail did, when the coordinator has a control store.
    pub audit: Option<crate::control::AuditSummary>,
    /// What the per-environment hooks did, when the coordinator has one and the rollout ran.
    pub hooks: Option<crate::hooks::HookSummary>,
    /// Every planned environment exactly once, in plan order.
    pub environments: Vec<EnvironmentReport>,
    /// Wall time.
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
}

impl DeploymentReport {
    /// Whether every environment succeeded (or, in a dry run, could be read).
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Succeeded | Outcome::DryRun)
    }

    /// The environment called `name`.
    pub fn environment(&self, name: &str) -> Option<&EnvironmentReport> {
        self.environments.iter().find(|e| e.environment == name)
    }
}

/// How a deployment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every environment succeeded.
    Succeeded,
    /// Some environment failed; nothing needed or could be rolled back.
    Failed,
    /// Some environment failed and this deployment's migrations were reverted.
    RolledBack,
    /// Some environment failed, and reverting this deployment's migrations failed somewhere:
    /// the report says per environment what is still applied.
    RollbackFailed,
    /// The deployment was stopped before it finished; environments that had not started
    /// were skipped, and (with auto-rollback) what it applied was reverted.
    Interrupted,
    /// The rollout was paused (quiesced) before it finished: targets not started were
    /// skipped, what ran is kept (not rolled back); resume it later.
    Paused,
    /// A gate refused before anything ran.
    Refused,
    /// A dry run: nothing was applied.
    DryRun,
}

/// Which gate refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Pre-flight health.
    Health,
    /// Approval of environments that require it.
    Approval,
    /// Destructive statements towards environments that forbid them.
    Destructive,
    /// History disagrees with the migrations directory.
    Drift,
    /// Auto-rollback is on but a pending migration has no down section.
    Rollback,
    /// Rehearsing the migrations on a scratch database found problems.
    Rehearsal,
    /// The fleet is quiesced.
    Quiesce,
}

/// Why a gate refused: one reason per culprit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The gate.
    pub gate: Gate,
    /// Each culprit: environment, migration, statement, line where applicable.
    pub reasons: Vec<String>,
}

/// One environment's part in the deployment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EnvironmentReport {
    /// The environment.
    pub environment: String,
    /// Final status.
    pub status: DeploymentStatus,
    /// Versions this deployment applied here (before any rollback).
    pub applied: Vec<Version>,
    /// Versions reverted here by auto-rollback.
    pub rolled_back: Vec<Version>,
    /// Versions this deployment applied here that are still applied although they should
    /// have been rolled back (auto-rollback failed here).
    pub still_applied: Vec<Version>,
    /// Versions pending here when the deployment was planned (what a dry run would apply).
    pub pending: Vec<Version>,
    /// Newest applied version before.
    pub version_before: Option<Version>,
    /// Newest applied version after.
    pub version_after: Option<Version>,
    /// Time spent here.
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    /// When work here started (RFC 3339, UTC); `None` when it never started.
    pub started_at: Option<String>,
    /// When work here ended.
    pub finished_at: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<TargetError>,
    /// An expired lock taken over from a dead holder.
    pub lock_takeover: Option<LockInfo>,
}

impl EnvironmentReport {
    /// The version this environment is at once everything pending is applied: what a dry
    /// run's deploy would end at.
    pub fn planned_version(&self) -> Option<Version> {
        self.pending
            .iter()
            .chain(&self.version_before)
            .max()
            .cloned()
    }

    pub(crate) fn pending(environment: String) -> Self {
        Self {
            environment,
            status: DeploymentStatus::Pending,
            applied: Vec::new(),
            rolled_back: Vec::new(),
            still_applied: Vec::new(),
            pending: Vec::new(),
            version_before: None,
            version_after: None,
            duration: Duration::ZERO,
            started_at: None,
            finished_at: None,
            error: None,
            lock_takeover: None,
        }
    }
}
