//! Checks of the lock: live and expired leases, the heartbeat, fencing, releasing on every
//! path, broken and lost leases, one lease per database per process.

use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::error::{ErrorClass, RunnerError};
use crate::lock::{LockGuard, LockInfo, LockRequest};
use crate::target::MigrationPlan;

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
