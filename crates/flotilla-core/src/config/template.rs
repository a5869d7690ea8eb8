//! A fleet's template read for one tenant. What a tenant source says is input, not
//! configuration: `${tenant}` (the id) and `${tenant.FIELD}` (a field the source returned)
//! are the only ways its values reach a template, and each is checked where it lands:
//!
//! - in `password_command`, a tenant value is never put into the shell line: the line names
//!   a variable (`"${FLOTILLA_TENANT}"`, `"${FLOTILLA_TENANT_REGION}"`) and the value travels
//!   in the command's environment, so no quote, `$(…)` or `;` of it is ever shell syntax;
//! - everywhere else (url, namespace, database, tags, …) a value must match its field's
//!   pattern — `[fleets.fields]`, or by default the tenant-id rule `[A-Za-z0-9_-]{1,128}` —
//!   so it cannot carry `/ @ : # ?`, whitespace or control characters;
//! - in `url`, a tenant value may stand in the host (the part between `://` and the path)
//!   only when the fleet declares a pattern for it: a shared credential goes only to hosts
//!   the operator allowed;
//! - `${NAME}` is the process's variable, never a field of the same name.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

/// The most bytes one tenant value may have when it travels to a command.
const MAX_COMMAND_VALUE: usize = 4096;

/// The variable a tenant value reaches a command as: `FLOTILLA_TENANT` for the id,
/// `FLOTILLA_TENANT_<FIELD>` (upper case, other characters `_`) for a field.
pub fn command_variable(field: Option<&str>) -> String {
    match field {
        None => "FLOTILLA_TENANT".to_owned(),
        Some(field) => format!(
            "FLOTILLA_TENANT_{}",
            field
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                })
                .collect::<String>()
        ),
    }
}

/// The patterns a fleet declares for its tenant values (`[fleets.fields]`), keyed by field
/// name (`tenant` for the id); each matches a whole value.
#[derive(Clone, Debug, Default)]
pub struct FieldPatterns(BTreeMap<String, Regex>);

impl PartialEq for FieldPatterns {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((a, x), (b, y))| a == b && x.as_str() == y.as_str())
    }
}

impl FieldPatterns {
    /// Reads `[fleets.fields]` of fleet `fleet`.
    pub(super) fn read(fleet: &str, raw: Option<&Value>) -> Result<Self, String> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let Value::Object(map) = raw else {
            return Err(format!(
                "fleet `{fleet}`: `fields` must be a table of patterns"
            ));
        };
        let mut patterns = BTreeMap::new();
        for (name, pattern) in map {
            let Value::String(pattern) = pattern else {
                return Err(format!(
                    "fleet `{fleet}`: `fields.{name}` must be a pattern (a string)"
                ));
            };
            let compiled = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| format!("fleet `{fleet}`: `fields.{name}` is not a pattern: {e}"))?;
            patterns.insert(name.clone(), compiled);
        }
        Ok(Self(patterns))
    }

    fn declared(&self, field: &str) -> Option<&Regex> {
        self.0.get(field)
    }
}

/// Whether `value` is fit for a template by the default rule (the tenant-id rule).
fn safe_by_default(value: &str) -> bool {
    crate::config::validate_tenant_id(value).is_ok()
}

/// One tenant, as a template sees it.
pub(super) struct Tenant<'a> {
    pub(super) id: &'a str,
    pub(super) fields: &'a BTreeMap<String, String>,
    pub(super) patterns: &'a FieldPatterns,
}

/// A template read for one tenant: tenant values in place, process variables (`${NAME}`)
/// left for the usual interpolation, and the variables `password_command` needs.
pub(super) struct Rendered {
    pub(super) template: Map<String, Value>,
    pub(super) command_env: Vec<(String, String)>,
}

