//! Connections to endpoints, and the signed-in sessions requests borrow from them.
//!
//! - One connection per endpoint URL, shared by every target on it. A connect that fails is
//!   remembered for one connect timeout: every target on a dead or silent endpoint fails with
//!   it at once, instead of each waiting out a connect timeout of its own.
//! - A connection a request found broken (a lost reply, a timeout) is dropped, and the next
//!   request connects afresh; sessions of the old connection are not reused.
//! - Per endpoint and user, two pools of signed-in sessions: one for deploy requests, and a
//!   small one for lease upkeep (renewals, releases), so a heartbeat never queues behind
//!   migrations however many run at once.
//! - Each user signs in with its password once per endpoint (the server checks it with
//!   argon2, slow by design); every other session authenticates with that sign-in's token.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_core::{AuthLevel, sha256_hex};
use flotilla_runner::util::lock_unpoisoned;
use flotilla_runner::{Result, RunnerError, Target};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::opt::auth;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::SurrealConfig;
use crate::errors::{auth_scope, classify, driver, is_conflict};

/// Sessions per endpoint and user for deploy requests: enough for every request of a deploy's
/// concurrency to have its own, few enough to stay far below a server's limit on sessions per
/// WebSocket connection (SurrealDB's default is 256).
const DEPLOY_SESSIONS: usize = 32;

/// Sessions per endpoint and user for renewals and releases.
const UPKEEP_SESSIONS: usize = 4;

/// Which pool a request borrows from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Probes, history reads, locks, migrations.
    Deploy,
    /// Lease renewals and releases.
    Upkeep,
}

/// Whose sessions and access token: the endpoint, the user, the namespace/database a
/// namespace or database user signs in to, and (as a hash) the password, so two environments
/// naming one user with different passwords never share a token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct UserKey {
    url: String,
    username: String,
    level: AuthLevel,
    scope: (Option<String>, Option<String>),
    password: String,
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKey")
            .field("url", &flotilla_core::redact_url(&self.url))
            .field("username", &self.username)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl UserKey {
    /// Who `target` signs in as on which endpoint.
    pub(crate) fn of(target: &Target) -> Self {
        let connection = &target.connection;
        let Some(credentials) = &connection.credentials else {
            return Self {
                url: connection.url.clone(),
                username: String::new(),
                level: AuthLevel::Root,
                scope: (None, None),
                password: String::new(),
            };
        };
        Self {
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
            password: sha256_hex(&[credentials.password.expose().as_bytes()]),
        }
    }
}

/// A client of one connection, and which connection (endpoints are reconnected after a
/// failure; sessions of an older connection are not reused).
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) client: Surreal<Any>,
    generation: u64,
}

/// Why connecting to an endpoint failed, remembered for a connect timeout.
#[derive(Clone, Debug)]
enum ConnectFailure {
    TimedOut(Duration),
    Refused(String),
}

#[derive(Default)]
struct EndpointState {
    client: Option<Session>,
    failed: Option<(Instant, ConnectFailure)>,
    generation: u64,
}

#[derive(Default)]
struct Endpoint {
    /// One connect at a time per endpoint; the others wait and share its outcome.
    connecting: tokio::sync::Mutex<()>,
    state: Mutex<EndpointState>,
}

/// Sessions waiting to be borrowed, and permits bounding how many are out.
struct LanePool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Session>>,
}

impl LanePool {
    fn new(size: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(Vec::new()),
        }
    }
}

struct Pool {
    deploy: Arc<LanePool>,
    upkeep: Arc<LanePool>,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            deploy: Arc::new(LanePool::new(DEPLOY_SESSIONS)),
            upkeep: Arc::new(LanePool::new(UPKEEP_SESSIONS)),
        }
    }
}

/// The access token of a sign-in, shared by every session of that user on that endpoint.
type TokenCell = Arc<tokio::sync::Mutex<Option<auth::AccessToken>>>;

/// A borrowed session, given back to its pool when dropped unless it was discarded.
pub(crate) struct Borrowed {
    session: Option<Session>,
    lane: Arc<LanePool>,
    _permit: OwnedSemaphorePermit,
}

impl Borrowed {
    pub(crate) fn client(&self) -> &Surreal<Any> {
        &self.session.as_ref().expect("present until dropped").client
    }

    /// Which connection the session belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.generation)
    }

    /// Drops the session instead of giving it back: a request on it failed in a way that
    /// may leave it in an unknown state.
    pub(crate) fn discard(mut self) {
        self.session.take();
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            lock_unpoisoned(&self.lane.idle).push(session);
        }
    }
}

/// Connections, pools and tokens of one runner.
#[derive(Default)]
pub(crate) struct Sessions {
    config: SurrealConfig,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    pools: Mutex<HashMap<UserKey, Arc<Pool>>>,
    tokens: Mutex<HashMap<UserKey, TokenCell>>,
    server_versions: Mutex<HashMap<String, String>>,
    sign_ins: AtomicU64,
    connects: AtomicU64,
}

