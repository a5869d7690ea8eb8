//! Ctrl-C and SIGTERM, handled from the start of the process. During a deployment the first
//! stops it gracefully (no new environment starts, running ones finish, what the plan says
//! is rolled back, leases are released, the report is printed) and the command exits 130 or
//! 143; a second exits at once. Outside one (listing tenants, reading passwords) the first
//! exits at once. Every command flotilla started (a source, a password command, a hook) is
//! killed with everything it started before the process exits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use flotilla_coordinator::Stop;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code after SIGINT, as shells report it (128 + 2).
const EXIT_SIGINT: u8 = 130;
/// Exit code after SIGTERM (128 + 15).
const EXIT_SIGTERM: u8 = 143;

/// The first signal's exit code, 0 before one.
static RECEIVED: AtomicU8 = AtomicU8::new(0);

/// The deployment a first signal stops gracefully, while one runs.
static RUNNING: Mutex<Option<Stop>> = Mutex::new(None);

/// Starts handling SIGINT and SIGTERM (call once, first thing, inside the runtime).
pub(crate) fn install() {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for signals; Ctrl-C will stop flotilla at once");
        return;
    };
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = interrupt.recv() => EXIT_SIGINT,
            _ = terminate.recv() => EXIT_SIGTERM,
        };
        RECEIVED.store(first, Ordering::SeqCst);
        let running = RUNNING.lock().ok().and_then(|stop| stop.clone());
        let code = match running {
            Some(stop) => {
                eprintln!(
                    "stopping: no new environment will start; running ones finish and release their locks (signal again to exit at once)"
                );
                stop.stop();
                let second = tokio::select! {
                    _ = interrupt.recv() => EXIT_SIGINT,
                    _ = terminate.recv() => EXIT_SIGTERM,
                };
                eprintln!("exiting at once: leases still held expire on their own");
                second
            }
            None => first,
        };
        flotilla_coordinator::kill_running();
        std::process::exit(i32::from(code));
    });
}

/// A deployment a first signal stops. Stops being one when dropped.
pub(crate) struct Watch(());

impl Watch {
    /// The exit code the first signal calls for.
    pub(crate) fn exit_code(&self) -> Option<u8> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut running) = RUNNING.lock() {
            *running = None;
        }
    }
}

/// Makes the first signal stop `stop`'s deployment gracefully while the watch lives.
pub(crate) fn watch(stop: Stop) -> Watch {
    if let Ok(mut running) = RUNNING.lock() {
        *running = Some(stop);
    }
    Watch(())
}
