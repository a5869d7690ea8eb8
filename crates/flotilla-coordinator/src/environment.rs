//! The registry that names environments ([`EnvironmentConfig`] is core vocabulary).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use flotilla_core::config::{EnvironmentConfig, validate_name};
use flotilla_runner::util::{read_unpoisoned, write_unpoisoned};

use crate::error::{PlanError, nearest};

/// Which environments of a registry a command or a plan is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These, by name (each once).
    Names(Vec<String>),
    /// Every environment carrying any of these tags.
    Tags(Vec<String>),
    /// Every environment.
    All,
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
        read_unpoisoned(&self.environments)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, EnvironmentConfig>> {
        write_unpoisoned(&self.environments)
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

    /// The environment called `name`, or an error naming the nearest known one.
    pub fn lookup(&self, name: &str) -> Result<EnvironmentConfig, PlanError> {
        self.get(name).ok_or_else(|| PlanError::UnknownEnvironment {
            name: name.to_owned(),
            suggestion: nearest(name, self.names().iter().map(String::as_str)),
        })
    }

    /// The environments `selection` names, in plan order: named ones in the order given,
    /// others by (priority, name); then stably sorted by priority. Unknown names (with the
    /// nearest known one), names given twice and selections matching nothing are errors.
    pub fn select(&self, selection: &Selection) -> Result<Vec<EnvironmentConfig>, PlanError> {
        let mut chosen = match selection {
            Selection::All => self.list(),
            Selection::Tags(tags) => {
                let mut chosen = self.list();
                chosen.retain(|e| e.tags.iter().any(|t| tags.contains(t)));
                chosen
            }
            Selection::Names(names) => {
                let mut chosen = Vec::with_capacity(names.len());
                let mut seen = std::collections::HashSet::new();
                for name in names {
                    if !seen.insert(name.as_str()) {
                        return Err(PlanError::DuplicateEnvironment(name.clone()));
                    }
                    chosen.push(self.lookup(name)?);
                }
                chosen
            }
        };
        if chosen.is_empty() {
            let detail = match selection {
                Selection::Tags(tags) => format!(": no environment has tag {}", tags.join(" or ")),
                _ => ": the registry is empty".to_owned(),
            };
            return Err(PlanError::EmptySelection(detail));
        }
        // Stable: equal priorities keep the requested order.
        chosen.sort_by_key(|e| e.priority);
        Ok(chosen)
    }
}
