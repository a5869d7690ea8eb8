//! The coordinator: resolve, approve, probe, check, deploy, roll back, report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_core::{DeploymentEvent, DeploymentStatus, Migration, Version, current_version};
use flotilla_runner::execute::steps;
use flotilla_runner::{
    Backends, ErrorClass, LockRequest, MigrationPlan, MigrationRunnerExt, RunnerError,
    TenantContext,
};
use flotilla_strategies::{
    Deployment, EnvironmentSnapshot, Progress, Target, TargetError, TargetOutcome,
};
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::approval::{ApproveList, Approver};
use crate::error::PlanError;
use crate::plan::DeploymentPlan;
use crate::report::{DeploymentReport, EnvironmentReport, Gate, Outcome, Refusal};

/// Pre-flight reads (health, history) in flight at once; they are cheap reads, so more than
/// a deploy's `max_concurrent`, but bounded so a thousand targets do not open a thousand
/// requests at once.
const PREFLIGHT_CONCURRENCY: usize = 64;

/// Runs deployment plans against the runners in its [`Backends`].
#[derive(Debug)]
pub struct DeploymentCoordinator {
    backends: Backends,
    approver: Arc<dyn Approver>,
    events: broadcast::Sender<DeploymentEvent>,
    live: Mutex<Option<Progress>>,
}

/// What pre-flight learned about one target.
struct Preflight {
    history_read: bool,
    version_before: Option<Version>,
    pending: Vec<Version>,
}

