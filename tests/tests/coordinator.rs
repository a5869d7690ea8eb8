//! The coordinator rolling plans out over several real embedded SurrealDB targets.

use std::sync::Arc;
use std::time::Duration;

use flotilla_coordinator::{
    ApproveList, DeploymentCoordinator, DeploymentPlan, EnvironmentConfig, EnvironmentRegistry,
    Gate, Outcome,
};
use flotilla_core::{
    AuthLevel, Connection, DeploymentEvent, DeploymentStatus, MigrationSet, Version,
};
use flotilla_runner::testkit::migrations;
use flotilla_runner::{Backends, ErrorClass, MigrationRunner, Target};
use flotilla_strategies::StrategyKind;
use flotilla_surrealdb::{SurrealConfig, SurrealRunner};
use flotilla_tests::free_port;

const CREATE_ACCOUNTS: &str = "-- @up
DEFINE TABLE account SCHEMAFULL;
DEFINE FIELD email ON account TYPE string;
DEFINE INDEX account_email ON account FIELDS email UNIQUE;
-- @down
REMOVE TABLE account;
";

/// Its `CREATE` fails where `account:founder` already exists.
const SEED_FOUNDER: &str = "-- @up
DEFINE FIELD name ON account TYPE option<string>;
CREATE account:founder SET email = 'founder@example.com', name = 'Founder';
-- @down
DELETE account:founder;
REMOVE FIELD name ON account;
";

const GREETING: &str = "-- @up
DEFINE FUNCTION fn::greeting($who: string) { RETURN 'hello; ' + $who; };
-- @down
REMOVE FUNCTION fn::greeting;
";

fn three() -> Arc<MigrationSet> {
    migrations(&[
        ("0001_accounts.surql", CREATE_ACCOUNTS),
        ("0002_founder.surql", SEED_FOUNDER),
        ("0003_greeting.surql", GREETING),
    ])
}

fn first_only() -> Arc<MigrationSet> {
    migrations(&[("0001_accounts.surql", CREATE_ACCOUNTS)])
}

/// A fleet of environments, each its own namespace in one embedded `mem://` datastore.
struct Fleet {
    runner: SurrealRunner,
    registry: EnvironmentRegistry,
}

impl Fleet {
    fn new(names: &[&str]) -> Self {
        let registry = EnvironmentRegistry::new();
        for name in names {
            registry
                .register(
                    EnvironmentConfig::new(*name, Connection::new("mem://", *name, "app"))
                        .expect("valid name"),
                )
                .expect("register");
        }
        Self {
            runner: SurrealRunner::with_config(SurrealConfig {
                connect_timeout: Duration::from_secs(3),
                ..SurrealConfig::default()
            }),
            registry,
        }
    }

    fn coordinator(&self) -> DeploymentCoordinator {
        let mut backends = Backends::new();
        self.runner.register(&mut backends);
        DeploymentCoordinator::new(backends)
    }

    fn target(&self, name: &str) -> Target {
        let environment = self.registry.get(name).expect("registered");
        Target::new(name, environment.connection)
    }

    async fn snapshot(&self, name: &str) -> String {
        self.runner
            .snapshot(&self.target(name))
            .await
            .expect("snapshot")
    }

    async fn history(&self, name: &str) -> Vec<String> {
        self.runner
            .history(&self.target(name))
            .await
            .expect("history")
            .iter()
            .map(|row| row.version.to_string())
            .collect()
    }

    /// Puts `account:founder` in `name`'s database so that migration 0002 fails there.
    async fn plant_conflict(&self, name: &str) {
        self.runner
            .session(&self.target(name))
            .await
            .expect("session")
            .query("CREATE account:founder SET email = 'squatter@example.com'")
            .await
            .expect("query")
            .check()
            .expect("planted");
    }

    async fn deploy_first_migration(&self, names: &[&str]) {
        let plan = DeploymentPlan::builder(&self.registry)
            .environments(names.iter().copied())
            .migrations(first_only())
            .kind(StrategyKind::Parallel)
            .build()
            .expect("plan");
        let report = self.coordinator().deploy(&plan).await.expect("deploy");
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    }
}

fn statuses(report: &flotilla_coordinator::DeploymentReport) -> Vec<(String, DeploymentStatus)> {
    report
        .environments
        .iter()
        .map(|e| (e.environment.clone(), e.status))
        .collect()
}

fn drain(events: &mut tokio::sync::broadcast::Receiver<DeploymentEvent>) -> Vec<DeploymentEvent> {
    let mut all = Vec::new();
    while let Ok(event) = events.try_recv() {
        all.push(event);
    }
    all
}

