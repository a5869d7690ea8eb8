//! `flotilla validate`: the configuration, the migration files (parse, lint, a rehearsal of
//! every migration on an empty scratch database), connectivity, and — for environments
//! named on the command line — a rehearsal of their pending migrations on a copy of their
//! schema. Writes nothing anywhere.

use flotilla_coordinator::{DeploymentCoordinator, EnvironmentConfig, Rehearsal};
use flotilla_core::MigrationSet;
use flotilla_runner::RunnerError;

use super::inspect::reader;
use super::{CommandResult, EXIT_FAILED, EXIT_OK, EXIT_USAGE, usage};
use crate::cli::{Cli, Output, ValidateArgs};
use crate::project::{Project, selection};
use crate::render;

/// What validating found, line by line, and how bad it was.
#[derive(Default)]
struct Verdict {
    lines: Vec<String>,
    /// A migration does not parse, fails or does not undo itself: exit 2.
    broken_migrations: bool,
    /// An environment could not be reached or read: exit 1.
    unreachable: bool,
    /// Each rehearsal that ran, for `--output json`: where, and what it found.
    rehearsals: Vec<serde_json::Value>,
}

pub(crate) async fn validate(cli: &Cli, args: &ValidateArgs) -> CommandResult {
    let project = Project::with_fleets(cli).await?;
    let migrations = project.migrations()?;
    let environments = project.select(&args.select)?;
    let coordinator = reader(&project);
    let mut verdict = Verdict::default();
    verdict.lines.push(format!(
        "config: {} ok ({} environments)",
        project.config.path.display(),
        project.registry.len()
    ));
    verdict.lines.push(format!(
        "migrations: {} ok ({} migrations)",
        project.migrations_dir.display(),
        migrations.len()
    ));
    verdict.lint(&migrations, &environments);
    match environments.first() {
        Some(like) => {
            let rehearsal = coordinator.rehearse(migrations.clone(), like).await;
            verdict.rehearsal("an empty scratch database", rehearsal);
        }
        None => verdict
            .lines
            .push("rehearsal: skipped (no environment names a backend)".into()),
    }
    if !args.offline {
        verdict
            .connectivity(&coordinator, &environments, &migrations)
            .await?;
        if selection(&args.select).is_some() {
            let rehearsals = coordinator
                .rehearse_pending(&environments, migrations.clone())
                .await;
            for (environment, rehearsal) in environments.iter().zip(rehearsals) {
                verdict.rehearsal(
                    &format!("a copy of {}'s schema", environment.name),
                    rehearsal,
                );
            }
        }
    }
    let json = cli.output == Output::Json;
    render::lines(&verdict.lines, json);
    if json {
        for rehearsal in &verdict.rehearsals {
            render::print_typed("rehearsal", rehearsal);
        }
    }
    Ok(if verdict.broken_migrations {
        EXIT_USAGE
    } else if verdict.unreachable {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

impl Verdict {
    /// Destructive statements, and where they would be refused.
    fn lint(&mut self, migrations: &MigrationSet, environments: &[EnvironmentConfig]) {
        let strict: Vec<&str> = environments
            .iter()
            .filter(|e| !e.allow_destructive)
            .map(|e| e.name.as_str())
            .collect();
        let note = if strict.is_empty() {
            String::new()
        } else {
            format!(
                " (refused towards {} while pending there)",
                strict.join(", ")
            )
        };
        for migration in migrations.as_slice() {
            let mut findings = flotilla_core::lint::destructive(migration);
            findings.extend(flotilla_core::lint::destructive_down(migration));
            self.lines.extend(
                findings
                    .into_iter()
                    .map(|finding| format!("lint: {finding}{note}")),
            );
        }
    }

    /// A rehearsal's findings, each naming file and line; or why it could not run.
    fn rehearsal(&mut self, on: &str, rehearsal: Result<Rehearsal, RunnerError>) {
        if let Ok(rehearsal) = &rehearsal {
            self.rehearsals
                .push(serde_json::json!({ "on": on, "rehearsal": rehearsal }));
        }
        match rehearsal {
            Ok(rehearsal) if rehearsal.rehearsed == 0 => self
                .lines
                .push(format!("rehearsal on {on}: nothing pending")),
            Ok(rehearsal) if rehearsal.passed() => self.lines.push(format!(
                "rehearsal on {on}: {} migration(s) ok: up, down, up again ({} ms)",
                rehearsal.rehearsed,
                rehearsal.duration.as_millis()
            )),
            Ok(rehearsal) => {
                self.broken_migrations = true;
                self.lines.extend(
                    rehearsal
                        .findings
                        .iter()
                        .map(|finding| format!("rehearsal on {on}: FAILED: {finding}")),
                );
            }
            Err(RunnerError::Unsupported { what }) => self.lines.push(format!(
                "rehearsal on {on}: skipped (the backend does not support {what})"
            )),
            Err(error) => {
                self.unreachable = true;
                self.lines
                    .push(format!("rehearsal on {on}: could not run: {error}"));
            }
        }
    }

    /// Whether each environment answers, and how fast.
    async fn connectivity(
        &mut self,
        coordinator: &DeploymentCoordinator,
        environments: &[EnvironmentConfig],
        migrations: &std::sync::Arc<MigrationSet>,
    ) -> Result<(), super::Failure> {
        let statuses = coordinator
            .status(environments, migrations.clone())
            .await
            .map_err(usage)?;
        for status in &statuses {
            let name = &status.environment;
            match &status.error {
                Some(error) if !status.reachable => {
                    self.unreachable = true;
                    self.lines
                        .push(format!("connectivity: {name} FAILED: {error}"));
                }
                _ => self.lines.push(format!(
                    "connectivity: {name} ok ({} ms{})",
                    status.latency.as_millis(),
                    if status.initialised {
                        ""
                    } else {
                        ", not initialised yet"
                    }
                )),
            }
        }
        Ok(())
    }
}
