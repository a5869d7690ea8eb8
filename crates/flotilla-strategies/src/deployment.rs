//! One deployment's shared state and the per-target step every strategy runs:
//! lock → execute (drift check, pending, apply) → release, with events along the way.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use flotilla_core::{DeploymentEvent, DeploymentStatus, Version};
use flotilla_runner::util::{lock_unpoisoned, serialize_millis};
use flotilla_runner::{
    Direction, DynRunner, ErrorClass, LockInfo, LockRequest, MigrationObserver, MigrationPlan,
    RunnerError, Target,
};
use tokio::sync::broadcast;

/// One environment to deploy: where it is and which runner serves it.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The environment and its database.
    pub target: Target,
    /// The runner for its URL.
    pub runner: DynRunner,
}

/// What went wrong on a target, in reportable form.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetError {
    /// Stable class for reports and exit codes.
    pub class: ErrorClass,
    /// The full message, naming environment, migration, file and line where known.
    pub message: String,
}

impl TargetError {
    /// From a runner error.
    pub fn from_runner(error: &RunnerError) -> Self {
        Self {
            class: error.class(),
            message: error.to_string(),
        }
    }
}

/// How one target fared.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetOutcome {
    /// Success, Failed or Skipped (the coordinator adds RolledBack).
    pub status: DeploymentStatus,
    /// Versions this deployment applied (committed), in order — also on failure.
    pub applied: Vec<Version>,
    /// Newest applied version before, when known.
    pub version_before: Option<Version>,
    /// Newest applied version after, when known.
    pub version_after: Option<Version>,
    /// Time spent on this target.
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    /// When work on it started and ended (RFC 3339, UTC); `None` for a target never started.
    pub started_at: Option<String>,
    /// See `started_at`.
    pub finished_at: Option<String>,
    /// Why it failed or was skipped.
    pub error: Option<TargetError>,
    /// An expired lease taken over from a dead holder.
    pub lock_takeover: Option<LockInfo>,
}

impl TargetOutcome {
    /// A target that never started, and why.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self::not_started(ErrorClass::RefusedByGate, reason)
    }

    /// A target that never started because the deployment was stopped.
    pub fn cancelled(reason: impl Into<String>) -> Self {
        Self::not_started(ErrorClass::Cancelled, reason)
    }

    /// A target that never started, of `class`, and why.
    pub fn not_started(class: ErrorClass, reason: impl Into<String>) -> Self {
        Self {
            status: DeploymentStatus::Skipped,
            applied: Vec::new(),
            version_before: None,
            version_after: None,
            duration: Duration::ZERO,
            started_at: None,
            finished_at: None,
            error: Some(TargetError {
                class,
                message: reason.into(),
            }),
            lock_takeover: None,
        }
    }

    /// Whether what this target applied is known exactly (a lost reply that history could
    /// not settle, or a task that died, leaves it unknown until history is read).
    pub fn applied_known(&self) -> bool {
        self.error
            .as_ref()
            .is_none_or(|e| e.class != ErrorClass::OutcomeUnknown)
    }

    fn failed(error: &RunnerError, duration: Duration) -> Self {
        Self {
            status: DeploymentStatus::Failed,
            applied: error.applied_before_failure().to_vec(),
            version_before: None,
            version_after: None,
            duration,
            started_at: None,
            finished_at: None,
            error: Some(TargetError::from_runner(error)),
            lock_takeover: None,
        }
    }
}

/// The live state of one environment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EnvironmentSnapshot {
    /// The environment.
    pub environment: String,
    /// Its status now.
    pub status: DeploymentStatus,
    /// Migrations committed so far in this deployment.
    pub applied: Vec<Version>,
    /// The migration running now, if any.
    pub current: Option<Version>,
}

/// Publishes status changes as events and keeps a live snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Progress {
    events: broadcast::Sender<DeploymentEvent>,
    snapshot: Arc<Mutex<Vec<EnvironmentSnapshot>>>,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("environments", &self.lock().len())
            .finish()
    }
}

