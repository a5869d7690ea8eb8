//! The control store the command line uses, from `[control]` and the flags, and who is at
//! the keyboard (or which CI job): the user, the machine, the commit and the pipeline.

use std::path::Path;
use std::sync::Arc;

use flotilla_coordinator::control::{Actor, Control, ControlStore, QuiesceUnreadable};
use flotilla_core::Connection;
use flotilla_surrealdb::SurrealControlStore;

use crate::commands::{Failure, usage};
use crate::project::{Project, beside};

/// Where the embedded control store lives, relative to the config file.
const EMBEDDED: &str = ".flotilla/control";

/// The control store `[control]` names — by default an embedded one beside the config — used
/// by whoever runs this process, appending to `audit_log` (the flag, else the config's). An
/// embedded store serves one process at a time: this waits up to `wait` for another flotilla
/// process to be done with it, then refuses naming it.
pub(crate) async fn control(
    project: &Project,
    audit_log: Option<&Path>,
    wait: std::time::Duration,
) -> Result<Control, Failure> {
    let configured = &project.config.control;
    let connection = match &configured.connection {
        Some(connection) => {
            let mut connection = connection.clone();
            connection.url = beside(&connection.url, &project.base);
            connection
        }
        None => Connection::new(
            format!("surrealkv://{}", project.base.join(EMBEDDED).display()),
            "flotilla",
            "control",
        ),
    };
    let actor = actor(&project.base);
    if let Some(path) = connection.url.strip_prefix("surrealkv://") {
        embedded::hold(Path::new(path), wait, &actor).await?;
    }
    let store =
        SurrealControlStore::new(connection, project.runner_config.clone()).map_err(usage)?;
    let quiesce_unreadable = match configured.quiesce_unreadable.as_deref() {
        Some(policy) => policy.parse().map_err(usage)?,
        None => QuiesceUnreadable::default(),
    };
    let audit_log = audit_log.map(Path::to_path_buf).or_else(|| {
        configured
            .audit_log
            .as_ref()
            .map(|path| project.base.join(path))
    });
    let mut control = Control::new(Arc::new(store) as Arc<dyn ControlStore>, actor);
    control.quiesce_unreadable = quiesce_unreadable;
    control.audit_log = audit_log;
    Ok(control)
}

/// Taking turns at an embedded control store.
mod embedded {
    use std::fs::File;
    use std::io::{Read, Seek, Write};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use flotilla_coordinator::control::Actor;

    use crate::commands::{EXIT_REFUSED, Failure};

    /// The file this process holds locked while it uses the store: released when it exits,
    /// however it exits.
    static HELD: OnceLock<File> = OnceLock::new();

    /// Holds the store at `path` for this process, waiting up to `wait` for another process
    /// holding it (the holder is named in the file it locked).
    pub(super) async fn hold(path: &Path, wait: Duration, actor: &Actor) -> Result<(), Failure> {
        if HELD.get().is_some() {
            return Ok(());
        }
        let lock_path = PathBuf::from(format!("{}.holder", path.display()));
        if let Some(parent) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| failure(&lock_path, &error))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|error| failure(&lock_path, &error))?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(20);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    tokio::time::sleep(pause.min(deadline - Instant::now())).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Failure {
                        code: EXIT_REFUSED,
                        message: format!(
                            "the embedded control store {} is in use by {}; waited {} (--lock-timeout). An embedded store serves one process at a time: for shards or concurrent deploys, point `[control] url` at a SurrealDB server",
                            path.display(),
                            holder(&mut file),
                            flotilla_core::format_duration(wait)
                        ),
                    });
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    return Err(failure(&lock_path, &error));
                }
            }
        }
        let line = format!(
            "{actor}, pid {}, since {}\n",
            actor.pid,
            flotilla_core::rfc3339(std::time::SystemTime::now())
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(line.as_bytes()));
        written.map_err(|error| failure(&lock_path, &error))?;
        let _ = HELD.set(file);
        Ok(())
    }

    /// Who holds it, as the holder wrote (bounded, one line).
    fn holder(file: &mut File) -> String {
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.take(512).read_to_string(&mut text);
        let text = crate::render::clean(text.lines().next().unwrap_or_default().trim());
        if text.is_empty() {
            "another process".to_owned()
        } else {
            text
        }
    }

    fn failure(path: &Path, error: &std::io::Error) -> Failure {
        Failure {
            code: crate::commands::EXIT_FAILED,
            message: format!("cannot use {}: {error}", path.display()),
        }
    }
}

/// Who runs this process: `$USER`, the host name, the process, the commit (a CI variable,
/// else `git rev-parse HEAD` in the project) and the CI pipeline, when there is one.
pub(crate) fn actor(project_dir: &Path) -> Actor {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let first = |names: &[&str]| names.iter().find_map(|name| var(name));
    let commit = match first(&[
        "GITHUB_SHA",
        "CI_COMMIT_SHA",
        "BUILDKITE_COMMIT",
        "GIT_COMMIT",
    ]) {
        Some(commit) => Some(commit),
        None => git_head(project_dir),
    };
    Actor {
        user: first(&["USER", "USERNAME", "LOGNAME"]).unwrap_or_else(|| "unknown".to_owned()),
        host: host_name(),
        pid: std::process::id(),
        commit,
        pipeline: first(&[
            "GITHUB_RUN_ID",
            "CI_PIPELINE_ID",
            "BUILDKITE_BUILD_ID",
            "CIRCLE_WORKFLOW_ID",
            "BUILD_ID",
        ]),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The commit checked out where the project is, read from `.git` (no `git` process): the
/// first repository found upwards from `dir`, following a worktree's `gitdir:` file.
fn git_head(dir: &Path) -> Option<String> {
    let start = std::fs::canonicalize(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .ok()?;
    let dot_git = start
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|p| p.exists())?;
    let git_dir = if dot_git.is_file() {
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let target = text.trim().strip_prefix("gitdir:")?.trim();
        dot_git.parent()?.join(target)
    } else {
        dot_git
    };
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let commit = match head.strip_prefix("ref:") {
        None => head.to_owned(),
        Some(reference) => {
            let reference = reference.trim();
            // A worktree keeps its refs in the common directory.
            let common = std::fs::read_to_string(git_dir.join("commondir"))
                .map(|c| git_dir.join(c.trim()))
                .unwrap_or_else(|_| git_dir.clone());
            match std::fs::read_to_string(common.join(reference)) {
                Ok(commit) => commit.trim().to_owned(),
                Err(_) => std::fs::read_to_string(common.join("packed-refs"))
                    .ok()?
                    .lines()
                    .find_map(|line| {
                        let (commit, name) = line.split_once(' ')?;
                        (name == reference).then(|| commit.to_owned())
                    })?,
            }
        }
    };
    (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())).then_some(commit)
}

/// A deployment id flotilla accepts: letters, digits, `.`, `_`, `-`; at most 128.
pub(crate) fn deployment_id(id: &str) -> Result<&str, Failure> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(usage(format!(
            "`{id}` is not a deployment id: use letters, digits, `.`, `_` and `-`, at most 128 characters"
        )));
    }
    Ok(id)
}
