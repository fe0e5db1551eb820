//! Traffic probes for the lab: tiny TCP/UDP servers and clients with no dependency beyond std,
//! run in-process on a thread inside a lab namespace (see [`crate::netns::run_in`]).
//!
//! - [`TcpServer`]: for each connection, first writes `peer <ip>:<port>\n` (the client
//!   address it sees), then echoes everything back; on the client's half-close it half-closes
//!   too.
//! - [`UdpServer`]: answers each datagram with `peer <ip>:<port> ` + the payload.
//! - [`tcp_connect`]: connects, reads the peer line, sends a number of bytes of a deterministic
//!   pattern ([`pattern_byte`]) while reading the echo, half-closes, and checks the echo byte
//!   for byte. A reset (ECONNREFUSED, ECONNRESET, EPIPE) and a timeout are reported
//!   separately: a gateway that refuses resets, one that drops times out.
//! - [`udp_send`]: one datagram, one answer expected.
//!
//! Clients never fail: everything that happened is in their report.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Parses `1048576`, `64KiB`, `1MiB`, `2k`, `1M` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 1048576, 64KiB or 1MiB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" | "kiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Byte `i` of the deterministic stream `tcp-connect` sends: position-dependent, so lost,
/// repeated or reordered chunks do not compare equal.
pub fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) as u8) ^ (i as u8)
}

fn fill_pattern(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + k as u64);
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of an IPv4 client) as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

const MAX_PEERS_KEPT: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ------------------------------------------------------------------------------------ servers

/// `tcp-serve` arguments.
#[derive(Debug, Clone)]
pub struct TcpServeArgs {
    /// Address to listen on (`0.0.0.0:8080`, `[::]:8080`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// End after this many connections have been served (default: serve until killed).
    pub count: Option<u64>,
    /// Close a connection that has been idle this long.
    pub idle_timeout_ms: u64,
}

impl TcpServeArgs {
    pub fn new(listen: SocketAddr) -> Self {
        TcpServeArgs {
            listen,
            count: None,
            idle_timeout_ms: 30_000,
        }
    }
}

/// What a TCP server saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TcpServeReport {
    pub listening: Option<SocketAddr>,
    pub connections: u64,
    pub bytes_echoed: u64,
    /// Client addresses in accept order (the first 1000).
    pub peers: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
struct TcpShared {
    stop: AtomicBool,
    connections: AtomicU64,
    bytes_echoed: AtomicU64,
    peers: Mutex<Vec<SocketAddr>>,
    /// Clones of open connections by accept number, to cut them on stop.
    open: Mutex<HashMap<u64, TcpStream>>,
}

/// An echo server bound to its address; [`TcpServer::serve`] blocks, [`TcpServer::spawn`]
/// serves on a background thread. Every connection is served on a thread of its own.
#[derive(Debug)]
pub struct TcpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    count: Option<u64>,
    idle_timeout: Duration,
    shared: Arc<TcpShared>,
}

