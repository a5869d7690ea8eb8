//! Rehearsal: migrations proven on a scratch database before any target sees them — every up,
//! then every down (newest first, each leaving the schema as it found it), then every up
//! again — optionally on top of a copy of a real target's schema. What a backend finds is
//! reported here, naming file and line.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::{MigrationSet, Version};

use crate::target::Target;

/// What to rehearse.
#[derive(Clone, Debug)]
pub struct RehearsalPlan {
    /// The migrations directory.
    pub migrations: Arc<MigrationSet>,
    /// Rehearse only these versions (in order), on top of the base; `None`: every migration.
    pub only: Option<Vec<Version>>,
    /// A real target whose schema — definitions only, no data — the scratch database starts
    /// from. Read, never written.
    pub base: Option<Target>,
}

impl RehearsalPlan {
    /// Every migration of `migrations`, on an empty scratch database.
    pub fn all(migrations: Arc<MigrationSet>) -> Self {
        Self {
            migrations,
            only: None,
            base: None,
        }
    }
}

/// What a rehearsal found wrong, if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rehearsal {
    /// Migrations rehearsed.
    pub rehearsed: usize,
    /// Problems, in the order found.
    pub findings: Vec<RehearsalFinding>,
    /// How long it took.
    #[serde(
        rename = "duration_ms",
        serialize_with = "crate::util::serialize_millis"
    )]
    pub duration: Duration,
}

impl Rehearsal {
    /// Whether nothing was wrong.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }
}

/// One problem a rehearsal found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RehearsalFinding {
    /// The migration.
    pub version: Version,
    /// The file (the down file of a pair, for a down).
    pub file: PathBuf,
    /// The line, when the problem has one.
    pub line: Option<usize>,
    /// What kind of problem.
    pub problem: Problem,
    /// The database's message, or what differs.
    pub detail: String,
}

impl fmt::Display for RehearsalFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(
            f,
            ": migration {} {}: {}",
            self.version, self.problem, self.detail
        )
    }
}

/// The kinds of problem a rehearsal finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The database's parser rejects a statement.
    Syntax,
    /// The up section failed.
    UpFailed,
    /// The down section failed.
    DownFailed,
    /// After the down, the schema is not what it was before the up.
    DownLeavesSchema,
    /// The up failed when applied again after its down.
    NotRerunnable,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Syntax => "does not parse",
            Problem::UpFailed => "fails going up",
            Problem::DownFailed => "fails going down",
            Problem::DownLeavesSchema => "does not undo itself going down",
            Problem::NotRerunnable => "fails going up again after its down",
        })
    }
}
