//! The gates a deployment passes before anything runs. Each is a small function of the plan
//! and what pre-flight found, returning its culprits (plan index → reason); the first gate
//! with a culprit refuses the whole deployment.

use std::collections::BTreeMap;

use flotilla_core::Migration;
use flotilla_runner::ErrorClass;

use crate::approval::Approver;
use crate::plan::DeploymentPlan;
use crate::preflight::Facts;
use crate::report::Gate;

/// Culprits of a gate by plan index, each with its reason; empty when the gate passes.
pub(crate) type Culprits = BTreeMap<usize, String>;

/// Environments that require approval and did not get it.
pub(crate) async fn approval(plan: &DeploymentPlan, approver: &dyn Approver) -> Culprits {
    let needing: Vec<String> = plan
        .environments
        .iter()
        .filter(|e| e.require_approval)
        .map(|e| e.name.clone())
        .collect();
    if needing.is_empty() {
        return Culprits::new();
    }
    let approved = approver.approve(&needing).await;
    plan.environments
        .iter()
        .enumerate()
        .filter(|(_, e)| e.require_approval && !approved.contains(&e.name))
        .map(|(index, e)| {
            (
                index,
                format!("{} requires approval and was not approved", e.name),
            )
        })
        .collect()
}

/// A gate that reads what pre-flight found.
type Check = fn(&DeploymentPlan, &[Facts]) -> Culprits;

/// The gates that read what pre-flight found, in the order they are asked; the first that
/// has culprits.
pub(crate) fn after_preflight(plan: &DeploymentPlan, facts: &[Facts]) -> Option<(Gate, Culprits)> {
    let gates: [(Gate, Check); 4] = [
        (Gate::Health, health),
        (Gate::Drift, drift),
        (Gate::Destructive, destructive),
        (Gate::Rollback, rollback_readiness),
    ];
    gates.into_iter().find_map(|(gate, check)| {
        let culprits = check(plan, facts);
        (!culprits.is_empty()).then_some((gate, culprits))
    })
}

/// Targets whose health probe failed.
fn health(_: &DeploymentPlan, facts: &[Facts]) -> Culprits {
    facts
        .iter()
        .enumerate()
        .filter_map(|(index, f)| f.unhealthy.clone().map(|reason| (index, reason)))
        .collect()
}

/// Targets whose history disagrees with the migrations directory.
fn drift(_: &DeploymentPlan, facts: &[Facts]) -> Culprits {
    facts
        .iter()
        .enumerate()
        .filter_map(|(index, f)| match &f.read {
            Err(error)
                if f.unhealthy.is_none()
                    && matches!(
                        error.class(),
                        ErrorClass::ChecksumMismatch | ErrorClass::Drift
                    ) =>
            {
                Some((index, error.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// Destructive statements pending towards environments that forbid them (every migration,
/// when a target's history could not be read) — in up sections, and with auto-rollback on in
/// down sections too, where they destroy more than their up made.
fn destructive(plan: &DeploymentPlan, facts: &[Facts]) -> Culprits {
    let mut culprits = Culprits::new();
    for (index, environment) in plan.environments.iter().enumerate() {
        if environment.allow_destructive {
            continue;
        }
        let findings: Vec<String> = candidates(plan, &facts[index])
            .into_iter()
            .flat_map(|migration| {
                let mut findings = flotilla_core::lint::destructive(migration);
                if plan.auto_rollback {
                    findings.extend(flotilla_core::lint::destructive_down(migration));
                }
                findings
            })
            .map(|finding| {
                format!(
                    "{} does not allow destructive changes: {finding}",
                    environment.name
                )
            })
            .collect();
        if !findings.is_empty() {
            culprits.insert(index, findings.join("; "));
        }
    }
    culprits
}

fn candidates<'p>(plan: &'p DeploymentPlan, facts: &Facts) -> Vec<&'p Migration> {
    match facts.pending() {
        Some(pending) => pending
            .iter()
            .filter_map(|v| plan.migrations.get(v))
            .collect(),
        None => plan.migrations.as_slice().iter().collect(),
    }
}

/// With auto-rollback on, every pending migration needs a way back.
fn rollback_readiness(plan: &DeploymentPlan, facts: &[Facts]) -> Culprits {
    if !plan.auto_rollback || plan.dry_run {
        return Culprits::new();
    }
    let mut culprits = Culprits::new();
    for (index, found) in facts.iter().enumerate() {
        let missing: Vec<String> = found
            .pending()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| plan.migrations.get(v))
            .filter(|m| m.down.is_none())
            .map(|m| format!("{} ({})", m.version, m.path.display()))
            .collect();
        if !missing.is_empty() {
            culprits.insert(
                index,
                format!(
                    "{}: pending migration(s) without a down section: {} (add a down section, or deploy with auto-rollback off)",
                    plan.environments[index].name,
                    missing.join(", ")
                ),
            );
        }
    }
    culprits
}
