//! The control store on SurrealDB: deployments, their runs, each target's latest result,
//! audit records and the quiesce flag, in a database flotilla owns — embedded
//! (`surrealkv://`, one process at a time) or on a server shared by a team and its CI.
//!
//! Record ids are literals built from validated names (deployment ids, run ids and
//! environment names are letters, digits, `.`, `_` and `-`), so a batch of target results is
//! one request of `UPSERT`s. Liveness and expiry are epoch milliseconds written by the
//! clients: machines taking part in one deployment are assumed to agree on the time within
//! a lease.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flotilla_core::{Connection, rfc3339};
use flotilla_runner::control::{
    Actor, AuditRecord, ControlError, ControlStore, DeploymentDetail, Quiesce, RunRecord, RunStart,
    TargetRecord,
};
use flotilla_runner::{RunnerError, Target};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::runner::SurrealRunner;
use crate::session::Lane;
use crate::{SCHEMES, SurrealConfig};

/// The tables, created on first use.
const DEFINITIONS: &str = "\
DEFINE TABLE IF NOT EXISTS deployment SCHEMALESS;
DEFINE INDEX IF NOT EXISTS deployment_by_start ON deployment FIELDS started_ms;
DEFINE TABLE IF NOT EXISTS deployment_run SCHEMALESS;
DEFINE INDEX IF NOT EXISTS deployment_run_by_deployment ON deployment_run FIELDS deployment_id;
DEFINE TABLE IF NOT EXISTS deployment_target SCHEMALESS;
DEFINE INDEX IF NOT EXISTS deployment_target_by_deployment ON deployment_target FIELDS deployment_id;
DEFINE TABLE IF NOT EXISTS audit SCHEMALESS;
DEFINE TABLE IF NOT EXISTS quiesce SCHEMALESS;";

/// A control store in a SurrealDB database; see the module documentation.
#[derive(Debug)]
pub struct SurrealControlStore {
    runner: SurrealRunner,
    target: Target,
    defined: OnceLock<()>,
}

