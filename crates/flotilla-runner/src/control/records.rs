//! What the control store keeps: deployments, the runs (processes) taking part in them, each
//! target's latest result, the quiesce flag, and audit records.

use std::fmt;
use std::time::Duration;

use crate::ErrorClass;
use flotilla_core::{DeploymentStatus, Version};
use serde::{Deserialize, Serialize};

/// Who started a deployment or set the quiesce flag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user (`$USER`).
    pub user: String,
    /// The machine.
    pub host: String,
    /// The process.
    pub pid: u32,
    /// The commit of the project being deployed, when known (git, or a CI variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The CI pipeline or job, when run by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)?;
        if let Some(pipeline) = &self.pipeline {
            write!(f, " ({pipeline})")?;
        }
        Ok(())
    }
}

/// A process starting its part of a deployment.
#[derive(Clone, Debug)]
pub struct RunStart {
    /// The deployment (shared by shards and resumes).
    pub deployment_id: String,
    /// This process's run, unique.
    pub run_id: String,
    /// Who runs it.
    pub actor: Actor,
    /// Which shard (`i/N`), when sharded.
    pub shard: Option<String>,
    /// What the caller needs to run the plan again (the command line keeps its arguments).
    pub plan: serde_json::Value,
    /// The run's targets, in plan order.
    pub targets: Vec<String>,
    /// How long the run counts as alive without a renewal.
    pub lease: Duration,
    /// What this run may claim: a new deployment, a part of one that may exist (a shard), or
    /// a part of one that must (a resume).
    pub claim: Claim,
    /// A digest of the plan (selection, shards, strategy and flags, every migration's
    /// version and checksum): a run joining or resuming a deployment whose recorded digest
    /// differs is refused.
    pub fingerprint: String,
    /// Which process on `actor.host` runs it (boot and start time beside the pid), so a run
    /// whose process is gone from that host is known dead without waiting out its lease.
    pub process: Option<String>,
}

/// What a starting run claims in the control store — atomically: at most one live run per
/// deployment and shard (a run of the whole deployment covers every shard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// A deployment that must not exist yet.
    #[default]
    New,
    /// A shard of a deployment that may exist already (its other shards started it), with
    /// the same plan.
    Join,
    /// A deployment that must exist, with the same plan.
    Resume,
}

/// Why a run could not claim its part of a deployment; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A live run holds it (wait for it, or for its lease to run out).
    Held {
        /// The run holding it.
        run_id: String,
    },
    /// A new deployment's id is taken.
    Exists,
    /// A resumed deployment is not in the store.
    Missing,
    /// The deployment was started with another plan.
    PlanDiffers,
}

impl Refusal {
    /// The error refusing run `run` so.
    pub fn error(self, run: &RunStart) -> super::ControlError {
        let id = &run.deployment_id;
        let part = run
            .shard
            .as_ref()
            .map(|shard| format!("shard {shard} of deployment `{id}`"))
            .unwrap_or_else(|| format!("deployment `{id}`"));
        let reason = match &self {
            Refusal::Held { run_id } => format!("{part} is held by run {run_id}, which is alive"),
            Refusal::Exists => format!(
                "deployment `{id}` exists already: `--resume {id}` goes on with it; a new deployment needs a new id"
            ),
            Refusal::Missing => format!("there is no deployment `{id}` to resume"),
            Refusal::PlanDiffers => format!(
                "{part} was started with another plan (selection, shards, strategy, flags or migrations)"
            ),
        };
        super::ControlError::Refused {
            refusal: self,
            reason,
        }
    }
}

/// Whether two runs' parts of a deployment overlap: the same shard, or either of the whole.
pub fn overlaps(shard: Option<&str>, other: Option<&str>) -> bool {
    shard.is_none() || other.is_none() || shard == other
}

/// One process's part in a deployment, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run_id: String,
    /// Who ran it.
    pub actor: Actor,
    /// Its shard, when sharded.
    pub shard: Option<String>,
    /// How many targets it had.
    pub targets: usize,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended, if it did.
    pub ended_at: Option<String>,
    /// How it ended (a report outcome), if it did.
    pub outcome: Option<String>,
    /// Whether it is alive now: renewed within its lease, by the store's clock.
    pub alive: bool,
    /// Which process on `actor.host` ran it (see [`RunStart::process`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

impl RunRecord {
    /// Running, ended, or gone without ending (killed).
    pub fn state(&self) -> DeploymentState {
        match (&self.outcome, self.alive) {
            (Some(outcome), _) => DeploymentState::Ended(outcome.clone()),
            (None, true) => DeploymentState::Running,
            (None, false) => DeploymentState::Interrupted,
        }
    }
}

