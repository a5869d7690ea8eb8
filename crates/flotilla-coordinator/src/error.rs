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
    /// A strategy parameter is wrong.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// No backend serves an environment's URL.
    #[error(transparent)]
    Backend(#[from] flotilla_runner::RunnerError),
}

pub(crate) use flotilla_core::config::nearest;
