//! [`SurrealRunner`]: connections, sessions, the lease lock and transactional apply.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use flotilla_core::{AppliedMigration, AuthLevel, Migration, Statement, Version, rfc3339};
use flotilla_runner::execute::{Batch, run_batched};
use flotilla_runner::{
    Attempt, Backends, DatabaseKey, Direction, HealthStatus, Heartbeat, LockGuard, LockInfo,
    LockOwner, LockRequest, MigrationPlan, MigrationResult, MigrationRunner, Result, RunnerError,
    TenantContext, jitter, wait_for_lock,
};
use serde_json::{Map, Value, json};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::opt::auth;
use tokio::sync::OnceCell;

use crate::errors::{auth_scope, classify, is_conflict, is_missing_table, is_not_executed};
use crate::sql::{self, Definitions, HistoryChange, LOCK_LOST};

mod probes;

/// URL schemes this backend serves.
pub const SCHEMES: &[&str] = &["mem", "surrealkv", "ws", "wss", "http", "https"];

/// Tunables of the SurrealDB runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurrealConfig {
    /// How long to wait for a server to accept a connection.
    pub connect_timeout: Duration,
    /// Attempts at a transaction that hits write conflicts before giving up.
    pub conflict_attempts: u32,
}

impl Default for SurrealConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            conflict_attempts: 8,
        }
    }
}

/// A [`MigrationRunner`] for SurrealDB. Cheap to clone; clones share connections.
#[derive(Clone, Debug, Default)]
pub struct SurrealRunner {
    inner: Arc<Inner>,
}

/// Sessions per endpoint and user: enough for every request of a deploy's concurrency to
/// have its own, few enough to stay far below a server's limit on sessions per WebSocket
/// connection (SurrealDB's default is 256).
const POOL_SIZE: usize = 32;

/// Signed-in sessions of one user on one endpoint, shared by all of that user's targets
/// there. A request borrows one, names its target with a leading `USE`, and gives it back: no
/// session, sign-in or `USE` round trip per target.
struct Pool {
    permits: Arc<tokio::sync::Semaphore>,
    idle: Mutex<Vec<Surreal<Any>>>,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(POOL_SIZE)),
            idle: Mutex::new(Vec::new()),
        }
    }
}

/// A borrowed session, returned to its pool when dropped.
struct Borrowed {
    session: Option<Surreal<Any>>,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Borrowed {
    type Target = Surreal<Any>;

    fn deref(&self) -> &Surreal<Any> {
        self.session.as_ref().expect("present until dropped")
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            lock(&self.pool.idle).push(session);
        }
    }
}

/// `USE NS … DB …;` for `tenant`, with both names quoted, ahead of every request.
fn use_prefix(tenant: &TenantContext) -> String {
    format!(
        "USE NS {} DB {};\n",
        sql::ident(&tenant.connection.namespace),
        sql::ident(&tenant.connection.database)
    )
}

/// Whose access token: the endpoint, the user, and the namespace/database a namespace or
/// database user signs in to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    url: String,
    username: String,
    level: AuthLevel,
    scope: (Option<String>, Option<String>),
}

/// The access token of a sign-in, shared by every session of that user on that endpoint.
/// `None` until someone signed in, or after the token stopped working.
type TokenCell = Arc<tokio::sync::Mutex<Option<auth::AccessToken>>>;

#[derive(Default)]
struct Inner {
    config: SurrealConfig,
    /// One connection per URL.
    endpoints: Mutex<HashMap<String, Arc<OnceCell<Surreal<Any>>>>>,
    /// Access tokens per endpoint and user. A session that signs in makes the server verify
    /// the password (argon2: deliberately slow), and a cloned session replays its parent's
    /// sign-in; so each user signs in once per endpoint and every further session
    /// authenticates with the token, which the server checks with a cheap signature test.
    tokens: Mutex<HashMap<TokenKey, TokenCell>>,
    /// Password sign-ins made, for [`SurrealRunner::sign_in_count`].
    sign_ins: AtomicU64,
    /// Queries sent on pooled sessions, for [`SurrealRunner::request_count`].
    requests: AtomicU64,
    /// Session pools per endpoint and user.
    pools: Mutex<HashMap<TokenKey, Arc<Pool>>>,
    /// Locks this runner holds.
    held: Mutex<HashMap<DatabaseKey, Held>>,
    /// What this runner knows of targets' history tables, by [`table_key`]: eight bytes per
    /// target, not three strings, for a runner that serves thousands.
    history_tables: Mutex<HashMap<u64, HistoryTable>>,
    /// Health probes waiting to share a request, per endpoint and user.
    probes: Mutex<HashMap<TokenKey, probes::Queue>>,
    /// Server version per URL, asked once.
    server_versions: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SurrealRunner")
            .field("config", &self.config)
            .field("connections", &lock(&self.endpoints).len())
            .field("pools", &lock(&self.pools).len())
            .finish()
    }
}

/// What a runner last saw of a target's history table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HistoryTable {
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain data; a panic elsewhere does not make them wrong.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A lock this runner holds: its lease, and the history read when it was taken (consumed by
/// the first execution under it).
#[derive(Debug)]
struct Held {
    lease: Arc<LeaseState>,
    history: Option<Vec<AppliedMigration>>,
}

/// A held lock's lease, shared by its guard, its heartbeat and executions under it.
#[derive(Debug)]
struct LeaseState {
    token: String,
    take: Mutex<Take>,
    /// Set when an execution removed the lease with its last migration: the guard's release
    /// then only confirms, and the heartbeat stops renewing.
    released: AtomicBool,
    /// The lease held, and the expired one it replaced.
    info: Mutex<LockInfo>,
    took_over: Mutex<Option<LockInfo>>,
}

impl LeaseState {
    fn take_state(&self) -> MutexGuard<'_, Take> {
        lock(&self.take)
    }

    /// Whether the lease is known to exist on the target (and so is renewed, and its absence
    /// at release means it was lost).
    fn is_taken(&self) -> bool {
        matches!(*self.take_state(), Take::Taken)
    }
}

