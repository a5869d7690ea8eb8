//! The control store on SurrealDB: deployments, their runs, each target's latest result,
//! audit records and the quiesce flag, in a database flotilla owns — embedded
//! (`surrealkv://`, one process at a time) or on a server shared by a team and its CI.
//!
//! Record ids are literals built from validated names (deployment ids, run ids and
//! environment names are letters, digits, `.`, `_` and `-`), so a batch of target results is
//! one request of `UPSERT`s. Liveness and the quiesce flag's expiry are judged by the
//! store's clock (`time::now()` on the server), so clients whose clocks disagree still agree
//! on which runs are alive. A run's start is one transaction that checks its claim and
//! writes the deployment's record, so two claims of one deployment conflict and the retried
//! one sees the other.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flotilla_core::{Connection, rfc3339};
use flotilla_runner::control::{
    Actor, AuditRecord, Claim, ControlError, ControlStore, DeploymentDetail, Quiesce, Refusal,
    RunRecord, RunStart, TargetRecord,
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
        self.run_counted(statements, statements.len(), vars).await
    }

    /// [`Self::run`] for entries holding `count` statements in all.
    async fn run_counted(
        &self,
        statements: &[String],
        count: usize,
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
        self.send(&text, Some(&vars), count).await
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
                    "SELECT *, (!ended_at AND alive_until > time::now()) AS alive \
                     FROM deployment_run WHERE deployment_id IN $ids ORDER BY started_ms;"
                        .to_owned(),
                ],
                vars([("ids", json!(ids))]),
            )
            .await?;
        let mut runs = Vec::new();
        for row in rows.into_iter().next().map(array).unwrap_or_default() {
            let stored: StoredRun = self.decode(row)?;
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
                    alive: stored.alive,
                    process: stored.process,
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
    #[serde(default)]
    alive: bool,
    #[serde(default)]
    process: Option<String>,
}

/// A deployment as stored.
#[derive(Deserialize)]
struct StoredDeployment {
    deployment_id: String,
    actor: Actor,
    started_at: String,
    #[serde(default)]
    plan: Value,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// The quiesce flag as stored.
#[derive(Deserialize)]
struct StoredQuiesce {
    #[serde(flatten)]
    quiesce: Quiesce,
    /// Unexpired by the store's clock.
    #[serde(default)]
    live: bool,
}

/// What a claim's refusal is thrown as, so it is told from a failure.
const CLAIM: &str = "flotilla-claim:";

/// `lease` as SurrealQL reads a duration.
fn lease_text(lease: Duration) -> String {
    format!("{}ms", lease.as_millis())
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
        // One transaction: the checks read what the writes then change, and every start of a
        // deployment writes its record, so two claims of it conflict and the one retried
        // sees the other's run. A shard or a resume keeps the first run's who, when and plan.
        let statements = [
            format!("LET $found = (SELECT fingerprint FROM ONLY {deployment});"),
            format!(
                "IF $found != NONE AND $claim = 'new' {{ THROW '{CLAIM}exists' }}                  ELSE IF $found = NONE AND $claim = 'resume' {{ THROW '{CLAIM}missing' }}                  ELSE IF $found.fingerprint != NONE AND $found.fingerprint != $fingerprint {{ THROW '{CLAIM}differs' }};"
            ),
            "LET $held = (SELECT VALUE run_id FROM deployment_run WHERE deployment_id = $id              AND !ended_at AND alive_until > time::now()              AND ($shard = NONE OR shard = NONE OR shard = $shard));"
                .to_owned(),
            format!("IF array::len($held) > 0 {{ THROW '{CLAIM}held:' + $held[0] }};"),
            format!(
                "UPSERT {deployment} SET deployment_id = $id, actor = actor ?? $actor,                  started_at = started_at ?? $at, started_ms = started_ms ?? $ms,                  plan = plan ?? $plan, fingerprint = fingerprint ?? $fingerprint,                  runs = (runs ?? 0) + 1 RETURN NONE;"
            ),
            format!(
                "CREATE {this} CONTENT $run RETURN NONE;
                 UPDATE {this} SET alive_until = time::now() + <duration> $lease RETURN NONE;"
            ),
        ];
        let run_row = json!({
            "deployment_id": run.deployment_id,
            "run_id": run.run_id,
            "actor": run.actor,
            "shard": run.shard,
            "process": run.process,
            "targets": run.targets.len(),
            "started_at": rfc3339(now),
            "started_ms": millis(now),
            "ended_at": null,
            "outcome": null,
        });
        let claim = match run.claim {
            Claim::New => "new",
            Claim::Join => "join",
            Claim::Resume => "resume",
        };
        let started = self
            .run_counted(
                &statements,
                7,
                vars([
                    ("id", json!(run.deployment_id)),
                    ("actor", json!(run.actor)),
                    ("at", json!(rfc3339(now))),
                    ("ms", json!(millis(now))),
                    ("plan", run.plan.clone()),
                    ("run", run_row),
                    ("claim", json!(claim)),
                    ("fingerprint", json!(run.fingerprint)),
                    ("shard", json!(run.shard)),
                    ("lease", json!(lease_text(run.lease))),
                ]),
            )
            .await;
        match started {
            Err(ControlError::Corrupt { reason, .. }) if reason.contains(CLAIM) => {
                let why = reason[reason.find(CLAIM).unwrap_or(0) + CLAIM.len()..]
                    .trim_end_matches(['\'', '"']);
                Err(match why {
                    "exists" => Refusal::Exists,
                    "missing" => Refusal::Missing,
                    "differs" => Refusal::PlanDiffers,
                    held => Refusal::Held {
                        run_id: held.strip_prefix("held:").unwrap_or(held).to_owned(),
                    },
                }
                .error(run))
            }
            other => other.map(drop),
        }
    }

