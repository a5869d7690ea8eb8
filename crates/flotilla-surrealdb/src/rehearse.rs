//! Rehearsal on a scratch database: a fresh embedded `mem://` datastore, optionally seeded
//! with a real target's schema (definitions only), on which the migrations go up, down (newest
//! first, each compared with the schema before its up) and up again. SurrealDB's own parser
//! checks every statement first. Nothing here touches a target except reading a base's
//! definitions.

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use flotilla_core::{Migration, Statement, format_duration};
use flotilla_runner::execute::statements_of;
use flotilla_runner::{
    Direction, Rehearsal, RehearsalFinding, RehearsalPlan, RehearsalProblem, Result, RunnerError,
    Target,
};
use serde_json::Value;
use surrealdb::Surreal;
use surrealdb::engine::any::Any;

use crate::errors::{classify, is_not_executed};
use crate::request::result_json;
use crate::runner::SurrealRunner;
use crate::session::Lane;
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
        if findings.is_empty() && !selected.is_empty() {
            let scratch = Scratch::start(self.sessions().config().request_timeout).await?;
            if let Some(base) = &plan.base {
                let schema = definitions(&Source::Base(self, base), None).await?;
                scratch.load(base, &schema).await?;
            }
            findings = scratch.walk(&selected).await?;
        }
        Ok(Rehearsal {
            rehearsed: selected.len(),
            findings,
            duration: started.elapsed(),
        })
    }
}

/// A fresh in-memory datastore, in its own namespace and database, whose every request is
/// bounded by `limit`: a rehearsal is a wait like any other.
struct Scratch {
    db: Surreal<Any>,
    limit: Duration,
}

impl Scratch {
    async fn start(limit: Duration) -> Result<Self> {
        let failed = |error: surrealdb::Error| scratch_failed(format!("cannot start it: {error}"));
        let db = surrealdb::engine::any::connect("mem://")
            .await
            .map_err(failed)?;
        db.use_ns("rehearsal")
            .use_db("scratch")
            .await
            .map_err(failed)?;
        Ok(Self { db, limit })
    }

    /// `text`'s results, or why there are none: a refusal, or no answer within the limit.
    async fn query(&self, text: String) -> Result<surrealdb::IndexedResults> {
        match tokio::time::timeout(self.limit, self.db.query(text).into_future()).await {
            Ok(Ok(results)) => Ok(results),
            Ok(Err(error)) => Err(scratch_failed(error.to_string())),
            Err(_) => Err(scratch_failed(format!(
                "no answer within {} (the request timeout)",
                format_duration(self.limit)
            ))),
        }
    }

    /// Loads `schema` (read from `base`), what a definition depends on first: tables before
    /// their fields.
    async fn load(&self, base: &Target, schema: &Schema) -> Result<()> {
        let mut in_order: Vec<&String> = Vec::with_capacity(schema.len());
        for kind in DB_KINDS.iter().chain(TABLE_KINDS) {
            let kind = singular(kind);
            in_order.extend(
                schema
                    .iter()
                    .filter(|(key, _)| key.split(' ').next() == Some(kind))
                    .map(|(_, definition)| definition),
            );
        }
        let script: String = in_order.iter().map(|d| format!("{d};\n")).collect();
        let mut reply = self.query(script).await?;
        let mut errors: Vec<(usize, surrealdb::Error)> = reply.take_errors().into_iter().collect();
        errors.sort_by_key(|(index, _)| *index);
        match errors.into_iter().next() {
            Some((index, error)) => Err(RunnerError::Backend {
                environment: base.environment.clone(),
                source: format!(
                    "copying its schema to rehearse on: `{}`: {}",
                    in_order.get(index).map_or("", |d| d.as_str()),
                    error.message()
                )
                .into(),
            }),
            None => Ok(()),
        }
    }

