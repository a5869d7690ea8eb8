//! An `[[environments]]` entry (or a surql `environments.json` entry), `[defaults]` and
//! `[control]`, read into typed settings.

use serde_json::{Map, Value};

use super::fields::Fields;
use super::{
    CONTROL_KEYS, ControlConfig, DEFAULT_KEYS, Defaults, EnvironmentConfig, Format, HOOK_KEYS,
    HooksConfig, JSON_CONNECTION_KEYS, JSON_ENV_KEYS, TOML_ENV_KEYS, check_keys, validate_name,
};
use crate::connection::{AuthLevel, Connection, PasswordSource, Secret};

/// Environment number `index` (0-based) of a file in `format`.
pub(in crate::config) fn environment(
    raw: &Value,
    index: usize,
    format: Format,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvironmentConfig, String> {
    let Value::Object(map) = raw else {
        return Err(format!("environment #{} must be a table", index + 1));
    };
    let label = match map.get("name") {
        Some(Value::String(name)) => format!("environment `{name}`"),
        _ => format!("environment #{}", index + 1),
    };
    let (known, connection_map) = match format {
        Format::Toml => (TOML_ENV_KEYS, map),
        Format::Json => match map.get("connection") {
            Some(Value::Object(connection)) => {
                check_keys(
                    connection,
                    JSON_CONNECTION_KEYS,
                    &format!("in {label}'s connection"),
                )?;
                (JSON_ENV_KEYS, connection)
            }
            _ => return Err(format!("{label} needs a `connection` table")),
        },
    };
    check_keys(map, known, &format!("in {label}"))?;
    let fields = Fields::new(map, label.clone(), lookup);
    let name = fields.required("name")?;
    validate_name(&name).map_err(|e| e.to_string())?;
    let (connection, password_source) =
        connection(&Fields::new(connection_map, label, lookup), format)?;
    Ok(EnvironmentConfig {
        name,
        connection,
        priority: fields
            .whole("priority")?
            .unwrap_or(EnvironmentConfig::DEFAULT_PRIORITY),
        tags: fields.strings("tags")?,
        require_approval: fields.flag("require_approval", false)?,
        allow_destructive: fields.flag("allow_destructive", true)?,
        password_source,
        tenant: None,
        tenant_fields: Default::default(),
    })
}

/// The connection fields: URL, namespace, database, and the user with a password — written,
/// or to be read from `password_file` or `password_command` (then an empty [`Secret`] waits
/// in the connection for what the source gives).
pub(super) fn connection(
    fields: &Fields<'_>,
    format: Format,
) -> Result<(Connection, Option<PasswordSource>), String> {
    let (url_key, ns_key, db_key) = match format {
        Format::Toml => ("url", "namespace", "database"),
        Format::Json => ("db_url", "db_ns", "db"),
    };
    let connection = Connection::new(
        fields.required(url_key)?,
        fields.required(ns_key)?,
        fields.required(db_key)?,
    );
    let level = match fields.text("auth")?.as_deref() {
        None | Some("root") => AuthLevel::Root,
        Some("namespace") => AuthLevel::Namespace,
        Some("database") => AuthLevel::Database,
        Some(other) => {
            return Err(fields.problem(&format!(
                "`auth` must be root, namespace or database, not `{other}`"
            )));
        }
    };
    let source = match (
        fields.text("password_file")?,
        fields.text("password_command")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(fields.problem("set `password_file` or `password_command`, not both"));
        }
        (Some(path), None) => Some(PasswordSource::File(path.into())),
        (None, Some(line)) => Some(PasswordSource::Command {
            line,
            env: Vec::new(),
        }),
        (None, None) => None,
    };
    let password = fields.text("password")?;
    if let Some(source) = &source
        && password.is_some()
    {
        return Err(fields.problem(&format!("set `password` or `{}`, not both", source.key())));
    }
    let password = password.or_else(|| source.as_ref().map(|_| String::new()));
    match (fields.text("username")?, password) {
        (Some(user), Some(pass)) => Ok((
            connection.with_credentials(user, Secret::new(pass), level),
            source,
        )),
        (None, None) => Ok((connection, None)),
        (Some(_), None) => Err(fields.problem("`username` is set but `password` is not")),
        (None, Some(_)) => Err(fields.problem(&format!(
            "`{}` is set but `username` is not",
            source.as_ref().map_or("password", PasswordSource::key)
        ))),
    }
}

