//! Project configuration: `flotilla.toml`, or the surql toolkit's `environments.json`.
//!
//! Both are read into one generic tree, checked for unknown keys (each reported with the
//! nearest valid key, so a typo never silently falls back to a default), interpolated
//! (`${VAR}`, `${VAR:-default}`; an unset variable without default is an error naming it and
//! the environment), and only then turned into typed settings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::connection::Connection;

mod environment;
mod fields;
mod fleet;
mod template;

use environment::{control, defaults, environment, hooks};
pub use fields::Fields;
pub use fleet::{FleetConfig, validate_tenant_id};
pub use template::{FieldPatterns, command_variable};

/// A project's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectConfig {
    /// The file they came from.
    pub path: PathBuf,
    /// Migrations directory, relative to the config file (default `migrations`).
    pub migrations: PathBuf,
    /// Deployment defaults the command line may override.
    pub defaults: Defaults,
    /// The environments, in file order.
    pub environments: Vec<EnvironmentConfig>,
    /// `[control]`: where deployments are journaled and the quiesce flag is kept.
    pub control: ControlConfig,
    /// `[[fleets]]`: environments made from a tenant source and a template.
    pub fleets: Vec<FleetConfig>,
    /// `[hooks]`: what runs after each environment of a rollout.
    pub hooks: HooksConfig,
}

/// `[hooks]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HooksConfig {
    /// A shell command run after each environment (tenant) of a rollout, told of its
    /// outcome by variables and JSON on its standard input.
    pub on_tenant: Option<String>,
    /// How long one run may take (default 60 s).
    pub timeout: Option<Duration>,
}

/// `[control]`: the control store. Every field is optional; the default store is an embedded
/// `surrealkv://` database in `.flotilla/control` beside the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlConfig {
    /// A store of the team's (a SurrealDB server URL, say); `None` for the embedded default.
    /// Namespace defaults to `flotilla`, database to `control`.
    pub connection: Option<Connection>,
    /// `closed` (the default) or `open`: what a running rollout does when the quiesce flag
    /// cannot be read.
    pub quiesce_unreadable: Option<String>,
    /// A JSON-lines file every audit record is appended to, relative to the config file.
    pub audit_log: Option<PathBuf>,
}

/// Deployment defaults the command line may override. Durations are written `30s`, `500ms`,
/// `2m`, `1h` or as a number of seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    /// Strategy name.
    pub strategy: Option<String>,
    /// Most environments at once.
    pub max_concurrent: Option<usize>,
    /// Rolling batch size.
    pub batch_size: Option<usize>,
    /// Canary share in percent.
    pub canary_percentage: Option<f64>,
    /// Stop starting environments after a failure (parallel).
    pub fail_fast: Option<bool>,
    /// Keep each environment's failure its own: roll back only what failed.
    pub isolate: Option<bool>,
    /// How long to wait for each environment's lock (`lock_timeout`, or `lock_timeout_secs`).
    pub lock_timeout: Option<Duration>,
    /// Lease length of each environment's lock; a heartbeat renews it every third.
    pub lease: Option<Duration>,
    /// How long to wait for a server to accept a connection.
    pub connect_timeout: Option<Duration>,
    /// How long to wait for the answer to a request that is not a migration.
    pub request_timeout: Option<Duration>,
}

/// One named target of deployments: a database plus the rules for deploying to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentConfig {
    /// Unique name: letters, digits, `-`, `_`, `.`; at most 255 characters.
    pub name: String,
    /// Where its database is.
    pub connection: Connection,
    /// Lower deploys first; default 100.
    pub priority: i32,
    /// Labels for selecting environments (`target`, `eu`, …).
    pub tags: Vec<String>,
    /// Deploy only with an explicit approval; default false.
    pub require_approval: bool,
    /// Whether destructive statements may run here; default true.
    pub allow_destructive: bool,
    /// Where the password is read when the configuration names a file or a command instead
    /// of the password itself; `None` once read (the password is then in `connection`).
    pub password_source: Option<crate::connection::PasswordSource>,
    /// The tenant id, for an environment a fleet made.
    pub tenant: Option<String>,
    /// The fields its tenant source gave, for an environment a fleet made: hooks get them as
    /// `FLOTILLA_TENANT_<FIELD>` variables.
    pub tenant_fields: std::collections::BTreeMap<String, String>,
}

/// An environment name flotilla does not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid environment name `{0}`: use letters, digits, `-`, `_` or `.`, at most 255 characters"
)]
pub struct InvalidEnvironmentName(pub String);

