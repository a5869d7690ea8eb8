//! The tenant-source seam: where a fleet's tenant ids come from (a file, a command, a
//! service, a database). A source lists tenants, each an id and the fields the source knows
//! of it (a region, a shard server) for the fleet's template; the coordinator validates and
//! expands them. [`parse_listing`] reads the listing formats every text source shares.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde_json::Value;

/// One tenant as a source lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tenant {
    /// The id (validated by the coordinator: letters, digits, `_`, `-`, 1 to 128).
    pub id: String,
    /// What else the source said of it, as strings, for `${FIELD}` in the template.
    pub fields: BTreeMap<String, String>,
}

/// Why a source could not list its tenants.
#[derive(Debug, thiserror::Error)]
#[error("tenant source {source_name}: {message}")]
pub struct SourceError {
    /// The source (as it describes itself; no credentials).
    pub source_name: String,
    /// What went wrong, naming the page, line or id where there is one.
    pub message: String,
}

/// Lists a fleet's tenants. Every call is bounded in time by the implementation.
#[async_trait]
pub trait TenantSource: Send + Sync + fmt::Debug {
    /// What the source is, for messages (a path, a command's program, a URL without
    /// credentials).
    fn describe(&self) -> String;

    /// Every tenant, in the source's order.
    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError>;
}

/// Tenants from text: a JSON array (of ids, or of objects with an `id` and other fields), a
/// JSON object holding such an array under `tenants`, or one id per line (blank lines and
/// `#` comments skipped).
pub fn parse_listing(text: &str) -> Result<Vec<Tenant>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed).map_err(|e| {
            format!(
                "not valid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            )
        })?;
        return tenants_of(&value);
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|id| Tenant {
            id: id.to_owned(),
            fields: BTreeMap::new(),
        })
        .collect())
}

/// Tenants from a JSON array of ids or objects, or an object holding one under `tenants`.
pub fn tenants_of(value: &Value) -> Result<Vec<Tenant>, String> {
    let list = match value {
        Value::Array(list) => list,
        Value::Object(map) => match map.get("tenants") {
            Some(Value::Array(list)) => list,
            _ => {
                return Err(
                    "expected a list of tenants, or an object with a `tenants` list".to_owned(),
                );
            }
        },
        _ => return Err("expected a list of tenants".to_owned()),
    };
    list.iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(id) => Ok(Tenant {
                id: id.clone(),
                fields: BTreeMap::new(),
            }),
            Value::Object(object) => {
                let id = match object.get("id") {
                    Some(Value::String(id)) => id.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return Err(format!("tenant #{} has no string `id`", index + 1)),
                };
                let fields = object
                    .iter()
                    .filter(|(key, _)| key.as_str() != "id")
                    .filter_map(|(key, value)| {
                        let text = match value {
                            Value::String(text) => text.clone(),
                            Value::Number(_) | Value::Bool(_) => value.to_string(),
                            _ => return None,
                        };
                        Some((key.clone(), text))
                    })
                    .collect();
                Ok(Tenant { id, fields })
            }
            _ => Err(format!(
                "tenant #{} is neither an id nor an object",
                index + 1
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_lines_or_json_and_bad_ones_say_where() {
        let lines = parse_listing("acme\n\n# a comment\n  globex \n").expect("lines");
        assert_eq!(
            lines.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["acme", "globex"]
        );
        let objects =
            parse_listing(r#"{"tenants": [{"id": "acme", "region": "eu", "n": 3}, "globex"]}"#)
                .expect("json");
        assert_eq!(
            objects[0].fields.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(objects[0].fields.get("n").map(String::as_str), Some("3"));
        assert_eq!(objects[1].id, "globex");
        let error = parse_listing("[\"a\",\n 7 x]").expect_err("bad json");
        assert!(error.contains("line 2"), "{error}");
        let error = parse_listing(r#"[{"name": "x"}]"#).expect_err("no id");
        assert!(error.contains("tenant #1"), "{error}");
    }
}
