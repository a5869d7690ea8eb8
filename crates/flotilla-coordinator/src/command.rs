//! Commands of the user's own (tenant listings, password commands, hooks), run with `sh -c`
//! and bounded in time and output: each runs in a process group of its own; when it
//! overstays its timeout the whole group is killed, and when it exits the group is killed
//! too, so a process it left holding its output never makes us wait. What it writes is
//! capped ([`Output`]). Every group still running is known ([`kill_running`]), so a signal
//! handler can end them all.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How much of a command's standard output is kept.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Output {
    /// Up to this many bytes; more is an error (a listing, a password).
    AtMost(usize),
    /// The last this many bytes; more is dropped from the front (a hook's chatter).
    Last(usize),
}

/// A tenant listing's output: ample for a million tenants with fields.
pub(crate) const LISTING_OUTPUT: Output = Output::AtMost(64 << 20);
/// A password's: a secret is short.
pub(crate) const PASSWORD_OUTPUT: Output = Output::AtMost(64 << 10);
/// A hook's: the end of what it said.
pub(crate) const HOOK_OUTPUT: Output = Output::Last(64 << 10);
/// How much of standard error is kept to quote in a message.
const STDERR_KEPT: usize = 64 << 10;

/// Process groups of commands still running, by leader pid.
static RUNNING: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Kills every command group still running (a signal handler's last act).
pub fn kill_running() {
    let groups: Vec<u32> = RUNNING
        .lock()
        .map(|running| running.iter().flatten().copied().collect())
        .unwrap_or_default();
    for group in groups {
        kill_group_id(group);
    }
}

/// Runs `command` in `dir`, killing it after `timeout`; its standard output.
pub(crate) fn run_bounded(
    command: &str,
    dir: &Path,
    timeout: Duration,
    output: Output,
) -> Result<String, String> {
    run_with(command, dir, timeout, &[], None, output)
}

/// [`run_bounded`] with variables added to its environment and `input` on its standard input.
pub(crate) fn run_with(
    command: &str,
    dir: &Path,
    timeout: Duration,
    variables: &[(&str, String)],
    input: Option<Vec<u8>>,
    output: Output,
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
    let group = Group::register(child.id());
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A writer of its own: a command that does not read its input must not block us.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    // Both outputs are read as they come, so a chatty command never blocks on a full pipe.
    let stdout = Capture::start(child.stdout.take(), output);
    let stderr = Capture::start(child.stderr.take(), Output::Last(STDERR_KEPT));
    let deadline = Instant::now() + timeout;
    loop {
        if exited(&mut child)? {
            break;
        }
        if stdout.over() {
            group.kill(&mut child);
            return Err(format!("wrote more than {} of output", limit_text(output)));
        }
        if Instant::now() >= deadline {
            group.kill(&mut child);
            return Err(format!(
                "did not finish within {}; killed",
                flotilla_core::format_duration(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Done when it exits: whatever it left running is killed, which closes the pipes it held.
    kill_group_id(group.0);
    let status = child.wait().map_err(|e| e.to_string())?;
    let grace = deadline
        .saturating_duration_since(Instant::now())
        .min(Duration::from_secs(1));
    let (text, over) = stdout.finish(grace);
    if over {
        return Err(format!("wrote more than {} of output", limit_text(output)));
    }
    let text = String::from_utf8(text).map_err(|e| format!("its output is not UTF-8 text: {e}"))?;
    if !status.success() {
        let (said, _) = stderr.finish(Duration::from_millis(100));
        let said = String::from_utf8_lossy(&said);
        let said: String = said.trim().chars().take(300).collect();
        return Err(format!("exited with {status}: {said}"));
    }
    Ok(text)
}

/// Whether `child` has exited. On Linux it is not reaped yet (a zombie keeps its pid, so its
/// group id cannot be taken by another process before the group is killed).
fn exited(child: &mut Child) -> Result<bool, String> {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", child.id())) {
        // `pid (comm) state …`: the state follows the last `)`.
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        return Ok(state.is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X')));
    }
    child
        .try_wait()
        .map(|s| s.is_some())
        .map_err(|e| e.to_string())
}

fn limit_text(output: Output) -> String {
    let bytes = match output {
        Output::AtMost(bytes) | Output::Last(bytes) => bytes,
    };
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// A pipe read to its end on a thread of its own, into a capped buffer.
struct Capture {
    kept: Arc<Mutex<(Vec<u8>, bool)>>,
    done: mpsc::Receiver<()>,
}

impl Capture {
    fn start(pipe: Option<impl Read + Send + 'static>, output: Output) -> Self {
        let kept = Arc::new(Mutex::new((Vec::new(), false)));
        let (sender, done) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(read @ 1..) = pipe.read(&mut chunk) {
                    let Ok(mut kept) = kept.lock() else { break };
                    let (buffer, over) = &mut *kept;
                    buffer.extend_from_slice(&chunk[..read]);
                    match output {
                        Output::AtMost(max) if buffer.len() > max => {
                            *over = true;
                            buffer.truncate(max);
                            break;
                        }
                        Output::Last(max) if buffer.len() > max => {
                            let cut = buffer.len() - max;
                            buffer.drain(..cut);
                        }
                        _ => {}
                    }
                }
                let _ = sender.send(());
            });
        } else {
            let _ = sender.send(());
        }
        Self { kept, done }
    }

    /// Whether more than an [`Output::AtMost`] cap came.
    fn over(&self) -> bool {
        self.kept.lock().is_ok_and(|kept| kept.1)
    }

    /// What was read, waiting up to `grace` for the end; and whether it was over the cap.
    fn finish(self, grace: Duration) -> (Vec<u8>, bool) {
        let _ = self.done.recv_timeout(grace);
        self.kept
            .lock()
            .map(|mut kept| (std::mem::take(&mut kept.0), kept.1))
            .unwrap_or_default()
    }
}

/// A running command's process group, known to [`kill_running`] until it is dropped.
struct Group(u32);

impl Group {
    fn register(leader: u32) -> Self {
        if let Ok(mut running) = RUNNING.lock() {
            running.get_or_insert_with(HashSet::new).insert(leader);
        }
        Self(leader)
    }

    /// Kills the group (the leader too, if it still runs), then reaps the leader.
    fn kill(&self, child: &mut Child) {
        kill_group_id(self.0);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(mut running) = RUNNING.lock()
            && let Some(running) = running.as_mut()
        {
            running.remove(&self.0);
        }
    }
}

/// Sends SIGKILL to process group `group`.
fn kill_group_id(group: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str, timeout: Duration, output: Output) -> (Result<String, String>, Duration) {
        let started = Instant::now();
        let result = run_with(command, Path::new(""), timeout, &[], None, output);
        (result, started.elapsed())
    }

    #[test]
    fn a_command_is_done_when_it_exits_though_a_child_holds_its_output() {
        let (result, took) = run(
            "sleep 30 & echo listed",
            Duration::from_secs(30),
            Output::AtMost(1024),
        );
        assert_eq!(result.as_deref(), Ok("listed\n"));
        assert!(took < Duration::from_secs(5), "waited {took:?}");
    }

    #[test]
    fn output_past_its_cap_is_an_error_or_keeps_the_end() {
        let (result, took) = run("yes", Duration::from_secs(30), Output::AtMost(4096));
        assert_eq!(result, Err("wrote more than 4 KiB of output".to_owned()));
        assert!(took < Duration::from_secs(5), "waited {took:?}");
        let (result, _) = run(
            "seq 1 100000; echo the-end",
            Duration::from_secs(30),
            Output::Last(1024),
        );
        let kept = result.expect("ran");
        assert!(kept.len() <= 1024 && kept.ends_with("the-end\n"), "{kept}");
    }

    #[test]
    fn a_command_that_overstays_is_killed_with_its_group_and_kill_running_ends_the_rest() {
        let (result, took) = run("sleep 30", Duration::from_millis(300), Output::AtMost(64));
        assert!(result.is_err_and(|e| e.contains("did not finish")));
        assert!(took < Duration::from_secs(5), "waited {took:?}");
        let runner =
            std::thread::spawn(|| run("sleep 30", Duration::from_secs(30), Output::AtMost(64)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while RUNNING
            .lock()
            .map_or(0, |r| r.as_ref().map_or(0, HashSet::len))
            == 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_running();
        let (result, took) = runner.join().expect("joined");
        assert!(result.is_err(), "{result:?}");
        assert!(took < Duration::from_secs(5), "waited {took:?}");
    }
}
