//! Helpers for flotilla's end-to-end tests: starting a real SurrealDB server on a free
//! loopback port and waiting until it accepts connections.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A SurrealDB server process on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    child: Child,
    addr: SocketAddr,
}

/// Root user and password of every test server.
pub const ROOT_USER: &str = "root";
/// See [`ROOT_USER`].
pub const ROOT_PASS: &str = "flotilla-test-secret";

impl TestServer {
    /// Starts `server_binary` (the `flotilla-test-server` binary) with in-memory storage on
    /// a free port and waits until it accepts connections.
    pub fn start(server_binary: &Path) -> Self {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(server_binary)
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
                "memory",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_binary.display()));
        let mut server = Self { child, addr };
        server.wait_until_listening(Duration::from_secs(60));
        server
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

    /// `ws://127.0.0.1:PORT`.
    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
