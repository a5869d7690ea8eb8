//! [`SurrealRunner`]: the seam's methods, each built from the rooms beside this one —
//! [`crate::session`] (connections and sessions), [`crate::request`] (sending), [`crate::lease`]
//! (the lock), [`crate::apply`] (migrations), [`crate::probes`] (health).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use flotilla_core::AppliedMigration;
use flotilla_runner::util::lock_unpoisoned;
use flotilla_runner::{
    Backends, DatabaseKey, HealthStatus, LocalLocks, LockGuard, LockInfo, LockRequest,
    MigrationPlan, MigrationResult, MigrationRunner, Probe, Rehearsal, RehearsalPlan, Result,
    RunnerError, Target, settle_release,
};
use serde_json::Value;
use surrealdb::Surreal;
use surrealdb::engine::any::Any;

use crate::apply::UnderLease;
use crate::config::SurrealConfig;
use crate::errors::{classify, is_missing_table};
use crate::lease::{LeaseState, Registered, SurrealLockGuard};
use crate::request::result_json;
use crate::rows::{canonical, history_from_rows, lease_info, lease_row};
use crate::session::{Lane, Sessions};
use crate::sql;

/// URL schemes this backend serves.
pub const SCHEMES: &[&str] = &["mem", "surrealkv", "ws", "wss", "http", "https"];

/// A [`MigrationRunner`] for SurrealDB. Cheap to clone; clones share connections.
#[derive(Clone, Debug, Default)]
pub struct SurrealRunner {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: Sessions,
    /// Queries sent on pooled sessions, for [`SurrealRunner::request_count`].
    requests: AtomicU64,
    /// Leases this runner holds, by token.
    leases: Mutex<HashMap<String, Registered>>,
    /// One lease per database in this process.
    local: LocalLocks,
    /// What this runner knows of targets' history tables, by [`table_key`]: eight bytes per
    /// target, not three strings, for a runner that serves thousands.
    history_tables: Mutex<HashMap<u64, HistoryTable>>,
    /// Health probes waiting to share a request, per endpoint and user.
    probes: Mutex<HashMap<crate::session::UserKey, crate::probes::Queue>>,
    /// Targets whose namespace and database are known to exist, by [`table_key`].
    existing: Mutex<std::collections::HashSet<u64>>,
    /// Targets a probe found without their namespace or database: per endpoint and user,
    /// their namespace and database names (a deploy makes them together, see
    /// [`SurrealRunner::ensure_database`]).
    missing: Mutex<crate::exists::Missing>,
    /// The namespaces and databases users last listed, per endpoint and user.
    namespaces: Mutex<crate::exists::Namespaces>,
    /// One listing at a time, so probes asking together share it.
    listing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SurrealRunner")
            .field("config", self.sessions.config())
            .field("connections", &self.sessions.open_connections())
            .field("pools", &self.sessions.pool_count())
            .finish()
    }
}

/// What a runner last saw of a target's history table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HistoryTable {
    /// Seen or defined.
    Ready,
    /// Missing when the health probe looked.
    Absent,
}

