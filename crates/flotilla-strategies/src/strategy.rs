//! The four strategies and how to choose one.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flotilla_core::DeploymentStatus;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::deployment::{Deployment, TargetError, TargetOutcome};

/// How a strategy's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrategyReport {
    /// One outcome per target, in plan order.
    pub outcomes: Vec<TargetOutcome>,
    /// Why the strategy stopped early, when it did (a failed batch, a failed canary gate).
    pub halted: Option<String>,
}

impl StrategyReport {
    /// Whether any target failed or the strategy halted.
    pub fn failed(&self) -> bool {
        self.halted.is_some()
            || self
                .outcomes
                .iter()
                .any(|o| o.status == DeploymentStatus::Failed)
    }
}

/// Rolls a deployment out over its destinations. The four built-ins implement it; so can a
/// user's own, from the building blocks [`run_wave`] (deploy some destinations, bounded,
/// honouring a stop) and [`StrategyReport::finish`] (an outcome for every destination), and
/// hand it to a plan (`DeploymentPlanBuilder::custom_strategy`) to get the coordinator's
/// gates, auto-rollback and report.
#[async_trait]
pub trait DeploymentStrategy: Send + Sync + fmt::Debug {
    /// The strategy's name, for reports.
    fn name(&self) -> &str;

    /// Deploys `deployment`'s destinations; returns an outcome for every one, in plan order.
    async fn deploy(&self, deployment: Arc<Deployment>) -> StrategyReport;
}

/// The strategies by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    /// One at a time; the first failure stops the rest.
    Sequential,
    /// Up to `max_concurrent` at once; continues past failures unless fail-fast.
    Parallel,
    /// Batches in plan order; a failed batch stops the rest.
    Rolling,
    /// A percentage first, then (if they succeed and stay healthy) the rest.
    Canary,
}

impl StrategyKind {
    /// Every kind, for help texts.
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::Sequential,
        StrategyKind::Parallel,
        StrategyKind::Rolling,
        StrategyKind::Canary,
    ];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Sequential => "sequential",
            StrategyKind::Parallel => "parallel",
            StrategyKind::Rolling => "rolling",
            StrategyKind::Canary => "canary",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = StrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        StrategyKind::ALL
            .into_iter()
            .find(|kind| kind.name() == wanted)
            .ok_or_else(|| StrategyError::UnknownStrategy(s.to_owned()))
    }
}

/// A strategy and its parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StrategyConfig {
    /// Which strategy.
    pub kind: StrategyKind,
    /// Rolling: targets per batch.
    pub batch_size: usize,
    /// Canary: share of targets deployed first, in (0, 100].
    pub canary_percentage: f64,
    /// Most targets deployed at once (parallel, rolling batches, canary waves).
    pub max_concurrent: usize,
    /// Parallel: stop starting new targets after the first failure.
    pub fail_fast: bool,
    /// Rolling: pause between batches.
    #[serde(skip)]
    pub pause: Duration,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            kind: StrategyKind::Sequential,
            batch_size: 1,
            canary_percentage: 10.0,
            max_concurrent: 8,
            fail_fast: false,
            pause: Duration::ZERO,
        }
    }
}

/// A strategy that cannot be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// The name matches no strategy.
    #[error("unknown strategy `{0}` (expected sequential, parallel, rolling or canary)")]
    UnknownStrategy(String),
    /// A parameter is out of range.
    #[error("{parameter} must be {expected}, got {got}")]
    InvalidParameter {
        /// The parameter.
        parameter: &'static str,
        /// Its valid range.
        expected: &'static str,
        /// What was given.
        got: String,
    },
}

impl StrategyConfig {
    /// The most targets a deployment runs at once: far beyond what a server or a machine
    /// serves well, and within what a semaphore holds.
    pub const MAX_CONCURRENT: usize = 4096;

