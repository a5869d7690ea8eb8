//! The part of executing a plan every backend shares: deciding the steps from history and
//! running them one atomic step at a time. A backend supplies only the atomic step.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Instant;

use flotilla_core::{AppliedMigration, DriftError, Migration, Version, current_version, pending};

use crate::error::{Result, RunnerError};
use crate::target::{Direction, MigrationPlan, MigrationResult, Revert, Target};

/// The statements `migration` runs in `direction`, and the file they come from.
pub fn statements_of(
    migration: &Migration,
    direction: Direction,
) -> (&[flotilla_core::Statement], &std::path::Path) {
    match direction {
        Direction::Up => (&migration.up, &migration.path),
        Direction::Down => (
            migration.down.as_deref().unwrap_or(&migration.up),
            migration.down_file(),
        ),
    }
}

/// The migrations `plan` would apply (up) or revert (down) given `history`, in order.
///
/// Fails before anything runs on drift, and for a down plan on a version without a down
/// section or whose file changed since it was applied.
pub fn steps<'p>(
    target: &Target,
    plan: &'p MigrationPlan,
    history: &[AppliedMigration],
) -> Result<Vec<&'p Migration>> {
    let drift = |source| RunnerError::Drift {
        environment: target.environment.clone(),
        source,
    };
    match plan.direction {
        Direction::Up => {
            let mut todo = pending(&plan.migrations, history, plan.policy).map_err(drift)?;
            if let Some(last) = &plan.up_to {
                todo.retain(|m| m.version <= *last);
            }
            Ok(todo)
        }
        Direction::Down => {
            let chosen = reverts(target, plan, history)?;
            // What stays applied as the revert goes: nothing newer may be left behind.
            let mut applied: BTreeSet<&Version> = history.iter().map(|row| &row.version).collect();
            let mut todo = Vec::with_capacity(chosen.len());
            for version in chosen {
                let Some(row) = history.iter().find(|row| row.version == version) else {
                    continue; // not applied: nothing to revert
                };
                if let Some(newer) = applied.iter().rev().find(|v| ***v > version) {
                    return Err(RunnerError::RevertOrder {
                        environment: target.environment.clone(),
                        version,
                        newer: (**newer).clone(),
                    });
                }
                let Some(migration) = plan.migrations.get(&version) else {
                    return Err(drift(DriftError::MissingFile {
                        version,
                        description: row.description.clone(),
                    }));
                };
                if row.checksum != migration.checksum {
                    return Err(drift(DriftError::ChecksumMismatch {
                        version,
                        file: migration.path.clone(),
                        recorded: row.checksum.clone(),
                        actual: migration.checksum.clone(),
                    }));
                }
                if migration.down.is_none() {
                    return Err(RunnerError::NoDownSection {
                        environment: target.environment.clone(),
                        version,
                        file: migration.path.clone(),
                    });
                }
                applied.remove(&row.version);
                todo.push(migration);
            }
            Ok(todo)
        }
    }
}

/// The versions a down plan names, in the order it reverts them, from `history`.
fn reverts(
    target: &Target,
    plan: &MigrationPlan,
    history: &[AppliedMigration],
) -> Result<Vec<Version>> {
    let mut newest_first: Vec<&AppliedMigration> = history.iter().collect();
    newest_first.sort_by(|a, b| b.version.cmp(&a.version));
    Ok(match &plan.revert {
        Revert::Versions(list) => list.clone(),
        Revert::Newest(n) => newest_first
            .iter()
            .take(*n)
            .map(|row| row.version.clone())
            .collect(),
        Revert::NewerThan(base) => {
            if !history.iter().any(|row| row.version == *base) {
                return Err(RunnerError::NotApplied {
                    environment: target.environment.clone(),
                    version: base.clone(),
                });
            }
            newest_first
                .iter()
                .filter(|row| row.version > *base)
                .map(|row| row.version.clone())
                .collect()
        }
        Revert::AppliedBy(deployment) => newest_first
            .iter()
            .filter(|row| row.deployment_id.as_deref() == Some(deployment.as_str()))
            .map(|row| row.version.clone())
            .collect(),
    })
}

/// How many of `sent` (consecutive migrations of `plan`, in order) history shows committed
/// by this plan's process: for an up plan, rows it wrote; for a down plan, rows that are gone.
/// Used when a reply is lost: each migration is atomic and fenced on its predecessor, so what
/// committed is a prefix.
pub fn committed_prefix(
    plan: &MigrationPlan,
    sent: &[&Migration],
    history: &[AppliedMigration],
) -> usize {
    sent.iter()
        .take_while(|migration| {
            let row = history.iter().find(|row| row.version == migration.version);
            match plan.direction {
                Direction::Up => row.is_some_and(|row| plan.wrote(row)),
                Direction::Down => row.is_none(),
            }
        })
        .count()
}

