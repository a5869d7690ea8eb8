//! An in-memory runner: the reference implementation of the seam, suitable for testing,
//! with injectable faults (a failing statement, a dropped connection, a reply lost after its
//! commit, a lock held elsewhere).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flotilla_core::{AppliedMigration, Migration, Statement, Version, rfc3339};
use tokio::time::Instant;

use crate::error::{Result, RunnerError};
use crate::execute::{reconcile, run_steps, statements_of};
use crate::lock::{
    Attempt, Heartbeat, LocalHold, LocalLocks, LockGuard, LockInfo, LockOwner, LockRequest,
    Renewal, wait_for_lock,
};
use crate::runner::MigrationRunner;
use crate::target::{DatabaseKey, Direction, HealthStatus, MigrationPlan, MigrationResult, Target};
use crate::util::lock_unpoisoned;

/// A runner keeping every target in memory.
///
/// A "database" here is its history plus the list of statements that committed, so tests can
/// see exactly what a failed migration left behind (nothing). A statement starting with
/// `THROW` fails, as it does in SurrealDB, and `SLEEP <duration>` takes that long (while
/// the migration's transaction is open, as in SurrealDB). Clones share state.
#[derive(Clone, Debug, Default)]
pub struct MemoryRunner {
    state: Arc<Mutex<State>>,
    local: Arc<LocalLocks>,
}

#[derive(Debug, Default)]
struct State {
    databases: HashMap<DatabaseKey, Database>,
    next_token: u64,
    failing: HashMap<Version, usize>,
    lost_replies: HashSet<Version>,
    disconnected: HashSet<String>,
}

#[derive(Debug, Default)]
struct Database {
    initialised: bool,
    history: Vec<AppliedMigration>,
    /// Committed up statements, tagged with their migration; a revert removes its own.
    objects: Vec<(Version, String)>,
    lease: Option<Lease>,
}

#[derive(Debug, Clone)]
struct Lease {
    token: String,
    info: LockInfo,
    expires: Instant,
}

impl Lease {
    fn live(&self) -> bool {
        self.expires > Instant::now()
    }
}

impl Database {
    /// Whether the lease on it is `lock`'s.
    fn leased_by(&self, lock: &(dyn LockGuard + 'static)) -> bool {
        self.lease.as_ref().map(|l| l.token.as_str()) == Some(lock.token())
    }
}

impl MemoryRunner {
    /// An empty runner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes migration `version` fail at its `statement`-th (1-based) up statement.
    pub fn fail_statement(&self, version: &str, statement: usize) {
        if let Some(version) = Version::parse(version) {
            self.state().failing.insert(version, statement);
        }
    }

    /// Makes the reply to migration `version`'s next commit go missing: it commits, and the
    /// runner must learn so by reading history back, as a backend whose connection dropped.
    pub fn lose_reply_after_commit(&self, version: &str) {
        if let Some(version) = Version::parse(version) {
            self.state().lost_replies.insert(version);
        }
    }

    /// Removes every injected statement failure and lost reply.
    pub fn clear_failures(&self) {
        let mut state = self.state();
        state.failing.clear();
        state.lost_replies.clear();
    }

    /// Makes every call for `environment` fail as unreachable until [`Self::reconnect`].
    pub fn disconnect(&self, environment: &str) {
        self.state().disconnected.insert(environment.to_owned());
    }

    /// Undoes [`Self::disconnect`].
    pub fn reconnect(&self, environment: &str) {
        self.state().disconnected.remove(environment);
    }

    /// Records a live lease by `owner` on `target`, as another process would.
    pub fn hold_lock(&self, target: &Target, owner: LockOwner, lease: Duration) {
        let mut state = self.state();
        let token = state.token();
        let now = SystemTime::now();
        state.database(target).lease = Some(Lease {
            token,
            info: LockInfo {
                owner,
                acquired_at: rfc3339(now),
                expires_at: rfc3339(now + lease),
            },
            expires: Instant::now() + lease,
        });
    }

    /// The up statements in effect on `target`, in the order they committed.
    pub fn objects(&self, target: &Target) -> Vec<String> {
        self.state()
            .databases
            .get(&target.database_key())
            .map(|t| t.objects.iter().map(|(_, text)| text.clone()).collect())
            .unwrap_or_default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_unpoisoned(&self.state)
    }

    fn reachable(&self, target: &Target) -> Result<()> {
        if self.state().disconnected.contains(&target.environment) {
            return Err(unreachable(target, "connection dropped (injected fault)"));
        }
        Ok(())
    }

