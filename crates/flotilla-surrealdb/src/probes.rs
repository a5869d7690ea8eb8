//! Health probes to one endpoint, sent together.
//!
//! A fleet's pre-flight probes every target at once. A probe is three statements (`USE`, the
//! lease, the history), and a request of its own costs the server as much again: on the test
//! server about 1 ms of CPU per request against about 0.1 ms per statement (see
//! docs/performance.md). So probes for one endpoint and user that wait at the same time go out
//! together, up to [`PER_REQUEST`] in one request and [`IN_FLIGHT`] such requests at once.
//!
//! A probe the shared request cannot answer for certain — its `USE` failed, a statement
//! conflicted, or the request itself failed — is sent again on its own, so a target's error
//! is exactly the one a lone probe reports, and no target's answer can come from another's
//! namespace.

use std::collections::HashMap;

use std::future::IntoFuture;

use flotilla_runner::util::lock_unpoisoned as lock;
use flotilla_runner::{Result, Target};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::errors::is_conflict;
use crate::request::{result_json, use_prefix};
use crate::runner::SurrealRunner;
use crate::session::{Lane, UserKey};
use crate::sql;

/// Probes in one request: enough that a fleet's pre-flight is a few requests per endpoint
/// (10,000 up-to-date tenants: about 0.005 requests each, the listing of what exists
/// included). A slow target holds back the others of its request, which are reads.
const PER_REQUEST: usize = 512;

/// Shared requests in flight per endpoint and user, so the server's cores all work.
const IN_FLIGHT: usize = 4;

/// Statements per probe in a shared request: `USE`, the lease, the history.
const STATEMENTS: usize = 3;

/// A probe's answer: the lease statement's result, then the history's; `None` when the
/// target's namespace or database does not exist (nothing was sent to it, so nothing was
/// created).
pub(crate) type Rows = Option<(
    std::result::Result<Value, surrealdb::Error>,
    std::result::Result<Value, surrealdb::Error>,
)>;

type Waiting = (Target, oneshot::Sender<Rows>, Instant);

/// Probes waiting for one endpoint and user, and how many tasks are sending them.
#[derive(Default)]
pub(crate) struct Queue {
    /// Each probe, its answer's way back, and when it was asked.
    waiting: Vec<Waiting>,
    senders: usize,
}

impl SurrealRunner {
    /// `target`'s lease and history, read in one request with other probes waiting for the
    /// same endpoint and user.
    pub(crate) async fn probe_rows(&self, target: &Target) -> Result<Rows> {
        let key = UserKey::of(target);
        let (answer, answered) = oneshot::channel();
        let start_sender = {
            let mut queues = lock(self.probe_queues());
            let queue = queues.entry(key.clone()).or_default();
            queue.waiting.push((target.clone(), answer, Instant::now()));
            let start = queue.senders < IN_FLIGHT;
            if start {
                queue.senders += 1;
            }
            start
        };
        if start_sender {
            // A task of its own, so a caller that stops waiting does not strand the others.
            let runner = self.clone();
            tokio::spawn(async move { runner.send_probes(key).await });
        }
        match answered.await {
            Ok(rows) => Ok(rows),
            // The shared request could not answer for this target.
            Err(_) => self.probe_alone(target).await,
        }
    }

    async fn probe_alone(&self, target: &Target) -> Result<Rows> {
        if !self.database_exists(target).await? {
            return Ok(None);
        }
        let mut response = self
            .request(target, Lane::Deploy, &sql::health(), None, 2)
            .await?;
        Ok(Some((response.result(0), response.result(1))))
    }