    /// Checks the parameters the chosen strategy uses.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if self.max_concurrent == 0 || self.max_concurrent > Self::MAX_CONCURRENT {
            return Err(StrategyError::InvalidParameter {
                parameter: "max_concurrent",
                expected: "between 1 and 4096",
                got: self.max_concurrent.to_string(),
            });
        }
        if self.kind == StrategyKind::Rolling && self.batch_size == 0 {
            return Err(StrategyError::InvalidParameter {
                parameter: "batch_size",
                expected: "at least 1",
                got: "0".into(),
            });
        }
        let pct = self.canary_percentage;
        if self.kind == StrategyKind::Canary && !(pct > 0.0 && pct <= 100.0) {
            return Err(StrategyError::InvalidParameter {
                parameter: "canary_percentage",
                expected: "in (0, 100]",
                got: pct.to_string(),
            });
        }
        Ok(())
    }

    /// The strategy these parameters describe.
    pub fn build(&self) -> Result<Arc<dyn DeploymentStrategy>, StrategyError> {
        self.validate()?;
        Ok(match self.kind {
            StrategyKind::Sequential => Arc::new(Sequential),
            StrategyKind::Parallel => Arc::new(Parallel {
                max_concurrent: self.max_concurrent,
                fail_fast: self.fail_fast,
            }),
            StrategyKind::Rolling => Arc::new(Rolling {
                batch_size: self.batch_size,
                max_concurrent: self.max_concurrent,
                pause: self.pause,
            }),
            StrategyKind::Canary => Arc::new(Canary {
                percentage: self.canary_percentage,
                max_concurrent: self.max_concurrent,
            }),
        })
    }
}

/// Number of canaries among `targets`: ceil(targets × pct / 100), at least 1.
pub fn canary_count(targets: usize, percentage: f64) -> usize {
    if targets == 0 {
        return 0;
    }
    // Guard against 10 × 30 / 100 = 3.0000000000000004 rounding up to 4.
    let exact = targets as f64 * percentage / 100.0;
    let count = (exact - 1e-9).ceil().max(1.0) as usize;
    count.min(targets)
}

/// Deploys `indices` with at most `max_concurrent` at once, starting them in order, and files
/// each outcome in `outcomes`; with `stop_on_failure`, destinations not yet started when one
/// fails are skipped, and once the deployment is stopped none starts.
pub async fn run_wave(
    deployment: &Arc<Deployment>,
    indices: &[usize],
    max_concurrent: usize,
    stop_on_failure: bool,
    outcomes: &mut [Option<TargetOutcome>],
) {
    let slots = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let failed = Arc::new(AtomicBool::new(false));
    let mut running = JoinSet::new();
    let mut index_of_task = std::collections::HashMap::new();
    for &index in indices {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        // Collect whatever finished, so finished tasks (and their bookkeeping) do not pile
        // up: memory stays bounded by `max_concurrent`, not by the number of targets.
        while let Some(joined) = running.try_join_next_with_id() {
            collect(deployment, joined, &mut index_of_task, outcomes);
        }
        if deployment.stop.is_stopped() {
            outcomes[index] = Some(deployment.skip(index, "skipped: the deployment was stopped"));
            continue;
        }
        if stop_on_failure && failed.load(Ordering::SeqCst) {
            outcomes[index] =
                Some(deployment.skip(index, "skipped: an earlier environment failed"));
            continue;
        }
        let deployment = Arc::clone(deployment);
        let failed = Arc::clone(&failed);
        let handle = running.spawn(async move {
            let outcome = deployment.deploy_target(index).await;
            if outcome.status == DeploymentStatus::Failed {
                failed.store(true, Ordering::SeqCst);
            }
            drop(slot);
            outcome
        });
        index_of_task.insert(handle.id(), index);
    }
    while let Some(joined) = running.join_next_with_id().await {
        collect(deployment, joined, &mut index_of_task, outcomes);
    }
}

/// Files a finished deploy task's outcome under its target.
fn collect(
    deployment: &Deployment,
    joined: Result<(tokio::task::Id, TargetOutcome), tokio::task::JoinError>,
    index_of_task: &mut std::collections::HashMap<tokio::task::Id, usize>,
    outcomes: &mut [Option<TargetOutcome>],
) {
    match joined {
        Ok((id, outcome)) => {
            if let Some(index) = index_of_task.remove(&id) {
                outcomes[index] = Some(outcome);
            }
        }
        Err(error) => {
            let Some(index) = index_of_task.remove(&error.id()) else {
                return;
            };
            tracing::error!(%error, "deploy task died");
            deployment.progress.status(index, DeploymentStatus::Failed);
            // What it committed before dying is unknown here; history will tell.
            outcomes[index] = Some(TargetOutcome {
                status: DeploymentStatus::Failed,
                error: Some(TargetError {
                    class: flotilla_runner::ErrorClass::OutcomeUnknown,
                    message: format!(
                        "{}: deploy task died ({error}); what it applied is read back from history",
                        deployment.destinations[index].target.environment
                    ),
                }),
                ..TargetOutcome::skipped("")
            });
        }
    }
}