/// The longest environment name: a tenant id (up to 128) with a prefix or suffix of a
/// template's fits.
pub const MAX_NAME: usize = 255;

/// Checks an environment name.
pub fn validate_name(name: &str) -> Result<(), InvalidEnvironmentName> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(InvalidEnvironmentName(name.to_owned()))
    }
}

impl EnvironmentConfig {
    /// Default priority.
    pub const DEFAULT_PRIORITY: i32 = 100;

    /// An environment with default rules; fails on an invalid name.
    pub fn new(
        name: impl Into<String>,
        connection: Connection,
    ) -> Result<Self, InvalidEnvironmentName> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Self {
            name,
            connection,
            priority: Self::DEFAULT_PRIORITY,
            tags: Vec::new(),
            require_approval: false,
            allow_destructive: true,
            password_source: None,
            tenant: None,
            tenant_fields: Default::default(),
        })
    }

    /// With a priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// With tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Requiring approval or not.
    pub fn require_approval(mut self, required: bool) -> Self {
        self.require_approval = required;
        self
    }

    /// Allowing destructive statements or not.
    pub fn allow_destructive(mut self, allowed: bool) -> Self {
        self.allow_destructive = allowed;
        self
    }
}

/// A configuration that cannot be used; the message names the file and the culprit.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

const TOP_KEYS: &[&str] = &[
    "migrations",
    "defaults",
    "environments",
    "control",
    "fleets",
    "hooks",
];
const HOOK_KEYS: &[&str] = &["on_tenant", "timeout"];
const CONTROL_KEYS: &[&str] = &[
    "url",
    "namespace",
    "database",
    "username",
    "password",
    "auth",
    "quiesce_unreadable",
    "audit_log",
];
const DEFAULT_KEYS: &[&str] = &[
    "strategy",
    "max_concurrent",
    "batch_size",
    "canary_percentage",
    "fail_fast",
    "isolate",
    "lock_timeout",
    "lock_timeout_secs",
    "lease",
    "connect_timeout",
    "request_timeout",
];
const TOML_ENV_KEYS: &[&str] = &[
    "name",
    "url",
    "namespace",
    "database",
    "username",
    "password",
    "password_file",
    "password_command",
    "auth",
    "priority",
    "tags",
    "require_approval",
    "allow_destructive",
];
const JSON_ENV_KEYS: &[&str] = &[
    "name",
    "connection",
    "priority",
    "tags",
    "require_approval",
    "allow_destructive",
];
const JSON_CONNECTION_KEYS: &[&str] = &["db_url", "db_ns", "db", "username", "password", "auth"];

/// The file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `flotilla.toml`.
    Toml,
    /// surql-style `environments.json`.
    Json,
}

impl ProjectConfig {
    /// Reads `path` (format by extension: `.json` is JSON, anything else TOML), taking
    /// variables from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problem: format!("cannot read: {e}"),
        })?;
        let format = if path.extension().is_some_and(|e| e == "json") {
            Format::Json
        } else {
            Format::Toml
        };
        Self::parse(path, &text, format, &|name| std::env::var(name).ok())
    }

    /// Parses `text` as read from `path`, resolving `${VAR}` with `lookup`.
    pub fn parse(
        path: &Path,
        text: &str,
        format: Format,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let fail = |problem: String| ConfigError {
            path: path.to_path_buf(),
            problem,
        };
        let tree: Value = match format {
            Format::Toml => {
                let parsed: toml::Table =
                    toml::from_str(text).map_err(|e| fail(toml_error(text, &e)))?;
                serde_json::to_value(parsed).map_err(|e| fail(e.to_string()))?
            }
            Format::Json => serde_json::from_str(text).map_err(|e| fail(json_error(&e)))?,
        };
        let Value::Object(top) = tree else {
            return Err(fail("expected a table of settings at the top level".into()));
        };
        check_keys(&top, TOP_KEYS, "at the top level").map_err(fail)?;
        let defaults = match top.get("defaults") {
            None => Defaults::default(),
            Some(Value::Object(map)) => defaults(map, lookup).map_err(fail)?,
            Some(_) => return Err(fail("`defaults` must be a table".into())),
        };
        let control = match top.get("control") {
            None => ControlConfig::default(),
            Some(Value::Object(map)) => control(map, lookup).map_err(fail)?,
            Some(_) => return Err(fail("`control` must be a table".into())),
        };
        let hooks = match top.get("hooks") {
            None => HooksConfig::default(),
            Some(Value::Object(map)) => hooks(map, lookup).map_err(fail)?,
            Some(_) => return Err(fail("`hooks` must be a table".into())),
        };
        let migrations = match top.get("migrations") {
            None => PathBuf::from("migrations"),
            Some(Value::String(dir)) => PathBuf::from(interpolate(dir, lookup).map_err(|v| {
                fail(format!(
                    "variable {v} is not set (in `migrations`); set it or write ${{{v}:-default}}"
                ))
            })?),
            Some(_) => return Err(fail("`migrations` must be a path string".into())),
        };
        let environments = match top.get("environments") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(index, raw)| environment(raw, index, format, lookup).map_err(&fail))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(fail("`environments` must be a list".into())),
        };
        let fleets = match top.get("fleets") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(index, raw)| FleetConfig::read(raw, index).map_err(&fail))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(fail("`fleets` must be a list".into())),
        };
        refuse_duplicate_names(&environments).map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            migrations,
            defaults,
            environments,
            control,
            fleets,
            hooks,
        })
    }

    /// The migrations directory, resolved against the config file's directory.
    pub fn migrations_dir(&self) -> PathBuf {
        if self.migrations.is_absolute() {
            return self.migrations.clone();
        }
        self.path
            .parent()
            .map_or_else(|| self.migrations.clone(), |dir| dir.join(&self.migrations))
    }
}

