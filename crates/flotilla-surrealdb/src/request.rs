//! Sending a request and reading its reply: every request names its target first, waits a
//! bounded time, retries write conflicts with backoff, and tells a refused request (nothing
//! ran) from one whose reply never came (anything may have run).

use std::future::{Future, IntoFuture};
use std::time::Duration;

use flotilla_runner::{Backoff, LeaseWatch, Result, RunnerError, Target};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::errors::{classify, is_conflict, is_not_executed};
use crate::runner::SurrealRunner;
use crate::session::Lane;
use crate::sql;

/// How long a request may wait for its reply.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Limit<'a> {
    /// The configured request timeout.
    Request,
    /// As long as the lease is renewed: a migration may take as long as it needs while the
    /// server answers; when no renewal succeeded for a whole lease, the reply is given up on.
    WhileRenewed(&'a LeaseWatch),
}

/// What became of a request that was sent.
pub(crate) enum Reply {
    /// The server answered; statement errors are in the results.
    Answered(surrealdb::IndexedResults),
    /// The server refused the request as a whole: nothing of it ran.
    Refused(surrealdb::Error),
    /// No answer came (a lost connection, a timeout): any part of it may have run.
    Lost(RunnerError),
}

/// A query failure: worth retrying (write conflict) or final.
pub(crate) enum Failure {
    Conflict(surrealdb::Error),
    Fatal(RunnerError),
}

/// `USE NS … DB …;` for `target`, with both names quoted, ahead of every request.
pub(crate) fn use_prefix(target: &Target) -> String {
    format!(
        "USE NS {} DB {};\n",
        sql::ident(&target.connection.namespace),
        sql::ident(&target.connection.database)
    )
}

impl SurrealRunner {
    /// Sends `USE` for `target` followed by `text`, on a session from `lane`. `Err`: it could
    /// not be sent (no connection, no session), so nothing ran. The reply's first result is
    /// the `USE`'s.
    pub(crate) async fn send(
        &self,
        target: &Target,
        lane: Lane,
        text: &str,
        vars: Option<&Map<String, Value>>,
        limit: Limit<'_>,
    ) -> Result<Reply> {
        let sessions = self.sessions();
        let deadline = match limit {
            Limit::Request => Some(Instant::now() + sessions.config().request_timeout),
            Limit::WhileRenewed(_) => None,
        };
        let session = sessions.borrow(target, lane, deadline).await?;
        self.count_request();
        let mut query = session.client().query(use_prefix(target) + text);
        if let Some(vars) = vars {
            query = query.bind(Value::Object(vars.clone()));
        }
        let answer = query.into_future();
        let outcome = match limit {
            Limit::Request => {
                let deadline = deadline.unwrap_or_else(Instant::now);
                tokio::time::timeout_at(deadline, answer).await.ok()
            }
            Limit::WhileRenewed(watch) => tokio::select! {
                answer = answer => Some(answer),
                () = watch.silent() => None,
            },
        };
        let generation = session.generation();
        match outcome {
            Some(Ok(results)) => Ok(Reply::Answered(results)),
            Some(Err(error)) if error.is_connection() => {
                session.discard();
                sessions.invalidate(&target.connection.url, generation);
                Ok(Reply::Lost(classify(target, error)))
            }
            Some(Err(error)) => Ok(Reply::Refused(error)),
            None => {
                // The server stopped answering: this connection is of no further use, and
                // dropping it lets the server cancel what it was running for us.
                session.discard();
                sessions.invalidate(&target.connection.url, generation);
                Ok(Reply::Lost(match limit {
                    Limit::Request => sessions.timeout(target, "the request"),
                    Limit::WhileRenewed(_) => RunnerError::Unreachable {
                        environment: target.environment.clone(),
                        endpoint: target.connection.redacted_url(),
                        source: "no answer to the migration request, and no renewal of its lease succeeded for a whole lease".into(),
                    },
                }))
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or conflicts too often.
    pub(crate) async fn retrying<T, F, Fut>(&self, target: &Target, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let attempts = self.sessions().config().conflict_attempts.max(1);
        let mut backoff = conflict_backoff();
        let mut made = 0;
        loop {
            made += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Conflict(error)) if made >= attempts => {
                    return Err(RunnerError::Conflict {
                        environment: target.environment.clone(),
                        attempts,
                        source: crate::errors::driver(target, &error),
                    });
                }
                Err(Failure::Conflict(error)) => {
                    tracing::debug!(environment = %target.environment, error = %error.message(), made, "write conflict; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Sends `text` (whose body has `body_statements` statements besides any transaction
    /// markers) with `vars`, within the request timeout, retrying the whole request on write
    /// conflicts. Statement errors other than conflicts are left in the response for the
    /// caller to interpret; a reply that never came is an error.
    pub(crate) async fn request(
        &self,
        target: &Target,
        lane: Lane,
        text: &str,
        vars: Option<&Map<String, Value>>,
        body_statements: usize,
    ) -> Result<Response> {
        self.retrying(target, || async {
            let raw = match self
                .send(target, lane, text, vars, Limit::Request)
                .await
                .map_err(Failure::Fatal)?
            {
                Reply::Answered(raw) => raw,
                Reply::Lost(error) => return Err(Failure::Fatal(error)),
                Reply::Refused(error) if is_conflict(&error) => {
                    return Err(Failure::Conflict(error));
                }
                Reply::Refused(error) => return Err(Failure::Fatal(classify(target, error))),
            };
            let mut response = Response::new(raw, body_statements);
            if let Some(error) = response.prefix_error.take() {
                return Err(if is_conflict(&error) {
                    Failure::Conflict(error)
                } else {
                    Failure::Fatal(classify(target, error))
                });
            }
            match response.take_conflict() {
                Some(conflict) => Err(Failure::Conflict(conflict)),
                None => Ok(response),
            }
        })
        .await
    }
}

/// The pauses between attempts at a conflicting transaction.
pub(crate) fn conflict_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(5), Duration::from_millis(200))
}

/// A query's per-statement results, with transaction markers accounted for.
pub(crate) struct Response {
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
    pub(crate) fn failure(&mut self) -> Option<(usize, surrealdb::Error)> {
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
    pub(crate) fn result(&mut self, index: usize) -> std::result::Result<Value, surrealdb::Error> {
        if let Some(at) = self.errors.iter().position(|(i, _)| *i == index) {
            return Err(self.errors.remove(at).1);
        }
        result_json(&mut self.inner, index + self.offset)
    }
}

/// Statement `index`'s result as JSON (datetimes and record ids become strings).
pub(crate) fn result_json(
    response: &mut surrealdb::IndexedResults,
    index: usize,
) -> std::result::Result<Value, surrealdb::Error> {
    response
        .take::<surrealdb::types::Value>(index)
        .map(surrealdb::types::Value::into_json_value)
}
