//! Checks of applying: idempotence, atomicity, drift, ordering, racing appliers, health,
//! validation.

use std::time::Duration;

use flotilla_core::{DriftError, DriftPolicy, Version};

use super::*;
use crate::error::{ErrorClass, RunnerError};
use crate::lock::LockRequest;
use crate::target::MigrationPlan;

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
