//! Pre-flight: what the coordinator learns about every target before anything runs — its
//! health (when asked to check), and from its history what is pending or drifted. Reads
//! only, many targets at once, bounded.

use std::sync::Arc;

use flotilla_core::{Version, current_version};
use flotilla_runner::execute::steps;
use flotilla_runner::{MigrationPlan, RunnerError};
use flotilla_strategies::Destination;
use futures::StreamExt;

/// Pre-flight reads asked at once. A backend shares requests among the reads waiting for one
/// endpoint (SurrealDB's runner sends up to 512 in one, four requests at a time), so many
/// waiting together make few requests; the bound keeps memory flat for very large fleets.
pub(crate) const PREFLIGHT_CONCURRENCY: usize = 4096;

/// What pre-flight found on one target.
#[derive(Debug)]
pub(crate) struct Facts {
    /// Why the health probe failed, when it was asked for and did.
    pub(crate) unhealthy: Option<String>,
    /// What history says: the version now and what is pending — or why it could not tell
    /// (drift, or history unreadable).
    pub(crate) read: Result<Read, RunnerError>,
}

/// A target's history, read.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) version_before: Option<Version>,
    pub(crate) pending: Vec<Version>,
}

impl Facts {
    /// The pending versions, when history was read.
    pub(crate) fn pending(&self) -> Option<&[Version]> {
        self.read.as_ref().ok().map(|read| read.pending.as_slice())
    }
}

/// Probes (with `health`) or reads the history of every target, concurrently, in plan order.
pub(crate) async fn preflight(
    destinations: &[Destination],
    up: &MigrationPlan,
    health: bool,
) -> Vec<Facts> {
    let up = Arc::new(up.clone());
    futures::stream::iter(destinations)
        .map(|destination| {
            let up = Arc::clone(&up);
            async move {
                let history = if health {
                    match destination.runner.probe(&destination.target).await {
                        Ok(probe) => probe.history,
                        Err(error) => {
                            return Facts {
                                unhealthy: Some(format!("unhealthy: {error}")),
                                read: Err(error),
                            };
                        }
                    }
                } else {
                    destination.runner.history(&destination.target).await
                };
                let read = history.and_then(|history| {
                    let pending = steps(&destination.target, &up, &history)?
                        .into_iter()
                        .map(|m| m.version.clone())
                        .collect();
                    Ok(Read {
                        version_before: current_version(&history).cloned(),
                        pending,
                    })
                });
                Facts {
                    unhealthy: None,
                    read,
                }
            }
        })
        .buffered(PREFLIGHT_CONCURRENCY)
        .collect()
        .await
}
