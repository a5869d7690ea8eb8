//! `[[fleets]]` made into environments: each fleet's `source` table becomes a tenant source
//! (`static`, `file`, `command`, `http`, `surrealdb`), listed, validated and read through
//! its template; the environments join the project's registry beside the fixed ones.

use std::path::Path;
use std::time::Duration;

use flotilla_coordinator::EnvironmentConfig;
use flotilla_coordinator::fleet::{
    CommandSource, FileSource, FleetError, HttpSource, StaticSource, TenantSource, expand,
};
use flotilla_core::Secret;
use flotilla_core::config::{Fields, FleetConfig, check_keys, nearest};
use flotilla_surrealdb::{SurrealConfig, SurrealTenantSource};

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

/// The environments of every fleet with the fleet's name, in configuration order.
pub(crate) async fn environments(
    fleets: &[FleetConfig],
    base: &Path,
    runner: &SurrealConfig,
) -> Result<Vec<(String, EnvironmentConfig)>, Failure> {
    let lookup = |name: &str| std::env::var(name).ok();
    let mut all = Vec::new();
    for fleet in fleets {
        let source = source(fleet, base, runner)?;
        let environments = expand(fleet, source.as_ref(), &lookup)
            .await
            .map_err(|error| match error {
                FleetError::Template { .. } => usage(error),
                other => unavailable(other),
            })?;
        all.extend(environments.into_iter().map(|e| (fleet.name.clone(), e)));
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
    let lookup = |name: &str| std::env::var(name).ok();
    let fields = Fields::new(table, place.as_str(), &lookup);
    let kind = fields.required("kind").map_err(usage)?;
    if !KINDS.contains(&kind.as_str()) {
        let hint = nearest(&kind, KINDS.iter().copied())
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        return Err(usage(format!(
            "{place}: `kind` is `{kind}`{hint}; it is one of static, file, command, http, surrealdb"
        )));
    }
    check_keys(table, keys_of(&kind), &format!("in {place}")).map_err(usage)?;
    let required = |key: &str| fields.required(key).map_err(usage);
    Ok(match kind.as_str() {
        "static" => {
            if !table.contains_key("tenants") {
                return Err(usage(format!("{place} needs `tenants`, a list of ids")));
            }
            Box::new(StaticSource(fields.strings("tenants").map_err(usage)?))
        }
        "file" => Box::new(FileSource(base.join(required("path")?))),
        "command" => Box::new(CommandSource {
            command: required("command")?,
            dir: base.to_path_buf(),
            timeout: fields
                .duration("timeout")
                .map_err(usage)?
                .unwrap_or(Duration::from_secs(60)),
        }),
        "http" => Box::new(http(&fields)?),
        _ => {
            let mut connection = fields.connection().map_err(usage)?;
            connection.url = crate::project::beside(&connection.url, base);
            Box::new(SurrealTenantSource::new(
                connection,
                required("query")?,
                runner.clone(),
            ))
        }
    })
}

/// An `http` source: the endpoint, its bearer token from `token_env`, attempts and timeout.
fn http(fields: &Fields<'_>) -> Result<HttpSource, Failure> {
    let token = match fields.text("token_env").map_err(usage)? {
        None => None,
        Some(variable) => Some(Secret::new(std::env::var(&variable).map_err(|_| {
            usage(fields.problem(&format!("`token_env` names {variable}, which is not set")))
        })?)),
    };
    let mut http = HttpSource::new(fields.required("url").map_err(usage)?, token);
    http.timeout = fields
        .duration("timeout")
        .map_err(usage)?
        .unwrap_or(http.timeout);
    if let Some(attempts) = fields.whole::<u32>("attempts").map_err(usage)? {
        if !(1..=20).contains(&attempts) {
            return Err(usage(
                fields.problem("`attempts` is a whole number from 1 to 20"),
            ));
        }
        http.attempts = attempts;
    }
    Ok(http)
}
