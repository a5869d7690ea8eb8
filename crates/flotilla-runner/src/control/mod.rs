//! The control store seam: where deployments are journaled, the fleet's quiesce flag is kept
//! and audit records go — a store that outlives any one process. A backend crate implements
//! [`ControlStore`] (`flotilla_surrealdb::SurrealControlStore`); [`MemoryControlStore`] is the
//! reference implementation, with fault injection, for tests. The coordinator decides what
//! to write and when; this module only says what a store keeps.

mod memory;
mod records;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryControlStore;
pub use records::{
    Actor, AuditEvent, AuditRecord, Claim, DeploymentDetail, DeploymentState, DeploymentSummary,
    Quiesce, Refusal, RunRecord, RunStart, TargetRecord, overlaps,
};

/// Why the control store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// It could not be reached or did not answer.
    #[error("the control store {store} cannot be used: {reason}")]
    Unavailable {
        /// Where it is (no credentials).
        store: String,
        /// Why.
        reason: String,
    },
    /// It answered with something flotilla did not write.
    #[error("the control store {store} holds an unreadable record: {reason}")]
    Corrupt {
        /// Where it is.
        store: String,
        /// What could not be read.
        reason: String,
    },
    /// The run may not start as asked; nothing was written.
    #[error("{reason}")]
    Refused {
        /// Why, for the caller to act on.
        refusal: Refusal,
        /// Why, in words.
        reason: String,
    },
}

/// Where deployments are journaled, the quiesce flag is kept and audit records go. Every
/// method is bounded in time by the implementation.
#[async_trait]
pub trait ControlStore: Send + Sync + fmt::Debug {
    /// Where the store is, for messages (no credentials).
    fn describe(&self) -> String;

    /// Records a process starting its part of a deployment, atomically: the deployment itself
    /// when it is new (a shard or a resume joins one that exists, whose plan is kept), and
    /// this run, alive for `run.lease` unless renewed — refused ([`ControlError::Refused`])
    /// when `run.claim` does not hold: a new id that exists, a resumed one that does not, a
    /// recorded fingerprint that differs, or a live run of the same deployment and shard (a
    /// run of the whole deployment overlaps every shard). A run id is created, never
    /// replaced.
    async fn start_run(&self, run: &RunStart) -> Result<(), ControlError>;

    /// Keeps run `run_id` alive for another `lease`, by the store's clock; a zero `lease`
    /// ends its liveness (a run known dead).
    async fn renew_run(&self, run_id: &str, lease: Duration) -> Result<(), ControlError>;

    /// Writes target results (the latest per deployment and environment wins) and audit
    /// records.
    async fn write(
        &self,
        targets: &[TargetRecord],
        audit: &[AuditRecord],
    ) -> Result<(), ControlError>;

    /// Records run `run_id`'s end and how it ended.
    async fn finish_run(&self, run_id: &str, outcome: &str) -> Result<(), ControlError>;

    /// The newest `limit` deployments, newest first.
    async fn deployments(&self, limit: usize) -> Result<Vec<DeploymentDetail>, ControlError>;

    /// Deployment `id` with its runs and every target's latest record.
    async fn deployment(&self, id: &str) -> Result<Option<DeploymentDetail>, ControlError>;

    /// Deployment `id`'s runs, oldest first, without its targets' records (a run waiting for
    /// a claim asks this, over and over). The default reads the whole deployment.
    async fn runs(&self, id: &str) -> Result<Vec<RunRecord>, ControlError> {
        Ok(self
            .deployment(id)
            .await?
            .map(|detail| detail.runs)
            .unwrap_or_default())
    }

    /// The quiesce flag, when it is set and has not expired.
    async fn quiesce(&self) -> Result<Option<Quiesce>, ControlError>;

    /// Sets the quiesce flag for `ttl` (already validated), replacing any.
    async fn set_quiesce(
        &self,
        reason: &str,
        ttl: Duration,
        by: &Actor,
    ) -> Result<Quiesce, ControlError>;

    /// Clears the quiesce flag; the one cleared, if one was set.
    async fn clear_quiesce(&self) -> Result<Option<Quiesce>, ControlError>;
}
