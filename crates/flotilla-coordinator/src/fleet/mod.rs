//! Fleets: environments made from a tenant source and a template. [`expand`] lists a source,
//! validates every id (letters, digits, `_`, `-`; 1 to 128) and refuses duplicates, naming the
//! source and the id, then reads the template once per tenant. The sources that need no
//! database backend live here ([`StaticSource`], [`FileSource`], [`CommandSource`],
//! [`HttpSource`]); a database query source comes from a backend crate.

mod sources;

use std::collections::HashSet;

use flotilla_core::config::{EnvironmentConfig, FleetConfig, validate_tenant_id};
pub use flotilla_runner::fleet::{SourceError, Tenant, TenantSource, parse_listing, tenants_of};
pub use sources::{CommandSource, FileSource, HttpSource, StaticSource};

/// Why a fleet could not be made into environments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The source could not list its tenants.
    #[error("fleet `{fleet}`: {source}")]
    Source {
        /// The fleet.
        fleet: String,
        /// What the source said.
        source: SourceError,
    },
    /// The template could not be read for one tenant (a configuration error: the message
    /// names the fleet and the tenant).
    #[error("{problem}")]
    Template {
        /// The fleet.
        fleet: String,
        /// What is wrong.
        problem: String,
    },
    /// A tenant id or a duplicate.
    #[error("fleet `{fleet}` (from {source_name}): {problem}")]
    Invalid {
        /// The fleet.
        fleet: String,
        /// The source, as it describes itself.
        source_name: String,
        /// What is wrong, naming the tenant.
        problem: String,
    },
}

/// The environments of `fleet`: its source's tenants through its template, in the source's
/// order; `lookup` resolves the process's variables after `${tenant}` and the tenant's fields.
pub async fn expand(
    fleet: &FleetConfig,
    source: &dyn TenantSource,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<EnvironmentConfig>, FleetError> {
    let tenants = source
        .tenants()
        .await
        .map_err(|source| FleetError::Source {
            fleet: fleet.name.clone(),
            source,
        })?;
    let invalid = |problem: String| FleetError::Invalid {
        fleet: fleet.name.clone(),
        source_name: source.describe(),
        problem,
    };
    let mut seen = HashSet::with_capacity(tenants.len());
    let mut environments = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        validate_tenant_id(&tenant.id).map_err(invalid)?;
        if !seen.insert(tenant.id.as_str()) {
            return Err(invalid(format!("tenant `{}` is listed twice", tenant.id)));
        }
        environments.push(
            fleet
                .environment(&tenant.id, &tenant.fields, lookup)
                .map_err(|problem| FleetError::Template {
                    fleet: fleet.name.clone(),
                    problem,
                })?,
        );
    }
    Ok(environments)
}
