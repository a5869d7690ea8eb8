//! The conformance suite every backend must pass.
//!
//! A backend implements [`Harness`] (how to get a runner, a fresh target, and a snapshot of
//! a target's schema and data) and expands [`conformance_tests!`](crate::conformance_tests)
//! in its tests; each check becomes its own `#[tokio::test]`. The suite's migrations are
//! ordinary SurrealQL; `THROW` is the statement that fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_core::{DriftError, DriftPolicy, MigrationSet, Version};

use crate::error::{ErrorClass, RunnerError};
use crate::lock::{LockGuard, LockInfo};
use crate::lock::{LockOwner, LockRequest};
use crate::runner::DynRunner;
use crate::target::{MigrationPlan, Revert, Target};

/// What the suite needs from a backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A runner (a new one per call, or a shared one).
    async fn runner(&self) -> DynRunner;
    /// A target no other check uses; `name` is unique per check.
    fn target(&self, name: &str) -> Target;
    /// The target's schema and data, rendered so that equal states render equally.
    async fn snapshot(&self, target: &Target) -> String;
}

/// Expands to one `#[tokio::test]` per conformance check, each calling `$harness` (an
/// expression evaluating to something implementing [`Harness`]) afresh.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            applies_pending_once_and_is_idempotent,
            failing_migration_leaves_nothing_behind,
            drift_is_detected_before_anything_runs,
            missing_files_and_out_of_order_are_errors_unless_allowed,
            concurrent_appliers_apply_each_migration_once,
            live_lock_is_never_taken,
            expired_lock_is_taken_over,
            heartbeat_keeps_the_lease_alive,
            execute_requires_the_lock,
            revert_is_atomic_and_exact,
            a_failed_revert_stops_there,
            health_is_truthful,
            validation_changes_nothing,
            lock_is_released_when_a_migration_fails,
            a_failed_execution_keeps_the_lease_until_release,
            a_broken_lock_is_free_and_its_holder_applies_nothing,
            a_long_final_migration_commits_once_while_the_lease_is_renewed,
            a_lease_lost_during_a_migration_stops_the_next_one,
            a_takeover_during_a_migration_rolls_it_back,
            a_revert_never_leaves_a_newer_version_applied,
            a_deployment_reverts_exactly_what_it_applied,
            one_process_holds_one_lease_per_database,
        );
    };
    (@each $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $harness;
                $crate::testkit::$check(&harness).await;
            }
        )*
    };
}

const PEOPLE: &str = "-- @up
DEFINE TABLE person SCHEMAFULL;
DEFINE FIELD name ON person TYPE string;
DEFINE INDEX person_name ON person FIELDS name UNIQUE;
-- @down
REMOVE TABLE person;
";

const SEED: &str = "-- @up
CREATE person:ada SET name = 'Ada; the first';
CREATE person:bob SET name = \"Bob {not a block}\";
-- @down
DELETE person:ada;
DELETE person:bob;
";

const GREET: &str = "-- @up
DEFINE FUNCTION fn::greet($who: string) {
    LET $greeting = 'hello; ' + $who;
    RETURN $greeting;
};
-- @down
REMOVE FUNCTION fn::greet;
";

/// Its 4th statement fails after three that would leave a table, a field and a record.
const FAILING: &str = "-- @up
DEFINE TABLE audit SCHEMAFULL;
DEFINE FIELD note ON audit TYPE string;
CREATE audit:1 SET note = 'written before the failure';
THROW 'injected failure at statement 4';
-- @down
REMOVE TABLE audit;
";

/// The same migration without its failing statement.
const FIXED: &str = "-- @up
DEFINE TABLE audit SCHEMAFULL;
DEFINE FIELD note ON audit TYPE string;
CREATE audit:1 SET note = 'written before the failure';
-- @down
REMOVE TABLE audit;
";

/// Runs after [`FAILING`] in the same deploy: it must not run at all.
const AFTER_FAILING: &str = "-- @up
DEFINE TABLE later SCHEMALESS;
CREATE later:1 SET note = 'must not exist after 0004 failed';
-- @down
REMOVE TABLE later;
";

/// A migration set from `(file name, contents)`.
pub fn migrations(files: &[(&str, &str)]) -> Arc<MigrationSet> {
    let set = MigrationSet::from_files(files.iter().map(|(name, text)| {
        (
            PathBuf::from(format!("migrations/{name}")),
            (*text).to_owned(),
        )
    }))
    .expect("the suite's migrations are valid");
    Arc::new(set)
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("0001_people.surql", PEOPLE),
        ("0002_seed.surql", SEED),
        ("0003_greet.surql", GREET),
    ]
}

