//! An in-memory runner: the reference implementation of the seam, suitable for testing,
//! with injectable faults (a failing statement, a dropped connection, a lock held elsewhere).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flotilla_core::{AppliedMigration, Version, rfc3339};
use tokio::time::Instant;

use crate::error::{Result, RunnerError};
use crate::execute::run_steps;
use crate::lock::{Attempt, Heartbeat, LockGuard, LockInfo, LockOwner, LockRequest, wait_for_lock};
use crate::runner::MigrationRunner;
use crate::tenant::{
    DatabaseKey, Direction, HealthStatus, MigrationPlan, MigrationResult, TenantContext,
};

/// A runner keeping every target in memory.
///
/// A "database" here is its history plus the list of statements that committed, so tests can
/// see exactly what a failed migration left behind (nothing). A statement starting with
/// `THROW` fails, as it does in SurrealDB. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct MemoryRunner {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    targets: HashMap<DatabaseKey, Target>,
    /// Locks this runner holds: target → lease token.
    held: HashMap<DatabaseKey, u64>,
    next_token: u64,
    failing: HashMap<Version, usize>,
    disconnected: HashSet<String>,
}

#[derive(Debug, Default)]
struct Target {
    initialised: bool,
    history: Vec<AppliedMigration>,
    /// Committed up statements, tagged with their migration; a revert removes its own.
    objects: Vec<(Version, String)>,
    lease: Option<Lease>,
}

#[derive(Debug, Clone)]
struct Lease {
    token: u64,
    info: LockInfo,
    expires: Instant,
}

