//! The conformance suite against embedded SurrealDB: `mem://` and `surrealkv://`.

use std::sync::Arc;

use async_trait::async_trait;
use flotilla_core::Connection;
use flotilla_runner::testkit::Harness;
use flotilla_runner::{DynRunner, TenantContext};
use flotilla_surrealdb::SurrealRunner;

/// Every check gets its own runner and so its own datastore.
struct Embedded {
    runner: SurrealRunner,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Embedded {
    fn memory() -> Self {
        Self {
            runner: SurrealRunner::new(),
            url: "mem://".to_owned(),
            _dir: None,
        }
    }

    fn surrealkv() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("surrealkv://{}", dir.path().join("db").display());
        Self {
            runner: SurrealRunner::new(),
            url,
            _dir: Some(dir),
        }
    }
}

#[async_trait]
impl Harness for Embedded {
    async fn runner(&self) -> DynRunner {
        // An embedded datastore belongs to one process: every "process" shares the runner.
        Arc::new(self.runner.clone())
    }

    fn tenant(&self, name: &str) -> TenantContext {
        TenantContext::new(name, Connection::new(self.url.clone(), "conformance", name))
    }

    async fn snapshot(&self, tenant: &TenantContext) -> String {
        self.runner.snapshot(tenant).await.expect("snapshot")
    }
}

mod mem {
    flotilla_runner::conformance_tests!(super::Embedded::memory());
}

mod surrealkv {
    flotilla_runner::conformance_tests!(super::Embedded::surrealkv());
}