/// One target's latest result in a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The deployment.
    pub deployment_id: String,
    /// The environment.
    pub environment: String,
    /// The run that wrote it.
    pub run_id: String,
    /// Its status.
    pub status: DeploymentStatus,
    /// Versions applied here by the deployment.
    #[serde(default)]
    pub applied: Vec<Version>,
    /// Versions rolled back here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back: Vec<Version>,
    /// Newest applied version before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_before: Option<Version>,
    /// Newest applied version after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_after: Option<Version>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When work on it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Time spent on it.
    pub duration_ms: u64,
}

/// How a deployment stands, from its runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// A run is alive.
    Running,
    /// No run is alive and one ended without saying how (killed): resume it.
    Interrupted,
    /// Every run ended; the worst outcome among them.
    Ended(String),
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeploymentState::Running => f.write_str("running"),
            DeploymentState::Interrupted => f.write_str("interrupted"),
            DeploymentState::Ended(outcome) => f.write_str(outcome),
        }
    }
}

/// A deployment as stored: who, the plan, its runs and (for one deployment) its targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentDetail {
    /// The deployment.
    pub deployment_id: String,
    /// Who started it.
    pub actor: Actor,
    /// When (RFC 3339).
    pub started_at: String,
    /// What its first run recorded to run it again.
    pub plan: serde_json::Value,
    /// The digest of its plan (see [`RunStart::fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Every run, oldest first.
    pub runs: Vec<RunRecord>,
    /// Every target's latest record (filled by [`super::ControlStore::deployment`]; a listing
    /// leaves it empty and counts in `target_counts`).
    #[serde(default)]
    pub targets: Vec<TargetRecord>,
    /// Targets by status.
    #[serde(default)]
    pub target_counts: std::collections::BTreeMap<String, usize>,
}

impl DeploymentDetail {
    /// Running if a run is alive; else interrupted if a run ended without an outcome (it was
    /// killed) and no later run took its part over (a resume of the whole deployment or of
    /// its shard); else the worst outcome of the runs no later run took over.
    pub fn state(&self) -> DeploymentState {
        let states: Vec<DeploymentState> = self.runs.iter().map(RunRecord::state).collect();
        if states.contains(&DeploymentState::Running) {
            return DeploymentState::Running;
        }
        let taken_over = |index: usize| {
            let shard = &self.runs[index].shard;
            self.runs[index + 1..]
                .iter()
                .any(|later| later.shard.is_none() || later.shard == *shard)
        };
        let standing: Vec<&DeploymentState> = states
            .iter()
            .enumerate()
            .filter(|(index, _)| !taken_over(*index))
            .map(|(_, state)| state)
            .collect();
        if standing.contains(&&DeploymentState::Interrupted) {
            return DeploymentState::Interrupted;
        }
        standing
            .into_iter()
            .max_by_key(|state| match state {
                DeploymentState::Ended(outcome) => OUTCOMES_BEST_FIRST
                    .iter()
                    .position(|o| o == outcome)
                    .unwrap_or(OUTCOMES_BEST_FIRST.len()),
                _ => 0,
            })
            .cloned()
            .unwrap_or(DeploymentState::Interrupted)
    }

    /// A summary line's worth.
    pub fn summary(&self) -> DeploymentSummary {
        let mut counts = self.target_counts.clone();
        if counts.is_empty() {
            for target in &self.targets {
                *counts.entry(target.status.to_string()).or_default() += 1;
            }
        }
        DeploymentSummary {
            deployment_id: self.deployment_id.clone(),
            actor: self.actor.to_string(),
            started_at: self.started_at.clone(),
            state: self.state().to_string(),
            runs: self.runs.len(),
            targets: counts,
        }
    }
}

/// Run outcomes from best to worst: a deployment's state is the worst of its standing runs.
const OUTCOMES_BEST_FIRST: &[&str] = &[
    "succeeded",
    "dry_run",
    "refused",
    "paused",
    "interrupted",
    "rolled_back",
    "failed",
    "rollback_failed",
];

/// One line of `flotilla deployments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeploymentSummary {
    /// The deployment.
    pub deployment_id: String,
    /// Who started it.
    pub actor: String,
    /// When.
    pub started_at: String,
    /// Running, interrupted, or how it ended.
    pub state: String,
    /// Processes that took part (shards, resumes).
    pub runs: usize,
    /// Targets by status.
    pub targets: std::collections::BTreeMap<String, usize>,
}