/// A TOML syntax error by line and column, without the offending line: the TOML parser's own
/// message quotes it, and the line may hold a password.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let place = error
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    // The first line of the message is the parser's description; what follows quotes input.
    let what = error
        .message()
        .lines()
        .next()
        .unwrap_or("syntax error")
        .trim();
    let what = if what.contains(['`', '"', '\'']) {
        "syntax error"
    } else {
        what
    };
    format!("invalid TOML{place}: {what}")
}

/// A JSON syntax error by line and column (serde_json's messages name positions, not values).
fn json_error(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Eof => "unexpected end of file",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Data => "unexpected value",
    };
    format!(
        "invalid JSON at line {}, column {}: {what}",
        error.line(),
        error.column()
    )
}

/// Refuses two environments of one name, naming both entries.
fn refuse_duplicate_names(environments: &[EnvironmentConfig]) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for (index, environment) in environments.iter().enumerate() {
        if let Some(first) = seen.insert(environment.name.as_str(), index) {
            return Err(format!(
                "environment `{}` is defined twice (entries {} and {})",
                environment.name,
                first + 1,
                index + 1
            ));
        }
    }
    Ok(())
}

/// Refuses a key of `map` not in `known`, naming it, `place` and the nearest known key.
pub fn check_keys(
    map: &serde_json::Map<String, Value>,
    known: &[&str],
    place: &str,
) -> Result<(), String> {
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            let hint = nearest(key, known.iter().copied())
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_else(|| format!(" (valid keys: {})", known.join(", ")));
            return Err(format!("unknown key `{key}` {place}{hint}"));
        }
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}`; `Err(VAR)` names the first unset variable
/// without a default. `$$` is a literal `$`.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let expression = &body[..end];
            let (name, default) = match expression.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expression, None),
            };
            match (lookup(name), default) {
                (Some(value), _) if !(value.is_empty() && default.is_some()) => {
                    out.push_str(&value)
                }
                (_, Some(default)) => out.push_str(default),
                (None, None) => return Err(name.to_owned()),
                (Some(value), None) => out.push_str(&value),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The candidate closest to `word`, if it is a plausible typo of it.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(2))
        .min()
        .map(|(_, candidate)| candidate.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "PROD_PASSWORD" => Some("s3cret-prod".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn parse(text: &str, format: Format) -> Result<ProjectConfig, ConfigError> {
        ProjectConfig::parse(Path::new("conf/flotilla.toml"), text, format, &vars)
    }

    #[test]
    fn interpolation_rules() {
        assert_eq!(
            interpolate("a${PROD_PASSWORD}b", &vars),
            Ok("as3cret-prodb".into())
        );
        assert_eq!(
            interpolate("${MISSING:-fallback}", &vars),
            Ok("fallback".into())
        );
        assert_eq!(
            interpolate("${EMPTY:-fallback}", &vars),
            Ok("fallback".into())
        );
        assert_eq!(interpolate("${MISSING}", &vars), Err("MISSING".into()));
        assert_eq!(
            interpolate("cost $$5 and $x", &vars),
            Ok("cost $5 and $x".into())
        );
    }

    #[test]
    fn toml_environments_with_defaults() {
        let config = parse(
            r#"
migrations = "db/migrations"
[defaults]
strategy = "rolling"
batch_size = 2
[[environments]]
name = "dev"
url = "surrealkv://.flotilla/dev.db"
namespace = "app"
database = "dev"
[[environments]]
name = "prod"
url = "ws://db:8000"
namespace = "app"
database = "main"
username = "admin"
password = "${PROD_PASSWORD}"
priority = 1
tags = ["live"]
require_approval = true
allow_destructive = false
"#,
            Format::Toml,
        )
        .expect("valid");
        assert_eq!(config.migrations_dir(), PathBuf::from("conf/db/migrations"));
        assert_eq!(config.defaults.strategy.as_deref(), Some("rolling"));
        assert_eq!(config.environments.len(), 2);
        let prod = &config.environments[1];
        assert_eq!(prod.priority, 1);
        assert!(prod.require_approval && !prod.allow_destructive);
        let credentials = prod.connection.credentials.as_ref().expect("credentials");
        assert_eq!(credentials.password.expose(), "s3cret-prod");
        assert!(
            !format!("{config:?}").contains("s3cret-prod"),
            "Debug leaks the password"
        );
    }

    #[test]
    fn surql_environments_json_loads() {
        let config = parse(
            r#"{"environments": [{"name": "production", "connection": {"db_url": "ws://prod:8000/rpc",
               "db_ns": "production", "db": "main", "username": "admin", "password": "${PROD_PASSWORD}"},
               "priority": 1, "tags": ["production"], "require_approval": true, "allow_destructive": false}]}"#,
            Format::Json,
        )
        .expect("valid");
        let prod = &config.environments[0];
        assert_eq!(prod.connection.url, "ws://prod:8000/rpc");
        assert_eq!(prod.connection.namespace, "production");
    }

    #[test]
    fn typos_and_unset_variables_are_errors_naming_the_culprit() {
        let typo = parse("[[environments]]\nname = \"dev\"\nurll = \"mem://\"\nnamespace = \"a\"\ndatabase = \"b\"\n", Format::Toml)
            .expect_err("typo");
        let message = typo.to_string();
        assert!(
            message.contains("conf/flotilla.toml")
                && message.contains("`urll`")
                && message.contains("did you mean `url`"),
            "{message}"
        );

        let unset = parse(
            "[[environments]]\nname = \"prod\"\nurl = \"ws://x\"\nnamespace = \"a\"\ndatabase = \"b\"\nusername = \"u\"\npassword = \"${NOPE_PASSWORD}\"\n",
            Format::Toml,
        )
        .expect_err("unset");
        let message = unset.to_string();
        assert!(
            message.contains("environment `prod`") && message.contains("NOPE_PASSWORD"),
            "{message}"
        );

        let top = parse("[defualts]\n", Format::Toml).expect_err("typo");
        assert!(top.to_string().contains("did you mean `defaults`"), "{top}");
        let json = parse(r#"{"environments": [{"name": "x", "connection": {"db_urll": "mem://", "db_ns": "a", "db": "b"}}]}"#, Format::Json)
            .expect_err("typo");
        assert!(json.to_string().contains("did you mean `db_url`"), "{json}");
        let twice = parse("[[environments]]\nname=\"a\"\nurl=\"mem://\"\nnamespace=\"n\"\ndatabase=\"d\"\n[[environments]]\nname=\"a\"\nurl=\"mem://\"\nnamespace=\"n\"\ndatabase=\"d\"\n", Format::Toml)
            .expect_err("duplicate");
        assert!(twice.to_string().contains("defined twice"), "{twice}");
    }

    #[test]
    fn a_password_comes_from_one_place_and_hooks_and_isolation_are_read() {
        let env = |extra: &str| {
            parse(
                &format!(
                    "[[environments]]\nname = \"p\"\nurl = \"ws://x\"\nnamespace = \"a\"\ndatabase = \"b\"\n{extra}"
                ),
                Format::Toml,
            )
        };
        let from_file = env("username = \"u\"\npassword_file = \"secrets/pw\"\n").expect("valid");
        assert_eq!(
            from_file.environments[0].password_source,
            Some(crate::connection::PasswordSource::File("secrets/pw".into()))
        );
        for (extra, says) in [
            (
                "username = \"u\"\npassword = \"x\"\npassword_command = \"vault\"\n",
                "set `password` or `password_command`, not both",
            ),
            (
                "username = \"u\"\npassword_file = \"f\"\npassword_command = \"vault\"\n",
                "set `password_file` or `password_command`, not both",
            ),
            (
                "password_command = \"vault\"\n",
                "`password_command` is set but `username` is not",
            ),
        ] {
            let error = env(extra).expect_err(says).to_string();
            assert!(
                error.contains(says) && error.contains("environment `p`"),
                "{error}"
            );
        }
        let config = parse(
            "[defaults]\nisolate = true\n[hooks]\non_tenant = \"notify\"\ntimeout = \"5s\"\n",
            Format::Toml,
        )
        .expect("valid");
        assert_eq!(config.defaults.isolate, Some(true));
        assert_eq!(config.hooks.on_tenant.as_deref(), Some("notify"));
        assert_eq!(config.hooks.timeout, Some(Duration::from_secs(5)));
        let typo = parse("[hooks]\non_tennant = \"x\"\n", Format::Toml).expect_err("typo");
        assert!(
            typo.to_string().contains("did you mean `on_tenant`"),
            "{typo}"
        );
    }

    #[test]
    fn errors_never_echo_a_password() {
        let secret = "12345678";
        let cases = [
            // A password written without quotes is a number: its type is named, not its value.
            format!(
                "[[environments]]\nname = \"prod\"\nurl = \"ws://db\"\nnamespace = \"a\"\ndatabase = \"b\"\nusername = \"u\"\npassword = {secret}\n"
            ),
            // A syntax error on the password's line: the parser's own message quotes the line.
            format!("[[environments]]\nname = \"prod\"\npassword = \"{secret}\" oops\n"),
            format!("[[environments]]\nname = \"prod\"\npassword = '{secret}\n"),
            format!("[[environments]]\nname = \"prod\"\npassword = {secret}x{secret}\n"),
        ];
        for text in &cases {
            let error = parse(text, Format::Toml).expect_err("invalid");
            let message = error.to_string();
            assert!(!message.contains(secret), "{message}");
            assert!(message.contains("conf/flotilla.toml"), "{message}");
        }
        let number = parse(&cases[0], Format::Toml)
            .expect_err("invalid")
            .to_string();
        assert!(
            number.contains("`password` must be a string, found a number"),
            "{number}"
        );
        let syntax = parse(&cases[1], Format::Toml)
            .expect_err("invalid")
            .to_string();
        assert!(syntax.contains("invalid TOML at line 3"), "{syntax}");
        let json = parse(
            &format!(r#"{{"environments": [{{"name": "x", "connection": {{"db_url": "mem://", "db_ns": "a", "db": "b", "username": "u", "password": {secret}}}}}]}}"#),
            Format::Json,
        )
        .expect_err("number password");
        assert!(!json.to_string().contains(secret), "{json}");
        let broken =
            parse(&format!(r#"{{"password": "{secret}" "#), Format::Json).expect_err("syntax");
        assert!(!broken.to_string().contains(secret), "{broken}");
    }

    #[test]
    fn defaults_take_durations_and_refuse_nonsense() {
        let config = parse(
            "[defaults]\nlock_timeout = \"2m\"\nlease = \"10s\"\nconnect_timeout = 3\nrequest_timeout = \"1.5s\"\nmax_concurrent = 4\n",
            Format::Toml,
        )
        .expect("valid");
        let d = &config.defaults;
        assert_eq!(d.lock_timeout, Some(Duration::from_secs(120)));
        assert_eq!(d.lease, Some(Duration::from_secs(10)));
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(d.request_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(d.max_concurrent, Some(4));
        let legacy = parse("[defaults]\nlock_timeout_secs = 45\n", Format::Toml).expect("valid");
        assert_eq!(legacy.defaults.lock_timeout, Some(Duration::from_secs(45)));
        for bad in [
            "[defaults]\nlock_timeout = \"forever\"\n",
            "[defaults]\nlease = 99999999999\n",
            "[defaults]\nmax_concurrent = -1\n",
            "[defaults]\nlock_timeout = \"1s\"\nlock_timeout_secs = 1\n",
            "[defaults]\nrequest_timeout = true\n",
        ] {
            let error = parse(bad, Format::Toml).expect_err(bad).to_string();
            assert!(error.contains("[defaults]"), "{error}");
        }
    }
}
