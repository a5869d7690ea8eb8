//! Applying (or reverting) a target's migrations: up to [`BATCH`] in one request, each its
//! own transaction fenced by the lease token (and on its predecessor), perhaps taking the
//! lease in the first and removing it after the last; write conflicts resent from the first
//! transaction that did not commit; a lost reply settled by reading history back.

use flotilla_core::{AppliedMigration, Migration};
use flotilla_runner::execute::{RequestOutcome, reconcile, run_in_requests, statements_of};
use flotilla_runner::{
    Direction, LeaseWatch, MigrationPlan, MigrationResult, Result, RunnerError, Target,
};
use serde_json::{Map, Value, json};

use crate::errors::{
    classify, driver, is_commit_failure, is_conflict, is_not_executed, is_outcome_unknown,
};
use crate::lease::{Lease, LeaseState};
use crate::request::{Limit, Reply, conflict_backoff};
use crate::runner::{HistoryTable, SurrealRunner};
use crate::session::Lane;
use crate::sql::{self, HistoryChange, LOCK_LOST, LeaseUse, NOT_APPLIED};

/// Migrations sent in one request: enough to make a fleet's usual handful one round trip,
/// few enough to keep a request and its reply small.
pub(crate) const PER_REQUEST_MIGRATIONS: usize = 32;

/// One request sent: for which target and plan, which migrations, under which lease.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    target: &'a Target,
    plan: &'a MigrationPlan,
    pending: &'a [&'a Migration],
    under: UnderLease<'a>,
    request: &'a sql::ApplyRequest,
}

/// Where an apply request stands across its attempts: how many of its migrations committed,
/// and how many write conflicts it met.
struct Attempt {
    next: usize,
    conflicts: u32,
    attempts: u32,
    backoff: flotilla_runner::Backoff,
    /// Whether every transaction of the last reply committed.
    all_committed: bool,
}

impl Attempt {
    fn new(attempts: u32) -> Self {
        Self {
            next: 0,
            conflicts: 0,
            attempts: attempts.max(1),
            backoff: conflict_backoff(),
            all_committed: false,
        }
    }

    /// Counts a write conflict; when attempts remain, waits and answers `true` (send again).
    async fn retry(&mut self) -> bool {
        self.conflicts += 1;
        if self.conflicts >= self.attempts {
            return false;
        }
        self.backoff.wait().await;
        true
    }
}

/// The lease a run works under, and what it does with it.
#[derive(Clone, Copy)]
pub(crate) struct UnderLease<'a> {
    pub(crate) lease: &'a Lease,
    pub(crate) watch: &'a LeaseWatch,
    /// Remove the lease after the last migration commits, in the same request.
    pub(crate) release: bool,
}

/// What became of one transaction of a request.
#[derive(Debug)]
enum Block {
    Committed,
    /// A write conflict: worth sending again.
    Conflict(surrealdb::Error),
    /// Failed at this body position (the body's length when `COMMIT` itself failed).
    Failed(usize, surrealdb::Error),
    /// SurrealDB cannot tell whether it committed.
    Unknown(surrealdb::Error),
}

/// A request's reply, read transaction by transaction.
enum Decoded {
    /// The request's `USE` failed: nothing of ours ran (fences and the take's target check
    /// stop anything in another namespace).
    UseFailed(surrealdb::Error),
    Blocks {
        blocks: Vec<Block>,
        /// The release statement's answer: whether it removed our lease.
        released: Option<std::result::Result<bool, surrealdb::Error>>,
    },
}

impl SurrealRunner {
    /// Runs `plan` from `history` under `under.lease`; a lease still [`LeaseState::Taking`]
    /// is taken by the first request.
    pub(crate) async fn run(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        history: &[AppliedMigration],
        under: UnderLease<'_>,
    ) -> Result<MigrationResult> {
        run_in_requests(
            target,
            plan,
            history,
            PER_REQUEST_MIGRATIONS,
            |batch, last| {
                let under = UnderLease {
                    release: under.release && last,
                    ..under
                };
                self.apply_request(target, plan, batch, under)
            },
        )
        .await
    }

