//! Rehearsal: the migrations proven on a scratch database before a target runs them — every
//! migration on an empty one ([`DeploymentCoordinator::rehearse`]), an environment's pending
//! migrations on a copy of its schema ([`DeploymentCoordinator::rehearse_pending`]), and the
//! gate a deployment passes after pre-flight.

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_core::config::EnvironmentConfig;
use flotilla_core::{MigrationSet, Version};
use flotilla_runner::execute::steps;
use flotilla_runner::{MigrationPlan, Rehearsal, RehearsalPlan, RunnerError};
use flotilla_strategies::Destination;
use futures::StreamExt;

use crate::coordinator::DeploymentCoordinator;
use crate::gates::Culprits;
use crate::inspect::target_of;
use crate::preflight::Facts;

/// Rehearsals run at once (the gate runs one per distinct list of pending migrations).
const REHEARSAL_CONCURRENCY: usize = 4;

/// Findings a refusal quotes per rehearsal; the rest are counted.
const QUOTED_FINDINGS: usize = 5;

impl DeploymentCoordinator {
    /// Every migration of `migrations` rehearsed on an empty scratch database of the kind
    /// `like` uses (nothing of `like` itself is read). `Unsupported` when its backend cannot
    /// rehearse.
    pub async fn rehearse(
        &self,
        migrations: Arc<MigrationSet>,
        like: &EnvironmentConfig,
    ) -> Result<Rehearsal, RunnerError> {
        let target = target_of(like);
        self.runner_for(&target)?
            .rehearse(&RehearsalPlan::all(migrations))
            .await
    }

    /// Each environment's pending migrations rehearsed on a scratch database holding a copy
    /// of its schema (definitions, not data): what conflicts with what is really there. Reads
    /// each one's history and definitions, several at once; writes nothing to any. Results in
    /// the given order.
    pub async fn rehearse_pending(
        &self,
        environments: &[EnvironmentConfig],
        migrations: Arc<MigrationSet>,
    ) -> Vec<Result<Rehearsal, RunnerError>> {
        let up = MigrationPlan::up(Arc::clone(&migrations));
        futures::stream::iter(environments)
            .map(|environment| {
                let (up, migrations) = (&up, Arc::clone(&migrations));
                async move {
                    let target = crate::inspect::resolved_target(environment).await?;
                    let runner = self.runner_for(&target)?;
                    let history = runner.history(&target).await?;
                    let pending = steps(&target, up, &history)?
                        .into_iter()
                        .map(|m| m.version.clone())
                        .collect();
                    runner
                        .rehearse(&RehearsalPlan {
                            migrations,
                            only: Some(pending),
                            base: Some(target),
                        })
                        .await
                }
            })
            .buffered(REHEARSAL_CONCURRENCY)
            .collect()
            .await
    }
}

/// The rehearsal gate: each distinct list of pending migrations is rehearsed once, on a copy
/// of the schema of the first target it is pending on. Culprits: every target whose list's
/// rehearsal found a problem or could not run. A backend that cannot rehearse passes.
pub(crate) async fn gate(
    destinations: &[Destination],
    facts: &[Facts],
    migrations: &Arc<MigrationSet>,
) -> Culprits {
    let mut lists: Vec<(&[Version], Vec<usize>)> = Vec::new();
    let mut seen: HashMap<&[Version], usize> = HashMap::new();
    for (index, pending) in facts.iter().enumerate().filter_map(|(i, f)| {
        f.pending()
            .filter(|pending| !pending.is_empty())
            .map(|p| (i, p))
    }) {
        match seen.get(pending) {
            Some(&at) => lists[at].1.push(index),
            None => {
                seen.insert(pending, lists.len());
                lists.push((pending, vec![index]));
            }
        }
    }
    let verdicts: Vec<Option<String>> = futures::stream::iter(&lists)
        .map(|(pending, targets)| async move {
            let base = &destinations[targets[0]];
            let plan = RehearsalPlan {
                migrations: Arc::clone(migrations),
                only: Some(pending.to_vec()),
                base: Some(base.target.clone()),
            };
            let on = &base.target.environment;
            match base.runner.rehearse(&plan).await {
                Ok(rehearsal) if rehearsal.passed() => {
                    tracing::info!(on = %on, migrations = rehearsal.rehearsed, ms = rehearsal.duration.as_millis() as u64, "rehearsed");
                    None
                }
                Ok(rehearsal) => Some(refusal(&rehearsal, on)),
                Err(RunnerError::Unsupported { what }) => {
                    tracing::info!(on = %on, "not rehearsed: the backend does not support {what}");
                    None
                }
                Err(error) => Some(format!(
                    "could not rehearse the pending migrations on a copy of {on}'s schema: {error} (rehearsal can be turned off for a deployment)"
                )),
            }
        })
        .buffered(REHEARSAL_CONCURRENCY)
        .collect()
        .await;
    let mut culprits = Culprits::new();
    for ((_, targets), verdict) in lists.iter().zip(verdicts) {
        if let Some(reason) = verdict {
            for index in targets {
                culprits.insert(*index, reason.clone());
            }
        }
    }
    culprits
}

/// A refusal's reason: what the rehearsal found, file and line first.
fn refusal(rehearsal: &Rehearsal, on: &str) -> String {
    let mut found: Vec<String> = rehearsal
        .findings
        .iter()
        .take(QUOTED_FINDINGS)
        .map(ToString::to_string)
        .collect();
    if rehearsal.findings.len() > QUOTED_FINDINGS {
        found.push(format!(
            "and {} more",
            rehearsal.findings.len() - QUOTED_FINDINGS
        ));
    }
    format!(
        "rehearsing {} pending migration(s) on a copy of {on}'s schema found: {}",
        rehearsal.rehearsed,
        found.join("; ")
    )
}
