//! Throwaway network namespaces for the netns tests.
//!
//! Every namespace is called `chokepoint-rt-<unique>-<role>` and deleted when its [`Netns`] is
//! dropped, also when the test panics. Nothing here touches the root namespace: links are
//! created inside a test namespace (`ip -n`), sysctls are written from inside one.
//! Code that needs a socket in a namespace runs on a thread that `setns`es into it
//! ([`Netns::run`]); a socket stays in the namespace it was created in, wherever it is used later.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sched::{CloneFlags, setns};

/// Fails the test (never skips it) unless it runs as root with `ip` and `nft` available.
pub fn require_root() {
    if effective_uid() != Some(0) {
        panic!(
            "this test builds network namespaces and nftables rules and needs root \
             (CAP_SYS_ADMIN + CAP_NET_ADMIN). It must not be skipped: run it as root, e.g. \
             `sudo -E cargo test -p chokepoint-redirect`."
        );
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "`{tool}` is missing: run scripts/setup.sh (apt-get install -y nftables iproute2)"
        );
    }
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn unique() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}{:05x}{}",
        std::process::id(),
        nanos & 0xfffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, panicking with its stderr when it fails. Returns stdout.
pub fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns add chokepoint-rt-<unique>-<role>` with `lo` up.
    pub fn new(role: &str) -> Netns {
        let name = format!("chokepoint-rt-{}-{role}", unique());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> …`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        sh(&argv)
    }

    /// `ip netns exec <ns> …`
    pub fn exec(&self, args: &[&str]) -> String {
        let mut argv = vec!["ip", "netns", "exec", &self.name];
        argv.extend_from_slice(args);
        sh(&argv)
    }

    /// Writes a sysctl of this namespace (e.g. `net/ipv4/ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sh", "-c", &format!("echo {value} > /proc/sys/{key}")]);
    }

    /// Moves the calling thread into this namespace. Only for threads this module created.
    fn enter(&self) {
        let file = File::open(format!("/run/netns/{}", self.name))
            .unwrap_or_else(|e| panic!("open netns {}: {e}", self.name));
        setns(file, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {}: {e}", self.name));
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its result (a panic in `f`
    /// is re-raised here). Commands `f` starts run in the namespace too.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|scope| {
            let handle = scope.spawn(|| {
                self.enter();
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Four namespaces: two pods, the node they hang off (where the gateway runs) and an outside
/// host routed through the node.
///
/// ```text
/// pod  pod0 10.0.0.2/24 fd00:a::2/64 ── node0 10.0.0.1/24 fd00:a::1/64  node
/// pod2 pod0 10.0.1.2/24              ── node1 10.0.1.1/24               node
/// node up0 198.51.100.1/24 fd00:b::1/64 ── out0 198.51.100.2/24 fd00:b::2/64  outside
/// outside lo: 203.0.113.5, 203.0.113.53, 2001:db8:113::5, 2001:db8:113::53
/// ```
#[derive(Debug)]
pub struct Lab {
    pub pod: Netns,
    pub pod2: Netns,
    pub node: Netns,
    pub outside: Netns,
}

pub const POD_V4: &str = "10.0.0.2";
pub const POD_V6: &str = "fd00:a::2";
pub const POD2_V4: &str = "10.0.1.2";
/// Matches both pod-facing interfaces of the node (`node0`, `node1`).
pub const NODE_POD_IFACES: &str = "node*";
pub const OUTSIDE_V4: &str = "203.0.113.5";
pub const OUTSIDE_DNS_V4: &str = "203.0.113.53";
pub const OUTSIDE_V6: &str = "2001:db8:113::5";
pub const OUTSIDE_DNS_V6: &str = "2001:db8:113::53";

impl Lab {
    pub fn new() -> Lab {
        let lab = Lab {
            pod: Netns::new("pod"),
            pod2: Netns::new("pod2"),
            node: Netns::new("node"),
            outside: Netns::new("out"),
        };
        let (pod, node, outside) = (&lab.pod, &lab.node, &lab.outside);

        pod.ip(&[
            "link", "add", "pod0", "type", "veth", "peer", "name", "node0", "netns", &node.name,
        ]);
        pod.ip(&["addr", "add", "10.0.0.2/24", "dev", "pod0"]);
        pod.ip(&["addr", "add", "fd00:a::2/64", "dev", "pod0", "nodad"]);
        pod.ip(&["link", "set", "pod0", "up"]);
        pod.ip(&["route", "add", "default", "via", "10.0.0.1"]);
        pod.ip(&["-6", "route", "add", "default", "via", "fd00:a::1"]);

        let pod2 = &lab.pod2;
        pod2.ip(&[
            "link", "add", "pod0", "type", "veth", "peer", "name", "node1", "netns", &node.name,
        ]);
        pod2.ip(&["addr", "add", "10.0.1.2/24", "dev", "pod0"]);
        pod2.ip(&["link", "set", "pod0", "up"]);
        pod2.ip(&["route", "add", "default", "via", "10.0.1.1"]);
        node.ip(&["addr", "add", "10.0.1.1/24", "dev", "node1"]);
        node.ip(&["link", "set", "node1", "up"]);

        node.ip(&["addr", "add", "10.0.0.1/24", "dev", "node0"]);
        node.ip(&["addr", "add", "fd00:a::1/64", "dev", "node0", "nodad"]);
        node.ip(&["link", "set", "node0", "up"]);
        node.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "out0",
            "netns",
            &outside.name,
        ]);
        node.ip(&["addr", "add", "198.51.100.1/24", "dev", "up0"]);
        node.ip(&["addr", "add", "fd00:b::1/64", "dev", "up0", "nodad"]);
        node.ip(&["link", "set", "up0", "up"]);
        node.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
        node.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:113::/64",
            "via",
            "fd00:b::2",
        ]);
        node.sysctl("net/ipv4/ip_forward", "1");
        node.sysctl("net/ipv6/conf/all/forwarding", "1");

        outside.ip(&["addr", "add", "198.51.100.2/24", "dev", "out0"]);
        outside.ip(&["addr", "add", "fd00:b::2/64", "dev", "out0", "nodad"]);
        outside.ip(&["link", "set", "out0", "up"]);
        for addr in ["203.0.113.5/32", "203.0.113.53/32"] {
            outside.ip(&["addr", "add", addr, "dev", "lo"]);
        }
        for addr in ["2001:db8:113::5/128", "2001:db8:113::53/128"] {
            outside.ip(&["addr", "add", addr, "dev", "lo", "nodad"]);
        }
        outside.ip(&["route", "add", "default", "via", "198.51.100.1"]);
        outside.ip(&["-6", "route", "add", "default", "via", "fd00:b::1"]);
        lab
    }
}

/// A TCP server that greets every client with `greeting` and records who connected.
#[derive(Debug)]
pub struct TcpServer {
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds in `ns` and serves from a background thread until dropped.
    pub fn start(ns: &Netns, addr: &str, greeting: &'static str) -> TcpServer {
        let addr: SocketAddr = addr.parse().unwrap();
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .expect("bind test server");
        listener.set_nonblocking(true).unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (peers, stop) = (peers.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut stream, peer)) => {
                            peers.lock().unwrap().push(peer);
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.write_all(greeting.as_bytes());
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TcpServer {
            peers,
            stop,
            handle: Some(handle),
        }
    }

    pub fn count(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// A UDP socket in `ns` with a read timeout, for a client or a plain server.
pub fn udp(ns: &Netns, addr: &str) -> UdpSocket {
    let addr: SocketAddr = addr.parse().unwrap();
    let socket = ns.run(|| UdpSocket::bind(addr)).expect("bind udp");
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    socket
}

/// Connects from inside `ns`, returning what the server sent first (up to 64 bytes), or the
/// error.
pub fn tcp_hello(ns: &Netns, to: &str, timeout: Duration) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().unwrap();
    ns.run(|| {
        let mut stream = TcpStream::connect_timeout(&to, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// Waits up to `timeout` for a non-blocking listener to accept a connection.
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok(conn) => return conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("gateway listener accepted nothing: {e}"),
        }
    }
}

/// Polls `f` (a non-blocking read) until it stops returning `WouldBlock` or `timeout` passes.
pub fn poll_within<T>(
    timeout: Duration,
    mut f: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}
