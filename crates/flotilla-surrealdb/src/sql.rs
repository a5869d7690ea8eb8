//! The SurrealQL flotilla sends, in one place.

use std::time::Duration;

use flotilla_core::Statement;

/// History table name, shared with the surql toolkit.
pub(crate) const HISTORY_TABLE: &str = "_migration_history";

/// Thrown by the fence when the lease is no longer ours.
pub(crate) const LOCK_LOST: &str = "flotilla: migration lock lost";

/// Defines the history table: schemaless, each row keyed by its version (so a version is
/// recorded at most once without a unique index to maintain). A table the surql toolkit
/// defined (`SCHEMAFULL`, with its own fields and index) is kept as it is (`IF NOT EXISTS`)
/// and gains flotilla's two extra fields, which it would otherwise refuse.
const DEFINE_HISTORY: &[&str] = &[
    "DEFINE TABLE IF NOT EXISTS _migration_history SCHEMALESS",
    "DEFINE FIELD IF NOT EXISTS applied_by ON TABLE _migration_history TYPE option<string>",
    "DEFINE FIELD IF NOT EXISTS deployment_id ON TABLE _migration_history TYPE option<string>",
];

/// Reads history; datetimes come back as strings.
pub(crate) const SELECT_HISTORY: &str = "SELECT version, description, checksum, \
     <string> applied_at AS applied_at, execution_time_ms, applied_by, deployment_id \
     FROM _migration_history";

/// The lock is two records. `_migration_lock:lock` says who holds it (token, host, pid,
/// deployment, since when) and is written only by those who take, release or break the lock
/// — and by every migration transaction under it, so that a takeover committed while a
/// migration runs makes that migration conflict and roll back: a deployer whose lease was
/// taken over commits nothing more, not even a migration it had already started.
/// `_migration_lease:⟨token⟩` holds the lease's expiry and is what a heartbeat renews, so
/// renewals never conflict with migrations. (A lock record written before the two were split
/// carries its own `expires_at`, which counts when there is no lease record.)
const LEASE_EXPIRY: &str = "(type::record('_migration_lease', token).expires_at ?? expires_at)";

/// The current lock (or NONE), with expiry judged by the database's clock.
fn select_lease() -> String {
    format!(
        "(SELECT host, pid, deployment_id, token, \
         <string> acquired_at AS acquired_at, <string> {LEASE_EXPIRY} AS expires_at, \
         {LEASE_EXPIRY} <= time::now() AS expired FROM ONLY _migration_lock:lock)"
    )
}

/// Health: the current lease and the history, in one request. A missing history table
/// (an error for the second statement) means the target is not initialised.
pub(crate) fn health() -> String {
    format!("{}; {SELECT_HISTORY};", select_lease())
}

/// What a lock request may take for granted about the target's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Definitions {
    /// The history table exists (a missing one fails the request, and the caller asks
    /// again with [`Definitions::All`]).
    None,
    /// The health probe found no history table: a target never migrated. The request is
    /// [`take_fresh`]'s; when it fails the caller asks again with [`Definitions::All`],
    /// which handles every case.
    Fresh,
    /// Every table if missing, and flotilla's two fields on a history table another tool
    /// may have made schemafull.
    All,
}

const DEFINE_LOCK: &[&str] = &[
    "DEFINE TABLE IF NOT EXISTS _migration_lock SCHEMALESS",
    "DEFINE TABLE IF NOT EXISTS _migration_lease SCHEMALESS",
];

/// The lock record's fields, set when it is taken.
const LOCK_CONTENT: &str = "token: $fl_token, host: $fl_host, pid: $fl_pid, \
     deployment_id: $fl_lock_deployment, acquired_at: time::now()";

/// Creates (or replaces) our lease record, expiring `lease` from now.
fn lease_record(lease: Duration) -> String {
    format!(
        "UPSERT type::record('_migration_lease', $fl_token) CONTENT {{ expires_at: time::now() + {}ms }} RETURN NONE",
        lease.as_millis()
    )
}