/// `[defaults]`, checked key by key.
pub(super) fn defaults(
    map: &Map<String, Value>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Defaults, String> {
    check_keys(map, DEFAULT_KEYS, "in [defaults]")?;
    let fields = Fields::new(map, "in [defaults]", lookup);
    if map.contains_key("lock_timeout") && map.contains_key("lock_timeout_secs") {
        return Err(fields.problem("set `lock_timeout` or `lock_timeout_secs`, not both"));
    }
    let count = |key: &str| -> Result<Option<usize>, String> {
        fields
            .whole::<i64>(key)?
            .map(|n| {
                usize::try_from(n)
                    .map_err(|_| fields.problem(&format!("`{key}` must be at least 0")))
            })
            .transpose()
    };
    Ok(Defaults {
        strategy: fields.text("strategy")?,
        max_concurrent: count("max_concurrent")?,
        batch_size: count("batch_size")?,
        canary_percentage: fields.number("canary_percentage")?,
        fail_fast: map
            .contains_key("fail_fast")
            .then(|| fields.flag("fail_fast", false))
            .transpose()?,
        isolate: map
            .contains_key("isolate")
            .then(|| fields.flag("isolate", false))
            .transpose()?,
        lock_timeout: match fields.duration("lock_timeout")? {
            Some(wait) => Some(wait),
            None => fields.duration("lock_timeout_secs")?,
        },
        lease: fields.duration("lease")?,
        connect_timeout: fields.duration("connect_timeout")?,
        request_timeout: fields.duration("request_timeout")?,
    })
}

/// `[hooks]`, checked key by key.
pub(super) fn hooks(
    map: &Map<String, Value>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<HooksConfig, String> {
    check_keys(map, HOOK_KEYS, "in [hooks]")?;
    let fields = Fields::new(map, "in [hooks]", lookup);
    Ok(HooksConfig {
        on_tenant: fields.text("on_tenant")?,
        timeout: fields.duration("timeout")?,
    })
}

/// `[control]`, checked key by key; the connection only when `url` is given.
pub(super) fn control(
    map: &Map<String, Value>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ControlConfig, String> {
    check_keys(map, CONTROL_KEYS, "in [control]")?;
    let fields = Fields::new(map, "in [control]", lookup);
    let connection = match fields.text("url")? {
        None => {
            if let Some(key) = ["namespace", "database", "username", "password", "auth"]
                .into_iter()
                .find(|key| map.contains_key(*key))
            {
                return Err(fields.problem(&format!(
                    "`{key}` needs a `url`: the embedded default store has no credentials or names to set"
                )));
            }
            None
        }
        Some(_) => {
            let mut with_defaults = map.clone();
            for (key, default) in [("namespace", "flotilla"), ("database", "control")] {
                with_defaults
                    .entry(key)
                    .or_insert_with(|| Value::String(default.to_owned()));
            }
            let fields = Fields::new(&with_defaults, "in [control]", lookup);
            Some(connection(&fields, Format::Toml)?.0)
        }
    };
    let quiesce_unreadable = fields.text("quiesce_unreadable")?;
    if let Some(policy) = quiesce_unreadable.as_deref()
        && !matches!(policy, "closed" | "open")
    {
        return Err(fields.problem(&format!(
            "`quiesce_unreadable` must be closed or open, not `{policy}`"
        )));
    }
    Ok(ControlConfig {
        connection,
        quiesce_unreadable,
        audit_log: fields.text("audit_log")?.map(std::path::PathBuf::from),
    })
}