/// Runs `step` for each of `steps(tenant, plan, history)`, stopping at the first failure.
/// A failure after some steps committed is wrapped as [`RunnerError::Interrupted`].
pub async fn run_steps<'p, F, Fut>(
    target: &Target,
    plan: &'p MigrationPlan,
    history: &[AppliedMigration],
    mut step: F,
) -> Result<MigrationResult>
where
    F: FnMut(&'p Migration) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    run_in_requests(target, plan, history, 1, |batch, _last| {
        let applying = step(batch[0]);
        async move {
            match applying.await {
                Ok(()) => RequestOutcome::committed(1),
                Err(error) => RequestOutcome::failed(0, error),
            }
        }
    })
    .await
}

/// What became of a batch of consecutive migrations sent together: each one still commits
/// in its own transaction, in order, and none runs after one that did not commit.
#[derive(Debug)]
pub struct RequestOutcome {
    /// How many of the batch's migrations committed, from its start.
    pub committed: usize,
    /// Why the one after them did not; `None` when all committed.
    pub error: Option<RunnerError>,
}

impl RequestOutcome {
    /// The first `committed` migrations committed and nothing failed.
    pub fn committed(committed: usize) -> Self {
        Self {
            committed,
            error: None,
        }
    }

    /// The first `committed` migrations committed, then the next failed with `error`.
    pub fn failed(committed: usize, error: RunnerError) -> Self {
        Self {
            committed,
            error: Some(error),
        }
    }
}

/// Like [`run_steps`], but hands `apply` up to `max_batch` consecutive migrations at a time,
/// so a backend can send them in one request (each still its own transaction); `apply` is
/// also told whether the batch is the plan's last (where a backend may fold in the release of
/// a lock taken for this plan alone). Observers see `started` for every
/// migration of a batch as it is handed over, and `committed` for each one that committed.
pub async fn run_in_requests<'p, F, Fut>(
    target: &Target,
    plan: &'p MigrationPlan,
    history: &[AppliedMigration],
    max_batch: usize,
    mut apply: F,
) -> Result<MigrationResult>
where
    F: FnMut(Vec<&'p Migration>, bool) -> Fut,
    Fut: Future<Output = RequestOutcome>,
{
    let started = Instant::now();
    let todo = steps(target, plan, history)?;
    let mut done: Vec<Version> = Vec::with_capacity(todo.len());
    let batches = todo.len().div_ceil(max_batch.max(1));
    for (index, batch) in todo.chunks(max_batch.max(1)).enumerate() {
        if let Some(observer) = &plan.observer {
            for migration in batch {
                observer.started(target, plan.direction, &migration.version);
            }
        }
        let outcome = apply(batch.to_vec(), index + 1 == batches).await;
        for migration in batch.iter().take(outcome.committed) {
            if let Some(observer) = &plan.observer {
                observer.committed(target, plan.direction, &migration.version);
            }
            done.push(migration.version.clone());
        }
        match outcome.error {
            Some(error) => return Err(error.after(done)),
            None if outcome.committed < batch.len() => {
                return Err(RunnerError::Backend {
                    environment: target.environment.clone(),
                    source: format!(
                        "{} of {} migrations committed and no error was reported",
                        outcome.committed,
                        batch.len()
                    )
                    .into(),
                }
                .after(done));
            }
            None => {}
        }
    }
    let version_before = current_version(history).cloned();
    let version_after = match plan.direction {
        Direction::Up => done.iter().chain(version_before.as_ref()).max().cloned(),
        Direction::Down => history
            .iter()
            .map(|row| &row.version)
            .filter(|v| !done.contains(v))
            .max()
            .cloned(),
    };
    Ok(MigrationResult {
        direction: plan.direction,
        applied: done,
        version_before,
        version_after,
        duration: started.elapsed(),
        lock_takeover: None,
    })
}

/// After a request whose reply never came: reads history back (a few times, backing off, each
/// read bounded by the runner's own timeouts) and returns how many of `sent` committed (see
/// [`committed_prefix`]). When history cannot be read the outcome stays unknown:
/// [`RunnerError::OutcomeUnknown`], wrapping the last read's error.
pub async fn reconcile<R: crate::MigrationRunner + ?Sized>(
    runner: &R,
    target: &Target,
    plan: &MigrationPlan,
    sent: &[&Migration],
) -> Result<usize> {
    const READS: usize = 4;
    let mut backoff = crate::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(2),
    );
    let mut last = None;
    for read in 1..=READS {
        match runner.history(target).await {
            Ok(history) => return Ok(committed_prefix(plan, sent, &history)),
            Err(error) => {
                tracing::warn!(environment = %target.environment, %error, read, "reading history back after a lost reply failed");
                last = Some(error);
                if read < READS {
                    backoff.wait().await;
                }
            }
        }
    }
    Err(RunnerError::OutcomeUnknown {
        environment: target.environment.clone(),
        versions: sent.iter().map(|m| m.version.clone()).collect(),
        source: Box::new(last.unwrap_or_else(|| RunnerError::Backend {
            environment: target.environment.clone(),
            source: "history could not be read".into(),
        })),
    })
}