/// The statements that take the lock on a target the health probe found never migrated:
/// the history table with a plain `DEFINE TABLE`, then the lock and lease records outright —
/// no reads, no lock-table definitions (the writes make the tables). The definition and the
/// lock's `CREATE` fail when the target is not as the probe saw it (the table made
/// meanwhile, a lock left behind, a server that makes only defined tables). A table made
/// here is schemaless, so flotilla's two extra fields need no definitions.
fn take_fresh(lease: Duration) -> [String; TAKE_FRESH_STATEMENTS] {
    [
        "DEFINE TABLE _migration_history SCHEMALESS".to_owned(),
        format!("CREATE _migration_lock:lock CONTENT {{ {LOCK_CONTENT} }} RETURN NONE"),
        lease_record(lease),
    ]
}

/// Statements in [`take_fresh`].
const TAKE_FRESH_STATEMENTS: usize = 3;

/// Takes the lease if it is free or expired, in one transaction, and — when taken — reads
/// the history in that same transaction, so the caller need not ask again. A target being
/// locked for migrating is one being initialised: `definitions` says what the request
/// defines first. The request's body has [`acquire_statements`] statements; the last
/// returns `{ acquired, previous, current, history }`.
pub(crate) fn acquire(lease: Duration, definitions: Definitions) -> String {
    let current = select_lease();
    let defines = match definitions {
        Definitions::None => String::new(),
        Definitions::Fresh => {
            return format!(
                "BEGIN TRANSACTION;
{};
RETURN {{ acquired: true, previous: NONE, current: {current}, history: [] }};
COMMIT TRANSACTION;",
                take_fresh(lease).join(";\n")
            );
        }
        Definitions::All => DEFINE_LOCK
            .iter()
            .chain(DEFINE_HISTORY.iter())
            .map(|statement| format!("{statement};\n"))
            .collect(),
    };
    format!(
        "BEGIN TRANSACTION;
{defines}LET $fl_cur = {current};
RETURN IF $fl_cur = NONE OR $fl_cur.expired = true {{
    UPSERT _migration_lock:lock CONTENT {{ {LOCK_CONTENT} }} RETURN NONE;
    {};
    IF $fl_cur != NONE {{ DELETE type::record('_migration_lease', $fl_cur.token) }};
    RETURN {{ acquired: true, previous: $fl_cur, current: {current}, history: ({SELECT_HISTORY}) }};
}} ELSE {{
    RETURN {{ acquired: false, previous: $fl_cur }};
}};
COMMIT TRANSACTION;",
        lease_record(lease)
    )
}

/// Statements in [`acquire`]'s body; the last one returns the answer.
pub(crate) fn acquire_statements(definitions: Definitions) -> usize {
    match definitions {
        Definitions::None => 2,
        Definitions::Fresh => TAKE_FRESH_STATEMENTS + 1,
        Definitions::All => DEFINE_LOCK.len() + DEFINE_HISTORY.len() + 2,
    }
}

/// Extends our lease when the lock is still ours; answers whether it was.
pub(crate) fn renew(lease: Duration) -> String {
    format!(
        "IF _migration_lock:lock.token = $fl_token {{ {}; RETURN true }} ELSE {{ RETURN false }};",
        lease_record(lease)
    )
}

/// Removes whatever lock there is, and every lease record; returns the lock removed. The
/// body has [`BREAK_STATEMENTS`] statements; the last returns the lock.
pub(crate) fn break_lock() -> String {
    format!(
        "{}; LET $fl_cur = {}; DELETE _migration_lock:lock; DELETE _migration_lease; RETURN $fl_cur;",
        DEFINE_LOCK.join("; "),
        select_lease()
    )
}

/// Statements in [`break_lock`].
pub(crate) const BREAK_STATEMENTS: usize = 6;

/// Removes our lock and its lease record when `condition` holds and the lock is ours;
/// answers whether it did.
fn release_if(condition: &str) -> String {
    format!(
        "IF _migration_lock:lock.token = $fl_token{condition} {{ DELETE _migration_lock:lock; DELETE type::record('_migration_lease', $fl_token); RETURN true }} ELSE {{ RETURN false }}"
    )
}

/// Removes our lock; answers whether it was still ours.
pub(crate) fn release() -> String {
    format!("{};", release_if(""))
}

/// Thrown by a batch's later transactions when the one before did not commit, so nothing
/// runs after a failure.
pub(crate) const PREDECESSOR_MISSING: &str = "flotilla: the previous migration did not commit";

/// Thrown by a take that finds its session in another namespace or database.
pub(crate) const WRONG_TARGET: &str =
    "flotilla: the request is not in its target's namespace and database";

