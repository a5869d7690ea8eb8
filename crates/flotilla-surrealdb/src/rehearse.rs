//! Rehearsal on a scratch database: a fresh embedded `mem://` datastore, optionally seeded
//! with a real target's schema (definitions only), on which the migrations go up, down (newest
//! first, each compared with the schema before its up) and up again. SurrealDB's own parser
//! checks every statement first. Nothing here touches a target except reading a base's
//! definitions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use flotilla_core::{Migration, Statement};
use flotilla_runner::execute::statements_of;
use flotilla_runner::{
    Direction, Rehearsal, RehearsalFinding, RehearsalPlan, RehearsalProblem, Result, RunnerError,
    Target,
};
use serde_json::Value;
use surrealdb::Surreal;
use surrealdb::engine::any::Any;

use crate::errors::is_not_executed;
use crate::runner::SurrealRunner;
use crate::sql;

/// A schema: each definition by what it defines (`table user`, `field user.email`, …).
type Schema = BTreeMap<String, String>;

/// Kinds of database-level definitions copied from a base target, in the order they load.
const DB_KINDS: &[&str] = &["analyzers", "functions", "params", "sequences", "tables"];

/// Kinds of table-level definitions, in the order they load.
const TABLE_KINDS: &[&str] = &["fields", "indexes", "events"];

impl SurrealRunner {
    /// See [`flotilla_runner::MigrationRunner::rehearse`].
    pub(crate) async fn rehearse_on_scratch(&self, plan: &RehearsalPlan) -> Result<Rehearsal> {
        let started = Instant::now();
        let selected: Vec<&Migration> = match &plan.only {
            None => plan.migrations.as_slice().iter().collect(),
            Some(only) => only.iter().filter_map(|v| plan.migrations.get(v)).collect(),
        };
        let mut findings: Vec<RehearsalFinding> =
            selected.iter().flat_map(|m| syntax_findings(m)).collect();
        if findings.is_empty() {
            let scratch = scratch().await?;
            if let Some(base) = &plan.base {
                self.copy_schema(base, &scratch).await?;
            }
            findings = walk(&scratch, &selected).await?;
        }
        Ok(Rehearsal {
            rehearsed: selected.len(),
            findings,
            duration: started.elapsed(),
        })
    }

    /// Loads `base`'s definitions (not its data, nor flotilla's own tables) into `scratch`.
    async fn copy_schema(&self, base: &Target, scratch: &Surreal<Any>) -> Result<()> {
        let session = self.session(base).await?;
        let copy_failed = |what: String| RunnerError::Backend {
            environment: base.environment.clone(),
            source: format!("copying the schema to rehearse on: {what}").into(),
        };
        let definitions = definitions(&session, None)
            .await
            .map_err(|e| copy_failed(e.to_string()))?;
        // Tables before what is defined on them.
        let mut in_order: Vec<String> = Vec::with_capacity(definitions.len());
        for kind in DB_KINDS.iter().chain(TABLE_KINDS) {
            let kind = singular(kind);
            for (key, definition) in &definitions {
                if key.split(' ').next() == Some(kind) {
                    in_order.push(definition.clone());
                }
            }
        }
        for definition in in_order {
            let mut reply = scratch
                .query(definition.clone())
                .await
                .map_err(|e| copy_failed(e.to_string()))?;
            if let Some((_, error)) = reply.take_errors().into_iter().next() {
                return Err(copy_failed(format!("`{definition}`: {error}")));
            }
        }
        Ok(())
    }
}

/// A fresh in-memory datastore, in its own namespace and database.
async fn scratch() -> Result<Surreal<Any>> {
    let failed = |error: surrealdb::Error| RunnerError::Backend {
        environment: "rehearsal".into(),
        source: format!("cannot start the scratch database: {error}").into(),
    };
    let scratch = surrealdb::engine::any::connect("mem://")
        .await
        .map_err(failed)?;
    scratch
        .use_ns("rehearsal")
        .use_db("scratch")
        .await
        .map_err(failed)?;
    Ok(scratch)
}

