//! Tenant sources that need no database backend: a list in the configuration, a file, a
//! command's output, an HTTP endpoint with cursor paging. Each is bounded in time.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_core::Secret;
use flotilla_runner::fleet::{SourceError, Tenant, TenantSource, parse_listing, tenants_of};
use serde_json::Value;

/// Ids written in the configuration.
#[derive(Clone, Debug)]
pub struct StaticSource(pub Vec<String>);

#[async_trait]
impl TenantSource for StaticSource {
    fn describe(&self) -> String {
        "a static list".to_owned()
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError> {
        Ok(self
            .0
            .iter()
            .map(|id| Tenant {
                id: id.clone(),
                fields: Default::default(),
            })
            .collect())
    }
}

/// A file: one id per line, or JSON (see [`parse_listing`]).
#[derive(Clone, Debug)]
pub struct FileSource(pub PathBuf);

#[async_trait]
impl TenantSource for FileSource {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError> {
        let fail = |message: String| SourceError {
            source_name: self.describe(),
            message,
        };
        let text =
            std::fs::read_to_string(&self.0).map_err(|e| fail(format!("cannot read: {e}")))?;
        parse_listing(&text).map_err(fail)
    }
}

/// A command run with `sh -c`, whose standard output lists the tenants (lines or JSON). It
/// must finish within `timeout` (it is killed then) and exit 0.
#[derive(Clone, Debug)]
pub struct CommandSource {
    /// The command line.
    pub command: String,
    /// The directory it runs in.
    pub dir: PathBuf,
    /// How long it may run.
    pub timeout: Duration,
}

#[async_trait]
impl TenantSource for CommandSource {
    fn describe(&self) -> String {
        format!(
            "the command `{}`",
            self.command.split_whitespace().next().unwrap_or_default()
        )
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError> {
        let fail = |message: String| SourceError {
            source_name: self.describe(),
            message,
        };
        let (command, dir, timeout) = (self.command.clone(), self.dir.clone(), self.timeout);
        let output = tokio::task::spawn_blocking(move || {
            crate::command::run_bounded(&command, &dir, timeout)
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(fail)?;
        parse_listing(&output).map_err(|e| fail(format!("its output: {e}")))
    }
}

/// An HTTP endpoint listing tenants a page at a time: `GET URL`, then `GET URL?cursor=C` with
/// the cursor the previous page returned, until a page returns none. A page is a JSON object
/// with the tenants under `tenants` (ids or objects with an `id`) and the next cursor under
/// `next_cursor`. A bearer token is sent when given. Each page is tried up to `attempts`
/// times, with backoff, when the endpoint cannot be reached, answers 429 or 5xx, or does not
/// answer within `timeout`; anything else fails at once, naming the page.
#[derive(Clone, Debug)]
pub struct HttpSource {
    /// The endpoint.
    pub url: String,
    /// The bearer token (never printed).
    pub token: Option<Secret>,
    /// Attempts per page.
    pub attempts: u32,
    /// How long one request may take.
    pub timeout: Duration,
    /// The first pause between attempts (doubling).
    pub backoff: Duration,
}

/// The most pages a listing may have: a source whose cursor never ends is an error.
const MAX_PAGES: usize = 1_000_000;

impl HttpSource {
    /// `url`, with `token`, 4 attempts a page, 30 s a request, backoff from 200 ms.
    pub fn new(url: impl Into<String>, token: Option<Secret>) -> Self {
        Self {
            url: url.into(),
            token,
            attempts: 4,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(200),
        }
    }

    async fn page(
        &self,
        client: &reqwest::Client,
        cursor: Option<&str>,
        number: usize,
    ) -> Result<Value, String> {
        let mut pause = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts.max(1) {
            let url = match cursor {
                None => self.url.clone(),
                Some(cursor) => {
                    let join = if self.url.contains('?') { '&' } else { '?' };
                    format!("{}{join}cursor={}", self.url, percent_encode(cursor))
                }
            };
            let mut request = client.get(url).timeout(self.timeout);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token.expose());
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let body = response.bytes().await.map_err(|e| {
                        format!("page {number}: reading the body: {}", without_url(&e))
                    })?;
                    return serde_json::from_slice(&body)
                        .map_err(|e| format!("page {number}: not JSON: {e}"));
                }
                Ok(response) => {
                    let status = response.status();
                    last = format!("page {number}: HTTP {status}");
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        return Err(last);
                    }
                }
                Err(error) => last = format!("page {number}: {}", without_url(&error)),
            }
            if attempt < self.attempts {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        Err(format!("{last} (after {} attempts)", self.attempts.max(1)))
    }
}

/// `text` for a query string: unreserved characters as they are, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// A reqwest error's text without its URL (which may carry a cursor or credentials).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "no answer in time"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[async_trait]
impl TenantSource for HttpSource {
    fn describe(&self) -> String {
        flotilla_core::redact_url(&self.url)
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError> {
        let fail = |message: String| SourceError {
            source_name: self.describe(),
            message,
        };
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| fail(without_url(&e)))?;
        let mut tenants = Vec::new();
        let mut cursor: Option<String> = None;
        for number in 1..=MAX_PAGES {
            let page = self
                .page(&client, cursor.as_deref(), number)
                .await
                .map_err(fail)?;
            tenants.extend(tenants_of(&page).map_err(|e| fail(format!("page {number}: {e}")))?);
            let next = match page.get("next_cursor") {
                Some(Value::String(next)) if !next.is_empty() => Some(next.clone()),
                _ => None,
            };
            if next.is_none() {
                return Ok(tenants);
            }
            if next == cursor {
                return Err(fail(format!("page {number} returned its own cursor again")));
            }
            cursor = next;
        }
        Err(fail(format!("more than {MAX_PAGES} pages")))
    }
}
