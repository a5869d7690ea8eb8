//! The control plane, as the coordinator uses it: each run journaled (who, the plan, every
//! target's result as it happens) and audited, and the fleet's quiesce flag obeyed before and
//! during a rollout. The store itself is the seam in [`flotilla_runner::control`], re-exported
//! here.

mod journal;
mod quiesce;
mod start;

use std::time::Duration;

pub use flotilla_runner::control::*;
pub use journal::AuditSummary;
pub(crate) use journal::Journal;
pub(crate) use quiesce::watch_quiesce;
pub use quiesce::{DEFAULT_QUIESCE, MAX_QUIESCE, QuiesceUnreadable, validate_ttl};
pub use start::plan_difference;
pub(crate) use start::{claim, quiesced, run_start};

/// How a coordinator uses its control store.
#[derive(Clone, Debug)]
pub struct Control {
    /// The store.
    pub store: std::sync::Arc<dyn ControlStore>,
    /// Who is deploying (recorded with each deployment and audit record).
    pub actor: Actor,
    /// What a running rollout does when the quiesce flag cannot be read.
    pub quiesce_unreadable: QuiesceUnreadable,
    /// A JSON-lines file every audit record is appended to, besides the store.
    pub audit_log: Option<std::path::PathBuf>,
    /// How often a running rollout reads the quiesce flag.
    pub quiesce_poll: Duration,
}

impl Control {
    /// How often a running rollout reads the quiesce flag by default.
    pub const DEFAULT_QUIESCE_POLL: Duration = Duration::from_millis(100);

    /// `store`, used by `actor`, failing closed, without an audit file.
    pub fn new(store: std::sync::Arc<dyn ControlStore>, actor: Actor) -> Self {
        Self {
            store,
            actor,
            quiesce_unreadable: QuiesceUnreadable::default(),
            audit_log: None,
            quiesce_poll: Self::DEFAULT_QUIESCE_POLL,
        }
    }
}
