//! Per-environment hooks: something of the user's own (a command, a webhook, a metrics
//! push) told of each environment once its outcome is final — at once when nothing can
//! change it any more (auto-rollback off, or an isolated success), else after auto-rollback.
//! Hooks run on a task of their own, a few at a time, so a slow hook never holds up the
//! rollout; a failing hook is reported, and changes nothing about the deployment.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use flotilla_core::DeploymentStatus;
use flotilla_runner::Target;
use flotilla_strategies::{TargetListener, TargetOutcome};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::report::EnvironmentReport;

/// Hooks running at once.
const HOOK_CONCURRENCY: usize = 8;

/// Told of each environment of a rollout once its outcome is final (environments that never
/// started are not told). Runs beside the rollout; should be bounded in time.
#[async_trait]
pub trait EnvironmentHook: Send + Sync + fmt::Debug {
    /// `event` is final for its environment; `Err` is reported, nothing else.
    async fn finished(&self, event: &HookEvent) -> Result<(), String>;
}

/// An environment's tenant id and the fields its source gave (none for a fixed one).
pub(crate) type Tenancy = (Option<String>, std::collections::BTreeMap<String, String>);

/// What a hook is told: the environment's report, with its deployment and tenant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HookEvent {
    /// The deployment.
    pub deployment_id: String,
    /// The tenant id, for an environment a fleet made.
    pub tenant: Option<String>,
    /// The fields its tenant source gave (each also a `FLOTILLA_TENANT_<FIELD>` variable).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tenant_fields: std::collections::BTreeMap<String, String>,
    /// The environment's final report: status, applied versions, times, error class.
    #[serde(flatten)]
    pub report: EnvironmentReport,
}

/// What the hooks did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HookSummary {
    /// Hooks run.
    pub ran: usize,
    /// Those that failed, and why.
    pub failed: Vec<HookFailure>,
}

/// A hook that failed for one environment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HookFailure {
    /// The environment.
    pub environment: String,
    /// What the hook said.
    pub message: String,
}

/// The passwords a deployment knows, to keep out of what hooks say: a hook's error quotes its
/// standard error, and a hook handed a secret may echo it.
#[derive(Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// Every password `environments` carry.
    pub(crate) fn of(environments: &[flotilla_core::config::EnvironmentConfig]) -> Self {
        let mut secrets: Vec<String> = environments
            .iter()
            .filter_map(|e| e.connection.credentials.as_ref())
            .map(|c| c.password.expose().to_owned())
            .filter(|secret| !secret.is_empty())
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        // Longest first, so a secret that contains another is scrubbed whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        Self(secrets)
    }

    /// `text` with every known secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// One rollout's hooks: a queue, a task draining it, and which environments were told.
pub(crate) struct Hooks {
    listener: Arc<HookListener>,
    task: tokio::task::JoinHandle<HookSummary>,
}

impl Hooks {
    /// Starts the task running `hook`; `reports` are the environments as pre-flight left
    /// them, `tenants` their tenant ids, in plan order.
    pub(crate) fn start(
        hook: Arc<dyn EnvironmentHook>,
        deployment_id: &str,
        reports: &[EnvironmentReport],
        tenants: Vec<Tenancy>,
        final_on_success: bool,
        final_on_failure: bool,
        secrets: Secrets,
    ) -> Self {
        let (sender, mut receiver) = mpsc::unbounded_channel::<HookEvent>();
        let task = tokio::spawn(async move {
            let events = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
            let results: Vec<(String, Result<(), String>)> = events
                .map(|event| {
                    let hook = Arc::clone(&hook);
                    async move {
                        let result = hook.finished(&event).await;
                        (event.report.environment, result)
                    }
                })
                .buffer_unordered(HOOK_CONCURRENCY)
                .collect()
                .await;
            let mut summary = HookSummary {
                ran: results.len(),
                failed: Vec::new(),
            };
            for (environment, result) in results {
                if let Err(message) = result {
                    let message = secrets.scrub(&message);
                    tracing::warn!(%environment, %message, "hook failed");
                    summary.failed.push(HookFailure {
                        environment,
                        message,
                    });
                }
            }
            summary
                .failed
                .sort_by(|a, b| a.environment.cmp(&b.environment));
            summary
        });
        let listener = Arc::new(HookListener {
            sender: std::sync::Mutex::new(Some(sender)),
            told: reports.iter().map(|_| AtomicBool::new(false)).collect(),
            reports: reports.to_vec(),
            tenants,
            deployment_id: deployment_id.to_owned(),
            final_on_success,
            final_on_failure,
        });
        Self { listener, task }
    }

    /// The listener that tells hooks of outcomes final as they come.
    pub(crate) fn listener(&self) -> Arc<dyn TargetListener> {
        Arc::clone(&self.listener) as Arc<dyn TargetListener>
    }