impl TcpServer {
    pub fn bind(args: &TcpServeArgs) -> io::Result<TcpServer> {
        let listener = TcpListener::bind(args.listen)?;
        let local_addr = listener.local_addr()?;
        Ok(TcpServer {
            listener,
            local_addr,
            count: args.count,
            idle_timeout: Duration::from_millis(args.idle_timeout_ms.max(1)),
            shared: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `count` connections are done, or until stopped through a
    /// [`ServerHandle`]; then waits for (or, when stopped, cuts) open connections.
    pub fn serve(self) -> io::Result<TcpServeReport> {
        let mut handlers: Vec<JoinHandle<()>> = Vec::new();
        let mut accepted = 0u64;
        let result = loop {
            if self.count.is_some_and(|c| accepted >= c) {
                break Ok(());
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.shared.stop.load(Ordering::SeqCst) {
                        break Ok(());
                    }
                    accepted += 1;
                    let peer = canonical(peer);
                    self.shared.connections.fetch_add(1, Ordering::SeqCst);
                    {
                        let mut peers = lock(&self.shared.peers);
                        if peers.len() < MAX_PEERS_KEPT {
                            peers.push(peer);
                        }
                    }
                    if let Ok(clone) = stream.try_clone() {
                        lock(&self.shared.open).insert(accepted, clone);
                    }
                    let shared = Arc::clone(&self.shared);
                    let idle = self.idle_timeout;
                    let id = accepted;
                    handlers.retain(|h| !h.is_finished());
                    handlers.push(thread::spawn(move || {
                        // A client that misbehaves only ends its own connection.
                        let _ = echo(stream, peer, idle, &shared);
                        lock(&shared.open).remove(&id);
                    }));
                }
                Err(_) if self.shared.stop.load(Ordering::SeqCst) => break Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => break Err(e),
            }
        };
        if self.shared.stop.load(Ordering::SeqCst) || result.is_err() {
            for (_, s) in lock(&self.shared.open).drain() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for h in handlers {
            let _ = h.join();
        }
        result?;
        Ok(TcpServeReport {
            listening: Some(self.local_addr),
            connections: self.shared.connections.load(Ordering::SeqCst),
            bytes_echoed: self.shared.bytes_echoed.load(Ordering::SeqCst),
            peers: lock(&self.shared.peers).clone(),
        })
    }

    /// Serves on a background thread; [`ServerHandle::stop`] ends it and returns the report.
    pub fn spawn(self) -> io::Result<ServerHandle<TcpServeReport>> {
        let local_addr = self.local_addr;
        let shared = Arc::clone(&self.shared);
        let listener = self.listener.try_clone()?;
        let thread = thread::Builder::new()
            .name(format!("tcp-serve {local_addr}"))
            .spawn(move || self.serve())?;
        Ok(ServerHandle {
            local_addr,
            thread: Some(thread),
            stop: Box::new(move || {
                shared.stop.store(true, Ordering::SeqCst);
                // Wakes the blocked accept() (Linux: it then fails with EINVAL).
                let _ = nix::sys::socket::shutdown(
                    listener.as_raw_fd(),
                    nix::sys::socket::Shutdown::Read,
                );
            }),
        })
    }
}

fn echo(
    mut stream: TcpStream,
    peer: SocketAddr,
    idle: Duration,
    shared: &TcpShared,
) -> io::Result<()> {
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    stream.write_all(format!("peer {peer}\n").as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
        shared.bytes_echoed.fetch_add(n as u64, Ordering::SeqCst);
    }
    stream.shutdown(Shutdown::Write)
}

/// `udp-serve` arguments.
#[derive(Debug, Clone)]
pub struct UdpServeArgs {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// End after answering this many datagrams (default: serve until killed).
    pub count: Option<u64>,
}

impl UdpServeArgs {
    pub fn new(listen: SocketAddr) -> Self {
        UdpServeArgs {
            listen,
            count: None,
        }
    }
}

/// What a UDP server saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UdpServeReport {
    pub listening: Option<SocketAddr>,
    pub datagrams: u64,
    /// Sources in arrival order (the first 1000).
    pub peers: Vec<SocketAddr>,
}

/// The UDP answering server; same shape as [`TcpServer`].
#[derive(Debug)]
pub struct UdpServer {
    socket: UdpSocket,
    local_addr: SocketAddr,
    count: Option<u64>,
    stop: Arc<AtomicBool>,
}

/// How often a UDP server looks at its stop flag.
const UDP_STOP_POLL: Duration = Duration::from_millis(50);

impl UdpServer {
    pub fn bind(args: &UdpServeArgs) -> io::Result<UdpServer> {
        let socket = UdpSocket::bind(args.listen)?;
        let local_addr = socket.local_addr()?;
        Ok(UdpServer {
            socket,
            local_addr,
            count: args.count,
            stop: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn serve(self) -> io::Result<UdpServeReport> {
        let mut report = UdpServeReport {
            listening: Some(self.local_addr),
            ..UdpServeReport::default()
        };
        self.socket.set_read_timeout(Some(UDP_STOP_POLL))?;
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::SeqCst) && self.count.is_none_or(|c| report.datagrams < c) {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            // An ICMP error for an earlier answer; not ours to care about.
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let peer = canonical(from);
            let mut answer = format!("peer {peer} ").into_bytes();
            answer.extend_from_slice(&buf[..n]);
            // A failed answer (say, no route back) still counts as a datagram seen.
            let _ = self.socket.send_to(&answer, from);
            report.datagrams += 1;
            if report.peers.len() < MAX_PEERS_KEPT {
                report.peers.push(peer);
            }
        }
        Ok(report)
    }

    pub fn spawn(self) -> io::Result<ServerHandle<UdpServeReport>> {
        let local_addr = self.local_addr;
        let stop = Arc::clone(&self.stop);
        let thread = thread::Builder::new()
            .name(format!("udp-serve {local_addr}"))
            .spawn(move || self.serve())?;
        Ok(ServerHandle {
            local_addr,
            thread: Some(thread),
            stop: Box::new(move || stop.store(true, Ordering::SeqCst)),
        })
    }
}

/// A server running on a background thread. Dropping it stops it too.
pub struct ServerHandle<R> {
    local_addr: SocketAddr,
    thread: Option<JoinHandle<io::Result<R>>>,
    stop: Box<dyn Fn() + Send + Sync>,
}

impl<R> std::fmt::Debug for ServerHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<R> ServerHandle<R> {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, cuts open connections and returns what the server saw.
    pub fn stop(mut self) -> io::Result<R> {
        (self.stop)();
        let thread = self.thread.take().expect("joined only here or in drop");
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<R> Drop for ServerHandle<R> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            (self.stop)();
            let _ = thread.join();
        }
    }
}

// ------------------------------------------------------------------------------------ clients

/// `tcp-connect` arguments.
#[derive(Debug, Clone)]
pub struct TcpConnectArgs {
    /// Where to connect.
    pub to: SocketAddr,
    /// How many bytes of the pattern to send (`1048576`, `64KiB`, `1MiB`).
    pub send: u64,
    /// Deadline for the whole exchange, connect included.
    pub timeout_ms: u64,
}

impl TcpConnectArgs {
    pub fn new(to: SocketAddr, send: u64) -> Self {
        TcpConnectArgs {
            to,
            send,
            timeout_ms: 5_000,
        }
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }
}

/// What `tcp-connect` saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TcpConnectReport {
    pub to: Option<SocketAddr>,
    /// The handshake completed (with the server, or with a proxy in between).
    pub connected: bool,
    /// Refused (RST to the SYN) or reset later (ECONNREFUSED, ECONNRESET, EPIPE).
    pub reset: bool,
    /// The deadline passed first (no answer to the SYN, or a silent peer).
    pub timed_out: bool,
    /// The client address the server announced.
    pub peer_seen: Option<SocketAddr>,
    pub bytes_sent: u64,
    pub bytes_echoed: u64,
    /// Every byte sent came back, in order, and nothing else did.
    pub echo_ok: bool,
    /// Time to complete the handshake, in milliseconds.
    pub connect_ms: Option<f64>,
    /// What went wrong, if anything, in words.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Reset,
    Timeout,
    Other,
}

fn classify(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Failure::Reset,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Other,
    }
}

struct Deadline(Instant);

impl Deadline {
    /// What is left, or a timeout error.
    fn left(&self) -> io::Result<Duration> {
        let left = self.0.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
        } else {
            Ok(left)
        }
    }
}

