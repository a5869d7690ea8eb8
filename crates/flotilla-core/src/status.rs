//! Where a deployment stands, per environment, and the events that say so.

use std::time::SystemTime;

use crate::version::Version;

/// Status of one environment in a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Not started.
    Pending,
    /// Being deployed.
    InProgress,
    /// Deployed (or had nothing to do).
    Success,
    /// Failed; what it applied of this deployment may have been rolled back.
    Failed,
    /// This deployment's migrations were reverted after a failure elsewhere or here.
    RolledBack,
    /// Never started: an earlier failure or a gate stopped the deployment.
    Skipped,
    /// Never started: a gate found a reason here not to deploy (it names it).
    Refused,
}

impl std::fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeploymentStatus::Pending => "pending",
            DeploymentStatus::InProgress => "in progress",
            DeploymentStatus::Success => "success",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::RolledBack => "rolled back",
            DeploymentStatus::Skipped => "skipped",
            DeploymentStatus::Refused => "refused",
        })
    }
}

/// A status change of one environment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeploymentEvent {
    /// The environment.
    pub environment: String,
    /// Its new status.
    pub status: DeploymentStatus,
    /// The migration just applied or reverted, for per-migration progress.
    pub migration: Option<Version>,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// On the event that ends an environment's turn: when its turn started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// On the event that ends an environment's turn: how long it took, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// On the event that ends an environment's turn in failure: the error's class
    /// (`statement_failed`, `lock_timeout`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

impl DeploymentEvent {
    /// An event stamped now.
    pub fn now(
        environment: impl Into<String>,
        status: DeploymentStatus,
        migration: Option<Version>,
    ) -> Self {
        Self {
            environment: environment.into(),
            status,
            migration,
            at: rfc3339(SystemTime::now()),
            started_at: None,
            duration_ms: None,
            error_class: None,
        }
    }

    /// The same event, ending a turn that started at `started_at` and took `duration`,
    /// failing with `error_class` if it failed.
    pub fn ending(
        mut self,
        started_at: Option<String>,
        duration: std::time::Duration,
        error_class: Option<String>,
    ) -> Self {
        self.started_at = started_at;
        self.duration_ms = Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        self.error_class = error_class;
        self
    }
}

/// Formats a time as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
