//! The coordinator with a control store: what it journals and audits, the quiesce flag before
//! and during a rollout (and what happens when it cannot be read, failing closed or open), a
//! store that fails, and sharded plans. Targets are real embedded SurrealDB databases; the
//! store is the in-memory reference store, whose faults can be injected. The SurrealDB store
//! and the command line are tested with real processes in `crates/flotilla-cli/tests`.

use std::sync::Arc;
use std::time::Duration;

use flotilla_coordinator::control::{
    Actor, AuditEvent, Control, ControlStore, DeploymentState, MemoryControlStore,
    QuiesceUnreadable,
};
use flotilla_coordinator::{
    DeploymentCoordinator, DeploymentPlan, DeploymentReport, EnvironmentConfig,
    EnvironmentRegistry, Gate, Outcome, PlanError, Shard,
};
use flotilla_core::{Connection, DeploymentStatus, MigrationSet};
use flotilla_runner::testkit::migrations;
use flotilla_runner::{Backends, ErrorClass, MigrationRunner, Target};
use flotilla_strategies::StrategyKind;
use flotilla_surrealdb::SurrealRunner;

/// Each migration takes a little while, so a rollout of several targets lasts long enough
/// for the quiesce flag to change under it.
fn slow_pair() -> Arc<MigrationSet> {
    migrations(&[
        (
            "0001_a.surql",
            "-- @up\nCREATE effect:a SET at = time::now();\nSLEEP 40ms;\n-- @down\nDELETE effect:a;\n",
        ),
        (
            "0002_b.surql",
            "-- @up\nCREATE effect:b SET at = time::now();\n-- @down\nDELETE effect:b;\n",
        ),
    ])
}

struct Fleet {
    runner: SurrealRunner,
    registry: EnvironmentRegistry,
    names: Vec<String>,
    store: Arc<MemoryControlStore>,
}

impl Fleet {
    fn new(count: usize) -> Self {
        let registry = EnvironmentRegistry::new();
        let names: Vec<String> = (0..count).map(|i| format!("t{i:02}")).collect();
        for name in &names {
            registry
                .register(
                    EnvironmentConfig::new(
                        name.as_str(),
                        Connection::new("mem://", name.as_str(), "app"),
                    )
                    .expect("valid name"),
                )
                .expect("register");
        }
        Self {
            runner: SurrealRunner::new(),
            registry,
            names,
            store: Arc::new(MemoryControlStore::new()),
        }
    }

    fn control(&self, unreadable: QuiesceUnreadable) -> Control {
        let mut control = Control::new(
            Arc::clone(&self.store) as Arc<dyn ControlStore>,
            Actor {
                user: "tester".into(),
                host: "here".into(),
                pid: 1,
                commit: Some("abc1234".into()),
                pipeline: None,
            },
        );
        control.quiesce_unreadable = unreadable;
        control.quiesce_poll = Duration::from_millis(10);
        control
    }

    fn coordinator(&self, unreadable: QuiesceUnreadable) -> DeploymentCoordinator {
        let mut backends = Backends::new();
        self.runner.register(&mut backends);
        DeploymentCoordinator::new(backends).with_control(self.control(unreadable))
    }

    fn plan(&self, id: &str) -> DeploymentPlan {
        DeploymentPlan::builder(&self.registry)
            .all()
            .migrations(slow_pair())
            .kind(StrategyKind::Sequential)
            .rehearse(false)
            .deployment_id(id)
            .build()
            .expect("plan")
    }

    /// Deploys plan `id` with a coordinator failing `unreadable`.
    async fn deploy(&self, id: &str, unreadable: QuiesceUnreadable) -> DeploymentReport {
        self.coordinator(unreadable)
            .deploy(&self.plan(id))
            .await
            .expect("deploy")
    }