fn lock(wait: Duration) -> LockRequest {
    LockRequest::new(Some("conformance".into()), wait)
}

fn owner(name: &str) -> LockOwner {
    LockOwner {
        host: format!("{name}-host"),
        pid: 4242,
        deployment_id: Some(name.to_owned()),
    }
}

fn versions(list: &[Version]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

async fn history_versions(runner: &DynRunner, target: &Target) -> Vec<String> {
    let history = runner.history(target).await.expect("history");
    history.iter().map(|row| row.version.to_string()).collect()
}

async fn apply(
    runner: &DynRunner,
    target: &Target,
    plan: &MigrationPlan,
) -> crate::Result<crate::MigrationResult> {
    runner
        .apply_locked(target, plan, &lock(Duration::from_secs(30)))
        .await
}

/// Pending migrations apply once; applying the same set again applies nothing and succeeds.
pub async fn applies_pending_once_and_is_idempotent(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("idempotent");
    let plan = MigrationPlan::up(migrations(&base()));
    let first = apply(&runner, &target, &plan).await.expect("first deploy");
    assert_eq!(versions(&first.applied), ["0001", "0002", "0003"]);
    assert_eq!(first.version_before, None);
    assert_eq!(
        first.version_after.as_ref().map(Version::as_str),
        Some("0003")
    );
    let after_first = h.snapshot(&target).await;

    let second = apply(&runner, &target, &plan).await.expect("second deploy");
    assert!(
        second.applied.is_empty(),
        "re-run applied {:?}",
        second.applied
    );
    assert_eq!(
        second.version_before.as_ref().map(Version::as_str),
        Some("0003")
    );
    assert_eq!(second.version_after, second.version_before);
    assert_eq!(
        history_versions(&runner, &target).await,
        ["0001", "0002", "0003"]
    );
    assert_eq!(
        h.snapshot(&target).await,
        after_first,
        "a re-run must change nothing"
    );

    let history = runner.history(&target).await.expect("history");
    let set = migrations(&base());
    for row in &history {
        let file = set.get(&row.version).expect("file for row");
        assert_eq!(
            row.checksum, file.checksum,
            "history stores the file checksum"
        );
        assert_eq!(row.description, file.description);
        assert!(row.applied_at.is_some(), "applied_at recorded");
        assert_eq!(row.applied_by.as_deref(), Some(plan.applied_by.as_str()));
    }
}

/// A migration failing at its 4th statement leaves no table, field, record or history row;
/// the migrations before it stay applied and the one after it never runs (backends that send
/// several migrations in one request must stop at the failure too).
pub async fn failing_migration_leaves_nothing_behind(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("atomic");
    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&base()[..2])),
    )
    .await
    .expect("first two apply");
    let before = h.snapshot(&target).await;

    let mut files = base();
    files.push(("0004_audit.surql", FAILING));
    files.push(("0005_later.surql", AFTER_FAILING));
    let err = apply(&runner, &target, &MigrationPlan::up(migrations(&files)))
        .await
        .expect_err("0004 fails");
    // 0003 committed, then 0004 failed: the error says both.
    assert_eq!(versions(err.applied_before_failure()), ["0003"]);
    match err.cause() {
        RunnerError::StatementFailed {
            version,
            statement,
            line,
            file,
            message,
            ..
        } => {
            assert_eq!(version.as_str(), "0004");
            assert_eq!(*statement, 4);
            assert_eq!(*line, 5, "line of the THROW in the file");
            assert!(file.ends_with("0004_audit.surql"), "{}", file.display());
            assert!(message.contains("injected failure"), "{message}");
        }
        other => panic!("expected StatementFailed, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::StatementFailed);
    assert_eq!(
        history_versions(&runner, &target).await,
        ["0001", "0002", "0003"]
    );

    // Exactly 0003's effects were added: revert it and the state equals the one before.
    let revert = MigrationPlan::down(migrations(&files), vec![Version::parse("0003").expect("v")]);
    apply(&runner, &target, &revert).await.expect("revert 0003");
    assert_eq!(
        h.snapshot(&target).await,
        before,
        "the failed migration left something behind"
    );

    // Fixed, the same migration applies cleanly: nothing of the failed attempt was in the way.
    let mut fixed = base();
    fixed.push(("0004_audit.surql", FIXED));
    fixed.push(("0005_later.surql", AFTER_FAILING));
    let result = apply(&runner, &target, &MigrationPlan::up(migrations(&fixed)))
        .await
        .expect("fixed migration applies");
    assert_eq!(versions(&result.applied), ["0003", "0004", "0005"]);
}

/// An applied migration whose file changed fails the target before anything runs, naming
/// the version and the file.
pub async fn drift_is_detected_before_anything_runs(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("drift");
    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&base()[..2])),
    )
    .await
    .expect("deploy");
    let before = h.snapshot(&target).await;

    let edited_seed = SEED.replace("Ada; the first", "Ada, edited");
    let files = vec![
        ("0001_people.surql", PEOPLE),
        ("0002_seed.surql", edited_seed.as_str()),
        ("0003_greet.surql", GREET),
    ];
    let err = apply(&runner, &target, &MigrationPlan::up(migrations(&files)))
        .await
        .expect_err("drift");
    match &err {
        RunnerError::Drift {
            source: DriftError::ChecksumMismatch { version, file, .. },
            ..
        } => {
            assert_eq!(version.as_str(), "0002");
            assert!(file.ends_with("0002_seed.surql"));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("0002") && message.contains("0002_seed.surql"),
        "{message}"
    );
    assert_eq!(err.class(), ErrorClass::ChecksumMismatch);
    assert_eq!(
        history_versions(&runner, &target).await,
        ["0001", "0002"],
        "0003 must not run"
    );
    assert_eq!(h.snapshot(&target).await, before);
}