/// Every statement of `migration` SurrealDB's parser rejects, with its message and line.
fn syntax_findings(migration: &Migration) -> Vec<RehearsalFinding> {
    let mut findings = Vec::new();
    for direction in [Direction::Up, Direction::Down] {
        if direction == Direction::Down && migration.down.is_none() {
            continue;
        }
        let (statements, file) = statements_of(migration, direction);
        for statement in statements {
            if let Err(error) = surrealdb_core::syn::parse(&statement.text) {
                let rendered = format!("{error:#}");
                let offset = rendered
                    .split_once("--> [")
                    .and_then(|(_, rest)| rest.split_once(':'))
                    .and_then(|(line, _)| line.trim().parse::<usize>().ok())
                    .unwrap_or(1);
                let message = error.to_string();
                let message = message.lines().next().unwrap_or_default();
                findings.push(RehearsalFinding {
                    version: migration.version.clone(),
                    file: file.to_path_buf(),
                    line: Some(statement.line + offset - 1),
                    problem: RehearsalProblem::Syntax,
                    detail: message.trim_start_matches("Parse error: ").to_owned(),
                });
            }
        }
    }
    findings
}

/// Up, down (newest first, each compared with the schema before its up), up again; the first
/// problem of each phase ends it.
async fn walk(scratch: &Surreal<Any>, selected: &[&Migration]) -> Result<Vec<RehearsalFinding>> {
    let mut findings = Vec::new();
    let mut before: Vec<Schema> = Vec::with_capacity(selected.len());
    for migration in selected {
        before.push(definitions(scratch, Some(tables_of(migration))).await?);
        if let Some(finding) = run(
            scratch,
            migration,
            Direction::Up,
            RehearsalProblem::UpFailed,
        )
        .await?
        {
            findings.push(finding);
            break;
        }
    }
    let applied = before.len() - usize::from(!findings.is_empty());
    let mut reverted: Vec<usize> = Vec::new();
    let newest_first: Vec<usize> = (0..applied).rev().collect();
    for index in newest_first {
        let migration = selected[index];
        if migration.down.is_none() {
            break; // an irreversible migration: nothing below it can be reverted
        }
        if let Some(finding) = run(
            scratch,
            migration,
            Direction::Down,
            RehearsalProblem::DownFailed,
        )
        .await?
        {
            findings.push(finding);
            break;
        }
        let after = definitions(scratch, Some(tables_of(migration))).await?;
        if after != before[index] {
            findings.push(RehearsalFinding {
                version: migration.version.clone(),
                file: migration.down_file().to_path_buf(),
                line: None,
                problem: RehearsalProblem::DownLeavesSchema,
                detail: difference(&before[index], &after),
            });
            break;
        }
        reverted.push(index);
    }
    for index in reverted.into_iter().rev() {
        let migration = selected[index];
        if let Some(finding) = run(
            scratch,
            migration,
            Direction::Up,
            RehearsalProblem::NotRerunnable,
        )
        .await?
        {
            findings.push(finding);
            break;
        }
    }
    Ok(findings)
}