impl SurrealControlStore {
    /// The store at `connection` (credentials as for any target), with `config`'s timeouts.
    /// Nothing is sent until the first call.
    pub fn new(connection: Connection, config: SurrealConfig) -> Result<Self, ControlError> {
        let scheme = connection.url.split("://").next().unwrap_or_default();
        if !SCHEMES.contains(&scheme) {
            return Err(ControlError::Unavailable {
                store: connection.redacted_url(),
                reason: format!(
                    "`{scheme}` is not a SurrealDB URL scheme ({})",
                    SCHEMES.join(", ")
                ),
            });
        }
        if let Some(path) = connection.url.strip_prefix("surrealkv://")
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|error| ControlError::Unavailable {
                store: connection.redacted_url(),
                reason: format!("cannot create {}: {error}", parent.display()),
            })?;
        }
        Ok(Self {
            runner: SurrealRunner::with_config(config),
            target: Target::new("control", connection),
            defined: OnceLock::new(),
        })
    }

    /// Requests sent so far (for measuring the journal's cost).
    pub fn request_count(&self) -> u64 {
        self.runner.request_count()
    }

    fn unavailable(&self, error: &RunnerError) -> ControlError {
        let mut reason = error.to_string();
        if self.target.connection.url.starts_with("surrealkv://") && reason.contains("LOCK") {
            reason.push_str(
                "; an embedded control store serves one process at a time: for shards or \
                 concurrent deploys, point `[control] url` at a SurrealDB server",
            );
        }
        ControlError::Unavailable {
            store: self.describe(),
            reason,
        }
    }

    /// Runs `statements` (one per entry) with `vars` in one transaction — a request retried
    /// after a write conflict must not find half of itself committed — and returns each
    /// statement's result, or the first statement error.
    async fn run(
        &self,
        statements: &[String],
        vars: Map<String, Value>,
    ) -> Result<Vec<Value>, ControlError> {
        if self.defined.get().is_none() {
            self.send(DEFINITIONS, None, 8).await?;
            let _ = self.defined.set(());
        }
        let text = format!(
            "BEGIN TRANSACTION;\n{}\nCOMMIT TRANSACTION;",
            statements.join("\n")
        );
        self.send(&text, Some(&vars), statements.len()).await
    }

    async fn send(
        &self,
        text: &str,
        vars: Option<&Map<String, Value>>,
        count: usize,
    ) -> Result<Vec<Value>, ControlError> {
        let mut response = self
            .runner
            .request(&self.target, Lane::Deploy, text, vars, count)
            .await
            .map_err(|error| self.unavailable(&error))?;
        if let Some((index, error)) = response.failure() {
            return Err(ControlError::Corrupt {
                store: self.describe(),
                reason: format!("statement {} failed: {}", index + 1, error.message()),
            });
        }
        (0..count)
            .map(|index| {
                response
                    .result(index)
                    .map_err(|error| ControlError::Corrupt {
                        store: self.describe(),
                        reason: error.message().to_owned(),
                    })
            })
            .collect()
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, value: Value) -> Result<T, ControlError> {
        serde_json::from_value(value).map_err(|error| ControlError::Corrupt {
            store: self.describe(),
            reason: error.to_string(),
        })
    }

    /// The runs of `ids`, by deployment, with liveness by this machine's clock.
    async fn runs_of(&self, ids: &[String]) -> Result<Vec<(String, RunRecord)>, ControlError> {
        let rows = self
            .run(
                &[
                    "SELECT * FROM deployment_run WHERE deployment_id IN $ids ORDER BY started_ms;"
                        .to_owned(),
                ],
                vars([("ids", json!(ids))]),
            )
            .await?;
        let now = now_ms();
        let mut runs = Vec::new();
        for row in rows.into_iter().next().map(array).unwrap_or_default() {
            let stored: StoredRun = self.decode(row)?;
            let alive = stored.ended_at.is_none() && stored.alive_until_ms > now;
            runs.push((
                stored.deployment_id,
                RunRecord {
                    run_id: stored.run_id,
                    actor: stored.actor,
                    shard: stored.shard,
                    targets: stored.targets,
                    started_at: stored.started_at,
                    ended_at: stored.ended_at,
                    outcome: stored.outcome,
                    alive,
                },
            ));
        }
        Ok(runs)
    }
}

/// A run as stored.
#[derive(Deserialize)]
struct StoredRun {
    deployment_id: String,
    run_id: String,
    actor: Actor,
    shard: Option<String>,
    targets: usize,
    started_at: String,
    ended_at: Option<String>,
    outcome: Option<String>,
    alive_until_ms: u64,
}

/// A deployment as stored.
#[derive(Deserialize)]
struct StoredDeployment {
    deployment_id: String,
    actor: Actor,
    started_at: String,
    #[serde(default)]
    plan: Value,
}

/// The quiesce flag as stored.
#[derive(Deserialize)]
struct StoredQuiesce {
    #[serde(flatten)]
    quiesce: Quiesce,
    expires_ms: u64,
}

fn now_ms() -> u64 {
    millis(SystemTime::now())
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn vars<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `table:⟨key⟩` for a key of letters, digits, `.`, `_`, `-` and `/` only; anything else is
/// refused rather than quoted, so no name can change the statement.
fn record(table: &str, key: &str) -> Result<String, ControlError> {
    if key.is_empty()
        || key.len() > 300
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        return Err(ControlError::Corrupt {
            store: table.to_owned(),
            reason: format!("`{key}` is not a valid id: use letters, digits, `.`, `_` and `-`"),
        });
    }
    Ok(format!("{table}:⟨{key}⟩"))
}

#[async_trait]
impl ControlStore for SurrealControlStore {
    fn describe(&self) -> String {
        let connection = &self.target.connection;
        format!(
            "{} (namespace {}, database {})",
            connection.redacted_url(),
            connection.namespace,
            connection.database
        )
    }