/// History rows without files, and pending migrations older than the newest applied one,
/// are errors unless the plan allows them.
pub async fn missing_files_and_out_of_order_are_errors_unless_allowed(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("order");
    let files = base();
    let first_and_third = vec![files[0], files[2]];
    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&first_and_third)),
    )
    .await
    .expect("deploy 0001 and 0003");

    let err = apply(&runner, &target, &MigrationPlan::up(migrations(&files)))
        .await
        .expect_err("0002 is out of order");
    assert!(
        matches!(&err, RunnerError::Drift { source: DriftError::OutOfOrder { version, .. }, .. } if version.as_str() == "0002"),
        "{err:?}"
    );
    let allow = DriftPolicy {
        allow_out_of_order: true,
        ..DriftPolicy::default()
    };
    let result = apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&files)).with_policy(allow),
    )
    .await
    .expect("allowed out of order");
    assert_eq!(versions(&result.applied), ["0002"]);

    let without_first = vec![files[1], files[2]];
    let err = apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&without_first)),
    )
    .await
    .expect_err("0001 has no file");
    assert!(
        matches!(&err, RunnerError::Drift { source: DriftError::MissingFile { version, .. }, .. } if version.as_str() == "0001"),
        "{err:?}"
    );
    let allow = DriftPolicy {
        allow_missing_files: true,
        ..DriftPolicy::default()
    };
    let result = apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&without_first)).with_policy(allow),
    )
    .await
    .expect("allowed missing file");
    assert!(result.applied.is_empty());
}

/// Eight appliers racing on one target: every migration is applied exactly once, all eight
/// return successfully, and no lock is left behind.
pub async fn concurrent_appliers_apply_each_migration_once(h: &impl Harness) {
    let target = h.target("race");
    let plan = MigrationPlan::up(migrations(&base()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let runner = h.runner().await;
        let target = target.clone();
        let plan = plan.clone();
        tasks.spawn(async move {
            runner
                .apply_locked(&target, &plan, &lock(Duration::from_secs(60)))
                .await
        });
    }
    let mut applied = Vec::new();
    let mut finished = 0;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.expect("task").expect("every applier succeeds");
        applied.extend(versions(&result.applied));
        finished += 1;
    }
    assert_eq!(finished, 8);
    applied.sort();
    assert_eq!(
        applied,
        ["0001", "0002", "0003"],
        "each migration applied exactly once"
    );
    let runner = h.runner().await;
    assert_eq!(
        history_versions(&runner, &target).await,
        ["0001", "0002", "0003"]
    );
    let health = runner.health(&target).await.expect("healthy");
    assert_eq!(health.lock, None, "no lock left behind");
}

