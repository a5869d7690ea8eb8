//! Turning SurrealDB's errors into ones a caller can act on, with no secret in them.

use std::fmt;

use flotilla_core::AuthLevel;
use flotilla_runner::{BoxError, RunnerError, Target};
use surrealdb::types::{NotFoundError, QueryError};

/// A driver's message with the target's secrets masked ([`flotilla_core::Connection::scrub`]).
/// The driver's own error is not kept: its text (and its `Debug`) may quote a URL with a
/// password — the SDK's "Invalid URL" does.
#[derive(Debug)]
pub(crate) struct DriverError(String);

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DriverError {}

/// `error` as a source that is safe to print.
pub(crate) fn driver(target: &Target, error: &surrealdb::Error) -> BoxError {
    Box::new(DriverError(target.connection.scrub(&error.to_string())))
}

/// Whether a transaction's `COMMIT` itself failed (not a statement in it): its result says
/// "Cannot COMMIT: …" and carries the real cause, while the statements before it only say
/// they were not executed.
pub(crate) fn is_commit_failure(error: &surrealdb::Error) -> bool {
    error.message().starts_with("Cannot COMMIT")
}

/// Whether SurrealDB says it cannot tell whether a commit was applied: only history can.
pub(crate) fn is_outcome_unknown(error: &surrealdb::Error) -> bool {
    let message = error.message();
    message.contains("commit outcome is unknown")
}

/// Whether SurrealDB asks for the transaction to be retried (a write conflict).
pub(crate) fn is_conflict(error: &surrealdb::Error) -> bool {
    if matches!(error.query_details(), Some(QueryError::TransactionConflict)) {
        return true;
    }
    let message = error.message().to_ascii_lowercase();
    message.contains("retry the transaction")
        || message.contains("transaction conflict")
        || message.contains("resource busy")
        || message.contains("write conflict")
}

/// Whether the error only says the statement did not run because another one failed.
pub(crate) fn is_not_executed(error: &surrealdb::Error) -> bool {
    if is_commit_failure(error) {
        return false;
    }
    matches!(error.query_details(), Some(QueryError::NotExecuted))
        || error
            .message()
            .contains("not executed due to a failed transaction")
        || error
            .message()
            .contains("not executed due to a cancelled transaction")
}

/// Whether a table (or namespace/database) is simply not there yet.
pub(crate) fn is_missing_table(error: &surrealdb::Error) -> bool {
    matches!(error.not_found_details(), Some(NotFoundError::Table { .. }))
}

/// Maps an error from connecting, signing in or querying `target`.
pub(crate) fn classify(target: &Target, error: surrealdb::Error) -> RunnerError {
    let environment = target.environment.clone();
    let endpoint = target.connection.redacted_url();
    match error.not_found_details() {
        Some(NotFoundError::Namespace { .. }) => {
            return RunnerError::NotFound {
                environment,
                endpoint,
                what: "namespace",
                name: target.connection.namespace.clone(),
            };
        }
        Some(NotFoundError::Database { .. }) => {
            return RunnerError::NotFound {
                environment,
                endpoint,
                what: "database",
                name: target.connection.database.clone(),
            };
        }
        _ => {}
    }
    let source = driver(target, &error);
    if error.is_connection() {
        return RunnerError::Unreachable {
            environment,
            endpoint,
            source,
        };
    }
    if error.is_not_allowed()
        && let Some(credentials) = &target.connection.credentials
    {
        return RunnerError::Authentication {
            environment,
            endpoint,
            username: credentials.username.clone(),
            scope: auth_scope(target),
            source,
        };
    }
    RunnerError::Backend {
        environment,
        source,
    }
}

/// Where the target's user is defined, for messages.
pub(crate) fn auth_scope(target: &Target) -> String {
    let connection = &target.connection;
    match connection.credentials.as_ref().map(|c| c.level) {
        Some(AuthLevel::Namespace) => format!("namespace `{}`", connection.namespace),
        Some(AuthLevel::Database) => {
            format!(
                "database `{}/{}`",
                connection.namespace, connection.database
            )
        }
        _ => "root".to_owned(),
    }
}