    /// Up, down (newest first, each compared with the schema before its up), up again; the
    /// first problem of each phase ends it.
    async fn walk(&self, selected: &[&Migration]) -> Result<Vec<RehearsalFinding>> {
        let source = Source::Scratch(self);
        let mut findings = Vec::new();
        let mut before: Vec<Schema> = Vec::with_capacity(selected.len());
        for migration in selected {
            before.push(definitions(&source, Some(&names_in(migration))).await?);
            if let Some(finding) = self
                .run(migration, Direction::Up, RehearsalProblem::UpFailed)
                .await?
            {
                findings.push(finding);
                break;
            }
        }
        let applied = before.len() - usize::from(!findings.is_empty());
        let mut reverted: Vec<usize> = Vec::new();
        for index in (0..applied).rev() {
            let migration = selected[index];
            if migration.down.is_none() {
                break; // irreversible: nothing below it can be reverted either
            }
            if let Some(finding) = self
                .run(migration, Direction::Down, RehearsalProblem::DownFailed)
                .await?
            {
                findings.push(finding);
                break;
            }
            let mut after = definitions(&source, Some(&names_in(migration))).await?;
            forgive_implicit_tables(&mut after, &before[index], migration);
            if after != before[index] {
                findings.push(RehearsalFinding {
                    version: migration.version.clone(),
                    file: migration.down_file().to_path_buf(),
                    // Where the fix goes: the down section.
                    line: migration.down.iter().flatten().next().map(|s| s.line),
                    problem: RehearsalProblem::DownLeavesSchema,
                    detail: difference(&before[index], &after, migration),
                });
                break;
            }
            reverted.push(index);
        }
        for index in reverted.into_iter().rev() {
            let migration = selected[index];
            if let Some(finding) = self
                .run(migration, Direction::Up, RehearsalProblem::NotRerunnable)
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
        &self,
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
        let mut reply = match self.query(text).await {
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
}

fn scratch_failed(what: String) -> RunnerError {
    RunnerError::Backend {
        environment: "rehearsal".into(),
        source: format!("the scratch database: {what}").into(),
    }
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

/// The names a migration's statements mention (its up and down): words, `::` paths with and
/// without their `fn::`, so that comparing schemas can stop at what the migration could have
/// changed — whatever it defines or removes, it names.
fn names_in(migration: &Migration) -> BTreeSet<String> {
    let statements = migration.up.iter().chain(migration.down.iter().flatten());
    let mut names = BTreeSet::new();
    for statement in statements {
        names.extend(words(&statement.text).map(str::to_owned));
        let paths = statement
            .text
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .filter(|path| path.contains("::"));
        for path in paths {
            names.insert(path.trim_start_matches("fn::").to_owned());
        }
    }
    names
}

/// The identifier-like words of `text`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
}

/// Leaves out of `after` the tables SurrealDB defined by itself while the up ran — a `CREATE`
/// or `DEFINE FIELD` on a table nobody defined creates it with the defaults — when the up
/// does not define them in so many words: a data migration whose down deletes its records
/// undoes itself even though the empty table stays.
fn forgive_implicit_tables(after: &mut Schema, before: &Schema, migration: &Migration) {
    const IMPLICIT: &str = " TYPE ANY SCHEMALESS PERMISSIONS NONE";
    let defined = defined_tables(migration);
    after.retain(|key, definition| {
        let Some(table) = key.strip_prefix("table ") else {
            return true;
        };
        before.contains_key(key) || !definition.ends_with(IMPLICIT) || defined.contains(table)
    });
}

/// The tables `migration`'s up defines with `DEFINE TABLE [IF NOT EXISTS | OVERWRITE] name`.
fn defined_tables(migration: &Migration) -> BTreeSet<String> {
    let mut defined = BTreeSet::new();
    for statement in &migration.up {
        let words: Vec<&str> = words(&statement.text).collect();
        for (at, pair) in words.windows(2).enumerate() {
            if pair[0].eq_ignore_ascii_case("DEFINE") && pair[1].eq_ignore_ascii_case("TABLE") {
                let name = words[at + 2..].iter().find(|word| {
                    !["IF", "NOT", "EXISTS", "OVERWRITE"]
                        .iter()
                        .any(|keyword| word.eq_ignore_ascii_case(keyword))
                });
                defined.extend(name.map(|name| (*name).to_owned()));
            }
        }
    }
    defined
}

/// Where definitions are read from: the scratch database, or a real target (read only,
/// through the runner's bounded requests).
enum Source<'a> {
    Scratch(&'a Scratch),
    Base(&'a SurrealRunner, &'a Target),
}

impl Source<'_> {
    /// The results of `statements`, as JSON, in order.
    async fn read(&self, statements: &[String]) -> Result<Vec<Value>> {
        let text: String = statements.iter().map(|s| format!("{s};\n")).collect();
        match self {
            Source::Scratch(scratch) => {
                let mut reply = scratch.query(text).await?;
                (0..statements.len())
                    .map(|index| {
                        result_json(&mut reply, index)
                            .map_err(|e| scratch_failed(format!("reading its schema: {e}")))
                    })
                    .collect()
            }
            Source::Base(runner, target) => {
                // A target never migrated has no schema to copy; asking would create it.
                if !runner.database_exists(target).await? {
                    return Ok(vec![Value::Null; statements.len()]);
                }
                let mut response = runner
                    .request(target, Lane::Deploy, &text, None, statements.len())
                    .await?;
                (0..statements.len())
                    .map(|index| response.result(index).map_err(|e| classify(target, e)))
                    .collect()
            }
        }
    }
}

/// The definitions of a database — flotilla's own tables left out — all of them, or (with
/// `names`) only those named so: the database returns just those, so a rehearsal's cost per
/// migration does not grow with the schema.
async fn definitions(source: &Source<'_>, names: Option<&BTreeSet<String>>) -> Result<Schema> {
    let info = match names {
        None => source.read(&["INFO FOR DB".to_owned()]).await?.remove(0),
        Some(names) if names.is_empty() => Value::Null,
        Some(names) => {
            let wanted: Vec<String> = names.iter().map(|name| sql::ident(name)).collect();
            let fields: Vec<String> = DB_KINDS
                .iter()
                .map(|kind| format!("{kind}: $info.{kind}.{{{}}}", wanted.join(", ")))
                .collect();
            let statements = [
                "LET $info = INFO FOR DB".to_owned(),
                format!("RETURN {{ {} }}", fields.join(", ")),
            ];
            source.read(&statements).await?.remove(1)
        }
    };
    let mut schema = Schema::new();
    let mut tables: Vec<&String> = Vec::new();
    for kind in DB_KINDS {
        let defined = info
            .get(*kind)
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        for (name, definition) in defined {
            if definition.is_null() || name.starts_with("_migration_") {
                continue;
            }
            if *kind == "tables" {
                tables.push(name);
            }
            schema.insert(format!("{} {name}", singular(kind)), text(definition));
        }
    }
    if tables.is_empty() {
        return Ok(schema);
    }
    let queries: Vec<String> = tables
        .iter()
        .map(|t| format!("INFO FOR TABLE {}", sql::ident(t)))
        .collect();
    for (table, info) in tables.iter().zip(source.read(&queries).await?) {
        for kind in TABLE_KINDS {
            let defined = info
                .get(*kind)
                .and_then(Value::as_object)
                .into_iter()
                .flatten();
            for (name, definition) in defined {
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

/// What differs between the schema before an up and after its down; a definition left
/// behind names the up statement that made it, when one does so in so many words.
fn difference(before: &Schema, after: &Schema, migration: &Migration) -> String {
    let mut lines = Vec::new();
    for (key, definition) in after {
        match before.get(key) {
            None => {
                let made_by = defined_at(migration, key)
                    .map(|line| format!(", defined by the up at line {line}"))
                    .unwrap_or_default();
                lines.push(format!("{key} is still defined (`{definition}`{made_by})"));
            }
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

/// The line of the up statement `DEFINE <KIND> … <name>` that defines `key`
/// (`field example.nick`, `table example`, …), if there is one.
fn defined_at(migration: &Migration, key: &str) -> Option<usize> {
    let (kind, name) = key.split_once(' ')?;
    let name = name.rsplit('.').next()?;
    migration.up.iter().find_map(|statement| {
        let mut words = words(&statement.text);
        let defines = words.next()?.eq_ignore_ascii_case("DEFINE")
            && words.next()?.eq_ignore_ascii_case(kind);
        (defines && words.any(|word| word == name)).then_some(statement.line)
    })
}