/// A live lease is never taken: the waiter gives up after its wait, naming holder and time.
pub async fn live_lock_is_never_taken(h: &impl Harness) {
    let runner = h.runner().await;
    let other = h.runner().await;
    let target = h.target("live-lock");
    let held = runner
        .acquire_lock(
            &target,
            &LockRequest {
                owner: owner("holder"),
                ..lock(Duration::ZERO)
            },
        )
        .await
        .expect("first acquire");
    let err = other
        .acquire_lock(
            &target,
            &LockRequest {
                owner: owner("waiter"),
                ..lock(Duration::from_millis(300))
            },
        )
        .await
        .expect_err("held by someone else");
    match &err {
        RunnerError::LockHeld { holder, waited, .. } => {
            assert_eq!(holder.owner, owner("holder"));
            assert_eq!(holder.acquired_at, held.info().acquired_at);
            assert!(
                *waited >= Duration::from_millis(300),
                "gave up after {waited:?}"
            );
        }
        other => panic!("expected LockHeld, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("lock held by holder-host pid 4242") && message.contains(" since "),
        "{message}"
    );
    assert_eq!(err.class(), ErrorClass::LockTimeout);
    held.release().await.expect("release");
    let taken = other
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect("free after release");
    assert!(
        taken.took_over().is_none(),
        "a released lock is not a takeover"
    );
    taken.release().await.expect("release");
}

/// A lease whose holder died (no heartbeat) expires and is taken over, and that is reported.
pub async fn expired_lock_is_taken_over(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("expired-lock");
    let short = LockRequest {
        owner: owner("crashed"),
        ..lock(Duration::ZERO).with_lease(Duration::from_millis(600))
    };
    let crashed = runner.acquire_lock(&target, &short).await.expect("acquire");
    drop(crashed); // the holder dies: no release, no heartbeat

    let next = h.runner().await;
    let result = next
        .apply_locked(
            &target,
            &MigrationPlan::up(migrations(&base()[..1])),
            &lock(Duration::from_secs(10)),
        )
        .await
        .expect("takes over the expired lease");
    let previous = result.lock_takeover.expect("takeover reported");
    assert_eq!(previous.owner, owner("crashed"));
    assert_eq!(versions(&result.applied), ["0001"]);
}

/// While held, the heartbeat renews the lease past its original expiry.
pub async fn heartbeat_keeps_the_lease_alive(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("heartbeat");
    // Long enough that a renewal delayed by a busy machine still lands in time.
    let lease = Duration::from_millis(1500);
    let held = runner
        .acquire_lock(
            &target,
            &LockRequest {
                owner: owner("alive"),
                ..lock(Duration::ZERO).with_lease(lease)
            },
        )
        .await
        .expect("acquire");
    // Three lease lengths pass; without renewal the lease would have expired twice over.
    tokio::time::sleep(lease * 3).await;
    let err = h
        .runner()
        .await
        .acquire_lock(&target, &lock(Duration::from_millis(100)))
        .await
        .expect_err("still held");
    assert!(matches!(err, RunnerError::LockHeld { .. }), "{err:?}");
    held.release().await.expect("release");
}

/// A guard the runner never issued, standing in for "no lock".
#[derive(Debug)]
struct Forged;

#[async_trait]
impl LockGuard for Forged {
    fn info(&self) -> LockInfo {
        LockInfo {
            owner: owner("forger"),
            acquired_at: String::new(),
            expires_at: String::new(),
        }
    }

    fn took_over(&self) -> Option<LockInfo> {
        None
    }

    fn token(&self) -> &str {
        "forged-token"
    }

    fn is_lost(&self) -> bool {
        false
    }

    async fn release(self: Box<Self>) -> crate::Result<()> {
        Ok(())
    }
}

/// Executing without holding the target's lock — a guard the runner never issued, or one
/// for another target — is refused and changes nothing.
pub async fn execute_requires_the_lock(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("unlocked");
    let plan = MigrationPlan::up(migrations(&base()));
    let err = runner
        .execute_migration(&target, &plan, &Forged)
        .await
        .expect_err("no lock held");
    assert!(matches!(err, RunnerError::NotLocked { .. }), "{err:?}");
    let elsewhere = h.target("unlocked-elsewhere");
    let other = runner
        .acquire_lock(&elsewhere, &lock(Duration::ZERO))
        .await
        .expect("lock another target");
    let err = runner
        .execute_migration(&target, &plan, other.as_ref())
        .await
        .expect_err("that lock is another target's");
    assert!(
        matches!(
            err,
            RunnerError::NotLocked { .. } | RunnerError::LockLost { .. }
        ),
        "{err:?}"
    );
    other.release().await.expect("release");
    assert!(history_versions(&runner, &target).await.is_empty());
}

/// Reverting runs the down statements and deletes the history row atomically, newest first;
/// a failing down changes nothing.
pub async fn revert_is_atomic_and_exact(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("revert");
    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&base()[..1])),
    )
    .await
    .expect("deploy 0001");
    let after_first = h.snapshot(&target).await;
    apply(&runner, &target, &MigrationPlan::up(migrations(&base())))
        .await
        .expect("deploy the rest");

    let v = |s: &str| Version::parse(s).expect("version");
    let broken_down = GREET.replace(
        "REMOVE FUNCTION fn::greet;",
        "REMOVE FUNCTION fn::greet;\nTHROW 'down fails';",
    );
    let mut files = base();
    files[2] = ("0003_greet.surql", broken_down.as_str());
    // The file changed, so reverting 0003 is refused as drift before anything runs…
    let err = apply(
        &runner,
        &target,
        &MigrationPlan::down(migrations(&files), vec![v("0003")]),
    )
    .await
    .expect_err("drifted down");
    assert_eq!(err.class(), ErrorClass::ChecksumMismatch);

    let full = h.snapshot(&target).await;
    let result = apply(
        &runner,
        &target,
        &MigrationPlan::down(migrations(&base()), vec![v("0003"), v("0002")]),
    )
    .await
    .expect("revert");
    assert_eq!(versions(&result.applied), ["0003", "0002"]);
    assert_eq!(
        result.version_after.as_ref().map(Version::as_str),
        Some("0001")
    );
    assert_eq!(history_versions(&runner, &target).await, ["0001"]);
    assert_eq!(h.snapshot(&target).await, after_first);
    assert_ne!(full, after_first);

    // Reverting again is a no-op: the versions are no longer applied.
    let again = apply(
        &runner,
        &target,
        &MigrationPlan::down(migrations(&base()), vec![v("0003"), v("0002")]),
    )
    .await
    .expect("idempotent revert");
    assert!(again.applied.is_empty());
}