impl TcpConnectReport {
    fn fail(&mut self, what: &str, e: &io::Error) {
        match classify(e) {
            Failure::Reset => self.reset = true,
            Failure::Timeout => self.timed_out = !self.reset,
            Failure::Other => {}
        }
        self.error.get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// `tcp-connect`: never fails; everything that happened is in the report.
pub fn tcp_connect(args: &TcpConnectArgs) -> TcpConnectReport {
    let mut report = TcpConnectReport {
        to: Some(args.to),
        ..TcpConnectReport::default()
    };
    let start = Instant::now();
    let deadline = Deadline(start + Duration::from_millis(args.timeout_ms.max(1)));
    let stream = match deadline
        .left()
        .and_then(|left| TcpStream::connect_timeout(&args.to, left))
    {
        Ok(s) => s,
        Err(e) => {
            report.fail("connect", &e);
            return report;
        }
    };
    report.connected = true;
    report.connect_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
    let _ = stream.set_nodelay(true);

    // The peer line. Anything after its newline is already echo.
    let mut reader = &stream;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let newline = loop {
        if let Some(pos) = head.iter().position(|&b| b == b'\n') {
            break pos;
        }
        if head.len() > 256 {
            report.error = Some("no peer line in the first 256 bytes".into());
            return report;
        }
        let read = deadline
            .left()
            .and_then(|left| stream.set_read_timeout(Some(left)))
            .and_then(|()| reader.read(&mut buf));
        match read {
            Ok(0) => {
                report.error = Some("closed before the peer line".into());
                return report;
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                report.fail("reading the peer line", &e);
                return report;
            }
        }
    };
    let line = String::from_utf8_lossy(&head[..newline]).into_owned();
    match line.strip_prefix("peer ").map(str::parse::<SocketAddr>) {
        Some(Ok(peer)) => report.peer_seen = Some(peer),
        _ => {
            report.error = Some(format!("unexpected peer line {line:?}"));
            return report;
        }
    }
    let early = head[newline + 1..].to_vec();

    // Send on a thread of its own while this one reads, so neither side's buffers can fill up
    // and deadlock the exchange.
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            report.fail("cloning the socket", &e);
            return report;
        }
    };
    let total = args.send;
    let send_deadline = deadline.0;
    let sender = thread::spawn(move || -> (u64, Option<io::Error>) {
        let deadline = Deadline(send_deadline);
        let mut writer = writer;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < total {
            let n = chunk
                .len()
                .min(usize::try_from(total - sent).unwrap_or(usize::MAX));
            fill_pattern(sent, &mut chunk[..n]);
            let wrote = deadline
                .left()
                .and_then(|left| writer.set_write_timeout(Some(left)))
                .and_then(|()| writer.write_all(&chunk[..n]));
            if let Err(e) = wrote {
                return (sent, Some(e));
            }
            sent += n as u64;
        }
        (sent, writer.shutdown(Shutdown::Write).err())
    });

