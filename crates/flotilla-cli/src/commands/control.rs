//! `flotilla deployments` (list, show) and `flotilla quiesce` (set, clear, status): what the
//! control store holds, and the fleet's quiesce flag.

use flotilla_coordinator::control::{
    AuditEvent, AuditRecord, Control, ControlError, DeploymentDetail, Quiesce, validate_ttl,
};
use serde_json::json;

use super::{CommandResult, EXIT_FAILED, EXIT_OK, Failure, usage};
use crate::cli::{Cli, DeploymentsArgs, DeploymentsCommand, Output, QuiesceCommand};
use crate::project::Project;
use crate::render::{self, clean, print_typed, table};

fn unavailable(error: ControlError) -> Failure {
    Failure {
        code: EXIT_FAILED,
        message: error.to_string(),
    }
}

async fn open(cli: &Cli) -> Result<Control, Failure> {
    let project = Project::load(cli)?;
    let wait = project
        .config
        .defaults
        .lock_timeout
        .unwrap_or(flotilla_runner::LockRequest::DEFAULT_WAIT);
    crate::control::control(&project, None, wait).await
}

pub(crate) async fn deployments(cli: &Cli, args: &DeploymentsArgs) -> CommandResult {
    let control = open(cli).await?;
    match &args.command {
        None => {
            let found = control
                .store
                .deployments(args.limit)
                .await
                .map_err(unavailable)?;
            list(&found, cli.output);
        }
        Some(DeploymentsCommand::Show { id }) => {
            let detail = control
                .store
                .deployment(id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    usage(format!(
                        "no deployment `{id}` in the control store {}",
                        control.store.describe()
                    ))
                })?;
            show(&detail, cli.output);
        }
    }
    Ok(EXIT_OK)
}

fn list(found: &[DeploymentDetail], output: Output) {
    let summaries: Vec<_> = found.iter().map(DeploymentDetail::summary).collect();
    if output == Output::Json {
        for summary in &summaries {
            print_typed("deployment", summary);
        }
        return;
    }
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            let counts: Vec<String> = s
                .targets
                .iter()
                .map(|(status, n)| format!("{n} {status}"))
                .collect();
            vec![
                s.deployment_id.clone(),
                s.state.clone(),
                s.started_at.clone(),
                s.actor.clone(),
                s.runs.to_string(),
                counts.join(", "),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "DEPLOYMENT",
                "STATE",
                "STARTED",
                "BY",
                "RUNS",
                "ENVIRONMENTS"
            ],
            &rows
        )
    );
}

fn show(detail: &DeploymentDetail, output: Output) {
    if output == Output::Json {
        let mut value = serde_json::to_value(detail).unwrap_or_default();
        value["state"] = json!(detail.state().to_string());
        print_typed("deployment", &value);
        return;
    }
    println!(
        "deployment {}: {} (started {} by {}{})",
        detail.deployment_id,
        detail.state(),
        detail.started_at,
        clean(&detail.actor.to_string()),
        detail
            .actor
            .commit
            .as_ref()
            .map(|c| format!(", commit {c}"))
            .unwrap_or_default()
    );
    for run in &detail.runs {
        println!(
            "  run {}{}: {} targets, {} by {}, {}",
            run.run_id,
            run.shard
                .as_ref()
                .map(|s| format!(" (shard {s})"))
                .unwrap_or_default(),
            run.targets,
            run.started_at,
            clean(&run.actor.to_string()),
            run.state()
        );
    }
    let rows: Vec<Vec<String>> = detail
        .targets
        .iter()
        .map(|t| {
            let versions: Vec<String> = t.applied.iter().map(ToString::to_string).collect();
            vec![
                t.environment.clone(),
                t.status.to_string(),
                if versions.is_empty() {
                    "-".to_owned()
                } else {
                    versions.join(", ")
                },
                t.error_class
                    .map(|c| c.category().to_owned())
                    .unwrap_or_default(),
                t.error.as_deref().map(clean).unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ENVIRONMENT", "STATUS", "APPLIED", "CLASS", "ERROR"],
            &rows
        )
    );
}

pub(crate) async fn quiesce(cli: &Cli, command: &QuiesceCommand) -> CommandResult {
    let control = open(cli).await?;
    let store = &control.store;
    let json = cli.output == Output::Json;
    match command {
        QuiesceCommand::Set { ttl, reason } => {
            let ttl = validate_ttl(*ttl).map_err(usage)?;
            if reason.trim().is_empty() {
                return Err(usage(
                    "say why: --reason \"…\" is shown to everyone refused",
                ));
            }
            let set = store
                .set_quiesce(reason, ttl, &control.actor)
                .await
                .map_err(unavailable)?;
            audit(&control, AuditEvent::QuiesceSet, &set).await;
            say(json, "quiesce", Some(&set), &format!("quiesced: {set}"));
        }
        QuiesceCommand::Clear => {
            let cleared = store.clear_quiesce().await.map_err(unavailable)?;
            match &cleared {
                Some(was) => {
                    audit(&control, AuditEvent::QuiesceCleared, was).await;
                    say(json, "quiesce", None, &format!("cleared; it was {was}"));
                }
                None => say(json, "quiesce", None, "the fleet was not quiesced"),
            }
        }
        QuiesceCommand::Status => {
            let current = store.quiesce().await.map_err(unavailable)?;
            let line = match &current {
                Some(quiesce) => format!("{quiesce}"),
                None => "not quiesced: deployments may run".to_owned(),
            };
            say(json, "quiesce", current.as_ref(), &line);
        }
    }
    Ok(EXIT_OK)
}

fn say(json: bool, kind: &str, quiesce: Option<&Quiesce>, line: &str) {
    if json {
        print_typed(
            kind,
            &json!({ "quiesced": quiesce.is_some(), "quiesce": quiesce }),
        );
    } else {
        render::lines(&[line.to_owned()], false);
    }
}

/// Audits a change of the quiesce flag, to the store and the audit file; a failure is a
/// warning (the flag itself is set).
async fn audit(control: &Control, event: AuditEvent, quiesce: &Quiesce) {
    let mut record = AuditRecord::now(event, &control.actor);
    record.message = Some(format!("{}; until {}", quiesce.reason, quiesce.expires_at));
    if let Err(error) = control
        .store
        .write(&[], std::slice::from_ref(&record))
        .await
    {
        tracing::warn!(%error, "auditing the quiesce change failed");
    }
    if let Some(path) = &control.audit_log {
        let line = serde_json::to_string(&record).unwrap_or_default() + "\n";
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if let Err(error) = written {
            tracing::warn!(%error, "appending to the audit log failed");
        }
    }
}
