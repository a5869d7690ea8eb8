//! Approval of environments that require it.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;

/// Decides which environments needing approval may be deployed.
#[async_trait]
pub trait Approver: Send + Sync + fmt::Debug {
    /// Of `environments` (each requires approval), the ones approved.
    async fn approve(&self, environments: &[String]) -> Vec<String>;
}

/// Approves the named environments and no others. `ApproveList::default()` approves none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApproveList(pub BTreeSet<String>);

impl ApproveList {
    /// Approves `names`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self(names.into_iter().map(Into::into).collect())
    }
}

#[async_trait]
impl Approver for ApproveList {
    async fn approve(&self, environments: &[String]) -> Vec<String> {
        environments
            .iter()
            .filter(|e| self.0.contains(*e))
            .cloned()
            .collect()
    }
}

/// Approves everything (`--yes`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApproveAll;

#[async_trait]
impl Approver for ApproveAll {
    async fn approve(&self, environments: &[String]) -> Vec<String> {
        environments.to_vec()
    }
}