impl DeploymentCoordinator {
    /// A coordinator with no approvals (environments requiring approval are refused).
    pub fn new(backends: Backends) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            backends,
            approver: Arc::new(ApproveList::default()),
            events,
            live: Mutex::new(None),
        }
    }

    /// The same coordinator asking `approver` for approvals.
    pub fn with_approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = approver;
        self
    }

    /// Every status change of every deployment from now on. A slow reader that falls more
    /// than 4096 events behind misses the oldest (see `broadcast::error::RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<DeploymentEvent> {
        self.events.subscribe()
    }

    /// The live state of the current (or last) deployment's environments.
    pub fn status(&self) -> Vec<EnvironmentSnapshot> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Progress::snapshot)
            .unwrap_or_default()
    }

    /// Deploys `plan`. `Err` only for plan-level problems (no backend for a URL); everything
    /// that happens to environments — gates refusing, failures, rollbacks — is in the report.
    pub async fn deploy(&self, plan: &DeploymentPlan) -> Result<DeploymentReport, PlanError> {
        let started = Instant::now();
        let targets = plan
            .environments
            .iter()
            .map(|environment| {
                let tenant = TenantContext {
                    environment: environment.name.clone(),
                    connection: environment.connection.clone(),
                    tags: environment.tags.clone(),
                };
                let runner = self.backends.runner_for(&tenant)?;
                Ok(Target { tenant, runner })
            })
            .collect::<Result<Vec<_>, RunnerError>>()?;
        let names = plan.environment_names();
        let progress = Progress::new(&names, self.events.clone());
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress.clone());
        let mut reports: Vec<EnvironmentReport> = names
            .iter()
            .cloned()
            .map(EnvironmentReport::pending)
            .collect();
        let finish = |reports, outcome, refusal, halted| DeploymentReport {
            deployment_id: plan.deployment_id.clone(),
            strategy: plan.strategy.kind,
            dry_run: plan.dry_run,
            outcome,
            refusal,
            halted,
            environments: reports,
            duration: started.elapsed(),
        };

        // Approval first: it needs no database.
        let needing: Vec<String> = plan
            .environments
            .iter()
            .filter(|e| e.require_approval)
            .map(|e| e.name.clone())
            .collect();
        if !needing.is_empty() {
            let approved = self.approver.approve(&needing).await;
            let refused: BTreeMap<usize, String> = needing
                .iter()
                .filter(|name| !approved.contains(name))
                .filter_map(|name| {
                    let index = names.iter().position(|n| n == name)?;
                    Some((
                        index,
                        format!("{name} requires approval and was not approved (approve it with --approve {name} or --yes)"),
                    ))
                })
                .collect();
            if !refused.is_empty() {
                let refusal = refuse(&mut reports, &progress, Gate::Approval, refused);
                return Ok(finish(reports, Outcome::Refused, Some(refusal), None));
            }
        }

        // Health, concurrently. A probe may bring the history along (one round trip saved).
        let mut probed_history: Vec<Option<Vec<flotilla_core::AppliedMigration>>> =
            vec![None; targets.len()];
        if plan.verify_health {
            let probes = futures::stream::iter(targets.iter().enumerate())
                .map(|(index, target)| async move {
                    (index, target.runner.health(&target.tenant).await)
                })
                .buffered(PREFLIGHT_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut unhealthy = BTreeMap::new();
            for (index, probe) in probes {
                match probe {
                    Ok(health) => probed_history[index] = health.history,
                    Err(error) => {
                        unhealthy.insert(index, format!("unhealthy: {error}"));
                    }
                }
            }
            if !unhealthy.is_empty() {
                let refusal = refuse(&mut reports, &progress, Gate::Health, unhealthy);
                return Ok(finish(reports, Outcome::Refused, Some(refusal), None));
            }
        }

        // History, drift and pending per target, concurrently; nothing is written.
        let up = MigrationPlan::up(Arc::clone(&plan.migrations))
            .with_deployment_id(plan.deployment_id.clone())
            .with_policy(plan.drift_policy);
        let reads = futures::stream::iter(targets.iter().zip(probed_history))
            .map(|(target, probed)| {
                let up = &up;
                async move {
                    let history = match probed {
                        Some(history) => history,
                        None => target.runner.history(&target.tenant).await?,
                    };
                    let pending = steps(&target.tenant, up, &history)?
                        .into_iter()
                        .map(|m| m.version.clone())
                        .collect();
                    Ok::<_, RunnerError>(Preflight {
                        history_read: true,
                        version_before: current_version(&history).cloned(),
                        pending,
                    })
                }
            })
            .buffered(PREFLIGHT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut drifted = BTreeMap::new();
        let mut preflight = Vec::with_capacity(reads.len());
        for (index, read) in reads.into_iter().enumerate() {
            match read {
                Ok(found) => preflight.push(found),
                Err(error) => {
                    if matches!(
                        error.class(),
                        ErrorClass::ChecksumMismatch | ErrorClass::Drift
                    ) {
                        drifted.insert(index, error.to_string());
                    } else {
                        // Unreadable now (unreachable, say): it fails at its turn, and the
                        // strategy decides what that means for the others.
                        reports[index].error = Some(TargetError::from_runner(&error));
                    }
                    preflight.push(Preflight {
                        history_read: false,
                        version_before: None,
                        pending: Vec::new(),
                    });
                }
            }
        }
        for (report, found) in reports.iter_mut().zip(&preflight) {
            report.pending.clone_from(&found.pending);
            report.version_before.clone_from(&found.version_before);
        }
        if !drifted.is_empty() {
            let refusal = refuse(&mut reports, &progress, Gate::Drift, drifted);
            return Ok(finish(reports, Outcome::Refused, Some(refusal), None));
        }

        // Destructive statements towards environments that forbid them.
        let mut destructive = BTreeMap::new();
        for (index, environment) in plan.environments.iter().enumerate() {
            if environment.allow_destructive {
                continue;
            }
            let found = &preflight[index];
            let candidates: Vec<&Migration> = if found.history_read {
                found
                    .pending
                    .iter()
                    .filter_map(|v| plan.migrations.get(v))
                    .collect()
            } else {
                // Unknown history: judge every migration.
                plan.migrations.as_slice().iter().collect()
            };
            let findings: Vec<String> = candidates
                .into_iter()
                .flat_map(flotilla_core::lint::destructive)
                .map(|finding| {
                    format!(
                        "{} does not allow destructive changes: {finding}",
                        environment.name
                    )
                })
                .collect();
            if !findings.is_empty() {
                destructive.insert(index, findings.join("; "));
            }
        }
        if !destructive.is_empty() {
            let refusal = refuse(&mut reports, &progress, Gate::Destructive, destructive);
            return Ok(finish(reports, Outcome::Refused, Some(refusal), None));
        }

        // Auto-rollback needs a way back for everything that may run.
        if plan.auto_rollback && !plan.dry_run {
            let mut irreversible = BTreeMap::new();
            for (index, found) in preflight.iter().enumerate() {
                let missing: Vec<String> = found
                    .pending
                    .iter()
                    .filter_map(|v| plan.migrations.get(v))
                    .filter(|m| m.down.is_none())
                    .map(|m| format!("{} ({})", m.version, m.path.display()))
                    .collect();
                if !missing.is_empty() {
                    irreversible.insert(
                        index,
                        format!(
                            "{}: pending migration(s) without a down section: {} (add `-- @down` or deploy without auto-rollback)",
                            names[index],
                            missing.join(", ")
                        ),
                    );
                }
            }
            if !irreversible.is_empty() {
                let refusal = refuse(&mut reports, &progress, Gate::Rollback, irreversible);
                return Ok(finish(reports, Outcome::Refused, Some(refusal), None));
            }
        }

        if plan.dry_run {
            let mut outcome = Outcome::DryRun;
            for report in &mut reports {
                if report.error.is_some() {
                    report.status = DeploymentStatus::Failed;
                    outcome = Outcome::Failed;
                }
            }
            return Ok(finish(reports, outcome, None, None));
        }

        // Deploy.
        let strategy = plan.strategy.build()?;
        let lock = LockRequest::new(Some(plan.deployment_id.clone()), plan.lock_timeout);
        let deployment = Arc::new(Deployment {
            targets,
            plan: up,
            lock: lock.clone(),
            progress: progress.clone(),
            canary_health_gate: plan.verify_health,
        });
        let ran = strategy.deploy(Arc::clone(&deployment)).await;
        let failed = ran.failed();
        for (report, outcome) in reports.iter_mut().zip(&ran.outcomes) {
            apply_outcome(report, outcome);
        }

        let mut rolled_back_any = false;
        if failed && plan.auto_rollback {
            rolled_back_any = self
                .roll_back(&deployment, plan, &lock, &ran.outcomes, &mut reports)
                .await;
        }
        let outcome = match (failed, rolled_back_any) {
            (false, _) => Outcome::Succeeded,
            (true, true) => Outcome::RolledBack,
            (true, false) => Outcome::Failed,
        };
        Ok(finish(reports, outcome, None, ran.halted))
    }

    /// Reverts, newest first, exactly what this deployment applied on each target; returns
    /// whether anything was reverted.
    async fn roll_back(
        &self,
        deployment: &Deployment,
        plan: &DeploymentPlan,
        lock: &LockRequest,
        outcomes: &[TargetOutcome],
        reports: &mut [EnvironmentReport],
    ) -> bool {
        let work: Vec<(usize, Vec<Version>)> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.applied.is_empty())
            .map(|(index, o)| (index, o.applied.iter().rev().cloned().collect()))
            .collect();
        let reverts = futures::stream::iter(work)
            .map(|(index, versions)| async move {
                let target = &deployment.targets[index];
                let down = MigrationPlan::down(Arc::clone(&plan.migrations), versions)
                    .with_deployment_id(plan.deployment_id.clone())
                    .with_policy(plan.drift_policy);
                let result = target
                    .runner
                    .apply_locked(&target.tenant, &down, lock)
                    .await;
                (index, result)
            })
            .buffer_unordered(plan.strategy.max_concurrent.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut any = false;
        for (index, result) in reverts {
            let report = &mut reports[index];
            match result {
                Ok(result) => {
                    any = true;
                    report.status = DeploymentStatus::RolledBack;
                    report.rolled_back = result.applied;
                    report.version_after = result.version_after;
                    deployment
                        .progress
                        .status(index, DeploymentStatus::RolledBack);
                }
                Err(error) => {
                    tracing::error!(environment = %report.environment, %error, "auto-rollback failed");
                    report.status = DeploymentStatus::Failed;
                    let message = format!("auto-rollback failed: {error}");
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
            }
        }
        any
    }
}

fn apply_outcome(report: &mut EnvironmentReport, outcome: &TargetOutcome) {
    report.status = outcome.status;
    report.applied.clone_from(&outcome.applied);
    if outcome.version_before.is_some() {
        report.version_before.clone_from(&outcome.version_before);
    }
    report.version_after = match outcome.status {
        DeploymentStatus::Success => outcome.version_after.clone(),
        _ => outcome
            .applied
            .last()
            .cloned()
            .or_else(|| report.version_before.clone()),
    };
    report.duration = outcome.duration;
    report.error.clone_from(&outcome.error);
    report.lock_takeover.clone_from(&outcome.lock_takeover);
}

/// Marks the culprits Failed (refused) and everyone else Skipped; nothing has run.
fn refuse(
    reports: &mut [EnvironmentReport],
    progress: &Progress,
    gate: Gate,
    culprits: BTreeMap<usize, String>,
) -> Refusal {
    for (index, report) in reports.iter_mut().enumerate() {
        let (status, message) = match culprits.get(&index) {
            Some(reason) => (DeploymentStatus::Failed, reason.clone()),
            None => (
                DeploymentStatus::Skipped,
                format!("deployment refused by the {gate:?} gate before anything ran")
                    .to_lowercase(),
            ),
        };
        report.status = status;
        report.version_after.clone_from(&report.version_before);
        report.error = Some(TargetError {
            class: ErrorClass::RefusedByGate,
            message,
        });
        progress.status(index, status);
    }
    Refusal {
        gate,
        reasons: culprits.into_values().collect(),
    }
}
