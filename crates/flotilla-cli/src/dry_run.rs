//! What `deploy --dry-run` shows besides the report: per environment, each pending migration
//! (version, name, whether it is destructive) and the version it would end at — environments
//! with the same plan grouped, so a thousand tenants read as one line — and, with
//! `--show-sql`, the statements each would run.

use flotilla_coordinator::DeploymentReport;
use flotilla_core::{MigrationSet, Version};

use crate::cli::Output;
use crate::render::{clean, print_typed};

/// Environment names a group's heading lists before it counts the rest.
const NAMED: usize = 5;

/// Environments that would go from the same version through the same migrations.
#[derive(Debug, serde::Serialize)]
struct Group {
    environments: Vec<String>,
    version_before: Option<Version>,
    ends_at: Option<Version>,
    migrations: Vec<Planned>,
}

/// One migration a group would apply.
#[derive(Debug, serde::Serialize)]
struct Planned {
    version: Version,
    name: String,
    file: String,
    /// What makes it destructive, one entry per statement (`line N: RULE`); empty if nothing.
    destructive: Vec<String>,
    /// Its up statements, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    statements: Option<Vec<String>>,
}

/// Prints the plan of a dry run: a `plan` JSON line, or a readable list.
pub(crate) fn print(
    report: &DeploymentReport,
    migrations: &MigrationSet,
    show_sql: bool,
    output: Output,
) {
    let groups = groups(report, migrations, show_sql);
    if output == Output::Json {
        print_typed("plan", &serde_json::json!({ "groups": groups }));
        return;
    }
    println!("plan:");
    for group in &groups {
        println!("{}", clean(&heading(group)));
        for migration in &group.migrations {
            let flag = if migration.destructive.is_empty() {
                String::new()
            } else {
                format!("  DESTRUCTIVE ({})", migration.destructive.join(", "))
            };
            println!(
                "    {} {}  {}{}",
                migration.version,
                clean(&migration.name),
                clean(&migration.file),
                clean(&flag)
            );
            for statement in migration.statements.iter().flatten() {
                for line in statement.lines() {
                    println!("        {}", clean(line));
                }
            }
        }
    }
}

fn heading(group: &Group) -> String {
    let mut names = group
        .environments
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if group.environments.len() > NAMED {
        names.push_str(&format!(" and {} more", group.environments.len() - NAMED));
    }
    let version = |v: &Option<Version>| v.as_ref().map_or("-".to_owned(), ToString::to_string);
    if group.migrations.is_empty() {
        format!(
            "  {names}: up to date at {}",
            version(&group.version_before)
        )
    } else {
        format!(
            "  {names}: {} -> {}, {} migration(s):",
            version(&group.version_before),
            version(&group.ends_at),
            group.migrations.len()
        )
    }
}

/// The report's environments grouped by version and pending list, in plan order; those whose
/// history could not be read are left out (the report says why).
fn groups(report: &DeploymentReport, migrations: &MigrationSet, show_sql: bool) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: std::collections::HashMap<(&Option<Version>, &[Version]), usize> =
        std::collections::HashMap::new();
    for environment in report.environments.iter().filter(|e| e.error.is_none()) {
        let key = (&environment.version_before, environment.pending.as_slice());
        match index.get(&key) {
            Some(&at) => groups[at]
                .environments
                .push(environment.environment.clone()),
            None => {
                index.insert(key, groups.len());
                groups.push(Group {
                    environments: vec![environment.environment.clone()],
                    version_before: environment.version_before.clone(),
                    ends_at: environment.planned_version(),
                    migrations: environment
                        .pending
                        .iter()
                        .filter_map(|v| migrations.get(v))
                        .map(|m| planned(m, show_sql))
                        .collect(),
                });
            }
        }
    }
    groups
}

fn planned(migration: &flotilla_core::Migration, show_sql: bool) -> Planned {
    Planned {
        version: migration.version.clone(),
        name: migration.description.clone(),
        file: migration.path.display().to_string(),
        destructive: flotilla_core::lint::destructive(migration)
            .into_iter()
            .map(|finding| format!("line {}: {}", finding.line, finding.rule))
            .collect(),
        statements: show_sql.then(|| {
            migration
                .up
                .iter()
                .map(|statement| format!("{};", statement.text))
                .collect()
        }),
    }
}
