//! What a deployment tells the control store when it starts: the run it begins, and whether
//! the fleet is quiesced.

use super::{Control, QuiesceUnreadable, RunStart};
use crate::plan::DeploymentPlan;

/// The run `plan` starts: who, which shard, what to record to run it again, its targets.
pub(crate) fn run_start(plan: &DeploymentPlan, control: &Control) -> RunStart {
    let latest = plan.migrations.latest().map(ToString::to_string);
    RunStart {
        deployment_id: plan.deployment_id.clone(),
        run_id: run_id(&plan.deployment_id),
        actor: control.actor.clone(),
        shard: plan.shard.map(|shard| shard.to_string()),
        plan: serde_json::json!({
            "strategy": plan.strategy.kind,
            "max_concurrent": plan.strategy.max_concurrent,
            "auto_rollback": plan.auto_rollback,
            "selected": plan.selected,
            "shards": plan.shard.map(|shard| shard.count),
            "migrations": plan.migrations.len(),
            "latest_version": latest,
            "record": plan.record,
        }),
        targets: plan.environment_names(),
        lease: plan.lease,
    }
}

/// A run id unique across processes and machines: the deployment, the time, the process and
/// a counter.
fn run_id(deployment_id: &str) -> String {
    format!("{deployment_id}.{}", crate::plan::unique_suffix())
}

/// Why the deployment may not start because the fleet is quiesced — or the flag cannot be
/// read and the policy fails closed; `None` to go ahead.
pub(crate) async fn quiesced(control: &Control) -> Option<String> {
    match control.store.quiesce().await {
        Ok(None) => None,
        Ok(Some(quiesce)) => Some(format!(
            "the fleet is {quiesce}; `flotilla quiesce clear` lifts it"
        )),
        Err(error) => match control.quiesce_unreadable {
            QuiesceUnreadable::FailClosed => Some(format!(
                "the quiesce flag cannot be read, and flotilla fails closed: {error}"
            )),
            QuiesceUnreadable::FailOpen => {
                tracing::warn!(%error, "the quiesce flag cannot be read: deploying anyway (fail open)");
                None
            }
        },
    }
}
