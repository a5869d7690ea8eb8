//! Errors of the vocabulary crate: reading migration files and reconciling history.

use std::fmt;
use std::path::PathBuf;

use crate::split::SplitError;
use crate::version::Version;

/// `Result` with [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A migrations directory or file that flotilla cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory or a file in it could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The migrations path exists but is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path given as migrations directory.
        path: PathBuf,
    },
    /// A file is not a valid migration; `line` points at the culprit when there is one.
    #[error("{}{}: {problem}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    InvalidMigration {
        /// The migration file.
        path: PathBuf,
        /// 1-based line of the problem, if it has one.
        line: Option<usize>,
        /// What is wrong.
        problem: Problem,
    },
    /// Two files claim the same version.
    #[error("version {version} is used by both {} and {}", first.display(), second.display())]
    DuplicateVersion {
        /// The shared version.
        version: Version,
        /// The first file with it.
        first: PathBuf,
        /// The second file with it.
        second: PathBuf,
    },
}

/// What is wrong with a migration file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The file name is not `<version>_<name>.surql` (or `.up.surql` / `.down.surql`).
    FileName,
    /// The file has an `-- @word` marker flotilla does not know.
    UnknownMarker(String),
    /// The same section marker appears twice.
    DuplicateSection(&'static str),
    /// SurrealQL before the first section marker.
    StatementOutsideSection,
    /// A statement inside the `-- @metadata` section.
    StatementInMetadata,
    /// The up section has no statement.
    EmptyUp,
    /// The `version:` metadata disagrees with the file name.
    VersionMismatch {
        /// From the file name.
        file_name: Version,
        /// From `-- version:`.
        metadata: String,
    },
    /// A `depends_on` entry names no migration of the directory.
    UnknownDependency(String),
    /// A `.down.surql` file without its `.up.surql`.
    DownWithoutUp,
    /// A `BEGIN`, `COMMIT` or `CANCEL`: flotilla wraps each migration in its own transaction.
    TransactionStatement(String),
    /// A top-level `RETURN`, `USE` or `OPTION`: it would end the migration's transaction early
    /// or send the rest of it (and its history row) somewhere else.
    BreaksTransaction(String),
    /// The file is not valid UTF-8.
    NotUtf8,
    /// The SurrealQL could not be split into statements.
    Split(SplitError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::FileName => f.write_str(
                "file name is not `<version>_<name>.surql` (version: digit groups like 0001 or 20260101_120000)",
            ),
            Problem::UnknownMarker(m) => write!(
                f,
                "unknown section marker `-- @{m}` (expected `-- @up`, `-- @down` or `-- @metadata`)"
            ),
            Problem::DuplicateSection(s) => write!(f, "section `-- @{s}` appears twice"),
            Problem::StatementOutsideSection => {
                f.write_str("statement before the first section marker (`-- @up`)")
            }
            Problem::StatementInMetadata => f.write_str(
                "statement inside the `-- @metadata` section (only `-- key: value` lines belong there)",
            ),
            Problem::EmptyUp => f.write_str("the up section has no statement"),
            Problem::VersionMismatch {
                file_name,
                metadata,
            } => write!(
                f,
                "metadata `version: {metadata}` disagrees with the file name's version {file_name}"
            ),
            Problem::UnknownDependency(d) => {
                write!(f, "depends_on names {d}, which is not a migration in this directory")
            }
            Problem::DownWithoutUp => {
                f.write_str("down file has no matching `.up.surql` file")
            }
            Problem::TransactionStatement(keyword) => write!(
                f,
                "`{keyword}` is not allowed: flotilla runs each migration in its own transaction"
            ),
            Problem::BreaksTransaction(keyword) => {
                let why = match keyword.as_str() {
                    "RETURN" => "it ends the migration's transaction early, so its history row would not be written and it would run again on the next deploy",
                    "USE" => "it would send the rest of the migration, and its history row, to another namespace or database",
                    _ => "it changes settings of the session that every later request shares",
                };
                write!(
                    f,
                    "a top-level `{keyword}` is not allowed in a migration: {why} (inside a block or a function it is fine)"
                )
            }
            Problem::NotUtf8 => f.write_str("file is not valid UTF-8"),
            Problem::Split(e) => write!(f, "{e}"),
        }
    }
}

/// A target's history disagrees with the migrations directory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriftError {
    /// An applied migration's file changed since it was applied.
    #[error(
        "migration {version} ({}) changed after it was applied: history has checksum {}, the file has {}",
        file.display(), short(recorded), short(actual)
    )]
    ChecksumMismatch {
        /// The drifted migration.
        version: Version,
        /// Its file.
        file: PathBuf,
        /// Checksum in the history table.
        recorded: String,
        /// Checksum of the file now.
        actual: String,
    },
    /// History records a migration that has no file.
    #[error(
        "migration {version} ({description}) is recorded as applied but has no file in the migrations directory (allow missing files to proceed)"
    )]
    MissingFile {
        /// The recorded version.
        version: Version,
        /// Its recorded description.
        description: String,
    },
    /// A pending migration is older than the newest applied one.
    #[error(
        "migration {version} ({}) is pending but older than the newest applied migration {newest_applied} (allow out-of-order migrations to apply it)",
        file.display()
    )]
    OutOfOrder {
        /// The pending migration.
        version: Version,
        /// Its file.
        file: PathBuf,
        /// The newest version in history.
        newest_applied: Version,
    },
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}