impl Sessions {
    pub(crate) fn new(config: SurrealConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub(crate) fn config(&self) -> &SurrealConfig {
        &self.config
    }

    pub(crate) fn sign_ins(&self) -> u64 {
        self.sign_ins.load(Ordering::Relaxed)
    }

    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    pub(crate) fn open_connections(&self) -> usize {
        lock_unpoisoned(&self.endpoints)
            .values()
            .filter(|e| lock_unpoisoned(&e.state).client.is_some())
            .count()
    }

    pub(crate) fn pool_count(&self) -> usize {
        lock_unpoisoned(&self.pools).len()
    }

    /// The connection to `target`'s endpoint: the open one, or a new one; a connect that
    /// failed less than a connect timeout ago fails again at once.
    pub(crate) async fn connection(&self, target: &Target) -> Result<Session> {
        let url = &target.connection.url;
        let endpoint = Arc::clone(
            lock_unpoisoned(&self.endpoints)
                .entry(url.clone())
                .or_default(),
        );
        if let Some(known) = self.known(&endpoint, target) {
            return known;
        }
        let _connecting = endpoint.connecting.lock().await;
        // Whoever held the lock before may have connected, or failed, meanwhile.
        if let Some(known) = self.known(&endpoint, target) {
            return known;
        }
        self.connects.fetch_add(1, Ordering::Relaxed);
        let timeout = self.config.connect_timeout;
        let connecting = surrealdb::engine::any::connect(url.as_str()).into_future();
        let outcome = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(ConnectFailure::Refused(driver(target, &error).to_string())),
            Err(_) => Err(ConnectFailure::TimedOut(timeout)),
        };
        let mut state = lock_unpoisoned(&endpoint.state);
        match outcome {
            Ok(client) => {
                state.generation += 1;
                let session = Session {
                    client,
                    generation: state.generation,
                };
                state.client = Some(session.clone());
                state.failed = None;
                Ok(session)
            }
            Err(failure) => {
                state.failed = Some((Instant::now(), failure.clone()));
                Err(connect_error(target, &failure, None))
            }
        }
    }

    /// The endpoint's open connection, or its remembered failure; `None`: connect.
    fn known(&self, endpoint: &Endpoint, target: &Target) -> Option<Result<Session>> {
        let state = lock_unpoisoned(&endpoint.state);
        if let Some(session) = &state.client {
            return Some(Ok(session.clone()));
        }
        match &state.failed {
            Some((at, failure)) if at.elapsed() < self.config.connect_timeout => {
                Some(Err(connect_error(target, failure, Some(at.elapsed()))))
            }
            _ => None,
        }
    }

