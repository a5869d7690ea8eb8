//! Targets, plans and results: the data that crosses the runner seam.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::{Connection, DriftPolicy, MigrationSet, Version};

use crate::lock::LockInfo;

/// One target: a named environment and the database it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The environment's name, used in every message about this target.
    pub environment: String,
    /// Server URL, namespace, database and credentials.
    pub connection: Connection,
    /// Free-form labels (tier, region, …).
    pub tags: Vec<String>,
}

impl Target {
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
        DatabaseKey::new(
            &self.connection.url,
            &self.connection.namespace,
            &self.connection.database,
        )
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.environment, self.connection)
    }
}

/// Server, namespace and database of a target: equal keys are one database. The server is
/// the URL normalised (scheme family, host case, user-info, `/rpc` and trailing `/` dropped),
/// so `ws://Db:8000/rpc` and `http://db:8000` are one key; it never holds a password, so the
/// key may be printed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatabaseKey {
    /// The normalised server URL.
    pub server: String,
    /// Namespace.
    pub namespace: String,
    /// Database.
    pub database: String,
}

impl DatabaseKey {
    /// The key of database `database` in `namespace` at `url`.
    pub fn new(url: &str, namespace: &str, database: &str) -> Self {
        Self {
            server: normalise_server(url),
            namespace: namespace.to_owned(),
            database: database.to_owned(),
        }
    }
}

impl fmt::Display for DatabaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.server, self.namespace, self.database)
    }
}

/// `url` without what does not change which server it names.
fn normalise_server(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return flotilla_core::redact_url(url);
    };
    let scheme = scheme.to_ascii_lowercase();
    let family = match scheme.as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => {
            // A path on this machine (embedded stores): the path is the database.
            let path = rest.trim_end_matches('/');
            return format!("{scheme}://{path}");
        }
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_end_matches('/');
    let path = path
        .strip_suffix("rpc")
        .unwrap_or(path)
        .trim_end_matches('/');
    let mut server = format!("{family}://{}", host.to_ascii_lowercase());
    if !path.is_empty() {
        server.push('/');
        server.push_str(path);
    }
    server
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

/// What a down plan reverts, decided from history read under the target's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revert {
    /// These versions, in this order; versions the target has not applied are skipped.
    Versions(Vec<Version>),
    /// The newest `n` applied versions.
    Newest(usize),
    /// Every applied version newer than this one, which must be applied.
    NewerThan(Version),
    /// Every version whose history row carries this deployment id, newest first: exactly
    /// what that deployment applied, whatever its process believed.
    AppliedBy(String),
}

/// What to do on one target.
///
/// The migrations are shared (`Arc`) so a fleet-wide plan costs one copy, not one per target.
/// `Up` applies every migration of the set missing from the target's history (optionally
/// only up to `up_to`); pending is computed from history read under the lock, so concurrent
/// deploys never apply a migration twice. `Down` reverts what `revert` selects, newest first:
/// a version is never reverted while a newer one stays applied.
#[derive(Clone, Debug)]
pub struct MigrationPlan {
    /// Up or down.
    pub direction: Direction,
    /// Every migration of the directory.
    pub migrations: Arc<MigrationSet>,
    /// Up only: apply nothing newer than this version.
    pub up_to: Option<Version>,
    /// Down only: what to revert.
    pub revert: Revert,
    /// Which history/directory disagreements are tolerated.
    pub policy: DriftPolicy,
    /// Recorded in history rows and lock records.
    pub deployment_id: Option<String>,
    /// Recorded in history rows (`host pid N` by default): with the deployment id, it tells
    /// this process's rows from anyone else's when a reply is lost.
    pub applied_by: String,
    /// Told about each migration as it starts and commits, for progress reporting.
    pub observer: Option<Arc<dyn MigrationObserver>>,
}

/// Watches a plan's progress on one target. Called from the runner's task; keep it quick.
pub trait MigrationObserver: Send + Sync + fmt::Debug {
    /// `version` is about to run on `target`.
    fn started(&self, target: &Target, direction: Direction, version: &Version) {
        let _ = (target, direction, version);
    }

