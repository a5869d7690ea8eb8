//! The journal of one run: its start recorded before anything happens (an unreachable store
//! is an error then), every target's result and every audit record queued as they happen
//! and written in batches by a task of its own — a bounded queue, so recording never blocks
//! or fails the deployment; what does not fit is counted — the run kept alive while it
//! lasts by a task of its own, and at the end the report's final word on every target, and the run's outcome.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_runner::Target;
use flotilla_strategies::{TargetListener, TargetOutcome};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Actor, AuditEvent, AuditRecord, Control, ControlError, ControlStore, RunStart, TargetRecord,
};
use crate::report::{DeploymentReport, EnvironmentReport};

/// Records waiting to be written; beyond this they are dropped and counted.
const QUEUE: usize = 16_384;

/// Records written per request to the store at most.
const BATCH: usize = 512;

/// How long the writer lets records gather before it writes a batch smaller than [`BATCH`]:
/// a store request per batch, not per record.
const LINGER: Duration = Duration::from_millis(200);

/// How long the end of a run waits for its records to be written.
const FINISH_WITHIN: Duration = Duration::from_secs(30);

/// What a run's journal and audit trail did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    /// The control store.
    pub store: String,
    /// The JSON-lines audit file, when one was asked for.
    pub audit_log: Option<PathBuf>,
    /// Audit records written.
    pub records: u64,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Writes to the store or the file that failed (their records are lost).
    pub failed_writes: u64,
}

enum Entry {
    Target(TargetRecord),
    Audit(AuditRecord),
}

/// What the journal's listener and its owner share.
#[derive(Debug)]
struct Shared {
    actor: Actor,
    deployment_id: String,
    run_id: String,
    dropped: AtomicU64,
}

/// A run's journal; see the module documentation.
pub(crate) struct Journal {
    sender: mpsc::Sender<Entry>,
    shared: Arc<Shared>,
    writer: JoinHandle<Counts>,
    /// Keeps the run alive — a task of its own, so a slow flush never lets the lease lapse.
    renewer: tokio::task::AbortHandle,
    store: Arc<dyn ControlStore>,
    summary: AuditSummary,
}

#[derive(Default)]
struct Counts {
    records: u64,
    failed_writes: u64,
}