/// A target's entry in `history_tables`. Two targets with one hash would only make the
/// runner send a lock request with the wrong definitions once; it fails on the missing (or
/// existing) table and is sent again with all of them.
fn table_key(key: &DatabaseKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl SurrealRunner {
    /// A runner with default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runner with `config`.
    pub fn with_config(config: SurrealConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: Sessions::new(config),
                ..Inner::default()
            }),
        }
    }

    /// Serves every SurrealDB scheme in `backends` with this runner.
    pub fn register(&self, backends: &mut Backends) {
        backends.register(SCHEMES, Arc::new(self.clone()));
    }

    /// Open connections (one per endpoint URL, however many targets share it).
    pub fn connection_count(&self) -> usize {
        self.inner.sessions.open_connections()
    }

    /// How many times this runner tried to connect to an endpoint. A failed connect is
    /// remembered for a connect timeout, so targets on a dead endpoint share one attempt.
    pub fn connect_attempts(&self) -> u64 {
        self.inner.sessions.connects()
    }

    /// How many times this runner signed in with a password. Each user signs in once per
    /// endpoint, and again only when its access token stops working; every other session
    /// authenticates with the token.
    pub fn sign_in_count(&self) -> u64 {
        self.inner.sessions.sign_ins()
    }

    /// How many queries this runner sent on its pooled sessions — the round trips of
    /// health probes, history reads, locks, applies, renewals and releases (sign-ins and
    /// `USE` on a new session not counted). A deploy of pending migrations costs 2 per target
    /// (lock with history read; every migration with the release) — 1 on a target the health
    /// probe found never migrated, whose lock the apply request takes — plus a share of a
    /// health probe request.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// A new signed-in session on `target`'s database, for inspecting it (tests, tooling).
    /// Deploys do not use it: they borrow pooled sessions.
    pub async fn session(&self, target: &Target) -> Result<Arc<Surreal<Any>>> {
        self.inner.sessions.open(target).await.map(Arc::new)
    }

    /// The target's definitions (`INFO FOR DB`) and every record of every table, rendered
    /// deterministically: equal database states give equal strings. Reads everything, so it
    /// is meant for tests and small databases.
    pub async fn snapshot(&self, target: &Target) -> Result<String> {
        let session = self.session(target).await?;
        let mut response = session
            .query("INFO FOR DB")
            .await
            .map_err(|e| classify(target, e))?;
        let info: Value = result_json(&mut response, 0).map_err(|e| classify(target, e))?;
        let mut tables: Vec<String> = info
            .get("tables")
            .and_then(Value::as_object)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        tables.sort();
        let mut rendered = format!("{}\n", canonical(&info));
        for table in tables {
            let mut response = session
                .query("SELECT * FROM type::table($table) ORDER BY id")
                .bind(("table", table.clone()))
                .await
                .map_err(|e| classify(target, e))?;
            let rows: Value = result_json(&mut response, 0).map_err(|e| classify(target, e))?;
            rendered.push_str(&format!("{table}: {}\n", canonical(&rows)));
        }
        Ok(rendered)
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub(crate) fn count_request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn local_locks(&self) -> &LocalLocks {
        &self.inner.local
    }

    pub(crate) fn namespace_listings(&self) -> &Mutex<crate::exists::Namespaces> {
        &self.inner.namespaces
    }

    pub(crate) fn listing(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.listing
    }

    /// Whether `target`'s namespace and database were seen to exist (or made).
    pub(crate) fn known_to_exist(&self, target: &Target) -> bool {
        let key = table_key(&target.database_key());
        lock_unpoisoned(&self.inner.existing).contains(&key)
            || lock_unpoisoned(&self.inner.history_tables).get(&key) == Some(&HistoryTable::Ready)
    }

    /// Remembers that `target`'s namespace and database exist.
    pub(crate) fn remember_existing(&self, target: &Target) {
        let connection = &target.connection;
        if let Some(missing) =
            lock_unpoisoned(&self.inner.missing).get_mut(&crate::session::UserKey::of(target))
        {
            missing.remove(&(connection.namespace.clone(), connection.database.clone()));
        }
        lock_unpoisoned(&self.inner.existing).insert(table_key(&target.database_key()));
    }

    /// Remembers that a probe found `target`'s namespace or database missing.
    pub(crate) fn remember_missing(&self, target: &Target) {
        let connection = &target.connection;
        lock_unpoisoned(&self.inner.missing)
            .entry(crate::session::UserKey::of(target))
            .or_default()
            .insert((connection.namespace.clone(), connection.database.clone()));
    }

    pub(crate) fn missing(&self) -> &Mutex<crate::exists::Missing> {
        &self.inner.missing
    }

    pub(crate) fn probe_queues(
        &self,
    ) -> &Mutex<HashMap<crate::session::UserKey, crate::probes::Queue>> {
        &self.inner.probes
    }

    pub(crate) fn hold(&self, registered: Registered) {
        lock_unpoisoned(&self.inner.leases).insert(registered.lease.token.clone(), registered);
    }

    pub(crate) fn unregister(&self, token: &str) {
        lock_unpoisoned(&self.inner.leases).remove(token);
    }

    fn registered(&self, token: &str) -> Option<Registered> {
        lock_unpoisoned(&self.inner.leases).get(token).cloned()
    }

    pub(crate) fn history_table(&self, key: &DatabaseKey) -> Option<HistoryTable> {
        lock_unpoisoned(&self.inner.history_tables)
            .get(&table_key(key))
            .copied()
    }

    /// Records what was seen of `key`'s history table; `None` forgets it, so the next lock
    /// request defines everything.
    pub(crate) fn set_history_table(&self, key: &DatabaseKey, seen: Option<HistoryTable>) {
        let mut tables = lock_unpoisoned(&self.inner.history_tables);
        match seen {
            Some(seen) => tables.insert(table_key(key), seen),
            None => tables.remove(&table_key(key)),
        };
    }

    /// Health and history from one probe request.
    async fn probe_both(&self, target: &Target) -> Result<Probe> {
        let started = Instant::now();
        let rows = self.probe_rows(target).await?;
        let latency = started.elapsed();
        let Some((lease, history)) = rows else {
            // No namespace or database: never migrated, and nothing was made to find out.
            self.set_history_table(&target.database_key(), Some(HistoryTable::Absent));
            self.remember_missing(target);
            return Ok(Probe {
                health: HealthStatus {
                    latency,
                    initialised: false,
                    lock: None,
                    server_version: self.inner.sessions.server_version(target).await,
                },
                history: Ok(Vec::new()),
            });
        };
        let holder = match lease {
            Ok(value) => lease_row(Some(&value))
                .filter(|row| !row.expired)
                .and_then(|_| lease_info(Some(&value))),
            Err(error) if is_missing_table(&error) => None,
            Err(error) => return Err(classify(target, error)),
        };
        let (initialised, history) = match history {
            Ok(rows) => {
                // The lock request may now leave the definitions out. A table another tool
                // made (surql's, without flotilla's two fields) comes without flotilla's lock
                // table, so that request fails on the missing lock table and is sent again
                // with every definition.
                self.set_history_table(&target.database_key(), Some(HistoryTable::Ready));
                (true, history_from_rows(target, rows))
            }
            Err(error) if is_missing_table(&error) => {
                // The lock request may define it plainly, without the fields a table
                // another tool made would need.
                self.set_history_table(&target.database_key(), Some(HistoryTable::Absent));
                (false, Ok(Vec::new()))
            }
            Err(error) => (true, Err(classify(target, error))),
        };
        let server_version = self.inner.sessions.server_version(target).await;
        Ok(Probe {
            health: HealthStatus {
                latency,
                initialised,
                lock: holder,
                server_version,
            },
            history,
        })
    }
}