    /// `version` committed on `target`.
    fn committed(&self, target: &Target, direction: Direction, version: &Version);
}

impl MigrationPlan {
    /// Apply every pending migration of `migrations`.
    pub fn up(migrations: Arc<MigrationSet>) -> Self {
        Self {
            direction: Direction::Up,
            migrations,
            up_to: None,
            revert: Revert::Versions(Vec::new()),
            policy: DriftPolicy::default(),
            deployment_id: None,
            applied_by: crate::lock::LockOwner::current(None).to_string(),
            observer: None,
        }
    }

    /// Revert `versions`, in the given order (each must be the newest applied at its turn).
    pub fn down(migrations: Arc<MigrationSet>, versions: Vec<Version>) -> Self {
        Self::revert(migrations, Revert::Versions(versions))
    }

    /// Revert what `revert` selects.
    pub fn revert(migrations: Arc<MigrationSet>, revert: Revert) -> Self {
        Self {
            direction: Direction::Down,
            revert,
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

    /// The same plan with another drift policy.
    pub fn with_policy(mut self, policy: DriftPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Whether history row `row` was written by this plan's process and deployment.
    pub fn wrote(&self, row: &flotilla_core::AppliedMigration) -> bool {
        row.deployment_id == self.deployment_id
            && row.applied_by.as_deref() == Some(&self.applied_by)
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
    #[serde(serialize_with = "crate::util::serialize_millis")]
    pub duration: Duration,
    /// Set when the lock was taken over from a holder whose lease had expired.
    pub lock_takeover: Option<LockInfo>,
}

/// What a health probe found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HealthStatus {
    /// From asking to the answer: the probe's round trip (a backend may send probes asked at
    /// the same time in one request, so this can include waiting for others').
    #[serde(serialize_with = "crate::util::serialize_millis")]
    pub latency: Duration,
    /// Whether the history table exists; a new database is healthy but uninitialised.
    pub initialised: bool,
    /// The current lock holder, if any (a live lease).
    pub lock: Option<LockInfo>,
    /// The server's version, when it reports one.
    pub server_version: Option<String>,
}

/// Health and history of a target, read together by [`crate::MigrationRunner::probe`].
#[derive(Debug)]
pub struct Probe {
    /// The target's health.
    pub health: HealthStatus,
    /// Its history, oldest first, or why it could not be read (a healthy target's history
    /// may still be unreadable, say a row another tool wrote badly).
    pub history: crate::Result<Vec<flotilla_core::AppliedMigration>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_database_has_one_key_however_its_url_is_written() {
        let key = |url: &str| DatabaseKey::new(url, "ns", "db");
        let same = [
            "ws://db.example:8000",
            "ws://db.example:8000/",
            "WS://DB.example:8000/rpc",
            "http://db.example:8000",
            "ws://user:secret@db.example:8000/rpc/",
        ];
        for url in same {
            assert_eq!(key(url), key(same[0]), "{url}");
        }
        assert_ne!(key("wss://db.example:8000"), key("ws://db.example:8000"));
        assert_ne!(key("ws://db.example:8001"), key("ws://db.example:8000"));
        assert_ne!(key("surrealkv://data/a.db"), key("surrealkv://data/b.db"));
        assert_ne!(
            DatabaseKey::new("mem://", "ns", "a"),
            DatabaseKey::new("mem://", "ns", "b")
        );
    }

    #[test]
    fn a_key_never_shows_a_password() {
        let key = DatabaseKey::new("wss://admin:p/a?s#s@db.example/rpc", "ns", "db");
        for shown in [format!("{key:?}"), key.to_string()] {
            assert!(
                !shown.contains("p/a?s#s") && !shown.contains("admin"),
                "{shown}"
            );
        }
        let target = Target::new(
            "prod",
            Connection::new("ws://admin:url-secret@db:8000", "ns", "db").with_credentials(
                "admin",
                "password-secret",
                flotilla_core::AuthLevel::Root,
            ),
        );
        for shown in [format!("{target:?}"), target.to_string()] {
            assert!(
                !shown.contains("url-secret") && !shown.contains("password-secret"),
                "{shown}"
            );
        }
    }
}