/// How far a lock's lease got.
#[derive(Debug)]
enum Take {
    /// On the target.
    Taken,
    /// A [`LockRequest::deferrable`] lock on a target the probe found never migrated: the
    /// first apply request takes the lease, in its first migration's transaction.
    Deferred(Ask),
    /// That request is on its way, or its reply was lost: the lease may or may not exist.
    Sending,
    /// That request's take failed, so nothing of it ran: the lease is not ours, and the lock
    /// is asked for on its own.
    Refused,
    /// That request could not be sent, or its first migration failed and undid the take in
    /// its transaction: the lease was never on the target, and the failure is reported as it
    /// is.
    NotTaken,
}

/// What taking a lease needs: the lock request's variables, lease length and wait.
#[derive(Clone, Debug)]
struct Ask {
    vars: Map<String, Value>,
    lease: Duration,
    wait: Duration,
}

/// A query failure: worth retrying (write conflict) or final.
enum Failure {
    Conflict(surrealdb::Error),
    Fatal(RunnerError),
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
                config,
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
        lock(&self.inner.endpoints)
            .values()
            .filter(|cell| cell.initialized())
            .count()
    }

    /// How many times this runner signed in with a password. Each user signs in once per
    /// endpoint, and again only when its access token stops working; every other session
    /// authenticates with the token.
    pub fn sign_in_count(&self) -> u64 {
        self.inner.sign_ins.load(Ordering::Relaxed)
    }

    /// How many queries this runner sent on its pooled sessions — the round trips of
    /// health probes, history reads, locks, applies and releases (sign-ins and `USE` on a
    /// new session not counted). A deploy of pending migrations costs 2 per target (lock with
    /// history read; every migration with the release) — 1 on a target the health probe
    /// found never migrated, whose lock the apply request takes — plus a share of a health
    /// probe request.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// A new signed-in session on `tenant`'s database, for inspecting it (tests, tooling).
    /// Deploys do not use it: they borrow pooled sessions.
    pub async fn session(&self, tenant: &TenantContext) -> Result<Arc<Surreal<Any>>> {
        self.open_session(tenant).await.map(Arc::new)
    }

    /// The target's definitions (`INFO FOR DB`) and every record of every table, rendered
    /// deterministically: equal database states give equal strings. Reads everything, so it
    /// is meant for tests and small databases.
    pub async fn snapshot(&self, tenant: &TenantContext) -> Result<String> {
        let session = self.session(tenant).await?;
        let mut response = session
            .query("INFO FOR DB")
            .await
            .map_err(|e| classify(tenant, e))?;
        let info: Value = take_json(&mut response, 0).map_err(|e| classify(tenant, e))?;
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
                .map_err(|e| classify(tenant, e))?;
            let rows: Value = take_json(&mut response, 0).map_err(|e| classify(tenant, e))?;
            rendered.push_str(&format!("{table}: {}\n", canonical(&rows)));
        }
        Ok(rendered)
    }

    async fn connection(&self, tenant: &TenantContext) -> Result<Surreal<Any>> {
        let url = tenant.connection.url.clone();
        let cell = Arc::clone(lock(&self.inner.endpoints).entry(url.clone()).or_default());
        let unreachable = |source: flotilla_runner::BoxError| RunnerError::Unreachable {
            environment: tenant.environment.clone(),
            endpoint: tenant.connection.redacted_url(),
            source,
        };
        let timeout = self.inner.config.connect_timeout;
        cell.get_or_try_init(|| async {
            let connecting = surrealdb::engine::any::connect(url.as_str()).into_future();
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(error)) => Err(unreachable(Box::new(error))),
                Err(_) => Err(unreachable(
                    format!("no connection within {}s", timeout.as_secs_f64()).into(),
                )),
            }
        })
        .await
        .cloned()
    }

    async fn open_session(&self, tenant: &TenantContext) -> Result<Surreal<Any>> {
        let base = self.connection(tenant).await?;
        // A clone is a new session on the same connection. `base` itself never signs in, so
        // its clones carry no sign-in to replay.
        let session = base.clone();
        let connection = &tenant.connection;
        if connection.credentials.is_some() {
            self.authenticate(tenant, &session).await?;
        }
        // `USE` creates a missing namespace and database; sessions racing to create the same
        // ones conflict, and the loser simply asks again.
        self.retrying(tenant, || async {
            session
                .use_ns(connection.namespace.clone())
                .use_db(connection.database.clone())
                .await
                .map_err(|error| {
                    if is_conflict(&error) {
                        Failure::Conflict(error)
                    } else {
                        Failure::Fatal(classify(tenant, error))
                    }
                })
        })
        .await?;
        Ok(session)
    }

    /// Who `tenant` signs in as on which endpoint: the key of its token and session pool.
    fn user_key(tenant: &TenantContext) -> TokenKey {
        let connection = &tenant.connection;
        match &connection.credentials {
            None => TokenKey {
                url: connection.url.clone(),
                username: String::new(),
                level: AuthLevel::Root,
                scope: (None, None),
            },
            Some(credentials) => TokenKey {
                url: connection.url.clone(),
                username: credentials.username.clone(),
                level: credentials.level,
                scope: match credentials.level {
                    AuthLevel::Root => (None, None),
                    AuthLevel::Namespace => (Some(connection.namespace.clone()), None),
                    AuthLevel::Database => (
                        Some(connection.namespace.clone()),
                        Some(connection.database.clone()),
                    ),
                },
            },
        }
    }

    /// A session of `tenant`'s user on its endpoint, from the pool (waiting while all are in
    /// use). Requests sent on it must begin with [`use_prefix`].
    async fn borrow(&self, tenant: &TenantContext) -> Result<Borrowed> {
        let pool = Arc::clone(
            lock(&self.inner.pools)
                .entry(Self::user_key(tenant))
                .or_default(),
        );
        let permit = Arc::clone(&pool.permits)
            .acquire_owned()
            .await
            .expect("pool semaphores are never closed");
        let idle = lock(&pool.idle).pop();
        let session = match idle {
            Some(session) => session,
            None => {
                let session = self.connection(tenant).await?.clone();
                self.authenticate(tenant, &session).await?;
                session
            }
        };
        Ok(Borrowed {
            session: Some(session),
            pool,
            _permit: permit,
        })
    }

    /// Sends `USE` for `tenant` followed by `text`, on a pooled session. The reply's first
    /// result is the `USE`'s.
    async fn send(
        &self,
        tenant: &TenantContext,
        text: &str,
        vars: Option<&Map<String, Value>>,
    ) -> Result<std::result::Result<surrealdb::IndexedResults, surrealdb::Error>> {
        let session = self.borrow(tenant).await?;
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let mut query = session.query(use_prefix(tenant) + text);
        if let Some(vars) = vars {
            query = query.bind(Value::Object(vars.clone()));
        }
        Ok(query.await)
    }

    /// Authenticates `session` as `tenant`'s user: with the token of an earlier sign-in on
    /// the same endpoint when there is one, else by signing in (once, however many sessions
    /// ask at the same moment).
    async fn authenticate(&self, tenant: &TenantContext, session: &Surreal<Any>) -> Result<()> {
        if tenant.connection.credentials.is_none() {
            return Ok(());
        }
        let key = Self::user_key(tenant);
        let cell = Arc::clone(lock(&self.inner.tokens).entry(key).or_default());
        let mut token = cell.lock().await;
        if let Some(access) = token.clone() {
            drop(token);
            match session.authenticate(auth::Token::from(access)).await {
                Ok(_) => return Ok(()),
                Err(error) if error.is_connection() => return Err(classify(tenant, error)),
                // Expired or revoked: sign in again below.
                Err(error) => {
                    tracing::debug!(environment = %tenant.environment, %error, "cached access token refused; signing in again");
                }
            }
            token = cell.lock().await;
        }
        let signed_in = self.sign_in(tenant, session).await?;
        *token = Some(signed_in.access);
        Ok(())
    }

    /// Signs `session` in with `tenant`'s credentials (the server checks the password).
    async fn sign_in(&self, tenant: &TenantContext, session: &Surreal<Any>) -> Result<auth::Token> {
        let connection = &tenant.connection;
        let Some(credentials) = &connection.credentials else {
            return Err(RunnerError::Backend {
                environment: tenant.environment.clone(),
                source: "signing in without credentials".into(),
            });
        };
        let username = credentials.username.clone();
        let password = credentials.password.expose().to_owned();
        self.inner.sign_ins.fetch_add(1, Ordering::Relaxed);
        let signed_in = match credentials.level {
            AuthLevel::Root => session.signin(auth::Root { username, password }).await,
            AuthLevel::Namespace => {
                session
                    .signin(auth::Namespace {
                        namespace: connection.namespace.clone(),
                        username,
                        password,
                    })
                    .await
            }
            AuthLevel::Database => {
                session
                    .signin(auth::Database {
                        namespace: connection.namespace.clone(),
                        database: connection.database.clone(),
                        username,
                        password,
                    })
                    .await
            }
        };
        signed_in.map_err(|error| {
            if error.is_connection() {
                classify(tenant, error)
            } else {
                RunnerError::Authentication {
                    environment: tenant.environment.clone(),
                    endpoint: connection.redacted_url(),
                    username: credentials.username.clone(),
                    scope: auth_scope(tenant),
                    source: Box::new(error),
                }
            }
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or conflicts too often.
    async fn retrying<T, F, Fut>(&self, tenant: &TenantContext, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let attempts = self.inner.config.conflict_attempts.max(1);
        let mut pause = Duration::from_millis(5);
        for made in 1..=attempts {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Conflict(error)) if made == attempts => {
                    return Err(RunnerError::Conflict {
                        environment: tenant.environment.clone(),
                        attempts,
                        source: Box::new(error),
                    });
                }
                Err(Failure::Conflict(error)) => {
                    tracing::debug!(environment = %tenant.environment, %error, made, "write conflict; retrying");
                    tokio::time::sleep(jitter(pause)).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Sends `text` (whose body has `body_statements` statements besides any transaction
    /// markers) with `vars`, retrying the whole request on write conflicts. Statement errors
    /// other than conflicts are left in the response for the caller to interpret.
    async fn request(
        &self,
        tenant: &TenantContext,
        text: &str,
        vars: Option<&Map<String, Value>>,
        body_statements: usize,
    ) -> Result<Response> {
        self.retrying(tenant, || async {
            let raw = self
                .send(tenant, text, vars)
                .await
                .map_err(Failure::Fatal)?;
            let raw = raw.map_err(|error| {
                if is_conflict(&error) {
                    Failure::Conflict(error)
                } else {
                    Failure::Fatal(classify(tenant, error))
                }
            })?;
            let mut response = Response::new(raw, body_statements);
            if let Some(error) = response.prefix_error.take() {
                return Err(if is_conflict(&error) {
                    Failure::Conflict(error)
                } else {
                    Failure::Fatal(classify(tenant, error))
                });
            }
            match response.take_conflict() {
                Some(conflict) => Err(Failure::Conflict(conflict)),
                None => Ok(response),
            }
        })
        .await
    }

    fn history_table(&self, key: &DatabaseKey) -> Option<HistoryTable> {
        lock(&self.inner.history_tables)
            .get(&table_key(key))
            .copied()
    }

    /// Records what was seen of `key`'s history table; `None` forgets it, so the next lock
    /// request defines everything.
    fn set_history_table(&self, key: &DatabaseKey, seen: Option<HistoryTable>) {
        let mut tables = lock(&self.inner.history_tables);
        match seen {
            Some(seen) => tables.insert(table_key(key), seen),
            None => tables.remove(&table_key(key)),
        };
    }

    /// The lease of the lock held on `key`, and the history read when it was taken.
    fn take_held(
        &self,
        key: &DatabaseKey,
    ) -> Option<(Arc<LeaseState>, Option<Vec<AppliedMigration>>)> {
        lock(&self.inner.held)
            .get_mut(key)
            .map(|held| (Arc::clone(&held.lease), held.history.take()))
    }

    /// Applies (or reverts) `batch` in one request, each migration its own transaction, and
    /// on write conflicts sends again from the first one that did not commit.
    /// With `release`, the last migration's transaction also removes the lease (and `lease`
    /// records that it did). With `taking`, the request first takes the deferred lease (and
    /// `lease` records whether it did; when it did not, nothing ran).
    async fn apply_batch(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
        batch: Vec<&Migration>,
        lease: &LeaseState,
        release: bool,
        mut taking: Option<&Ask>,
    ) -> Batch {
        let key = tenant.database_key();
        let change = match plan.direction {
            Direction::Up => HistoryChange::Record,
            Direction::Down => HistoryChange::Remove,
        };
        let attempts = self.inner.config.conflict_attempts.max(1);
        let mut pause = Duration::from_millis(5);
        let mut conflicts = 0;
        let mut next = 0;
        while next < batch.len() {
            let pending = &batch[next..];
            // The take defines the history table.
            let define_history =
                taking.is_none() && self.history_table(&key) != Some(HistoryTable::Ready);
            let items: Vec<sql::Item<'_>> = pending
                .iter()
                .map(|m| sql::Item {
                    id: sql::record_id(m.version.as_str()),
                    statements: statements_of(m, plan.direction).0,
                })
                .collect();
            let request = sql::batch(
                &items,
                change,
                define_history,
                release,
                taking.map(|deferred| deferred.lease),
            );
            let mut vars = batch_vars(plan, pending, &lease.token);
            if let Some(ask) = taking {
                vars.extend(ask.vars.clone());
                *lease.take_state() = Take::Sending;
            }
            let outcomes = match self.send(tenant, &request.text, Some(&vars)).await {
                Ok(Ok(raw)) => block_outcomes(raw, &request.layouts),
                Ok(Err(error)) => Err(error),
                Err(error) => {
                    if taking.is_some() {
                        // Not sent (no session to send it on): asking for the lock on its own
                        // would only meet the same error after another connect timeout.
                        *lease.take_state() = Take::NotTaken;
                    }
                    return Batch::failed(next, error);
                }
            };
            let outcomes = match outcomes {
                Ok(outcomes) => {
                    if taking.take().is_some() {
                        match outcomes.first() {
                            Some(BlockOutcome::Committed) => {
                                *lease.take_state() = Take::Taken;
                                self.set_history_table(&key, Some(HistoryTable::Ready));
                            }
                            // The first migration failed after the take, which was undone
                            // with it: a failure like any other, reported below.
                            Some(BlockOutcome::Failed(position, _))
                                if *position >= sql::TAKE_FRESH_STATEMENTS =>
                            {
                                *lease.take_state() = Take::NotTaken;
                            }
                            // The take failed (someone holds the lease, or the target is no
                            // longer the empty one the probe saw) or conflicted: nothing
                            // ran, the fences stopped the rest.
                            _ => {
                                *lease.take_state() = Take::Refused;
                                return Batch::failed(
                                    0,
                                    RunnerError::LockLost {
                                        environment: tenant.environment.clone(),
                                    },
                                );
                            }
                        }
                    }
                    outcomes
                }
                Err(error) => {
                    // What the request did is unknown (a lost connection, a reply we cannot
                    // read): history says which of its migrations committed — but not
                    // whether this request took the lease, or someone else who then applied
                    // the same migrations: that stays a failure (`Sending`), and a rerun
                    // finds whatever committed.
                    if taking.is_some() {
                        return Batch::failed(next, classify(tenant, error));
                    }
                    let Some(committed) = self.committed_of(tenant, plan, pending).await else {
                        return Batch::failed(next, classify(tenant, error));
                    };
                    next += committed;
                    if next == batch.len() {
                        // Every migration committed; only the reply was lost. The last
                        // transaction removed the lease too when it was asked to, so the
                        // guard must not look for it (it would report the lock lost).
                        if release {
                            lease.released.store(true, Ordering::SeqCst);
                        }
                        return Batch::committed(next);
                    }
                    if is_conflict(&error) && conflicts + 1 < attempts {
                        conflicts += 1;
                        tokio::time::sleep(jitter(pause)).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                        continue;
                    }
                    return Batch::failed(next, classify(tenant, error));
                }
            };
            if define_history && matches!(outcomes.first(), Some(BlockOutcome::Committed)) {
                self.set_history_table(&key, Some(HistoryTable::Ready));
            }
            let mut outcomes = outcomes
                .into_iter()
                .zip(pending.iter().zip(&request.layouts));
            for (outcome, (migration, layout)) in outcomes.by_ref() {
                match outcome {
                    BlockOutcome::Committed => {
                        next += 1;
                        if layout.releases {
                            lease.released.store(true, Ordering::SeqCst);
                        }
                    }
                    BlockOutcome::Conflict(error) => {
                        conflicts += 1;
                        if conflicts >= attempts {
                            return Batch::failed(
                                next,
                                RunnerError::Conflict {
                                    environment: tenant.environment.clone(),
                                    attempts,
                                    source: Box::new(error),
                                },
                            );
                        }
                        tracing::debug!(environment = %tenant.environment, %error, conflicts, "write conflict; sending the rest again");
                        tokio::time::sleep(jitter(pause)).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                        break;
                    }
                    BlockOutcome::Failed(position, error) => {
                        let error = block_error(
                            tenant,
                            plan.direction,
                            migration,
                            *layout,
                            position,
                            error,
                        );
                        return Batch::failed(next, error);
                    }
                }
            }
        }
        Batch::committed(batch.len())
    }

    /// How many of `pending`, from the first, history shows done in `plan`'s direction;
    /// `None` when history cannot be read.
    async fn committed_of(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
        pending: &[&Migration],
    ) -> Option<usize> {
        let history = self.history(tenant).await.ok()?;
        let applied: HashSet<&Version> = history.iter().map(|row| &row.version).collect();
        Some(
            pending
                .iter()
                .take_while(|m| applied.contains(&m.version) == (plan.direction == Direction::Up))
                .count(),
        )
    }

    /// Runs `plan` from `history` under `lease`, the first request taking the lease when it
    /// is `deferred`.
    async fn run(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
        history: &[AppliedMigration],
        lease: &LeaseState,
        deferred: Option<&Ask>,
    ) -> Result<MigrationResult> {
        let mut taking = deferred;
        run_batched(tenant, plan, history, BATCH, |batch, last| {
            self.apply_batch(
                tenant,
                plan,
                batch,
                lease,
                last && plan.release_after,
                taking.take(),
            )
        })
        .await
    }

    /// Takes the lock `request` asks for, waiting for a live lease to go away; returns the
    /// lease, the history read with it, and the expired lease it replaced.
    async fn acquire_waiting(
        &self,
        tenant: &TenantContext,
        request: &Ask,
    ) -> Result<((LockInfo, Vec<AppliedMigration>), Option<LockInfo>)> {
        let outcome = wait_for_lock(request.wait, || {
            self.try_acquire(tenant, request.lease, &request.vars)
        })
        .await?;
        let acquired = outcome.map_err(|(holder, waited)| RunnerError::LockHeld {
            environment: tenant.environment.clone(),
            holder,
            waited,
        })?;
        if let Some(previous) = &acquired.1 {
            tracing::warn!(environment = %tenant.environment, previous_owner = %previous.owner, "took over an expired migration lock");
        }
        // The acquiring transaction defined the history table.
        self.set_history_table(&tenant.database_key(), Some(HistoryTable::Ready));
        Ok(acquired)
    }

    async fn try_acquire(
        &self,
        tenant: &TenantContext,
        lease: Duration,
        vars: &Map<String, Value>,
    ) -> Result<Attempt<(LockInfo, Vec<AppliedMigration>)>> {
        let key = tenant.database_key();
        let mut value = loop {
            let definitions = match self.history_table(&key) {
                Some(HistoryTable::Ready) => Definitions::None,
                Some(HistoryTable::Absent) => Definitions::Fresh,
                None => Definitions::All,
            };
            let statements = sql::acquire_statements(definitions);
            let text = sql::acquire(lease, definitions);
            let mut response = self.request(tenant, &text, Some(vars), statements).await?;
            if let Some((_, error)) = response.failure() {
                let stale = match definitions {
                    // Removed since we saw it.
                    Definitions::None => is_missing_table(&error),
                    // Not the empty target the health probe saw: the history table made
                    // meanwhile (by another tool, or a deploy racing this one), a lease left
                    // behind, a server that makes only defined tables. The request with
                    // every definition handles each, and reports what is really wrong.
                    Definitions::Fresh => true,
                    Definitions::All => false,
                };
                if stale {
                    self.set_history_table(&key, None);
                    continue;
                }
                return Err(classify(tenant, error));
            }
            break response
                .take(statements - 1)
                .map_err(|e| classify(tenant, e))?;
        };
        let acquired = value.get("acquired").and_then(Value::as_bool) == Some(true);
        let previous = lease_info(value.get("previous"));
        let current = lease_info(value.get("current"));
        match (acquired, current, previous) {
            (true, Some(current), previous) => {
                let rows = value
                    .get_mut("history")
                    .map(Value::take)
                    .unwrap_or(Value::Array(Vec::new()));
                let history = history_from_rows(tenant, rows)?;
                Ok(Attempt::Acquired((current, history), previous))
            }
            (false, _, Some(holder)) => Ok(Attempt::Held(holder)),
            _ => Err(RunnerError::Backend {
                environment: tenant.environment.clone(),
                source: format!("unexpected answer to the lock request: {value}").into(),
            }),
        }
    }
}

/// Whether `plan` has anything to do on a target without history.
fn applies_on_empty(tenant: &TenantContext, plan: &MigrationPlan) -> Result<bool> {
    Ok(!flotilla_runner::execute::steps(tenant, plan, &[])?.is_empty())
}

/// History rows as the database returned them, as applied migrations, oldest first.
fn history_from_rows(tenant: &TenantContext, rows: Value) -> Result<Vec<AppliedMigration>> {
    let rows: Vec<HistoryRow> = serde_json::from_value(rows).map_err(|e| RunnerError::Backend {
        environment: tenant.environment.clone(),
        source: format!("unreadable {} row: {e}", sql::HISTORY_TABLE).into(),
    })?;
    let mut history = Vec::with_capacity(rows.len());
    for row in rows {
        let version = Version::parse(&row.version).ok_or_else(|| RunnerError::Backend {
            environment: tenant.environment.clone(),
            source: format!(
                "{} has a row with version `{}`, which is not a migration version",
                sql::HISTORY_TABLE,
                row.version
            )
            .into(),
        })?;
        history.push(AppliedMigration {
            version,
            description: row.description.unwrap_or_default(),
            checksum: row.checksum.unwrap_or_default(),
            applied_at: row.applied_at,
            execution_time_ms: row.execution_time_ms,
            applied_by: row.applied_by,
            deployment_id: row.deployment_id,
        });
    }
    history.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(history)
}

/// Migrations sent in one request: enough to make a fleet's usual handful one round trip,
/// few enough to keep a request and its reply small.
const BATCH: usize = 32;

/// The statements a migration runs in `direction`, and the file they come from.
fn statements_of(migration: &Migration, direction: Direction) -> (&[Statement], &Path) {
    match direction {
        Direction::Up => (&migration.up, migration.path.as_path()),
        Direction::Down => (
            migration.down.as_ref().unwrap_or(&migration.up),
            migration.down_file(),
        ),
    }
}

/// The variables of a [`sql::batch`] of `pending`.
fn batch_vars(plan: &MigrationPlan, pending: &[&Migration], token: &str) -> Map<String, Value> {
    let mut vars = Map::new();
    vars.insert("fl_token".into(), json!(token));
    vars.insert("fl_applied_by".into(), json!(plan.applied_by));
    if let Some(id) = &plan.deployment_id {
        // Unbound means NONE; a bound null would not fit `option<string>`.
        vars.insert("fl_deployment".into(), json!(id));
    }
    for (k, migration) in pending.iter().enumerate() {
        let version = migration.version.as_str();
        vars.insert(format!("fl_version_{k}"), json!(version));
        vars.insert(format!("fl_description_{k}"), json!(migration.description));
        vars.insert(format!("fl_checksum_{k}"), json!(migration.checksum));
    }
    vars
}

/// What became of one transaction of a batch.
#[derive(Debug)]
enum BlockOutcome {
    Committed,
    /// A write conflict: worth sending again.
    Conflict(surrealdb::Error),
    /// Failed at this body position (the body's length when `COMMIT` itself failed).
    Failed(usize, surrealdb::Error),
}

/// Splits a batch's results into one outcome per transaction. Every transaction contributes
/// `BEGIN`, its body and `COMMIT`; a reply of another shape is an error (its effect is then
/// read from history).
fn block_outcomes(
    mut raw: surrealdb::IndexedResults,
    layouts: &[sql::Layout],
) -> std::result::Result<Vec<BlockOutcome>, surrealdb::Error> {
    // The leading `USE`, then each transaction.
    let expected: usize = 1 + layouts.iter().map(|l| l.body() + 2).sum::<usize>();
    if raw.num_statements() != expected {
        return Err(surrealdb::Error::internal(format!(
            "expected {expected} results from the migration request, got {}",
            raw.num_statements()
        )));
    }
    let mut errors: Vec<(usize, surrealdb::Error)> = raw.take_errors().into_iter().collect();
    errors.sort_by_key(|(index, _)| *index);
    if errors.first().is_some_and(|(index, _)| *index == 0) {
        // `USE` failed: nothing ran.
        return Err(errors.swap_remove(0).1);
    }
    let mut errors = errors.into_iter().peekable();
    let mut outcomes = Vec::with_capacity(layouts.len());
    let mut base = 1;
    for layout in layouts {
        let end = base + layout.body() + 2;
        let mut mine = Vec::new();
        while let Some((index, _)) = errors.peek()
            && *index < end
        {
            mine.extend(errors.next());
        }
        outcomes.push(if mine.is_empty() {
            BlockOutcome::Committed
        } else if let Some(at) = mine.iter().position(|(_, e)| is_conflict(e)) {
            BlockOutcome::Conflict(mine.swap_remove(at).1)
        } else {
            let at = mine
                .iter()
                .position(|(_, e)| !is_not_executed(e))
                .unwrap_or(0);
            let (index, error) = mine.swap_remove(at);
            // Body positions start after `BEGIN`.
            BlockOutcome::Failed(index.saturating_sub(base + 1), error)
        });
        base = end;
    }
    Ok(outcomes)
}

/// The error for a batch transaction that failed at body `position`.
fn block_error(
    tenant: &TenantContext,
    direction: Direction,
    migration: &Migration,
    layout: sql::Layout,
    position: usize,
    error: surrealdb::Error,
) -> RunnerError {
    let (statements, file) = statements_of(migration, direction);
    let statements_end = layout.prelude + layout.statements;
    if position < layout.prelude {
        if error.message().contains(LOCK_LOST) {
            RunnerError::LockLost {
                environment: tenant.environment.clone(),
            }
        } else {
            classify(tenant, error)
        }
    } else if position < statements_end {
        let index = position - layout.prelude;
        RunnerError::StatementFailed {
            environment: tenant.environment.clone(),
            version: migration.version.clone(),
            file: file.to_path_buf(),
            statement: index + 1,
            line: statements[index].line,
            message: error.message().to_owned(),
        }
    } else {
        let doing = if position == statements_end {
            "recording"
        } else if layout.releases && position == statements_end + 1 {
            "releasing the lock after"
        } else {
            "committing"
        };
        RunnerError::Backend {
            environment: tenant.environment.clone(),
            source: format!(
                "{doing} migration {} in {}: {}",
                migration.version,
                sql::HISTORY_TABLE,
                error.message()
            )
            .into(),
        }
    }
}

/// A query's per-statement results, with transaction markers accounted for.
struct Response {
    inner: surrealdb::IndexedResults,
    /// The leading `USE`'s error, if it failed.
    prefix_error: Option<surrealdb::Error>,
    /// Statement errors by body position, in order.
    errors: Vec<(usize, surrealdb::Error)>,
    /// Results before the body's first statement (the `USE`, and `BEGIN` when there is one).
    offset: usize,
}

impl Response {
    /// `inner` answers a [`use_prefix`] and then a body of `body_statements` statements,
    /// possibly between `BEGIN` and `COMMIT`.
    fn new(mut inner: surrealdb::IndexedResults, body_statements: usize) -> Self {
        let offset = 1 + inner.num_statements().saturating_sub(1 + body_statements) / 2;
        let mut prefix_error = None;
        let mut errors: Vec<(usize, surrealdb::Error)> = Vec::new();
        for (index, error) in inner.take_errors() {
            if index == 0 {
                prefix_error = Some(error);
            } else {
                errors.push((index.saturating_sub(offset), error));
            }
        }
        errors.sort_by_key(|(index, _)| *index);
        Self {
            inner,
            prefix_error,
            errors,
            offset,
        }
    }

    /// A write conflict anywhere in the request: the whole request should be retried.
    fn take_conflict(&mut self) -> Option<surrealdb::Error> {
        let at = self.errors.iter().position(|(_, e)| is_conflict(e))?;
        Some(self.errors.remove(at).1)
    }

    /// The statement that made the request fail: the first error that is not merely
    /// "not executed because the transaction failed", as a body position.
    fn failure(&mut self) -> Option<(usize, surrealdb::Error)> {
        let at = self
            .errors
            .iter()
            .position(|(_, e)| !is_not_executed(e))
            .or(if self.errors.is_empty() {
                None
            } else {
                Some(0)
            })?;
        Some(self.errors.remove(at))
    }

    /// Body statement `index`'s result, or its error.
    fn take(&mut self, index: usize) -> std::result::Result<Value, surrealdb::Error> {
        if let Some(at) = self.errors.iter().position(|(i, _)| *i == index) {
            return Err(self.errors.remove(at).1);
        }
        take_json(&mut self.inner, index + self.offset)
    }
}

/// A lease row as the database returns it.
#[derive(serde::Deserialize)]
struct LeaseRow {
    host: String,
    pid: u32,
    #[serde(default)]
    deployment_id: Option<String>,
    acquired_at: String,
    expires_at: String,
    #[serde(default)]
    expired: bool,
}

fn lease_row(value: Option<&Value>) -> Option<LeaseRow> {
    let value = value?;
    let value = match value {
        Value::Array(rows) => rows.first()?,
        other => other,
    };
    serde_json::from_value(value.clone()).ok()
}

fn lease_info(value: Option<&Value>) -> Option<LockInfo> {
    lease_row(value).map(|row| LockInfo {
        owner: LockOwner {
            host: row.host,
            pid: row.pid,
            deployment_id: row.deployment_id,
        },
        acquired_at: row.acquired_at,
        expires_at: row.expires_at,
    })
}

/// A history row as the database returns it (rows written by the surql toolkit lack
/// flotilla's optional fields).
#[derive(serde::Deserialize)]
struct HistoryRow {
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    applied_at: Option<String>,
    #[serde(default)]
    execution_time_ms: Option<u64>,
    #[serde(default)]
    applied_by: Option<String>,
    #[serde(default)]
    deployment_id: Option<String>,
}

fn new_token(owner: &LockOwner) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}:{}:{}:{nanos}",
        owner.host,
        owner.pid,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait]
impl MigrationRunner for SurrealRunner {
    async fn health(&self, tenant: &TenantContext) -> Result<HealthStatus> {
        let started = Instant::now();
        let (lease, history) = self.probe(tenant).await?;
        let latency = started.elapsed();
        let holder = match lease {
            Ok(value) => lease_row(Some(&value))
                .filter(|row| !row.expired)
                .and_then(|_| lease_info(Some(&value))),
            Err(error) if is_missing_table(&error) => None,
            Err(error) => return Err(classify(tenant, error)),
        };
        // An unreadable history is reported by `history`, not by the health probe.
        let (initialised, history) = match history {
            Ok(rows) => {
                // The lock request may now leave the definitions out. A table another tool
                // made (surql's, without flotilla's two fields) comes without flotilla's lock
                // table, so that request fails on the missing lock table and is sent again
                // with every definition — the server test probes health first to keep it so.
                self.set_history_table(&tenant.database_key(), Some(HistoryTable::Ready));
                (true, history_from_rows(tenant, rows).ok())
            }
            Err(error) if is_missing_table(&error) => {
                // The lock request may define it plainly, without the fields a table
                // another tool made would need.
                self.set_history_table(&tenant.database_key(), Some(HistoryTable::Absent));
                (false, Some(Vec::new()))
            }
            Err(_) => (true, None),
        };
        let url = &tenant.connection.url;
        let cached = lock(&self.inner.server_versions).get(url).cloned();
        let server_version = match cached {
            Some(version) => Some(version),
            None => {
                let base = self.connection(tenant).await?;
                let asked = base.version().await.ok().map(|v| v.to_string());
                if let Some(version) = &asked {
                    lock(&self.inner.server_versions).insert(url.clone(), version.clone());
                }
                asked
            }
        };
        Ok(HealthStatus {
            latency,
            initialised,
            lock: holder,
            server_version,
            history,
        })
    }

    async fn history(&self, tenant: &TenantContext) -> Result<Vec<AppliedMigration>> {
        let mut response = self.request(tenant, sql::SELECT_HISTORY, None, 1).await?;
        let rows: Value = match response.take(0) {
            Ok(rows) => rows,
            Err(error) if is_missing_table(&error) => return Ok(Vec::new()),
            Err(error) => return Err(classify(tenant, error)),
        };
        history_from_rows(tenant, rows)
    }

    async fn acquire_lock(
        &self,
        tenant: &TenantContext,
        request: &LockRequest,
    ) -> Result<Box<dyn LockGuard>> {
        let token = new_token(&request.owner);
        let mut vars = Map::new();
        vars.insert("fl_token".into(), json!(token));
        vars.insert("fl_host".into(), json!(request.owner.host));
        vars.insert("fl_pid".into(), json!(request.owner.pid));
        if let Some(id) = &request.owner.deployment_id {
            vars.insert("fl_lock_deployment".into(), json!(id));
        }
        let key = tenant.database_key();
        let ask = Ask {
            vars,
            lease: request.lease,
            wait: request.wait,
        };
        let (take, info, took_over, history) =
            if request.deferrable && self.history_table(&key) == Some(HistoryTable::Absent) {
                // A never-migrated target, about to be migrated: the apply request takes
                // the lease (one round trip fewer). Until then the lease's times are ours.
                let now = SystemTime::now();
                let info = LockInfo {
                    owner: request.owner.clone(),
                    acquired_at: rfc3339(now),
                    expires_at: rfc3339(now + request.lease),
                };
                (Take::Deferred(ask), info, None, Vec::new())
            } else {
                let ((info, history), took_over) = self.acquire_waiting(tenant, &ask).await?;
                (Take::Taken, info, took_over, history)
            };
        let lease = Arc::new(LeaseState {
            token,
            take: Mutex::new(take),
            released: AtomicBool::new(false),
            info: Mutex::new(info),
            took_over: Mutex::new(took_over),
        });
        lock(&self.inner.held).insert(
            key.clone(),
            Held {
                lease: Arc::clone(&lease),
                history: Some(history),
            },
        );

        let renew_runner = self.clone();
        let renew_tenant = tenant.clone();
        let renew_text = sql::renew(request.lease);
        let mut renew_vars = Map::new();
        renew_vars.insert("fl_token".into(), json!(lease.token));
        let renewed = Arc::clone(&lease);
        let heartbeat = Heartbeat::spawn(request.lease, move || {
            let runner = renew_runner.clone();
            let tenant = renew_tenant.clone();
            let text = renew_text.clone();
            let vars = renew_vars.clone();
            // Released with the last migration (the guard stops us on release), or not
            // (known to be) on the target yet.
            let idle = renewed.released.load(Ordering::SeqCst) || !renewed.is_taken();
            async move {
                if idle {
                    return Ok(true);
                }
                let mut response = runner.request(&tenant, &text, Some(&vars), 1).await?;
                let tokens = response.take(0).map_err(|e| classify(&tenant, e))?;
                Ok(tokens.as_array().is_some_and(|t| !t.is_empty()))
            }
        });
        Ok(Box::new(SurrealLockGuard {
            runner: self.clone(),
            tenant: tenant.clone(),
            key,
            lease,
            heartbeat,
            released: false,
        }))
    }

    async fn break_lock(&self, tenant: &TenantContext) -> Result<Option<LockInfo>> {
        let mut response = self.request(tenant, &sql::break_lock(), None, 4).await?;
        if let Some((_, error)) = response.failure() {
            return Err(classify(tenant, error));
        }
        let previous = response.take(3).map_err(|e| classify(tenant, e))?;
        Ok(lease_info(Some(&previous)))
    }

    async fn execute_migration(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
    ) -> Result<MigrationResult> {
        let key = tenant.database_key();
        let Some((lease, history)) = self.take_held(&key) else {
            return Err(RunnerError::NotLocked {
                environment: tenant.environment.clone(),
            });
        };
        let deferred = match &*lease.take_state() {
            Take::Deferred(deferred) => Some(deferred.clone()),
            _ => None,
        };
        let Some(deferred) = deferred else {
            // History read in the transaction that took the lease is current: every write
            // since is fenced by that lease. A second execution under the same lease reads
            // again.
            let history = match history {
                Some(history) => history,
                None => self.history(tenant).await?,
            };
            return self.run(tenant, plan, &history, &lease, None).await;
        };
        // The apply request takes the lease when there is something to apply: its take is
        // what checks the target is still the empty one the probe saw. With nothing to apply
        // (a revert, a plan without migrations) the lock is taken the usual way.
        if applies_on_empty(tenant, plan)? {
            let outcome = self.run(tenant, plan, &[], &lease, Some(&deferred)).await;
            if !matches!(*lease.take_state(), Take::Refused) {
                return outcome;
            }
            // The take failed, so nothing ran: someone holds the lock, or the target is no
            // longer the empty one the probe saw.
            self.set_history_table(&key, None);
        }
        // Take the lock as a request of its own (waiting for a live lease as `acquire_lock`
        // would), and work from the history read with it.
        let ((info, history), took_over) = self.acquire_waiting(tenant, &deferred).await?;
        *lock(&lease.info) = info;
        *lock(&lease.took_over) = took_over;
        *lease.take_state() = Take::Taken;
        self.run(tenant, plan, &history, &lease, None).await
    }
}

#[derive(Debug)]
struct SurrealLockGuard {
    runner: SurrealRunner,
    tenant: TenantContext,
    key: DatabaseKey,
    lease: Arc<LeaseState>,
    heartbeat: Heartbeat,
    released: bool,
}

impl SurrealLockGuard {
    fn forget(&self) {
        let mut held = lock(&self.runner.inner.held);
        if held
            .get(&self.key)
            .is_some_and(|h| Arc::ptr_eq(&h.lease, &self.lease))
        {
            held.remove(&self.key);
        }
    }
}

#[async_trait]
impl LockGuard for SurrealLockGuard {
    fn info(&self) -> LockInfo {
        lock(&self.lease.info).clone()
    }

    fn took_over(&self) -> Option<LockInfo> {
        lock(&self.lease.took_over).clone()
    }

    async fn release(mut self: Box<Self>) -> Result<()> {
        self.heartbeat.stop();
        self.released = true;
        self.forget();
        if self.lease.released.load(Ordering::SeqCst) {
            // The transaction that committed the last migration removed the lease, fenced
            // by it: nothing left to do.
            return Ok(());
        }
        let must_exist = match *self.lease.take_state() {
            Take::Taken => true,
            // The request that took it lost its reply: remove it if it is there.
            Take::Sending => false,
            // Never on the target.
            Take::Deferred(_) | Take::Refused | Take::NotTaken => return Ok(()),
        };
        let mut vars = Map::new();
        vars.insert("fl_token".into(), json!(self.lease.token));
        let tenant = &self.tenant;
        let mut response = self
            .runner
            .request(tenant, sql::RELEASE, Some(&vars), 1)
            .await?;
        let deleted = response
            .take(0)
            .map_err(|e| classify(tenant, e))?
            .as_array()
            .is_some_and(|rows| !rows.is_empty());
        if deleted || !must_exist {
            Ok(())
        } else {
            Err(RunnerError::LockLost {
                environment: tenant.environment.clone(),
            })
        }
    }
}

impl Drop for SurrealLockGuard {
    fn drop(&mut self) {
        if !self.released {
            tracing::warn!(environment = %self.tenant.environment, "migration lock guard dropped without release; the lease will expire");
            self.forget();
        }
    }
}

/// JSON with object keys sorted, whatever order the database produced them in.
fn canonical(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sort(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

/// Statement `index`'s result as JSON (datetimes and record ids become strings).
fn take_json(
    response: &mut surrealdb::IndexedResults,
    index: usize,
) -> std::result::Result<Value, surrealdb::Error> {
    response
        .take::<surrealdb::types::Value>(index)
        .map(surrealdb::types::Value::into_json_value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::Connection;

    fn tenant(namespace: &str) -> TenantContext {
        TenantContext::new(
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
        let admin = runner.connection(&tenant("setup")).await.expect("connect");
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
        let first = runner.borrow(&tenant("t1")).await.expect("first session");
        assert_eq!(runner.sign_in_count(), 1);
        let second = runner.borrow(&tenant("t2")).await.expect("second session");
        assert_eq!(runner.sign_in_count(), 1, "the second one used the token");
        define_user(&runner).await;
        // Both pooled sessions are busy, so a third is opened: the old token no longer
        // verifies.
        let third = runner.borrow(&tenant("t3")).await.expect("third session");
        assert_eq!(runner.sign_in_count(), 2, "signed in again, once");
        let mut reply = third
            .query(use_prefix(&tenant("t3")) + "RETURN 1")
            .await
            .expect("query");
        assert!(reply.take_errors().is_empty());
        drop((first, second, third));
    }

    #[tokio::test]
    async fn a_request_names_its_target_whatever_the_names() {
        let runner = SurrealRunner::new();
        let odd = TenantContext::new("odd", Connection::new("mem://", "a-b`c\\d e", "x.y-z"));
        let mut response = runner
            .request(&odd, "RETURN [session::ns(), session::db()]", None, 1)
            .await
            .expect("request");
        let names = response.take(0).expect("names");
        assert_eq!(names, json!(["a-b`c\\d e", "x.y-z"]));
    }
}
