//! Everything flotilla prints: tables, live progress, JSON lines, errors.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use flotilla_coordinator::{DeploymentReport, EnvironmentReport, EnvironmentStatus, Gate, Outcome};
use flotilla_core::{AppliedMigration, DeploymentEvent, DeploymentStatus};
use serde_json::json;

use crate::cli::Output;

/// Logs go to stderr: `-v` info, `-vv` debug; `RUST_LOG` overrides.
pub(crate) fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // SurrealDB's embedded engine logs its background tasks being cancelled at exit.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{level},surrealdb_core::kvs::tasks=off"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}

fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(text: &str, status: DeploymentStatus, colour: bool) -> String {
    if !colour {
        return text.to_owned();
    }
    let code = match status {
        DeploymentStatus::Success => "32",
        DeploymentStatus::Failed => "31",
        DeploymentStatus::RolledBack | DeploymentStatus::Skipped | DeploymentStatus::Refused => {
            "33"
        }
        DeploymentStatus::InProgress => "36",
        DeploymentStatus::Pending => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// One JSON line of `kind` (`{"type": kind, ...value}`).
pub(crate) fn print_typed(kind: &str, value: &impl serde::Serialize) {
    let mut value =
        serde_json::to_value(value).unwrap_or_else(|e| json!({ "error": e.to_string() }));
    if let Some(map) = value.as_object_mut() {
        map.insert("type".into(), json!(kind));
    }
    print_json(&value);
}

fn print_json(value: &serde_json::Value) {
    // serde_json escapes the C0 controls; DEL and the C1 controls (U+0080–U+009F, which
    // some terminals read as escape sequences) are escaped here too.
    let text: String = value
        .to_string()
        .chars()
        .map(|c| {
            if ('\u{7f}'..='\u{9f}').contains(&c) {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// `text` safe to show on a terminal: control characters (escape sequences among them) that
/// came from a database or another program are shown escaped, not obeyed.
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(crate) fn error(message: &str, json: bool) {
    if json {
        print_json(&json!({ "type": "error", "message": message }));
    }
    eprintln!("error: {}", clean(message));
}

pub(crate) fn lines(lines: &[String], json: bool) {
    for line in lines {
        if json {
            print_json(&json!({ "type": "message", "message": line }));
        } else {
            println!("{}", clean(line));
        }
    }
}

/// [`clean`], except for the colour codes flotilla itself wraps a status in.
fn clean_keeping_colour(cell: &str) -> String {
    let colour = cell.starts_with("\x1b[") && cell.ends_with("\x1b[0m");
    if !colour {
        return clean(cell);
    }
    let Some(start) = cell.find('m') else {
        return clean(cell);
    };
    let inner = &cell[start + 1..cell.len() - 4];
    format!("{}{}\x1b[0m", &cell[..=start], clean(inner))
}

/// Characters a terminal shows: colour escapes take no room.
fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

/// Columns padded to their widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| clean_keeping_colour(cell)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(visible_len(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - visible_len(cell))))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Live progress of a deployment: redrawn lines on a terminal, one line per event
/// otherwise, JSON lines with `--output json`.
pub(crate) struct Progress {
    output: Output,
    live: bool,
    colour: bool,
    names: Vec<String>,
    rows: Vec<(DeploymentStatus, usize)>,
    drawn: usize,
    last_draw: Option<Instant>,
}

/// Above this many environments the live display shows totals only.
const LIVE_ROWS: usize = 30;

impl Progress {
    pub(crate) fn new(output: Output, names: &[String]) -> Self {
        let live = output == Output::Human && std::io::stdout().is_terminal();
        Self {
            output,
            live,
            colour: colour_enabled(),
            names: names.to_vec(),
            rows: vec![(DeploymentStatus::Pending, 0); names.len()],
            drawn: 0,
            last_draw: None,
        }
    }

    pub(crate) fn event(&mut self, event: &DeploymentEvent) {
        if let Some(index) = self.names.iter().position(|n| *n == event.environment) {
            let row = &mut self.rows[index];
            row.0 = event.status;
            if event.migration.is_some() {
                row.1 += 1;
            }
        }
        match self.output {
            Output::Json => print_json(&json!({ "type": "event", "event": event })),
            Output::Human if self.live => {
                let due = self
                    .last_draw
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(50));
                if due {
                    self.draw();
                }
            }
            Output::Human => {
                let what = match &event.migration {
                    Some(version) => format!("applied {version}"),
                    None => event.status.to_string(),
                };
                println!("{} {}: {what}", event.at, event.environment);
            }
        }
    }

    fn draw(&mut self) {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        let mut lines = Vec::new();
        if self.names.len() <= LIVE_ROWS {
            let width = self.names.iter().map(String::len).max().unwrap_or(0);
            for (name, (status, applied)) in self.names.iter().zip(&self.rows) {
                let label = paint(&format!("{:<11}", status.to_string()), *status, self.colour);
                lines.push(format!("  {name:<width$}  {label}  {applied} migration(s)"));
            }
        }
        let count = |s: DeploymentStatus| self.rows.iter().filter(|r| r.0 == s).count();
        lines.push(format!(
            "  {} done, {} in progress, {} failed, {} refused, {} skipped, {} rolled back, {} waiting",
            count(DeploymentStatus::Success),
            count(DeploymentStatus::InProgress),
            count(DeploymentStatus::Failed),
            count(DeploymentStatus::Refused),
            count(DeploymentStatus::Skipped),
            count(DeploymentStatus::RolledBack),
            count(DeploymentStatus::Pending),
        ));
        for line in &lines {
            let _ = writeln!(out, "\x1b[2K{line}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
        self.last_draw = Some(Instant::now());
    }

    pub(crate) fn finish(&mut self) {
        if self.live {
            self.draw();
            println!();
        }
    }
}

pub(crate) fn report(report: &DeploymentReport, output: Output) {
    if output == Output::Json {
        print_typed("report", report);
        return;
    }
    let colour = colour_enabled();
    let rows: Vec<Vec<String>> = report
        .environments
        .iter()
        .map(|e| report_row(e, report.dry_run, colour))
        .collect();
    print!(
        "{}",
        table(
            &["ENVIRONMENT", "STATUS", "VERSION", "MIGRATIONS", "TIME"],
            &rows
        )
    );
    errors_and_refusal(report);
    if let Some(halted) = &report.halted {
        println!("{halted}");
    }
    if let Some(audit) = report
        .audit
        .as_ref()
        .filter(|a| a.dropped > 0 || a.failed_writes > 0)
    {
        println!(
            "warning: the journal lost records ({} dropped from a full queue, {} failed writes to {}); the deployment itself is unaffected",
            audit.dropped, audit.failed_writes, audit.store
        );
    }
    if let Some(hooks) = report.hooks.as_ref().filter(|h| !h.failed.is_empty()) {
        println!(
            "warning: the per-environment hook failed for {} of {} environments; the deployment itself is unaffected:",
            hooks.failed.len(),
            hooks.ran
        );
        for failure in hooks.failed.iter().take(10) {
            println!("  {}: {}", failure.environment, clean(&failure.message));
        }
        if hooks.failed.len() > 10 {
            println!(
                "  … and {} more (see --output json)",
                hooks.failed.len() - 10
            );
        }
    }
    println!(
        "{} ({} ms, deployment {})",
        summary(report),
        report.duration.as_millis(),
        report.deployment_id
    );
}

/// Each environment's error, then the gate's refusal (whose reasons name their environments,
/// so refused ones are not listed twice).
fn errors_and_refusal(report: &DeploymentReport) {
    for environment in &report.environments {
        if let Some(error) = &environment.error
            && !matches!(
                environment.status,
                DeploymentStatus::Skipped | DeploymentStatus::Refused
            )
        {
            let name = &environment.environment;
            let message = error
                .message
                .strip_prefix(&format!("{name}: "))
                .unwrap_or(&error.message);
            println!("  {name}: {}", clean(message));
        }
    }
    if let Some(refusal) = &report.refusal {
        println!(
            "refused by the {:?} gate before anything ran:",
            refusal.gate
        );
        for reason in &refusal.reasons {
            println!("  - {}", clean(reason));
        }
        if refusal.gate == Gate::Approval {
            println!(
                "  (approve with --approve ENV, repeatable, or --yes; on a terminal flotilla asks)"
            );
        }
    }
}

/// One environment's row of the report table.
fn report_row(e: &EnvironmentReport, dry_run: bool, colour: bool) -> Vec<String> {
    let version =
        |v: &Option<flotilla_core::Version>| v.as_ref().map_or("-".to_owned(), ToString::to_string);
    let (applied, rolled_back) = (e.applied.len(), e.rolled_back.len());
    let migrations = if dry_run {
        format!("would apply {}", e.pending.len())
    } else if !e.still_applied.is_empty() {
        format!(
            "{applied} applied, {rolled_back} rolled back, {} STILL APPLIED",
            e.still_applied.len()
        )
    } else if rolled_back == 0 {
        format!("{applied} applied")
    } else {
        format!("{applied} applied, {rolled_back} rolled back")
    };
    // A dry run changed nothing; its arrow points where the deploy would end.
    let after = if dry_run {
        e.planned_version()
    } else {
        e.version_after.clone()
    };
    vec![
        e.environment.clone(),
        paint(&e.status.to_string(), e.status, colour),
        format!("{} -> {}", version(&e.version_before), version(&after)),
        migrations,
        format!("{} ms", e.duration.as_millis()),
    ]
}

/// The report's last line: how the deployment ended.
fn summary(report: &DeploymentReport) -> String {
    let nothing = report.environments.iter().all(|e| e.applied.is_empty());
    match report.outcome {
        Outcome::Succeeded if nothing => "nothing to do: every environment is up to date".into(),
        Outcome::Succeeded => format!("deployed to {} environment(s)", report.environments.len()),
        Outcome::DryRun => "dry run: nothing was changed".into(),
        Outcome::Failed => {
            let failed = report
                .environments
                .iter()
                .filter(|e| e.status != DeploymentStatus::Success)
                .count();
            format!(
                "deployment failed: {failed} of {} environment(s) did not succeed",
                report.environments.len()
            )
        }
        Outcome::RolledBack => "deployment failed; its migrations were rolled back".into(),
        Outcome::RollbackFailed => {
            "deployment failed, and rolling it back failed: see STILL APPLIED above".into()
        }
        Outcome::Interrupted => {
            "deployment stopped by a signal: environments not yet started were skipped".into()
        }
        Outcome::Refused => "deployment refused; nothing was changed".into(),
        Outcome::Paused => format!(
            "deployment paused: {}; environments not yet started were skipped, what ran is kept \
             (finish it with `flotilla deploy --resume {}`)",
            report.paused.as_deref().unwrap_or("quiesced"),
            report.deployment_id
        ),
    }
}

/// One line of `flotilla status`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct StatusRow {
    pub(crate) environment: String,
    pub(crate) reachable: bool,
    pub(crate) version: Option<String>,
    pub(crate) pending: Option<usize>,
    pub(crate) drift: Option<String>,
    pub(crate) lock: Option<String>,
    pub(crate) error: Option<String>,
}

impl From<EnvironmentStatus> for StatusRow {
    fn from(status: EnvironmentStatus) -> Self {
        Self {
            environment: status.environment,
            reachable: status.reachable,
            version: status.version.map(|v| v.to_string()),
            pending: status.pending,
            drift: status.drift,
            lock: status
                .lock
                .map(|l| format!("{} since {}", l.owner, l.acquired_at)),
            error: status.error,
        }
    }
}

pub(crate) fn status(rows: &[StatusRow], output: Output) {
    if output == Output::Json {
        for row in rows {
            print_typed("status", row);
        }
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.environment.clone(),
                if r.reachable {
                    "yes".into()
                } else {
                    "NO".into()
                },
                r.version.clone().unwrap_or_else(|| "-".into()),
                r.pending.map_or_else(|| "-".into(), |p| p.to_string()),
                if r.drift.is_some() {
                    "DRIFT".into()
                } else {
                    "none".into()
                },
                r.lock.clone().unwrap_or_else(|| "free".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ENVIRONMENT",
                "REACHABLE",
                "VERSION",
                "PENDING",
                "DRIFT",
                "LOCK"
            ],
            &cells
        )
    );
    for row in rows {
        if let Some(problem) = row.error.as_ref().or(row.drift.as_ref()) {
            println!("  {}: {}", row.environment, clean(problem));
        }
    }
}

pub(crate) fn history(rows: &[AppliedMigration], output: Output) {
    if output == Output::Json {
        for row in rows {
            print_typed("history", row);
        }
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.version.to_string(),
                r.description.clone(),
                r.applied_at.clone().unwrap_or_default(),
                r.execution_time_ms
                    .map_or_else(String::new, |ms| format!("{ms} ms")),
                r.applied_by.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["VERSION", "DESCRIPTION", "APPLIED AT", "TOOK", "BY"],
            &cells
        )
    );
}
