//! Turning SurrealDB's errors into ones a caller can act on.

use flotilla_core::AuthLevel;
use flotilla_runner::{RunnerError, TenantContext};
use surrealdb::types::{NotFoundError, QueryError};

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

/// Maps an error from connecting, signing in or querying `tenant`.
pub(crate) fn classify(tenant: &TenantContext, error: surrealdb::Error) -> RunnerError {
    let environment = tenant.environment.clone();
    let endpoint = tenant.connection.redacted_url();
    match error.not_found_details() {
        Some(NotFoundError::Namespace { .. }) => {
            return RunnerError::NotFound {
                environment,
                endpoint,
                what: "namespace",
                name: tenant.connection.namespace.clone(),
            };
        }
        Some(NotFoundError::Database { .. }) => {
            return RunnerError::NotFound {
                environment,
                endpoint,
                what: "database",
                name: tenant.connection.database.clone(),
            };
        }
        _ => {}
    }
    if error.is_connection() {
        return RunnerError::Unreachable {
            environment,
            endpoint,
            source: Box::new(error),
        };
    }
    if error.is_not_allowed()
        && let Some(credentials) = &tenant.connection.credentials
    {
        return RunnerError::Authentication {
            environment,
            endpoint,
            username: credentials.username.clone(),
            scope: auth_scope(tenant),
            source: Box::new(error),
        };
    }
    RunnerError::Backend {
        environment,
        source: Box::new(error),
    }
}

/// Where the target's user is defined, for messages.
pub(crate) fn auth_scope(tenant: &TenantContext) -> String {
    let connection = &tenant.connection;
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
