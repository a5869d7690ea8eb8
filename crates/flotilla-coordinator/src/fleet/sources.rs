//! Tenant sources that need no database backend: a list in the configuration, a file, a
//! command's output, an HTTP endpoint with cursor paging. Each is bounded in time.

use std::io::Read;
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
        let output = tokio::task::spawn_blocking(move || run_bounded(&command, &dir, timeout))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(fail)?;
        parse_listing(&output).map_err(|e| fail(format!("its output: {e}")))
    }
}

/// Runs `command` in `dir`, killing it after `timeout`; its standard output.
pub(crate) fn run_bounded(
    command: &str,
    dir: &std::path::Path,
    timeout: Duration,
) -> Result<String, String> {
    run_with(command, dir, timeout, &[], None)
}

/// [`run_bounded`] with variables added to its environment and `input` on its standard input.
pub(crate) fn run_with(
    command: &str,
    dir: &std::path::Path,
    timeout: Duration,
    variables: &[(&str, String)],
    input: Option<Vec<u8>>,
) -> Result<String, String> {
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let mut child = std::process::Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .envs(variables.iter().map(|(name, value)| (name, value)))
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A writer of its own: a command that does not read its input must not block us.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let mut stdout = child.stdout.take().ok_or("no output")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "did not finish within {}; killed",
                flotilla_core::format_duration(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = reader
        .join()
        .map_err(|_| "reading its output failed".to_owned())?
        .map_err(|e| format!("its output is not UTF-8 text: {e}"))?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let said: String = stderr.trim().chars().take(300).collect();
        return Err(format!("exited with {status}: {said}"));
    }
    Ok(text)
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
