//! What a target has applied, and how that compares with the migrations directory.

use std::collections::HashMap;

use crate::error::DriftError;
use crate::migration::{Migration, MigrationSet};
use crate::version::Version;

/// One row of a target's migration history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppliedMigration {
    /// The applied version.
    pub version: Version,
    /// Description at the time it was applied.
    pub description: String,
    /// Checksum of the file at the time it was applied.
    pub checksum: String,
    /// When it was applied (RFC 3339, as the database reported it).
    #[serde(default)]
    pub applied_at: Option<String>,
    /// How long it took, if recorded.
    #[serde(default)]
    pub execution_time_ms: Option<u64>,
    /// Who applied it (host, pid), if recorded; rows written by other tools have none.
    #[serde(default)]
    pub applied_by: Option<String>,
    /// The deployment that applied it, if recorded.
    #[serde(default)]
    pub deployment_id: Option<String>,
}

/// Which disagreements between history and directory are tolerated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriftPolicy {
    /// Tolerate history rows whose migration file is gone.
    pub allow_missing_files: bool,
    /// Apply pending migrations older than the newest applied one.
    pub allow_out_of_order: bool,
}

/// Checks `applied` against `migrations` and returns the pending migrations, oldest first.
///
/// Fails, before anything could run, on the lowest-versioned problem: an applied migration
/// whose checksum differs from its file, a history row without a file, or a pending
/// migration older than the newest applied one — the last two unless `policy` allows them.
/// Linear in the number of migrations and history rows.
pub fn pending<'a>(
    migrations: &'a MigrationSet,
    applied: &[AppliedMigration],
    policy: DriftPolicy,
) -> Result<Vec<&'a Migration>, DriftError> {
    let by_version: HashMap<&Version, &AppliedMigration> =
        applied.iter().map(|row| (&row.version, row)).collect();
    let mut missing: Vec<&AppliedMigration> = applied
        .iter()
        .filter(|row| migrations.get(&row.version).is_none())
        .collect();
    missing.sort_by(|a, b| a.version.cmp(&b.version));
    let newest_applied = applied.iter().map(|row| &row.version).max();

    let mut problems: Vec<(Version, DriftError)> = Vec::new();
    if !policy.allow_missing_files
        && let Some(row) = missing.first()
    {
        problems.push((
            row.version.clone(),
            DriftError::MissingFile {
                version: row.version.clone(),
                description: row.description.clone(),
            },
        ));
    }
    let mut pending = Vec::new();
    for migration in migrations {
        match by_version.get(&migration.version) {
            Some(row) if row.checksum != migration.checksum => {
                problems.push((
                    migration.version.clone(),
                    DriftError::ChecksumMismatch {
                        version: migration.version.clone(),
                        file: migration.path.clone(),
                        recorded: row.checksum.clone(),
                        actual: migration.checksum.clone(),
                    },
                ));
                break;
            }
            Some(_) => {}
            None => pending.push(migration),
        }
    }
    if !policy.allow_out_of_order
        && let (Some(newest), Some(first)) = (newest_applied, pending.first())
        && first.version < *newest
    {
        problems.push((
            first.version.clone(),
            DriftError::OutOfOrder {
                version: first.version.clone(),
                file: first.path.clone(),
                newest_applied: newest.clone(),
            },
        ));
    }
    match problems.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
        Some((_, problem)) => Err(problem),
        None => Ok(pending),
    }
}

/// The newest applied version, if any.
pub fn current_version(applied: &[AppliedMigration]) -> Option<&Version> {
    applied.iter().map(|row| &row.version).max()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn set(versions: &[&str]) -> MigrationSet {
        MigrationSet::from_files(versions.iter().map(|v| {
            (
                PathBuf::from(format!("m/{v}_m.surql")),
                format!("DEFINE TABLE t{v};"),
            )
        }))
        .expect("valid set")
    }

    fn applied_from(set: &MigrationSet, versions: &[&str]) -> Vec<AppliedMigration> {
        versions
            .iter()
            .map(|v| {
                let m = set
                    .get(&Version::parse(v).expect("version"))
                    .expect("migration in set");
                AppliedMigration {
                    version: m.version.clone(),
                    description: m.description.clone(),
                    checksum: m.checksum.clone(),
                    applied_at: None,
                    execution_time_ms: None,
                    applied_by: None,
                    deployment_id: None,
                }
            })
            .collect()
    }

    fn versions(pending: &[&Migration]) -> Vec<String> {
        pending.iter().map(|m| m.version.to_string()).collect()
    }

    #[test]
    fn pending_is_what_history_lacks() {
        let s = set(&["0001", "0002", "0003"]);
        let applied = applied_from(&s, &["0001"]);
        let got = pending(&s, &applied, DriftPolicy::default()).expect("no drift");
        assert_eq!(versions(&got), ["0002", "0003"]);
        let all = applied_from(&s, &["0001", "0002", "0003"]);
        assert!(
            pending(&s, &all, DriftPolicy::default())
                .expect("no drift")
                .is_empty()
        );
    }

    #[test]
    fn edited_file_is_drift_naming_version_and_file() {
        let s = set(&["0001", "0002"]);
        let mut applied = applied_from(&s, &["0001", "0002"]);
        applied[1].checksum = "0".repeat(64);
        let err = pending(&s, &applied, DriftPolicy::default()).expect_err("drift");
        assert!(
            matches!(&err, DriftError::ChecksumMismatch { version, .. } if version.as_str() == "0002")
        );
        let message = err.to_string();
        assert!(
            message.contains("0002") && message.contains("m/0002_m.surql"),
            "{message}"
        );
    }

    #[test]
    fn missing_file_is_an_error_unless_allowed() {
        let full = set(&["0001", "0002", "0003"]);
        let applied = applied_from(&full, &["0001", "0002"]);
        let without_two = set(&["0001", "0003"]);
        let err = pending(&without_two, &applied, DriftPolicy::default()).expect_err("missing");
        assert!(
            matches!(err, DriftError::MissingFile { ref version, .. } if version.as_str() == "0002")
        );
        let allowed = DriftPolicy {
            allow_missing_files: true,
            ..DriftPolicy::default()
        };
        assert_eq!(
            versions(&pending(&without_two, &applied, allowed).expect("allowed")),
            ["0003"]
        );
    }

    #[test]
    fn out_of_order_is_an_error_unless_allowed() {
        let s = set(&["0001", "0002", "0003"]);
        let applied = applied_from(&s, &["0001", "0003"]);
        let err = pending(&s, &applied, DriftPolicy::default()).expect_err("out of order");
        assert!(
            matches!(err, DriftError::OutOfOrder { ref version, .. } if version.as_str() == "0002")
        );
        let allowed = DriftPolicy {
            allow_out_of_order: true,
            ..DriftPolicy::default()
        };
        assert_eq!(
            versions(&pending(&s, &applied, allowed).expect("allowed")),
            ["0002"]
        );
    }
}