impl Journal {
    /// Records the run's start — the error when the store or the audit file cannot be used
    /// — and starts writing.
    pub(crate) async fn start(
        control: &Control,
        run: RunStart,
        plan: &crate::plan::DeploymentPlan,
    ) -> Result<Self, ControlError> {
        let file = match &control.audit_log {
            None => None,
            Some(path) => Some(open_audit_log(path)?),
        };
        super::claim(control, &run, plan).await?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            actor: control.actor.clone(),
            deployment_id: run.deployment_id.clone(),
            run_id: run.run_id.clone(),
            dropped: AtomicU64::new(0),
        });
        let writer = tokio::spawn(write(Arc::clone(&control.store), receiver, file));
        let renewer = tokio::spawn(keep_alive(
            Arc::clone(&control.store),
            run.run_id.clone(),
            run.lease,
        ))
        .abort_handle();
        let journal = Self {
            sender,
            writer,
            renewer,
            store: Arc::clone(&control.store),
            summary: AuditSummary {
                store: control.store.describe(),
                audit_log: control.audit_log.clone(),
                ..AuditSummary::default()
            },
            shared,
        };
        let mut started = journal.record(AuditEvent::DeploymentStarted);
        started.message = run.shard.map(|shard| format!("shard {shard}"));
        journal.shared.audit(&journal.sender, started);
        Ok(journal)
    }

    /// The listener that journals each target as it starts and finishes.
    pub(crate) fn listener(&self) -> Arc<dyn TargetListener> {
        Arc::new(Listener {
            sender: self.sender.clone(),
            shared: Arc::clone(&self.shared),
        })
    }

    fn record(&self, event: AuditEvent) -> AuditRecord {
        self.shared.record(event)
    }

    /// Writes the report's final word on every target and the run's end, waiting (bounded)
    /// for what is queued; puts what the journal did into the report.
    pub(crate) async fn finish(self, report: &mut DeploymentReport) {
        let Journal {
            sender,
            shared,
            writer,
            renewer,
            store,
            mut summary,
        } = self;
        let outcome = serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", report.outcome));
        let finals = async {
            for environment in &report.environments {
                let record = target_record(&shared, environment);
                let _ = sender.send(Entry::Target(record)).await;
                if !environment.rolled_back.is_empty() {
                    let mut audit = shared.record(AuditEvent::TargetRolledBack);
                    audit.environment = Some(environment.environment.clone());
                    audit.versions.clone_from(&environment.rolled_back);
                    audit.outcome = Some(environment.status.to_string());
                    let _ = sender.send(Entry::Audit(audit)).await;
                }
            }
            let mut finished = shared.record(AuditEvent::DeploymentFinished);
            finished.outcome = Some(outcome.clone());
            finished.duration_ms = Some(report.duration.as_millis() as u64);
            tracing_audit(&finished);
            let _ = sender.send(Entry::Audit(finished)).await;
            drop(sender);
            writer.await.unwrap_or_default()
        };
        let counts = match tokio::time::timeout(FINISH_WITHIN, finals).await {
            Ok(counts) => counts,
            Err(_) => {
                tracing::warn!("the journal did not finish writing within 30s");
                Counts {
                    records: 0,
                    failed_writes: 1,
                }
            }
        };
        let mut failed_writes = counts.failed_writes;
        renewer.abort();
        if let Err(error) = store.finish_run(&shared.run_id, &outcome).await {
            tracing::warn!(%error, "recording the run's end failed");
            failed_writes += 1;
        }
        summary.records = counts.records;
        summary.dropped = shared.dropped.load(Ordering::Relaxed);
        summary.failed_writes = failed_writes;
        report.audit = Some(summary);
    }
}

impl Shared {
    fn record(&self, event: AuditEvent) -> AuditRecord {
        let mut record = AuditRecord::now(event, &self.actor);
        record.deployment_id = Some(self.deployment_id.clone());
        record.run_id = Some(self.run_id.clone());
        record
    }

    /// Queues `record` (and traces it); a full queue drops it, counted.
    fn audit(&self, sender: &mpsc::Sender<Entry>, record: AuditRecord) {
        tracing_audit(&record);
        self.push(sender, Entry::Audit(record));
    }

