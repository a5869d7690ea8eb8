//! The fleet-level plan: which environments, which migrations, how.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use std::collections::{BTreeSet, HashMap};

use flotilla_core::{DriftPolicy, MAX_DURATION, MigrationSet, format_duration};
use flotilla_runner::{DatabaseKey, LockRequest};
use flotilla_strategies::{DeploymentStrategy, StrategyConfig, StrategyKind};

use flotilla_core::config::{Defaults, EnvironmentConfig};

use crate::control::Claim;
use crate::environment::{EnvironmentRegistry, Selection};
use crate::error::PlanError;
use crate::shard::Shard;

/// A validated deployment plan. Build one with [`DeploymentPlan::builder`].
#[derive(Clone, Debug)]
pub struct DeploymentPlan {
    /// Environments in plan order: the requested ones, stably sorted by priority.
    pub environments: Vec<EnvironmentConfig>,
    /// The migrations to deploy.
    pub migrations: Arc<MigrationSet>,
    /// Strategy and its parameters (`max_concurrent` also bounds rollbacks).
    pub strategy: StrategyConfig,
    /// A strategy of the user's own, used instead of `strategy`'s kind.
    pub custom_strategy: Option<Arc<dyn DeploymentStrategy>>,
    /// Probe every environment before anything runs (and canaries before the rest).
    pub verify_health: bool,
    /// Revert this deployment's migrations everywhere when it fails.
    pub auto_rollback: bool,
    /// Each environment's failure is its own: auto-rollback reverts only the environments
    /// that did not succeed, and those that did keep what they applied (a tenant fleet).
    pub isolate: bool,
    /// Read everything, apply nothing.
    pub dry_run: bool,
    /// Rehearse the migrations on a scratch database before anything else (default on).
    pub rehearse: bool,
    /// How long to wait for each environment's lock.
    pub lock_timeout: Duration,
    /// Lease length of each environment's lock; a heartbeat renews it every third.
    pub lease: Duration,
    /// Which history/directory disagreements are tolerated.
    pub drift_policy: DriftPolicy,
    /// Identifies this deployment in history rows, locks and events.
    pub deployment_id: String,
    /// The share of the selected environments this process deploys, when sharded.
    pub shard: Option<Shard>,
    /// Every environment the selection named, before sharding and exclusions (what a
    /// resume or another shard selects again).
    pub selected: Vec<String>,
    /// What the caller records with the deployment in the control store, to run it again
    /// (`flotilla deploy --resume` keeps its arguments here).
    pub record: Option<serde_json::Value>,
    /// What the run claims in the control store: a new deployment (the default), a shard
    /// joining one (the default with a shard), or a resume of one that exists.
    pub claim: Claim,
}

impl DeploymentPlan {
    /// Starts a plan over `registry`'s environments.
    pub fn builder(registry: &EnvironmentRegistry) -> DeploymentPlanBuilder {
        DeploymentPlanBuilder {
            registry: registry.clone(),
            selection: None,
            migrations: None,
            strategy: StrategyConfig::default(),
            custom_strategy: None,
            verify_health: true,
            auto_rollback: true,
            isolate: false,
            dry_run: false,
            rehearse: true,
            lock_timeout: LockRequest::DEFAULT_WAIT,
            lease: LockRequest::DEFAULT_LEASE,
            drift_policy: DriftPolicy::default(),
            deployment_id: None,
            shard: None,
            exclude: BTreeSet::new(),
            record: None,
            claim: None,
        }
    }

    /// Names of the environments, in plan order.
    pub fn environment_names(&self) -> Vec<String> {
        self.environments.iter().map(|e| e.name.clone()).collect()
    }

    /// The strategy that rolls this plan out: the custom one, else the built-in one
    /// `strategy` describes.
    pub fn deployment_strategy(&self) -> Result<Arc<dyn DeploymentStrategy>, PlanError> {
        match &self.custom_strategy {
            Some(strategy) => Ok(Arc::clone(strategy)),
            None => Ok(self.strategy.build()?),
        }
    }
}

/// Builds a [`DeploymentPlan`]; `build` checks everything before anything runs.
#[derive(Clone, Debug)]
pub struct DeploymentPlanBuilder {
    registry: EnvironmentRegistry,
    selection: Option<Selection>,
    migrations: Option<Arc<MigrationSet>>,
    strategy: StrategyConfig,
    custom_strategy: Option<Arc<dyn DeploymentStrategy>>,
    verify_health: bool,
    auto_rollback: bool,
    isolate: bool,
    dry_run: bool,
    rehearse: bool,
    lock_timeout: Duration,
    lease: Duration,
    drift_policy: DriftPolicy,
    deployment_id: Option<String>,
    shard: Option<Shard>,
    exclude: BTreeSet<String>,
    record: Option<serde_json::Value>,
    claim: Option<Claim>,
}