/// A revert whose first down section fails reverts nothing: not that migration, and not the
/// ones after it in the same revert.
pub async fn a_failed_revert_stops_there(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("failed-revert");
    let failing_down = GREET.replace(
        "REMOVE FUNCTION fn::greet;",
        "REMOVE FUNCTION fn::greet;\nTHROW 'down fails';",
    );
    let mut files = base();
    files[2] = ("0003_greet.surql", failing_down.as_str());
    let set = migrations(&files);
    apply(&runner, &target, &MigrationPlan::up(Arc::clone(&set)))
        .await
        .expect("deploy");
    let before = h.snapshot(&target).await;
    let v = |s: &str| Version::parse(s).expect("version");
    let err = apply(
        &runner,
        &target,
        &MigrationPlan::down(set, vec![v("0003"), v("0002")]),
    )
    .await
    .expect_err("0003's down fails");
    assert!(err.applied_before_failure().is_empty(), "{err:?}");
    match err.cause() {
        RunnerError::StatementFailed {
            version, statement, ..
        } => {
            assert_eq!(version.as_str(), "0003");
            assert_eq!(*statement, 2);
        }
        other => panic!("expected StatementFailed, got {other:?}"),
    }
    assert_eq!(
        history_versions(&runner, &target).await,
        ["0001", "0002", "0003"]
    );
    assert_eq!(h.snapshot(&target).await, before, "0002's down ran");
}

/// Health reports a new target as healthy but uninitialised, then initialised, and names
/// the lock holder while a lock is held.
pub async fn health_is_truthful(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("health");
    let fresh = runner
        .health(&target)
        .await
        .expect("a new target is healthy");
    assert!(!fresh.initialised, "new database reported as initialised");
    assert_eq!(fresh.lock, None);

    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&base()[..1])),
    )
    .await
    .expect("deploy");
    let held = runner
        .acquire_lock(
            &target,
            &LockRequest {
                owner: owner("inspector"),
                ..lock(Duration::ZERO)
            },
        )
        .await
        .expect("acquire");
    let status = runner.health(&target).await.expect("healthy");
    assert!(status.initialised);
    assert_eq!(status.lock.map(|l| l.owner), Some(owner("inspector")));
    held.release().await.expect("release");
    assert_eq!(runner.health(&target).await.expect("healthy").lock, None);
}

