//! Whether targets' namespaces and databases exist, found out without `USE` — which creates
//! the namespace and database it names. Read-only commands (`status`, `history`, a dry run,
//! health probes, rehearsal's schema copy) ask this first and read a missing database as
//! "not initialised", so they leave a server as they found it; only applying a migration
//! creates anything.
//!
//! A root user lists the server's namespaces (`INFO FOR ROOT`), then the databases of those
//! that exist (`USE NS …; INFO FOR NS`, harmless on a namespace that exists), for a batch of
//! targets in two requests. A listing finished after a probe was asked for answers it too —
//! never an older one — so a fleet's pre-flight, whose probes are all asked at once, costs
//! two requests per endpoint more, not two per batch. A namespace
//! user's namespace exists (the user is defined in it); a database user's database does.
//! What exists is remembered; what does not is asked again. A deploy makes them explicitly
//! ([`SurrealRunner::ensure_database`]) before its first write.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::IntoFuture;

use flotilla_core::AuthLevel;
use flotilla_runner::util::lock_unpoisoned as lock;
use flotilla_runner::{Result, Target};
use serde_json::Value;
use tokio::time::Instant;

use crate::errors::{classify, is_conflict};
use crate::request::{Failure, result_json};
use crate::runner::SurrealRunner;
use crate::session::{Lane, UserKey};
use crate::sql;

/// Databases to make before their first write (a probe found them missing), per endpoint and
/// user: namespace and database names.
pub(crate) type Missing = HashMap<UserKey, BTreeSet<(String, String)>>;

/// Databases made in one request at most (a rollout's new targets, prepared together).
const MAKE_PER_REQUEST: usize = 256;

/// What users saw on endpoints, and when: the namespaces (under `None`) and the databases of
/// a namespace (under its name).
pub(crate) type Namespaces =
    HashMap<(UserKey, Option<String>), (Instant, std::sync::Arc<HashSet<String>>)>;

impl SurrealRunner {
    /// Whether `target`'s namespace and database exist.
    pub(crate) async fn database_exists(&self, target: &Target) -> Result<bool> {
        Ok(self.existing(&[target], Instant::now()).await?[0])
    }

    /// For each of `targets` (one endpoint and user), whether its namespace and database
    /// exist, by a listing made after `asked` — one another caller made may serve.
    pub(crate) async fn existing(&self, targets: &[&Target], asked: Instant) -> Result<Vec<bool>> {
        let mut found: Vec<bool> = targets
            .iter()
            .map(|target| level(target) == AuthLevel::Database || self.known_to_exist(target))
            .collect();
        let unknown: Vec<usize> = (0..targets.len()).filter(|&i| !found[i]).collect();
        let Some(&first) = unknown.first() else {
            return Ok(found);
        };
        let first = targets[first];
        let namespaces = match level(first) {
            AuthLevel::Root => Some(self.namespaces(first, asked).await?),
            _ => None,
        };
        let wanted: BTreeSet<&str> = unknown
            .iter()
            .map(|&i| targets[i].connection.namespace.as_str())
            .filter(|ns| namespaces.as_ref().is_none_or(|known| known.contains(*ns)))
            .collect();
        let databases = self.databases(first, &wanted, asked).await?;
        for i in unknown {
            let connection = &targets[i].connection;
            let exists = databases
                .get(&connection.namespace)
                .is_some_and(|dbs| dbs.contains(&connection.database));
            if exists {
                self.remember_existing(targets[i]);
            }
            found[i] = exists;
        }
        Ok(found)
    }

    /// Makes `target`'s namespace and database before anything writes to them, if a probe
    /// found them missing (see [`Self::make_missing`]); any other target is made by the
    /// `USE` of its first request, as before.
    pub(crate) async fn ensure_database(&self, target: &Target) -> Result<()> {
        self.make_missing(std::slice::from_ref(target)).await
    }