    /// Applies (or reverts) `batch` in one request and sends again from the first migration
    /// that did not commit when one conflicted.
    async fn apply_request(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        batch: Vec<&Migration>,
        under: UnderLease<'_>,
    ) -> RequestOutcome {
        let mut attempt = Attempt::new(self.sessions().config().conflict_attempts);
        while attempt.next < batch.len() {
            let taking = under.lease.state() == LeaseState::Taking;
            if !taking && under.watch.is_lost() {
                return RequestOutcome::failed(attempt.next, lock_lost(target));
            }
            let pending = &batch[attempt.next..];
            let (request, vars) = self.compose(target, plan, pending, under, taking);
            let sent = self
                .send(
                    target,
                    Lane::Deploy,
                    &request.text,
                    Some(&vars),
                    Limit::WhileRenewed(under.watch),
                )
                .await;
            let exchange = Exchange {
                target,
                plan,
                pending,
                under,
                request: &request,
            };
            let step = self.read_reply(&exchange, sent, &mut attempt).await;
            if let Some(outcome) = step {
                return outcome;
            }
        }
        RequestOutcome::committed(batch.len())
    }

    /// The request for `pending`, and its variables.
    fn compose(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        pending: &[&Migration],
        under: UnderLease<'_>,
        taking: bool,
    ) -> (sql::ApplyRequest, Map<String, Value>) {
        let lease = under.lease;
        let items: Vec<sql::Item<'_>> = pending
            .iter()
            .map(|m| sql::Item {
                id: sql::record_id(m.version.as_str()),
                statements: statements_of(m, plan.direction).0,
            })
            .collect();
        let change = match plan.direction {
            Direction::Up => HistoryChange::Record,
            Direction::Down => HistoryChange::Remove,
        };
        let define_history =
            !taking && self.history_table(&target.database_key()) != Some(HistoryTable::Ready);
        let request = sql::batch(
            &items,
            change,
            LeaseUse {
                take: taking.then_some(lease.ask.lease),
                release: under.release,
                define_history,
            },
        );
        let mut vars = batch_vars(plan, pending, &lease.token);
        if taking {
            vars.extend(lease.ask.vars.clone());
            vars.insert("fl_ns".into(), json!(target.connection.namespace));
            vars.insert("fl_db".into(), json!(target.connection.database));
        }
        (request, vars)
    }

    /// What the reply to a request means: `None` to carry on (every migration committed, or
    /// a conflict to send again from), or the outcome to report.
    async fn read_reply(
        &self,
        exchange: &Exchange<'_>,
        sent: Result<Reply>,
        attempt: &mut Attempt,
    ) -> Option<RequestOutcome> {
        let Exchange {
            target,
            plan,
            pending,
            under,
            request,
        } = *exchange;
        let lease = under.lease;
        let taking = lease.state() == LeaseState::Taking;
        let refused = |error: RunnerError, attempt: &Attempt| {
            lease.take_not_done();
            Some(RequestOutcome::failed(attempt.next, error))
        };
        let raw = match sent {
            // Not sent, or refused whole: nothing ran.
            Err(error) => return refused(error, attempt),
            Ok(Reply::Refused(error)) if is_conflict(&error) && attempt.retry().await => {
                return None;
            }
            Ok(Reply::Refused(error)) => return refused(classify(target, error), attempt),
            Ok(Reply::Lost(error)) => {
                let outcome =
                    self.after_lost_reply(target, plan, pending, attempt.next, under, error);
                return Some(outcome.await);
            }
            Ok(Reply::Answered(raw)) => raw,
        };
        let (blocks, released) = match decode(raw, request) {
            Err(unreadable) => {
                let error = RunnerError::Backend {
                    environment: target.environment.clone(),
                    source: unreadable.into(),
                };
                let outcome =
                    self.after_lost_reply(target, plan, pending, attempt.next, under, error);
                return Some(outcome.await);
            }
            Ok(Decoded::UseFailed(error)) if is_conflict(&error) && attempt.retry().await => {
                return None;
            }
            Ok(Decoded::UseFailed(error)) => return refused(classify(target, error), attempt),
            Ok(Decoded::Blocks { blocks, released }) => (blocks, released),
        };
        if taking && !self.settle_take(target, &blocks, &request.layouts[0], lease) {
            // Someone holds the lease, or the target is no longer the new one the probe
            // saw: nothing ran, and the fences stopped the rest.
            return Some(RequestOutcome::failed(0, lock_lost(target)));
        }
        if request.defines_history && matches!(blocks.first(), Some(Block::Committed)) {
            self.set_history_table(&target.database_key(), Some(HistoryTable::Ready));
        }
        let outcome = self.read_blocks(exchange, blocks, attempt).await;
        if outcome.is_none()
            && attempt.all_committed
            && let Some(Ok(true)) = released
        {
            lease.released();
        }
        outcome
    }