    /// Forgets the connection of `generation` to `url` (if it is still the current one), so
    /// the next request connects afresh.
    pub(crate) fn invalidate(&self, url: &str, generation: u64) {
        let Some(endpoint) = lock_unpoisoned(&self.endpoints).get(url).cloned() else {
            return;
        };
        let mut state = lock_unpoisoned(&endpoint.state);
        if state
            .client
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            tracing::warn!(endpoint = %flotilla_core::redact_url(url), "dropping a connection that stopped answering");
            state.client = None;
        }
    }

    /// A session of `target`'s user on its endpoint, from `lane`'s pool, waiting for one to
    /// be free until `deadline` (none: as long as it takes). Requests sent on it must name
    /// their namespace and database first.
    pub(crate) async fn borrow(
        &self,
        target: &Target,
        lane: Lane,
        deadline: Option<Instant>,
    ) -> Result<Borrowed> {
        let pool = Arc::clone(
            lock_unpoisoned(&self.pools)
                .entry(UserKey::of(target))
                .or_default(),
        );
        let lane = match lane {
            Lane::Deploy => Arc::clone(&pool.deploy),
            Lane::Upkeep => Arc::clone(&pool.upkeep),
        };
        let acquiring = Arc::clone(&lane.permits).acquire_owned();
        let permit = match deadline {
            None => acquiring.await,
            Some(deadline) => tokio::time::timeout_at(deadline, acquiring)
                .await
                .map_err(|_| self.timeout(target, "with a free session"))?,
        }
        .map_err(|_| RunnerError::Backend {
            environment: target.environment.clone(),
            source: "the session pool was closed".into(),
        })?;
        let current = self.connection(target).await?;
        let idle = {
            let mut idle = lock_unpoisoned(&lane.idle);
            // Sessions of a connection since dropped are of no use.
            idle.retain(|s| s.generation == current.generation);
            idle.pop()
        };
        let session = match idle {
            Some(session) => session,
            None => {
                let session = Session {
                    client: current.client.clone(),
                    generation: current.generation,
                };
                self.authenticate(target, &session.client).await?;
                session
            }
        };
        Ok(Borrowed {
            session: Some(session),
            lane,
            _permit: permit,
        })
    }

    /// A new signed-in session on `target`'s namespace and database, outside the pools, for
    /// inspecting it.
    pub(crate) async fn open(&self, target: &Target) -> Result<Surreal<Any>> {
        let session = self.connection(target).await?.client.clone();
        self.authenticate(target, &session).await?;
        let connection = &target.connection;
        let mut backoff =
            flotilla_runner::Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
        // `USE` creates a missing namespace and database; sessions racing to create the same
        // ones conflict, and the loser simply asks again.
        for attempt in 1..=self.config.conflict_attempts.max(1) {
            let using = session
                .use_ns(connection.namespace.clone())
                .use_db(connection.database.clone())
                .into_future();
            match tokio::time::timeout(self.config.request_timeout, using).await {
                Err(_) => return Err(self.timeout(target, "the request")),
                Ok(Ok(_)) => return Ok(session),
                Ok(Err(error))
                    if is_conflict(&error) && attempt < self.config.conflict_attempts =>
                {
                    backoff.wait().await;
                }
                Ok(Err(error)) => return Err(classify(target, error)),
            }
        }
        Ok(session)
    }

    /// The server's version, asked once per endpoint; `None` when it does not say.
    pub(crate) async fn server_version(&self, target: &Target) -> Option<String> {
        let url = &target.connection.url;
        if let Some(version) = lock_unpoisoned(&self.server_versions).get(url) {
            return Some(version.clone());
        }
        let client = self.connection(target).await.ok()?.client;
        let asked =
            tokio::time::timeout(self.config.request_timeout, client.version().into_future())
                .await
                .ok()?
                .ok()?
                .to_string();
        lock_unpoisoned(&self.server_versions).insert(url.clone(), asked.clone());
        Some(asked)
    }

    pub(crate) fn timeout(&self, target: &Target, what: &'static str) -> RunnerError {
        RunnerError::Timeout {
            environment: target.environment.clone(),
            endpoint: target.connection.redacted_url(),
            what,
            after: self.config.request_timeout,
        }
    }

    /// Authenticates `session` as `target`'s user: with the token of an earlier sign-in on
    /// the same endpoint when there is one, else by signing in (once, however many sessions
    /// ask at the same moment).
    async fn authenticate(&self, target: &Target, session: &Surreal<Any>) -> Result<()> {
        if target.connection.credentials.is_none() {
            return Ok(());
        }
        let key = UserKey::of(target);
        let cell = Arc::clone(lock_unpoisoned(&self.tokens).entry(key).or_default());
        let mut token = cell.lock().await;
        if let Some(access) = token.clone() {
            drop(token);
            let authenticating = session
                .authenticate(auth::Token::from(access))
                .into_future();
            match tokio::time::timeout(self.config.request_timeout, authenticating).await {
                Err(_) => return Err(self.timeout(target, "the sign-in")),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error)) if error.is_connection() => return Err(classify(target, error)),
                // Expired or revoked: sign in again below.
                Ok(Err(error)) => {
                    tracing::debug!(environment = %target.environment, error = %driver(target, &error), "cached access token refused; signing in again");
                }
            }
            token = cell.lock().await;
        }
        let signed_in = self.sign_in(target, session).await?;
        *token = Some(signed_in.access);
        Ok(())
    }

    /// Signs `session` in with `target`'s credentials (the server checks the password).
    async fn sign_in(&self, target: &Target, session: &Surreal<Any>) -> Result<auth::Token> {
        let connection = &target.connection;
        let Some(credentials) = &connection.credentials else {
            return Err(RunnerError::Backend {
                environment: target.environment.clone(),
                source: "signing in without credentials".into(),
            });
        };
        let username = credentials.username.clone();
        let password = credentials.password.expose().to_owned();
        self.sign_ins.fetch_add(1, Ordering::Relaxed);
        let signing_in = async {
            match credentials.level {
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
            }
        };
        let signed_in = tokio::time::timeout(self.config.request_timeout, signing_in)
            .await
            .map_err(|_| self.timeout(target, "the sign-in"))?;
        signed_in.map_err(|error| {
            if error.is_connection() {
                classify(target, error)
            } else {
                RunnerError::Authentication {
                    environment: target.environment.clone(),
                    endpoint: connection.redacted_url(),
                    username: credentials.username.clone(),
                    scope: auth_scope(target),
                    source: driver(target, &error),
                }
            }
        })
    }
}

/// The error for a connect that failed `ago` (none: just now).
fn connect_error(target: &Target, failure: &ConnectFailure, ago: Option<Duration>) -> RunnerError {
    let endpoint = target.connection.redacted_url();
    match failure {
        ConnectFailure::TimedOut(after) => RunnerError::Timeout {
            environment: target.environment.clone(),
            endpoint,
            what: if ago.is_some() {
                "a connection (an attempt moments ago)"
            } else {
                "a connection"
            },
            after: *after,
        },
        ConnectFailure::Refused(message) => RunnerError::Unreachable {
            environment: target.environment.clone(),
            endpoint,
            source: match ago {
                None => message.clone().into(),
                Some(ago) => format!(
                    "{message} (connecting failed {} ago; not retried yet)",
                    flotilla_core::format_duration(Duration::from_millis(
                        u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)
                    ))
                )
                .into(),
            },
        },
    }
}
