//! Helpers for flotilla's end-to-end tests: starting a real SurrealDB server on a free
//! loopback port (in memory, or on disk so it can be killed and restarted with its data),
//! sending it signals, and endpoints that misbehave on purpose (one that accepts connections
//! and never answers).

mod proxy;

pub use proxy::LossyProxy;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A SurrealDB server process on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    child: Child,
    addr: SocketAddr,
    binary: PathBuf,
    storage: String,
}

/// Root user and password of every test server.
pub const ROOT_USER: &str = "root";
/// See [`ROOT_USER`].
pub const ROOT_PASS: &str = "flotilla-test-secret";

impl TestServer {
    /// Starts `server_binary` (the `flotilla-test-server` binary) with in-memory storage on
    /// a free port and waits until it accepts connections.
    pub fn start(server_binary: &Path) -> Self {
        Self::start_with(server_binary, "memory", free_port())
    }

    /// Starts `server_binary` with `storage` (`memory`, or `surrealkv://PATH` to keep data
    /// across a restart) on `port`.
    pub fn start_with(server_binary: &Path, storage: &str, port: u16) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = spawn_server(server_binary, addr, storage);
        let mut server = Self {
            child,
            addr,
            binary: server_binary.to_path_buf(),
            storage: storage.to_owned(),
        };
        server.wait_until_listening(Duration::from_secs(60));
        server
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same storage (after [`Self::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        // The port is free again once the old process is gone; binding may still race a
        // TIME_WAIT socket briefly, so try a few times.
        let started = Instant::now();
        loop {
            self.child = spawn_server(&self.binary, self.addr, &self.storage);
            std::thread::sleep(Duration::from_millis(200));
            match self.child.try_wait() {
                Ok(Some(_)) if started.elapsed() < Duration::from_secs(20) => continue,
                _ => break,
            }
        }
        self.wait_until_listening(Duration::from_secs(60));
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, …) to the server process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// Starts the `flotilla-test-server` binary built into the same target directory as the
    /// running test (cargo builds it for the workspace's tests).
    pub fn start_beside_tests() -> Self {
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target directory");
        let binary = dir.join(format!(
            "flotilla-test-server{}",
            std::env::consts::EXE_SUFFIX
        ));
        assert!(
            binary.is_file(),
            "{} is missing: build it with `cargo build -p flotilla-tests --bin flotilla-test-server` (cargo test --workspace does)",
            binary.display()
        );
        Self::start(&binary)
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn wait_until_listening(&mut self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("test server exited early with {status}");
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "test server did not listen on {} within {limit:?}",
            self.addr
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A stopped process does not die of SIGKILL until continued on some systems' views;
        // continue it first so the kill is prompt.
        send_signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(binary: &Path, addr: SocketAddr, storage: &str) -> Child {
    Command::new(binary)
        .args([
            "start",
            "--bind",
            &addr.to_string(),
            "--user",
            ROOT_USER,
            "--pass",
            ROOT_PASS,
            "--log",
            "warn",
            storage,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

/// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, `INT`, `TERM`, `KILL`) to `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A loopback endpoint that accepts connections and never answers — a silent host, without
/// leaving the machine. Counts the connections it accepted; stops when dropped.
#[derive(Debug)]
pub struct SilentEndpoint {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SilentEndpoint {
    /// Listens on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, stopping) = (Arc::clone(&accepted), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: a test never needs it for more than a few minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            accepted,
            stop,
        }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