    async fn start_run(&self, run: &RunStart) -> Result<(), ControlError> {
        let now = SystemTime::now();
        let deployment = record("deployment", &run.deployment_id)?;
        let this = record("deployment_run", &run.run_id)?;
        // A shard or a resume joins the deployment: its first run's who, when and plan stay.
        let statements = [
            format!(
                "UPSERT {deployment} SET deployment_id = $id, actor = actor ?? $actor, \
                 started_at = started_at ?? $at, started_ms = started_ms ?? $ms, \
                 plan = plan ?? $plan RETURN NONE;"
            ),
            format!("UPSERT {this} CONTENT $run RETURN NONE;"),
        ];
        let run_row = json!({
            "deployment_id": run.deployment_id,
            "run_id": run.run_id,
            "actor": run.actor,
            "shard": run.shard,
            "targets": run.targets.len(),
            "started_at": rfc3339(now),
            "started_ms": millis(now),
            "ended_at": null,
            "outcome": null,
            "alive_until_ms": millis(now + run.lease),
        });
        self.run(
            &statements,
            vars([
                ("id", json!(run.deployment_id)),
                ("actor", json!(run.actor)),
                ("at", json!(rfc3339(now))),
                ("ms", json!(millis(now))),
                ("plan", run.plan.clone()),
                ("run", run_row),
            ]),
        )
        .await
        .map(drop)
    }

    async fn renew_run(&self, run_id: &str, lease: Duration) -> Result<(), ControlError> {
        let this = record("deployment_run", run_id)?;
        self.run(
            &[format!(
                "UPDATE {this} SET alive_until_ms = $until RETURN NONE;"
            )],
            vars([("until", json!(millis(SystemTime::now() + lease)))]),
        )
        .await
        .map(drop)
    }

    async fn write(
        &self,
        targets: &[TargetRecord],
        audit: &[AuditRecord],
    ) -> Result<(), ControlError> {
        let mut statements = Vec::with_capacity(targets.len() + 1);
        let mut bound = Map::new();
        for (index, target) in targets.iter().enumerate() {
            let key = format!("{}/{}", target.deployment_id, target.environment);
            statements.push(format!(
                "UPSERT {} CONTENT $t{index} RETURN NONE;",
                record("deployment_target", &key)?
            ));
            bound.insert(format!("t{index}"), json!(target));
        }
        if !audit.is_empty() {
            // A row of a run names the run, whose record holds who ran it.
            let rows: Vec<Value> = audit
                .iter()
                .map(|record| {
                    let mut row = json!(record);
                    if record.run_id.is_some()
                        && let Some(row) = row.as_object_mut()
                    {
                        row.remove("actor");
                    }
                    row
                })
                .collect();
            statements.push("INSERT INTO audit $audit RETURN NONE;".to_owned());
            bound.insert("audit".to_owned(), Value::Array(rows));
        }
        if statements.is_empty() {
            return Ok(());
        }
        self.run(&statements, bound).await.map(drop)
    }

    async fn finish_run(&self, run_id: &str, outcome: &str) -> Result<(), ControlError> {
        let this = record("deployment_run", run_id)?;
        self.run(
            &[format!(
                "UPDATE {this} SET ended_at = $at, outcome = $outcome RETURN NONE;"
            )],
            vars([
                ("at", json!(rfc3339(SystemTime::now()))),
                ("outcome", json!(outcome)),
            ]),
        )
        .await
        .map(drop)
    }

