//! Targets, plans and results: the data that crosses the runner seam.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::{Connection, DriftPolicy, MigrationSet, Version};

use crate::lock::LockInfo;

/// One target: a named environment and the database it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantContext {
    /// The environment's name, used in every message about this target.
    pub environment: String,
    /// Server URL, namespace, database and credentials.
    pub connection: Connection,
    /// Free-form labels (tier, region, …).
    pub tags: Vec<String>,
}

impl TenantContext {
    /// A target named `environment` at `connection`, without tags.
    pub fn new(environment: impl Into<String>, connection: Connection) -> Self {
        Self {
            environment: environment.into(),
            connection,
            tags: Vec::new(),
        }
    }

    /// Identifies the database regardless of the environment's name: two environments
    /// pointing at the same database share one lock and one history.
    pub fn database_key(&self) -> DatabaseKey {
        DatabaseKey {
            url: self.connection.url.clone(),
            namespace: self.connection.namespace.clone(),
            database: self.connection.database.clone(),
        }
    }
}

impl fmt::Display for TenantContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.environment, self.connection)
    }
}

/// URL, namespace and database of a target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatabaseKey {
    /// Server URL.
    pub url: String,
    /// Namespace.
    pub namespace: String,
    /// Database.
    pub database: String,
}

/// Whether a plan applies or reverts migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Apply pending migrations.
    Up,
    /// Revert applied migrations.
    Down,
}

/// What to do on one target.
///
/// The migrations are shared (`Arc`) so a fleet-wide plan costs one copy, not one per target.
/// `Up` applies every migration of the set missing from the target's history (optionally
/// only up to `target`); pending is computed from history read under the lock, so concurrent
/// deploys never apply a migration twice. `Down` reverts `revert`, in that order, skipping
/// versions the target has not applied.
#[derive(Clone, Debug)]
pub struct MigrationPlan {
    /// Up or down.
    pub direction: Direction,
    /// Every migration of the directory.
    pub migrations: Arc<MigrationSet>,
    /// Up only: apply nothing newer than this version.
    pub target: Option<Version>,
    /// Down only: the versions to revert, in order (newest first for a rollback).
    pub revert: Vec<Version>,
    /// Which history/directory disagreements are tolerated.
    pub policy: DriftPolicy,
    /// Recorded in history rows and lock records.
    pub deployment_id: Option<String>,
    /// Recorded in history rows (`host pid N` by default).
    pub applied_by: String,
    /// Told about each migration as it starts and commits, for progress reporting.
    pub observer: Option<Arc<dyn MigrationObserver>>,
    /// A hint: the caller releases the lock right after executing this plan. A backend may
    /// then remove the lease in the request that commits the last migration — only when all
    /// of them committed — and the guard's `release` confirms without another round trip.
    /// Whatever the backend does, the caller still calls `release`.
    pub release_after: bool,
}

/// Watches a plan's progress on one target. Called from the runner's task; keep it quick.
pub trait MigrationObserver: Send + Sync + fmt::Debug {
    /// `version` is about to run on `tenant`.
    fn started(&self, tenant: &TenantContext, direction: Direction, version: &Version) {
        let _ = (tenant, direction, version);
    }

    /// `version` committed on `tenant`.
    fn committed(&self, tenant: &TenantContext, direction: Direction, version: &Version);
}

impl MigrationPlan {
    /// Apply every pending migration of `migrations`.
    pub fn up(migrations: Arc<MigrationSet>) -> Self {
        Self {
            direction: Direction::Up,
            migrations,
            target: None,
            revert: Vec::new(),
            policy: DriftPolicy::default(),
            deployment_id: None,
            applied_by: crate::lock::LockOwner::current(None).to_string(),
            observer: None,
            release_after: false,
        }
    }

    /// Revert `versions`, in the given order.
    pub fn down(migrations: Arc<MigrationSet>, versions: Vec<Version>) -> Self {
        Self {
            direction: Direction::Down,
            revert: versions,
            ..Self::up(migrations)
        }
    }

    /// The same plan tagged with a deployment id.
    pub fn with_deployment_id(mut self, id: impl Into<String>) -> Self {
        self.deployment_id = Some(id.into());
        self
    }

    /// The same plan reporting its progress to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn MigrationObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The same plan, telling the runner the lock is released right after it (see
    /// [`MigrationPlan::release_after`]).
    pub fn releasing_after(mut self) -> Self {
        self.release_after = true;
        self
    }

    /// The same plan with another drift policy.
    pub fn with_policy(mut self, policy: DriftPolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// What a plan did on one target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MigrationResult {
    /// Up or down.
    pub direction: Direction,
    /// Versions applied (up) or reverted (down), in the order they ran.
    pub applied: Vec<Version>,
    /// Newest applied version before the plan ran.
    pub version_before: Option<Version>,
    /// Newest applied version after.
    pub version_after: Option<Version>,
    /// Wall time of the execution.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Set when the lock was taken over from a holder whose lease had expired.
    pub lock_takeover: Option<LockInfo>,
}

/// What a health probe found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthStatus {
    /// From asking to the answer: the probe's round trip (a backend may send probes asked at
    /// the same time in one request, so this can include waiting for others').
    #[serde(with = "millis")]
    pub latency: Duration,
    /// Whether the history table exists; a new database is healthy but uninitialised.
    pub initialised: bool,
    /// The current lock holder, if any (a live lease).
    pub lock: Option<LockInfo>,
    /// The server's version, when it reports one.
    pub server_version: Option<String>,
    /// The target's history, when the probe read it in the same round trip (`None`: ask
    /// [`crate::MigrationRunner::history`]). Lets a pre-flight skip a second request.
    #[serde(skip)]
    pub history: Option<Vec<flotilla_core::AppliedMigration>>,
}

pub(crate) mod millis {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
