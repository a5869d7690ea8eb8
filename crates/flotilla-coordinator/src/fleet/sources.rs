//! Tenant sources that need no database backend: a list in the configuration, a file, a
//! command's output, an HTTP endpoint with cursor paging. Each is bounded in time.

use std::collections::HashSet;
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

/// Whether `word` is a shell assignment (`NAME=value`).
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
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
        // The program, never the words before it: `TOKEN=… ./list` sets a variable.
        let program = self
            .command
            .split_whitespace()
            .find(|word| !is_assignment(word))
            .unwrap_or_default();
        format!("the command `{program}`")
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError> {
        let fail = |message: String| SourceError {
            source_name: self.describe(),
            message,
        };
        let (command, dir, timeout) = (self.command.clone(), self.dir.clone(), self.timeout);
        let output = tokio::task::spawn_blocking(move || {
            crate::command::run_bounded(&command, &dir, timeout, crate::command::LISTING_OUTPUT)
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
const MAX_PAGES: usize = 100_000;
/// The most tenants one listing may yield.
pub(crate) const MAX_TENANTS: usize = 1_000_000;
/// The most bytes one page may have.
const MAX_PAGE_BYTES: usize = 16 << 20;
/// The longest pause between two attempts at a page.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// The most a whole listing may spend pausing between attempts.
const MAX_PAUSES: Duration = Duration::from_secs(60);

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
        paused: &mut Duration,
    ) -> Result<Value, String> {
        let mut pause = self.backoff.min(MAX_PAUSE);
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
                    let body = body(response, number).await?;
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
                if *paused + pause > MAX_PAUSES {
                    return Err(format!(
                        "{last} (the listing spent its {} of retries)",
                        flotilla_core::format_duration(MAX_PAUSES)
                    ));
                }
                tokio::time::sleep(pause).await;
                *paused += pause;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
        Err(format!("{last} (after {} attempts)", self.attempts.max(1)))
    }
}

/// A page's body, refused past [`MAX_PAGE_BYTES`].
async fn body(mut response: reqwest::Response, number: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("page {number}: reading the body: {}", without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(format!(
                "page {number}: the body is over {} MiB",
                MAX_PAGE_BYTES >> 20
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether `url` is plain `http://` to a host other than this machine's loopback.
fn plain_http_off_machine(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
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
        // The query may carry a key of its own (`?api_key=…`).
        let url = flotilla_core::redact_url(&self.url);
        match url.split_once('?') {
            Some((base, _)) => format!("{base}?…"),
            None => url,
        }
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, SourceError> {
        let fail = |message: String| SourceError {
            source_name: self.describe(),
            message,
        };
        if self.token.is_some() && plain_http_off_machine(&self.url) {
            return Err(fail(
                "a bearer token is not sent over plain http:// to another machine; use https://"
                    .to_owned(),
            ));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| fail(without_url(&e)))?;
        let mut tenants = Vec::new();
        let mut ids = HashSet::new();
        let mut cursors = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut paused = Duration::ZERO;
        for number in 1..=MAX_PAGES {
            let page = self
                .page(&client, cursor.as_deref(), number, &mut paused)
                .await
                .map_err(fail)?;
            for tenant in tenants_of(&page).map_err(|e| fail(format!("page {number}: {e}")))? {
                if !ids.insert(tenant.id.clone()) {
                    return Err(fail(format!(
                        "page {number}: tenant `{}` is listed twice",
                        tenant
                            .id
                            .chars()
                            .take(140)
                            .collect::<String>()
                            .escape_debug()
                    )));
                }
                if tenants.len() == MAX_TENANTS {
                    return Err(fail(format!("more than {MAX_TENANTS} tenants")));
                }
                tenants.push(tenant);
            }
            let next = match page.get("next_cursor") {
                Some(Value::String(next)) if !next.is_empty() => next.clone(),
                _ => return Ok(tenants),
            };
            if !cursors.insert(next.clone()) {
                return Err(fail(format!(
                    "page {number} returned a cursor seen before: the listing would never end"
                )));
            }
            cursor = Some(next);
        }
        Err(fail(format!("more than {MAX_PAGES} pages")))
    }
}
