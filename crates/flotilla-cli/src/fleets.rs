//! `[[fleets]]` made into environments: each fleet's `source` table becomes a tenant source
//! (`static`, `file`, `command`, `http`, `surrealdb`), listed, validated and read through
//! its template; the environments join the project's registry beside the fixed ones.

use std::path::Path;
use std::time::Duration;

use flotilla_coordinator::EnvironmentConfig;
use flotilla_coordinator::fleet::{
    CommandSource, FileSource, HttpSource, StaticSource, TenantSource, expand,
};
use flotilla_core::config::{FleetConfig, interpolate, nearest};
use flotilla_core::{AuthLevel, Connection, Secret};
use flotilla_surrealdb::{SurrealConfig, SurrealTenantSource};
use serde_json::{Map, Value};

use crate::commands::{Failure, usage};

const KINDS: &[&str] = &["static", "file", "command", "http", "surrealdb"];

fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "static" => &["kind", "tenants"],
        "file" => &["kind", "path"],
        "command" => &["kind", "command", "timeout"],
        "http" => &["kind", "url", "token_env", "attempts", "timeout"],
        _ => &[
            "kind",
            "url",
            "namespace",
            "database",
            "username",
            "password",
            "auth",
            "query",
        ],
    }
}

/// A failure to list or read a fleet: the source could not be used (exit 1).
fn unavailable(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: crate::commands::EXIT_FAILED,
        message: message.to_string(),
    }
}

/// The environments of every fleet, in configuration order.
pub(crate) async fn environments(
    fleets: &[FleetConfig],
    base: &Path,
    runner: &SurrealConfig,
) -> Result<Vec<EnvironmentConfig>, Failure> {
    let lookup = |name: &str| std::env::var(name).ok();
    let mut all = Vec::new();
    for fleet in fleets {
        let source = source(fleet, base, runner)?;
        let environments = expand(fleet, source.as_ref(), &lookup)
            .await
            .map_err(unavailable)?;
        all.extend(environments);
    }
    Ok(all)
}

/// The tenant source `fleet`'s `source` table describes.
fn source(
    fleet: &FleetConfig,
    base: &Path,
    runner: &SurrealConfig,
) -> Result<Box<dyn TenantSource>, Failure> {
    let table = &fleet.source;
    let place = format!("fleet `{}`'s source", fleet.name);
    let text = |key: &str| -> Result<Option<String>, Failure> {
        match table.get(key) {
            None => Ok(None),
            Some(Value::String(raw)) => interpolate(raw, &|name| std::env::var(name).ok())
                .map(Some)
                .map_err(|variable| {
                    usage(format!(
                        "{place}: variable {variable} is not set (in `{key}`); set it or write ${{{variable}:-default}}"
                    ))
                }),
            Some(_) => Err(usage(format!("{place}: `{key}` must be a string"))),
        }
    };
    let required = |key: &str| text(key)?.ok_or_else(|| usage(format!("{place} needs `{key}`")));
    let kind = required("kind")?;
    if !KINDS.contains(&kind.as_str()) {
        let hint = nearest(&kind, KINDS.iter().copied())
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        return Err(usage(format!(
            "{place}: `kind` is `{kind}`{hint}; it is one of static, file, command, http, surrealdb"
        )));
    }
    check_keys(table, keys_of(&kind), &place)?;
    let duration = |key: &str, default: Duration| -> Result<Duration, Failure> {
        match text(key)? {
            None => Ok(default),
            Some(raw) => flotilla_core::parse_duration(&raw)
                .map_err(|e| usage(format!("{place}: `{key}`: {e}"))),
        }
    };
    Ok(match kind.as_str() {
        "static" => Box::new(StaticSource(static_ids(table, &place)?)),
        "file" => Box::new(FileSource(base.join(required("path")?))),
        "command" => Box::new(CommandSource {
            command: required("command")?,
            dir: base.to_path_buf(),
            timeout: duration("timeout", Duration::from_secs(60))?,
        }),
        "http" => {
            let token = match text("token_env")? {
                None => None,
                Some(variable) => Some(Secret::new(std::env::var(&variable).map_err(|_| {
                    usage(format!(
                        "{place}: `token_env` names {variable}, which is not set"
                    ))
                })?)),
            };
            let mut http = HttpSource::new(required("url")?, token);
            http.timeout = duration("timeout", http.timeout)?;
            if let Some(attempts) = table.get("attempts") {
                http.attempts = attempts
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=20).contains(n))
                    .ok_or_else(|| {
                        usage(format!(
                            "{place}: `attempts` is a whole number from 1 to 20"
                        ))
                    })?;
            }
            Box::new(http)
        }
        _ => {
            let mut connection = Connection::new(
                crate::project::beside(&required("url")?, base),
                required("namespace")?,
                required("database")?,
            );
            let level = match text("auth")?.as_deref() {
                None | Some("root") => AuthLevel::Root,
                Some("namespace") => AuthLevel::Namespace,
                Some("database") => AuthLevel::Database,
                Some(other) => {
                    return Err(usage(format!(
                        "{place}: `auth` must be root, namespace or database, not `{other}`"
                    )));
                }
            };
            match (text("username")?, text("password")?) {
                (Some(user), Some(password)) => {
                    connection = connection.with_credentials(user, Secret::new(password), level);
                }
                (None, None) => {}
                _ => {
                    return Err(usage(format!(
                        "{place}: set `username` and `password` together"
                    )));
                }
            }
            Box::new(SurrealTenantSource::new(
                connection,
                required("query")?,
                runner.clone(),
            ))
        }
    })
}

fn static_ids(table: &Map<String, Value>, place: &str) -> Result<Vec<String>, Failure> {
    match table.get("tenants") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| usage(format!("{place}: `tenants` is a list of strings")))
            })
            .collect(),
        _ => Err(usage(format!("{place} needs `tenants`, a list of ids"))),
    }
}

fn check_keys(table: &Map<String, Value>, known: &[&str], place: &str) -> Result<(), Failure> {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            let hint = nearest(key, known.iter().copied())
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(usage(format!("{place}: unknown key `{key}`{hint}")));
        }
    }
    Ok(())
}