    fn push(&self, sender: &mpsc::Sender<Entry>, entry: Entry) {
        if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(entry) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Journals targets as they start and finish.
#[derive(Debug)]
struct Listener {
    sender: mpsc::Sender<Entry>,
    shared: Arc<Shared>,
}

impl TargetListener for Listener {
    fn started(&self, _: usize, target: &Target) {
        let mut record = self.shared.record(AuditEvent::TargetStarted);
        record.environment = Some(target.environment.clone());
        self.shared.audit(&self.sender, record);
    }

    fn finished(&self, _: usize, target: &Target, outcome: &TargetOutcome) {
        let error = outcome.error.as_ref();
        let record = TargetRecord {
            deployment_id: self.shared.deployment_id.clone(),
            environment: target.environment.clone(),
            run_id: self.shared.run_id.clone(),
            status: outcome.status,
            applied: outcome.applied.clone(),
            rolled_back: Vec::new(),
            version_before: outcome.version_before.clone(),
            version_after: outcome.version_after.clone(),
            error_class: error.map(|e| e.class),
            error: error.map(|e| e.message.clone()),
            started_at: outcome.started_at.clone(),
            finished_at: outcome.finished_at.clone(),
            duration_ms: outcome.duration.as_millis() as u64,
        };
        self.shared.push(&self.sender, Entry::Target(record));
        let mut audit = self.shared.record(AuditEvent::TargetFinished);
        audit.environment = Some(target.environment.clone());
        audit.versions.clone_from(&outcome.applied);
        audit.version_before.clone_from(&outcome.version_before);
        audit.version_after.clone_from(&outcome.version_after);
        audit.outcome = Some(outcome.status.to_string());
        audit.duration_ms = Some(outcome.duration.as_millis() as u64);
        if let Some(error) = error {
            audit = audit.with_error(error.class, &error.message);
        }
        self.shared.audit(&self.sender, audit);
    }
}

fn target_record(shared: &Shared, environment: &EnvironmentReport) -> TargetRecord {
    let error = environment.error.as_ref();
    TargetRecord {
        deployment_id: shared.deployment_id.clone(),
        environment: environment.environment.clone(),
        run_id: shared.run_id.clone(),
        status: environment.status,
        applied: environment.applied.clone(),
        rolled_back: environment.rolled_back.clone(),
        version_before: environment.version_before.clone(),
        version_after: environment.version_after.clone(),
        error_class: error.map(|e| e.class),
        error: error.map(|e| e.message.clone()),
        started_at: environment.started_at.clone(),
        finished_at: environment.finished_at.clone(),
        duration_ms: environment.duration.as_millis() as u64,
    }
}

/// Every audit record is also a `tracing` event (target `flotilla::audit`).
fn tracing_audit(record: &AuditRecord) {
    tracing::info!(
        target: "flotilla::audit",
        event = ?record.event,
        deployment = record.deployment_id.as_deref().unwrap_or_default(),
        environment = record.environment.as_deref().unwrap_or_default(),
        outcome = record.outcome.as_deref().unwrap_or_default(),
        error_class = record.error_category.as_deref().unwrap_or_default(),
        by = %record.actor,
        "audit"
    );
}

fn open_audit_log(path: &PathBuf) -> Result<std::io::BufWriter<std::fs::File>, ControlError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(std::io::BufWriter::new)
        .map_err(|error| ControlError::Unavailable {
            store: path.display().to_string(),
            reason: format!("cannot open the audit log: {error}"),
        })
}

/// Renews run `run_id` every third of its lease until aborted.
async fn keep_alive(store: Arc<dyn ControlStore>, run_id: String, lease: Duration) {
    let mut renew = tokio::time::interval(lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    loop {
        renew.tick().await;
        // A renewal that hangs must not outlive the lease it renews.
        match tokio::time::timeout(lease, store.renew_run(&run_id, lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "keeping the run alive in the control store failed");
            }
            Err(_) => tracing::warn!("keeping the run alive in the control store timed out"),
        }
    }
}

/// The writer task: batches what is queued into the store (and the audit file), until the
/// queue is closed and empty.
async fn write(
    store: Arc<dyn ControlStore>,
    mut receiver: mpsc::Receiver<Entry>,
    mut file: Option<std::io::BufWriter<std::fs::File>>,
) -> Counts {
    let mut counts = Counts::default();
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
    loop {
        let received = receiver.recv_many(&mut batch, BATCH).await;
        if received == 0 {
            return counts;
        }
        let lingered = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(lingered, receiver.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        flush(store.as_ref(), &mut batch, file.as_mut(), &mut counts).await;
    }
}

async fn flush(
    store: &dyn ControlStore,
    batch: &mut Vec<Entry>,
    file: Option<&mut std::io::BufWriter<std::fs::File>>,
    counts: &mut Counts,
) {
    let mut targets = Vec::new();
    let mut audit = Vec::new();
    for entry in batch.drain(..) {
        match entry {
            Entry::Target(record) => targets.push(record),
            Entry::Audit(record) => audit.push(record),
        }
    }
    if let Some(file) = file {
        let written = audit.iter().try_for_each(|record| {
            serde_json::to_writer(&mut *file, record)?;
            file.write_all(b"\n")?;
            Ok::<(), Box<dyn std::error::Error>>(())
        });
        if let Err(error) = written.and_then(|()| file.flush().map_err(Into::into)) {
            tracing::warn!(%error, "writing the audit log failed");
            counts.failed_writes += 1;
        }
    }
    match store.write(&targets, &audit).await {
        Ok(()) => counts.records += audit.len() as u64,
        Err(error) => {
            tracing::warn!(%error, "writing to the control store failed");
            counts.failed_writes += 1;
        }
    }
}