    /// Each transaction's outcome, in order: committed ones advance, a conflict sends the rest
    /// again, a failure or an unknown outcome ends the request.
    async fn read_blocks(
        &self,
        exchange: &Exchange<'_>,
        blocks: Vec<Block>,
        attempt: &mut Attempt,
    ) -> Option<RequestOutcome> {
        let (target, pending) = (exchange.target, exchange.pending);
        attempt.all_committed = false;
        let sent_from = attempt.next;
        let layouts = &exchange.request.layouts;
        for ((block, migration), layout) in blocks.into_iter().zip(pending).zip(layouts) {
            match block {
                Block::Committed => attempt.next += 1,
                Block::Conflict(error) => {
                    if attempt.retry().await {
                        tracing::debug!(environment = %target.environment, error = %error.message(), "write conflict; sending the rest again");
                        return None;
                    }
                    let error = RunnerError::Conflict {
                        environment: target.environment.clone(),
                        attempts: attempt.attempts,
                        source: driver(target, &error),
                    };
                    return Some(RequestOutcome::failed(attempt.next, error));
                }
                Block::Failed(position, error) => {
                    let direction = exchange.plan.direction;
                    let error =
                        block_error(target, direction, migration, *layout, position, &error);
                    return Some(RequestOutcome::failed(attempt.next, error));
                }
                Block::Unknown(error) => {
                    let rest = &pending[attempt.next - sent_from..];
                    let error = classify(target, error);
                    let (plan, under) = (exchange.plan, exchange.under);
                    let outcome =
                        self.after_lost_reply(target, plan, rest, attempt.next, under, error);
                    return Some(outcome.await);
                }
            }
        }
        attempt.all_committed = true;
        None
    }

    /// Reads what the first transaction of a taking request did to the lease; `false` when
    /// the take was refused (nothing of the request ran).
    fn settle_take(
        &self,
        target: &Target,
        blocks: &[Block],
        layout: &sql::Layout,
        lease: &Lease,
    ) -> bool {
        match blocks.first() {
            Some(Block::Committed) => {
                lease.take_committed();
                self.set_history_table(&target.database_key(), Some(HistoryTable::Ready));
                true
            }
            // The target check, the history table's definition or the lock's `CREATE` failed.
            Some(Block::Failed(position, _))
                if *position < layout.prelude
                    || (*position > layout.prelude + layout.statements
                        && *position < layout.body()) =>
            {
                lease.take_refused();
                false
            }
            Some(Block::Conflict(_)) => {
                lease.take_refused();
                false
            }
            // The migration failed, undoing the take with it: reported as it is.
            Some(Block::Failed(..)) => {
                lease.take_not_done();
                true
            }
            // Settled by history, like a lost reply.
            Some(Block::Unknown(_)) | None => true,
        }
    }

