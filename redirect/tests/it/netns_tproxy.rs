//! End-to-end capture in a `chokepoint_lab` lab (two pods ── node ── outside hosts), with the
//! real rules and the real socket options. Needs root; fails (does not skip) without it.
//!
//! What is proven, per family where it applies:
//! - TPROXY: a pod's TCP connection to an outside address lands on the node's transparent
//!   listener with `local_addr()` = the address the pod dialled, and the outside host never
//!   sees it; a pod's UDP datagram arrives with its original destination, and the reply sent
//!   from that address reaches the pod; DNS goes to its own port when configured;
//! - the gateway's upstream socket keeps the pod's source IP and gets its replies back;
//! - fail closed: with the gateway's sockets closed, the pod reaches nothing outside (TCP and
//!   UDP), and the drop rule counted the attempts; after `remove` it reaches the outside again,
//!   so it was the rules, not the lab, that stopped it;
//! - REDIRECT: TCP lands on a plain listener and `SO_ORIGINAL_DST` names the dialled address,
//!   UDP is dropped, DNS is redirected, and a stopped gateway leaves the pod nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chokepoint_lab::{HostSpec, POD_IFACE_PREFIX, PodSpec, Topology, netns, require_root};

use crate::specs::{self, DNS_PORT, GATEWAY_MARK};
use chokepoint_redirect::conntrack::{Conntrack, L4};
use chokepoint_redirect::sockopt::{
    original_dst, recv_with_original_dst, reply_socket, transparent_tcp_listener,
    transparent_udp_socket, upstream_socket,
};
use chokepoint_redirect::{CaptureMode, CaptureSpec, InstallMode, install, remove, verify};
use socket2::{Domain, SockAddr};

const WAIT: Duration = Duration::from_secs(3);
/// How long a connection attempt that must fail is given.
const BLOCKED: Duration = Duration::from_millis(1500);

const POD_V4: &str = "10.244.1.10";
const POD_V6: &str = "fd00:244:1::10";
const POD2_V4: &str = "10.244.1.11";
/// The pods' CIDRs in the lab.
const POD_CIDRS: [&str; 2] = ["10.244.1.0/24", "fd00:244:1::/64"];
const OUTSIDE_V4: &str = "203.0.113.5";
const OUTSIDE_V6: &str = "2001:db8:113::5";
/// A second outside host, for DNS (never reached while the capture is on).
const OUTSIDE_DNS_V4: &str = "203.0.113.53";
const OUTSIDE_DNS_V6: &str = "2001:db8:113::53";

/// The lab's namespaces by role; the lab is torn down on drop.
struct Net {
    pod: String,
    pod2: String,
    node: String,
    outside: String,
    _lab: chokepoint_lab::Lab,
}

impl Net {
    /// Two pods and two outside hosts (`outside`, `dns`), dual-stack.
    fn new() -> Net {
        require_root();
        let lab = Topology::new()
            .ipv6(true)
            .pod(PodSpec::new("tenant-a", "pod"))
            .pod(PodSpec::new("tenant-b", "pod2"))
            .host(
                HostSpec::new("outside", OUTSIDE_V4.parse().unwrap())
                    .ipv6(OUTSIDE_V6.parse().unwrap()),
            )
            .host(
                HostSpec::new("dns", OUTSIDE_DNS_V4.parse().unwrap())
                    .ipv6(OUTSIDE_DNS_V6.parse().unwrap()),
            )
            .build()
            .expect("building the lab");
        let pod = lab.pod("tenant-a", "pod").unwrap();
        assert_eq!(
            (pod.ipv4.to_string(), pod.ipv6.map(|ip| ip.to_string())),
            (POD_V4.to_owned(), Some(POD_V6.to_owned())),
            "the lab's pod addresses"
        );
        let pod2 = lab.pod("tenant-b", "pod2").unwrap();
        assert_eq!(pod2.ipv4.to_string(), POD2_V4, "the lab's second pod");
        Net {
            pod: pod.netns.clone(),
            pod2: pod2.netns.clone(),
            node: lab.node_netns().to_owned(),
            outside: lab.host("outside").unwrap().netns.clone(),
            _lab: lab,
        }
    }
}

/// The wildcard for the node's pod-facing interfaces (`ckpod*`).
fn pod_ifaces() -> String {
    format!("{POD_IFACE_PREFIX}*")
}