    async fn deployments(&self, limit: usize) -> Result<Vec<DeploymentDetail>, ControlError> {
        let rows = self
            .run(
                &["SELECT * FROM deployment ORDER BY started_ms DESC LIMIT $limit;".to_owned()],
                vars([("limit", json!(limit))]),
            )
            .await?;
        let mut found: Vec<DeploymentDetail> = Vec::new();
        for row in rows.into_iter().next().map(array).unwrap_or_default() {
            let stored: StoredDeployment = self.decode(row)?;
            found.push(DeploymentDetail {
                deployment_id: stored.deployment_id,
                actor: stored.actor,
                started_at: stored.started_at,
                plan: stored.plan,
                runs: Vec::new(),
                targets: Vec::new(),
                target_counts: Default::default(),
            });
        }
        let ids: Vec<String> = found.iter().map(|d| d.deployment_id.clone()).collect();
        for (deployment_id, run) in self.runs_of(&ids).await? {
            if let Some(detail) = found.iter_mut().find(|d| d.deployment_id == deployment_id) {
                detail.runs.push(run);
            }
        }
        let counts = self
            .run(
                &[
                    "SELECT deployment_id, status, count() AS n FROM deployment_target \
                   WHERE deployment_id IN $ids GROUP BY deployment_id, status;"
                        .to_owned(),
                ],
                vars([("ids", json!(ids))]),
            )
            .await?;
        for row in counts.into_iter().next().map(array).unwrap_or_default() {
            let (Some(id), Some(status), Some(n)) = (
                row.get("deployment_id").and_then(Value::as_str),
                row.get("status").and_then(Value::as_str),
                row.get("n").and_then(Value::as_u64),
            ) else {
                continue;
            };
            if let Some(detail) = found.iter_mut().find(|d| d.deployment_id == id) {
                detail
                    .target_counts
                    .insert(status.to_owned(), usize::try_from(n).unwrap_or(usize::MAX));
            }
        }
        Ok(found)
    }

    async fn deployment(&self, id: &str) -> Result<Option<DeploymentDetail>, ControlError> {
        let this = record("deployment", id)?;
        let rows = self
            .run(
                &[
                    format!("SELECT * FROM ONLY {this};"),
                    "SELECT * FROM deployment_target WHERE deployment_id = $id \
                     ORDER BY environment;"
                        .to_owned(),
                ],
                vars([("id", json!(id))]),
            )
            .await?;
        let mut rows = rows.into_iter();
        let Some(row) = rows.next().filter(|row| !row.is_null()) else {
            return Ok(None);
        };
        let stored: StoredDeployment = self.decode(row)?;
        let targets = rows
            .next()
            .map(array)
            .unwrap_or_default()
            .into_iter()
            .map(|row| self.decode(row))
            .collect::<Result<Vec<TargetRecord>, _>>()?;
        let runs = self.runs_of(&[id.to_owned()]).await?;
        Ok(Some(DeploymentDetail {
            deployment_id: stored.deployment_id,
            actor: stored.actor,
            started_at: stored.started_at,
            plan: stored.plan,
            runs: runs.into_iter().map(|(_, run)| run).collect(),
            targets,
            target_counts: Default::default(),
        }))
    }

    async fn quiesce(&self) -> Result<Option<Quiesce>, ControlError> {
        let rows = self
            .run(
                &["SELECT * FROM ONLY quiesce:current;".to_owned()],
                Map::new(),
            )
            .await?;
        let Some(row) = rows.into_iter().next().filter(|row| !row.is_null()) else {
            return Ok(None);
        };
        let stored: StoredQuiesce = self.decode(row)?;
        Ok((stored.expires_ms > now_ms()).then_some(stored.quiesce))
    }

    async fn set_quiesce(
        &self,
        reason: &str,
        ttl: Duration,
        by: &Actor,
    ) -> Result<Quiesce, ControlError> {
        let now = SystemTime::now();
        let quiesce = Quiesce::new(reason, by, now, ttl);
        let mut row = json!(quiesce);
        row["expires_ms"] = json!(millis(now + ttl));
        self.run(
            &["UPSERT quiesce:current CONTENT $q RETURN NONE;".to_owned()],
            vars([("q", row)]),
        )
        .await?;
        Ok(quiesce)
    }

    async fn clear_quiesce(&self) -> Result<Option<Quiesce>, ControlError> {
        let cleared = self.quiesce().await?;
        self.run(&["DELETE quiesce:current;".to_owned()], Map::new())
            .await?;
        Ok(cleared)
    }
}
