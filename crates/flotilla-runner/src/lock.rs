//! The per-target lock: who may migrate a target right now.
//!
//! A lock is a lease: a record naming its owner with an expiry, renewed by a heartbeat
//! while held. A live lease is never taken; an expired one (its holder died) may be, and
//! the taker reports it. Waiting for a lock has its own timeout.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use crate::error::Result;

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
    /// The caller executes right after taking the lock (as
    /// [`crate::MigrationRunnerExt::apply_locked`] and the strategies do), so a backend may
    /// take the lock with the first request that applies instead of a request of its own.
    /// [`crate::MigrationRunner::acquire_lock`] may then return before the lease exists: a
    /// live lease held by someone else is reported by `execute_migration` (as `LockHeld`,
    /// with nothing applied), [`LockGuard::took_over`] is known only after it, and
    /// [`LockGuard::info`]'s times are this process's clock until then. Off by default.
    pub deferrable: bool,
}

impl LockRequest {
    /// Default lease: long enough to survive a slow heartbeat, short enough that a crashed
    /// deploy blocks the next one for under a minute.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

    /// A request by this process waiting up to `wait`, with the default lease.
    pub fn new(deployment_id: Option<String>, wait: Duration) -> Self {
        Self {
            owner: LockOwner::current(deployment_id),
            wait,
            lease: Self::DEFAULT_LEASE,
            deferrable: false,
        }
    }

    /// The same request, letting the backend take the lock with the first apply (see
    /// [`LockRequest::deferrable`]).
    pub fn deferrable(mut self) -> Self {
        self.deferrable = true;
        self
    }

    /// The same request with another lease length.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

/// A held lock. Release it on every path: [`LockGuard::release`] consumes the guard.
/// Dropping an unreleased guard stops its heartbeat and logs a warning; the lease then
/// expires on its own, exactly as if the process had died.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait LockGuard: Send + Sync + fmt::Debug {
    /// The lease this guard holds.
    fn info(&self) -> LockInfo;

    /// The expired lease this guard replaced, if it took one over. For a
    /// [`LockRequest::deferrable`] lock, ask after the first execution.
    fn took_over(&self) -> Option<LockInfo>;

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
    let started = tokio::time::Instant::now();
    let deadline = started + wait;
    let mut pause = Duration::from_millis(10);
    loop {
        match attempt().await? {
            Attempt::Acquired(handle, previous) => return Ok(Ok((handle, previous))),
            Attempt::Held(holder) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(Err((holder, now - started)));
                }
                let sleep = jitter(pause).min(deadline - now);
                tokio::time::sleep(sleep).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// Renews a lease in the background until stopped; remembers whether renewal failed.
#[derive(Debug)]
pub struct Heartbeat {
    task: JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Heartbeat {
    /// Calls `renew` every third of `lease`; `renew` answers whether the lease is still ours.
    /// A renewal that errors (say, a dropped connection) is retried at the next beat.
    pub fn spawn<F, Fut>(lease: Duration, renew: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<bool>> + Send + 'static,
    {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        let period = (lease / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        flag.store(true, Ordering::SeqCst);
                        tracing::warn!("migration lock lease was lost; stopping heartbeat");
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "could not renew migration lock lease"),
                }
            }
        });
        Self { task, lost }
    }

    /// Whether a renewal found the lease gone.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing.
    pub fn stop(&self) {
        self.task.abort();
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
}
