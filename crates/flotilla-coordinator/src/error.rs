//! Plan-level errors: the only ones `deploy` returns as `Err`.

use flotilla_strategies::StrategyError;

/// A plan that cannot be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// An environment name has characters flotilla does not accept.
    #[error(transparent)]
    InvalidEnvironmentName(#[from] flotilla_core::config::InvalidEnvironmentName),
    /// A requested environment is not registered.
    #[error("unknown environment `{name}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownEnvironment {
        /// The requested name.
        name: String,
        /// The closest registered name, if one is close.
        suggestion: Option<String>,
    },
    /// An environment was requested twice.
    #[error("environment `{0}` is requested twice")]
    DuplicateEnvironment(String),
    /// The selection matched no environment.
    #[error("no environment selected{0}")]
    EmptySelection(String),
    /// No migrations were given.
    #[error("the plan has no migrations")]
    NoMigrations,
    /// A strategy parameter is wrong, or the strategy is unknown.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// Two environments of the plan are one database: deploying to both would be deploying
    /// twice to it.
    #[error(
        "environments `{first}` and `{second}` point at the same database ({database}); a plan may name each database once"
    )]
    SameDatabase {
        /// The first environment.
        first: String,
        /// The second.
        second: String,
        /// The database they share (server, namespace, database; no credentials).
        database: String,
    },
    /// A wait, lease or timeout out of range.
    #[error("{parameter} must be {expected}, got {got}")]
    InvalidParameter {
        /// The setting.
        parameter: &'static str,
        /// Its valid range.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// A password file or command gave nothing usable: nothing ran.
    #[error(transparent)]
    Password(#[from] crate::passwords::PasswordError),
    /// The deployment's task ended abnormally (it panicked); leases it held expire.
    #[error("the deployment stopped unexpectedly: {0}")]
    Internal(String),
    /// The control store cannot be used (unreachable at the start, the audit log cannot be
    /// opened): nothing ran.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// No backend serves an environment's URL.
    #[error(transparent)]
    Backend(#[from] flotilla_runner::RunnerError),
}

pub(crate) use flotilla_core::config::nearest;
