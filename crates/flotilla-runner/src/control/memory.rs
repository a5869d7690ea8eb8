//! A control store in memory: the reference implementation, for tests and for library users
//! who journal nowhere durable. Faults can be injected.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::util::lock_unpoisoned;
use async_trait::async_trait;
use flotilla_core::rfc3339;

use super::{
    Actor, AuditRecord, Claim, ControlError, ControlStore, DeploymentDetail, Quiesce, Refusal,
    RunRecord, RunStart, TargetRecord, overlaps,
};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct MemoryControlStore {
    state: Mutex<State>,
    fail_quiesce_reads: AtomicBool,
    unavailable: AtomicBool,
    /// How long each write of target results and audit records takes, in milliseconds.
    write_delay_ms: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// By id: the deployment and the order it came in.
    deployments: BTreeMap<String, (usize, DeploymentDetail)>,
    /// Run id → (deployment, alive until).
    runs: BTreeMap<String, (String, SystemTime)>,
    audit: Vec<AuditRecord>,
    quiesce: Option<(Quiesce, SystemTime)>,
}

impl MemoryControlStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, reading the quiesce flag fails (or works again).
    pub fn fail_quiesce_reads(&self, fail: bool) {
        self.fail_quiesce_reads.store(fail, Ordering::SeqCst);
    }

    /// From now on, every call fails as if the store were unreachable (or works again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// From now on, each write of target results and audit records takes `delay` (a slow
    /// store; renewals and reads are not delayed).
    pub fn delay_writes(&self, delay: Duration) {
        self.write_delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Every audit record written, in order.
    pub fn audit(&self) -> Vec<AuditRecord> {
        lock_unpoisoned(&self.state).audit.clone()
    }

    fn check(&self) -> Result<(), ControlError> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(self.unavailable_error("it is unavailable (injected)"))
        } else {
            Ok(())
        }
    }

    fn unavailable_error(&self, reason: &str) -> ControlError {
        ControlError::Unavailable {
            store: self.describe(),
            reason: reason.to_owned(),
        }
    }
}

