//! The runner seam's error: variants a caller can act on.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_core::{DriftError, Version};

use crate::lock::LockInfo;

/// A foreign error kept as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`RunnerError`] as the default error.
pub type Result<T, E = RunnerError> = std::result::Result<T, E>;

/// Why a runner could not do what was asked on a target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// Another deployment holds a live lease on the target's lock.
    #[error(
        "{environment}: lock held by {} since {}; gave up after waiting {}ms (the lease expires at {})",
        holder.owner, holder.acquired_at, waited.as_millis(), holder.expires_at
    )]
    LockHeld {
        /// The target.
        environment: String,
        /// Who holds it.
        holder: LockInfo,
        /// How long this caller waited.
        waited: Duration,
    },
    /// Our lease was lost (expired and taken over, broken, or not renewable for a whole lease)
    /// while we thought we held it. Nothing further was applied.
    #[error(
        "{environment}: the migration lock was lost (its lease was taken over, broken, or could not be renewed in time); nothing further was applied"
    )]
    LockLost {
        /// The target.
        environment: String,
    },
    /// A revert would leave a newer migration applied on top of an older one reverted.
    #[error(
        "{environment}: cannot revert {version} while {newer}, which is newer, stays applied (revert newest first)"
    )]
    RevertOrder {
        /// The target.
        environment: String,
        /// The version asked to revert.
        version: Version,
        /// A newer applied version the revert would leave behind.
        newer: Version,
    },
    /// A version a plan names is not applied on the target.
    #[error("{environment}: {version} is not applied here")]
    NotApplied {
        /// The target.
        environment: String,
        /// The version.
        version: Version,
    },
    /// History changed under a revert: the row of a version being reverted was already gone
    /// when its revert ran (someone else reverted it with a stale view of ours, or we of theirs).
    #[error(
        "{environment}: the history row of {version} was gone when its revert ran (reverted by someone else meanwhile); nothing was reverted twice"
    )]
    AlreadyReverted {
        /// The target.
        environment: String,
        /// The version.
        version: Version,
    },
    /// A request's reply never came (lost connection, timeout) and history could not be
    /// read to learn what committed. A rerun finds out: each migration is recorded atomically.
    #[error(
        "{environment}: the outcome of applying {} is unknown (the reply was lost and history could not be read back: {source}); rerun to finish, each migration commits at most once",
        list(versions)
    )]
    OutcomeUnknown {
        /// The target.
        environment: String,
        /// The migrations whose fate is unknown.
        versions: Vec<Version>,
        /// Why history could not be read.
        #[source]
        source: Box<RunnerError>,
    },
    /// The target did not answer in time.
    #[error("{environment}: {endpoint} did not answer {what} within {}", flotilla_core::format_duration(*after))]
    Timeout {
        /// The target.
        environment: String,
        /// The (redacted) URL.
        endpoint: String,
        /// What was asked (`a connection`, `the request`, …).
        what: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// `execute_migration` was called without holding the target's lock.
    #[error(
        "{environment}: refusing to migrate without holding the target's lock (acquire_lock first)"
    )]
    NotLocked {
        /// The target.
        environment: String,
    },
    /// History and the migrations directory disagree.
    #[error("{environment}: {source}")]
    Drift {
        /// The target.
        environment: String,
        /// What disagrees.
        #[source]
        source: DriftError,
    },
    /// A migration to revert has no down section.
    #[error("{environment}: migration {version} ({}) has no down section and cannot be reverted", file.display())]
    NoDownSection {
        /// The target.
        environment: String,
        /// The migration.
        version: Version,
        /// Its file.
        file: PathBuf,
    },
    /// A statement failed; the migration's transaction was rolled back.
    #[error(
        "{environment}: migration {version} failed at statement {statement} ({}:{line}): {message}; the migration was rolled back",
        file.display()
    )]
    StatementFailed {
        /// The target.
        environment: String,
        /// The failing migration.
        version: Version,
        /// The file holding the statement.
        file: PathBuf,
        /// 1-based index of the statement within its section.
        statement: usize,
        /// Line of the statement in `file`.
        line: usize,
        /// The database's message.
        message: String,
    },
    /// The target could not be reached.
    #[error("{environment}: cannot reach {endpoint}: {source}")]
    Unreachable {
        /// The target.
        environment: String,
        /// The (redacted) URL.
        endpoint: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// Signing in was refused.
    #[error(
        "{environment}: sign-in as {username} ({scope} user) failed at {endpoint}: {source}; check the user name and password, and that the {scope} exists"
    )]
    Authentication {
        /// The target.
        environment: String,
        /// The (redacted) URL.
        endpoint: String,
        /// The user.
        username: String,
        /// Where the user is defined: `root`, ``namespace `ns` ``, ``database `ns/db` ``.
        scope: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The namespace or database does not exist (or the user cannot see it).
    #[error("{environment}: {what} `{name}` does not exist at {endpoint}")]
    NotFound {
        /// The target.
        environment: String,
        /// The (redacted) URL.
        endpoint: String,
        /// `namespace` or `database`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// No backend serves the target's URL.
    #[error("{environment}: no backend for URL `{url}` (supported schemes: {supported})")]
    UnsupportedUrl {
        /// The target.
        environment: String,
        /// The (redacted) URL.
        url: String,
        /// The schemes that are served.
        supported: String,
    },
    /// Write conflicts persisted through every retry.
    #[error(
        "{environment}: gave up after {attempts} attempts on conflicting concurrent writes: {source}"
    )]
    Conflict {
        /// The target.
        environment: String,
        /// Attempts made.
        attempts: u32,
        /// The last conflict.
        #[source]
        source: BoxError,
    },
    /// Some migrations were applied (committed) before a later one failed.
    #[error("{source} (already applied in this run: {})", list(applied))]
    Interrupted {
        /// Versions committed before the failure, in order.
        applied: Vec<Version>,
        /// The failure.
        #[source]
        source: Box<RunnerError>,
    },
    /// The backend cannot do this (say, rehearse migrations).
    #[error("this backend does not support {what}")]
    Unsupported {
        /// What was asked.
        what: &'static str,
    },
    /// Any other backend failure.
    #[error("{environment}: {source}")]
    Backend {
        /// The target.
        environment: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

fn list(versions: &[Version]) -> String {
    versions
        .iter()
        .map(Version::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A coarse class of error, stable for reports and JSON output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// An applied migration's file changed.
    ChecksumMismatch,
    /// History has rows without files, or pending migrations are out of order.
    Drift,
    /// The lock was held by someone else for the whole wait.
    LockTimeout,
    /// The lock was lost while held.
    LockLost,
    /// Connect or namespace/database lookup failed, or the target did not answer in time.
    TargetUnreachable,
    /// The target refused the credentials.
    AuthFailed,
    /// The configuration cannot serve this target (no backend for its URL, say).
    Config,
    /// The fleet was quiesced before this target started.
    Quiesced,
    /// A migration statement failed.
    StatementFailed,
    /// A gate (health, approval, destructive, …) refused the deployment.
    RefusedByGate,
    /// A reply was lost and what committed could not be learned; a rerun finishes.
    OutcomeUnknown,
    /// The deployment was stopped (a signal, a cancelled token) before this target ran.
    Cancelled,
    /// Anything else.
    Internal,
}

impl ErrorClass {
    /// The class in the vocabulary of migration tools' audit trails (go-bricks'): `config`,
    /// `connection`, `auth`, `lock`, `migration`, `quiesce`, `unknown` — and flotilla's own
    /// `drift`, `gate` and `cancelled`.
    pub fn category(self) -> &'static str {
        match self {
            ErrorClass::Config => "config",
            ErrorClass::TargetUnreachable => "connection",
            ErrorClass::AuthFailed => "auth",
            ErrorClass::LockTimeout | ErrorClass::LockLost => "lock",
            ErrorClass::StatementFailed => "migration",
            ErrorClass::Quiesced => "quiesce",
            ErrorClass::ChecksumMismatch | ErrorClass::Drift => "drift",
            ErrorClass::RefusedByGate => "gate",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::OutcomeUnknown | ErrorClass::Internal => "unknown",
        }
    }
}

impl RunnerError {
    /// The failure itself, looking through [`RunnerError::Interrupted`].
    pub fn cause(&self) -> &RunnerError {
        match self {
            RunnerError::Interrupted { source, .. } => source.cause(),
            other => other,
        }
    }

    /// Versions committed before the failure (empty unless [`RunnerError::Interrupted`]).
    pub fn applied_before_failure(&self) -> &[Version] {
        match self {
            RunnerError::Interrupted { applied, .. } => applied,
            _ => &[],
        }
    }

    /// The error's class.
    pub fn class(&self) -> ErrorClass {
        match self.cause() {
            RunnerError::LockHeld { .. } => ErrorClass::LockTimeout,
            RunnerError::LockLost { .. } | RunnerError::NotLocked { .. } => ErrorClass::LockLost,
            RunnerError::Drift {
                source: DriftError::ChecksumMismatch { .. },
                ..
            } => ErrorClass::ChecksumMismatch,
            RunnerError::Drift { .. }
            | RunnerError::RevertOrder { .. }
            | RunnerError::NotApplied { .. }
            | RunnerError::AlreadyReverted { .. } => ErrorClass::Drift,
            RunnerError::OutcomeUnknown { .. } => ErrorClass::OutcomeUnknown,
            RunnerError::StatementFailed { .. } => ErrorClass::StatementFailed,
            RunnerError::Unreachable { .. }
            | RunnerError::NotFound { .. }
            | RunnerError::Timeout { .. } => ErrorClass::TargetUnreachable,
            RunnerError::Authentication { .. } => ErrorClass::AuthFailed,
            RunnerError::UnsupportedUrl { .. } => ErrorClass::Config,
            _ => ErrorClass::Internal,
        }
    }

    /// Wraps `self` as [`RunnerError::Interrupted`] when `applied` is not empty.
    pub fn after(self, applied: Vec<Version>) -> Self {
        if applied.is_empty() {
            self
        } else {
            RunnerError::Interrupted {
                applied,
                source: Box::new(self),
            }
        }
    }
}