    /// One migration as one transaction: the fence at its start, its statements (sleeping
    /// where they say so), then the commit. `Ok(false)`: it committed, but the reply was
    /// lost (an injected fault).
    async fn apply_one(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        lock: &(dyn LockGuard + 'static),
        migration: &Migration,
    ) -> Result<bool> {
        if lock.is_lost() {
            return Err(lock_lost(target));
        }
        let failing = {
            let mut state = self.state();
            let failing = state.failing.get(&migration.version).copied();
            if !state.database(target).leased_by(lock) {
                return Err(lock_lost(target));
            }
            failing.filter(|_| plan.direction == Direction::Up)
        };
        let (statements, file) = statements_of(migration, plan.direction);
        for (index, statement) in statements.iter().enumerate() {
            if failing == Some(index + 1) || keyword(statement) == "THROW" {
                return Err(RunnerError::StatementFailed {
                    environment: target.environment.clone(),
                    version: migration.version.clone(),
                    file: file.to_path_buf(),
                    statement: index + 1,
                    line: statement.line,
                    message: format!("An error occurred: {}", statement.text),
                });
            }
            if let Some(pause) = sleep_of(statement) {
                tokio::time::sleep(pause).await;
            }
        }
        self.commit(target, plan, lock, migration)
    }

    /// Commits `migration`: like a database's write-write conflict, a lock taken over since
    /// the fence makes it fail, and like a unique history key, a version someone else
    /// recorded (or removed) meanwhile does.
    fn commit(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        lock: &(dyn LockGuard + 'static),
        migration: &Migration,
    ) -> Result<bool> {
        let mut state = self.state();
        let lose_reply = state.lost_replies.remove(&migration.version);
        let db = state.database(target);
        if !db.leased_by(lock) {
            return Err(lock_lost(target));
        }
        let recorded = db.history.iter().any(|r| r.version == migration.version);
        match plan.direction {
            Direction::Up if recorded => {
                return Err(RunnerError::Backend {
                    environment: target.environment.clone(),
                    source: format!(
                        "migration {} was recorded by someone else while it ran; nothing was applied twice",
                        migration.version
                    )
                    .into(),
                });
            }
            Direction::Down if !recorded => {
                return Err(RunnerError::AlreadyReverted {
                    environment: target.environment.clone(),
                    version: migration.version.clone(),
                });
            }
            Direction::Up => {
                for statement in &migration.up {
                    db.objects
                        .push((migration.version.clone(), statement.text.clone()));
                }
                db.history.push(AppliedMigration {
                    version: migration.version.clone(),
                    description: migration.description.clone(),
                    checksum: migration.checksum.clone(),
                    applied_at: Some(rfc3339(SystemTime::now())),
                    execution_time_ms: Some(0),
                    applied_by: Some(plan.applied_by.clone()),
                    deployment_id: plan.deployment_id.clone(),
                });
            }
            Direction::Down => {
                db.objects.retain(|(v, _)| *v != migration.version);
                db.history.retain(|row| row.version != migration.version);
            }
        }
        db.initialised = true;
        Ok(!lose_reply)
    }
}

fn lock_lost(target: &Target) -> RunnerError {
    RunnerError::LockLost {
        environment: target.environment.clone(),
    }
}

fn unreachable(target: &Target, why: &'static str) -> RunnerError {
    RunnerError::Unreachable {
        environment: target.environment.clone(),
        endpoint: target.connection.redacted_url(),
        source: why.into(),
    }
}

fn keyword(statement: &Statement) -> String {
    statement
        .text
        .trim_start()
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// `SLEEP 250ms` → 250 ms.
fn sleep_of(statement: &Statement) -> Option<Duration> {
    if keyword(statement) != "SLEEP" {
        return None;
    }
    let argument = statement.text.trim_start()[5..].trim();
    flotilla_core::parse_duration(argument).ok()
}

impl State {
    fn database(&mut self, target: &Target) -> &mut Database {
        self.databases.entry(target.database_key()).or_default()
    }

    fn token(&mut self) -> String {
        self.next_token += 1;
        format!("memory-{}", self.next_token)
    }
}

#[async_trait]
impl MigrationRunner for MemoryRunner {
    async fn health(&self, target: &Target) -> Result<HealthStatus> {
        self.reachable(target)?;
        let mut state = self.state();
        let db = state.database(target);
        Ok(HealthStatus {
            latency: Duration::ZERO,
            initialised: db.initialised,
            lock: db
                .lease
                .as_ref()
                .filter(|l| l.live())
                .map(|l| l.info.clone()),
            server_version: Some("memory".to_owned()),
        })
    }

    async fn history(&self, target: &Target) -> Result<Vec<AppliedMigration>> {
        self.reachable(target)?;
        let state = self.state();
        let mut history = state
            .databases
            .get(&target.database_key())
            .map(|t| t.history.clone())
            .unwrap_or_default();
        history.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(history)
    }

    async fn acquire_lock(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<Box<dyn LockGuard>> {
        self.reachable(target)?;
        let key = target.database_key();
        let local = self.local.claim(&key, &target.environment, request).await?;
        let outcome = wait_for_lock(request.wait, || {
            let attempt = self.try_acquire(target, request);
            async move { attempt }
        })
        .await?;
        let ((token, info), took_over) =
            outcome.map_err(|(holder, waited)| RunnerError::LockHeld {
                environment: target.environment.clone(),
                holder,
                waited,
            })?;
        local.set_holder(info.clone());
        let runner = self.clone();
        let renew_key = key.clone();
        let renew_token = token.clone();
        let lease = request.lease;
        let heartbeat = Heartbeat::spawn(lease, move || {
            let mut state = runner.state();
            let renewed = match state
                .databases
                .get_mut(&renew_key)
                .and_then(|t| t.lease.as_mut())
            {
                Some(l) if l.token == renew_token => {
                    l.expires = Instant::now() + lease;
                    Renewal::Renewed
                }
                _ => Renewal::Gone,
            };
            async move { Ok(renewed) }
        });
        Ok(Box::new(MemoryLockGuard {
            runner: self.clone(),
            environment: target.environment.clone(),
            key,
            token,
            info,
            took_over,
            heartbeat,
            _local: local,
            released: false,
        }))
    }

    async fn break_lock(&self, target: &Target) -> Result<Option<LockInfo>> {
        self.reachable(target)?;
        let mut state = self.state();
        Ok(state.database(target).lease.take().map(|lease| lease.info))
    }

    async fn execute_migration(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        lock: &(dyn LockGuard + 'static),
    ) -> Result<MigrationResult> {
        self.reachable(target)?;
        let issued = lock.token().starts_with("memory-")
            && self
                .state()
                .databases
                .get(&target.database_key())
                .and_then(|t| t.lease.as_ref())
                .is_some_and(|l| l.token == lock.token());
        if !issued {
            return Err(if lock.token().starts_with("memory-") {
                RunnerError::LockLost {
                    environment: target.environment.clone(),
                }
            } else {
                RunnerError::NotLocked {
                    environment: target.environment.clone(),
                }
            });
        }
        let history = self.history(target).await?;
        run_steps(target, plan, &history, |migration| async move {
            self.reachable(target)?;
            if self.apply_one(target, plan, lock, migration).await? {
                return Ok(());
            }
            // The reply never came: learn from history whether it committed.
            match reconcile(self, target, plan, &[migration]).await? {
                1 => Ok(()),
                _ => Err(unreachable(
                    target,
                    "the connection dropped before the commit",
                )),
            }
        })
        .await
    }
}

impl MemoryRunner {
    fn try_acquire(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<Attempt<(String, LockInfo)>> {
        self.reachable(target)?;
        let mut state = self.state();
        let token = state.token();
        let db = state.database(target);
        let previous = match &db.lease {
            Some(lease) if lease.live() => return Ok(Attempt::Held(lease.info.clone())),
            Some(lease) => Some(lease.info.clone()),
            None => None,
        };
        let now = SystemTime::now();
        let info = LockInfo {
            owner: request.owner.clone(),
            acquired_at: rfc3339(now),
            expires_at: rfc3339(now + request.lease),
        };
        db.lease = Some(Lease {
            token: token.clone(),
            info: info.clone(),
            expires: Instant::now() + request.lease,
        });
        Ok(Attempt::Acquired((token, info), previous))
    }
}

#[derive(Debug)]
struct MemoryLockGuard {
    runner: MemoryRunner,
    environment: String,
    key: DatabaseKey,
    token: String,
    info: LockInfo,
    took_over: Option<LockInfo>,
    heartbeat: Heartbeat,
    _local: LocalHold,
    released: bool,
}

#[async_trait]
impl LockGuard for MemoryLockGuard {
    fn info(&self) -> LockInfo {
        self.info.clone()
    }

    fn took_over(&self) -> Option<LockInfo> {
        self.took_over.clone()
    }

    fn token(&self) -> &str {
        &self.token
    }

    fn is_lost(&self) -> bool {
        self.heartbeat.is_lost()
    }

    async fn release(mut self: Box<Self>) -> Result<()> {
        self.heartbeat.stop();
        self.released = true;
        let mut state = self.runner.state();
        let db = state.databases.entry(self.key.clone()).or_default();
        match &db.lease {
            Some(lease) if lease.token == self.token => {
                db.lease = None;
                Ok(())
            }
            _ => Err(RunnerError::LockLost {
                environment: self.environment.clone(),
            }),
        }
    }
}

impl Drop for MemoryLockGuard {
    fn drop(&mut self) {
        if !self.released {
            tracing::warn!(environment = %self.environment, "migration lock guard dropped without release; the lease will expire");
        }
    }
}