/// Runs one section in a transaction; the failure, if it failed.
async fn run(
    scratch: &Surreal<Any>,
    migration: &Migration,
    direction: Direction,
    problem: RehearsalProblem,
) -> Result<Option<RehearsalFinding>> {
    let (statements, file) = statements_of(migration, direction);
    let finding = |statement: Option<&Statement>, detail: String| RehearsalFinding {
        version: migration.version.clone(),
        file: file.to_path_buf(),
        line: statement.map(|s| s.line),
        problem,
        detail,
    };
    let mut text = String::from("BEGIN TRANSACTION;\n");
    for statement in statements {
        text.push_str(&statement.text);
        text.push_str(";\n");
    }
    text.push_str("COMMIT TRANSACTION;");
    let mut reply = match scratch.query(text).await {
        Ok(reply) => reply,
        Err(error) => return Ok(Some(finding(statements.first(), error.to_string()))),
    };
    let mut errors: Vec<(usize, surrealdb::Error)> = reply.take_errors().into_iter().collect();
    errors.sort_by_key(|(index, _)| *index);
    let cause = errors
        .iter()
        .position(|(_, e)| !is_not_executed(e))
        .unwrap_or(0);
    Ok(errors.into_iter().nth(cause).map(|(index, error)| {
        // Results: `BEGIN`, each statement, `COMMIT`.
        let statement = index.checked_sub(1).and_then(|i| statements.get(i));
        finding(statement, error.message().to_owned())
    }))
}

/// The tables a migration's statements name (its up and down), for comparing schemas where
/// the migration could have changed them.
fn tables_of(migration: &Migration) -> BTreeSet<String> {
    let texts = migration
        .up
        .iter()
        .chain(migration.down.iter().flatten())
        .map(|s| s.text.as_str());
    texts
        .flat_map(|text| text.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The definitions of the database `session` is in: database-level ones, and table-level
/// ones of the tables in `tables` (all tables when `None`) — flotilla's own tables left out.
async fn definitions(session: &Surreal<Any>, tables: Option<BTreeSet<String>>) -> Result<Schema> {
    let backend = |error: surrealdb::Error| RunnerError::Backend {
        environment: "rehearsal".into(),
        source: format!("reading the schema: {error}").into(),
    };
    let mut reply = session.query("INFO FOR DB").await.map_err(backend)?;
    let info: Value = crate::request::result_json(&mut reply, 0).map_err(backend)?;
    let mut schema = Schema::new();
    for kind in DB_KINDS {
        for (name, definition) in info
            .get(*kind)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            schema.insert(format!("{} {name}", singular(kind)), text(definition));
        }
    }
    let all_tables: Vec<String> = info
        .get("tables")
        .and_then(Value::as_object)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let wanted: Vec<String> = all_tables
        .into_iter()
        .filter(|t| !t.starts_with("_migration_"))
        .filter(|t| tables.as_ref().is_none_or(|only| only.contains(t)))
        .collect();
    schema.retain(|key, _| !key.starts_with("table _migration_"));
    if wanted.is_empty() {
        return Ok(schema);
    }
    let query: String = wanted
        .iter()
        .map(|t| format!("INFO FOR TABLE {};\n", sql::ident(t)))
        .collect();
    let mut reply = session.query(query).await.map_err(backend)?;
    for (index, table) in wanted.iter().enumerate() {
        let info: Value = crate::request::result_json(&mut reply, index).map_err(backend)?;
        for kind in TABLE_KINDS {
            for (name, definition) in info
                .get(*kind)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                schema.insert(
                    format!("{} {table}.{name}", singular(kind)),
                    text(definition),
                );
            }
        }
    }
    Ok(schema)
}

fn singular(kind: &str) -> &str {
    match kind {
        "analyzers" => "analyzer",
        "functions" => "function",
        "params" => "param",
        "sequences" => "sequence",
        "tables" => "table",
        "fields" => "field",
        "indexes" => "index",
        "events" => "event",
        other => other,
    }
}

fn text(definition: &Value) -> String {
    definition
        .as_str()
        .map_or_else(|| definition.to_string(), str::to_owned)
}

/// What differs between the schema before an up and after its down.
fn difference(before: &Schema, after: &Schema) -> String {
    let mut lines = Vec::new();
    for (key, definition) in after {
        match before.get(key) {
            None => lines.push(format!("{key} is still defined (`{definition}`)")),
            Some(was) if was != definition => {
                lines.push(format!("{key} differs: was `{was}`, is `{definition}`"))
            }
            Some(_) => {}
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        lines.push(format!("{key} is gone (it was defined before the up)"));
    }
    lines.join("; ")
}