    /// A request whose reply never came, or could not be read: history says which of
    /// `sent` committed (this process's rows), and the lease is then what that implies.
    async fn after_lost_reply(
        &self,
        target: &Target,
        plan: &MigrationPlan,
        sent: &[&Migration],
        done_before: usize,
        under: UnderLease<'_>,
        error: RunnerError,
    ) -> RequestOutcome {
        let lease = under.lease;
        let taking = lease.state() == LeaseState::Taking;
        tracing::warn!(environment = %target.environment, %error, "no readable reply to a migration request; reading history back");
        let committed = match reconcile(self, target, plan, sent).await {
            Ok(committed) => committed,
            Err(unknown) => {
                lease.outcome_unknown();
                return RequestOutcome::failed(done_before, unknown);
            }
        };
        if taking && committed == 0 {
            // The take rode in the first transaction, which did not commit.
            lease.take_not_done();
        } else if under.release && committed == sent.len() {
            // The release after the last transaction may or may not have run.
            lease.outcome_unknown();
        } else {
            lease.take_committed();
        }
        let done = done_before + committed;
        if committed == sent.len() {
            RequestOutcome::committed(done)
        } else {
            RequestOutcome::failed(done, error)
        }
    }
}

fn lock_lost(target: &Target) -> RunnerError {
    RunnerError::LockLost {
        environment: target.environment.clone(),
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
        vars.insert(format!("fl_version_{k}"), json!(migration.version.as_str()));
        vars.insert(format!("fl_description_{k}"), json!(migration.description));
        vars.insert(format!("fl_checksum_{k}"), json!(migration.checksum));
    }
    vars
}

/// Splits a request's results into one outcome per transaction, and the release's. Every
/// transaction contributes `BEGIN`, its body and `COMMIT`; a reply of another shape is an
/// error (its effect is then read from history).
fn decode(
    mut raw: surrealdb::IndexedResults,
    request: &sql::ApplyRequest,
) -> std::result::Result<Decoded, String> {
    // The leading `USE`, each transaction, then the release.
    let blocks_end: usize = 1 + request.layouts.iter().map(|l| l.body() + 2).sum::<usize>();
    let expected = blocks_end + usize::from(request.releases);
    if raw.num_statements() != expected {
        return Err(format!(
            "expected {expected} results from the migration request, got {}",
            raw.num_statements()
        ));
    }
    let mut errors: Vec<(usize, surrealdb::Error)> = raw.take_errors().into_iter().collect();
    errors.sort_by_key(|(index, _)| *index);
    if errors.first().is_some_and(|(index, _)| *index == 0) {
        return Ok(Decoded::UseFailed(errors.swap_remove(0).1));
    }
    let mut errors = errors.into_iter().peekable();
    let mut blocks = Vec::with_capacity(request.layouts.len());
    let mut base = 1;
    for layout in &request.layouts {
        let end = base + layout.body() + 2;
        let mut mine = Vec::new();
        while let Some((index, _)) = errors.peek()
            && *index < end
        {
            mine.extend(errors.next());
        }
        blocks.push(block_of(mine, base));
        base = end;
    }
    let released = request.releases.then(|| match errors.next() {
        Some((_, error)) => Err(error),
        None => result_json(&mut raw, blocks_end).map(|v| v.as_bool() == Some(true)),
    });
    Ok(Decoded::Blocks { blocks, released })
}

fn result_json(
    raw: &mut surrealdb::IndexedResults,
    index: usize,
) -> std::result::Result<Value, surrealdb::Error> {
    crate::request::result_json(raw, index)
}

/// One transaction's outcome from its errors (indices into the whole reply; `base` is its
/// `BEGIN`'s).
fn block_of(mut errors: Vec<(usize, surrealdb::Error)>, base: usize) -> Block {
    if errors.is_empty() {
        return Block::Committed;
    }
    if let Some(at) = errors.iter().position(|(_, e)| is_conflict(e)) {
        return Block::Conflict(errors.swap_remove(at).1);
    }
    if let Some(at) = errors.iter().position(|(_, e)| is_outcome_unknown(e)) {
        return Block::Unknown(errors.swap_remove(at).1);
    }
    // The real cause: a statement's error, or `COMMIT`'s ("Cannot COMMIT: …"); the others
    // only say they were not executed.
    let at = errors
        .iter()
        .position(|(_, e)| !is_not_executed(e) || is_commit_failure(e))
        .unwrap_or(0);
    let (index, error) = errors.swap_remove(at);
    // Body positions start after `BEGIN`.
    Block::Failed(index.saturating_sub(base + 1), error)
}

