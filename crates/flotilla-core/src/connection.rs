//! Where a target lives and how to sign in to it. Passwords never print.

use std::fmt;

/// A secret string: `Debug` and `Display` print `***`; only [`Secret::expose`] reveals it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to a database driver and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Where a password comes from when the configuration does not hold it: read when a
/// deployment (or a status, history or lock command) first needs it, once per source, and
/// handed to the driver as a [`Secret`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    /// The file's contents (`password_file`), without the trailing newline.
    File(std::path::PathBuf),
    /// What a shell command prints on standard output (`password_command`), without the
    /// trailing newline; say a vault CLI. A fleet's tenant values reach it only as the
    /// variables in `env` (`FLOTILLA_TENANT`, `FLOTILLA_TENANT_<FIELD>`), never in `line`.
    Command {
        /// The shell line.
        line: String,
        /// Variables added to its environment.
        env: Vec<(String, String)>,
    },
}

impl PasswordSource {
    /// The shell line `line`, with nothing added to its environment.
    pub fn command(line: impl Into<String>) -> Self {
        PasswordSource::Command {
            line: line.into(),
            env: Vec::new(),
        }
    }
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::File(path) => f.debug_tuple("File").field(path).finish(),
            // A command line may carry a token of its own (`VAULT_TOKEN=… vault …`).
            PasswordSource::Command { .. } => f.write_str("Command(***)"),
        }
    }
}

impl PasswordSource {
    /// The configuration key it was written as.
    pub fn key(&self) -> &'static str {
        match self {
            PasswordSource::File(_) => "password_file",
            PasswordSource::Command { .. } => "password_command",
        }
    }
}

/// The level at which a user is defined in the database.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AuthLevel {
    /// A root (system) user.
    #[default]
    Root,
    /// A user defined on the target's namespace.
    Namespace,
    /// A user defined on the target's database.
    Database,
}

/// A user name and password at some [`AuthLevel`].
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
    /// Where the user is defined.
    pub level: AuthLevel,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("level", &self.level)
            .finish()
    }
}

/// One database: server URL, namespace, database and optional credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    /// `mem://`, `surrealkv://path`, `ws://host:port`, `wss://…`, `http(s)://…`.
    pub url: String,
    /// The namespace.
    pub namespace: String,
    /// The database.
    pub database: String,
    /// How to sign in; `None` for an unauthenticated (e.g. embedded) datastore.
    pub credentials: Option<Credentials>,
}

impl Connection {
    /// A connection without credentials.
    pub fn new(
        url: impl Into<String>,
        namespace: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            namespace: namespace.into(),
            database: database.into(),
            credentials: None,
        }
    }

    /// The same connection signing in as `username` at `level`.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<Secret>,
        level: AuthLevel,
    ) -> Self {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
            level,
        });
        self
    }

    /// The URL with any `user:password@` part masked, safe to print.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The URL's scheme (`mem`, `ws`, …), lowercased.
    pub fn scheme(&self) -> String {
        self.url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// Masks the user-info part of a URL (`ws://user:pw@host` → `ws://***@host`).
///
/// The user-info ends at the last `@` of the URL: a password may itself hold `/`, `?`, `#` or
/// `@`, so the first of those cannot be trusted to end the authority. A URL whose path or
/// query holds an `@` is masked up to it too; hiding a little too much is the safe mistake.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    match rest.rfind('@') {
        Some(at) => match scheme {
            Some(scheme) => format!("{scheme}://***@{}", &rest[at + 1..]),
            None => format!("***@{}", &rest[at + 1..]),
        },
        None => url.to_owned(),
    }
}

impl Connection {
    /// `text` (a driver's message, say) with this connection's secrets masked: the password,
    /// the URL's user-info, and the URL as written when it has user-info. Use it on any text
    /// that came from outside flotilla before it can be printed.
    pub fn scrub(&self, text: &str) -> String {
        let mut scrubbed = text.to_owned();
        let mut secrets: Vec<String> = Vec::new();
        if redact_url(&self.url) != self.url {
            secrets.push(self.url.clone());
            let rest = self
                .url
                .split_once("://")
                .map_or(self.url.as_str(), |(_, r)| r);
            if let Some(at) = rest.rfind('@') {
                let user_info = &rest[..at];
                secrets.push(user_info.to_owned());
                if let Some((_, password)) = user_info.split_once(':') {
                    secrets.push(password.to_owned());
                }
            }
        }
        if let Some(credentials) = &self.credentials {
            secrets.push(credentials.password.expose().to_owned());
        }
        // Longest first, so a password inside the URL does not leave the URL half-masked.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            // A one- or two-character "secret" would mask half the message and hide nothing.
            if secret.chars().count() >= 3 {
                scrubbed = scrubbed.replace(&secret, "***");
            }
        }
        scrubbed
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.redacted_url())
            .field("namespace", &self.namespace)
            .field("database", &self.database)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.redacted_url(),
            self.namespace,
            self.database
        )?;
        if let Some(credentials) = &self.credentials {
            write!(f, " as {}", credentials.username)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_password() {
        let connection = Connection::new("ws://admin:urlpass@db.internal:8000", "prod", "app")
            .with_credentials("admin", "hunter2-secret", AuthLevel::Namespace);
        for rendered in [
            format!("{connection:?}"),
            format!("{connection:#?}"),
            connection.to_string(),
            format!("{:?}", connection.credentials),
            format!("{}", Secret::new("hunter2-secret")),
        ] {
            assert!(!rendered.contains("hunter2-secret"), "{rendered}");
            assert!(!rendered.contains("urlpass"), "{rendered}");
        }
        assert!(
            connection
                .to_string()
                .contains("db.internal:8000/prod/app as admin")
        );
    }

    #[test]
    fn redacts_user_info_whatever_the_password_holds() {
        assert_eq!(redact_url("ws://u:p@h:1/rpc"), "ws://***@h:1/rpc");
        assert_eq!(redact_url("mem://"), "mem://");
        assert_eq!(redact_url("surrealkv:///tmp/db"), "surrealkv:///tmp/db");
        for password in ["pa/ss", "pa?ss", "pa#ss", "pa@ss", "p/a?s#s@"] {
            let url = format!("wss://user:{password}@db.example:8000/rpc");
            let redacted = redact_url(&url);
            assert_eq!(redacted, "wss://***@db.example:8000/rpc", "{url}");
            assert!(!redacted.contains(password));
        }
        assert_eq!(redact_url("user:secret@host"), "***@host");
    }

    #[test]
    fn scrub_masks_every_form_of_the_secrets() {
        let connection = Connection::new("ws://admin:url/pass@db:8000", "ns", "db")
            .with_credentials("admin", "hunter2-secret", AuthLevel::Root);
        let message = "invalid URL ws://admin:url/pass@db:8000 (password url/pass); sign-in with hunter2-secret failed";
        let scrubbed = connection.scrub(message);
        for secret in ["url/pass", "hunter2-secret", "admin:url"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("sign-in with *** failed"), "{scrubbed}");
    }
}
