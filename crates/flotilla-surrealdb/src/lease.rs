//! The lease lock on a SurrealDB target (`_migration_lock:lock`): taking it (waiting for a
//! live one, taking over an expired one), renewing it, releasing it, and the states a lease
//! goes through when an apply request takes or removes it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flotilla_core::{AppliedMigration, rfc3339};
use flotilla_runner::util::lock_unpoisoned;
use flotilla_runner::{
    Attempt, DatabaseKey, Heartbeat, LeaseWatch, LocalHold, LockGuard, LockInfo, LockOwner,
    LockRequest, Renewal, Result, RunnerError, Target, wait_for_lock,
};
use serde_json::{Map, Value, json};

use crate::errors::{classify, is_missing_table};
use crate::rows::{history_from_rows, lease_info};
use crate::runner::{HistoryTable, SurrealRunner};
use crate::session::Lane;
use crate::sql::{self, Definitions};

/// What taking a lease needs: the lock request's variables, lease length and wait.
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    pub(crate) vars: Map<String, Value>,
    pub(crate) lease: Duration,
    pub(crate) wait: Duration,
}

impl Ask {
    fn new(request: &LockRequest, token: &str) -> Self {
        let mut vars = Map::new();
        vars.insert("fl_token".into(), json!(token));
        vars.insert("fl_host".into(), json!(request.owner.host));
        vars.insert("fl_pid".into(), json!(request.owner.pid));
        if let Some(id) = &request.owner.deployment_id {
            vars.insert("fl_lock_deployment".into(), json!(id));
        }
        Self {
            vars,
            lease: request.lease,
            wait: request.wait,
        }
    }
}

/// Where a lease stands, as far as this process knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Asked for by an apply request on a never-migrated target: its first transaction takes
    /// the lease when it commits.
    Taking,
    /// On the target, ours.
    Held,
    /// The apply request's take failed — someone else's lease, or the target is not the new
    /// one the probe saw — so nothing of that request ran. Ask for the lock on its own.
    Refused,
    /// The take never happened: its request could not be sent, or the first migration failed
    /// (which undoes the take with it). The target is as it was.
    NotTaken,
    /// Removed by us.
    Released,
    /// A request that takes or removes the lease lost its reply: it may or may not be there.
    Unknown,
}

/// One lease of this process: its token, state, and what came with taking it. Shared by its
/// guard, its heartbeat and executions under it; transitions are its methods.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) token: String,
    pub(crate) key: DatabaseKey,
    pub(crate) ask: Ask,
    state: Mutex<LeaseState>,
    info: Mutex<LockInfo>,
    took_over: Mutex<Option<LockInfo>>,
    history: Mutex<Option<Vec<AppliedMigration>>>,
}