impl DeploymentPlanBuilder {
    /// Deploy to these environments (plan order: this order, stably sorted by priority).
    pub fn environments<I: IntoIterator<Item = S>, S: Into<String>>(self, names: I) -> Self {
        self.select(Selection::Names(
            names.into_iter().map(Into::into).collect(),
        ))
    }

    /// Deploy to every environment carrying any of `tags`.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(self, tags: I) -> Self {
        self.select(Selection::Tags(tags.into_iter().map(Into::into).collect()))
    }

    /// Deploy to every registered environment.
    pub fn all(self) -> Self {
        self.select(Selection::All)
    }

    /// Deploy to the environments `selection` names.
    pub fn select(mut self, selection: Selection) -> Self {
        self.selection = Some(selection);
        self
    }

    /// Takes a project's `[defaults]`: strategy and its parameters, lock wait and lease.
    /// Settings made before or after this call win over the ones it sets only when they come
    /// later, so apply defaults first and command-line choices after.
    pub fn defaults(mut self, defaults: &Defaults) -> Result<Self, PlanError> {
        if let Some(name) = &defaults.strategy {
            self.strategy.kind = name.parse()?;
        }
        let strategy = &mut self.strategy;
        strategy.max_concurrent = defaults.max_concurrent.unwrap_or(strategy.max_concurrent);
        strategy.batch_size = defaults.batch_size.unwrap_or(strategy.batch_size);
        strategy.canary_percentage = defaults
            .canary_percentage
            .unwrap_or(strategy.canary_percentage);
        strategy.fail_fast = defaults.fail_fast.unwrap_or(strategy.fail_fast);
        self.isolate = defaults.isolate.unwrap_or(self.isolate);
        self.lock_timeout = defaults.lock_timeout.unwrap_or(self.lock_timeout);
        self.lease = defaults.lease.unwrap_or(self.lease);
        Ok(self)
    }

    /// The migrations to deploy.
    pub fn migrations(mut self, migrations: Arc<MigrationSet>) -> Self {
        self.migrations = Some(migrations);
        self
    }

    /// The whole strategy configuration.
    pub fn strategy(mut self, strategy: StrategyConfig) -> Self {
        self.strategy = strategy;
        self
    }

    /// Roll out with a strategy of your own (see [`DeploymentStrategy`]); the plan's
    /// `max_concurrent` still bounds rollbacks.
    pub fn custom_strategy(mut self, strategy: Arc<dyn DeploymentStrategy>) -> Self {
        self.custom_strategy = Some(strategy);
        self
    }

    /// The strategy kind, keeping other parameters.
    pub fn kind(mut self, kind: StrategyKind) -> Self {
        self.strategy.kind = kind;
        self
    }

    /// Rolling batch size.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.strategy.batch_size = size;
        self
    }

    /// Canary share, in (0, 100].
    pub fn canary_percentage(mut self, percentage: f64) -> Self {
        self.strategy.canary_percentage = percentage;
        self
    }

    /// Most environments deployed at once.
    pub fn max_concurrent(mut self, max: usize) -> Self {
        self.strategy.max_concurrent = max;
        self
    }

    /// Parallel: stop starting environments after a failure.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.strategy.fail_fast = fail_fast;
        self
    }

    /// Rolling: pause between batches.
    pub fn pause_between_batches(mut self, pause: Duration) -> Self {
        self.strategy.pause = pause;
        self
    }

    /// Probe health before anything runs (default on).
    pub fn verify_health(mut self, verify: bool) -> Self {
        self.verify_health = verify;
        self
    }

    /// Revert on failure (default on).
    pub fn auto_rollback(mut self, rollback: bool) -> Self {
        self.auto_rollback = rollback;
        self
    }

    /// Each environment's failure stays its own (default off): auto-rollback reverts only
    /// the environments that did not succeed; the others keep what they applied, and the
    /// deployment fails listing every failed one.
    pub fn isolate(mut self, isolate: bool) -> Self {
        self.isolate = isolate;
        self
    }

    /// Apply nothing, report what would run.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Rehearse the migrations on a scratch database first, refusing the deployment when that
    /// finds a problem (default on; a backend that cannot rehearse skips it).
    pub fn rehearse(mut self, rehearse: bool) -> Self {
        self.rehearse = rehearse;
        self
    }

    /// Lock wait per environment (default 30 s, at most 24 h).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Lease length per environment's lock (default 30 s; from 300 ms to 24 h).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Drift tolerance (default: none).
    pub fn drift_policy(mut self, policy: DriftPolicy) -> Self {
        self.drift_policy = policy;
        self
    }

    /// A deployment id (default: generated from time and process).
    pub fn deployment_id(mut self, id: impl Into<String>) -> Self {
        self.deployment_id = Some(id.into());
        self
    }

    /// Deploy only `shard`'s share of the selected environments (see [`Shard`]).
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Leave these environments out (a resume leaves out those that succeeded). An
    /// exclusion that leaves nothing is a plan with nothing to do, not an error.
    pub fn exclude<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.exclude.extend(names.into_iter().map(Into::into));
        self
    }

    /// Resume the deployment named by [`Self::deployment_id`]: it must exist in the control
    /// store, with the same plan, and no live run may hold this part of it.
    pub fn resuming(mut self) -> Self {
        self.claim = Some(Claim::Resume);
        self
    }

    /// What to record with the deployment in the control store, to run it again.
    pub fn record(mut self, record: serde_json::Value) -> Self {
        self.record = Some(record);
        self
    }

    /// Validates and builds the plan.
    pub fn build(self) -> Result<DeploymentPlan, PlanError> {
        self.strategy.validate()?;
        if self.lock_timeout > MAX_DURATION {
            return Err(PlanError::InvalidParameter {
                parameter: "lock_timeout",
                expected: "at most 24h",
                got: format_duration(self.lock_timeout),
            });
        }
        if self.lease < MIN_LEASE || self.lease > MAX_DURATION {
            return Err(PlanError::InvalidParameter {
                parameter: "lease",
                expected: "between 300ms and 24h",
                got: format_duration(self.lease),
            });
        }
        let migrations = self.migrations.ok_or(PlanError::NoMigrations)?;
        let Some(selection) = &self.selection else {
            return Err(PlanError::EmptySelection(
                ": name environments, tags or all".into(),
            ));
        };
        let mut environments = self.registry.select(selection)?;
        refuse_shared_databases(&environments)?;
        let selected = environments.iter().map(|e| e.name.clone()).collect();
        if let Some(shard) = self.shard {
            environments.retain(|e| shard.contains(&e.name));
        }
        environments.retain(|e| !self.exclude.contains(&e.name));
        Ok(DeploymentPlan {
            environments,
            migrations,
            strategy: self.strategy,
            custom_strategy: self.custom_strategy,
            verify_health: self.verify_health,
            auto_rollback: self.auto_rollback,
            isolate: self.isolate,
            dry_run: self.dry_run,
            rehearse: self.rehearse,
            lock_timeout: self.lock_timeout,
            lease: self.lease,
            drift_policy: self.drift_policy,
            deployment_id: self.deployment_id.unwrap_or_else(generate_id),
            shard: self.shard,
            selected,
            record: self.record,
            claim: self.claim.unwrap_or(if self.shard.is_some() {
                Claim::Join
            } else {
                Claim::New
            }),
        })
    }
}