/// Thrown by a revert whose history row is already gone (reverted by someone else).
pub(crate) const NOT_APPLIED: &str = "flotilla: the migration to revert is not applied";

/// Where a transaction's results sit in its body (the statements between `BEGIN` and
/// `COMMIT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Statements before the migration's own (the fence with its timer, or the take's first
    /// half; history definitions).
    pub(crate) prelude: usize,
    /// The migration's statement count.
    pub(crate) statements: usize,
    /// Statements after them: the history write, and on a take the lease's `CREATE`.
    pub(crate) postlude: usize,
}

impl Layout {
    /// Body statements.
    pub(crate) fn body(self) -> usize {
        self.prelude + self.statements + self.postlude
    }
}

/// Consecutive migrations in one request, each its own `BEGIN … COMMIT` transaction, and
/// perhaps the release after them.
#[derive(Debug)]
pub(crate) struct ApplyRequest {
    pub(crate) text: String,
    /// Per transaction, in order.
    pub(crate) layouts: Vec<Layout>,
    /// Whether a release statement follows the last transaction.
    pub(crate) releases: bool,
    /// Whether the first transaction defines the history table.
    pub(crate) defines_history: bool,
}

/// One migration of a [`batch`]: its history record id and the statements it runs.
pub(crate) struct Item<'a> {
    pub(crate) id: String,
    pub(crate) statements: &'a [Statement],
}

/// Which way a transaction moves history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HistoryChange {
    /// Record the migration as applied.
    Record,
    /// Remove its row.
    Remove,
}

/// How a [`batch`] treats the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseUse {
    /// Take the lease (of this length) in the first transaction: a never-migrated target.
    pub(crate) take: Option<Duration>,
    /// Remove the lease after the last transaction, when it committed.
    pub(crate) release: bool,
    /// Define the history table in the first transaction (nothing known about it).
    pub(crate) define_history: bool,
}

