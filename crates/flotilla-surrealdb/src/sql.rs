//! The SurrealQL flotilla sends, in one place.

use std::time::Duration;

use flotilla_core::Statement;

/// History table name, shared with the surql toolkit.
pub(crate) const HISTORY_TABLE: &str = "_migration_history";

/// Thrown by the fence when the lease is no longer ours.
pub(crate) const LOCK_LOST: &str = "flotilla: migration lock lost";

/// Defines the history table as the surql toolkit does, plus flotilla's optional fields.
/// `IF NOT EXISTS` keeps an adopted surql table (and its rows) as it is.
const DEFINE_HISTORY: &[&str] = &[
    "DEFINE TABLE IF NOT EXISTS _migration_history SCHEMAFULL",
    "DEFINE FIELD IF NOT EXISTS version ON TABLE _migration_history TYPE string",
    "DEFINE FIELD IF NOT EXISTS description ON TABLE _migration_history TYPE string",
    "DEFINE FIELD IF NOT EXISTS applied_at ON TABLE _migration_history TYPE datetime",
    "DEFINE FIELD IF NOT EXISTS checksum ON TABLE _migration_history TYPE string",
    "DEFINE FIELD IF NOT EXISTS execution_time_ms ON TABLE _migration_history TYPE option<int>",
    "DEFINE FIELD IF NOT EXISTS applied_by ON TABLE _migration_history TYPE option<string>",
    "DEFINE FIELD IF NOT EXISTS deployment_id ON TABLE _migration_history TYPE option<string>",
    "DEFINE INDEX IF NOT EXISTS version_idx ON TABLE _migration_history COLUMNS version UNIQUE",
];

/// Reads history; datetimes come back as strings.
pub(crate) const SELECT_HISTORY: &str = "SELECT version, description, checksum, \
     <string> applied_at AS applied_at, execution_time_ms, applied_by, deployment_id \
     FROM _migration_history";

/// The current lease (or NONE), with expiry judged by the database's clock.
const SELECT_LEASE: &str = "(SELECT host, pid, deployment_id, token, \
     <string> acquired_at AS acquired_at, <string> expires_at AS expires_at, \
     expires_at <= time::now() AS expired FROM ONLY _migration_lock:lock)";

/// Health: the database's definitions, the current lease and the history, in one request.
pub(crate) fn health() -> String {
    format!("INFO FOR DB; {SELECT_LEASE}; {SELECT_HISTORY};")
}

/// Takes the lease if it is free or expired, in one transaction, and — when taken — reads
/// the history in that same transaction, so the caller need not ask again. The history table
/// is defined here too (`IF NOT EXISTS`): a target being locked for migrating is one being
/// initialised. The request's body has [`ACQUIRE_STATEMENTS`] statements; the last returns
/// `{ acquired, previous, current, history }`.
pub(crate) fn acquire(lease: Duration) -> String {
    format!(
        "BEGIN TRANSACTION;
DEFINE TABLE IF NOT EXISTS _migration_lock SCHEMALESS;
{defines};
LET $fl_cur = {SELECT_LEASE};
LET $fl_free = $fl_cur = NONE OR $fl_cur.expired = true;
IF $fl_free {{
    UPSERT _migration_lock:lock CONTENT {{
        token: $fl_token, host: $fl_host, pid: $fl_pid, deployment_id: $fl_deployment,
        acquired_at: time::now(), expires_at: time::now() + {ms}ms
    }} RETURN NONE;
}};
LET $fl_history = IF $fl_free {{ {SELECT_HISTORY} }} ELSE {{ NONE }};
RETURN {{ acquired: $fl_free, previous: $fl_cur, current: {SELECT_LEASE}, history: $fl_history }};
COMMIT TRANSACTION;",
        defines = DEFINE_HISTORY.join(";\n"),
        ms = lease.as_millis()
    )
}

/// Statements in [`acquire`]'s body: the lock table, the history definitions, two LETs, the
/// IF, the history LET and the RETURN.
pub(crate) const ACQUIRE_STATEMENTS: usize = 1 + DEFINE_HISTORY.len() + 5;

/// Extends our lease; returns the token when it is still ours.
pub(crate) fn renew(lease: Duration) -> String {
    format!(
        "UPDATE _migration_lock:lock SET expires_at = time::now() + {}ms \
         WHERE token = $fl_token RETURN VALUE token;",
        lease.as_millis()
    )
}

/// Removes whatever lease there is; returns it.
pub(crate) fn break_lock() -> String {
    format!(
        "DEFINE TABLE IF NOT EXISTS _migration_lock SCHEMALESS; LET $fl_cur = {SELECT_LEASE}; DELETE _migration_lock:lock; RETURN $fl_cur;"
    )
}

/// Removes our lease; returns its token when it was still ours.
pub(crate) const RELEASE: &str =
    "DELETE _migration_lock:lock WHERE token = $fl_token RETURN BEFORE;";

/// One migration as a single transaction, laid out so results map back to statements.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub(crate) text: String,
    /// Statements before the migration's own (fence, timer, history definitions).
    pub(crate) prelude: usize,
    /// The migration's statement count.
    pub(crate) statements: usize,
    /// Statements after them (history write).
    pub(crate) postlude: usize,
}

/// Which way a transaction moves history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HistoryChange {
    /// Record the migration as applied.
    Record,
    /// Remove its row.
    Remove,
}

/// `statements` plus the history change, fenced by our lease token, in one transaction.
/// Variables: `$fl_token`, `$fl_id`, `$fl_version`, `$fl_description`, `$fl_checksum`,
/// `$fl_applied_by`, `$fl_deployment`.
pub(crate) fn migration(
    statements: &[Statement],
    change: HistoryChange,
    define_history: bool,
) -> Transaction {
    let mut prelude = vec![
        format!(
            "IF $fl_token = NONE OR _migration_lock:lock.token != $fl_token {{ THROW \"{LOCK_LOST}\" }}"
        ),
        "LET $fl_started = time::now()".to_owned(),
    ];
    if define_history {
        prelude.extend(DEFINE_HISTORY.iter().map(|s| (*s).to_owned()));
    }
    let postlude = match change {
        HistoryChange::Record => "CREATE type::record('_migration_history', $fl_id) SET \
             version = $fl_version, description = $fl_description, checksum = $fl_checksum, \
             applied_at = time::now(), \
             execution_time_ms = duration::millis(time::now() - $fl_started), \
             applied_by = $fl_applied_by, deployment_id = $fl_deployment RETURN NONE"
            .to_owned(),
        HistoryChange::Remove => {
            "DELETE _migration_history WHERE version = $fl_version RETURN NONE".to_owned()
        }
    };
    let mut text = String::from("BEGIN TRANSACTION;\n");
    for statement in &prelude {
        text.push_str(statement);
        text.push_str(";\n");
    }
    for statement in statements {
        text.push_str(&statement.text);
        text.push_str(";\n");
    }
    text.push_str(&postlude);
    text.push_str(";\nCOMMIT TRANSACTION;");
    Transaction {
        text,
        prelude: prelude.len(),
        statements: statements.len(),
        postlude: 1,
    }
}

/// The history record id for a version, as the surql toolkit derives it.
pub(crate) fn record_id(version: &str) -> String {
    version
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