/// Validation reports what would run (up and down) and changes nothing.
pub async fn validation_changes_nothing(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("validate");
    let before = h.snapshot(&target).await;
    let plan = MigrationPlan::up(migrations(&base()));
    let would = runner
        .validate_migration(&target, &plan)
        .await
        .expect("valid");
    assert_eq!(versions(&would), ["0001", "0002", "0003"]);
    assert_eq!(
        h.snapshot(&target).await,
        before,
        "validation wrote something"
    );
    assert!(!runner.health(&target).await.expect("healthy").initialised);

    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&base()[..2])),
    )
    .await
    .expect("deploy two");
    let would = runner
        .validate_migration(&target, &plan)
        .await
        .expect("valid");
    assert_eq!(versions(&would), ["0003"]);
    let down = MigrationPlan::down(
        migrations(&base()),
        vec![
            Version::parse("0003").expect("v"),
            Version::parse("0002").expect("v"),
        ],
    );
    let would = runner
        .validate_migration(&target, &down)
        .await
        .expect("valid");
    assert_eq!(
        versions(&would),
        ["0002"],
        "0003 is not applied, so only 0002 would revert"
    );
}

/// The lock is released on the error path too.
pub async fn lock_is_released_when_a_migration_fails(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("release-on-error");
    let err = apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&[("0001_audit.surql", FAILING)])),
    )
    .await
    .expect_err("fails");
    assert_eq!(err.class(), ErrorClass::StatementFailed);
    assert_eq!(runner.health(&target).await.expect("healthy").lock, None);
    let retaken = h
        .runner()
        .await
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect("lock is free at once");
    retaken.release().await.expect("release");
}

/// A failed execution leaves the lease held — until the guard releases it — and a
/// successful one under the same kind of guard ends with the lock free once released.
pub async fn a_failed_execution_keeps_the_lease_until_release(h: &impl Harness) {
    let runner = h.runner().await;
    let other = h.runner().await;
    let target = h.target("failed-keeps-lease");
    let mut files = base();
    files.push(("0004_audit.surql", FAILING));
    let guard = runner
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect("acquire");
    let err = runner
        .execute_migration(
            &target,
            &MigrationPlan::up(migrations(&files)),
            guard.as_ref(),
        )
        .await
        .expect_err("0004 fails");
    assert_eq!(err.class(), ErrorClass::StatementFailed);
    assert_eq!(
        versions(err.applied_before_failure()),
        ["0001", "0002", "0003"]
    );
    let refused = other
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect_err("still held");
    assert!(
        matches!(refused, RunnerError::LockHeld { .. }),
        "{refused:?}"
    );
    guard.release().await.expect("release after a failure");

    files[3] = ("0004_audit.surql", FIXED);
    let guard = runner
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect("free after release");
    let result = runner
        .execute_migration(
            &target,
            &MigrationPlan::up(migrations(&files)),
            guard.as_ref(),
        )
        .await
        .expect("0004 fixed");
    assert_eq!(versions(&result.applied), ["0004"]);
    guard.release().await.expect("release");
    assert_eq!(runner.health(&target).await.expect("healthy").lock, None);
    other
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect("free for others")
        .release()
        .await
        .expect("release");
}

/// Breaking a lock frees the target at once; the former holder can apply nothing more
/// (its fenced apply fails) and learns so when it releases.
pub async fn a_broken_lock_is_free_and_its_holder_applies_nothing(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("broken-lock");
    let held = runner
        .acquire_lock(
            &target,
            &LockRequest {
                owner: owner("stuck"),
                ..lock(Duration::ZERO)
            },
        )
        .await
        .expect("acquire");
    let removed = h.runner().await.break_lock(&target).await.expect("break");
    assert_eq!(removed.map(|l| l.owner), Some(owner("stuck")));
    let err = runner
        .execute_migration(
            &target,
            &MigrationPlan::up(migrations(&base()[..1])),
            held.as_ref(),
        )
        .await
        .expect_err("the lease is gone");
    assert!(
        matches!(
            err,
            RunnerError::LockLost { .. } | RunnerError::NotLocked { .. }
        ),
        "{err:?}"
    );
    assert!(history_versions(&runner, &target).await.is_empty());
    assert!(matches!(
        held.release().await,
        Err(RunnerError::LockLost { .. })
    ));
    let next = h
        .runner()
        .await
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect("free");
    next.release().await.expect("release");
    assert_eq!(
        h.runner()
            .await
            .break_lock(&target)
            .await
            .expect("nothing to break"),
        None
    );
}