/// Whether any of `indices` failed.
pub fn any_failed(outcomes: &[Option<TargetOutcome>], indices: &[usize]) -> bool {
    indices.iter().any(|&i| {
        outcomes[i]
            .as_ref()
            .is_some_and(|o| o.status == DeploymentStatus::Failed)
    })
}

impl StrategyReport {
    /// The report of a strategy that filed `outcomes`: destinations without one are skipped,
    /// for the reason the strategy `halted` (if it did).
    pub fn finish(
        deployment: &Deployment,
        outcomes: Vec<Option<TargetOutcome>>,
        halted: Option<String>,
    ) -> StrategyReport {
        let reason = halted.clone().unwrap_or_else(|| "skipped".to_owned());
        let outcomes = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| outcome.unwrap_or_else(|| deployment.skip(index, &reason)))
            .collect();
        StrategyReport { outcomes, halted }
    }
}

/// One target at a time, in plan order; the first failure skips the rest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

#[async_trait]
impl DeploymentStrategy for Sequential {
    fn name(&self) -> &str {
        StrategyKind::Sequential.name()
    }

    async fn deploy(&self, deployment: Arc<Deployment>) -> StrategyReport {
        let mut outcomes = vec![None; deployment.destinations.len()];
        let all: Vec<usize> = (0..deployment.destinations.len()).collect();
        run_wave(&deployment, &all, 1, true, &mut outcomes).await;
        StrategyReport::finish(&deployment, outcomes, None)
    }
}

/// Up to `max_concurrent` targets at once; continues past failures unless `fail_fast`.
#[derive(Clone, Copy, Debug)]
pub struct Parallel {
    /// Most targets at once.
    pub max_concurrent: usize,
    /// Start no new target after a failure.
    pub fail_fast: bool,
}

#[async_trait]
impl DeploymentStrategy for Parallel {
    fn name(&self) -> &str {
        StrategyKind::Parallel.name()
    }

    async fn deploy(&self, deployment: Arc<Deployment>) -> StrategyReport {
        let mut outcomes = vec![None; deployment.destinations.len()];
        let all: Vec<usize> = (0..deployment.destinations.len()).collect();
        run_wave(
            &deployment,
            &all,
            self.max_concurrent,
            self.fail_fast,
            &mut outcomes,
        )
        .await;
        StrategyReport::finish(&deployment, outcomes, None)
    }
}

/// Batches of `batch_size` in plan order, each concurrent (up to `max_concurrent`); a batch
/// with a failure skips every later batch.
#[derive(Clone, Copy, Debug)]
pub struct Rolling {
    /// Targets per batch.
    pub batch_size: usize,
    /// Most targets at once within a batch.
    pub max_concurrent: usize,
    /// Pause between batches.
    pub pause: Duration,
}

#[async_trait]
impl DeploymentStrategy for Rolling {
    fn name(&self) -> &str {
        StrategyKind::Rolling.name()
    }

    async fn deploy(&self, deployment: Arc<Deployment>) -> StrategyReport {
        let mut outcomes = vec![None; deployment.destinations.len()];
        let all: Vec<usize> = (0..deployment.destinations.len()).collect();
        let batches: Vec<&[usize]> = all.chunks(self.batch_size.max(1)).collect();
        let mut halted = None;
        for (number, batch) in batches.iter().enumerate() {
            if number > 0 && !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
            run_wave(
                &deployment,
                batch,
                self.max_concurrent,
                false,
                &mut outcomes,
            )
            .await;
            if any_failed(&outcomes, batch) {
                halted = Some(format!(
                    "skipped: batch {} of {} failed",
                    number + 1,
                    batches.len()
                ));
                break;
            }
        }
        StrategyReport::finish(&deployment, outcomes, halted)
    }
}

/// The first ceil(n × pct / 100) targets (at least one), then — if all succeeded and, when
/// asked, are still healthy — the rest, up to `max_concurrent` at once.
#[derive(Clone, Copy, Debug)]
pub struct Canary {
    /// Share of targets in the canary wave, in (0, 100].
    pub percentage: f64,
    /// Most targets at once.
    pub max_concurrent: usize,
}

#[async_trait]
impl DeploymentStrategy for Canary {
    fn name(&self) -> &str {
        StrategyKind::Canary.name()
    }