/// Each of `migrations` plus its history change, fenced by our lease token, as one
/// transaction each, in one request. Every transaction after the first is also fenced on its
/// predecessor's history change, so a failed (or conflicting) transaction stops the rest of
/// the request; a revert also checks that its own row is still there.
///
/// With `lease.take`, the first transaction takes the lock on a never-migrated target
/// instead of checking it: it begins by defining the history table (which fails if the table
/// exists) and ends by creating the lock and lease records (the lock's fails if there is
/// one): when either fails, nothing of it commits and the next fence stops the rest. The
/// lease is created last so its expiry counts from the commit, however long the migration
/// ran.
///
/// With `lease.release`, a statement of its own after the last transaction removes the lease
/// when that transaction's history change is there: outside the migrations' transactions,
/// which only read the lease, so a heartbeat renewing it never conflicts with them.
///
/// Variables: `$fl_token`, `$fl_applied_by`, `$fl_deployment`, with a take also `$fl_host`,
/// `$fl_pid`, `$fl_lock_deployment`, `$fl_ns`, `$fl_db`, and per migration `k`: `$fl_version_k`,
/// `$fl_description_k`, `$fl_checksum_k`.
pub(crate) fn batch(
    migrations: &[Item<'_>],
    change: HistoryChange,
    lease: LeaseUse,
) -> ApplyRequest {
    let mut text = String::new();
    let mut layouts = Vec::with_capacity(migrations.len());
    for (k, item) in migrations.iter().enumerate() {
        let mut prelude = match lease.take {
            // No lease to check yet; but the namespace and database are: should the
            // request's `USE` have failed, a pooled session would still be in another
            // target's, and the take is the one transaction no lease token fences.
            Some(_) if k == 0 => vec![
                format!(
                    "LET $fl_started = IF session::ns() != $fl_ns OR session::db() != $fl_db {{ THROW \"{WRONG_TARGET}\" }} ELSE {{ time::now() }}"
                ),
                "DEFINE TABLE _migration_history SCHEMALESS".to_owned(),
            ],
            _ => vec![fence(migrations, k, change)],
        };
        if lease.define_history && lease.take.is_none() && k == 0 {
            prelude.extend(DEFINE_HISTORY.iter().map(|s| (*s).to_owned()));
        }
        let mut postlude = vec![history_change(item, k, change)];
        if let Some(length) = lease.take
            && k == 0
        {
            postlude.push(format!(
                "CREATE _migration_lock:lock CONTENT {{ {LOCK_CONTENT} }} RETURN NONE"
            ));
            postlude.push(lease_record(length));
        }
        text.push_str("BEGIN TRANSACTION;\n");
        for statement in prelude
            .iter()
            .map(String::as_str)
            .chain(item.statements.iter().map(|s| s.text.as_str()))
            .chain(postlude.iter().map(String::as_str))
        {
            text.push_str(statement);
            text.push_str(";\n");
        }
        text.push_str("COMMIT TRANSACTION;\n");
        layouts.push(Layout {
            prelude: prelude.len(),
            statements: item.statements.len(),
            postlude: postlude.len(),
        });
    }
    let releases = lease.release && !migrations.is_empty();
    if releases {
        let last = migrations.len() - 1;
        let done = match change {
            HistoryChange::Record => format!(
                " AND {}.applied_by = $fl_applied_by",
                history_record(&migrations[last].id)
            ),
            HistoryChange::Remove => format!(
                " AND (SELECT VALUE version FROM _migration_history WHERE version = $fl_version_{last}) = []"
            ),
        };
        text.push_str(&release_if(&done));
        text.push_str(";\n");
    }
    ApplyRequest {
        text,
        layouts,
        releases,
        defines_history: lease.define_history && lease.take.is_none(),
    }
}

/// The fence and the timer in one statement: it throws when the lease is no longer ours,
/// after the first transaction when the one before did not commit, and on a revert when the
/// row to remove is gone; else it writes the lock record (so a takeover committed before
/// this transaction does makes it conflict) and starts the clock for `execution_time_ms`.
fn fence(migrations: &[Item<'_>], k: usize, change: HistoryChange) -> String {
    let mut checks = String::new();
    if k > 0 {
        let prev = k - 1;
        let unmet = match change {
            // The row the transaction before created, looked up by its id.
            HistoryChange::Record => {
                format!("{}.version = NONE", history_record(&migrations[prev].id))
            }
            // Any row of that version (an adopted surql row may have another id).
            HistoryChange::Remove => format!(
                "(SELECT VALUE version FROM _migration_history WHERE version = $fl_version_{prev}) != []"
            ),
        };
        checks.push_str(&format!(
            " ELSE IF {unmet} {{ THROW \"{PREDECESSOR_MISSING}\" }}"
        ));
    }
    if change == HistoryChange::Remove {
        checks.push_str(&format!(
            " ELSE IF (SELECT VALUE version FROM _migration_history WHERE version = $fl_version_{k}) = [] {{ THROW \"{NOT_APPLIED}\" }}"
        ));
    }
    format!(
        "LET $fl_started = IF (UPDATE _migration_lock:lock SET applying = $fl_version_{k} WHERE token = $fl_token RETURN VALUE token) = [] {{ THROW \"{LOCK_LOST}\" }}{checks} ELSE {{ time::now() }}"
    )
}

/// Records or removes migration `k`'s history row.
fn history_change(item: &Item<'_>, k: usize, change: HistoryChange) -> String {
    match change {
        HistoryChange::Record => format!(
            "CREATE {} SET \
             version = $fl_version_{k}, description = $fl_description_{k}, \
             checksum = $fl_checksum_{k}, applied_at = time::now(), \
             execution_time_ms = duration::millis(time::now() - $fl_started), \
             applied_by = $fl_applied_by, deployment_id = $fl_deployment RETURN NONE",
            history_record(&item.id)
        ),
        HistoryChange::Remove => {
            format!("DELETE _migration_history WHERE version = $fl_version_{k} RETURN NONE")
        }
    }
}

/// A history record as a literal: `id` is a [`record_id`] (letters, digits and `_` only),
/// written in brackets so it is a string id whatever it looks like, as the surql toolkit's
/// `type::thing` makes it. A literal, not a function call on a bound id: this is sent for
/// every migration of every target, and the server parses it cheaper.
fn history_record(id: &str) -> String {
    debug_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    format!("{HISTORY_TABLE}:⟨{id}⟩")
}

/// `name` as a quoted SurrealQL identifier (any characters).
pub(crate) fn ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('`');
    for c in name.chars() {
        if c == '`' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('`');
    quoted
}

/// The history record id for a version, as the surql toolkit derives it.
pub(crate) fn record_id(version: &str) -> String {
    version
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
