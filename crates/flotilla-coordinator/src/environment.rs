//! Environments and the registry that names them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use flotilla_core::Connection;

use crate::error::PlanError;

/// One named target of deployments: a database plus rules for deploying to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentConfig {
    /// Unique name: letters, digits, `-`, `_`, `.`; at most 64 characters.
    pub name: String,
    /// Where its database is.
    pub connection: Connection,
    /// Lower deploys first; default 100.
    pub priority: i32,
    /// Labels for selecting environments (`tenant`, `eu`, …).
    pub tags: Vec<String>,
    /// Deploy only with an explicit approval.
    pub require_approval: bool,
    /// Whether destructive statements may run here; default true.
    pub allow_destructive: bool,
}

impl EnvironmentConfig {
    /// Default priority.
    pub const DEFAULT_PRIORITY: i32 = 100;

    /// An environment with default rules; fails on an invalid name.
    pub fn new(name: impl Into<String>, connection: Connection) -> Result<Self, PlanError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Self {
            name,
            connection,
            priority: Self::DEFAULT_PRIORITY,
            tags: Vec::new(),
            require_approval: false,
            allow_destructive: true,
        })
    }

    /// With a priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// With tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Requiring approval or not.
    pub fn require_approval(mut self, required: bool) -> Self {
        self.require_approval = required;
        self
    }

    /// Allowing destructive statements or not.
    pub fn allow_destructive(mut self, allowed: bool) -> Self {
        self.allow_destructive = allowed;
        self
    }
}

/// Checks an environment name.
pub fn validate_name(name: &str) -> Result<(), PlanError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(PlanError::InvalidEnvironmentName(name.to_owned()))
    }
}

/// The known environments. Cheap to clone (clones share), safe to use from many tasks.
#[derive(Clone, Debug, Default)]
pub struct EnvironmentRegistry {
    environments: Arc<RwLock<BTreeMap<String, EnvironmentConfig>>>,
}

impl EnvironmentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, EnvironmentConfig>> {
        self.environments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, EnvironmentConfig>> {
        self.environments.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `environment`, replacing one of the same name; returns the replaced one.
    pub fn register(
        &self,
        environment: EnvironmentConfig,
    ) -> Result<Option<EnvironmentConfig>, PlanError> {
        validate_name(&environment.name)?;
        Ok(self.write().insert(environment.name.clone(), environment))
    }

    /// The environment called `name`.
    pub fn get(&self, name: &str) -> Option<EnvironmentConfig> {
        self.read().get(name).cloned()
    }

    /// Removes the environment called `name`.
    pub fn unregister(&self, name: &str) -> Option<EnvironmentConfig> {
        self.write().remove(name)
    }

    /// Every environment, ordered by (priority, name).
    pub fn list(&self) -> Vec<EnvironmentConfig> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        all
    }

    /// The environments carrying `tag`, ordered by (priority, name).
    pub fn with_tag(&self, tag: &str) -> Vec<EnvironmentConfig> {
        let mut tagged = self.list();
        tagged.retain(|e| e.tags.iter().any(|t| t == tag));
        tagged
    }

    /// Number of environments.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Names of every environment, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }
}
