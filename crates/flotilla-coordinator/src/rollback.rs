//! After the strategy: learn from history what this deployment applied where a lost reply or
//! a dead task left it unknown, and — when the deployment failed and auto-rollback is on —
//! revert exactly that, newest first, reporting per target what was reverted and what is
//! still applied.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::{DeploymentStatus, Version};
use flotilla_runner::{Backoff, LockRequest, MigrationPlan, Revert};
use flotilla_strategies::{Deployment, TargetError, TargetOutcome};
use futures::StreamExt;

use crate::coordinator::Settings;
use crate::report::EnvironmentReport;

/// History reads in flight at once while reconciling.
const RECONCILE_CONCURRENCY: usize = 16;

/// For each outcome whose applied migrations are unknown, reads the target's history back
/// (a few times, backing off) and takes the versions whose rows carry this deployment's id.
/// Returns, per target, whether what it applied is now known.
pub(crate) async fn reconcile_unknown(
    deployment: &Deployment,
    deployment_id: &str,
    outcomes: &mut [TargetOutcome],
) -> Vec<bool> {
    let unknown: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.applied_known())
        .map(|(index, _)| index)
        .collect();
    let reads = futures::stream::iter(unknown)
        .map(|index| async move {
            let destination = &deployment.destinations[index];
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
            for read in 1..=3 {
                match destination.runner.history(&destination.target).await {
                    Ok(history) => {
                        let ours: Vec<Version> = history
                            .into_iter()
                            .filter(|row| row.deployment_id.as_deref() == Some(deployment_id))
                            .map(|row| row.version)
                            .collect();
                        return (index, Some(ours));
                    }
                    Err(error) => {
                        tracing::warn!(environment = %destination.target.environment, %error, read, "reading history back failed");
                        if read < 3 {
                            backoff.wait().await;
                        }
                    }
                }
            }
            (index, None)
        })
        .buffer_unordered(RECONCILE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut known: Vec<bool> = outcomes.iter().map(TargetOutcome::applied_known).collect();
    for (index, ours) in reads {
        if let Some(ours) = ours {
            outcomes[index].applied = ours;
            known[index] = true;
        }
    }
    known
}

/// What auto-rollback did, overall.
#[derive(Debug, Default)]
pub(crate) struct Rollback {
    /// Something was reverted somewhere.
    pub(crate) reverted: bool,
    /// Reverting failed somewhere: something this deployment applied may still be applied.
    pub(crate) failed: bool,
}

/// Reverts, newest first, what this deployment applied on each target that applied
/// something (or may have: `known` is false), reading under each target's lock which rows
/// carry this deployment's id. Updates `reports`.
pub(crate) async fn roll_back(
    deployment: &Deployment,
    plan: &Settings,
    lock: &LockRequest,
    known: &[bool],
    reports: &mut [EnvironmentReport],
) -> Rollback {
    let work: Vec<usize> = reports
        .iter()
        .enumerate()
        .filter(|(index, report)| !report.applied.is_empty() || !known[*index])
        // Isolated, a target that succeeded keeps what it applied.
        .filter(|(_, report)| !plan.isolate || report.status != DeploymentStatus::Success)
        .map(|(index, _)| index)
        .collect();
    let reverts = futures::stream::iter(work)
        .map(|index| async move {
            let destination = &deployment.destinations[index];
            let down = MigrationPlan::revert(
                Arc::clone(&plan.migrations),
                Revert::AppliedBy(plan.deployment_id.clone()),
            )
            .with_deployment_id(plan.deployment_id.clone())
            .with_policy(plan.drift_policy);
            let result = destination
                .runner
                .apply_locked(&destination.target, &down, lock)
                .await;
            (index, result)
        })
        .buffer_unordered(plan.max_concurrent.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut summary = Rollback::default();
    for (index, result) in reverts {
        let report = &mut reports[index];
        match result {
            Ok(result) => {
                if result.applied.is_empty() && report.applied.is_empty() {
                    continue; // it had applied nothing after all
                }
                summary.reverted = true;
                report.status = DeploymentStatus::RolledBack;
                report.version_after = result.version_after;
                report.rolled_back = result.applied;
                deployment
                    .progress
                    .status(index, DeploymentStatus::RolledBack);
            }
            Err(error) => {
                summary.failed = true;
                tracing::error!(environment = %report.environment, %error, "auto-rollback failed");
                record_failed_revert(report, &error);
            }
        }
    }
    summary
}

/// A target whose revert failed: what was reverted, what is still applied, and why.
fn record_failed_revert(report: &mut EnvironmentReport, error: &flotilla_runner::RunnerError) {
    let reverted = error.applied_before_failure().to_vec();
    report.still_applied = report
        .applied
        .iter()
        .filter(|v| !reverted.contains(v))
        .cloned()
        .collect();
    report.rolled_back = reverted;
    report.status = DeploymentStatus::Failed;
    let still = if report.still_applied.is_empty() {
        "unknown".to_owned()
    } else {
        report
            .still_applied
            .iter()
            .map(Version::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let message =
        format!("auto-rollback failed: {error}; still applied from this deployment: {still}");
    report.error = Some(match report.error.take() {
        Some(previous) => TargetError {
            class: previous.class,
            message: format!("{}; {message}", previous.message),
        },
        None => TargetError {
            class: error.class(),
            message,
        },
    });
}