/// Whether `plan` has anything to do on a target without history.
fn applies_on_empty(target: &Target, plan: &MigrationPlan) -> Result<bool> {
    Ok(!flotilla_runner::execute::steps(target, plan, &[])?.is_empty())
}

#[async_trait]
impl MigrationRunner for SurrealRunner {
    async fn health(&self, target: &Target) -> Result<HealthStatus> {
        self.probe_both(target).await.map(|probe| probe.health)
    }

    async fn history(&self, target: &Target) -> Result<Vec<AppliedMigration>> {
        if !self.database_exists(target).await? {
            return Ok(Vec::new());
        }
        let mut response = self
            .request(target, Lane::Deploy, sql::SELECT_HISTORY, None, 1)
            .await?;
        let rows: Value = match response.result(0) {
            Ok(rows) => rows,
            Err(error) if is_missing_table(&error) => return Ok(Vec::new()),
            Err(error) => return Err(classify(target, error)),
        };
        history_from_rows(target, rows)
    }

    async fn probe(&self, target: &Target) -> Result<Probe> {
        self.probe_both(target).await
    }

    async fn rehearse(&self, plan: &RehearsalPlan) -> Result<Rehearsal> {
        self.rehearse_on_scratch(plan).await
    }

    async fn prepare(&self, targets: &[Target]) -> Result<()> {
        self.make_missing(targets).await
    }