impl Lease {
    fn new(token: String, key: DatabaseKey, ask: Ask, state: LeaseState, info: LockInfo) -> Self {
        Self {
            token,
            key,
            ask,
            state: Mutex::new(state),
            info: Mutex::new(info),
            took_over: Mutex::new(None),
            history: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> LeaseState {
        *lock_unpoisoned(&self.state)
    }

    fn set(&self, from: &[LeaseState], to: LeaseState) {
        let mut state = lock_unpoisoned(&self.state);
        if from.contains(&state) {
            *state = to;
        }
    }

    /// The apply request's first transaction committed, and the lease with it.
    pub(crate) fn take_committed(&self) {
        self.set(&[LeaseState::Taking, LeaseState::Unknown], LeaseState::Held);
    }

    /// The apply request's take failed; nothing of the request ran.
    pub(crate) fn take_refused(&self) {
        self.set(&[LeaseState::Taking], LeaseState::Refused);
    }

    /// The apply request did not take the lease and left the target as it was.
    pub(crate) fn take_not_done(&self) {
        self.set(&[LeaseState::Taking], LeaseState::NotTaken);
    }

    /// A request that takes or removes the lease lost its reply.
    pub(crate) fn outcome_unknown(&self) {
        self.set(&[LeaseState::Taking, LeaseState::Held], LeaseState::Unknown);
    }

    /// We removed the lease.
    pub(crate) fn released(&self) {
        self.set(
            &[LeaseState::Taking, LeaseState::Held, LeaseState::Unknown],
            LeaseState::Released,
        );
    }

    /// The history read in the transaction that took the lease, once.
    pub(crate) fn history_read_with_lock(&self) -> Option<Vec<AppliedMigration>> {
        lock_unpoisoned(&self.history).take()
    }

    /// What a renewal that did (`found`) or did not find our lease means now.
    fn renewal(&self, found: bool) -> Renewal {
        let mut state = lock_unpoisoned(&self.state);
        match (*state, found) {
            (LeaseState::Held, true) => Renewal::Renewed,
            (LeaseState::Held, false) => Renewal::Gone,
            (LeaseState::Taking | LeaseState::Unknown, true) => {
                *state = LeaseState::Held;
                Renewal::Renewed
            }
            _ => Renewal::NotYet,
        }
    }

    /// Whether the lease is (or may be) on the target, so worth renewing.
    fn may_be_held(&self) -> bool {
        matches!(
            self.state(),
            LeaseState::Held | LeaseState::Taking | LeaseState::Unknown
        )
    }
}

/// A lease this process holds, found by its token.
#[derive(Clone, Debug)]
pub(crate) struct Registered {
    pub(crate) lease: Arc<Lease>,
    pub(crate) watch: LeaseWatch,
}

impl SurrealRunner {
    /// Takes the lock `request` asks for, waiting for a live lease to go away, with the
    /// history read in the same transaction.
    pub(crate) async fn acquire(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<SurrealLockGuard> {
        self.ensure_database(target).await?;
        let (local, token, ask) = self.claim(target, request).await?;
        let ((info, history), took_over) = match self.acquire_waiting(target, &ask).await {
            Ok(acquired) => acquired,
            Err(error) => {
                self.forget_unknown_take(target, &token, &error);
                return Err(error);
            }
        };
        local.set_holder(info.clone());
        let lease = Lease::new(token, target.database_key(), ask, LeaseState::Held, info);
        *lock_unpoisoned(&lease.took_over) = took_over;
        *lock_unpoisoned(&lease.history) = Some(history);
        Ok(self.guard(target, lease, local))
    }

    /// A lease an apply request will take on a never-migrated target (see
    /// [`LeaseState::Taking`]); until then its times are this process's clock.
    pub(crate) async fn lease_to_take(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<SurrealLockGuard> {
        let (local, token, ask) = self.claim(target, request).await?;
        let now = SystemTime::now();
        let info = LockInfo {
            owner: request.owner.clone(),
            acquired_at: rfc3339(now),
            expires_at: rfc3339(now + request.lease),
        };
        local.set_holder(info.clone());
        let lease = Lease::new(token, target.database_key(), ask, LeaseState::Taking, info);
        Ok(self.guard(target, lease, local))
    }

    /// This process's claim on `target`'s database, a new lease token, and what taking a lease
    /// with it needs.
    async fn claim(
        &self,
        target: &Target,
        request: &LockRequest,
    ) -> Result<(LocalHold, String, Ask)> {
        let local = self
            .local_locks()
            .claim(&target.database_key(), &target.environment, request)
            .await?;
        let token = new_token(&request.owner);
        let ask = Ask::new(request, &token);
        Ok((local, token, ask))
    }

    /// After the apply request's take was refused: takes the lock the usual way for the same
    /// lease (waiting for a live one), with the history read with it.
    pub(crate) async fn retake(&self, target: &Target, lease: &Lease) -> Result<()> {
        let ((info, history), took_over) = self.acquire_waiting(target, &lease.ask).await?;
        *lock_unpoisoned(&lease.info) = info;
        *lock_unpoisoned(&lease.took_over) = took_over;
        *lock_unpoisoned(&lease.history) = Some(history);
        lease.set(&[LeaseState::Refused], LeaseState::Held);
        Ok(())
    }

    /// A guard for `lease`, with its heartbeat, registered so executions can find it.
    fn guard(&self, target: &Target, lease: Lease, local: LocalHold) -> SurrealLockGuard {
        let lease = Arc::new(lease);
        let runner = self.clone();
        let renew_target = target.clone();
        let renewed = Arc::clone(&lease);
        let heartbeat = Heartbeat::spawn(lease.ask.lease, move || {
            let runner = runner.clone();
            let target = renew_target.clone();
            let lease = Arc::clone(&renewed);
            async move { runner.renew(&target, &lease).await }
        });
        self.hold(Registered {
            lease: Arc::clone(&lease),
            watch: heartbeat.watch(),
        });
        SurrealLockGuard {
            runner: self.clone(),
            target: target.clone(),
            lease,
            heartbeat,
            _local: local,
            released: false,
        }
    }

    async fn renew(&self, target: &Target, lease: &Lease) -> Result<Renewal> {
        if !lease.may_be_held() {
            return Ok(Renewal::NotYet);
        }
        let mut vars = Map::new();
        vars.insert("fl_token".into(), json!(lease.token));
        let text = sql::renew(lease.ask.lease);
        let mut response = self
            .request(target, Lane::Upkeep, &text, Some(&vars), 1)
            .await?;
        let found = response.result(0).map_err(|e| classify(target, e))?;
        Ok(lease.renewal(found.as_bool() == Some(true)))
    }

    /// When a lock request's reply was lost, the lease may be ours without our knowing:
    /// remove it if it is there, in the background, so it does not block others until it
    /// expires.
    fn forget_unknown_take(&self, target: &Target, token: &str, error: &RunnerError) {
        if error.class() != flotilla_runner::ErrorClass::TargetUnreachable {
            return;
        }
        let runner = self.clone();
        let target = target.clone();
        let mut vars = Map::new();
        vars.insert("fl_token".into(), json!(token));
        tokio::spawn(async move {
            let _ = runner
                .request(&target, Lane::Upkeep, &sql::release(), Some(&vars), 1)
                .await;
        });
    }

    /// Takes the lock `ask` describes, waiting for a live lease to go away; returns the
    /// lease, the history read with it, and the expired lease it replaced.
    pub(crate) async fn acquire_waiting(
        &self,
        target: &Target,
        ask: &Ask,
    ) -> Result<((LockInfo, Vec<AppliedMigration>), Option<LockInfo>)> {
        let outcome =
            wait_for_lock(ask.wait, || self.try_acquire(target, ask.lease, &ask.vars)).await?;
        let acquired = outcome.map_err(|(holder, waited)| RunnerError::LockHeld {
            environment: target.environment.clone(),
            holder,
            waited,
        })?;
        if let Some(previous) = &acquired.1 {
            tracing::warn!(environment = %target.environment, previous_owner = %previous.owner, "took over an expired migration lock");
        }
        // The acquiring transaction defined the history table.
        self.set_history_table(&target.database_key(), Some(HistoryTable::Ready));
        Ok(acquired)
    }

    async fn try_acquire(
        &self,
        target: &Target,
        lease: Duration,
        vars: &Map<String, Value>,
    ) -> Result<Attempt<(LockInfo, Vec<AppliedMigration>)>> {
        let key = target.database_key();
        let mut value = loop {
            let definitions = match self.history_table(&key) {
                Some(HistoryTable::Ready) => Definitions::None,
                Some(HistoryTable::Absent) => Definitions::Fresh,
                None => Definitions::All,
            };
            let statements = sql::acquire_statements(definitions);
            let text = sql::acquire(lease, definitions);
            let mut response = self
                .request(target, Lane::Deploy, &text, Some(vars), statements)
                .await?;
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
                return Err(classify(target, error));
            }
            break response
                .result(statements - 1)
                .map_err(|e| classify(target, e))?;
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
                let history = history_from_rows(target, rows)?;
                Ok(Attempt::Acquired((current, history), previous))
            }
            (false, _, Some(holder)) => Ok(Attempt::Held(holder)),
            _ => Err(RunnerError::Backend {
                environment: target.environment.clone(),
                source: format!("unexpected answer to the lock request: {value}").into(),
            }),
        }
    }
}

/// A lease token: unique per process and lease.
fn new_token(owner: &LockOwner) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
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

/// The guard of a SurrealDB lease.
#[derive(Debug)]
pub(crate) struct SurrealLockGuard {
    runner: SurrealRunner,
    target: Target,
    pub(crate) lease: Arc<Lease>,
    heartbeat: Heartbeat,
    _local: LocalHold,
    released: bool,
}

impl SurrealLockGuard {
    pub(crate) fn watch(&self) -> LeaseWatch {
        self.heartbeat.watch()
    }
}

#[async_trait]
impl LockGuard for SurrealLockGuard {
    fn info(&self) -> LockInfo {
        lock_unpoisoned(&self.lease.info).clone()
    }

    fn took_over(&self) -> Option<LockInfo> {
        lock_unpoisoned(&self.lease.took_over).clone()
    }

    fn token(&self) -> &str {
        &self.lease.token
    }

    fn is_lost(&self) -> bool {
        self.heartbeat.is_lost()
    }

    async fn release(mut self: Box<Self>) -> Result<()> {
        self.heartbeat.stop();
        self.released = true;
        self.runner.unregister(&self.lease.token);
        let must_exist = match self.lease.state() {
            // Removed with the last migration, or never ours.
            LeaseState::Released | LeaseState::Refused | LeaseState::NotTaken => return Ok(()),
            LeaseState::Held => true,
            // Its request lost its reply: remove it if it is there.
            LeaseState::Taking | LeaseState::Unknown => false,
        };
        let mut vars = Map::new();
        vars.insert("fl_token".into(), json!(self.lease.token));
        let target = &self.target;
        let mut response = self
            .runner
            .request(target, Lane::Upkeep, &sql::release(), Some(&vars), 1)
            .await?;
        let deleted = response
            .result(0)
            .map_err(|e| classify(target, e))?
            .as_bool()
            == Some(true);
        self.lease.released();
        if deleted || !must_exist {
            Ok(())
        } else {
            Err(RunnerError::LockLost {
                environment: target.environment.clone(),
            })
        }
    }
}

impl Drop for SurrealLockGuard {
    fn drop(&mut self) {
        if !self.released {
            tracing::warn!(environment = %self.target.environment, "migration lock guard dropped without release; the lease will expire");
            self.runner.unregister(&self.lease.token);
        }
    }
}