    /// Sends `key`'s waiting probes, a request at a time, until none wait.
    async fn send_probes(&self, key: UserKey) {
        let mut sender = Sender {
            runner: self,
            key: &key,
            done: false,
        };
        loop {
            let batch: Vec<_> = {
                let mut queues = lock(self.probe_queues());
                let queue = queues.entry(key.clone()).or_default();
                if queue.waiting.is_empty() {
                    // Under the lock that callers queue under: a probe queued after this
                    // sees one sender fewer and starts its own.
                    queue.senders -= 1;
                    if queue.senders == 0 {
                        queues.remove(&key);
                    }
                    sender.done = true;
                    return;
                }
                let take = queue.waiting.len().min(PER_REQUEST);
                queue.waiting.drain(..take).collect()
            };
            let answers = self.probe_together(&batch).await;
            for ((_, answer, _), rows) in batch.into_iter().zip(answers) {
                // Dropping `answer` instead makes its caller probe alone.
                if let Some(rows) = rows {
                    let _ = answer.send(rows);
                }
            }
        }
    }

    /// One request for every probe in `batch`; per probe, its rows, or `None` when the
    /// request cannot tell them for certain.
    async fn probe_together(&self, batch: &[Waiting]) -> Vec<Option<Rows>> {
        let unanswered = || batch.iter().map(|_| None).collect();
        let targets: Vec<&Target> = batch.iter().map(|(target, ..)| target).collect();
        // A listing answers a probe only if it was made after the probe was asked.
        let asked = batch
            .iter()
            .map(|(.., at)| *at)
            .max()
            .unwrap_or_else(Instant::now);
        let Ok(exists) = self.existing(&targets, asked).await else {
            return unanswered();
        };
        // Only targets whose database exists are sent a `USE`; the others are answered now.
        let present: Vec<usize> = (0..batch.len()).filter(|&i| exists[i]).collect();
        let Some(&first) = present.first() else {
            return batch.iter().map(|_| Some(None)).collect();
        };
        let first = &batch[first].0;
        let timeout = self.sessions().config().request_timeout;
        let deadline = Instant::now() + timeout;
        let Ok(session) = self
            .sessions()
            .borrow(first, Lane::Deploy, Some(deadline))
            .await
        else {
            return unanswered();
        };
        let health = sql::health();
        let text: String = present
            .iter()
            .map(|&i| use_prefix(&batch[i].0) + &health)
            .collect();
        self.count_request();
        let asked = session.client().query(text).into_future();
        let Ok(Ok(mut raw)) = tokio::time::timeout_at(deadline, asked).await else {
            // No answer, or none to trust: each probe goes alone, and finds out.
            session.discard();
            return unanswered();
        };
        let mut errors: HashMap<usize, surrealdb::Error> = raw.take_errors().into_iter().collect();
        let mut sent = present.iter().enumerate();
        let mut next = sent.next();
        (0..batch.len())
            .map(|index| {
                let position = match next {
                    Some((position, &i)) if i == index => {
                        next = sent.next();
                        position
                    }
                    _ => return Some(None),
                };
                let at = position * STATEMENTS;
                if errors.remove(&at).is_some() {
                    // Its `USE` failed: what follows ran in another namespace, if anywhere.
                    return None;
                }
                let mut result = |index: usize| {
                    errors
                        .remove(&index)
                        .map_or_else(|| result_json(&mut raw, index), Err)
                };
                let rows = (result(at + 1), result(at + 2));
                let conflicted = [&rows.0, &rows.1]
                    .into_iter()
                    .any(|r| r.as_ref().is_err_and(is_conflict));
                (!conflicted).then_some(Some(rows))
            })
            .collect()
    }
}

/// A sending task's place in its queue's count, given back however the task ends. If it
/// ends without emptying the queue (a panic) and no sender is left, the waiting probes are
/// dropped, which makes each caller probe alone.
struct Sender<'a> {
    runner: &'a SurrealRunner,
    key: &'a UserKey,
    done: bool,
}

impl Drop for Sender<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut queues = lock(self.runner.probe_queues());
        if let Some(queue) = queues.get_mut(self.key) {
            queue.senders = queue.senders.saturating_sub(1);
            if queue.senders == 0 {
                queues.remove(self.key);
            }
        }
    }
}