/// Runs `f` on a fresh thread inside `netns` and returns its result (a panic in `f` is
/// re-raised here). Commands `f` starts run in the namespace too.
fn inside<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    netns::run_in(netns, f).expect("entering a lab namespace")
}

/// `ip -n <netns> ARGS…`, which must succeed.
fn ip(netns: &str, args: &[&str]) {
    let out = std::process::Command::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args)
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip -n {netns} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP server that greets every client with `greeting` and records who connected.
#[derive(Debug)]
struct TcpServer {
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds in `netns` and serves from a background thread until dropped.
    fn start(netns: &str, addr: &str, greeting: &'static str) -> TcpServer {
        let addr: SocketAddr = addr.parse().unwrap();
        let listener = inside(netns, || TcpListener::bind(addr)).expect("bind test server");
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

    fn count(&self) -> usize {
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

/// A UDP socket in `netns` with a read timeout, for a client or a plain server.
fn udp(netns: &str, addr: &str) -> UdpSocket {
    let addr: SocketAddr = addr.parse().unwrap();
    let socket = inside(netns, || UdpSocket::bind(addr)).expect("bind udp");
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    socket
}

/// Connects from inside `netns`, returning what the server sent first (up to 64 bytes), or
/// the error.
fn tcp_hello(netns: &str, to: &str, timeout: Duration) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().unwrap();
    inside(netns, || {
        let mut stream = TcpStream::connect_timeout(&to, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// A non-blocking listener on `addr` that takes its own family only (`IPV6_V6ONLY` for an
/// IPv6 one): a dual-stack `[::]` listener would share the port's bind check with the IPv4
/// sockets the test's previous connection left on it (still closing): that bind failed once
/// with `EADDRINUSE` in a full, parallel test run.
fn family_listener(addr: SocketAddr) -> TcpListener {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    if addr.is_ipv6() {
        socket.set_only_v6(true).unwrap();
    }
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(16).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket.into()
}

/// Waits up to `timeout` for a non-blocking listener to accept a connection.
fn accept_within(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
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
fn poll_within<T>(
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

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn sa(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The packets counted by the final drop rule of `chain`.
fn drop_count(node: &str, chain: &str) -> u64 {
    let out = netns::command(node, "nft")
        .args(["list", "chain", "inet", "chokepoint", chain])
        .output()
        .expect("running nft");
    assert!(out.status.success(), "nft list chain {chain} failed");
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains("drop comment"))
        .unwrap_or_else(|| panic!("no drop rule in:\n{listing}"));
    let mut words = line.split_whitespace();
    words.find(|w| *w == "packets");
    words.next().unwrap().parse().unwrap()
}

/// Sends `payload` from the pod to `to` over UDP and returns the pod's socket.
fn pod_send_udp(lab: &Net, from_ip: &str, to: &str, payload: &[u8]) -> UdpSocket {
    let socket = udp(&lab.pod, &sa(from_ip, 0));
    socket.send_to(payload, addr(to)).expect("pod send");
    socket
}

/// The gateway's sockets in the node namespace, one set per family.
struct Gateway {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    dns_udp: Vec<UdpSocket>,
    dns_tcp: Vec<TcpListener>,
}

impl Gateway {
    fn start(node: &str) -> Gateway {
        inside(node, || {
            let mut gw = Gateway {
                tcp: Vec::new(),
                udp: Vec::new(),
                dns_udp: Vec::new(),
                dns_tcp: Vec::new(),
            };
            for any in ["0.0.0.0", "::"] {
                gw.tcp
                    .push(transparent_tcp_listener(addr(&sa(any, 15001))).unwrap());
                gw.udp
                    .push(transparent_udp_socket(addr(&sa(any, 15002))).unwrap());
                gw.dns_udp
                    .push(transparent_udp_socket(addr(&sa(any, DNS_PORT))).unwrap());
                gw.dns_tcp
                    .push(transparent_tcp_listener(addr(&sa(any, DNS_PORT))).unwrap());
            }
            gw
        })
    }
}

/// The family-specific addresses of one lab run.
struct Family {
    v6: bool,
    pod: &'static str,
    outside: &'static str,
    outside_dns: &'static str,
}

const FAMILIES: [Family; 2] = [
    Family {
        v6: false,
        pod: POD_V4,
        outside: OUTSIDE_V4,
        outside_dns: OUTSIDE_DNS_V4,
    },
    Family {
        v6: true,
        pod: POD_V6,
        outside: OUTSIDE_V6,
        outside_dns: OUTSIDE_DNS_V6,
    },
];

fn tproxy_spec(by_interface: bool) -> CaptureSpec {
    let mut spec = CaptureSpec {
        dns_port: Some(DNS_PORT),
        ..specs::base()
    };
    if by_interface {
        spec.pod_interfaces = vec![pod_ifaces()];
    } else {
        spec.pod_cidrs = POD_CIDRS.iter().map(|c| c.parse().unwrap()).collect();
    }
    spec
}

#[test]
fn tproxy_captures_pod_traffic_by_interface_and_fails_closed() {
    tproxy_end_to_end(true);
}

#[test]
fn tproxy_captures_pod_traffic_by_source_cidr_and_fails_closed() {
    tproxy_end_to_end(false);
}

fn tproxy_end_to_end(by_interface: bool) {
    require_root();
    let lab = Net::new();
    let mut servers = Vec::new();
    let mut outside_udp = Vec::new();
    for f in &FAMILIES {
        servers.push(TcpServer::start(
            &lab.outside,
            &sa(f.outside, 443),
            "outside",
        ));
        outside_udp.push(udp(&lab.outside, &sa(f.outside, 5353)));
    }

    // Baseline without capture: the lab routes the pod to the outside host.
    for (i, f) in FAMILIES.iter().enumerate() {
        let hello = tcp_hello(&lab.pod, &sa(f.outside, 443), WAIT)
            .unwrap_or_else(|e| panic!("baseline TCP (v6={}) failed: {e}", f.v6));
        assert_eq!(hello, "outside");
        assert_eq!(servers[i].count(), 1);
        pod_send_udp(&lab, f.pod, &sa(f.outside, 5353), b"baseline");
        let mut buf = [0u8; 64];
        let (n, _) = outside_udp[i].recv_from(&mut buf).expect("baseline UDP");
        assert_eq!(&buf[..n], b"baseline");
    }

    let spec = tproxy_spec(by_interface);
    inside(&lab.node, || {
        install(&spec, InstallMode::Fresh).unwrap();
        verify(&spec).unwrap();
    });
    let gw = Gateway::start(&lab.node);
    // Forget the neighbours learnt in the baseline, so IPv6 neighbour discovery has to pass the
    // capture chain (ARP is not in the inet family and never is filtered).
    ip(&lab.pod, &["neigh", "flush", "all"]);
    ip(&lab.node, &["neigh", "flush", "all"]);

    for (i, f) in FAMILIES.iter().enumerate() {
        let family = if f.v6 { "IPv6" } else { "IPv4" };
        // TCP: the pod dials the outside host and gets the gateway, which sees the dialled
        // address as its local address.
        let dialled = addr(&sa(f.outside, 443));
        let pod = std::thread::scope(|s| {
            let pod = s.spawn(|| tcp_hello(&lab.pod, &sa(f.outside, 443), WAIT));
            let (mut conn, peer) = accept_within(&gw.tcp[i], WAIT);
            assert_eq!(
                conn.local_addr().unwrap(),
                dialled,
                "{family} original destination"
            );
            assert_eq!(peer.ip(), f.pod.parse::<std::net::IpAddr>().unwrap());
            conn.write_all(b"gateway").unwrap();
            pod.join().unwrap()
        });
        assert_eq!(
            pod.unwrap(),
            "gateway",
            "{family}: pod talked to the gateway"
        );
        assert_eq!(
            servers[i].count(),
            1,
            "{family}: outside saw the captured connection"
        );

        // UDP: the datagram arrives with its original destination; the reply from that
        // address reaches the pod.
        let dns = addr(&sa(f.outside_dns, 5000));
        let pod_socket = pod_send_udp(&lab, f.pod, &dns.to_string(), b"ping");
        let mut buf = [0u8; 64];
        let (n, src, orig) =
            poll_within(WAIT, || recv_with_original_dst(&gw.udp[i], &mut buf)).unwrap();
        assert_eq!((&buf[..n], orig), (&b"ping"[..], dns), "{family} UDP");
        assert_eq!(src, pod_socket.local_addr().unwrap(), "{family} UDP source");
        let reply = inside(&lab.node, || reply_socket(orig, Some(GATEWAY_MARK))).unwrap();
        reply.send_to(b"pong", src).unwrap();
        let (n, from) = pod_socket
            .recv_from(&mut buf)
            .expect("reply reaches the pod");
        assert_eq!((&buf[..n], from), (&b"pong"[..], dns), "{family} UDP reply");
        // While that reply socket (bound to the original destination) exists, the pod's next
        // datagram of the flow still goes to the gateway's UDP socket, not to the reply socket.
        pod_socket.send_to(b"again", dns).unwrap();
        let (n, _, orig) =
            poll_within(WAIT, || recv_with_original_dst(&gw.udp[i], &mut buf)).unwrap();
        assert_eq!(
            (&buf[..n], orig),
            (&b"again"[..], dns),
            "{family} UDP, second datagram"
        );
        drop(reply);
        // A reply socket connected to the pod gets the flow's further datagrams itself.
        let connected = inside(&lab.node, || reply_socket(orig, Some(GATEWAY_MARK))).unwrap();
        connected.connect(src).unwrap();
        pod_socket.send_to(b"third", dns).unwrap();
        let n = poll_within(WAIT, || connected.recv(&mut buf)).unwrap();
        assert_eq!(
            &buf[..n],
            b"third",
            "{family} UDP to the connected reply socket"
        );

        // DNS (UDP and TCP port 53) goes to the DNS proxy's sockets.
        let dns53 = addr(&sa(f.outside_dns, 53));
        pod_send_udp(&lab, f.pod, &dns53.to_string(), b"query");
        let (n, _, orig) =
            poll_within(WAIT, || recv_with_original_dst(&gw.dns_udp[i], &mut buf)).unwrap();
        assert_eq!(
            (&buf[..n], orig),
            (&b"query"[..], dns53),
            "{family} DNS/UDP"
        );
        let answer = std::thread::scope(|s| {
            let pod = s.spawn(|| tcp_hello(&lab.pod, &dns53.to_string(), WAIT));
            let (mut conn, _) = accept_within(&gw.dns_tcp[i], WAIT);
            assert_eq!(conn.local_addr().unwrap(), dns53, "{family} DNS/TCP");
            conn.write_all(b"dns").unwrap();
            pod.join().unwrap()
        });
        assert_eq!(answer.unwrap(), "dns");

        // Upstream: the gateway connects as the pod; the outside host sees the pod's address
        // and the reply comes back to the gateway's socket, not to the pod.
        let greeting = inside(&lab.node, || {
            let domain = if f.v6 { Domain::IPV6 } else { Domain::IPV4 };
            let socket =
                upstream_socket(Some(f.pod.parse().unwrap()), domain, Some(GATEWAY_MARK)).unwrap();
            socket.set_nonblocking(false).unwrap();
            socket
                .connect_timeout(&SockAddr::from(dialled), WAIT)
                .expect("upstream connect as the pod");
            let mut stream: std::net::TcpStream = socket.into();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut buf = [0u8; 16];
            let n = stream.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        assert_eq!(greeting, "outside");
        let seen = *servers[i].peers.lock().unwrap().last().unwrap();
        assert_eq!(
            seen.ip().to_string(),
            f.pod,
            "{family}: upstream kept the pod's IP"
        );
    }

    // Pod to pod on the same node is egress too; the gateway's upstream connection made as
    // pod A gets pod B's replies, which enter through a pod interface; and a connection *into*
    // a pod (here from the outside host) is not disturbed by the capture.
    let pod2 = TcpServer::start(&lab.pod2, &sa(POD2_V4, 8080), "pod2");
    let pod2_addr = addr(&sa(POD2_V4, 8080));
    let hello = std::thread::scope(|s| {
        let pod = s.spawn(|| tcp_hello(&lab.pod, &pod2_addr.to_string(), WAIT));
        let (mut conn, _) = accept_within(&gw.tcp[0], WAIT);
        assert_eq!(
            conn.local_addr().unwrap(),
            pod2_addr,
            "pod-to-pod destination"
        );
        conn.write_all(b"gateway").unwrap();
        pod.join().unwrap()
    });
    assert_eq!(hello.unwrap(), "gateway");
    assert_eq!(pod2.count(), 0, "pod-to-pod bypassed the gateway");
    let greeting = inside(&lab.node, || {
        let socket = upstream_socket(
            Some(POD_V4.parse().unwrap()),
            Domain::IPV4,
            Some(GATEWAY_MARK),
        )
        .unwrap();
        socket.set_nonblocking(false).unwrap();
        socket
            .connect_timeout(&SockAddr::from(pod2_addr), WAIT)
            .expect("upstream connect to pod2 as pod");
        let mut stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert_eq!(greeting, "pod2");
    assert_eq!(pod2.peers.lock().unwrap()[0].ip().to_string(), POD_V4);
    let ingress = tcp_hello(&lab.outside, &pod2_addr.to_string(), WAIT).expect("ingress to pod2");
    assert_eq!(ingress, "pod2");
    assert_eq!(pod2.peers.lock().unwrap()[1].ip().to_string(), OUTSIDE_V4);

    // Kill the gateway: every socket closed. The rules stay, so nothing may get through.
    drop(gw);
    let before = drop_count(&lab.node, "pod_capture");
    for (i, f) in FAMILIES.iter().enumerate() {
        let family = if f.v6 { "IPv6" } else { "IPv4" };
        let accepted = servers[i].count();
        let attempt = tcp_hello(&lab.pod, &sa(f.outside, 443), BLOCKED);
        assert!(
            attempt.is_err(),
            "{family}: pod reached {:?} with the gateway down",
            attempt
        );
        pod_send_udp(&lab, f.pod, &sa(f.outside, 5353), b"escape");
        pod_send_udp(&lab, f.pod, &sa(f.outside, 53), b"escape");
        let mut buf = [0u8; 64];
        let got = outside_udp[i].recv_from(&mut buf);
        assert!(
            got.is_err(),
            "{family}: UDP got out with the gateway down: {got:?}"
        );
        assert_eq!(servers[i].count(), accepted, "{family}: TCP got out");
    }
    let after = drop_count(&lab.node, "pod_capture");
    assert!(after >= before + 4, "drop rule counted {before} → {after}");

    // Without the rules the same attempts succeed again: the rules, not the lab, blocked them.
    inside(&lab.node, || remove(&spec).unwrap());
    for f in &FAMILIES {
        let hello = tcp_hello(&lab.pod, &sa(f.outside, 443), WAIT).expect("after remove");
        assert_eq!(hello, "outside");
    }
}

#[test]
fn redirect_mode_captures_tcp_drops_udp_and_fails_closed() {
    require_root();
    let lab = Net::new();
    let server = TcpServer::start(&lab.outside, &sa(OUTSIDE_V4, 443), "outside");
    let outside_udp = udp(&lab.outside, &sa(OUTSIDE_V4, 5353));
    assert_eq!(
        tcp_hello(&lab.pod, &sa(OUTSIDE_V4, 443), WAIT).unwrap(),
        "outside"
    );

    let spec = CaptureSpec {
        mode: CaptureMode::Redirect,
        pod_interfaces: vec![pod_ifaces()],
        dns_port: Some(DNS_PORT),
        ..specs::base()
    };
    inside(&lab.node, || {
        install(&spec, InstallMode::Fresh).unwrap();
        verify(&spec).unwrap();
    });
    // Plain (non-transparent) sockets are enough for REDIRECT.
    let (listener, dns) = inside(&lab.node, || {
        let l = TcpListener::bind("0.0.0.0:15001").unwrap();
        l.set_nonblocking(true).unwrap();
        let d = UdpSocket::bind("0.0.0.0:15053").unwrap();
        d.set_read_timeout(Some(WAIT)).unwrap();
        (l, d)
    });

    let dialled = addr(&sa(OUTSIDE_V4, 443));
    let pod = std::thread::scope(|s| {
        let pod = s.spawn(|| tcp_hello(&lab.pod, &dialled.to_string(), WAIT));
        let (mut conn, _) = accept_within(&listener, WAIT);
        assert_eq!(original_dst(&conn).unwrap(), dialled);
        conn.write_all(b"gateway").unwrap();
        pod.join().unwrap()
    });
    assert_eq!(pod.unwrap(), "gateway");
    assert_eq!(server.count(), 1);

    // DNS over UDP is redirected to the DNS proxy, and its answer goes back un-NATed.
    let dns53 = addr(&sa(OUTSIDE_DNS_V4, 53));
    let pod_socket = pod_send_udp(&lab, POD_V4, &dns53.to_string(), b"query");
    let mut buf = [0u8; 64];
    let (n, src) = dns.recv_from(&mut buf).expect("DNS redirected");
    assert_eq!(&buf[..n], b"query");
    dns.send_to(b"answer", src).unwrap();
    let (n, from) = pod_socket.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"answer"[..], dns53));

    // Other UDP is dropped, gateway up or not.
    pod_send_udp(&lab, POD_V4, &sa(OUTSIDE_V4, 5353), b"escape");
    assert!(
        outside_udp.recv_from(&mut buf).is_err(),
        "UDP got out in REDIRECT mode"
    );

    // Gateway down: the redirect now hits a closed port; nothing reaches the outside.
    drop(listener);
    let attempt = tcp_hello(&lab.pod, &dialled.to_string(), BLOCKED);
    assert!(
        attempt.is_err(),
        "pod reached {attempt:?} with the gateway down"
    );
    assert_eq!(server.count(), 1);
    assert!(drop_count(&lab.node, "pod_enforce") >= 1);

    inside(&lab.node, || remove(&spec).unwrap());
}

// The capture next to a kube-proxy-style Service DNAT in the node (a nat chain at priority
// `dstnat` translating a ClusterIP to a backend), for IPv4 and IPv6:
// - TPROXY (capture at `dstnat + 10`): a pod's TCP connection to the ClusterIP arrives with the
//   backend as the accepted socket's local address and the ClusterIP as `SO_ORIGINAL_DST`; a
//   UDP datagram arrives with the backend as its original destination and conntrack (by the
//   reply tuple) names the ClusterIP; the reply sent from the backend's address reaches the
//   pod from the ClusterIP (conntrack reverses the DNAT);
// - REDIRECT (NAT chain at `dstnat - 10`): the connection keeps our binding, kube-proxy's
//   DNAT never runs for it, and `SO_ORIGINAL_DST` is the ClusterIP.

/// A Service per family: ClusterIP, the TCP and UDP ports, and the backend they translate to.
struct Service {
    cluster_ip: &'static str,
    backend: &'static str,
    pod: &'static str,
}

const SERVICES: [Service; 2] = [
    Service {
        cluster_ip: "10.96.0.20",
        backend: OUTSIDE_V4,
        pod: POD_V4,
    },
    Service {
        cluster_ip: "fd00:96::20",
        backend: OUTSIDE_V6,
        pod: POD_V6,
    },
];

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// What kube-proxy's nftables mode does for these Services, reduced to the DNAT itself.
fn kube_proxy_dnat(node: &str) {
    let script = "\
table ip kube-proxy {
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr 10.96.0.20 tcp dport 80 dnat to 203.0.113.5:8080
\t\tip daddr 10.96.0.20 udp dport 53 dnat to 203.0.113.5:5300
\t}
}
table ip6 kube-proxy {
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip6 daddr fd00:96::20 tcp dport 80 dnat to [2001:db8:113::5]:8080
\t\tip6 daddr fd00:96::20 udp dport 53 dnat to [2001:db8:113::5]:5300
\t}
}
";
    let file = std::env::temp_dir().join(format!("{node}-kube-proxy.nft"));
    std::fs::write(&file, script).unwrap();
    let status = inside(node, || {
        std::process::Command::new("nft")
            .arg("-f")
            .arg(&file)
            .status()
    });
    let _ = std::fs::remove_file(&file);
    assert!(status.unwrap().success(), "kube-proxy's rules apply");
}

#[test]
fn tproxy_after_the_service_dnat_sees_the_backend_and_knows_the_cluster_ip() {
    require_root();
    let lab = Net::new();

    kube_proxy_dnat(&lab.node);
    let spec = CaptureSpec {
        pod_interfaces: vec![pod_ifaces()],
        ..specs::base()
    };
    inside(&lab.node, || install(&spec, InstallMode::Fresh).unwrap());
    for svc in &SERVICES {
        let any = if svc.pod.contains(':') {
            "::"
        } else {
            "0.0.0.0"
        };
        let (tcp, gw_udp, mut conntrack) = inside(&lab.node, || {
            (
                transparent_tcp_listener(sock(any, 15001)).unwrap(),
                transparent_udp_socket(sock(any, 15002)).unwrap(),
                Conntrack::open().unwrap(),
            )
        });
        let cluster_ip = sock(svc.cluster_ip, 80);
        let backend = sock(svc.backend, 8080);

        let (local, original, hello) = std::thread::scope(|s| {
            let pod = s.spawn(|| tcp_hello(&lab.pod, &cluster_ip.to_string(), WAIT));
            let (mut conn, _) = accept_within(&tcp, WAIT);
            conn.write_all(b"gateway").unwrap();
            let local = conn.local_addr().unwrap();
            let original = original_dst(&conn).unwrap();
            (local, original, pod.join().unwrap().unwrap())
        });
        assert_eq!(hello, "gateway");
        assert_eq!(local, backend, "TCP: the local address is the backend");
        assert_eq!(
            original, cluster_ip,
            "TCP: SO_ORIGINAL_DST is the ClusterIP"
        );

        let cluster_dns = sock(svc.cluster_ip, 53);
        let pod_socket = udp(&lab.pod, &sock(svc.pod, 0).to_string());
        pod_socket.send_to(b"ping", cluster_dns).unwrap();
        let mut buf = [0u8; 64];
        let (n, src, orig) =
            poll_within(WAIT, || recv_with_original_dst(&gw_udp, &mut buf)).unwrap();
        assert_eq!(&buf[..n], b"ping");
        let udp_backend = sock(svc.backend, 5300);
        assert_eq!(
            orig, udp_backend,
            "UDP: the datagram's destination is the backend"
        );
        let addressed = conntrack.original_destination(L4::Udp, src, orig).unwrap();
        assert_eq!(
            addressed,
            Some(cluster_dns),
            "UDP: conntrack names the ClusterIP"
        );
        let reply = inside(&lab.node, || reply_socket(orig, Some(GATEWAY_MARK))).unwrap();
        reply.send_to(b"pong", src).unwrap();
        let (n, from) = pod_socket
            .recv_from(&mut buf)
            .expect("reply reaches the pod");
        assert_eq!((&buf[..n], from), (&b"pong"[..], cluster_dns));

        // A flow nothing translated: conntrack gives its destination back unchanged, and a
        // flow conntrack never saw is not found.
        let direct = sock(svc.backend, 5301);
        pod_socket.send_to(b"direct", direct).unwrap();
        let (_, src, orig) =
            poll_within(WAIT, || recv_with_original_dst(&gw_udp, &mut buf)).unwrap();
        assert_eq!(orig, direct);
        assert_eq!(
            conntrack.original_destination(L4::Udp, src, orig).unwrap(),
            Some(direct)
        );
        assert_eq!(
            conntrack
                .original_destination(L4::Udp, sock(svc.pod, 9), sock(svc.backend, 9))
                .unwrap(),
            None
        );
    }
    inside(&lab.node, || remove(&spec).unwrap());
}

#[test]
fn redirect_before_the_service_dnat_keeps_the_cluster_ip() {
    require_root();
    let lab = Net::new();

    kube_proxy_dnat(&lab.node);
    let spec = CaptureSpec {
        mode: CaptureMode::Redirect,
        pod_interfaces: vec![pod_ifaces()],
        ..specs::base()
    };
    inside(&lab.node, || install(&spec, InstallMode::Fresh).unwrap());
    for svc in &SERVICES {
        let any = if svc.pod.contains(':') {
            "::"
        } else {
            "0.0.0.0"
        };
        let listener = inside(&lab.node, || family_listener(sock(any, 15001)));
        let cluster_ip = sock(svc.cluster_ip, 80);
        let original = std::thread::scope(|s| {
            let pod = s.spawn(|| tcp_hello(&lab.pod, &cluster_ip.to_string(), WAIT));
            let (mut conn, _) = accept_within(&listener, WAIT);
            conn.write_all(b"gateway").unwrap();
            let original = original_dst(&conn).unwrap();
            assert_eq!(pod.join().unwrap().unwrap(), "gateway");
            original
        });
        assert_eq!(
            original, cluster_ip,
            "REDIRECT: SO_ORIGINAL_DST is the ClusterIP"
        );
    }
    inside(&lab.node, || remove(&spec).unwrap());
}
