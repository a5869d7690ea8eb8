//! A tenant source that is a SurrealDB query: `SELECT VALUE id FROM tenant WHERE active`, or
//! objects with an `id` and fields for the template. A record id (`tenant:acme`) counts as
//! its key (`acme`).

use async_trait::async_trait;
use flotilla_core::Connection;
use flotilla_runner::Target;
use flotilla_runner::fleet::{SourceError, Tenant, TenantSource, tenants_of};

use crate::SurrealConfig;
use crate::runner::SurrealRunner;
use crate::session::Lane;

/// See the module documentation.
#[derive(Debug)]
pub struct SurrealTenantSource {
    runner: SurrealRunner,
    target: Target,
    query: String,
}

impl SurrealTenantSource {
    /// `query` (one statement) on the database at `connection`, with `config`'s timeouts.
    pub fn new(connection: Connection, query: impl Into<String>, config: SurrealConfig) -> Self {
        Self {
            runner: SurrealRunner::with_config(config),
            target: Target::new("tenant source", connection),
            query: query.into(),
        }
    }
}

/// `tenant:acme`, `tenant:⟨acme⟩` or ``tenant:`acme` `` as `acme`; anything else as it is.
fn record_key(id: &str) -> String {
    match id.split_once(':') {
        Some((table, key)) if !table.is_empty() && !table.contains(' ') => key
            .trim_start_matches(['⟨', '`'])
            .trim_end_matches(['⟩', '`'])
            .to_owned(),
        _ => id.to_owned(),
    }
}

#[async_trait]
impl TenantSource for SurrealTenantSource {
    fn describe(&self) -> String {
        let connection = &self.target.connection;
        format!(
            "the query on {} (namespace {}, database {})",
            connection.redacted_url(),
            connection.namespace,
            connection.database
        )
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError> {
        let fail = |message: String| SourceError {
            source_name: self.describe(),
            message,
        };
        let text = format!("{};", self.query.trim().trim_end_matches(';'));
        let mut response = self
            .runner
            .request(&self.target, Lane::Deploy, &text, None, 1)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if let Some((_, error)) = response.failure() {
            return Err(fail(format!("the query failed: {}", error.message())));
        }
        let rows = response
            .result(0)
            .map_err(|e| fail(format!("the query failed: {}", e.message())))?;
        let mut tenants = tenants_of(&rows).map_err(|e| fail(format!("its result: {e}")))?;
        for tenant in &mut tenants {
            tenant.id = record_key(&tenant.id);
        }
        Ok(tenants)
    }
}

#[cfg(test)]
mod tests {
    use super::record_key;

    #[test]
    fn record_ids_count_as_their_keys() {
        assert_eq!(record_key("tenant:acme"), "acme");
        assert_eq!(record_key("tenant:⟨acme-1⟩"), "acme-1");
        assert_eq!(record_key("tenant:`acme`"), "acme");
        assert_eq!(record_key("acme"), "acme");
    }
}
