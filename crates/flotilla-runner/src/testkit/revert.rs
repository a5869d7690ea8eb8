//! Checks of reverting: atomic and exact, stopping at a failure, newest first, exactly what a
//! deployment applied.

use std::sync::Arc;

use flotilla_core::Version;

use super::*;
use crate::error::{ErrorClass, RunnerError};
use crate::target::{MigrationPlan, Revert};

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