impl Lease {
    fn live(&self) -> bool {
        self.expires > Instant::now()
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

    /// Removes every injected statement failure.
    pub fn clear_failures(&self) {
        self.state().failing.clear();
    }

    /// Makes every call for `environment` fail as unreachable until [`Self::reconnect`].
    pub fn disconnect(&self, environment: &str) {
        self.state().disconnected.insert(environment.to_owned());
    }

    /// Undoes [`Self::disconnect`].
    pub fn reconnect(&self, environment: &str) {
        self.state().disconnected.remove(environment);
    }

    /// Records a live lease by `owner` on `tenant`, as another process would.
    pub fn hold_lock(&self, tenant: &TenantContext, owner: LockOwner, lease: Duration) {
        let mut state = self.state();
        let token = state.token();
        let now = SystemTime::now();
        state.target(tenant).lease = Some(Lease {
            token,
            info: LockInfo {
                owner,
                acquired_at: rfc3339(now),
                expires_at: rfc3339(now + lease),
            },
            expires: Instant::now() + lease,
        });
    }

    /// The up statements in effect on `tenant`, in the order they committed.
    pub fn objects(&self, tenant: &TenantContext) -> Vec<String> {
        self.state()
            .targets
            .get(&tenant.database_key())
            .map(|t| t.objects.iter().map(|(_, text)| text.clone()).collect())
            .unwrap_or_default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reachable(&self, tenant: &TenantContext) -> Result<()> {
        if self.state().disconnected.contains(&tenant.environment) {
            return Err(RunnerError::Unreachable {
                environment: tenant.environment.clone(),
                endpoint: tenant.connection.redacted_url(),
                source: "connection dropped (injected fault)".into(),
            });
        }
        Ok(())
    }

    fn apply_one(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
        migration: &flotilla_core::Migration,
    ) -> Result<()> {
        self.reachable(tenant)?;
        let mut state = self.state();
        let key = tenant.database_key();
        let token = state.held.get(&key).copied();
        let failing = state.failing.get(&migration.version).copied();
        let target = state.target(tenant);
        if token.is_none() || target.lease.as_ref().map(|l| l.token) != token {
            return Err(RunnerError::LockLost {
                environment: tenant.environment.clone(),
            });
        }
        let (statements, file) = match plan.direction {
            Direction::Up => (&migration.up, &migration.path),
            Direction::Down => (
                migration.down.as_ref().unwrap_or(&migration.up),
                &migration.down_file().to_path_buf(),
            ),
        };
        // Run against a copy and commit only if every statement succeeds.
        let mut objects = target.objects.clone();
        for (index, statement) in statements.iter().enumerate() {
            let injected = plan.direction == Direction::Up && failing == Some(index + 1);
            if injected
                || statement
                    .text
                    .trim_start()
                    .to_ascii_uppercase()
                    .starts_with("THROW")
            {
                return Err(RunnerError::StatementFailed {
                    environment: tenant.environment.clone(),
                    version: migration.version.clone(),
                    file: file.clone(),
                    statement: index + 1,
                    line: statement.line,
                    message: format!("An error occurred: {}", statement.text),
                });
            }
            if plan.direction == Direction::Up {
                objects.push((migration.version.clone(), statement.text.clone()));
            }
        }
        if plan.direction == Direction::Down {
            objects.retain(|(version, _)| *version != migration.version);
        }
        target.objects = objects;
        target.initialised = true;
        match plan.direction {
            Direction::Up => target.history.push(AppliedMigration {
                version: migration.version.clone(),
                description: migration.description.clone(),
                checksum: migration.checksum.clone(),
                applied_at: Some(rfc3339(SystemTime::now())),
                execution_time_ms: Some(0),
                applied_by: Some(plan.applied_by.clone()),
                deployment_id: plan.deployment_id.clone(),
            }),
            Direction::Down => target
                .history
                .retain(|row| row.version != migration.version),
        }
        Ok(())
    }
}

impl State {
    fn target(&mut self, tenant: &TenantContext) -> &mut Target {
        self.targets.entry(tenant.database_key()).or_default()
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }
}

#[async_trait]
impl MigrationRunner for MemoryRunner {
    async fn health(&self, tenant: &TenantContext) -> Result<HealthStatus> {
        self.reachable(tenant)?;
        let history = self.history(tenant).await?;
        let mut state = self.state();
        let target = state.target(tenant);
        Ok(HealthStatus {
            latency: Duration::ZERO,
            initialised: target.initialised,
            lock: target
                .lease
                .as_ref()
                .filter(|l| l.live())
                .map(|l| l.info.clone()),
            server_version: Some("memory".to_owned()),
            history: Some(history),
        })
    }

    async fn history(&self, tenant: &TenantContext) -> Result<Vec<AppliedMigration>> {
        self.reachable(tenant)?;
        let state = self.state();
        let mut history = state
            .targets
            .get(&tenant.database_key())
            .map(|t| t.history.clone())
            .unwrap_or_default();
        history.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(history)
    }

    async fn acquire_lock(
        &self,
        tenant: &TenantContext,
        request: &LockRequest,
    ) -> Result<Box<dyn LockGuard>> {
        self.reachable(tenant)?;
        let key = tenant.database_key();
        let outcome = wait_for_lock(request.wait, || {
            let attempt = (|| {
                self.reachable(tenant)?;
                let mut state = self.state();
                let token = state.token();
                let target = state.target(tenant);
                let previous = match &target.lease {
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
                target.lease = Some(Lease {
                    token,
                    info: info.clone(),
                    expires: Instant::now() + request.lease,
                });
                state.held.insert(key.clone(), token);
                Ok(Attempt::Acquired((token, info), previous))
            })();
            async move { attempt }
        })
        .await?;
        let ((token, info), took_over) =
            outcome.map_err(|(holder, waited)| RunnerError::LockHeld {
                environment: tenant.environment.clone(),
                holder,
                waited,
            })?;
        let runner = self.clone();
        let renew_key = key.clone();
        let lease = request.lease;
        let heartbeat = Heartbeat::spawn(lease, move || {
            let mut state = runner.state();
            let renewed = match state
                .targets
                .get_mut(&renew_key)
                .and_then(|t| t.lease.as_mut())
            {
                Some(l) if l.token == token => {
                    l.expires = Instant::now() + lease;
                    true
                }
                _ => false,
            };
            async move { Ok(renewed) }
        });
        Ok(Box::new(MemoryLockGuard {
            runner: self.clone(),
            environment: tenant.environment.clone(),
            key,
            token,
            info,
            took_over,
            heartbeat,
            released: false,
        }))
    }

    async fn break_lock(&self, tenant: &TenantContext) -> Result<Option<LockInfo>> {
        self.reachable(tenant)?;
        let mut state = self.state();
        Ok(state.target(tenant).lease.take().map(|lease| lease.info))
    }

    async fn execute_migration(
        &self,
        tenant: &TenantContext,
        plan: &MigrationPlan,
    ) -> Result<MigrationResult> {
        self.reachable(tenant)?;
        if !self.state().held.contains_key(&tenant.database_key()) {
            return Err(RunnerError::NotLocked {
                environment: tenant.environment.clone(),
            });
        }
        let history = self.history(tenant).await?;
        run_steps(tenant, plan, &history, |migration| {
            let outcome = self.apply_one(tenant, plan, migration);
            async move { outcome }
        })
        .await
    }
}

#[derive(Debug)]
struct MemoryLockGuard {
    runner: MemoryRunner,
    environment: String,
    key: DatabaseKey,
    token: u64,
    info: LockInfo,
    took_over: Option<LockInfo>,
    heartbeat: Heartbeat,
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

    async fn release(mut self: Box<Self>) -> Result<()> {
        self.heartbeat.stop();
        self.released = true;
        let mut state = self.runner.state();
        if state.held.get(&self.key) == Some(&self.token) {
            state.held.remove(&self.key);
        }
        let target = state.targets.entry(self.key.clone()).or_default();
        match &target.lease {
            Some(lease) if lease.token == self.token => {
                target.lease = None;
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
            let mut state = self.runner.state();
            if state.held.get(&self.key) == Some(&self.token) {
                state.held.remove(&self.key);
            }
        }
    }
}
