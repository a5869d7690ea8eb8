//! Ctrl-C and SIGTERM during a deployment: the first stops it gracefully (no new environment
//! starts, running ones finish, what the plan says is rolled back, leases are released, the
//! report is printed) and the command exits 130 or 143; a second exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use flotilla_coordinator::Stop;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code after SIGINT, as shells report it (128 + 2).
const EXIT_SIGINT: u8 = 130;
/// Exit code after SIGTERM (128 + 15).
const EXIT_SIGTERM: u8 = 143;

/// Which signal stopped the deployment, if any. Stops watching when dropped.
pub(crate) struct Watch {
    received: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// The exit code the first signal calls for.
    pub(crate) fn exit_code(&self) -> Option<u8> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches for SIGINT and SIGTERM while a deployment runs, stopping it at the first.
pub(crate) fn watch(stop: Stop) -> Watch {
    let received = Arc::new(AtomicU8::new(0));
    let seen = Arc::clone(&received);
    let task = tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot listen for signals; Ctrl-C will stop flotilla at once");
            return;
        };
        let first = tokio::select! {
            _ = interrupt.recv() => EXIT_SIGINT,
            _ = terminate.recv() => EXIT_SIGTERM,
        };
        seen.store(first, Ordering::SeqCst);
        eprintln!(
            "stopping: no new environment will start; running ones finish and release their locks (signal again to exit at once)"
        );
        stop.stop();
        let second = tokio::select! {
            _ = interrupt.recv() => EXIT_SIGINT,
            _ = terminate.recv() => EXIT_SIGTERM,
        };
        eprintln!("exiting at once: leases still held expire on their own");
        std::process::exit(i32::from(second));
    });
    Watch { received, task }
}