/// `template` with `tenant`'s values in place; `lookup` is the process's variables (only to
/// say, when a name is unset but is a field, how to write the field).
pub(super) fn render(
    template: &Map<String, Value>,
    tenant: &Tenant<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Rendered, String> {
    let mut command_env = Vec::new();
    let mut out = Map::with_capacity(template.len());
    for (key, value) in template {
        let rendered = match value {
            Value::String(text) => {
                let env = (key == "password_command").then_some(&mut command_env);
                Value::String(render_text(key, text, tenant, lookup, env)?)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(text) => {
                            render_text(key, text, tenant, lookup, None).map(Value::String)
                        }
                        other => Ok(other.clone()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        };
        out.insert(key.clone(), rendered);
    }
    Ok(Rendered {
        template: out,
        command_env,
    })
}

/// How the shell would read the text so far.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Unquoted,
    Single,
    Double,
}

impl Quoting {
    /// The state after `text`, read from this one.
    fn after(mut self, text: &str) -> Self {
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            self = match (self, c) {
                (Quoting::Unquoted, '\'') => Quoting::Single,
                (Quoting::Unquoted, '"') => Quoting::Double,
                (Quoting::Single, '\'') | (Quoting::Double, '"') => Quoting::Unquoted,
                (Quoting::Unquoted | Quoting::Double, '\\') => {
                    chars.next();
                    self
                }
                (state, _) => state,
            };
        }
        self
    }
}

/// Whether byte `at` of a URL template lies in its authority (user, host, port).
fn in_authority(text: &str, at: usize) -> bool {
    let Some(scheme_end) = text.find("://") else {
        return false;
    };
    let start = scheme_end + 3;
    let end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    (start..end).contains(&at)
}

/// One string of the template, for key `key`. `command_env` is given for a command line:
/// tenant values then become variable references and their values are collected there.
fn render_text(
    key: &str,
    text: &str,
    tenant: &Tenant<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    mut command_env: Option<&mut Vec<(String, String)>>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut quoting = Quoting::Unquoted;
    let mut at = 0;
    while let Some(found) = text[at..].find('$') {
        let dollar = at + found;
        let literal = &text[at..dollar];
        out.push_str(literal);
        quoting = quoting.after(literal);
        let after = &text[dollar + 1..];
        if after.starts_with('$') {
            out.push_str("$$");
            at = dollar + 2;
            continue;
        }
        let Some(end) = after.strip_prefix('{').and_then(|body| body.find('}')) else {
            out.push('$');
            at = dollar + 1;
            continue;
        };
        let expression = &after[1..1 + end];
        // `$`, `{`, the expression, `}`.
        let next = dollar + end + 3;
        let (name, default) = match expression.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expression, None),
        };
        let field = match name.strip_prefix("tenant") {
            Some("") => None,
            Some(rest) if rest.starts_with('.') => Some(&rest[1..]),
            _ => {
                // A process variable: left for interpolation, but never a field's stand-in.
                if lookup(name).is_none() && default.is_none() && tenant.fields.contains_key(name) {
                    return Err(format!(
                        "`{key}` names ${{{name}}}, which is not a set variable; `{name}` is a field of the tenant source: write ${{tenant.{name}}} (fields never stand in for the process's variables)"
                    ));
                }
                out.push_str(&text[dollar..next]);
                quoting = quoting.after(&text[dollar..next]);
                at = next;
                continue;
            }
        };
        let placeholder = &text[dollar..next];
        let value = tenant_value(key, placeholder, field, default, tenant)?;
        match command_env.as_deref_mut() {
            Some(env) => {
                out.push_str(&command_reference(
                    key,
                    placeholder,
                    field,
                    value,
                    quoting,
                    env,
                )?);
            }
            None => {
                checked(
                    key,
                    placeholder,
                    field,
                    value,
                    tenant,
                    key == "url" && in_authority(text, dollar),
                )?;
                out.push_str(&value.replace('$', "$$"));
            }
        }
        at = next;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// The value `placeholder` (`${tenant}` or `${tenant.FIELD[:-default]}`) stands for.
fn tenant_value<'t>(
    key: &str,
    placeholder: &str,
    field: Option<&str>,
    default: Option<&'t str>,
    tenant: &'t Tenant<'_>,
) -> Result<&'t str, String> {
    let Some(field) = field else {
        return Ok(tenant.id);
    };
    match (tenant.fields.get(field), default) {
        (Some(value), _) => Ok(value.as_str()),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(format!(
            "`{key}` names {placeholder}, but the source gave no field `{field}` for this tenant; give it, or write ${{tenant.{field}:-default}}"
        )),
    }
}

/// In a command line: the reference to the variable `value` travels in (collected into
/// `env`), quoted as the line around it needs.
fn command_reference(
    key: &str,
    placeholder: &str,
    field: Option<&str>,
    value: &str,
    quoting: Quoting,
    env: &mut Vec<(String, String)>,
) -> Result<String, String> {
    if value.len() > MAX_COMMAND_VALUE || value.contains('\0') {
        return Err(format!(
            "`{key}`: {placeholder} is over {MAX_COMMAND_VALUE} bytes or holds a NUL"
        ));
    }
    let variable = command_variable(field);
    // `$$` is the interpolation's escape for a `$` the command line keeps.
    let reference = match quoting {
        Quoting::Unquoted => format!("\"$${{{variable}}}\""),
        Quoting::Double => format!("$${{{variable}}}"),
        Quoting::Single => {
            return Err(format!(
                "`{key}` puts {placeholder} inside single quotes, where the shell cannot expand it; use double quotes or none"
            ));
        }
    };
    if !env.iter().any(|(name, _)| *name == variable) {
        env.push((variable, value.to_owned()));
    }
    Ok(reference)
}