    async fn deploy(&self, deployment: Arc<Deployment>) -> StrategyReport {
        let total = deployment.destinations.len();
        let mut outcomes = vec![None; total];
        let canaries: Vec<usize> = (0..canary_count(total, self.percentage)).collect();
        let rest: Vec<usize> = (canaries.len()..total).collect();
        run_wave(
            &deployment,
            &canaries,
            self.max_concurrent,
            false,
            &mut outcomes,
        )
        .await;
        if any_failed(&outcomes, &canaries) {
            return StrategyReport::finish(
                &deployment,
                outcomes,
                Some("skipped: a canary failed".to_owned()),
            );
        }
        if deployment.canary_health_gate
            && let Err(reason) = deployment.health_gate(&canaries).await
        {
            return StrategyReport::finish(
                &deployment,
                outcomes,
                Some(format!("skipped: {reason}")),
            );
        }
        run_wave(
            &deployment,
            &rest,
            self.max_concurrent,
            false,
            &mut outcomes,
        )
        .await;
        StrategyReport::finish(&deployment, outcomes, None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use flotilla_core::{Connection, MigrationSet};
    use flotilla_runner::{
        Direction, DynRunner, LockRequest, MigrationPlan, MigrationResult, RunnerError, Target,
    };
    use tokio::sync::broadcast;

    use super::*;
    use crate::deployment::{Destination, Progress};

    /// Counts deploys in flight and the order they start and finish in.
    #[derive(Debug, Default)]
    struct Probe {
        in_flight: AtomicUsize,
        peak: AtomicUsize,
        started: Mutex<Vec<usize>>,
        finished: Mutex<Vec<usize>>,
    }

    fn env_index(target: &Target) -> usize {
        target
            .environment
            .trim_start_matches("env-")
            .parse()
            .expect("env-N")
    }

    /// A runner whose deploys take a little while, so overlapping ones really overlap and the
    /// peak in flight is measured, not assumed; `failing` targets fail, `unhealthy` ones fail
    /// their health probe.
    #[derive(Debug)]
    struct Scripted {
        failing: HashSet<usize>,
        unhealthy: HashSet<usize>,
        probe: Arc<Probe>,
    }

    fn unreachable(target: &Target, why: &'static str) -> RunnerError {
        RunnerError::Unreachable {
            environment: target.environment.clone(),
            endpoint: "mem://".into(),
            source: why.into(),
        }
    }

    #[async_trait]
    impl flotilla_runner::MigrationRunner for Scripted {
        async fn health(
            &self,
            target: &Target,
        ) -> flotilla_runner::Result<flotilla_runner::HealthStatus> {
            if self.unhealthy.contains(&env_index(target)) {
                return Err(unreachable(target, "down after deploy"));
            }
            Ok(flotilla_runner::HealthStatus {
                latency: Duration::ZERO,
                initialised: true,
                lock: None,
                server_version: None,
            })
        }

        async fn history(
            &self,
            target: &Target,
        ) -> flotilla_runner::Result<Vec<flotilla_core::AppliedMigration>> {
            Err(unreachable(target, "not scripted"))
        }

        async fn acquire_lock(
            &self,
            target: &Target,
            _: &LockRequest,
        ) -> flotilla_runner::Result<Box<dyn flotilla_runner::LockGuard>> {
            Err(unreachable(target, "not scripted"))
        }

        async fn break_lock(
            &self,
            target: &Target,
        ) -> flotilla_runner::Result<Option<flotilla_runner::LockInfo>> {
            Err(unreachable(target, "not scripted"))
        }

        async fn execute_migration(
            &self,
            target: &Target,
            _: &MigrationPlan,
            _: &(dyn flotilla_runner::LockGuard + 'static),
        ) -> flotilla_runner::Result<MigrationResult> {
            Err(unreachable(target, "not scripted"))
        }

        async fn apply_locked(
            &self,
            target: &Target,
            _: &MigrationPlan,
            _: &LockRequest,
        ) -> flotilla_runner::Result<MigrationResult> {
            let index = env_index(target);
            self.probe.started.lock().expect("probe").push(index);
            let now = self.probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.probe.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(15)).await;
            self.probe.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.probe.finished.lock().expect("probe").push(index);
            if self.failing.contains(&index) {
                return Err(unreachable(target, "injected"));
            }
            Ok(MigrationResult {
                direction: Direction::Up,
                applied: Vec::new(),
                version_before: None,
                version_after: None,
                duration: Duration::ZERO,
                lock_takeover: None,
            })
        }
    }

    fn runner(failing: &[usize], unhealthy: &[usize], probe: &Arc<Probe>) -> DynRunner {
        Arc::new(Scripted {
            failing: failing.iter().copied().collect(),
            unhealthy: unhealthy.iter().copied().collect(),
            probe: Arc::clone(probe),
        })
    }

    fn deployment(n: usize, runner: &DynRunner) -> Arc<Deployment> {
        let names: Vec<String> = (0..n).map(|i| format!("env-{i}")).collect();
        let destinations = names
            .iter()
            .map(|name| Destination {
                target: Target::new(name.clone(), Connection::new("mem://", "ns", name.clone())),
                runner: Arc::clone(runner),
            })
            .collect();
        let (events, _) = broadcast::channel(1024);
        Arc::new(Deployment {
            destinations,
            plan: MigrationPlan::up(Arc::new(MigrationSet::default())),
            lock: LockRequest::new(None, Duration::from_secs(1)),
            progress: Progress::new(&names, events),
            canary_health_gate: true,
            stop: crate::deployment::Stop::new(),
            listeners: Vec::new(),
            up_to_date: Default::default(),
        })
    }

    fn statuses(report: &StrategyReport) -> Vec<&'static str> {
        report
            .outcomes
            .iter()
            .map(|o| match o.status {
                DeploymentStatus::Success => "ok",
                DeploymentStatus::Failed => "FAIL",
                DeploymentStatus::Skipped => "skip",
                _ => "other",
            })
            .collect()
    }

    fn config(kind: StrategyKind) -> StrategyConfig {
        StrategyConfig {
            kind,
            ..StrategyConfig::default()
        }
    }

    async fn run(
        config: StrategyConfig,
        n: usize,
        failing: &[usize],
        unhealthy: &[usize],
    ) -> (StrategyReport, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let runner = runner(failing, unhealthy, &probe);
        let report = config
            .build()
            .expect("valid")
            .deploy(deployment(n, &runner))
            .await;
        (report, probe)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn sequential_stops_at_the_first_failure() {
        let (report, probe) = run(config(StrategyKind::Sequential), 5, &[1], &[]).await;
        assert_eq!(statuses(&report), ["ok", "FAIL", "skip", "skip", "skip"]);
        assert_eq!(*probe.started.lock().expect("probe"), [0, 1]);
        assert_eq!(probe.peak.load(Ordering::SeqCst), 1);
        assert!(report.failed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn parallel_continues_past_a_failure_within_its_bound() {
        let cfg = StrategyConfig {
            max_concurrent: 3,
            ..config(StrategyKind::Parallel)
        };
        let (report, probe) = run(cfg, 12, &[1], &[]).await;
        let expected: Vec<&str> = (0..12)
            .map(|i| if i == 1 { "FAIL" } else { "ok" })
            .collect();
        assert_eq!(statuses(&report), expected);
        let peak = probe.peak.load(Ordering::SeqCst);
        assert!(peak <= 3, "peak {peak} exceeds max_concurrent 3");
        assert!(peak >= 2, "peak {peak}: deploys never overlapped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn parallel_fail_fast_starts_nothing_new_after_a_failure() {
        let cfg = StrategyConfig {
            max_concurrent: 1,
            fail_fast: true,
            ..config(StrategyKind::Parallel)
        };
        let (report, probe) = run(cfg, 6, &[2], &[]).await;
        assert_eq!(
            statuses(&report),
            ["ok", "ok", "FAIL", "skip", "skip", "skip"]
        );
        assert_eq!(*probe.started.lock().expect("probe"), [0, 1, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn rolling_runs_batches_in_order_and_stops_after_a_failed_batch() {
        let cfg = StrategyConfig {
            batch_size: 3,
            max_concurrent: 3,
            ..config(StrategyKind::Rolling)
        };
        let (report, probe) = run(cfg, 8, &[4], &[]).await;
        assert_eq!(
            statuses(&report),
            ["ok", "ok", "ok", "ok", "FAIL", "ok", "skip", "skip"]
        );
        assert!(
            report
                .halted
                .as_deref()
                .is_some_and(|h| h.contains("batch 2 of 3")),
            "{:?}",
            report.halted
        );
        // Every target of batch 1 finished before any of batch 2 started.
        let started = probe.started.lock().expect("probe").clone();
        let finished = probe.finished.lock().expect("probe").clone();
        let first_batch_done = finished.iter().position(|i| *i >= 3).expect("batch 2 ran");
        assert!(finished[..first_batch_done].iter().all(|i| *i < 3));
        let second_batch_started = started.iter().position(|i| *i >= 3).expect("batch 2 ran");
        assert_eq!(
            second_batch_started, 3,
            "batch 2 started before batch 1 ended: {started:?}"
        );
        assert!(probe.peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn canary_size_is_ceil_of_share_and_at_least_one() {
        let table = [
            (1, 10.0, 1),
            (10, 10.0, 1),
            (10, 30.0, 3),
            (10, 25.0, 3),
            (10, 100.0, 10),
            (200, 5.0, 10),
            (3, 0.1, 1),
            (7, 50.0, 4),
            (1000, 1.0, 10),
            (0, 50.0, 0),
        ];
        for (n, pct, expected) in table {
            assert_eq!(canary_count(n, pct), expected, "n={n} pct={pct}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn a_failed_canary_skips_the_rest() {
        let cfg = StrategyConfig {
            canary_percentage: 20.0,
            ..config(StrategyKind::Canary)
        };
        let (report, probe) = run(cfg, 10, &[1], &[]).await;
        let mut expected = vec!["ok", "FAIL"];
        expected.extend(["skip"; 8]);
        assert_eq!(statuses(&report), expected);
        let mut started = probe.started.lock().expect("probe").clone();
        started.sort_unstable();
        assert_eq!(started, [0, 1], "only canaries ran");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn an_unhealthy_canary_after_deploy_skips_the_rest() {
        let cfg = StrategyConfig {
            canary_percentage: 20.0,
            ..config(StrategyKind::Canary)
        };
        let (report, _) = run(cfg, 10, &[], &[0]).await;
        let mut expected = vec!["ok", "ok"];
        expected.extend(["skip"; 8]);
        assert_eq!(statuses(&report), expected);
        assert!(report.failed(), "a failed gate fails the deployment");
        assert!(
            report
                .halted
                .as_deref()
                .is_some_and(|h| h.contains("env-0")),
            "{:?}",
            report.halted
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn healthy_canaries_let_the_rest_proceed() {
        let cfg = StrategyConfig {
            canary_percentage: 30.0,
            max_concurrent: 4,
            ..config(StrategyKind::Canary)
        };
        let (report, probe) = run(cfg, 10, &[], &[]).await;
        assert_eq!(statuses(&report), ["ok"; 10]);
        let started = probe.started.lock().expect("probe").clone();
        let mut canaries = started[..3].to_vec();
        canaries.sort_unstable();
        assert_eq!(canaries, [0, 1, 2], "canaries start first");
        assert!(probe.peak.load(Ordering::SeqCst) <= 4);
    }

    #[test]
    fn bad_parameters_are_clear_errors() {
        let cases = [
            (
                StrategyConfig {
                    max_concurrent: 0,
                    ..config(StrategyKind::Parallel)
                },
                "max_concurrent",
            ),
            (
                StrategyConfig {
                    batch_size: 0,
                    ..config(StrategyKind::Rolling)
                },
                "batch_size",
            ),
            (
                StrategyConfig {
                    canary_percentage: 0.0,
                    ..config(StrategyKind::Canary)
                },
                "canary_percentage",
            ),
            (
                StrategyConfig {
                    canary_percentage: 100.5,
                    ..config(StrategyKind::Canary)
                },
                "canary_percentage",
            ),
            (
                StrategyConfig {
                    canary_percentage: f64::NAN,
                    ..config(StrategyKind::Canary)
                },
                "canary_percentage",
            ),
        ];
        for (cfg, parameter) in cases {
            let err = cfg.build().expect_err("invalid");
            assert!(err.to_string().contains(parameter), "{err}");
        }
        assert_eq!("Rolling".parse::<StrategyKind>(), Ok(StrategyKind::Rolling));
        assert_eq!(" CANARY ".parse::<StrategyKind>(), Ok(StrategyKind::Canary));
        let err = "blue-green".parse::<StrategyKind>().expect_err("unknown");
        assert!(err.to_string().contains("blue-green") && err.to_string().contains("rolling"));
    }
}