/// The shortest lease: a heartbeat renews every third of it, and each renewal is a round
/// trip that must land before the lease runs out.
const MIN_LEASE: Duration = Duration::from_millis(300);

/// Two environments naming one database (same server, namespace and database) would deploy
/// to it twice; the plan names both.
fn refuse_shared_databases(environments: &[EnvironmentConfig]) -> Result<(), PlanError> {
    let mut seen: HashMap<DatabaseKey, &str> = HashMap::with_capacity(environments.len());
    for environment in environments {
        let connection = &environment.connection;
        let key = DatabaseKey::new(&connection.url, &connection.namespace, &connection.database);
        if let Some(first) = seen.get(&key) {
            return Err(PlanError::SameDatabase {
                first: (*first).to_owned(),
                second: environment.name.clone(),
                database: key.to_string(),
            });
        }
        seen.insert(key, &environment.name);
    }
    Ok(())
}

fn generate_id() -> String {
    format!("deploy-{}", unique_suffix())
}

/// `MILLIS-PID-N-RANDOM`: unique across processes (the time, the process and 32 random
/// bits, for containers where every process is pid 1) and within one (a counter) — for
/// deployment and run ids.
pub(crate) fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Each `RandomState` is seeded from the operating system's randomness.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(count);
    format!(
        "{millis}-{}-{count}-{:08x}",
        std::process::id(),
        hasher.finish() as u32
    )
}

#[cfg(test)]
mod tests {
    use flotilla_core::Connection;

    use super::*;

    fn registry() -> EnvironmentRegistry {
        let registry = EnvironmentRegistry::new();
        for (name, priority) in [("staging", 20), ("production", 30), ("dev", 10), ("qa", 20)] {
            let environment = EnvironmentConfig::new(name, Connection::new("mem://", name, "app"))
                .expect("valid")
                .priority(priority)
                .tags(if name == "dev" || name == "qa" {
                    vec!["pre"]
                } else {
                    vec!["live"]
                });
            registry.register(environment).expect("register");
        }
        registry
    }