/// A final migration that takes longer than a third of the lease — so the heartbeat renews
/// the lease while it runs — commits once, first time, and the lock is free afterwards.
pub async fn a_long_final_migration_commits_once_while_the_lease_is_renewed(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("long-final");
    let lease = Duration::from_millis(900);
    let long = "-- @up\nCREATE backfill:1 SET note = 'slow';\nSLEEP 2s;\nCREATE backfill:2 SET note = 'done';\n-- @down\nDELETE backfill;\n";
    let mut files = base();
    files.push(("0004_backfill.surql", long));
    let request = lock(Duration::from_secs(10)).with_lease(lease);
    let result = runner
        .apply_locked(&target, &MigrationPlan::up(migrations(&files)), &request)
        .await
        .expect("a long migration commits while its lease is renewed");
    assert_eq!(versions(&result.applied), ["0001", "0002", "0003", "0004"]);
    assert_eq!(runner.health(&target).await.expect("healthy").lock, None);
    // A second target, already migrated except for the long one: the apply is its last.
    let second = h.target("long-final-again");
    apply(&runner, &second, &MigrationPlan::up(migrations(&base())))
        .await
        .expect("first three");
    let result = runner
        .apply_locked(&second, &MigrationPlan::up(migrations(&files)), &request)
        .await
        .expect("the long one alone");
    assert_eq!(versions(&result.applied), ["0004"]);
    assert_eq!(runner.health(&second).await.expect("healthy").lock, None);
}

/// When the lease is broken while a migration runs, that migration may still commit (it was
/// fenced when it started), but nothing after it runs, and the error says the lock was lost.
pub async fn a_lease_lost_during_a_migration_stops_the_next_one(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("lost-midway");
    let slow = "-- @up\nSLEEP 1500ms;\nCREATE slow:1;\n-- @down\nDELETE slow;\n";
    let after = "-- @up\nCREATE after:1;\n-- @down\nDELETE after;\n";
    let set = migrations(&[("0001_slow.surql", slow), ("0002_after.surql", after)]);
    let lease = Duration::from_millis(600);
    let guard = runner
        .acquire_lock(&target, &lock(Duration::ZERO).with_lease(lease))
        .await
        .expect("acquire");
    let breaker = h.runner().await;
    let breaking = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        breaker.break_lock(&target).await.expect("break");
    };
    let plan = MigrationPlan::up(set);
    let (executed, ()) = tokio::join!(
        runner.execute_migration(&target, &plan, guard.as_ref()),
        breaking
    );
    let err = executed.expect_err("the lease was broken");
    assert_eq!(err.class(), ErrorClass::LockLost, "{err:?}");
    let applied = history_versions(&runner, &target).await;
    assert!(
        !applied.contains(&"0002".to_owned()),
        "nothing runs after the lease is lost: {applied:?}"
    );
    assert!(matches!(
        guard.release().await,
        Err(RunnerError::LockLost { .. })
    ));
}

/// A holder whose lock is broken (or taken over) while one of its migrations runs commits
/// nothing more — not even that migration, which started under a lease that was still its
/// own: the change to the lock makes it roll back. Applied again under a new lock, it runs
/// once.
pub async fn a_takeover_during_a_migration_rolls_it_back(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("takeover-midway");
    let slow = "-- @up\nCREATE effect:first SET n = 1;\nSLEEP 1500ms;\nCREATE effect:second SET n = 2;\n-- @down\nDELETE effect;\n";
    let plan = MigrationPlan::up(migrations(&[("0001_slow.surql", slow)]));
    let zombie = runner
        .acquire_lock(
            &target,
            &LockRequest {
                owner: owner("zombie"),
                ..lock(Duration::ZERO)
            },
        )
        .await
        .expect("acquire");
    let other = h.runner().await;
    let breaking = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The holder is presumed dead: its lock is broken.
        other.break_lock(&target).await.expect("break");
    };
    let (zombie_result, ()) = tokio::join!(
        runner.execute_migration(&target, &plan, zombie.as_ref()),
        breaking
    );
    let err = zombie_result.expect_err("the running migration rolls back");
    assert_eq!(err.class(), ErrorClass::LockLost, "{err:?}");
    assert!(err.applied_before_failure().is_empty(), "{err:?}");
    assert!(
        history_versions(&runner, &target).await.is_empty(),
        "the migration committed under a broken lock"
    );
    let _ = zombie.release().await;
    let after = h.snapshot(&target).await;
    assert!(!after.contains("effect"), "half of it is left: {after}");
    let taken = apply(&h.runner().await, &target, &plan)
        .await
        .expect("applied under a new lock");
    assert_eq!(versions(&taken.applied), ["0001"]);
    assert_eq!(history_versions(&runner, &target).await, ["0001"]);
}