    async fn acquire_lock(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<Box<dyn LockGuard>> {
        Ok(Box::new(self.acquire(target, request).await?))
    }

    async fn break_lock(&self, target: &Target) -> Result<Option<LockInfo>> {
        let mut response = self
            .request(
                target,
                Lane::Upkeep,
                &sql::break_lock(),
                None,
                sql::BREAK_STATEMENTS,
            )
            .await?;
        if let Some((_, error)) = response.failure() {
            return Err(classify(target, error));
        }
        let previous = response
            .result(sql::BREAK_STATEMENTS - 1)
            .map_err(|e| classify(target, e))?;
        Ok(lease_info(Some(&previous)))
    }

    async fn execute_migration(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        lock: &(dyn LockGuard + 'static),
    ) -> Result<MigrationResult> {
        let not_locked = || RunnerError::NotLocked {
            environment: target.environment.clone(),
        };
        let registered = self.registered(lock.token()).ok_or_else(not_locked)?;
        if registered.lease.key != target.database_key()
            || registered.lease.state() != LeaseState::Held
        {
            return Err(not_locked());
        }
        // History read in the transaction that took the lease is current: every write since
        // is fenced by that lease. A second execution under the same lease reads again.
        let history = match registered.lease.history_read_with_lock() {
            Some(history) => history,
            None => self.history(target).await?,
        };
        let under = UnderLease {
            lease: &registered.lease,
            watch: &registered.watch,
            release: false,
        };
        self.run(target, plan, &history, under).await
    }

    /// Lock, execute, release in as few requests as it takes: on a target the health probe
    /// found never migrated, one (the first migration's transaction takes the lease, a
    /// statement after the last removes it); elsewhere two (the lock with the history read,
    /// then every migration and the release).
    async fn apply_locked(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        request: &LockRequest,
    ) -> Result<MigrationResult> {
        self.ensure_database(target).await?;
        let fresh = self.history_table(&target.database_key()) == Some(HistoryTable::Absent)
            && applies_on_empty(target, plan)?;
        let guard = if fresh {
            self.lease_to_take(target, request).await?
        } else {
            self.acquire(target, request).await?
        };
        let mut outcome = self.run_under(target, plan, &guard, fresh).await;
        if fresh && guard.lease.state() == LeaseState::Refused {
            // The take failed, so nothing ran: someone holds the lock, or the target is no
            // longer the empty one the probe saw. Take it the usual way and work from the
            // history read with it.
            self.set_history_table(&target.database_key(), None);
            outcome = match self.retake(target, &guard.lease).await {
                Ok(()) => self.run_under(target, plan, &guard, false).await,
                Err(error) => Err(error),
            };
        }
        let took_over = guard.took_over();
        let released = Box::new(guard).release().await;
        settle_release(target, outcome, took_over, released)
    }
}

impl SurrealRunner {
    /// Runs `plan` under `guard`, removing the lease with the last migration.
    async fn run_under(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        guard: &SurrealLockGuard,
        fresh: bool,
    ) -> Result<MigrationResult> {
        let history = if fresh {
            Vec::new()
        } else {
            match guard.lease.history_read_with_lock() {
                Some(history) => history,
                None => self.history(target).await?,
            }
        };
        let watch = guard.watch();
        let under = UnderLease {
            lease: &guard.lease,
            watch: &watch,
            release: true,
        };
        self.run(target, plan, &history, under).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::use_prefix;
    use flotilla_core::{AuthLevel, Connection};

    fn target(namespace: &str) -> Target {
        Target::new(
            namespace,
            Connection::new("mem://", namespace, "app").with_credentials(
                "deployer",
                "deployer-pw",
                AuthLevel::Root,
            ),
        )
    }

    async fn define_user(runner: &SurrealRunner) {
        // The embedded datastore's own unauthenticated session may define users.
        let admin = runner
            .sessions()
            .connection(&target("setup"))
            .await
            .expect("connect")
            .client;
        admin
            .query("DEFINE USER OVERWRITE deployer ON ROOT PASSWORD 'deployer-pw' ROLES OWNER")
            .await
            .expect("define user")
            .check()
            .expect("user defined");
    }

    /// A new pooled session authenticates with the endpoint's token; when the server refuses
    /// it (expired, or the user was redefined and its signing key changed), the runner signs
    /// in once more instead of failing.
    #[tokio::test]
    async fn a_refused_access_token_means_signing_in_again() {
        let runner = SurrealRunner::new();
        define_user(&runner).await;
        let sessions = runner.sessions();
        let first = sessions
            .borrow(&target("t1"), Lane::Deploy, None)
            .await
            .expect("first session");
        assert_eq!(runner.sign_in_count(), 1);
        let second = sessions
            .borrow(&target("t2"), Lane::Deploy, None)
            .await
            .expect("second session");
        assert_eq!(runner.sign_in_count(), 1, "the second one used the token");
        define_user(&runner).await;
        // Both pooled sessions are busy, so a third is opened: the old token no longer
        // verifies.
        let third = sessions
            .borrow(&target("t3"), Lane::Deploy, None)
            .await
            .expect("third session");
        assert_eq!(runner.sign_in_count(), 2, "signed in again, once");
        let mut reply = third
            .client()
            .query(use_prefix(&target("t3")) + "RETURN 1")
            .await
            .expect("query");
        assert!(reply.take_errors().is_empty());
        drop((first, second, third));
    }

    /// Two environments naming one user with different passwords do not share a token: the
    /// second signs in with its own password (and is refused, since it is wrong).
    #[tokio::test]
    async fn a_token_is_never_reused_for_a_different_password() {
        let runner = SurrealRunner::new();
        define_user(&runner).await;
        runner
            .sessions()
            .borrow(&target("right"), Lane::Deploy, None)
            .await
            .expect("the right password");
        let wrong = Target::new(
            "wrong",
            Connection::new("mem://", "wrong", "app").with_credentials(
                "deployer",
                "not-the-password",
                AuthLevel::Root,
            ),
        );
        let err = runner
            .sessions()
            .borrow(&wrong, Lane::Deploy, None)
            .await
            .err()
            .expect("the token of the right password must not let the wrong one in");
        assert!(matches!(err, RunnerError::Authentication { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("not-the-password"));
    }

    #[tokio::test]
    async fn a_request_names_its_target_whatever_the_names() {
        let runner = SurrealRunner::new();
        let odd = Target::new("odd", Connection::new("mem://", "a-b`c\\d e", "x.y-z"));
        let mut response = runner
            .request(
                &odd,
                Lane::Deploy,
                "RETURN [session::ns(), session::db()]",
                None,
                1,
            )
            .await
            .expect("request");
        let names = response.result(0).expect("names");
        assert_eq!(names, serde_json::json!(["a-b`c\\d e", "x.y-z"]));
    }

    /// A guard's `Debug` (lease, token, target, runner) shows no password.
    #[tokio::test]
    async fn a_lock_guard_never_shows_a_password() {
        let runner = SurrealRunner::new();
        define_user(&runner).await;
        let guard = runner
            .acquire_lock(
                &target("debug"),
                &LockRequest::new(None, std::time::Duration::ZERO),
            )
            .await
            .expect("lock");
        let shown = format!("{guard:?} {guard:#?} {runner:?}");
        assert!(!shown.contains("deployer-pw"), "{shown}");
        assert!(shown.contains("debug"), "{shown}");
        guard.release().await.expect("release");
    }

    /// The SDK's "invalid URL" message quotes the URL; a password in it must not print.
    #[tokio::test]
    async fn an_invalid_url_is_reported_without_its_password() {
        let runner = SurrealRunner::new();
        let bad = Target::new(
            "broken",
            Connection::new("ws://admin:pa ss/w0rd@db.example:99999/rpc", "ns", "db")
                .with_credentials("admin", "pa ss/w0rd", AuthLevel::Root),
        );
        let error = runner.health(&bad).await.expect_err("an invalid URL");
        let mut shown = format!("{error} {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            shown.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert!(!shown.contains("pa ss/w0rd"), "{shown}");
        assert!(shown.contains("broken"), "{shown}");
    }
}
