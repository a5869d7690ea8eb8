//! Passwords read from a file or a command (`password_file`, `password_command`): read when a
//! deployment or a command first needs them, each distinct source once (a thousand tenants
//! sharing one file read it once), a few commands at a time, and put into each environment's
//! connection as a [`Secret`]. What a source gives is never printed; a source that fails
//! names the environment and the key, not the command line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use flotilla_core::config::EnvironmentConfig;
use flotilla_core::{PasswordSource, Secret};
use futures::StreamExt;

/// Password commands running at once.
const COMMAND_CONCURRENCY: usize = 8;

/// How long a password command may run before it is killed.
pub const PASSWORD_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A password source that gave nothing usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("environment `{environment}`: `{key}` {problem}")]
pub struct PasswordError {
    /// The (first) environment whose source it is.
    pub environment: String,
    /// `password_file` or `password_command`.
    pub key: &'static str,
    /// What went wrong (never the password, never the command line).
    pub problem: String,
}

/// `environments` with every password source read into its connection; borrowed unchanged
/// when none has a source.
pub async fn resolve_passwords(
    environments: &[EnvironmentConfig],
) -> Result<Cow<'_, [EnvironmentConfig]>, PasswordError> {
    if environments.iter().all(|e| e.password_source.is_none()) {
        return Ok(Cow::Borrowed(environments));
    }
    let mut first_user: HashMap<&PasswordSource, &str> = HashMap::new();
    for environment in environments {
        if let Some(source) = &environment.password_source {
            first_user.entry(source).or_insert(&environment.name);
        }
    }
    let read: Vec<(&PasswordSource, Result<Secret, PasswordError>)> =
        futures::stream::iter(first_user)
            .map(|(source, environment)| async move { (source, read(source, environment).await) })
            .buffer_unordered(COMMAND_CONCURRENCY)
            .collect()
            .await;
    let mut passwords = HashMap::with_capacity(read.len());
    for (source, password) in read {
        passwords.insert(source, password?);
    }
    Ok(Cow::Owned(
        environments
            .iter()
            .map(|environment| {
                let mut resolved = environment.clone();
                if let Some(source) = resolved.password_source.take()
                    && let Some(credentials) = resolved.connection.credentials.as_mut()
                {
                    credentials.password = passwords[&source].clone();
                }
                resolved
            })
            .collect(),
    ))
}

/// One environment with its password source read.
pub(crate) async fn resolve_one(
    environment: &EnvironmentConfig,
) -> Result<Cow<'_, EnvironmentConfig>, PasswordError> {
    if environment.password_source.is_none() {
        return Ok(Cow::Borrowed(environment));
    }
    let mut resolved = resolve_passwords(std::slice::from_ref(environment))
        .await?
        .into_owned();
    Ok(Cow::Owned(resolved.remove(0)))
}

async fn read(source: &PasswordSource, environment: &str) -> Result<Secret, PasswordError> {
    let fail = |problem: String| PasswordError {
        environment: environment.to_owned(),
        key: source.key(),
        problem,
    };
    let text = match source {
        PasswordSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| fail(format!("{}: cannot read: {e}", path.display())))?,
        PasswordSource::Command { line, env } => {
            let (line, env) = (line.clone(), env.clone());
            tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, String)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                crate::command::run_with(
                    &line,
                    std::path::Path::new(""),
                    PASSWORD_COMMAND_TIMEOUT,
                    &env,
                    None,
                    crate::command::PASSWORD_OUTPUT,
                )
            })
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(format!("failed: {e}")))?
        }
    };
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(fail("gave an empty password".to_owned()));
    }
    Ok(Secret::new(password))
}
