//! flotilla's vocabulary: migrations and how they are read from files, versions, checksums,
//! the SurrealQL statement splitter, connection settings that never print their secrets, and
//! the rules that compare a target's history with the migrations directory (drift, pending),
//! the lint of destructive statements, deployment statuses and events, and configuration
//! files with `${VAR}` interpolation.
//!
//! Invariant: this crate does no network IO and has no async runtime; everything here is
//! plain data and pure functions, so every other crate can share it.

pub mod config;
mod connection;
pub mod duration;
mod error;
mod history;
mod lexer;
pub mod lint;
mod migration;
mod split;
mod status;
mod version;

pub use connection::{AuthLevel, Connection, Credentials, PasswordSource, Secret, redact_url};
pub use duration::{MAX_DURATION, format_duration, parse_duration};
pub use error::{DriftError, Error, Problem, Result};
pub use history::{AppliedMigration, DriftPolicy, current_version, pending};
pub use migration::{Migration, MigrationSet, sha256_hex};
pub use split::{SplitError, Statement, split_statements};
pub use status::{DeploymentEvent, DeploymentStatus, rfc3339};
pub use version::Version;
