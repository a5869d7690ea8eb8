//! What `deploy` records to run a deployment again, and `deploy --resume`: the recorded
//! choices (flags given now win), every selected environment again — pre-flight reads which
//! are up to date from the targets themselves; the journal is a record, not the truth. The
//! claim in the control store refuses a resume while another process runs that part of it
//! (after waiting up to the lock timeout), or when the plan changed since.

use std::time::Duration;

use flotilla_coordinator::control::{Control, DeploymentDetail};
use flotilla_coordinator::{DeploymentPlan, Selection, Shard};
use serde::{Deserialize, Serialize};

use super::{EXIT_FAILED, Failure, usage};
use crate::cli::DeployArgs;

/// The deploy flags that shape a plan, as recorded with a deployment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Choices {
    pub(crate) environments: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) all: bool,
    pub(crate) strategy: Option<String>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) canary_percent: Option<f64>,
    pub(crate) max_concurrent: Option<usize>,
    pub(crate) fail_fast: bool,
    pub(crate) skip_health_check: bool,
    pub(crate) no_rollback: bool,
    pub(crate) no_rehearse: bool,
    pub(crate) lock_timeout: Option<Duration>,
    pub(crate) lease: Option<Duration>,
    pub(crate) isolate: bool,
}

impl Choices {
    /// What the command line says.
    pub(crate) fn of(args: &DeployArgs) -> Self {
        let select = &args.select;
        // `-e all` is the surql toolkit's `--all`; a fleet's name is a tag.
        let all = select.all || select.environments == ["all"];
        Self {
            environments: if all {
                Vec::new()
            } else {
                select.environments.clone()
            },
            tags: select.tag.iter().chain(&select.fleet).cloned().collect(),
            all,
            strategy: args.strategy.clone(),
            batch_size: args.batch_size,
            canary_percent: args.canary_percent,
            max_concurrent: args.max_concurrent,
            fail_fast: args.fail_fast,
            skip_health_check: args.skip_health_check,
            no_rollback: args.no_rollback,
            no_rehearse: args.no_rehearse,
            lock_timeout: args.lock_timeout,
            lease: args.lease,
            isolate: args.isolate,
        }
    }

    /// These choices over `recorded`: the recorded selection, and each flag given now in
    /// place of the recorded one.
    pub(crate) fn over(self, recorded: &Choices) -> Self {
        Self {
            environments: recorded.environments.clone(),
            tags: recorded.tags.clone(),
            all: recorded.all,
            strategy: self.strategy.or_else(|| recorded.strategy.clone()),
            batch_size: self.batch_size.or(recorded.batch_size),
            canary_percent: self.canary_percent.or(recorded.canary_percent),
            max_concurrent: self.max_concurrent.or(recorded.max_concurrent),
            fail_fast: self.fail_fast || recorded.fail_fast,
            skip_health_check: self.skip_health_check || recorded.skip_health_check,
            no_rollback: self.no_rollback || recorded.no_rollback,
            no_rehearse: self.no_rehearse || recorded.no_rehearse,
            lock_timeout: self.lock_timeout.or(recorded.lock_timeout),
            lease: self.lease.or(recorded.lease),
            isolate: self.isolate || recorded.isolate,
        }
    }

    /// What `-e`, `--tag` and `--all` select; `None` when none was given.
    pub(crate) fn selection(&self) -> Option<Selection> {
        crate::project::selection_of(&self.environments, &self.tags, self.all)
    }
}

/// A deployment being resumed, as the control store knows it.
pub(crate) struct Resume {
    pub(crate) deployment_id: String,
    pub(crate) choices: Choices,
    detail: DeploymentDetail,
}

impl Resume {
    /// Deployment `id` from `control`'s store.
    pub(crate) async fn load(control: &Control, id: &str) -> Result<Self, Failure> {
        let store = &control.store;
        let detail = store
            .deployment(id)
            .await
            .map_err(|error| Failure {
                code: EXIT_FAILED,
                message: error.to_string(),
            })?
            .ok_or_else(|| {
                usage(format!(
                    "no deployment `{id}` in the control store {} (`flotilla deployments` lists them)",
                    store.describe()
                ))
            })?;
        let choices: Choices = serde_json::from_value(detail.plan["record"].clone()).map_err(|_| {
            usage(format!(
                "deployment `{id}` was not started by the flotilla command line: resume it the way it was started"
            ))
        })?;
        Ok(Self {
            deployment_id: id.to_owned(),
            choices,
            detail,
        })
    }

    /// Refuses to resume another plan than the deployment started with, naming the
    /// difference (the claim in the store checks the digest again, atomically).
    pub(crate) fn check(&self, plan: &DeploymentPlan) -> Result<(), Failure> {
        match flotilla_coordinator::control::plan_difference(&self.detail.plan, plan) {
            None => Ok(()),
            Some(difference) => Err(usage(format!(
                "deployment `{}` was started with another plan: {difference}; resuming would deploy another plan, so start a new deployment",
                self.deployment_id
            ))),
        }
    }
}

/// `--shard i/N`, or from Kubernetes' Indexed Job variables with `--shard-from-env`.
pub(crate) fn shard(args: &DeployArgs) -> Result<Option<Shard>, Failure> {
    if args.shard_from_env {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                usage(format!(
                    "--shard-from-env needs {name} (Kubernetes sets JOB_COMPLETION_INDEX in an Indexed Job; set JOB_COMPLETIONS to its completions)"
                ))
            })
        };
        let text = format!(
            "{}/{}",
            var("JOB_COMPLETION_INDEX")?,
            var("JOB_COMPLETIONS")?
        );
        return text.parse().map(Some).map_err(usage);
    }
    args.shard
        .as_deref()
        .map(|text| text.parse().map_err(usage))
        .transpose()
}

/// A line saying there is nothing to deploy, when the plan is empty because of a resume or
/// a shard (an empty selection is refused when the plan is built).
pub(crate) fn nothing_to_do(
    plan: &DeploymentPlan,
    resume: Option<&Resume>,
    shard: Option<Shard>,
) -> Option<String> {
    if !plan.environments.is_empty() {
        return None;
    }
    Some(match (resume, shard) {
        (Some(resume), _) => format!(
            "deployment {}: no environment{} to resume",
            resume.deployment_id,
            shard.map(|s| format!(" in shard {s}")).unwrap_or_default()
        ),
        (None, Some(shard)) => format!(
            "shard {shard} of deployment {} has no environments (of {} selected)",
            plan.deployment_id,
            plan.selected.len()
        ),
        (None, None) => "no environment selected".to_owned(),
    })
}