    let mut echoed = 0u64;
    let mut mismatch: Option<u64> = None;
    let mut check = |data: &[u8], echoed: &mut u64| {
        for (k, &b) in data.iter().enumerate() {
            let at = *echoed + k as u64;
            if mismatch.is_none() && (at >= total || b != pattern_byte(at)) {
                mismatch = Some(at);
            }
        }
        *echoed += data.len() as u64;
    };
    check(&early, &mut echoed);
    let mut read_error = None;
    loop {
        let read = deadline
            .left()
            .and_then(|left| stream.set_read_timeout(Some(left)))
            .and_then(|()| reader.read(&mut buf));
        match read {
            Ok(0) => break,
            Ok(n) => check(&buf[..n], &mut echoed),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Unblock the sender, then report.
                let _ = stream.shutdown(Shutdown::Both);
                read_error = Some(e);
                break;
            }
        }
    }
    let (sent, send_error) = sender.join().unwrap_or((0, None));
    report.bytes_sent = sent;
    report.bytes_echoed = echoed;
    if let Some(e) = &read_error {
        report.fail("reading the echo", e);
    }
    if let Some(e) = &send_error {
        report.fail("sending", e);
    }
    if let Some(at) = mismatch {
        report
            .error
            .get_or_insert_with(|| format!("the echo differs from what was sent at byte {at}"));
    }
    report.echo_ok = read_error.is_none()
        && send_error.is_none()
        && mismatch.is_none()
        && sent == total
        && echoed == total;
    if !report.echo_ok && report.error.is_none() {
        report.error = Some(format!("sent {sent} of {total} bytes, {echoed} came back"));
    }
    report
}

