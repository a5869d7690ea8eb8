//! What `deploy` records to run a deployment again, and `deploy --resume`: the recorded
//! choices (flags given now win), every environment that has not succeeded, refused while
//! another process still runs that part of it or when the migrations changed since.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_coordinator::control::{Control, DeploymentDetail};
use flotilla_coordinator::{DeploymentPlan, Selection, Shard};
use flotilla_core::DeploymentStatus;
use serde::{Deserialize, Serialize};

use super::{EXIT_FAILED, EXIT_REFUSED, Failure, usage};
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
    /// Environments that succeeded: not deployed again.
    pub(crate) succeeded: BTreeSet<String>,
    detail: DeploymentDetail,
}

impl Resume {
    /// Deployment `id` from `control`'s store, refused while a run of it that covers `shard`
    /// is alive.
    pub(crate) async fn load(
        control: &Control,
        id: &str,
        shard: Option<Shard>,
    ) -> Result<Self, Failure> {
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
        let ours = shard.map(|s| s.to_string());
        if let Some(run) = detail
            .runs
            .iter()
            .find(|run| run.alive && (ours.is_none() || run.shard.is_none() || run.shard == ours))
        {
            return Err(Failure {
                code: EXIT_REFUSED,
                message: format!(
                    "deployment `{id}` is still running: run {} by {}{} is alive; wait for it to end (a killed run counts as interrupted once its lease runs out)",
                    run.run_id,
                    run.actor,
                    run.shard
                        .as_ref()
                        .map(|s| format!(", shard {s}"))
                        .unwrap_or_default()
                ),
            });
        }
        let succeeded = detail
            .targets
            .iter()
            .filter(|t| t.status == DeploymentStatus::Success)
            .map(|t| t.environment.clone())
            .collect();
        Ok(Self {
            deployment_id: id.to_owned(),
            choices,
            succeeded,
            detail,
        })
    }

    /// Refuses to resume with migrations other than the deployment started with.
    pub(crate) fn check(&self, plan: &DeploymentPlan) -> Result<(), Failure> {
        let recorded = self.detail.plan["latest_version"]
            .as_str()
            .map(str::to_owned);
        let now = plan.migrations.latest().map(ToString::to_string);
        let recorded_count = self.detail.plan["migrations"].as_u64();
        if recorded != now || recorded_count != Some(plan.migrations.len() as u64) {
            return Err(usage(format!(
                "the migrations changed since deployment `{}` started (newest {} of {}, now {} of {}): resuming would deploy another plan; start a new deployment",
                self.deployment_id,
                recorded.as_deref().unwrap_or("none"),
                recorded_count.unwrap_or(0),
                now.as_deref().unwrap_or("none"),
                plan.migrations.len()
            )));
        }
        Ok(())
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
            "deployment {}: every environment{} has succeeded; nothing to resume",
            resume.deployment_id,
            shard.map(|s| format!(" of shard {s}")).unwrap_or_default()
        ),
        (None, Some(shard)) => format!(
            "shard {shard} of deployment {} has no environments (of {} selected)",
            plan.deployment_id,
            plan.selected.len()
        ),
        (None, None) => "no environment selected".to_owned(),
    })
}
