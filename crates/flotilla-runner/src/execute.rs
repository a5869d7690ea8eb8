//! The part of executing a plan every backend shares: deciding the steps from history and
//! running them one atomic step at a time. A backend supplies only the atomic step.

use std::future::Future;
use std::time::Instant;

use flotilla_core::{AppliedMigration, DriftError, Migration, Version, current_version, pending};

use crate::error::{Result, RunnerError};
use crate::tenant::{Direction, MigrationPlan, MigrationResult, TenantContext};

/// The migrations `plan` would apply (up) or revert (down) given `history`, in order.
///
/// Fails before anything runs on drift, and for a down plan on a version without a down
/// section or whose file changed since it was applied.
pub fn steps<'p>(
    tenant: &TenantContext,
    plan: &'p MigrationPlan,
    history: &[AppliedMigration],
) -> Result<Vec<&'p Migration>> {
    let drift = |source| RunnerError::Drift {
        environment: tenant.environment.clone(),
        source,
    };
    match plan.direction {
        Direction::Up => {
            let mut todo = pending(&plan.migrations, history, plan.policy).map_err(drift)?;
            if let Some(target) = &plan.target {
                todo.retain(|m| m.version <= *target);
            }
            Ok(todo)
        }
        Direction::Down => {
            let mut todo = Vec::with_capacity(plan.revert.len());
            for version in &plan.revert {
                let Some(row) = history.iter().find(|row| row.version == *version) else {
                    continue; // not applied: nothing to revert
                };
                let Some(migration) = plan.migrations.get(version) else {
                    return Err(drift(DriftError::MissingFile {
                        version: version.clone(),
                        description: row.description.clone(),
                    }));
                };
                if row.checksum != migration.checksum {
                    return Err(drift(DriftError::ChecksumMismatch {
                        version: version.clone(),
                        file: migration.path.clone(),
                        recorded: row.checksum.clone(),
                        actual: migration.checksum.clone(),
                    }));
                }
                if migration.down.is_none() {
                    return Err(RunnerError::NoDownSection {
                        environment: tenant.environment.clone(),
                        version: version.clone(),
                        file: migration.path.clone(),
                    });
                }
                todo.push(migration);
            }
            Ok(todo)
        }
    }
}

/// Runs `step` for each of `steps(tenant, plan, history)`, stopping at the first failure.
/// A failure after some steps committed is wrapped as [`RunnerError::Interrupted`].
pub async fn run_steps<'p, F, Fut>(
    tenant: &TenantContext,
    plan: &'p MigrationPlan,
    history: &[AppliedMigration],
    mut step: F,
) -> Result<MigrationResult>
where
    F: FnMut(&'p Migration) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let started = Instant::now();
    let todo = steps(tenant, plan, history)?;
    let mut done: Vec<Version> = Vec::with_capacity(todo.len());
    for migration in todo {
        if let Some(observer) = &plan.observer {
            observer.started(tenant, plan.direction, &migration.version);
        }
        if let Err(error) = step(migration).await {
            return Err(error.after(done));
        }
        if let Some(observer) = &plan.observer {
            observer.committed(tenant, plan.direction, &migration.version);
        }
        done.push(migration.version.clone());
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