    fn set() -> Arc<MigrationSet> {
        Arc::new(
            MigrationSet::from_files([("m/0001_a.surql".into(), "DEFINE TABLE a;".to_owned())])
                .expect("valid"),
        )
    }

    fn error_of(builder: DeploymentPlanBuilder) -> String {
        builder.build().expect_err("invalid plan").to_string()
    }

    #[test]
    fn plan_order_is_requested_order_stably_sorted_by_priority() {
        let plan = DeploymentPlan::builder(&registry())
            .environments(["production", "qa", "staging", "dev"])
            .migrations(set())
            .build()
            .expect("valid");
        assert_eq!(
            plan.environment_names(),
            ["dev", "qa", "staging", "production"]
        );
        let tagged = DeploymentPlan::builder(&registry())
            .tags(["pre"])
            .migrations(set())
            .build()
            .expect("valid");
        assert_eq!(tagged.environment_names(), ["dev", "qa"]);
    }

    #[test]
    fn bad_plans_are_clear_errors_before_anything_runs() {
        let r = registry();
        let base = || DeploymentPlan::builder(&r).migrations(set());
        let unknown = error_of(base().environments(["stagin"]));
        assert!(
            unknown.contains("unknown environment `stagin`")
                && unknown.contains("did you mean `staging`"),
            "{unknown}"
        );
        assert!(error_of(base().environments(["dev", "dev"])).contains("requested twice"));
        assert!(error_of(base().tags(["nope"])).contains("no environment has tag nope"));
        assert!(error_of(base()).contains("no environment selected"));
        let rolling = error_of(base().all().kind(StrategyKind::Rolling).batch_size(0));
        assert!(rolling.contains("batch_size"), "{rolling}");
        assert!(
            error_of(base().all().kind(StrategyKind::Parallel).max_concurrent(0))
                .contains("max_concurrent")
        );
        assert!(
            error_of(
                base()
                    .all()
                    .kind(StrategyKind::Canary)
                    .canary_percentage(0.0)
            )
            .contains("canary_percentage")
        );
        assert!(
            error_of(
                base()
                    .all()
                    .kind(StrategyKind::Canary)
                    .canary_percentage(120.0)
            )
            .contains("canary_percentage")
        );
        assert!(error_of(DeploymentPlan::builder(&r).all()).contains("no migrations"));
        let huge = error_of(base().all().lock_timeout(Duration::from_secs(u64::MAX)));
        assert!(huge.contains("lock_timeout"), "{huge}");
        assert!(error_of(base().all().lease(Duration::from_millis(10))).contains("lease"));
        let crowded = error_of(base().all().max_concurrent(usize::MAX));
        assert!(crowded.contains("max_concurrent"), "{crowded}");
        assert!(EnvironmentConfig::new("bad name!", Connection::new("mem://", "n", "d")).is_err());
    }

    #[test]
    fn registry_lists_by_priority_then_name_and_replaces() {
        let r = registry();
        let names: Vec<String> = r.list().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["dev", "qa", "staging", "production"]);
        let moved = r.get("production").expect("present").priority(1);
        assert!(r.register(moved).expect("valid").is_some(), "replaced");
        assert_eq!(r.list()[0].name, "production");
        assert!(r.unregister("qa").is_some());
        assert_eq!(r.len(), 3);
        assert_eq!(r.with_tag("pre").len(), 1);
    }

    #[test]
    fn two_environments_on_one_database_are_refused_naming_both() {
        let r = EnvironmentRegistry::new();
        let conn = |url: &str| {
            Connection::new(url, "tenant_a", "app").with_credentials(
                "root",
                "pw",
                flotilla_core::AuthLevel::Root,
            )
        };
        r.register(EnvironmentConfig::new("blue", conn("ws://db.example:8000")).expect("valid"))
            .expect("register");
        r.register(
            EnvironmentConfig::new("green", conn("WS://user:pw@DB.example:8000/rpc/"))
                .expect("valid"),
        )
        .expect("register");
        r.register(
            EnvironmentConfig::new(
                "other",
                Connection::new("ws://db.example:8000", "tenant_b", "app"),
            )
            .expect("valid"),
        )
        .expect("register");
        let message = error_of(DeploymentPlan::builder(&r).all().migrations(set()));
        assert!(
            message.contains("`blue`")
                && message.contains("`green`")
                && message.contains("same database"),
            "{message}"
        );
        assert!(!message.contains("pw"), "{message}");
        DeploymentPlan::builder(&r)
            .environments(["blue", "other"])
            .migrations(set())
            .build()
            .expect("different namespaces are different databases");
    }
}
