//! The quiesce flag's rules: how long it may be set, and what a running rollout does when it
//! is set — or cannot be read.

use std::time::Duration;

use flotilla_core::format_duration;
use flotilla_strategies::Stop;
use tokio::task::JoinHandle;

use super::Control;

/// How long a quiesce lasts unless told otherwise.
pub const DEFAULT_QUIESCE: Duration = Duration::from_secs(30 * 60);

/// The longest a quiesce may last: a forgotten flag must not freeze the fleet for a day.
pub const MAX_QUIESCE: Duration = Duration::from_secs(2 * 60 * 60);

/// `ttl` when it is a quiesce's lawful length: more than zero, at most [`MAX_QUIESCE`].
pub fn validate_ttl(ttl: Duration) -> Result<Duration, String> {
    if ttl.is_zero() {
        Err("a quiesce lasts more than 0s".to_owned())
    } else if ttl > MAX_QUIESCE {
        Err(format!(
            "a quiesce lasts at most {} (asked for {}); set it again when it expires",
            format_duration(MAX_QUIESCE),
            format_duration(ttl)
        ))
    } else {
        Ok(ttl)
    }
}

/// What a running rollout does when the quiesce flag cannot be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuiesceUnreadable {
    /// Pause, as if quiesced: nothing starts that an operator may have wanted stopped.
    /// Running targets finish; the deployment can be resumed. The default.
    #[default]
    FailClosed,
    /// Carry on, logging a warning: a control store outage does not stop rollouts.
    FailOpen,
}

impl std::str::FromStr for QuiesceUnreadable {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "closed" => Ok(Self::FailClosed),
            "open" => Ok(Self::FailOpen),
            other => Err(format!("`{other}` is not closed or open")),
        }
    }
}

/// Reads the quiesce flag every `control.quiesce_poll` while a rollout runs and pauses it
/// (`stop.pause`) when the flag is set — or cannot be read and the policy fails closed. The
/// task ends once the rollout is stopped or paused; abort it when the rollout ends.
pub(crate) fn watch_quiesce(control: &Control, stop: Stop) -> JoinHandle<()> {
    let store = std::sync::Arc::clone(&control.store);
    let poll = control.quiesce_poll;
    let policy = control.quiesce_unreadable;
    tokio::spawn(async move {
        let mut warned = false;
        // The first read at once: a flag set while pre-flight ran must hold the first target.
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = stop.stopped() => return,
                    () = tokio::time::sleep(poll) => {}
                }
            }
            first = false;
            match store.quiesce().await {
                Ok(None) => {}
                Ok(Some(quiesce)) => {
                    tracing::warn!(%quiesce, "quiesced: starting no further target");
                    stop.pause(quiesce.to_string());
                    return;
                }
                Err(error) => match policy {
                    QuiesceUnreadable::FailClosed => {
                        tracing::warn!(%error, "the quiesce flag cannot be read: pausing (fail closed)");
                        stop.pause(format!(
                            "the quiesce flag cannot be read, and flotilla fails closed: {error}"
                        ));
                        return;
                    }
                    QuiesceUnreadable::FailOpen => {
                        if !warned {
                            tracing::warn!(%error, "the quiesce flag cannot be read: carrying on (fail open)");
                            warned = true;
                        }
                    }
                },
            }
        }
    })
}