    async fn applied(&self, name: &str) -> usize {
        let environment = self.registry.get(name).expect("registered");
        self.runner
            .history(&Target::new(name, environment.connection))
            .await
            .expect("history")
            .len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_is_journaled_once_and_audited_per_event() {
    let fleet = Fleet::new(4);
    let report = fleet
        .deploy("journaled", QuiesceUnreadable::FailClosed)
        .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let audit_summary = report
        .audit
        .as_ref()
        .expect("the report says what was audited");
    assert_eq!((audit_summary.dropped, audit_summary.failed_writes), (0, 0));

    let detail = fleet
        .store
        .deployment("journaled")
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(detail.state(), DeploymentState::Ended("succeeded".into()));
    assert_eq!(detail.actor.commit.as_deref(), Some("abc1234"));
    let mut environments: Vec<&str> = detail
        .targets
        .iter()
        .map(|t| t.environment.as_str())
        .collect();
    environments.sort_unstable();
    assert_eq!(
        environments,
        fleet.names.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        detail
            .targets
            .iter()
            .all(|t| t.status == DeploymentStatus::Success && t.applied.len() == 2)
    );
    assert!(
        detail
            .targets
            .iter()
            .all(|t| t.started_at.is_some() && t.finished_at.is_some())
    );

    let audit = fleet.store.audit();
    let count = |event: AuditEvent| audit.iter().filter(|r| r.event == event).count();
    assert_eq!(count(AuditEvent::DeploymentStarted), 1);
    assert_eq!(count(AuditEvent::TargetStarted), 4);
    assert_eq!(count(AuditEvent::TargetFinished), 4);
    assert_eq!(count(AuditEvent::DeploymentFinished), 1);
    assert_eq!(audit_summary.records, audit.len() as u64);
    for record in audit
        .iter()
        .filter(|r| r.event == AuditEvent::TargetFinished)
    {
        assert_eq!(record.deployment_id.as_deref(), Some("journaled"));
        assert_eq!(record.actor.user, "tester");
        assert_eq!(record.outcome.as_deref(), Some("success"));
        assert_eq!(record.versions.len(), 2, "{record:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiesced_fleet_refuses_and_a_store_that_cannot_be_read_fails_closed_or_open() {
    let fleet = Fleet::new(2);
    let by = Actor {
        user: "oncall".into(),
        ..Actor::default()
    };
    fleet
        .store
        .set_quiesce("incident 42", Duration::from_secs(60), &by)
        .await
        .expect("set");
    let report = fleet.deploy("quiesced", QuiesceUnreadable::FailOpen).await;
    assert_eq!(report.outcome, Outcome::Refused);
    let refusal = report.refusal.as_ref().expect("refusal");
    assert_eq!(refusal.gate, Gate::Quiesce);
    assert!(
        refusal.reasons[0].contains("incident 42") && refusal.reasons[0].contains("oncall"),
        "{refusal:?}"
    );
    assert!(report.environments.iter().all(|e| {
        e.status == DeploymentStatus::Skipped
            && e.error
                .as_ref()
                .is_some_and(|error| error.class == ErrorClass::Quiesced)
    }));
    assert_eq!(fleet.applied("t00").await, 0);
    fleet.store.clear_quiesce().await.expect("clear");

    // The flag cannot be read: closed refuses, open deploys.
    fleet.store.fail_quiesce_reads(true);
    let closed = fleet.deploy("closed", QuiesceUnreadable::FailClosed).await;
    assert_eq!(closed.outcome, Outcome::Refused, "{closed:#?}");
    assert_eq!(fleet.applied("t00").await, 0);
    let open = fleet.deploy("open", QuiesceUnreadable::FailOpen).await;
    assert_eq!(open.outcome, Outcome::Succeeded, "{open:#?}");
    assert_eq!(fleet.applied("t00").await, 2);
}

/// Quiesced (or unreadable, failing closed) while the rollout runs: no further target
/// starts, the one running finishes, nothing is rolled back; failing open carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_rollout_pauses_when_quiesced_and_keeps_what_ran() {
    for (unreadable, break_reads, expected) in [
        (QuiesceUnreadable::FailOpen, false, Outcome::Paused),
        (QuiesceUnreadable::FailClosed, true, Outcome::Paused),
        (QuiesceUnreadable::FailOpen, true, Outcome::Succeeded),
    ] {
        let fleet = Fleet::new(8);
        let coordinator = fleet.coordinator(unreadable);
        let mut events = coordinator.subscribe();
        let plan = fleet.plan("paused");
        let deploy = coordinator.deploy(&plan);
        tokio::pin!(deploy);
        let report = loop {
            tokio::select! {
                report = &mut deploy => break report.expect("deploy"),
                Ok(event) = events.recv() => {
                    if event.status == DeploymentStatus::Success && event.environment == "t00" {
                        if break_reads {
                            fleet.store.fail_quiesce_reads(true);
                        } else {
                            fleet.store
                                .set_quiesce("freeze", Duration::from_secs(60), &Actor::default())
                                .await
                                .expect("set");
                        }
                    }
                }
            }
        };
        assert_eq!(
            report.outcome, expected,
            "{unreadable:?}, reads broken {break_reads}: {report:#?}"
        );
        let succeeded = report
            .environments
            .iter()
            .filter(|e| e.status == DeploymentStatus::Success)
            .count();
        if expected == Outcome::Paused {
            assert!((1..8).contains(&succeeded), "{report:#?}");
            assert!(report.paused.is_some());
            assert!(
                report.environments.iter().all(|e| e.rolled_back.is_empty()),
                "a pause rolls nothing back"
            );
            for e in report
                .environments
                .iter()
                .filter(|e| e.status == DeploymentStatus::Skipped)
            {
                assert_eq!(
                    e.error.as_ref().map(|e| e.class),
                    Some(ErrorClass::Quiesced)
                );
                assert_eq!(
                    fleet.applied(&e.environment).await,
                    0,
                    "{} not started",
                    e.environment
                );
            }
            assert_eq!(fleet.applied("t00").await, 2, "what ran is kept");
        } else {
            assert_eq!(succeeded, 8);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_unreachable_at_the_start_is_an_error_and_later_only_counts_failed_writes() {
    let fleet = Fleet::new(3);
    fleet.store.set_unavailable(true);
    let error = fleet
        .coordinator(QuiesceUnreadable::FailOpen)
        .deploy(&fleet.plan("unreachable"))
        .await
        .expect_err("an unusable store is an error at the start");
    assert!(matches!(error, PlanError::Control(_)), "{error}");
    assert_eq!(fleet.applied("t00").await, 0, "nothing ran");

    // Unreachable once the deployment started: the deployment goes on, the report counts.
    fleet.store.set_unavailable(false);
    let coordinator = fleet.coordinator(QuiesceUnreadable::FailOpen);
    let mut events = coordinator.subscribe();
    let plan = fleet.plan("later");
    let deploy = coordinator.deploy(&plan);
    tokio::pin!(deploy);
    let report = loop {
        tokio::select! {
            report = &mut deploy => break report.expect("deploy"),
            Ok(event) = events.recv() => {
                if event.status == DeploymentStatus::InProgress {
                    fleet.store.set_unavailable(true);
                }
            }
        }
    };
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let audit = report.audit.expect("audit summary");
    assert!(audit.failed_writes > 0, "{audit:?}");
}

#[tokio::test]
async fn shards_split_the_selection_into_disjoint_shares_that_cover_it() {
    let fleet = Fleet::new(40);
    let mut seen = Vec::new();
    for index in 0..4 {
        let plan = DeploymentPlan::builder(&fleet.registry)
            .all()
            .migrations(slow_pair())
            .shard(Shard::new(index, 4).expect("shard"))
            .deployment_id("sharded")
            .build()
            .expect("plan");
        assert_eq!(plan.selected.len(), 40);
        assert!(
            !plan.environments.is_empty(),
            "shard {index} of 4 over 40 is not empty"
        );
        seen.extend(plan.environment_names());
    }
    seen.sort_unstable();
    assert_eq!(seen, fleet.names, "every environment in exactly one shard");
    let resumed = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(slow_pair())
        .exclude(["t00", "t01"])
        .build()
        .expect("plan");
    assert_eq!(resumed.environments.len(), 38);
}

/// A re-deploy to a fleet with nothing pending succeeds without a lock or a request per
/// target: pre-flight read every history (shared requests), and there is nothing to lock for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_to_an_up_to_date_fleet_costs_only_the_preflight_reads() {
    let fleet = Fleet::new(40);
    let first = fleet.deploy("first", QuiesceUnreadable::FailClosed).await;
    assert_eq!(first.outcome, Outcome::Succeeded);
    let before = fleet.runner.request_count();
    let again = fleet.deploy("again", QuiesceUnreadable::FailClosed).await;
    let sent = fleet.runner.request_count() - before;
    assert_eq!(again.outcome, Outcome::Succeeded, "{again:#?}");
    assert!(again.environments.iter().all(|e| e.applied.is_empty()
        && e.status == DeploymentStatus::Success
        && e.version_after.as_ref().map(ToString::to_string).as_deref() == Some("0002")));
    assert!(sent * 4 <= 40, "{sent} requests for 40 up-to-date targets");
    let detail = fleet
        .store
        .deployment("again")
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(detail.targets.len(), 40, "journaled like any other");
}

/// A target that fails is audited with its error class and the shared category, and the
/// journal records it failed; the others' rollback is audited too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_target_is_audited_with_its_error_category() {
    let fleet = Fleet::new(3);
    let environment = fleet.registry.get("t01").expect("registered");
    fleet
        .runner
        .session(&Target::new("t01", environment.connection))
        .await
        .expect("session")
        .query("CREATE effect:b SET planted = true")
        .await
        .expect("plant");
    let report = fleet.deploy("failing", QuiesceUnreadable::FailClosed).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    let audit = fleet.store.audit();
    let failed = audit
        .iter()
        .find(|r| r.event == AuditEvent::TargetFinished && r.environment.as_deref() == Some("t01"))
        .expect("t01 audited");
    assert_eq!(failed.outcome.as_deref(), Some("failed"));
    assert_eq!(failed.error_class, Some(ErrorClass::StatementFailed));
    assert_eq!(failed.error_category.as_deref(), Some("migration"));
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("effect")),
        "{failed:?}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r.event == AuditEvent::TargetRolledBack),
        "{audit:#?}"
    );
    let detail = fleet
        .store
        .deployment("failing")
        .await
        .expect("read")
        .expect("recorded");
    let t01 = detail
        .targets
        .iter()
        .find(|t| t.environment == "t01")
        .expect("t01");
    // Its final word: what failed there was rolled back; the class stays.
    assert_eq!(t01.status, DeploymentStatus::RolledBack);
    assert_eq!(t01.error_class, Some(ErrorClass::StatementFailed));
    assert_eq!(detail.state(), DeploymentState::Ended("rolled_back".into()));
}

/// A runner that sets the quiesce flag while the rehearsal runs — after the deployment's
/// first look at the flag, before any target starts — and otherwise is `inner`.
#[derive(Debug)]
struct QuiescedDuringRehearsal {
    inner: SurrealRunner,
    store: Arc<MemoryControlStore>,
}

#[async_trait::async_trait]
impl MigrationRunner for QuiescedDuringRehearsal {
    async fn health(
        &self,
        target: &Target,
    ) -> flotilla_runner::Result<flotilla_runner::HealthStatus> {
        self.inner.health(target).await
    }
    async fn history(
        &self,
        target: &Target,
    ) -> flotilla_runner::Result<Vec<flotilla_core::AppliedMigration>> {
        self.inner.history(target).await
    }
    async fn probe(&self, target: &Target) -> flotilla_runner::Result<flotilla_runner::Probe> {
        self.inner.probe(target).await
    }
    async fn acquire_lock(
        &self,
        target: &Target,
        request: &flotilla_runner::LockRequest,
    ) -> flotilla_runner::Result<Box<dyn flotilla_runner::LockGuard>> {
        self.inner.acquire_lock(target, request).await
    }
    async fn break_lock(
        &self,
        target: &Target,
    ) -> flotilla_runner::Result<Option<flotilla_runner::LockInfo>> {
        self.inner.break_lock(target).await
    }
    async fn execute_migration(
        &self,
        target: &Target,
        plan: &flotilla_runner::MigrationPlan,
        lock: &(dyn flotilla_runner::LockGuard + 'static),
    ) -> flotilla_runner::Result<flotilla_runner::MigrationResult> {
        self.inner.execute_migration(target, plan, lock).await
    }
    async fn rehearse(
        &self,
        plan: &flotilla_runner::RehearsalPlan,
    ) -> flotilla_runner::Result<flotilla_runner::Rehearsal> {
        self.store
            .set_quiesce(
                "set during rehearsal",
                Duration::from_secs(60),
                &Actor::default(),
            )
            .await
            .expect("set");
        self.inner.rehearse(plan).await
    }
}

/// Pre-flight and rehearsal take time: a quiesce set meanwhile is read again right before
/// the first target starts, and holds every target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiesce_set_during_rehearsal_holds_the_first_target() {
    let fleet = Fleet::new(3);
    let mut backends = Backends::new();
    backends.register(
        &["mem"],
        Arc::new(QuiescedDuringRehearsal {
            inner: fleet.runner.clone(),
            store: Arc::clone(&fleet.store),
        }),
    );
    let coordinator = DeploymentCoordinator::new(backends)
        .with_control(fleet.control(QuiesceUnreadable::FailClosed));
    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(slow_pair())
        .deployment_id("rehearsed")
        .build()
        .expect("plan");
    let report = coordinator.deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    assert!(
        report
            .refusal
            .as_ref()
            .is_some_and(|refusal| refusal.gate == Gate::Quiesce),
        "{report:#?}"
    );
    for name in &fleet.names {
        assert_eq!(fleet.applied(name).await, 0, "{name} started");
    }
}

/// A run's liveness is renewed on a task of its own: a store whose writes take far longer
/// than the lease still sees the run alive while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_journal_never_lets_the_runs_liveness_lapse() {
    let fleet = Fleet::new(24);
    fleet.store.delay_writes(Duration::from_secs(2));
    let coordinator = fleet.coordinator(QuiesceUnreadable::FailOpen);
    let mut events = coordinator.subscribe();
    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(slow_pair())
        .kind(StrategyKind::Sequential)
        .rehearse(false)
        .lease(Duration::from_millis(300))
        .deployment_id("alive")
        .build()
        .expect("plan");
    let deploy = coordinator.deploy(&plan);
    tokio::pin!(deploy);
    let mut looked = 0;
    let report = loop {
        tokio::select! {
            report = &mut deploy => break report.expect("deploy"),
            Ok(event) = events.recv() => {
                // Well past the lease, while the first slow write is still going on.
                if event.status == DeploymentStatus::Success && event.environment == "t10" {
                    let detail = fleet.store.deployment("alive").await.expect("read").expect("there");
                    assert!(detail.runs[0].alive, "the run lapsed: {detail:#?}");
                    looked += 1;
                }
            }
        }
    };
    assert_eq!(looked, 1);
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
}
