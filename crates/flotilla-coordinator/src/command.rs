//! Commands of the user's own (tenant listings, password commands, hooks), run with `sh -c`
//! and bounded in time: each runs in a process group of its own, and when it overstays its
//! timeout — or exits leaving a process that holds its output open — the whole group is
//! killed, so nothing it started outlives the wait.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `command` in `dir`, killing it after `timeout`; its standard output.
pub(crate) fn run_bounded(command: &str, dir: &Path, timeout: Duration) -> Result<String, String> {
    run_with(command, dir, timeout, &[], None)
}

/// [`run_bounded`] with variables added to its environment and `input` on its standard input.
pub(crate) fn run_with(
    command: &str,
    dir: &Path,
    timeout: Duration,
    variables: &[(&str, String)],
    input: Option<Vec<u8>>,
) -> Result<String, String> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut child = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .envs(variables.iter().map(|(name, value)| (name, value)))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A writer of its own: a command that does not read its input must not block us.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    // Both outputs are read as they come, so a chatty command never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let overstayed = |child: &mut Child| {
        kill_group(child);
        format!(
            "did not finish within {}; killed",
            flotilla_core::format_duration(timeout)
        )
    };
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            return Err(overstayed(&mut child));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A process it left behind may hold the output open: wait for the end of it no longer
    // than the deadline.
    let remaining = deadline.saturating_duration_since(Instant::now());
    let Ok(text) = stdout.recv_timeout(remaining) else {
        return Err(overstayed(&mut child));
    };
    let text = text.map_err(|e| format!("its output is not UTF-8 text: {e}"))?;
    if !status.success() {
        let said = stderr
            .recv_timeout(Duration::from_millis(100))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let said: String = said.trim().chars().take(300).collect();
        return Err(format!("exited with {status}: {said}"));
    }
    Ok(text)
}

/// Reads `pipe` to its end on a thread of its own; the text arrives on the receiver.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<std::io::Result<String>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = sender.send(pipe.read_to_string(&mut text).map(|_| text));
        });
    }
    receiver
}

/// Kills `child`'s process group (it leads one of its own), then reaps it.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let killed = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !killed {
        let _ = child.kill();
    }
    let _ = child.wait();
}
