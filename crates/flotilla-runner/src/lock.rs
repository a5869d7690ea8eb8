//! The per-target lock: who may migrate a target right now.
//!
//! A lock is a lease: a record naming its owner with an expiry, renewed by a heartbeat
//! while held. A live lease is never taken; an expired one (its holder died) may be, and
//! the taker reports it. Waiting for a lock has its own timeout. Within one process a
//! runner holds at most one lease per database ([`LocalLocks`]).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{OwnedMutexGuard, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Result, RunnerError};
use crate::target::DatabaseKey;
use crate::util::lock_unpoisoned;

/// Who holds (or asks for) a lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LockOwner {
    /// Host name of the process.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The deployment the process is running, if any.
    pub deployment_id: Option<String>,
}

impl LockOwner {
    /// This process, optionally on behalf of a deployment.
    pub fn current(deployment_id: Option<String>) -> Self {
        Self {
            host: host_name(),
            pid: std::process::id(),
            deployment_id,
        }
    }
}

impl fmt::Display for LockOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pid {}", self.host, self.pid)?;
        if let Some(id) = &self.deployment_id {
            write!(f, " (deployment {id})")?;
        }
        Ok(())
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// A lease as recorded on the target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockInfo {
    /// The holder.
    pub owner: LockOwner,
    /// When the lease was acquired (RFC 3339, target's clock).
    pub acquired_at: String,
    /// When it expires unless renewed (RFC 3339, target's clock).
    pub expires_at: String,
}

/// How to ask for a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRequest {
    /// Who asks.
    pub owner: LockOwner,
    /// How long to wait for a live lease held by someone else before giving up.
    pub wait: Duration,
    /// Lease length; the heartbeat renews it every third of this.
    pub lease: Duration,
}

impl LockRequest {
    /// Default lease: long enough to survive a slow heartbeat, short enough that a crashed
    /// deploy blocks the next one for under a minute.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

    /// Default wait for a lock someone else holds.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

    /// A request by this process waiting up to `wait`, with the default lease.
    pub fn new(deployment_id: Option<String>, wait: Duration) -> Self {
        Self {
            owner: LockOwner::current(deployment_id),
            wait,
            lease: Self::DEFAULT_LEASE,
        }
    }

    /// The same request with another lease length.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

/// A held lock: the lease exists on the target while the guard lives (unless it was lost,
/// which [`LockGuard::is_lost`] tells). Release it on every path: [`LockGuard::release`]
/// consumes the guard. Dropping an unreleased guard stops its heartbeat and logs a warning;
/// the lease then expires on its own, exactly as if the process had died.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait LockGuard: Send + Sync + fmt::Debug {
    /// The lease this guard holds.
    fn info(&self) -> LockInfo;

    /// The expired lease this guard replaced, if it took one over.
    fn took_over(&self) -> Option<LockInfo>;

    /// The lease's fence token: an execution under this guard applies only while the
    /// target's lease still carries it.
    fn token(&self) -> &str;

    /// Whether the lease is known or feared lost: a renewal found it gone (taken over or
    /// broken), or no renewal succeeded for a whole lease length.
    fn is_lost(&self) -> bool;

    /// Removes the lease. Fails with `LockLost` if it had already been taken over.
    async fn release(self: Box<Self>) -> Result<()>;
}

/// The outcome of one attempt to take a lock.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Taken: the backend's handle, and the expired lease it replaced, if any.
    Acquired(T, Option<LockInfo>),
    /// Someone else holds a live lease.
    Held(LockInfo),
}

/// Retries `attempt` with a jittered, growing pause until it acquires or `wait` elapses;
/// returns the handle and any taken-over lease, or the last holder with the time waited.
pub async fn wait_for_lock<T, F, Fut>(
    wait: Duration,
    mut attempt: F,
) -> Result<std::result::Result<(T, Option<LockInfo>), (LockInfo, Duration)>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    let started = Instant::now();
    let deadline = started + wait.min(flotilla_core::MAX_DURATION);
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        match attempt().await? {
            Attempt::Acquired(handle, previous) => return Ok(Ok((handle, previous))),
            Attempt::Held(holder) => {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Err((holder, now - started)));
                }
                tokio::time::sleep(backoff.next_pause().min(deadline - now)).await;
            }
        }
    }
}

/// Jittered exponential backoff: each pause is the previous one doubled (up to a cap), ± 50 %,
/// so retries spread out instead of meeting again in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses starting near `first`, growing to at most about `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// The next pause to take.
    pub fn next_pause(&mut self) -> Duration {
        let pause = jitter(self.next);
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Sleeps for [`Backoff::next_pause`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }
}

/// What a renewal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The lease is ours and was extended.
    Renewed,
    /// The lease is not there yet (the request that takes it is on its way); nothing to say.
    NotYet,
    /// The lease is gone or someone else's.
    Gone,
}

/// Renews a lease in the background until stopped, and watches it: a renewal that finds the
/// lease gone, or a whole lease length without a successful renewal (the server silent, the
/// network down), makes the lease lost — a deploy then starts nothing more under it.
#[derive(Debug)]
pub struct Heartbeat {
    task: JoinHandle<()>,
    watch: LeaseWatch,
}

