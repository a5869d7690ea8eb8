//! A WebSocket-aware TCP proxy on loopback that loses a reply: it forwards everything between
//! a client and a SurrealDB server until the client sends a frame containing a marker (say,
//! the text of a migration), forwards that frame, then stops passing anything back on that
//! connection and, a moment later, drops it — a reply lost after its request reached the
//! server and committed there. It does this once; later connections pass untouched.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// See the module documentation.
#[derive(Debug)]
pub struct LossyProxy {
    addr: SocketAddr,
    fired: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    marker: Vec<u8>,
    /// How long after forwarding the marked frame the connection is dropped.
    hold: Duration,
    fired: Arc<AtomicUsize>,
    armed: AtomicBool,
}

impl LossyProxy {
    /// Proxies a free loopback port to `upstream`, losing the reply to the first client frame
    /// that contains `marker`; the connection is dropped `hold` after that frame.
    pub fn start(upstream: SocketAddr, marker: &str, hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let fired = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream,
            marker: marker.as_bytes().to_vec(),
            hold,
            fired: Arc::clone(&fired),
            armed: AtomicBool::new(true),
        });
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((client, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || serve(client, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, fired, stop }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// How many replies it lost (0 or 1).
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clones = (
        client.try_clone(),
        server.try_clone(),
        server.try_clone(),
        client.try_clone(),
    );
    let (Ok(client_read), Ok(server_write), Ok(mut server_read), Ok(mut client_write)) = clones
    else {
        return;
    };
    let cut = Arc::new(AtomicBool::new(false));
    let sockets = Arc::new(Mutex::new((client, server)));
    // Server → client: passes bytes until the reply is to be lost, then swallows them.
    let swallowing = Arc::clone(&cut);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) if swallowing.load(Ordering::SeqCst) => {}
                Ok(n) => {
                    if client_write.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Client → server: passes bytes, reading WebSocket frames to find the marker.
    client_to_server(client_read, server_write, shared, &cut, &sockets);
}

fn client_to_server(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Arc<Shared>,
    cut: &Arc<AtomicBool>,
    sockets: &Arc<Mutex<(TcpStream, TcpStream)>>,
) {
    let mut reader = Frames::default();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
        let seen = reader.feed(&buffer[..n], &shared.marker);
        if seen && shared.armed.swap(false, Ordering::SeqCst) {
            cut.store(true, Ordering::SeqCst);
            shared.fired.fetch_add(1, Ordering::SeqCst);
            let sockets = Arc::clone(sockets);
            let hold = shared.hold;
            std::thread::spawn(move || {
                std::thread::sleep(hold);
                if let Ok(sockets) = sockets.lock() {
                    let _ = sockets.0.shutdown(Shutdown::Both);
                    let _ = sockets.1.shutdown(Shutdown::Both);
                }
            });
        }
    }
}

/// Reads the client's side of a WebSocket connection: the HTTP upgrade, then frames, each
/// unmasked and searched for the marker.
#[derive(Default)]
struct Frames {
    pending: Vec<u8>,
    upgraded: bool,
}

impl Frames {
    /// Takes `bytes`; answers whether a complete frame containing `marker` arrived.
    fn feed(&mut self, bytes: &[u8], marker: &[u8]) -> bool {
        self.pending.extend_from_slice(bytes);
        if !self.upgraded {
            let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                return false;
            };
            self.pending.drain(..end + 4);
            self.upgraded = true;
        }
        let mut seen = false;
        while let Some((payload, used)) = frame(&self.pending) {
            if find(&payload, marker).is_some() {
                seen = true;
            }
            self.pending.drain(..used);
        }
        seen
    }
}

/// The first complete frame of `data`, unmasked, and how many bytes it took.
fn frame(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    if data.len() < 2 {
        return None;
    }
    let masked = data[1] & 0x80 != 0;
    let (length, mut at) = match data[1] & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = data.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes), 10)
        }
        small => (u64::from(small), 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let key = data.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let end = at + usize::try_from(length).ok()?;
    let body = data.get(at..end)?;
    let payload = match mask {
        Some(key) => body
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect(),
        None => body.to_vec(),
    };
    Some((payload, end))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
