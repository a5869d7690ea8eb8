//! `[[fleets]]`: a fleet is a source of tenant ids and a template that turns each tenant into
//! an environment. The source is kept as written (a backend or the coordinator lists it);
//! the template is kept raw and read per tenant, with `${tenant}` and the fields the source
//! returned for that tenant resolved before the process's variables.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::environment::environment;
use super::template::{self, FieldPatterns, Tenant};
use super::{EnvironmentConfig, Format, TOML_ENV_KEYS, check_keys, validate_name};
use crate::connection::PasswordSource;

/// One `[[fleets]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// The fleet's name: every environment it yields carries it as a tag.
    pub name: String,
    /// `kind` (`static`, `file`, `command`, `http`, `surrealdb`) and that kind's settings,
    /// as written (strings not yet interpolated).
    pub source: Map<String, Value>,
    /// An `[[environments]]` entry with `${tenant}` and `${tenant.FIELD}` in its strings;
    /// `name` defaults to `${tenant}`.
    template: Map<String, Value>,
    /// `[fleets.fields]`: the pattern each tenant value must match (see [`template`]).
    patterns: FieldPatterns,
}

const FLEET_KEYS: &[&str] = &["name", "source", "template", "fields"];

/// The id rule go-bricks uses: letters, digits, `_` and `-`, 1 to 128 characters.
pub fn validate_tenant_id(id: &str) -> Result<(), String> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a tenant id: use letters, digits, `_` and `-`, 1 to 128 characters",
            id.chars().take(140).collect::<String>().escape_debug()
        ))
    }
}

impl FleetConfig {
    /// Reads fleet number `index` (0-based).
    pub(super) fn read(raw: &Value, index: usize) -> Result<Self, String> {
        let Value::Object(map) = raw else {
            return Err(format!("fleet #{} must be a table", index + 1));
        };
        check_keys(map, FLEET_KEYS, &format!("in fleet #{}", index + 1))?;
        let name = match map.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => return Err(format!("fleet #{} needs a `name`", index + 1)),
        };
        validate_name(&name).map_err(|e| format!("fleet `{name}`: {e}"))?;
        let source = match map.get("source") {
            Some(Value::Object(source)) if source.contains_key("kind") => source.clone(),
            _ => {
                return Err(format!(
                    "fleet `{name}` needs a `source` table with a `kind`: static, file, command, http or surrealdb"
                ));
            }
        };
        let mut template = match map.get("template") {
            Some(Value::Object(template)) => template.clone(),
            _ => return Err(format!("fleet `{name}` needs a `template` table")),
        };
        check_keys(
            &template,
            TOML_ENV_KEYS,
            &format!("in fleet `{name}`'s template"),
        )?;
        template
            .entry("name")
            .or_insert_with(|| Value::String("${tenant}".to_owned()));
        let patterns = FieldPatterns::read(&name, map.get("fields"))?;
        Ok(Self {
            name,
            source,
            template,
            patterns,
        })
    }

    /// The environment tenant `id` becomes: the template read with `${tenant}` = `id` and
    /// `${tenant.FIELD}` from `fields` (what the source said of the tenant, each value
    /// checked where it lands), then `lookup` (the process's variables); tagged with the
    /// fleet's name.
    pub fn environment(
        &self,
        id: &str,
        fields: &BTreeMap<String, String>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<EnvironmentConfig, String> {
        validate_tenant_id(id).map_err(|e| format!("fleet `{}`: {e}", self.name))?;
        let tenant = Tenant {
            id,
            fields,
            patterns: &self.patterns,
        };
        let in_tenant = |e: String| format!("fleet `{}`, tenant `{id}`: {e}", self.name);
        let rendered = template::render(&self.template, &tenant, lookup).map_err(in_tenant)?;
        let raw = Value::Object(rendered.template);
        let mut environment = environment(&raw, 0, Format::Toml, lookup).map_err(in_tenant)?;
        if let Some(PasswordSource::Command { env, .. }) = &mut environment.password_source {
            *env = rendered.command_env;
        }
        environment.tenant = Some(id.to_owned());
        environment.tenant_fields.clone_from(fields);
        if !environment.tags.contains(&self.name) {
            environment.tags.push(self.name.clone());
        }
        Ok(environment)
    }
}