/// The fleet's quiesce flag: no deployment starts, and running ones start no new target,
/// until it expires or is cleared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiesce {
    /// Why (an incident, a freeze).
    pub reason: String,
    /// Who set it.
    pub by: Actor,
    /// When (RFC 3339).
    pub set_at: String,
    /// When it expires by itself.
    pub expires_at: String,
}

impl Quiesce {
    /// Set by `by` at `now` for `reason`, expiring after `ttl`.
    pub fn new(reason: &str, by: &Actor, now: std::time::SystemTime, ttl: Duration) -> Self {
        Self {
            reason: reason.to_owned(),
            by: by.clone(),
            set_at: flotilla_core::rfc3339(now),
            expires_at: flotilla_core::rfc3339(now + ttl),
        }
    }
}

impl fmt::Display for Quiesce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quiesced by {} at {} until {}: {}",
            self.by, self.set_at, self.expires_at, self.reason
        )
    }
}

/// What an audit record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A process started its part of a deployment.
    DeploymentStarted,
    /// It ended (the outcome says how).
    DeploymentFinished,
    /// A target is about to be deployed.
    TargetStarted,
    /// A target finished (the outcome is its status).
    TargetFinished,
    /// What the deployment applied to a target was rolled back.
    TargetRolledBack,
    /// The quiesce flag was set.
    QuiesceSet,
    /// The quiesce flag was cleared.
    QuiesceCleared,
}

/// One audit record: who did what to which database when, and how it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What happened.
    pub event: AuditEvent,
    /// Who.
    pub actor: Actor,
    /// The deployment, if it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// The run (process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The environment, if it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Versions applied (a target) or pending (a start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<Version>,
    /// Newest applied version before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_before: Option<Version>,
    /// Newest applied version after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_after: Option<Version>,
    /// A target's status or a deployment's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// flotilla's error class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The class in the vocabulary audit trails share: config, connection, auth, lock,
    /// migration, quiesce, unknown (and drift, gate, cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_category: Option<String>,
    /// The error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl AuditRecord {
    /// A record of `event` by `actor`, stamped now, about nothing in particular yet.
    pub fn now(event: AuditEvent, actor: &Actor) -> Self {
        Self {
            at: flotilla_core::rfc3339(std::time::SystemTime::now()),
            event,
            actor: actor.clone(),
            deployment_id: None,
            run_id: None,
            environment: None,
            versions: Vec::new(),
            version_before: None,
            version_after: None,
            outcome: None,
            error_class: None,
            error_category: None,
            message: None,
            duration_ms: None,
        }
    }

    /// With an error of `class` and its message.
    pub fn with_error(mut self, class: ErrorClass, message: &str) -> Self {
        self.error_class = Some(class);
        self.error_category = Some(class.category().to_owned());
        self.message = Some(message.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(shard: Option<&str>, outcome: Option<&str>, alive: bool) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            actor: Actor::default(),
            shard: shard.map(str::to_owned),
            targets: 1,
            started_at: String::new(),
            ended_at: outcome.map(|_| String::new()),
            outcome: outcome.map(str::to_owned),
            alive,
            process: None,
        }
    }

    fn state(runs: Vec<RunRecord>) -> String {
        DeploymentDetail {
            deployment_id: "d".into(),
            actor: Actor::default(),
            started_at: String::new(),
            plan: serde_json::Value::Null,
            fingerprint: None,
            runs,
            targets: Vec::new(),
            target_counts: Default::default(),
        }
        .state()
        .to_string()
    }

    #[test]
    fn a_deployment_stands_as_its_runs_that_no_later_run_took_over() {
        let killed = |shard| run(shard, None, false);
        let ended = |shard, outcome| run(shard, Some(outcome), false);
        assert_eq!(state(vec![killed(None)]), "interrupted");
        assert_eq!(state(vec![run(None, None, true)]), "running");
        assert_eq!(
            state(vec![killed(None), ended(None, "succeeded")]),
            "succeeded"
        );
        // A shard's resume takes over only that shard.
        assert_eq!(
            state(vec![killed(Some("0/2")), ended(Some("1/2"), "succeeded")]),
            "interrupted"
        );
        assert_eq!(
            state(vec![
                killed(Some("0/2")),
                ended(Some("1/2"), "succeeded"),
                ended(Some("0/2"), "succeeded")
            ]),
            "succeeded"
        );
        // Shards side by side: the worst stands.
        assert_eq!(
            state(vec![
                ended(Some("0/2"), "failed"),
                ended(Some("1/2"), "succeeded")
            ]),
            "failed"
        );
        assert_eq!(
            state(vec![ended(None, "paused"), ended(None, "succeeded")]),
            "succeeded"
        );
    }
}