    /// Makes the namespaces and databases of those of `targets` a probe found missing —
    /// explicitly, so two deployers reaching a new target at once make them once (a
    /// conflict, retried, finds them made) rather than each making its own through `USE` —
    /// up to [`MAKE_PER_REQUEST`] per request.
    pub(crate) async fn make_missing(&self, targets: &[Target]) -> Result<()> {
        let mut by_user: HashMap<UserKey, Vec<&Target>> = HashMap::new();
        for target in targets.iter().filter(|t| level(t) != AuthLevel::Database) {
            by_user.entry(UserKey::of(target)).or_default().push(target);
        }
        // One batch at a time: a target in a batch still in flight waits for it.
        let _making = self.listing().lock().await;
        for (user, targets) in by_user {
            let wanted: Vec<(&Target, (String, String))> = {
                let mut missing = lock(self.missing());
                let Some(pending) = missing.get_mut(&user) else {
                    continue;
                };
                targets
                    .into_iter()
                    .filter_map(|target| {
                        let c = &target.connection;
                        let key = (c.namespace.clone(), c.database.clone());
                        pending.remove(&key).then_some((target, key))
                    })
                    .collect()
            };
            for chunk in wanted.chunks(MAKE_PER_REQUEST) {
                if let Err(error) = self.make(chunk).await {
                    // Not made: each is asked again by its own first write.
                    let mut missing = lock(self.missing());
                    let pending = missing.entry(user.clone()).or_default();
                    pending.extend(chunk.iter().map(|(_, key)| key.clone()));
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// One request making `batch`'s namespaces and databases (one endpoint and user).
    async fn make(&self, batch: &[(&Target, (String, String))]) -> Result<()> {
        let Some((first, _)) = batch.first() else {
            return Ok(());
        };
        let root = level(first) == AuthLevel::Root;
        let mut text = String::new();
        for (_, (namespace, database)) in batch {
            let namespace = sql::ident(namespace);
            if root {
                text.push_str(&format!("DEFINE NAMESPACE IF NOT EXISTS {namespace};\n"));
            }
            text.push_str(&format!(
                "USE NS {namespace};\nDEFINE DATABASE IF NOT EXISTS {};\n",
                sql::ident(database)
            ));
        }
        self.retrying(first, || async {
            let mut raw = self
                .ask(first, text.clone())
                .await
                .map_err(Failure::Fatal)?;
            match raw.take_errors().into_iter().next() {
                None => Ok(()),
                Some((_, error)) if is_conflict(&error) => Err(Failure::Conflict(error)),
                Some((_, error)) => Err(Failure::Fatal(classify(first, error))),
            }
        })
        .await?;
        for (target, _) in batch {
            self.remember_existing(target);
        }
        Ok(())
    }

    /// The namespaces on `target`'s endpoint, as its (root) user sees them.
    async fn namespaces(
        &self,
        target: &Target,
        asked: Instant,
    ) -> Result<std::sync::Arc<HashSet<String>>> {
        let key = (UserKey::of(target), None);
        self.listed(key, asked, || async {
            let mut raw = self.ask(target, "INFO FOR ROOT;".to_owned()).await?;
            let info = result_json(&mut raw, 0).map_err(|error| classify(target, error))?;
            Ok(keys(&info, "namespaces"))
        })
        .await
    }

    /// The databases of each of `namespaces` (which exist) on `target`'s endpoint, in one
    /// request for those not listed lately.
    async fn databases(
        &self,
        target: &Target,
        namespaces: &BTreeSet<&str>,
        asked: Instant,
    ) -> Result<HashMap<String, std::sync::Arc<HashSet<String>>>> {
        let user = UserKey::of(target);
        let _listing = self.listing().lock().await;
        let mut found = HashMap::with_capacity(namespaces.len());
        let mut unlisted = Vec::new();
        for ns in namespaces {
            match self.fresh(&(user.clone(), Some((*ns).to_owned())), asked) {
                Some(listed) => {
                    found.insert((*ns).to_owned(), listed);
                }
                None => unlisted.push(*ns),
            }
        }
        if unlisted.is_empty() {
            return Ok(found);
        }
        let text: String = unlisted
            .iter()
            .map(|ns| format!("USE NS {};\nINFO FOR NS;\n", sql::ident(ns)))
            .collect();
        let mut raw = self.ask(target, text).await?;
        let mut errors: HashMap<usize, surrealdb::Error> = raw.take_errors().into_iter().collect();
        for (position, ns) in unlisted.into_iter().enumerate() {
            let at = 2 * position + 1;
            if let Some(error) = errors.remove(&(at - 1)).or_else(|| errors.remove(&at)) {
                return Err(classify(target, error));
            }
            let info = result_json(&mut raw, at).map_err(|error| classify(target, error))?;
            let listed = std::sync::Arc::new(keys(&info, "databases"));
            lock(self.namespace_listings()).insert(
                (user.clone(), Some(ns.to_owned())),
                (Instant::now(), std::sync::Arc::clone(&listed)),
            );
            found.insert(ns.to_owned(), listed);
        }
        Ok(found)
    }

    /// What `key` listed after `asked`, if it did: an answer no older than the question.
    fn fresh(
        &self,
        key: &(UserKey, Option<String>),
        asked: Instant,
    ) -> Option<std::sync::Arc<HashSet<String>>> {
        lock(self.namespace_listings())
            .get(key)
            .filter(|(at, _)| *at >= asked)
            .map(|(_, listed)| std::sync::Arc::clone(listed))
    }

    /// `key`'s listing: a fresh one, or one `list` makes — one listing at a time, so probes
    /// asking together share one request.
    async fn listed<F, Fut>(
        &self,
        key: (UserKey, Option<String>),
        asked: Instant,
        list: F,
    ) -> Result<std::sync::Arc<HashSet<String>>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<HashSet<String>>>,
    {
        let _listing = self.listing().lock().await;
        if let Some(listed) = self.fresh(&key, asked) {
            return Ok(listed);
        }
        let listed = std::sync::Arc::new(list().await?);
        lock(self.namespace_listings())
            .insert(key, (Instant::now(), std::sync::Arc::clone(&listed)));
        Ok(listed)
    }

    /// Sends `text` as it is (no `USE` ahead of it) within the request timeout.
    async fn ask(&self, target: &Target, text: String) -> Result<surrealdb::IndexedResults> {
        let sessions = self.sessions();
        let deadline = Instant::now() + sessions.config().request_timeout;
        let session = sessions
            .borrow(target, Lane::Deploy, Some(deadline))
            .await?;
        self.count_request();
        let asked = session.client().query(text).into_future();
        match tokio::time::timeout_at(deadline, asked).await {
            Ok(Ok(raw)) => Ok(raw),
            Ok(Err(error)) => {
                if error.is_connection() {
                    session.discard();
                }
                Err(classify(target, error))
            }
            Err(_) => {
                session.discard();
                Err(sessions.timeout(target, "the request"))
            }
        }
    }
}

fn level(target: &Target) -> AuthLevel {
    target
        .connection
        .credentials
        .as_ref()
        .map_or(AuthLevel::Root, |credentials| credentials.level)
}

/// The keys of `info[field]` (an `INFO` answer's map of names to definitions).
fn keys(info: &Value, field: &str) -> HashSet<String> {
    info.get(field)
        .and_then(Value::as_object)
        .map(|names| names.keys().cloned().collect())
        .unwrap_or_default()
}