/// `udp-send` arguments.
#[derive(Debug, Clone)]
pub struct UdpSendArgs {
    /// Where to send.
    pub to: SocketAddr,
    /// How long to wait for the answer.
    pub timeout_ms: u64,
    /// The datagram (default: a unique token).
    pub payload: Option<String>,
}

impl UdpSendArgs {
    pub fn new(to: SocketAddr) -> Self {
        UdpSendArgs {
            to,
            timeout_ms: 2_000,
            payload: None,
        }
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }
}

/// What `udp-send` saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UdpSendReport {
    pub to: Option<SocketAddr>,
    /// An answer carrying our payload came back from `to`.
    pub answered: bool,
    /// The source address the server announced.
    pub peer_seen: Option<SocketAddr>,
    /// An ICMP port/host unreachable came back instead (ECONNREFUSED).
    pub refused: bool,
    pub timed_out: bool,
    pub error: Option<String>,
}

/// `udp-send`: never fails; everything that happened is in the report. The socket is
/// connected to `to`, so only answers from exactly that address count.
pub fn udp_send(args: &UdpSendArgs) -> UdpSendReport {
    let mut report = UdpSendReport {
        to: Some(args.to),
        ..UdpSendReport::default()
    };
    let payload = args.payload.clone().unwrap_or_else(|| {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!(
            "chokepoint-udp-probe {}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    });
    let deadline = Deadline(Instant::now() + Duration::from_millis(args.timeout_ms.max(1)));
    let bind: SocketAddr = if args.to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(bind)
        .and_then(|s| s.connect(args.to).map(|()| s))
        .and_then(|s| s.send(payload.as_bytes()).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(format!("sending: {e}"));
            report.refused = e.kind() == io::ErrorKind::ConnectionRefused;
            return report;
        }
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let got = deadline
            .left()
            .and_then(|left| socket.set_read_timeout(Some(left)))
            .and_then(|()| socket.recv(&mut buf));
        match got {
            Ok(n) => {
                let answer = &buf[..n];
                if let Some(peer) = parse_udp_answer(answer, payload.as_bytes()) {
                    report.answered = true;
                    report.peer_seen = Some(peer);
                    return report;
                }
                // Not our answer (a late one for someone else?): keep waiting.
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                match e.kind() {
                    io::ErrorKind::ConnectionRefused => report.refused = true,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => report.timed_out = true,
                    _ => {}
                }
                report.error = Some(format!("waiting for the answer: {e}"));
                return report;
            }
        }
    }
}

/// `peer <addr> <payload>` → `<addr>`, if the payload is ours.
fn parse_udp_answer(answer: &[u8], payload: &[u8]) -> Option<SocketAddr> {
    let rest = answer.strip_prefix(b"peer ")?;
    let space = rest.iter().position(|&b| b == b' ')?;
    if &rest[space + 1..] != payload {
        return None;
    }
    std::str::from_utf8(&rest[..space]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn pattern_is_not_periodic_in_small_steps() {
        let a: Vec<u8> = (0..256).map(pattern_byte).collect();
        let b: Vec<u8> = (256..512).map(pattern_byte).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn udp_answers_are_matched_to_the_payload() {
        assert_eq!(
            parse_udp_answer(b"peer 10.244.1.10:4000 hello world", b"hello world"),
            Some("10.244.1.10:4000".parse().unwrap())
        );
        assert_eq!(
            parse_udp_answer(b"peer [fd00::1]:4000 x", b"x"),
            Some("[fd00::1]:4000".parse().unwrap())
        );
        assert_eq!(parse_udp_answer(b"peer 10.0.0.1:1 other", b"x"), None);
    }
}
