//! The SurrealDB runner's settings.

use std::time::Duration;

/// Tunables of the SurrealDB runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SurrealConfig {
    /// How long to wait for a server to accept a connection. A failed connect is remembered
    /// for this long: every target on that endpoint fails with it at once instead of waiting
    /// for a connect timeout each.
    pub connect_timeout: Duration,
    /// How long to wait for the answer to a request that is not a migration (a probe, a
    /// history read, a lock, a renewal, a release). A migration request may run as long as
    /// it needs while the server keeps renewing its lease; it is abandoned once no renewal
    /// succeeded for a whole lease.
    pub request_timeout: Duration,
    /// Attempts at a transaction that hits write conflicts before giving up.
    pub conflict_attempts: u32,
}

impl SurrealConfig {
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for SurrealConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            conflict_attempts: 8,
        }
    }
}