fn versions(list: &[Version]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_over_five_in_batches_of_two_follows_plan_order() {
    let fleet = Fleet::new(&["a", "b", "c", "d", "e"]);
    // Plan order comes from priority, not from the requested order.
    for (name, priority) in [("a", 50), ("b", 40), ("c", 30), ("d", 20), ("e", 10)] {
        let environment = fleet
            .registry
            .get(name)
            .expect("registered")
            .priority(priority);
        fleet.registry.register(environment).expect("register");
    }
    let plan = DeploymentPlan::builder(&fleet.registry)
        .environments(["a", "b", "c", "d", "e"])
        .migrations(three())
        .kind(StrategyKind::Rolling)
        .batch_size(2)
        .build()
        .expect("plan");
    assert_eq!(plan.environment_names(), ["e", "d", "c", "b", "a"]);
    let coordinator = fleet.coordinator();
    let mut events = coordinator.subscribe();
    let report = coordinator.deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    for environment in &report.environments {
        assert_eq!(environment.status, DeploymentStatus::Success);
        assert_eq!(versions(&environment.applied), ["0001", "0002", "0003"]);
        assert_eq!(
            environment.version_after.as_ref().map(Version::as_str),
            Some("0003")
        );
    }

    let events = drain(&mut events);
    let position = |name: &str, status: DeploymentStatus| {
        events
            .iter()
            .position(|e| e.environment == name && e.status == status && e.migration.is_none())
            .unwrap_or_else(|| panic!("no {status:?} event for {name}"))
    };
    let batches = [vec!["e", "d"], vec!["c", "b"], vec!["a"]];
    for pair in batches.windows(2) {
        let last_done = pair[0]
            .iter()
            .map(|n| position(n, DeploymentStatus::Success))
            .max()
            .expect("batch");
        let next_start = pair[1]
            .iter()
            .map(|n| position(n, DeploymentStatus::InProgress))
            .min()
            .expect("batch");
        assert!(
            last_done < next_start,
            "batch {:?} started before {:?} finished",
            pair[1],
            pair[0]
        );
    }
    // Per-migration progress events arrive too, in version order per environment.
    let migrations_of_a: Vec<String> = events
        .iter()
        .filter(|e| e.environment == "a" && e.migration.is_some())
        .filter_map(|e| e.migration.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(migrations_of_a, ["0001", "0002", "0003"]);
    // The live snapshot ends with every environment done.
    assert!(
        coordinator
            .progress()
            .iter()
            .all(|s| s.status == DeploymentStatus::Success && s.applied.len() == 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_canary_skips_the_rest_and_rolls_back_its_own_migrations() {
    let names = ["c1", "c2", "r1", "r2", "r3"];
    let fleet = Fleet::new(&names);
    fleet.deploy_first_migration(&names).await;
    fleet.plant_conflict("c2").await;
    let before: Vec<String> = futures_snapshots(&fleet, &names).await;

    let plan = DeploymentPlan::builder(&fleet.registry)
        .environments(names)
        .migrations(three())
        .kind(StrategyKind::Canary)
        .canary_percentage(40.0)
        .build()
        .expect("plan");
    let report = fleet.coordinator().deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    use DeploymentStatus::*;
    assert_eq!(
        statuses(&report),
        [
            ("c1".into(), RolledBack),
            ("c2".into(), Failed),
            ("r1".into(), Skipped),
            ("r2".into(), Skipped),
            ("r3".into(), Skipped)
        ]
    );
    let c2 = report.environment("c2").expect("c2");
    let error = c2.error.as_ref().expect("error");
    assert_eq!(error.class, ErrorClass::StatementFailed);
    assert!(
        error.message.contains("0002") && error.message.contains("0002_founder.surql:3"),
        "{}",
        error.message
    );
    let c1 = report.environment("c1").expect("c1");
    assert_eq!(versions(&c1.applied), ["0002", "0003"]);
    assert_eq!(
        versions(&c1.rolled_back),
        ["0003", "0002"],
        "reverted newest first"
    );
    // Everything is as it was: c1's two migrations reverted, c2's failed one left nothing.
    assert_eq!(futures_snapshots(&fleet, &names).await, before);
    for name in names {
        assert_eq!(fleet.history(name).await, ["0001"], "{name}");
    }
}

async fn futures_snapshots(fleet: &Fleet, names: &[&str]) -> Vec<String> {
    let mut all = Vec::new();
    for name in names {
        all.push(fleet.snapshot(name).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parallel_failure_rolls_back_the_other_five_to_their_exact_state() {
    let names = ["p1", "p2", "p3", "p4", "p5", "p6"];
    let fleet = Fleet::new(&names);
    fleet.deploy_first_migration(&names).await;
    fleet.plant_conflict("p4").await;
    let before = futures_snapshots(&fleet, &names).await;

    let plan = DeploymentPlan::builder(&fleet.registry)
        .environments(names)
        .migrations(three())
        .kind(StrategyKind::Parallel)
        .max_concurrent(3)
        .build()
        .expect("plan");
    let report = fleet.coordinator().deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    for environment in &report.environments {
        let expected = if environment.environment == "p4" {
            DeploymentStatus::Failed
        } else {
            DeploymentStatus::RolledBack
        };
        assert_eq!(environment.status, expected, "{}", environment.environment);
        assert_eq!(
            environment.version_after.as_ref().map(Version::as_str),
            Some("0001"),
            "{}",
            environment.environment
        );
    }
    // INFO FOR DB (and every record) is exactly what it was before the deploy.
    assert_eq!(futures_snapshots(&fleet, &names).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dry_run_reads_everything_and_changes_nothing() {
    let names = ["fresh", "at-one", "at-two"];
    let fleet = Fleet::new(&names);
    fleet.deploy_first_migration(&["at-one", "at-two"]).await;
    let two = migrations(&[
        ("0001_accounts.surql", CREATE_ACCOUNTS),
        ("0002_founder.surql", SEED_FOUNDER),
    ]);
    let plan = DeploymentPlan::builder(&fleet.registry)
        .environments(["at-two"])
        .migrations(two)
        .build()
        .expect("plan");
    assert_eq!(
        fleet
            .coordinator()
            .deploy(&plan)
            .await
            .expect("deploy")
            .outcome,
        Outcome::Succeeded
    );
    let before = futures_snapshots(&fleet, &names).await;

    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(three())
        .dry_run(true)
        .build()
        .expect("plan");
    let report = fleet.coordinator().deploy(&plan).await.expect("dry run");
    assert_eq!(report.outcome, Outcome::DryRun);
    let pending = |name: &str| versions(&report.environment(name).expect("env").pending);
    assert_eq!(pending("fresh"), ["0001", "0002", "0003"]);
    assert_eq!(pending("at-one"), ["0002", "0003"]);
    assert_eq!(pending("at-two"), ["0003"]);
    assert!(
        report
            .environments
            .iter()
            .all(|e| e.applied.is_empty() && e.status == DeploymentStatus::Pending)
    );
    assert_eq!(
        futures_snapshots(&fleet, &names).await,
        before,
        "a dry run changed a target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unapproved_environment_refuses_the_whole_deployment() {
    let names = ["dev", "prod"];
    let fleet = Fleet::new(&names);
    let prod = fleet
        .registry
        .get("prod")
        .expect("prod")
        .require_approval(true);
    fleet.registry.register(prod).expect("register");
    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(three())
        .build()
        .expect("plan");

    let report = fleet.coordinator().deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Refused);
    let refusal = report.refusal.as_ref().expect("refusal");
    assert_eq!(refusal.gate, Gate::Approval);
    assert_eq!(refusal.reasons.len(), 1);
    assert!(refusal.reasons[0].contains("prod") && refusal.reasons[0].contains("approval"));
    for name in names {
        assert!(fleet.history(name).await.is_empty(), "{name} was changed");
    }

    let approved = fleet
        .coordinator()
        .with_approver(Arc::new(ApproveList::new(["prod"])));
    let report = approved.deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destructive_migration_is_refused_where_not_allowed() {
    let names = ["dev", "prod"];
    let fleet = Fleet::new(&names);
    fleet.deploy_first_migration(&names).await;
    let prod = fleet
        .registry
        .get("prod")
        .expect("prod")
        .allow_destructive(false);
    fleet.registry.register(prod).expect("register");
    let cleanup = "-- @up\nDEFINE FIELD nickname ON account TYPE option<string>;\n\nREMOVE INDEX account_email ON account;\n-- @down\nDEFINE INDEX account_email ON account FIELDS email UNIQUE;\n";
    let set = migrations(&[
        ("0001_accounts.surql", CREATE_ACCOUNTS),
        ("0002_cleanup.surql", cleanup),
    ]);
    let before = futures_snapshots(&fleet, &names).await;

    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(set)
        .build()
        .expect("plan");
    let report = fleet.coordinator().deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Refused);
    let refusal = report.refusal.as_ref().expect("refusal");
    assert_eq!(refusal.gate, Gate::Destructive);
    let reason = &refusal.reasons[0];
    assert!(
        reason.contains("prod")
            && reason.contains("0002")
            && reason.contains("statement 2")
            && reason.contains("0002_cleanup.surql:4")
            && reason.contains("REMOVE INDEX"),
        "{reason}"
    );
    assert_eq!(
        report.environment("dev").expect("dev").status,
        DeploymentStatus::Skipped
    );
    assert_eq!(
        futures_snapshots(&fleet, &names).await,
        before,
        "nothing may run anywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_environment_is_refused_in_preflight_or_fails_alone_without_it() {
    let fleet = Fleet::new(&["one", "two", "three"]);
    let url = format!("ws://127.0.0.1:{}", free_port());
    let dead = EnvironmentConfig::new(
        "dead",
        Connection::new(url.clone(), "ns", "db").with_credentials("root", "root", AuthLevel::Root),
    )
    .expect("valid")
    .priority(150);
    fleet.registry.register(dead).expect("register");

    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(three())
        .kind(StrategyKind::Parallel)
        .auto_rollback(false)
        .build()
        .expect("plan");
    let report = fleet.coordinator().deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Refused);
    let refusal = report.refusal.as_ref().expect("refusal");
    assert_eq!(refusal.gate, Gate::Health);
    assert_eq!(refusal.reasons.len(), 1);
    assert!(
        refusal.reasons[0].contains("dead") && refusal.reasons[0].contains(&url),
        "{:?}",
        refusal.reasons
    );
    assert!(fleet.history("one").await.is_empty());

    let unchecked = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(three())
        .kind(StrategyKind::Parallel)
        .auto_rollback(false)
        .verify_health(false)
        .build()
        .expect("plan");
    let report = fleet
        .coordinator()
        .deploy(&unchecked)
        .await
        .expect("deploy");
    assert_eq!(report.outcome, Outcome::Failed);
    let dead = report.environment("dead").expect("dead");
    assert_eq!(dead.status, DeploymentStatus::Failed);
    assert_eq!(
        dead.error.as_ref().map(|e| e.class),
        Some(ErrorClass::TargetUnreachable)
    );
    for name in ["one", "two", "three"] {
        assert_eq!(
            report.environment(name).expect("env").status,
            DeploymentStatus::Success
        );
        assert_eq!(fleet.history(name).await, ["0001", "0002", "0003"]);
    }
    assert_eq!(
        report.environments.len(),
        4,
        "every environment exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_targets_deploy_correctly_with_parallel_sixteen() {
    let names: Vec<String> = (0..200).map(|i| format!("tenant-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fleet = Fleet::new(&refs);
    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(three())
        .kind(StrategyKind::Parallel)
        .max_concurrent(16)
        .build()
        .expect("plan");
    let coordinator = fleet.coordinator();
    let report = coordinator.deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.environments.len(), 200);
    let reported: Vec<&str> = report
        .environments
        .iter()
        .map(|e| e.environment.as_str())
        .collect();
    assert_eq!(reported, refs, "plan order, each once");
    for environment in &report.environments {
        assert_eq!(
            versions(&environment.applied),
            ["0001", "0002", "0003"],
            "{}",
            environment.environment
        );
    }
    for name in [&refs[0], &refs[99], &refs[199]] {
        assert_eq!(fleet.history(name).await, ["0001", "0002", "0003"]);
    }
    assert_eq!(
        fleet.runner.connection_count(),
        1,
        "one embedded datastore serves every tenant"
    );
    // A second run has nothing to do anywhere.
    let again = coordinator.deploy(&plan).await.expect("deploy");
    assert!(
        again
            .environments
            .iter()
            .all(|e| e.applied.is_empty() && e.status == DeploymentStatus::Success)
    );
}

/// A strategy of the user's own, for the test below: the plan's environments one at a time in
/// reverse order; counts how often it ran.
#[derive(Debug, Default)]
struct Reverse {
    runs: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl flotilla_strategies::DeploymentStrategy for Reverse {
    fn name(&self) -> &str {
        "reverse"
    }

    async fn deploy(
        &self,
        deployment: Arc<flotilla_strategies::Deployment>,
    ) -> flotilla_strategies::StrategyReport {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut outcomes = vec![None; deployment.destinations.len()];
        let order: Vec<usize> = (0..deployment.destinations.len()).rev().collect();
        flotilla_strategies::run_wave(&deployment, &order, 1, true, &mut outcomes).await;
        flotilla_strategies::StrategyReport::finish(&deployment, outcomes, None)
    }
}

/// A plan can carry any strategy and still gets every gate before it and auto-rollback after
/// it: an unapproved environment refuses before the strategy runs; a failure rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_strategy_gets_the_gates_and_auto_rollback() {
    let fleet = Fleet::new(&["a", "b", "c"]);
    let strategy = Arc::new(Reverse::default());
    let gated = fleet.registry.get("a").expect("a").require_approval(true);
    fleet.registry.register(gated).expect("register");
    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(three())
        .custom_strategy(Arc::clone(&strategy) as Arc<dyn flotilla_strategies::DeploymentStrategy>)
        // Rehearsing on a copy of a's schema would find the planted table and refuse before
        // the strategy ran; this test is about what follows a failure on the fleet.
        .rehearse(false)
        .build()
        .expect("plan");
    let report = fleet.coordinator().deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    assert_eq!(
        report.refusal.as_ref().map(|r| r.gate),
        Some(Gate::Approval)
    );
    assert_eq!(strategy.runs.load(std::sync::atomic::Ordering::SeqCst), 0);

    let approving = fleet
        .coordinator()
        .with_approver(Arc::new(ApproveList::new(["a"])));
    fleet.plant_conflict("a").await;
    let report = approving.deploy(&plan).await.expect("deploy");
    assert_eq!(report.strategy, "reverse");
    assert_eq!(strategy.runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    // Reverse order: c, then b succeed, then a fails (its first migration meets the planted
    // record); c and b are rolled back.
    assert_eq!(
        statuses(&report),
        [
            ("a".to_owned(), DeploymentStatus::Failed),
            ("b".to_owned(), DeploymentStatus::RolledBack),
            ("c".to_owned(), DeploymentStatus::RolledBack),
        ]
    );
    for name in ["b", "c"] {
        assert!(fleet.history(name).await.is_empty(), "{name}");
    }
}

/// The rehearsal gate: each distinct pending list is rehearsed once, on the schema of the
/// first target it is pending on; a problem refuses every target sharing that list, naming
/// file and line, and nothing runs anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rehearsal_gate_refuses_before_anything_runs() {
    let fleet = Fleet::new(&["a", "b", "c"]);
    fleet.deploy_first_migration(&["a"]).await;
    let snapshots = [
        fleet.snapshot("a").await,
        fleet.snapshot("b").await,
        fleet.snapshot("c").await,
    ];
    // 0002's down forgets the field its up defines.
    let leaky = migrations(&[
        ("0001_accounts.surql", CREATE_ACCOUNTS),
        (
            "0002_nickname.surql",
            "-- @up\nDEFINE FIELD nickname ON account TYPE option<string>;\n-- @down\nREMOVE INDEX account_email ON account;\nDEFINE INDEX account_email ON account FIELDS email UNIQUE;\n",
        ),
    ]);
    let plan = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(Arc::clone(&leaky))
        .kind(StrategyKind::Parallel)
        .build()
        .expect("plan");
    let report = fleet.coordinator().deploy(&plan).await.expect("deploy");
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    let refusal = report.refusal.as_ref().expect("a refusal");
    assert_eq!(refusal.gate, Gate::Rehearsal);
    // Two pending lists: a's [0002], rehearsed on a's schema; b's and c's [0001, 0002],
    // rehearsed once, on b's.
    let reasons: Vec<&str> = report
        .environments
        .iter()
        .map(|e| e.error.as_ref().expect("refused").message.as_str())
        .collect();
    assert!(
        reasons[0].contains("1 pending migration(s) on a copy of a's schema"),
        "{reasons:?}"
    );
    for reason in &reasons[1..] {
        assert!(
            reason.contains("2 pending migration(s) on a copy of b's schema"),
            "{reasons:?}"
        );
    }
    for reason in &reasons {
        assert!(
            reason.contains("migrations/0002_nickname.surql:4")
                && reason.contains("field account.nickname is still defined"),
            "{reason}"
        );
    }
    assert!(
        report
            .environments
            .iter()
            .all(|e| e.status == DeploymentStatus::Refused && e.applied.is_empty())
    );
    for (name, before) in ["a", "b", "c"].into_iter().zip(&snapshots) {
        assert_eq!(&fleet.snapshot(name).await, before, "{name} was changed");
    }

    // Without the gate the same plan runs (the down is never needed).
    let unrehearsed = DeploymentPlan::builder(&fleet.registry)
        .all()
        .migrations(leaky)
        .kind(StrategyKind::Parallel)
        .rehearse(false)
        .build()
        .expect("plan");
    let report = fleet
        .coordinator()
        .deploy(&unrehearsed)
        .await
        .expect("deploy");
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
}