    async fn renew_run(&self, run_id: &str, lease: Duration) -> Result<(), ControlError> {
        let this = record("deployment_run", run_id)?;
        self.run(
            &[format!(
                "UPDATE {this} SET alive_until = time::now() + <duration> $lease RETURN NONE;"
            )],
            vars([("lease", json!(lease_text(lease)))]),
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
                fingerprint: stored.fingerprint,
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
            fingerprint: stored.fingerprint,
            runs: runs.into_iter().map(|(_, run)| run).collect(),
            targets,
            target_counts: Default::default(),
        }))
    }

    async fn runs(&self, id: &str) -> Result<Vec<RunRecord>, ControlError> {
        let runs = self.runs_of(&[id.to_owned()]).await?;
        Ok(runs.into_iter().map(|(_, run)| run).collect())
    }

    async fn quiesce(&self) -> Result<Option<Quiesce>, ControlError> {
        let rows = self
            .run(
                &[
                    "SELECT *, (expires > time::now()) AS live FROM ONLY quiesce:current;"
                        .to_owned(),
                ],
                Map::new(),
            )
            .await?;
        let Some(row) = rows.into_iter().next().filter(|row| !row.is_null()) else {
            return Ok(None);
        };
        let stored: StoredQuiesce = self.decode(row)?;
        Ok(stored.live.then_some(stored.quiesce))
    }

    async fn set_quiesce(
        &self,
        reason: &str,
        ttl: Duration,
        by: &Actor,
    ) -> Result<Quiesce, ControlError> {
        let now = SystemTime::now();
        let quiesce = Quiesce::new(reason, by, now, ttl);
        self.run_counted(
            &["UPSERT quiesce:current CONTENT $q RETURN NONE; \
               UPDATE quiesce:current SET expires = time::now() + <duration> $ttl RETURN NONE;"
                .to_owned()],
            2,
            vars([("q", json!(quiesce)), ("ttl", json!(lease_text(ttl)))]),
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
