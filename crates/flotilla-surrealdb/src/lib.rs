//! SurrealDB backend for flotilla: a [`MigrationRunner`] for embedded (`mem://`,
//! `surrealkv://`) and remote (`ws://`, `wss://`, `http://`, `https://`) SurrealDB.
//!
//! - One connection per endpoint, shared by every target on it, with pools of signed-in
//!   sessions per user; every request names its namespace and database. A failed connect is
//!   shared by every target on that endpoint; every wait has a timeout.
//! - History lives in `_migration_history`, compatible with the surql toolkit's table.
//! - The lock is a lease record `_migration_lock:lock`, renewed by a heartbeat; every apply
//!   is fenced by the lease token inside its transaction, so a lost lease applies nothing.
//! - Each migration's statements and its history row commit in one `BEGIN … COMMIT`
//!   transaction; a target's pending migrations travel in one request.
//! - Health probes waiting for the same endpoint and user share a request.
//!
//! Invariant: this is the only crate that knows SurrealDB; everything above it sees
//! `dyn MigrationRunner`.

mod apply;
mod config;
mod control;
mod errors;
mod exists;
mod lease;
mod probes;
mod rehearse;
mod request;
mod rows;
mod runner;
mod session;
mod sql;
mod tenants;

pub use config::SurrealConfig;
pub use control::SurrealControlStore;
pub use runner::{SCHEMES, SurrealRunner};
pub use tenants::SurrealTenantSource;