/// Anywhere but a command line: `value` must match its field's pattern (or the default
/// rule), and may stand in a URL's host (`in_host`) only with a declared pattern.
fn checked(
    key: &str,
    placeholder: &str,
    field: Option<&str>,
    value: &str,
    tenant: &Tenant<'_>,
    in_host: bool,
) -> Result<(), String> {
    let pattern = tenant.patterns.declared(field.unwrap_or("tenant"));
    if in_host && pattern.is_none() {
        return Err(format!(
            "`url` puts {placeholder} in the host, so the tenant source would choose where the credentials go; declare the hosts it may choose with a pattern, `[fleets.fields] {} = \"…\"`",
            field.unwrap_or("tenant")
        ));
    }
    let fits = match pattern {
        Some(pattern) => pattern.is_match(value),
        None => safe_by_default(value),
    };
    if fits {
        return Ok(());
    }
    Err(format!(
        "`{key}`: the value of {placeholder} (`{}`) does not match {}",
        value.chars().take(80).collect::<String>().escape_debug(),
        match pattern {
            Some(pattern) => format!("its pattern `{}`", pattern.as_str()),
            None => "the default rule: letters, digits, `_` and `-`, 1 to 128 characters (declare a pattern in [fleets.fields] to allow others)".to_owned(),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant_with<'a>(
        fields: &'a BTreeMap<String, String>,
        patterns: &'a FieldPatterns,
    ) -> Tenant<'a> {
        Tenant {
            id: "acme",
            fields,
            patterns,
        }
    }

    fn one(key: &str, text: &str, fields: &[(&str, &str)]) -> Result<String, String> {
        let fields: BTreeMap<String, String> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let patterns = FieldPatterns::default();
        render_text(key, text, &tenant_with(&fields, &patterns), &|_| None, None)
    }

    #[test]
    fn tenant_values_are_checked_where_they_land() {
        assert_eq!(
            one("namespace", "tenant_${tenant}", &[]).as_deref(),
            Ok("tenant_acme")
        );
        for hostile in [
            "a/b", "a@b", "a:b", "a#b", "a?b", "a b", "a\nb", "a\u{7}b", "$(id)", "a;b",
        ] {
            let error =
                one("database", "${tenant.note}", &[("note", hostile)]).expect_err("refused");
            assert!(error.contains("does not match"), "{hostile:?}: {error}");
        }
        let error =
            one("url", "ws://${tenant.shard}.db:8000", &[("shard", "db3")]).expect_err("refused");
        assert!(error.contains("in the host"), "{error}");
        assert_eq!(
            one("url", "surrealkv://data/${tenant}", &[]).as_deref(),
            Ok("surrealkv://data/acme")
        );
    }

    #[test]
    fn fields_never_stand_in_for_process_variables() {
        let error =
            one("password", "${DB_PASSWORD}", &[("DB_PASSWORD", "x")]).expect_err("refused");
        assert!(error.contains("${tenant.DB_PASSWORD}"), "{error}");
        assert_eq!(
            one("password", "${DB_PASSWORD}", &[]).as_deref(),
            Ok("${DB_PASSWORD}")
        );
    }

    #[test]
    fn commands_name_variables_by_quoting() {
        let fields = BTreeMap::from([("note".to_owned(), "$(touch x)".to_owned())]);
        let patterns = FieldPatterns::default();
        let tenant = tenant_with(&fields, &patterns);
        let mut env = Vec::new();
        let line = render_text(
            "password_command",
            "./pw.sh ${tenant} \"n=${tenant.note}\"",
            &tenant,
            &|_| None,
            Some(&mut env),
        )
        .unwrap_or_default();
        assert_eq!(
            line,
            "./pw.sh \"$${FLOTILLA_TENANT}\" \"n=$${FLOTILLA_TENANT_NOTE}\""
        );
        assert_eq!(
            env,
            [
                ("FLOTILLA_TENANT".to_owned(), "acme".to_owned()),
                ("FLOTILLA_TENANT_NOTE".to_owned(), "$(touch x)".to_owned())
            ]
        );
        let error = render_text(
            "password_command",
            "echo '${tenant}'",
            &tenant,
            &|_| None,
            Some(&mut env),
        )
        .expect_err("refused");
        assert!(error.contains("single quotes"), "{error}");
    }
}