#[async_trait]
impl ControlStore for MemoryControlStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn start_run(&self, run: &RunStart) -> Result<(), ControlError> {
        self.check()?;
        let mut state = lock_unpoisoned(&self.state);
        let now = SystemTime::now();
        if let Some((_, existing)) = state.deployments.get(&run.deployment_id) {
            if run.claim == Claim::New {
                return Err(Refusal::Exists.error(run));
            }
            // A deployment recorded before fingerprints has none to compare.
            if existing
                .fingerprint
                .as_ref()
                .is_some_and(|recorded| *recorded != run.fingerprint)
            {
                return Err(Refusal::PlanDiffers.error(run));
            }
            if let Some(holder) = existing.runs.iter().find(|other| {
                other.ended_at.is_none()
                    && overlaps(other.shard.as_deref(), run.shard.as_deref())
                    && state
                        .runs
                        .get(&other.run_id)
                        .is_some_and(|(_, until)| *until > now)
            }) {
                return Err(Refusal::Held {
                    run_id: holder.run_id.clone(),
                }
                .error(run));
            }
        } else if run.claim == Claim::Resume {
            return Err(Refusal::Missing.error(run));
        }
        if state.runs.contains_key(&run.run_id) {
            return Err(ControlError::Corrupt {
                store: self.describe(),
                reason: format!("run `{}` exists already", run.run_id),
            });
        }
        let order = state.deployments.len();
        let started = rfc3339(now);
        let (_, deployment) = state
            .deployments
            .entry(run.deployment_id.clone())
            .or_insert_with(|| {
                (
                    order,
                    DeploymentDetail {
                        deployment_id: run.deployment_id.clone(),
                        actor: run.actor.clone(),
                        started_at: started.clone(),
                        plan: run.plan.clone(),
                        fingerprint: Some(run.fingerprint.clone()),
                        runs: Vec::new(),
                        targets: Vec::new(),
                        target_counts: BTreeMap::new(),
                    },
                )
            });
        deployment.runs.push(RunRecord {
            run_id: run.run_id.clone(),
            actor: run.actor.clone(),
            shard: run.shard.clone(),
            targets: run.targets.len(),
            started_at: started,
            ended_at: None,
            outcome: None,
            alive: true,
            process: run.process.clone(),
        });
        state.runs.insert(
            run.run_id.clone(),
            (run.deployment_id.clone(), now + run.lease),
        );
        Ok(())
    }

    async fn renew_run(&self, run_id: &str, lease: Duration) -> Result<(), ControlError> {
        self.check()?;
        if let Some((_, until)) = lock_unpoisoned(&self.state).runs.get_mut(run_id) {
            *until = SystemTime::now() + lease;
        }
        Ok(())
    }

    async fn write(
        &self,
        targets: &[TargetRecord],
        audit: &[AuditRecord],
    ) -> Result<(), ControlError> {
        self.check()?;
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut state = lock_unpoisoned(&self.state);
        for record in targets {
            if let Some((_, deployment)) = state.deployments.get_mut(&record.deployment_id) {
                match deployment
                    .targets
                    .iter_mut()
                    .find(|t| t.environment == record.environment)
                {
                    Some(existing) => *existing = record.clone(),
                    None => deployment.targets.push(record.clone()),
                }
            }
        }
        state.audit.extend_from_slice(audit);
        Ok(())
    }

    async fn finish_run(&self, run_id: &str, outcome: &str) -> Result<(), ControlError> {
        self.check()?;
        let mut state = lock_unpoisoned(&self.state);
        let Some((deployment_id, _)) = state.runs.get(run_id).cloned() else {
            return Ok(());
        };
        if let Some((_, deployment)) = state.deployments.get_mut(&deployment_id)
            && let Some(run) = deployment.runs.iter_mut().find(|r| r.run_id == run_id)
        {
            run.ended_at = Some(rfc3339(SystemTime::now()));
            run.outcome = Some(outcome.to_owned());
        }
        Ok(())
    }

    async fn deployments(&self, limit: usize) -> Result<Vec<DeploymentDetail>, ControlError> {
        self.check()?;
        let mut all: Vec<DeploymentDetail> = {
            let state = lock_unpoisoned(&self.state);
            let mut by_order: Vec<&(usize, DeploymentDetail)> =
                state.deployments.values().collect();
            by_order.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
            by_order.into_iter().map(|(_, d)| d.clone()).collect()
        };
        all.truncate(limit);
        for deployment in &mut all {
            self.alive(deployment);
            let targets = std::mem::take(&mut deployment.targets);
            for target in targets {
                *deployment
                    .target_counts
                    .entry(target.status.to_string())
                    .or_default() += 1;
            }
        }
        Ok(all)
    }

    async fn deployment(&self, id: &str) -> Result<Option<DeploymentDetail>, ControlError> {
        self.check()?;
        let found = lock_unpoisoned(&self.state)
            .deployments
            .get(id)
            .map(|(_, d)| d.clone());
        Ok(found.map(|mut deployment| {
            self.alive(&mut deployment);
            deployment
        }))
    }

    async fn quiesce(&self) -> Result<Option<Quiesce>, ControlError> {
        self.check()?;
        if self.fail_quiesce_reads.load(Ordering::SeqCst) {
            return Err(self.unavailable_error("reading the quiesce flag failed (injected)"));
        }
        let state = lock_unpoisoned(&self.state);
        Ok(state
            .quiesce
            .as_ref()
            .filter(|(_, until)| *until > SystemTime::now())
            .map(|(quiesce, _)| quiesce.clone()))
    }

    async fn set_quiesce(
        &self,
        reason: &str,
        ttl: Duration,
        by: &Actor,
    ) -> Result<Quiesce, ControlError> {
        self.check()?;
        let now = SystemTime::now();
        let quiesce = Quiesce::new(reason, by, now, ttl);
        lock_unpoisoned(&self.state).quiesce = Some((quiesce.clone(), now + ttl));
        Ok(quiesce)
    }

    async fn clear_quiesce(&self) -> Result<Option<Quiesce>, ControlError> {
        let cleared = self.quiesce().await?;
        lock_unpoisoned(&self.state).quiesce = None;
        Ok(cleared)
    }
}

impl MemoryControlStore {
    /// Marks each run of `deployment` alive when its lease has not run out.
    fn alive(&self, deployment: &mut DeploymentDetail) {
        let state = lock_unpoisoned(&self.state);
        let now = SystemTime::now();
        for run in &mut deployment.runs {
            run.alive = run.ended_at.is_none()
                && state
                    .runs
                    .get(&run.run_id)
                    .is_some_and(|(_, until)| *until > now);
        }
    }
}