/// The part of a [`Heartbeat`] that tells whether the lease is lost. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LeaseWatch {
    state: Arc<BeatState>,
    lost: watch::Receiver<bool>,
}

#[derive(Debug)]
struct BeatState {
    lease: Duration,
    gone: AtomicBool,
    /// Milliseconds since `origin` of the last successful renewal (or of the start).
    last_ok_ms: AtomicU64,
    origin: Instant,
}

impl BeatState {
    fn since_last_ok(&self) -> Duration {
        let last = Duration::from_millis(self.last_ok_ms.load(Ordering::SeqCst));
        self.origin.elapsed().saturating_sub(last)
    }

    fn mark_ok(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ok_ms.store(now, Ordering::SeqCst);
    }
}

impl Heartbeat {
    /// Calls `renew` every third of `lease`. A renewal that errors (a dropped connection, a
    /// timeout) is retried at the next beat; only a whole lease without success counts as lost.
    pub fn spawn<F, Fut>(lease: Duration, renew: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Renewal>> + Send + 'static,
    {
        let state = Arc::new(BeatState {
            lease,
            gone: AtomicBool::new(false),
            last_ok_ms: AtomicU64::new(0),
            origin: Instant::now(),
        });
        let (lost_tx, lost) = watch::channel(false);
        let beat = Arc::clone(&state);
        let period = (lease / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match renew().await {
                    Ok(Renewal::Renewed | Renewal::NotYet) => beat.mark_ok(),
                    Ok(Renewal::Gone) => {
                        beat.gone.store(true, Ordering::SeqCst);
                        let _ = lost_tx.send(true);
                        tracing::warn!("migration lock lease was lost; stopping heartbeat");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not renew migration lock lease");
                        if beat.since_last_ok() >= beat.lease {
                            let _ = lost_tx.send(true);
                        }
                    }
                }
            }
        });
        Self {
            task,
            watch: LeaseWatch { state, lost },
        }
    }

    /// Whether the lease is lost (see [`LeaseWatch::is_lost`]).
    pub fn is_lost(&self) -> bool {
        self.watch.is_lost()
    }

    /// A watch on the lease that outlives borrowing the heartbeat.
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// Stops renewing.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl LeaseWatch {
    /// Whether a renewal found the lease gone, or none succeeded for a whole lease length.
    pub fn is_lost(&self) -> bool {
        self.state.gone.load(Ordering::SeqCst) || self.state.since_last_ok() >= self.state.lease
    }

    /// Resolves once no renewal has succeeded for a whole lease length and none found the
    /// lease gone: the server has gone silent, so a reply still awaited may never come. (A
    /// lease found gone does not resolve this: requests already sent were fenced when they
    /// started, and their replies say what they did.)
    pub async fn silent(&self) {
        loop {
            if self.state.gone.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let since = self.state.since_last_ok();
            if since >= self.state.lease {
                return;
            }
            tokio::time::sleep((self.state.lease - since).max(Duration::from_millis(10))).await;
        }
    }

    /// Resolves once the lease is lost; never, while it is renewed.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        loop {
            if self.is_lost() {
                return;
            }
            let left = self.state.lease.saturating_sub(self.state.since_last_ok());
            tokio::select! {
                changed = lost.changed() => {
                    if changed.is_err() {
                        // The heartbeat stopped; only time tells from now on.
                        tokio::time::sleep(left.max(Duration::from_millis(10))).await;
                    }
                }
                () = tokio::time::sleep(left.max(Duration::from_millis(10))) => {}
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pause of `base` ± 50 %, so waiters do not retry in lockstep.
pub fn jitter(base: Duration) -> Duration {
    static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = SEED.fetch_add(nanos | 1, Ordering::Relaxed) ^ nanos;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 0.5 + (x % 1000) as f64 / 1000.0;
    base.mul_f64(factor)
}

/// The leases one runner holds, one per database: a second `acquire_lock` in the same process
/// for a database whose lease it already holds waits here (up to its wait) instead of taking a
/// second lease. Backends keep one and hold its [`LocalHold`] for as long as the lease.
#[derive(Debug, Default)]
pub struct LocalLocks {
    slots: Arc<Mutex<HashMap<DatabaseKey, Arc<LocalSlot>>>>,
}

#[derive(Debug, Default)]
struct LocalSlot {
    mutex: Arc<tokio::sync::Mutex<()>>,
    holder: Mutex<Option<LockInfo>>,
}

/// This process's claim on one database, released when dropped.
#[derive(Debug)]
pub struct LocalHold {
    guard: Option<OwnedMutexGuard<()>>,
    slot: Arc<LocalSlot>,
    key: DatabaseKey,
    slots: Arc<Mutex<HashMap<DatabaseKey, Arc<LocalSlot>>>>,
}

impl Drop for LocalHold {
    fn drop(&mut self) {
        self.guard.take();
        let mut slots = lock_unpoisoned(&self.slots);
        // Only the map and this hold know the slot: nobody waits, so forget it (a runner
        // serving a hundred thousand tenants keeps no slot per tenant it is done with).
        if Arc::strong_count(&self.slot) == 2 {
            slots.remove(&self.key);
        }
    }
}

impl LocalHold {
    /// Records who holds the lease, for a waiter that gives up.
    pub fn set_holder(&self, holder: LockInfo) {
        *lock_unpoisoned(&self.slot.holder) = Some(holder);
    }
}

impl LocalLocks {
    /// Claims `key` for this process, waiting up to `wait` for another claim on it to end.
    pub async fn claim(
        &self,
        key: &DatabaseKey,
        environment: &str,
        request: &LockRequest,
    ) -> Result<LocalHold> {
        let slot = Arc::clone(lock_unpoisoned(&self.slots).entry(key.clone()).or_default());
        let started = Instant::now();
        let mutex = Arc::clone(&slot.mutex);
        match tokio::time::timeout(
            request.wait.min(flotilla_core::MAX_DURATION),
            mutex.lock_owned(),
        )
        .await
        {
            Ok(guard) => Ok(LocalHold {
                guard: Some(guard),
                slot,
                key: key.clone(),
                slots: Arc::clone(&self.slots),
            }),
            Err(_) => {
                let holder = lock_unpoisoned(&slot.holder).clone().unwrap_or(LockInfo {
                    owner: request.owner.clone(),
                    acquired_at: String::from("(held by this process)"),
                    expires_at: String::from("(renewed while held)"),
                });
                Err(RunnerError::LockHeld {
                    environment: environment.to_owned(),
                    holder,
                    waited: started.elapsed(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(150),
                "{d:?}"
            );
        }
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
        let pauses: Vec<Duration> = (0..6).map(|_| backoff.next_pause()).collect();
        assert!(pauses[0] <= Duration::from_millis(15), "{pauses:?}");
        assert!(
            pauses[5] >= Duration::from_millis(20) && pauses[5] <= Duration::from_millis(60),
            "{pauses:?}"
        );
    }

    #[tokio::test]
    async fn waiting_gives_up_with_the_holder() {
        let holder = LockInfo {
            owner: LockOwner::current(Some("other".into())),
            acquired_at: "then".into(),
            expires_at: "later".into(),
        };
        let mut attempts = 0;
        let outcome = wait_for_lock::<(), _, _>(Duration::from_millis(60), || {
            attempts += 1;
            let holder = holder.clone();
            async move { Ok(Attempt::Held(holder)) }
        })
        .await
        .expect("no error");
        let (got, waited) = outcome.expect_err("never acquired");
        assert_eq!(got, holder);
        assert!(waited >= Duration::from_millis(60), "{waited:?}");
        assert!(attempts >= 2, "retried {attempts} times");
    }

    #[tokio::test]
    async fn a_huge_wait_does_not_overflow() {
        let outcome =
            wait_for_lock::<u8, _, _>(Duration::MAX, || async { Ok(Attempt::Acquired(1, None)) })
                .await
                .expect("no error");
        assert!(outcome.is_ok());
    }

    #[tokio::test]
    async fn a_heartbeat_that_cannot_renew_for_a_lease_reports_the_lease_lost() {
        let lease = Duration::from_millis(300);
        let failing = Heartbeat::spawn(lease, || async {
            Err(RunnerError::Backend {
                environment: "dev".into(),
                source: "server silent".into(),
            })
        });
        let watch = failing.watch();
        assert!(!watch.is_lost(), "not before a lease has passed");
        tokio::time::timeout(lease * 3, watch.lost())
            .await
            .expect("lost within a lease or so");
        assert!(failing.is_lost());

        let renewing = Heartbeat::spawn(lease, || async { Ok(Renewal::Renewed) });
        tokio::time::sleep(lease * 4).await;
        assert!(!renewing.is_lost(), "renewed leases stay ours");

        let gone = Heartbeat::spawn(lease, || async { Ok(Renewal::Gone) });
        tokio::time::timeout(lease, gone.watch().lost())
            .await
            .expect("lost at the first renewal");
    }

    #[tokio::test]
    async fn one_process_holds_one_claim_per_database() {
        let locks = LocalLocks::default();
        let key = DatabaseKey::new("mem://", "ns", "db");
        let request = LockRequest::new(None, Duration::from_millis(50));
        let first = locks.claim(&key, "a", &request).await.expect("first");
        first.set_holder(LockInfo {
            owner: LockOwner::current(Some("first".into())),
            acquired_at: "t0".into(),
            expires_at: "t1".into(),
        });
        let err = locks
            .claim(&key, "b", &request)
            .await
            .expect_err("the database is claimed");
        match err {
            RunnerError::LockHeld { holder, .. } => {
                assert_eq!(holder.owner.deployment_id.as_deref(), Some("first"));
            }
            other => panic!("expected LockHeld, got {other:?}"),
        }
        let other = DatabaseKey::new("mem://", "ns", "other");
        locks
            .claim(&other, "c", &request)
            .await
            .expect("another database");
        drop(first);
        locks.claim(&key, "b", &request).await.expect("free again");
        assert!(
            lock_unpoisoned(&locks.slots).is_empty(),
            "released claims are forgotten"
        );
    }
}
