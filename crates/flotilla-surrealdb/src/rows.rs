//! Rows as the database returns them: history rows, the lease record, and a canonical
//! rendering of whole databases for tests.

use flotilla_core::{AppliedMigration, Version};
use flotilla_runner::{LockInfo, LockOwner, Result, RunnerError, Target};
use serde_json::Value;

use crate::sql;

/// A history row as the database returns it (rows written by the surql toolkit lack
/// flotilla's optional fields).
#[derive(serde::Deserialize)]
struct HistoryRow {
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    applied_at: Option<String>,
    #[serde(default)]
    execution_time_ms: Option<u64>,
    #[serde(default)]
    applied_by: Option<String>,
    #[serde(default)]
    deployment_id: Option<String>,
}

/// History rows as the database returned them, as applied migrations, oldest first.
pub(crate) fn history_from_rows(target: &Target, rows: Value) -> Result<Vec<AppliedMigration>> {
    let rows: Vec<HistoryRow> = serde_json::from_value(rows).map_err(|e| RunnerError::Backend {
        environment: target.environment.clone(),
        source: format!("unreadable {} row: {e}", sql::HISTORY_TABLE).into(),
    })?;
    let mut history = Vec::with_capacity(rows.len());
    for row in rows {
        let version = Version::parse(&row.version).ok_or_else(|| RunnerError::Backend {
            environment: target.environment.clone(),
            source: format!(
                "{} has a row with version `{}`, which is not a migration version",
                sql::HISTORY_TABLE,
                row.version
            )
            .into(),
        })?;
        history.push(AppliedMigration {
            version,
            description: row.description.unwrap_or_default(),
            checksum: row.checksum.unwrap_or_default(),
            applied_at: row.applied_at,
            execution_time_ms: row.execution_time_ms,
            applied_by: row.applied_by,
            deployment_id: row.deployment_id,
        });
    }
    history.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(history)
}

/// A lease row as the database returns it.
#[derive(serde::Deserialize)]
pub(crate) struct LeaseRow {
    host: String,
    pid: u32,
    #[serde(default)]
    deployment_id: Option<String>,
    acquired_at: String,
    expires_at: String,
    #[serde(default)]
    pub(crate) expired: bool,
}

pub(crate) fn lease_row(value: Option<&Value>) -> Option<LeaseRow> {
    let value = value?;
    let value = match value {
        Value::Array(rows) => rows.first()?,
        other => other,
    };
    serde_json::from_value(value.clone()).ok()
}

pub(crate) fn lease_info(value: Option<&Value>) -> Option<LockInfo> {
    lease_row(value).map(LeaseRow::into_info)
}

impl LeaseRow {
    pub(crate) fn into_info(self) -> LockInfo {
        LockInfo {
            owner: LockOwner {
                host: self.host,
                pid: self.pid,
                deployment_id: self.deployment_id,
            },
            acquired_at: self.acquired_at,
            expires_at: self.expires_at,
        }
    }
}

/// JSON with object keys sorted, whatever order the database produced them in.
pub(crate) fn canonical(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sort(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}