    /// Tells hooks of every environment that started and was not told yet (`reports` are
    /// final), then waits for every hook to finish.
    pub(crate) async fn finish(self, reports: &[EnvironmentReport]) -> HookSummary {
        for (index, report) in reports.iter().enumerate() {
            if report.started_at.is_some() || report.status == DeploymentStatus::RolledBack {
                self.listener.tell(index, report.clone());
            }
        }
        self.listener.close();
        self.task.await.unwrap_or_default()
    }
}

struct HookListener {
    sender: std::sync::Mutex<Option<mpsc::UnboundedSender<HookEvent>>>,
    told: Vec<AtomicBool>,
    reports: Vec<EnvironmentReport>,
    tenants: Vec<Tenancy>,
    deployment_id: String,
    /// Whether a success is final when it happens (no auto-rollback, or isolated).
    final_on_success: bool,
    /// Whether a failure is final when it happens (no auto-rollback).
    final_on_failure: bool,
}

impl fmt::Debug for HookListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookListener")
            .field("deployment_id", &self.deployment_id)
            .finish_non_exhaustive()
    }
}

impl HookListener {
    /// Queues environment `index`'s final report, once.
    fn tell(&self, index: usize, report: EnvironmentReport) {
        if self.told[index].swap(true, Ordering::SeqCst) {
            return;
        }
        let event = HookEvent {
            deployment_id: self.deployment_id.clone(),
            tenant: self.tenants[index].0.clone(),
            tenant_fields: self.tenants[index].1.clone(),
            report,
        };
        if let Some(sender) = flotilla_runner::util::lock_unpoisoned(&self.sender).as_ref() {
            let _ = sender.send(event);
        }
    }

    fn close(&self) {
        flotilla_runner::util::lock_unpoisoned(&self.sender).take();
    }
}

impl TargetListener for HookListener {
    fn finished(&self, index: usize, _target: &Target, outcome: &TargetOutcome) {
        let is_final = match outcome.status {
            DeploymentStatus::Success => self.final_on_success,
            // What a lost reply applied is learnt after the rollout.
            _ => self.final_on_failure && outcome.applied_known(),
        };
        if is_final {
            let mut report = self.reports[index].clone();
            crate::coordinator::apply_outcome(&mut report, outcome);
            self.tell(index, report);
        }
    }
}

/// A shell command run (`sh -c`) for each environment: the event as JSON on its standard
/// input, and as variables — `FLOTILLA_ENVIRONMENT`, `FLOTILLA_TENANT` (empty for a fixed
/// environment), `FLOTILLA_STATUS`, `FLOTILLA_ERROR_CLASS` (empty without an error),
/// `FLOTILLA_APPLIED` (versions, comma-separated), `FLOTILLA_DURATION_MS`,
/// `FLOTILLA_STARTED_AT`, `FLOTILLA_FINISHED_AT`, `FLOTILLA_DEPLOYMENT_ID`. It must exit 0
/// within `timeout` (it is killed then). No secret is in either: the report holds none.
#[derive(Clone, Debug)]
pub struct CommandHook {
    /// The command line.
    pub command: String,
    /// The directory it runs in.
    pub dir: std::path::PathBuf,
    /// How long one run may take.
    pub timeout: std::time::Duration,
}

#[async_trait]
impl EnvironmentHook for CommandHook {
    async fn finished(&self, event: &HookEvent) -> Result<(), String> {
        let report = &event.report;
        let json = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let variables: Vec<(&str, String)> = vec![
            ("FLOTILLA_ENVIRONMENT", report.environment.clone()),
            ("FLOTILLA_TENANT", event.tenant.clone().unwrap_or_default()),
            ("FLOTILLA_STATUS", snake_case(&report.status)),
            (
                "FLOTILLA_ERROR_CLASS",
                report
                    .error
                    .as_ref()
                    .map(|e| snake_case(&e.class))
                    .unwrap_or_default(),
            ),
            (
                "FLOTILLA_APPLIED",
                report
                    .applied
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "FLOTILLA_DURATION_MS",
                report.duration.as_millis().to_string(),
            ),
            (
                "FLOTILLA_STARTED_AT",
                report.started_at.clone().unwrap_or_default(),
            ),
            (
                "FLOTILLA_FINISHED_AT",
                report.finished_at.clone().unwrap_or_default(),
            ),
            ("FLOTILLA_DEPLOYMENT_ID", event.deployment_id.clone()),
        ];
        // A tenant's fields as variables of their own, never in the command line.
        let variables: Vec<(String, String)> = variables
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .chain(event.tenant_fields.iter().map(|(field, value)| {
                (
                    flotilla_core::config::command_variable(Some(field)),
                    value.clone(),
                )
            }))
            .collect();
        let (command, dir, timeout) = (self.command.clone(), self.dir.clone(), self.timeout);
        tokio::task::spawn_blocking(move || {
            let variables: Vec<(&str, String)> = variables
                .iter()
                .map(|(name, value)| (name.as_str(), value.clone()))
                .collect();
            crate::command::run_with(
                &command,
                &dir,
                timeout,
                &variables,
                Some(json),
                crate::command::HOOK_OUTPUT,
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map(drop)
    }
}

/// How `value` (a unit enum) is spelled in JSON.
fn snake_case(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
