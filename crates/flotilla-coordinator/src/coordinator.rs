//! The coordinator: resolve, approve, pre-flight, gates, deploy, reconcile, roll back, report.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_core::{DeploymentEvent, DeploymentStatus};
use flotilla_runner::util::lock_unpoisoned;
use flotilla_runner::{
    Backends, DynRunner, ErrorClass, LockRequest, MigrationPlan, RunnerError, Target,
};
use flotilla_strategies::{
    Deployment, DeploymentStrategy, Destination, EnvironmentSnapshot, Progress, Stop, TargetError,
    TargetOutcome,
};
use tokio::sync::broadcast;

use crate::approval::{ApproveList, Approver};
use crate::control::{Control, Journal, quiesced, run_start, watch_quiesce};
use crate::error::PlanError;
use crate::gates::{self, Culprits};
use crate::hooks::{EnvironmentHook, Hooks};
use crate::plan::DeploymentPlan;
use crate::preflight::{Facts, preflight};
use crate::report::{DeploymentReport, EnvironmentReport, Gate, Outcome, Refusal};
use crate::rollback::{reconcile_unknown, roll_back};

/// Runs deployment plans against the runners in its [`Backends`].
#[derive(Debug)]
pub struct DeploymentCoordinator {
    backends: Backends,
    approver: Arc<dyn Approver>,
    events: broadcast::Sender<DeploymentEvent>,
    live: Mutex<Option<Progress>>,
    control: Option<Control>,
    hook: Option<Arc<dyn EnvironmentHook>>,
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
            control: None,
            hook: None,
        }
    }

    /// The same coordinator journaling to, auditing to and obeying the quiesce flag of
    /// `control`'s store.
    pub fn with_control(mut self, control: Control) -> Self {
        self.control = Some(control);
        self
    }

    /// The same coordinator telling `hook` of each environment of a rollout once its outcome
    /// is final (see [`EnvironmentHook`]).
    pub fn with_hook(mut self, hook: Arc<dyn EnvironmentHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The control store's settings, if the coordinator has one.
    pub fn control(&self) -> Option<&Control> {
        self.control.as_ref()
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
    pub fn progress(&self) -> Vec<EnvironmentSnapshot> {
        lock_unpoisoned(&self.live)
            .as_ref()
            .map(Progress::snapshot)
            .unwrap_or_default()
    }

    /// Deploys `plan`. `Err` only for plan-level problems (no backend for a URL); everything
    /// that happens to environments — gates refusing, failures, rollbacks — is in the report.
    pub async fn deploy(&self, plan: &DeploymentPlan) -> Result<DeploymentReport, PlanError> {
        self.deploy_until(plan, Stop::new()).await
    }

    /// Deploys `plan` until `stop` is requested: then no further environment starts, those
    /// running finish (each migration is atomic), what this deployment applied is rolled back
    /// when the plan says so, every lease is released, and the report says it was
    /// interrupted. Dropping the returned future requests the stop too: the deployment then
    /// winds down the same way in the background, with nobody to read its report.
    pub async fn deploy_until(
        &self,
        plan: &DeploymentPlan,
        stop: Stop,
    ) -> Result<DeploymentReport, PlanError> {
        let started = Instant::now();
        let environments = crate::passwords::resolve_passwords(&plan.environments).await?;
        let destinations = self.destinations(&environments)?;
        let secrets = crate::hooks::Secrets::of(&environments);
        drop(environments);
        let names = plan.environment_names();
        let progress = Progress::new(&names, self.events.clone());
        *lock_unpoisoned(&self.live) = Some(progress.clone());
        let run = Run {
            plan: Settings::of(plan)?,
            started,
            reports: names.into_iter().map(EnvironmentReport::pending).collect(),
            progress: progress.clone(),
        };
        let journal = match &self.control {
            Some(control) if !plan.dry_run => {
                Some(Journal::start(control, run_start(plan, control), plan).await?)
            }
            _ => None,
        };
        let strategy = plan.deployment_strategy()?;
        let prepared = self.prepare(plan, run, destinations, stop.clone()).await;
        let (run, mut deployment) = match prepared {
            Ok(ready) => ready,
            Err(mut report) => {
                if let Some(journal) = journal {
                    journal.finish(&mut report).await;
                }
                return Ok(report);
            }
        };
        deployment
            .listeners
            .extend(journal.iter().map(Journal::listener));
        let hooks = self.hook.as_ref().map(|hook| {
            Hooks::start(
                Arc::clone(hook),
                &plan.deployment_id,
                &run.reports,
                plan.environments
                    .iter()
                    .map(|e| (e.tenant.clone(), e.tenant_fields.clone()))
                    .collect(),
                !plan.auto_rollback || plan.isolate,
                !plan.auto_rollback,
                secrets,
            )
        });
        deployment
            .listeners
            .extend(hooks.as_ref().map(Hooks::listener));
        let watcher = self
            .control
            .as_ref()
            .map(|control| watch_quiesce(control, stop.clone()));
        // The rollout runs as a task of its own, so that dropping this future stops it
        // gracefully instead of abandoning leases mid-flight.
        let _stop_when_dropped = StopOnDrop(stop);
        let rollout = tokio::spawn(async move {
            let mut report = run.execute(strategy, Arc::new(deployment), watcher).await;
            if let Some(hooks) = hooks {
                report.hooks = Some(hooks.finish(&report.environments).await);
            }
            if let Some(journal) = journal {
                journal.finish(&mut report).await;
            }
            report
        });
        rollout
            .await
            .map_err(|error| PlanError::Internal(error.to_string()))
    }

    /// Everything before the rollout: approval, quiesce, pre-flight, the gates, rehearsal.
    /// `Err` is the report of a deployment that ends here (refused, or a dry run).
    async fn prepare(
        &self,
        plan: &DeploymentPlan,
        mut run: Run,
        destinations: Vec<Destination>,
        stop: Stop,
    ) -> Result<(Run, Deployment), DeploymentReport> {
        if destinations.is_empty() {
            // A shard with no share, or a resume with nothing left.
            return Err(run.finish(Outcome::Succeeded, None, None, false));
        }
        // Approval first: it needs no database.
        let unapproved = gates::approval(plan, self.approver()).await;
        if !unapproved.is_empty() {
            return Err(run.refuse(Gate::Approval, unapproved));
        }
        if let Some(control) = self.control.as_ref().filter(|_| !plan.dry_run)
            && let Some(reason) = quiesced(control).await
        {
            return Err(run.refuse_all(Gate::Quiesce, ErrorClass::Quiesced, reason));
        }
        let up = MigrationPlan::up(Arc::clone(&plan.migrations))
            .with_deployment_id(plan.deployment_id.clone())
            .with_policy(plan.drift_policy);
        let facts = preflight(&destinations, &up, plan.verify_health).await;
        run.record(&facts);
        if let Some((gate, culprits)) = gates::after_preflight(plan, &facts) {
            return Err(run.refuse(gate, culprits));
        }
        if plan.rehearse {
            let culprits = crate::rehearse::gate(&destinations, &facts, &plan.migrations).await;
            if !culprits.is_empty() {
                return Err(run.refuse(Gate::Rehearsal, culprits));
            }
        }
        if plan.dry_run {
            return Err(run.dry_run());
        }
        // Pre-flight and rehearsal take time: a quiesce set meanwhile holds the first target.
        if let Some(control) = self.control.as_ref()
            && let Some(reason) = quiesced(control).await
        {
            return Err(run.refuse_all(Gate::Quiesce, ErrorClass::Quiesced, reason));
        }
        prepare_targets(&destinations).await;
        let deployment = Deployment {
            destinations,
            plan: up,
            lock: LockRequest::new(Some(plan.deployment_id.clone()), plan.lock_timeout)
                .with_lease(plan.lease),
            progress: run.progress.clone(),
            canary_health_gate: plan.verify_health,
            stop,
            listeners: Vec::new(),
            up_to_date: up_to_date(&facts),
        };
        Ok((run, deployment))
    }

    fn destinations(
        &self,
        environments: &[flotilla_core::config::EnvironmentConfig],
    ) -> Result<Vec<Destination>, PlanError> {
        environments
            .iter()
            .map(|environment| {
                let target = crate::inspect::target_of(environment);
                let runner = self.runner_for(&target)?;
                Ok(Destination { target, runner })
            })
            .collect::<Result<Vec<_>, RunnerError>>()
            .map_err(PlanError::from)
    }

    pub(crate) fn runner_for(&self, target: &Target) -> Result<DynRunner, RunnerError> {
        self.backends.runner_for(target)
    }

    pub(crate) fn approver(&self) -> &dyn Approver {
        self.approver.as_ref()
    }
}

/// Requests a stop when dropped: the caller stopped waiting for the deployment.
struct StopOnDrop(Stop);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What a deployment needs of its plan once its environments are resolved (a copy of the
/// plan would copy every environment again).
pub(crate) struct Settings {
    pub(crate) deployment_id: String,
    pub(crate) strategy: String,
    pub(crate) dry_run: bool,
    pub(crate) auto_rollback: bool,
    pub(crate) isolate: bool,
    pub(crate) migrations: Arc<flotilla_core::MigrationSet>,
    pub(crate) drift_policy: flotilla_core::DriftPolicy,
    pub(crate) max_concurrent: usize,
}

impl Settings {
    fn of(plan: &DeploymentPlan) -> Result<Self, PlanError> {
        Ok(Self {
            deployment_id: plan.deployment_id.clone(),
            strategy: plan.deployment_strategy()?.name().to_owned(),
            dry_run: plan.dry_run,
            auto_rollback: plan.auto_rollback,
            isolate: plan.isolate,
            migrations: Arc::clone(&plan.migrations),
            drift_policy: plan.drift_policy,
            max_concurrent: plan.strategy.max_concurrent,
        })
    }
}

/// One deployment's report in the making.
struct Run {
    plan: Settings,
    started: Instant,
    reports: Vec<EnvironmentReport>,
    progress: Progress,
}

impl Run {
    /// What pre-flight found goes into the report: version before, pending, unreadable.
    fn record(&mut self, facts: &[Facts]) {
        for (report, found) in self.reports.iter_mut().zip(facts) {
            match &found.read {
                Ok(read) => {
                    report.pending.clone_from(&read.pending);
                    report.version_before.clone_from(&read.version_before);
                }
                // Unreadable now (unreachable, say): it fails at its turn, and the strategy
                // decides what that means for the others.
                Err(error) => report.error = Some(TargetError::from_runner(error)),
            }
        }
    }

    /// Marks the culprits Failed (refused) and everyone else Skipped; nothing has run.
    fn refuse(mut self, gate: Gate, culprits: Culprits) -> DeploymentReport {
        let gate_name = format!("{gate:?}").to_lowercase();
        for (index, report) in self.reports.iter_mut().enumerate() {
            let (status, message) = match culprits.get(&index) {
                Some(reason) => (DeploymentStatus::Refused, reason.clone()),
                None => (
                    DeploymentStatus::Skipped,
                    format!("deployment refused by the {gate_name} gate before anything ran"),
                ),
            };
            report.status = status;
            report.version_after.clone_from(&report.version_before);
            report.error = Some(TargetError {
                class: ErrorClass::RefusedByGate,
                message,
            });
            self.progress.status(index, status);
        }
        let refusal = Refusal {
            gate,
            reasons: culprits.into_values().collect(),
        };
        self.finish(Outcome::Refused, Some(refusal), None, false)
    }

    /// Marks every environment Skipped for one `reason` of `class` (the fleet is quiesced);
    /// nothing has run.
    fn refuse_all(mut self, gate: Gate, class: ErrorClass, reason: String) -> DeploymentReport {
        for (index, report) in self.reports.iter_mut().enumerate() {
            report.status = DeploymentStatus::Skipped;
            report.version_after.clone_from(&report.version_before);
            report.error = Some(TargetError {
                class,
                message: reason.clone(),
            });
            self.progress.status(index, DeploymentStatus::Skipped);
        }
        let refusal = Refusal {
            gate,
            reasons: vec![reason],
        };
        self.finish(Outcome::Refused, Some(refusal), None, false)
    }

    fn dry_run(mut self) -> DeploymentReport {
        let mut outcome = Outcome::DryRun;
        for report in &mut self.reports {
            report.version_after.clone_from(&report.version_before);
            if report.error.is_some() {
                report.status = DeploymentStatus::Failed;
                outcome = Outcome::Failed;
            }
        }
        self.finish(outcome, None, None, false)
    }

    /// Runs the strategy, learns what it applied where that is unknown, rolls back when the
    /// deployment failed or was stopped (and the plan says so), and reports.
    async fn execute(
        mut self,
        strategy: Arc<dyn DeploymentStrategy>,
        deployment: Arc<Deployment>,
        quiesce_watcher: Option<tokio::task::JoinHandle<()>>,
    ) -> DeploymentReport {
        let ran = strategy.deploy(Arc::clone(&deployment)).await;
        if let Some(watcher) = quiesce_watcher {
            watcher.abort();
        }
        // A pause (quiesce) keeps what ran; a stop rolls it back like a failure.
        let interrupted = deployment.stop.is_interrupted();
        let paused = deployment.stop.pause_reason().filter(|_| !interrupted);
        let failed = ran.failed() || interrupted;
        let mut outcomes = ran.outcomes;
        let known = reconcile_unknown(&deployment, &self.plan.deployment_id, &mut outcomes).await;
        for (report, outcome) in self.reports.iter_mut().zip(&outcomes) {
            apply_outcome(report, outcome);
        }
        let mut rollback = crate::rollback::Rollback::default();
        if failed && self.plan.auto_rollback {
            rollback = roll_back(
                &deployment,
                &self.plan,
                &deployment.lock,
                &known,
                &mut self.reports,
            )
            .await;
        }
        let outcome = if rollback.failed {
            Outcome::RollbackFailed
        } else if interrupted {
            Outcome::Interrupted
        } else if !failed && paused.is_some() {
            Outcome::Paused
        } else if !failed {
            Outcome::Succeeded
        } else if rollback.reverted && !self.plan.isolate {
            Outcome::RolledBack
        } else {
            Outcome::Failed
        };
        let mut report = self.finish(outcome, None, ran.halted, interrupted);
        report.paused = paused;
        report
    }

    fn finish(
        self,
        outcome: Outcome,
        refusal: Option<Refusal>,
        halted: Option<String>,
        interrupted: bool,
    ) -> DeploymentReport {
        DeploymentReport {
            deployment_id: self.plan.deployment_id.clone(),
            strategy: self.plan.strategy.clone(),
            dry_run: self.plan.dry_run,
            outcome,
            refusal,
            halted,
            interrupted,
            paused: None,
            audit: None,
            hooks: None,
            environments: self.reports,
            duration: self.started.elapsed(),
        }
    }
}

/// Targets pre-flight found with nothing pending, and their version.
fn up_to_date(facts: &[Facts]) -> std::collections::HashMap<usize, Option<flotilla_core::Version>> {
    facts
        .iter()
        .enumerate()
        .filter_map(|(index, found)| match &found.read {
            Ok(read) if read.pending.is_empty() => Some((index, read.version_before.clone())),
            _ => None,
        })
        .collect()
}

pub(crate) fn apply_outcome(report: &mut EnvironmentReport, outcome: &TargetOutcome) {
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
    report.started_at.clone_from(&outcome.started_at);
    report.finished_at.clone_from(&outcome.finished_at);
    report.error.clone_from(&outcome.error);
    report.lock_takeover.clone_from(&outcome.lock_takeover);
}

/// Lets each runner prepare the targets the rollout will write to, together (a failure is
/// only logged: each target then prepares itself).
async fn prepare_targets(destinations: &[Destination]) {
    let mut groups: Vec<(&flotilla_runner::DynRunner, Vec<flotilla_runner::Target>)> = Vec::new();
    for destination in destinations {
        match groups
            .iter_mut()
            .find(|(runner, _)| Arc::ptr_eq(runner, &destination.runner))
        {
            Some((_, targets)) => targets.push(destination.target.clone()),
            None => groups.push((&destination.runner, vec![destination.target.clone()])),
        }
    }
    for (runner, targets) in groups {
        if let Err(error) = runner.prepare(&targets).await {
            tracing::warn!(%error, "preparing the targets together failed; each prepares itself");
        }
    }
}