/// A revert names versions newest first; asked to revert one while a newer stays applied,
/// the runner refuses before anything runs.
pub async fn a_revert_never_leaves_a_newer_version_applied(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("revert-order");
    let set = migrations(&base());
    apply(&runner, &target, &MigrationPlan::up(Arc::clone(&set)))
        .await
        .expect("deploy");
    let before = h.snapshot(&target).await;
    let v = |s: &str| Version::parse(s).expect("version");
    let err = apply(
        &runner,
        &target,
        &MigrationPlan::down(Arc::clone(&set), vec![v("0002"), v("0003")]),
    )
    .await
    .expect_err("0003 is newer than 0002");
    assert!(
        matches!(err, RunnerError::RevertOrder { ref version, ref newer, .. } if version.as_str() == "0002" && newer.as_str() == "0003"),
        "{err:?}"
    );
    assert_eq!(h.snapshot(&target).await, before, "nothing was reverted");
    let newest = apply(
        &runner,
        &target,
        &MigrationPlan::revert(Arc::clone(&set), Revert::Newest(2)),
    )
    .await
    .expect("the newest two");
    assert_eq!(versions(&newest.applied), ["0003", "0002"]);
    let err = apply(
        &runner,
        &target,
        &MigrationPlan::revert(set, Revert::NewerThan(v("0003"))),
    )
    .await
    .expect_err("0003 is no longer applied");
    assert!(matches!(err, RunnerError::NotApplied { .. }), "{err:?}");
}

/// [`Revert::AppliedBy`] reverts the versions whose history rows carry a deployment's id —
/// and, when another deployment applied something newer since, refuses rather than leave it
/// on top of a hole.
pub async fn a_deployment_reverts_exactly_what_it_applied(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("revert-applied-by");
    let set = migrations(&base());
    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&base()[..1])),
    )
    .await
    .expect("0001 by someone else");
    let ours = MigrationPlan::up(Arc::clone(&set)).with_deployment_id("deploy-ours");
    apply(&runner, &target, &ours)
        .await
        .expect("0002, 0003 by us");
    let result = apply(
        &runner,
        &target,
        &MigrationPlan::revert(Arc::clone(&set), Revert::AppliedBy("deploy-ours".into())),
    )
    .await
    .expect("revert ours");
    assert_eq!(versions(&result.applied), ["0003", "0002"]);
    assert_eq!(history_versions(&runner, &target).await, ["0001"]);

    apply(
        &runner,
        &target,
        &MigrationPlan::up(migrations(&base()[..2])).with_deployment_id("deploy-ours"),
    )
    .await
    .expect("0002 by us again");
    apply(
        &runner,
        &target,
        &MigrationPlan::up(Arc::clone(&set)).with_deployment_id("deploy-later"),
    )
    .await
    .expect("0003 by a later deployment");
    let err = apply(
        &runner,
        &target,
        &MigrationPlan::revert(set, Revert::AppliedBy("deploy-ours".into())),
    )
    .await
    .expect_err("0003 stays on top");
    assert!(matches!(err, RunnerError::RevertOrder { .. }), "{err:?}");
    assert_eq!(
        history_versions(&runner, &target).await,
        ["0001", "0002", "0003"]
    );
}

/// One process holds at most one lease per database: a second `acquire_lock` from the same
/// runner waits for the first to be released, then gets the lock.
pub async fn one_process_holds_one_lease_per_database(h: &impl Harness) {
    let runner = h.runner().await;
    let target = h.target("one-lease");
    let first = runner
        .acquire_lock(&target, &lock(Duration::ZERO))
        .await
        .expect("first");
    let err = runner
        .acquire_lock(&target, &lock(Duration::from_millis(200)))
        .await
        .expect_err("this process holds it already");
    assert!(matches!(err, RunnerError::LockHeld { .. }), "{err:?}");
    let patient = lock(Duration::from_secs(10));
    let waiting = runner.acquire_lock(&target, &patient);
    let releasing = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.release().await.expect("release");
    };
    let (second, ()) = tokio::join!(waiting, releasing);
    let second = second.expect("taken once the first is released");
    assert!(second.took_over().is_none());
    second.release().await.expect("release");
}

/// The in-memory runner's harness, also a model for backends' own.
#[derive(Debug, Default)]
pub struct MemoryHarness {
    runner: crate::MemoryRunner,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn runner(&self) -> DynRunner {
        Arc::new(self.runner.clone())
    }

    fn target(&self, name: &str) -> Target {
        Target::new(
            name,
            flotilla_core::Connection::new("mem://", "conformance", name),
        )
    }

    async fn snapshot(&self, target: &Target) -> String {
        format!("{:?}", self.runner.objects(target))
    }
}
