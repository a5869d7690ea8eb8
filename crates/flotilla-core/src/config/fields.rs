//! Reading one table of a configuration file, field by field: each getter checks the kind of
//! value, interpolates `${VAR}` in strings, and words its error with the table's name and the
//! key — never the value, which may be a secret.

use std::time::Duration;

use serde_json::{Map, Value};

use super::interpolate;

/// A table of settings being read.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// Where the table is, for messages: "environment `prod`", "in [defaults]".
    place: String,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The values may be secrets: only where the table is.
        f.debug_struct("Fields")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl<'a> Fields<'a> {
    /// Reads `map`, named `place` in messages, with variables from `lookup`.
    pub fn new(
        map: &'a Map<String, Value>,
        place: impl Into<String>,
        lookup: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Self {
            map,
            place: place.into(),
            lookup,
        }
    }

    /// `problem`, said of this table.
    pub fn problem(&self, problem: &str) -> String {
        format!("{}: {problem}", self.place)
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> String {
        format!(
            "{}: `{key}` must be {expected}, found {}",
            self.place,
            kind(found)
        )
    }

    /// A string, interpolated; `None` when absent.
    pub fn text(&self, key: &str) -> Result<Option<String>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(value)) => interpolate(value, self.lookup).map(Some).map_err(|variable| {
                format!(
                    "{}: variable {variable} is not set (in `{key}`); set it or write ${{{variable}:-default}}",
                    self.place
                )
            }),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    /// A string that must be there and not empty.
    pub fn required(&self, key: &str) -> Result<String, String> {
        self.text(key)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{}: `{key}` is required", self.place))
    }

    /// `true` or `false`; `default` when absent.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    /// A whole number that fits `T`; `None` when absent.
    pub fn whole<T: TryFrom<i64>>(&self, key: &str) -> Result<Option<T>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| T::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("{}: `{key}` is out of range", self.place)),
            Some(other) => Err(self.wrong(key, "a whole number", other)),
        }
    }

    /// Any number; `None` when absent.
    pub fn number(&self, key: &str) -> Result<Option<f64>, String> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong(key, "a number", other)),
        }
    }

    /// A duration (`"30s"`, `"500ms"`, or a number of seconds); `None` when absent.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, String> {
        let parsed = match self.map.get(key) {
            None => return Ok(None),
            Some(Value::String(text)) => crate::duration::parse_duration(text),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(|secs| secs.to_string())
                .ok_or_else(String::new)
                .and_then(|secs| crate::duration::parse_duration(&secs)),
            Some(other) => return Err(self.wrong(key, "a duration like \"30s\"", other)),
        };
        parsed
            .map(Some)
            .map_err(|problem| format!("{}: `{key}`: {problem}", self.place))
    }

    /// A connection: `url`, `namespace`, `database`, and `username` with `password` (and
    /// `auth`), as an `[[environments]]` entry writes them.
    pub fn connection(&self) -> Result<crate::connection::Connection, String> {
        let (connection, source) = super::environment::connection(self, super::Format::Toml)?;
        match source {
            None => Ok(connection),
            Some(source) => Err(self.problem(&format!("`{}` is not read here", source.key()))),
        }
    }

    /// A list of strings; empty when absent.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        match self.map.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{}: `{key}` must be strings", self.place))
                })
                .collect(),
            Some(other) => Err(self.wrong(key, "a list", other)),
        }
    }
}

/// What kind of value `value` is, for messages: the value itself may be a secret (a password
/// written without quotes is a number), so it is never echoed.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}