impl Progress {
    /// Progress of `environments` (in plan order), all Pending, publishing on `events`.
    pub fn new(environments: &[String], events: broadcast::Sender<DeploymentEvent>) -> Self {
        let snapshot = environments
            .iter()
            .map(|name| EnvironmentSnapshot {
                environment: name.clone(),
                status: DeploymentStatus::Pending,
                applied: Vec::new(),
                current: None,
            })
            .collect();
        Self {
            events,
            snapshot: Arc::new(Mutex::new(snapshot)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<EnvironmentSnapshot>> {
        lock_unpoisoned(&self.snapshot)
    }

    /// Records and publishes environment `index`'s new status.
    pub fn status(&self, index: usize, status: DeploymentStatus) {
        if let Some(name) = self.record(index, status) {
            // No subscriber is fine: events are for whoever listens.
            let _ = self.events.send(DeploymentEvent::now(name, status, None));
        }
    }

    /// Records and publishes the end of environment `index`'s turn: its status, with when it
    /// started, how long it took and its error's class.
    pub fn finished(&self, index: usize, outcome: &TargetOutcome) {
        if let Some(name) = self.record(index, outcome.status) {
            let class = outcome.error.as_ref().and_then(|error| {
                serde_json::to_value(error.class)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            });
            let event = DeploymentEvent::now(name, outcome.status, None).ending(
                outcome.started_at.clone(),
                outcome.duration,
                class,
            );
            let _ = self.events.send(event);
        }
    }

    /// Records environment `index`'s new status; its name, unless there is no such index.
    fn record(&self, index: usize, status: DeploymentStatus) -> Option<String> {
        let mut snapshot = self.lock();
        let entry = snapshot.get_mut(index)?;
        entry.status = status;
        entry.current = None;
        Some(entry.environment.clone())
    }

    fn migration(&self, index: usize, version: &Version, committed: bool, direction: Direction) {
        let name = {
            let mut snapshot = self.lock();
            let Some(entry) = snapshot.get_mut(index) else {
                return;
            };
            if committed {
                entry.current = None;
                match direction {
                    Direction::Up => entry.applied.push(version.clone()),
                    Direction::Down => entry.applied.retain(|v| v != version),
                }
            } else {
                entry.current = Some(version.clone());
            }
            entry.environment.clone()
        };
        if committed {
            let _ = self.events.send(DeploymentEvent::now(
                name,
                DeploymentStatus::InProgress,
                Some(version.clone()),
            ));
        }
    }

    /// The live state of every environment, in plan order.
    pub fn snapshot(&self) -> Vec<EnvironmentSnapshot> {
        self.lock().clone()
    }
}

#[derive(Debug)]
struct TargetObserver {
    progress: Progress,
    index: usize,
}

impl MigrationObserver for TargetObserver {
    fn started(&self, _: &Target, direction: Direction, version: &Version) {
        self.progress
            .migration(self.index, version, false, direction);
    }

    fn committed(&self, _: &Target, direction: Direction, version: &Version) {
        self.progress
            .migration(self.index, version, true, direction);
    }
}

/// Everything a strategy needs to deploy: targets in plan order, the plan, lock settings
/// and progress reporting.
#[derive(Debug)]
pub struct Deployment {
    /// Where to deploy, in plan order.
    pub destinations: Vec<Destination>,
    /// The plan applied to every target (an up plan).
    pub plan: MigrationPlan,
    /// How to take each target's lock.
    pub lock: LockRequest,
    /// Where status changes go.
    pub progress: Progress,
    /// Canary only: re-probe the canaries' health before the rest start.
    pub canary_health_gate: bool,
    /// Once stopped, strategies start no further target (those running finish).
    pub stop: Stop,
    /// Told of each target as it starts and finishes (a journal, an audit trail, hooks).
    pub listeners: Vec<Arc<dyn TargetListener>>,
    /// Targets known to have nothing pending (pre-flight read their history), by index, with
    /// their version: each succeeds without a lock or a request — there is nothing to lock
    /// for. A re-deploy to an up-to-date fleet costs the pre-flight reads and nothing more.
    pub up_to_date: std::collections::HashMap<usize, Option<Version>>,
}

/// Told of each target as it starts and as it finishes, from the task deploying it. Must
/// return at once: anything slow belongs on a queue of the listener's own.
pub trait TargetListener: Send + Sync + fmt::Debug {
    /// Target `index` of the deployment is about to take its lock.
    fn started(&self, index: usize, target: &Target) {
        let _ = (index, target);
    }

    /// Target `index` finished (succeeded or failed; not called for targets never started).
    fn finished(&self, index: usize, target: &Target, outcome: &TargetOutcome) {
        let _ = (index, target, outcome);
    }
}

/// A request to stop a deployment gracefully: no new target starts, running ones finish.
/// Cheap to clone; every clone sees the same stop.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    stopped: std::sync::atomic::AtomicBool,
    /// Whether [`Stop::stop`] was called (a pause alone does not interrupt).
    interrupted: std::sync::atomic::AtomicBool,
    /// Why the rollout was paused, when it was paused rather than stopped.
    paused: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// A stop not yet requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the stop.
    pub fn stop(&self) {
        self.inner
            .interrupted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.halt();
    }

    fn halt(&self) {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Pauses the rollout for `reason` (the fleet was quiesced): like a stop, no new target
    /// starts and running ones finish, but what ran is kept — a paused deployment is resumed,
    /// not rolled back. A later [`Stop::stop`] still stops it.
    pub fn pause(&self, reason: impl Into<String>) {
        lock_unpoisoned(&self.inner.paused).get_or_insert_with(|| reason.into());
        self.halt();
    }

    /// Whether [`Stop::stop`] was requested (not only a pause).
    pub fn is_interrupted(&self) -> bool {
        self.inner
            .interrupted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why the rollout was paused, if it was.
    pub fn pause_reason(&self) -> Option<String> {
        lock_unpoisoned(&self.inner.paused).clone()
    }

    /// Whether the stop or a pause was requested: start nothing new.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the stop is requested.
    pub async fn stopped(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

impl Deployment {
    /// Deploys target `index`: lock, execute, release (always, [`flotilla_runner::MigrationRunner::apply_locked`]),
    /// reporting each step.
    pub async fn deploy_target(&self, index: usize) -> TargetOutcome {
        let destination = &self.destinations[index];
        let target = &destination.target;
        for listener in &self.listeners {
            listener.started(index, target);
        }
        self.progress.status(index, DeploymentStatus::InProgress);
        let started = Instant::now();
        let started_at = flotilla_core::rfc3339(SystemTime::now());
        let plan = self.plan.clone().with_observer(Arc::new(TargetObserver {
            progress: self.progress.clone(),
            index,
        }));
        let result = match self.up_to_date.get(&index) {
            Some(version) => Ok(flotilla_runner::MigrationResult {
                direction: Direction::Up,
                duration: Duration::ZERO,
                applied: Vec::new(),
                version_before: version.clone(),
                version_after: version.clone(),
                lock_takeover: None,
            }),
            None => {
                destination
                    .runner
                    .apply_locked(target, &plan, &self.lock)
                    .await
            }
        };
        let mut outcome = match result {
            Ok(result) => TargetOutcome {
                status: DeploymentStatus::Success,
                applied: result.applied,
                version_before: result.version_before,
                version_after: result.version_after,
                duration: started.elapsed(),
                started_at: None,
                finished_at: None,
                error: None,
                lock_takeover: result.lock_takeover,
            },
            Err(error) => TargetOutcome::failed(&error, started.elapsed()),
        };
        outcome.started_at = Some(started_at);
        outcome.finished_at = Some(flotilla_core::rfc3339(SystemTime::now()));
        self.progress.finished(index, &outcome);
        for listener in &self.listeners {
            listener.finished(index, target, &outcome);
        }
        outcome
    }

    /// Marks target `index` skipped, for `reason`: cancelled when the deployment was
    /// stopped, else refused by what stopped the strategy.
    pub fn skip(&self, index: usize, reason: &str) -> TargetOutcome {
        self.progress.status(index, DeploymentStatus::Skipped);
        if self.stop.is_interrupted() {
            TargetOutcome::cancelled(
                "skipped: the deployment was stopped before this environment started",
            )
        } else if let Some(why) = self.stop.pause_reason() {
            TargetOutcome::not_started(
                ErrorClass::Quiesced,
                format!("not started: the rollout was paused ({why})"),
            )
        } else {
            TargetOutcome::skipped(reason)
        }
    }

    /// Re-probes the health of `indices`; the first failure, if any, as a message.
    pub async fn health_gate(&self, indices: &[usize]) -> Result<(), String> {
        let probes = indices.iter().map(|&i| {
            let destination = &self.destinations[i];
            async move { (i, destination.runner.health(&destination.target).await) }
        });
        let mut failures = Vec::new();
        for (index, outcome) in futures::future::join_all(probes).await {
            if let Err(error) = outcome {
                failures.push(format!(
                    "{}: {error}",
                    self.destinations[index].target.environment
                ));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "canary health check failed: {}",
                failures.join("; ")
            ))
        }
    }
}