/// The error for a transaction that failed at body `position`.
fn block_error(
    target: &Target,
    direction: Direction,
    migration: &Migration,
    layout: sql::Layout,
    position: usize,
    error: &surrealdb::Error,
) -> RunnerError {
    let (statements, file) = statements_of(migration, direction);
    let statements_end = layout.prelude + layout.statements;
    let message = target.connection.scrub(error.message());
    if position < layout.prelude {
        if message.contains(LOCK_LOST) {
            lock_lost(target)
        } else if message.contains(NOT_APPLIED) {
            RunnerError::AlreadyReverted {
                environment: target.environment.clone(),
                version: migration.version.clone(),
            }
        } else {
            RunnerError::Backend {
                environment: target.environment.clone(),
                source: format!("preparing migration {}: {message}", migration.version).into(),
            }
        }
    } else if position < statements_end {
        let index = position - layout.prelude;
        RunnerError::StatementFailed {
            environment: target.environment.clone(),
            version: migration.version.clone(),
            file: file.to_path_buf(),
            statement: index + 1,
            line: statements[index].line,
            message,
        }
    } else {
        let doing = if position == statements_end {
            "recording"
        } else if position < layout.body() {
            "taking the lock with"
        } else {
            "committing"
        };
        let hint = if message.contains("already exists") && position == statements_end {
            " (another deploy recorded it meanwhile: its lease was taken over while it ran)"
        } else {
            ""
        };
        RunnerError::Backend {
            environment: target.environment.clone(),
            source: format!(
                "{doing} migration {} in {}: {message}{hint}",
                migration.version,
                sql::HISTORY_TABLE,
            )
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_core::{Connection, MigrationSet};
    use surrealdb::types::QueryError;

    use super::*;

    fn not_executed() -> surrealdb::Error {
        surrealdb::Error::query(
            "The query was not executed due to a failed transaction".to_owned(),
            Some(QueryError::NotExecuted),
        )
    }

    /// When `COMMIT` itself fails, SurrealDB marks every statement "not executed" and puts
    /// the real cause on the `COMMIT` row, with the same "not executed" kind: the cause must
    /// still be what is reported.
    #[test]
    fn a_failed_commit_keeps_its_real_cause() {
        let set = MigrationSet::from_files([(
            "m/0001_a.surql".into(),
            "DEFINE TABLE a; CREATE a:1;".to_owned(),
        )])
        .expect("valid");
        let migration = &set.as_slice()[0];
        let layout = sql::Layout {
            prelude: 1,
            statements: 2,
            postlude: 1,
        };
        // BEGIN at 1; body 2..=5; COMMIT at 6.
        let commit = surrealdb::Error::query(
            "Cannot COMMIT: the disk is full".to_owned(),
            Some(QueryError::NotExecuted),
        );
        let errors = vec![
            (2, not_executed()),
            (3, not_executed()),
            (4, not_executed()),
            (5, not_executed()),
            (6, commit),
        ];
        let Block::Failed(position, error) = block_of(errors, 1) else {
            panic!("a failed block");
        };
        assert_eq!(position, layout.body(), "the failure is the COMMIT's");
        let target = Target::new("prod", Connection::new("mem://", "ns", "db"));
        let reported = block_error(&target, Direction::Up, migration, layout, position, &error);
        let message = reported.to_string();
        assert!(
            message.contains("committing migration 0001") && message.contains("the disk is full"),
            "{message}"
        );
    }

    #[test]
    fn a_statement_failure_names_the_statement_and_an_unknown_commit_is_unknown() {
        let failing = surrealdb::Error::query("oops".to_owned(), None);
        let Block::Failed(position, _) = block_of(vec![(3, failing), (4, not_executed())], 1)
        else {
            panic!("failed");
        };
        assert_eq!(position, 1);
        let unknown = surrealdb::Error::query(
            "The transaction's commit outcome is unknown, so whether this query was applied is undetermined".to_owned(),
            None,
        );
        assert!(matches!(block_of(vec![(2, unknown)], 1), Block::Unknown(_)));
        assert!(matches!(block_of(Vec::new(), 1), Block::Committed));
    }
}
