//! Plan-level errors: the only ones `deploy` returns as `Err`.

use flotilla_strategies::StrategyError;

/// A plan that cannot be built or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// An environment name has characters flotilla does not accept.
    #[error(
        "invalid environment name `{0}`: use letters, digits, `-`, `_` or `.`, at most 64 characters"
    )]
    InvalidEnvironmentName(String),
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

/// The registered name closest to `name`, if any is within a small edit distance.
pub(crate) fn nearest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(2))
        .min()
        .map(|(_, candidate)| candidate.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["staging", "production", "dev"];
        assert_eq!(nearest("stagin", names), Some("staging".into()));
        assert_eq!(nearest("prodution", names), Some("production".into()));
        assert_eq!(nearest("qa", names), None);
    }
}
