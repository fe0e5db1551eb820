//! The kernel fast path end to end (`capture.l4: kernel`), with the real gateway:
//!
//! - allowed flows, IPv4 and IPv6, stay in the kernel: the proxy's listeners never take one
//!   and relay not a byte, and the destination sees the pod's address; UDP to a port a
//!   process on the node holds works; denied ones still reach the proxy, reset and audited;
//! - allowed flows survive a restart of the gateway (SIGTERM and SIGKILL with the rules kept),
//!   while new flows in the gap wait or fail, never pass undecided;
//! - 10,000 denied connections whose handshakes are retransmitted give audit counts that sum
//!   to exactly 10,000, each queued once;
//! - 100,000 UDP flows and 10,000 TCP connections cost the gateway no descriptor and little
//!   memory.
//!
//! The reload that denies a live fast-path flow is `data_path`'s recheck test, which runs on
//! the fast path (the default) and, in `make test`, on the proxy path as well.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use chokepoint_lab::forge::{Packet, RawSender};
use chokepoint_lab::{
    HOST_A_IPV4, HOST_B_IPV4, HostSpec, Lab, NODE_IPV4, NODE_IPV6, PodSpec, Topology, netns,
};
use chokepoint_tests::{
    GatewayFiles, admin_get, require_root, start_gateway, tcp_connect, tcp_server, teardown,
    udp_send, udp_server,
};
use socket2::{Domain, Protocol as SocketProtocol, Socket, Type};

/// The capture's `mode` line with the fast path named (it is the default in TPROXY mode; the
/// suites that run on both paths leave it out).
pub(crate) const KERNEL: &str = "tproxy\n  l4: kernel";

const HOST_A_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const HOST_B_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);

/// `data_path`'s Admin deny of host-b, on both of its addresses.
fn deny_host_b() -> String {
    crate::data_path::DENY_HOST_B.replace("198.51.100.20/32", "198.51.100.20/32, 2001:db8::20/128")
}

/// A dual-stack lab: one pod, an allowed host and a denied one.
fn lab() -> Lab {
    require_root();
    Topology::new()
        .ipv6(true)
        .namespace("tenant-a", [("tenant", "a")])
        .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
        .host(HostSpec::new("host-a", HOST_A_IPV4).ipv6(HOST_A_IPV6))
        .host(HostSpec::new("host-b", HOST_B_IPV4).ipv6(HOST_B_IPV6))
        .build()
        .expect("build lab")
}

fn pod_netns(lab: &Lab) -> String {
    lab.pod("tenant-a", "web").unwrap().netns.clone()
}

fn host_netns(lab: &Lab, name: &str) -> String {
    lab.host(name).unwrap().netns.clone()
}

fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    netns::run_in(netns, f).expect("enter netns")
}

/// The value of the series `name` (the whole text before the value) in `/metrics`.
pub(crate) fn metric(lab: &Lab, name: &str) -> f64 {
    let (_, metrics) = admin_get(lab, "/metrics");
    metrics
        .lines()
        .find(|l| l.rsplit_once(' ').map(|(series, _)| series) == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

pub(crate) const KERNEL_VERDICTS: &str = "chokepoint_fast_path_verdicts_total{path=\"kernel\"}";
pub(crate) const PROXY_VERDICTS: &str = "chokepoint_fast_path_verdicts_total{path=\"proxy\"}";
pub(crate) const PROXIED_TCP: &str = "chokepoint_proxied_total{protocol=\"tcp\"}";
pub(crate) const PROXIED_UDP: &str = "chokepoint_proxied_total{protocol=\"udp\"}";
pub(crate) const BYTES_SENT: &str = "chokepoint_bytes_total{direction=\"sent\"}";

#[test]
fn allowed_flows_stay_in_the_kernel_and_denied_ones_are_still_audited() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", &deny_host_b())], KERNEL, "");
    let gw = start_gateway(&lab, &files);
    let pod = lab.pod("tenant-a", "web").unwrap().clone();
    let (host_a, host_b) = (host_netns(&lab, "host-a"), host_netns(&lab, "host-b"));
    let node_ns = lab.node_netns().to_owned();

    for (pod_ip, host, node) in [
        (
            pod.ips()[0],
            IpAddr::from(HOST_A_IPV4),
            IpAddr::from(NODE_IPV4),
        ),
        (
            pod.ips()[1],
            IpAddr::from(HOST_A_IPV6),
            IpAddr::from(NODE_IPV6),
        ),
    ] {
        assert_eq!(pod_ip.is_ipv4(), host.is_ipv4(), "{:?}", pod.ips());
        let server = tcp_server(&host_a, SocketAddr::new(host, 8080));
        for _ in 0..3 {
            let report = tcp_connect(
                &pod.netns,
                SocketAddr::new(host, 8080),
                1 << 20,
                Duration::from_secs(10),
            );
            assert!(report.echo_ok, "{host}: {report:?}");
            assert_eq!(report.peer_seen.map(|p| p.ip()), Some(pod_ip));
        }
        assert_eq!(server.stop().unwrap().connections, 3);

        // UDP to a host and to a port a process on the node holds (the proxy cannot relay
        // that one: its reply would come from the node's own socket).
        let udp_host = udp_server(&host_a, SocketAddr::new(host, 5353));
        let udp_node = udp_server(&node_ns, SocketAddr::new(node, 6000));
        for (to, what) in [
            (SocketAddr::new(host, 5353), "an outside host"),
            (SocketAddr::new(node, 6000), "a node process"),
        ] {
            let got = udp_send(&pod.netns, to, Duration::from_secs(3));
            assert!(got.answered, "UDP to {what} ({to}): {got:?}");
            assert_eq!(got.peer_seen.map(|p| p.ip()), Some(pod_ip), "UDP to {what}");
        }
        drop((udp_host, udp_node));
    }

    // Six TCP connections and four UDP flows, each decided once in the queue; the proxy's
    // listeners took none of them.
    assert_eq!(metric(&lab, KERNEL_VERDICTS), 10.0);
    assert_eq!(metric(&lab, PROXIED_TCP), 0.0);
    assert_eq!(metric(&lab, PROXIED_UDP), 0.0);
    assert_eq!(metric(&lab, BYTES_SENT), 0.0, "the proxy relayed nothing");

    // Denied, on both families: through the proxy as before, reset, one audit record each.
    let denied_servers = [HOST_B_IPV4.into(), IpAddr::from(HOST_B_IPV6)]
        .map(|ip| tcp_server(&host_b, SocketAddr::new(ip, 8080)));
    for ip in [IpAddr::from(HOST_B_IPV4), HOST_B_IPV6.into()] {
        let to = SocketAddr::new(ip, 8080);
        let report = tcp_connect(&pod.netns, to, 16, Duration::from_secs(5));
        assert!(report.reset && !report.echo_ok, "{to}: {report:?}");
    }
    let records = files.wait_audit(2, Duration::from_secs(5));
    assert_eq!(records.len(), 2, "{records:#?}");
    for (r, ip) in records
        .iter()
        .zip([HOST_B_IPV4.to_string(), HOST_B_IPV6.to_string()])
    {
        assert_eq!(r["decided_by"]["policy"], "deny-host-b");
        assert_eq!(r["destination"]["ip"], ip);
    }
    assert_eq!(metric(&lab, PROXY_VERDICTS), 2.0);
    assert_eq!(
        metric(
            &lab,
            "chokepoint_fast_path_to_proxy_total{reason=\"denied\"}"
        ),
        2.0,
        "both to the proxy because they are denied"
    );
    assert_eq!(metric(&lab, PROXIED_TCP), 2.0);
    for s in denied_servers {
        assert_eq!(s.stop().unwrap().connections, 0);
    }
    assert!(gw.stop().success());
    teardown(lab);
}

/// A TCP connection and a UDP flow the gateway allowed, held open from the pod.
struct HeldFlows {
    tcp: TcpStream,
    tcp_reader: BufReader<TcpStream>,
    udp: UdpSocket,
    exchanges: u64,
}

impl HeldFlows {
    fn open(pod_ns: &str, tcp_to: SocketAddr, udp_to: SocketAddr) -> HeldFlows {
        let (tcp, udp) = in_netns(pod_ns, || {
            let tcp = TcpStream::connect_timeout(&tcp_to, Duration::from_secs(5))?;
            let udp = UdpSocket::bind("0.0.0.0:0")?;
            udp.connect(udp_to)?;
            std::io::Result::Ok((tcp, udp))
        })
        .expect("open the held flows");
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut tcp_reader = BufReader::new(tcp.try_clone().unwrap());
        let mut greeting = String::new();
        tcp_reader.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("peer "), "{greeting}");
        HeldFlows {
            tcp,
            tcp_reader,
            udp,
            exchanges: 0,
        }
    }

    /// One echo on each flow; panics, saying `when`, if either fails.
    fn exchange(&mut self, when: &str) {
        let payload = format!("echo {} {when}", self.exchanges);
        self.tcp.write_all(payload.as_bytes()).unwrap();
        let mut echo = vec![0u8; payload.len()];
        if let Err(e) = self.tcp_reader.read_exact(&mut echo) {
            panic!("the held TCP connection broke {when}: {e}");
        }
        assert_eq!(echo, payload.as_bytes(), "{when}");
        self.udp.send(payload.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = match self.udp.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("the held UDP flow got no answer {when}: {e}"),
        };
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.ends_with(&payload), "{when}: {answer}");
        self.exchanges += 1;
    }
}

/// `removeOnShutdown: false`, the DaemonSet's setting.
fn keep_rules(files: &GatewayFiles) {
    let settings = std::fs::read_to_string(files.settings()).unwrap();
    std::fs::write(
        files.settings(),
        settings.replacen("capture:\n", "capture:\n  removeOnShutdown: false\n", 1),
    )
    .unwrap();
}

#[test]
fn allowed_flows_survive_restarts_and_new_flows_wait_for_the_next_gateway() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", &deny_host_b())], KERNEL, "");
    keep_rules(&files);
    let (pod_ns, host_a) = (pod_netns(&lab), host_netns(&lab, "host-a"));
    let tcp_to = SocketAddr::new(HOST_A_IPV4.into(), 8080);
    let udp_to = SocketAddr::new(HOST_A_IPV4.into(), 5353);
    let server = tcp_server(&host_a, tcp_to);
    let udp = udp_server(&host_a, udp_to);

    let mut gw = start_gateway(&lab, &files);
    let mut held = HeldFlows::open(&pod_ns, tcp_to, udp_to);
    held.exchange("before any restart");
    let mut connections = 1;
    for how in ["SIGTERM", "SIGKILL"] {
        match how {
            "SIGTERM" => assert!(gw.stop().success(), "an orderly stop"),
            _ => gw.kill(),
        }
        assert!(
            chokepoint_tests::nft_table(lab.node_netns()).is_some(),
            "the rules stay after {how}"
        );
        held.exchange(&format!("with no gateway after {how}"));
        // New flows in the gap: their first packets wait in the queue nobody reads, and are
        // dropped: nothing passes undecided.
        let tcp = tcp_connect(&pod_ns, tcp_to, 16, Duration::from_millis(1500));
        assert!(!tcp.connected, "a new connection after {how}: {tcp:?}");
        let u = udp_send(&pod_ns, udp_to, Duration::from_millis(500));
        assert!(!u.answered, "a new UDP flow after {how}: {u:?}");
        // A connection begun in the gap is decided by the next gateway when its SYN is
        // retransmitted.
        let waiting = {
            let pod_ns = pod_ns.clone();
            std::thread::spawn(move || tcp_connect(&pod_ns, tcp_to, 16, Duration::from_secs(20)))
        };
        std::thread::sleep(Duration::from_millis(300));
        gw = start_gateway(&lab, &files);
        let waited = waiting.join().unwrap();
        assert!(
            waited.echo_ok,
            "the connection begun after {how}: {waited:?}"
        );
        held.exchange(&format!("after {how} and a new start"));
        assert!(tcp_connect(&pod_ns, tcp_to, 16, Duration::from_secs(5)).echo_ok);
        connections += 2;
    }
    // The held flows were re-decided by each new gateway (a new generation) and stayed in
    // the kernel; the proxy took none of them.
    assert_eq!(metric(&lab, PROXIED_TCP), 0.0);
    assert_eq!(metric(&lab, PROXIED_UDP), 0.0);
    drop(held);
    assert!(gw.stop().success());
    assert_eq!(server.stop().unwrap().connections, connections);
    // Every exchange of the held flow (before, in each gap, after each start); the new flows'
    // datagrams in the gaps never arrived.
    assert_eq!(udp.stop().unwrap().datagrams, 5);
    teardown(lab);
}

/// Connections made for the retransmit test, by this many client threads.
const DENIED_FLOWS: usize = 10_000;
const CLIENT_THREADS: usize = 250;

/// In the pod's own namespace: drops one SYN-ACK in eight, so that those handshakes are
/// retransmitted (the pod's SYN, the proxy's SYN-ACK) before they complete.
const LOSSY_SYN_ACKS: &str = "\
table inet lossy {
    counter dropped {}
    chain input {
        type filter hook input priority 0; policy accept;
        tcp flags & (syn | ack) == syn | ack numgen random mod 8 == 0 counter name dropped drop
    }
}
";

#[test]
fn ten_thousand_denied_connections_with_retransmits_are_audited_exactly_once_each() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", &deny_host_b())], KERNEL, "");
    let _gw = start_gateway(&lab, &files);
    let pod_ns = pod_netns(&lab);
    let to = SocketAddr::new(HOST_B_IPV4.into(), 8080);
    let denied_server = tcp_server(&host_netns(&lab, "host-b"), to);
    nft(&lab, &pod_ns, LOSSY_SYN_ACKS);

    // Each connection from a source port of its own: a reused port would meet the conntrack
    // entry of an earlier, reset connection (still marked for the proxy) and skip the queue.
    let pod_ip = lab.pod("tenant-a", "web").unwrap().ips()[0];
    let outcomes = in_netns(&pod_ns, || {
        std::thread::scope(|s| {
            let per_thread = DENIED_FLOWS / CLIENT_THREADS;
            let clients: Vec<_> = (0..CLIENT_THREADS)
                .map(|t| {
                    s.spawn(move || {
                        (0..per_thread)
                            .map(|i| {
                                let port = (20_000 + t * per_thread + i) as u16;
                                denied_once(SocketAddr::new(pod_ip, port), to)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect::<Vec<Result<(), String>>>()
        })
    });
    let failures: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {DENIED_FLOWS} connections were not reset: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let dropped = nft_counter(&lab, &pod_ns, "inet lossy", "dropped");
    assert!(
        dropped > 100,
        "only {dropped} SYN-ACKs dropped: too few retransmits"
    );

    // De-duplication collapses them into few records; the counts add up to every flow, and
    // do not grow once the last window has closed.
    let total = |files: &GatewayFiles| -> u64 {
        files
            .audit_records()
            .iter()
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while total(&files) < DENIED_FLOWS as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        total(&files),
        DENIED_FLOWS as u64,
        "{dropped} SYN-ACKs dropped"
    );
    // Each flow's first SYN was queued once (retransmits match the flow's mark), and the
    // proxy accepted each connection once.
    assert_eq!(metric(&lab, PROXY_VERDICTS), DENIED_FLOWS as f64);
    assert_eq!(metric(&lab, PROXIED_TCP), DENIED_FLOWS as f64);
    assert_eq!(metric(&lab, "chokepoint_audit_events_dropped_total"), 0.0);
    assert_eq!(denied_server.stop().unwrap().connections, 0);
    teardown(lab);
}

/// One connection to a denied destination: the proxy completes the handshake, then resets
/// (sometimes before `connect` has looked: then `connect` reports the reset).
fn denied_once(from: SocketAddr, to: SocketAddr) -> Result<(), String> {
    let reset = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionReset;
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(SocketProtocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(&from.into())
        .map_err(|e| format!("bind {from}: {e}"))?;
    let mut s: TcpStream = match socket.connect_timeout(&to.into(), Duration::from_secs(15)) {
        Ok(()) => socket.into(),
        Err(e) if reset(&e) => return Ok(()),
        Err(e) => return Err(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match s.read(&mut [0u8; 64]) {
        Err(e) if reset(&e) => Ok(()),
        other => Err(format!("read: {other:?}")),
    }
}

fn nft(lab: &Lab, netns: &str, script: &str) {
    let mut child = lab
        .command(netns, "nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f in {netns}");
}

fn nft_counter(lab: &Lab, netns: &str, table: &str, name: &str) -> u64 {
    let out = lab
        .command(netns, "nft")
        .args(["list", "counter"])
        .args(table.split(' '))
        .arg(name)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packets in {text}"))
}

/// UDP flows and TCP connections for the flatness test.
const UDP_FLOWS: usize = 100_000;
const TCP_CONNECTIONS: usize = 10_000;
/// Flows opened before the first reading (the allocator's and the maps' first growth).
const WARM_UP: usize = 2_000;
const UDP_BATCH: usize = 1_000;

/// What the gateway process holds: resident memory and open descriptors.
#[derive(Debug, Clone, Copy)]
struct Held {
    rss_kib: u64,
    fds: usize,
}

fn held_by(pid: u32) -> Held {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    Held { rss_kib, fds }
}

#[test]
fn many_fast_path_flows_cost_the_gateway_no_descriptor_and_little_memory() {
    let lab = lab();
    let limits =
        "limits:\n  udpFlowsPerPod: 200000\n  udpFlows: 200000\n  tcpConnectionsPerPod: 20000\n";
    let files = GatewayFiles::new(&lab, &[], KERNEL, limits);
    let gw = start_gateway(&lab, &files);
    let pid = gw.pid().unwrap();
    let pod = lab.pod("tenant-a", "web").unwrap().clone();
    let pod_ip = pod.ips()[0];
    let host_a = host_netns(&lab, "host-a");
    raise_open_files(TCP_CONNECTIONS + 1_000);

    // UDP: forged datagrams from the pod's own address, one per flow (source port ×
    // destination port), to two sockets on the host that never read.
    let _sinks = [5353u16, 5354].map(|port| {
        in_netns(&host_a, || UdpSocket::bind((HOST_A_IPV4, port))).expect("bind a UDP sink")
    });
    let udp_tuples = (0..UDP_FLOWS).map(|i| {
        let port = 10_000 + (i / 2) as u16;
        (port, 5353 + (i % 2) as u16)
    });
    let udp_tuples: Vec<(u16, u16)> = udp_tuples.collect();
    // TCP: real connections the host's kernel completes and queues (never accepted).
    let tcp_to = SocketAddr::new(HOST_A_IPV4.into(), 9001);
    let listener = in_netns(&host_a, || {
        std::fs::write("/proc/sys/net/core/somaxconn", "20000")?;
        TcpListener::bind(tcp_to)
    })
    .expect("bind the holding listener");
    // -1: the namespace's `somaxconn`, just raised.
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXALLOWABLE)
        .expect("a backlog for every connection");

    let open_udp = |tuples: &[(u16, u16)]| {
        for batch in tuples.chunks(UDP_BATCH) {
            let before = metric(&lab, KERNEL_VERDICTS);
            in_netns(&pod.netns, || {
                let raw = RawSender::open(true).unwrap();
                for &(sport, dport) in batch {
                    let p = Packet::udp(
                        SocketAddr::new(pod_ip, sport),
                        SocketAddr::new(HOST_A_IPV4.into(), dport),
                        b"flow",
                    );
                    raw.send(&p, SocketAddr::new(HOST_A_IPV4.into(), 0))
                        .unwrap();
                }
            });
            wait_metric(&lab, KERNEL_VERDICTS, before + batch.len() as f64);
        }
    };
    let mut tcp_held = Vec::with_capacity(TCP_CONNECTIONS);
    let mut open_tcp = |n: usize| {
        let opened = in_netns(&pod.netns, || {
            (0..n)
                .map(|_| TcpStream::connect_timeout(&tcp_to, Duration::from_secs(5)))
                .collect::<std::io::Result<Vec<_>>>()
        });
        tcp_held.extend(opened.expect("connect through the fast path"));
    };

    open_udp(&udp_tuples[..WARM_UP]);
    open_tcp(WARM_UP / 10);
    let before = held_by(pid);
    // TCP first: UDP flows nobody answers live 30 s in conntrack.
    open_tcp(TCP_CONNECTIONS - WARM_UP / 10);
    open_udp(&udp_tuples[WARM_UP..]);
    let after = held_by(pid);
    let live = in_netns(lab.node_netns(), || {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
    })
    .unwrap();
    let live: usize = live.trim().parse().unwrap();
    eprintln!(
        "gateway with {UDP_FLOWS} UDP flows and {TCP_CONNECTIONS} TCP connections in the \
         kernel ({live} conntrack entries in the node): {before:?} -> {after:?}"
    );
    assert!(
        live >= UDP_FLOWS + TCP_CONNECTIONS,
        "only {live} flows live at once"
    );
    assert_eq!(metric(&lab, PROXIED_TCP), 0.0);
    assert_eq!(metric(&lab, PROXIED_UDP), 0.0);
    assert!(
        after.fds <= before.fds + 2,
        "descriptors grew with the flows: {before:?} -> {after:?}"
    );
    // What the gateway keeps per fast-path flow is its place in the `limits:` caps (tens of
    // bytes); the bound is the data-path target of 1 MiB per 10,000 flows.
    let flows = (UDP_FLOWS + TCP_CONNECTIONS - WARM_UP - WARM_UP / 10) as u64;
    let allowed_kib = flows * 1024 / 10_000;
    assert!(
        after.rss_kib <= before.rss_kib + allowed_kib,
        "RSS grew by {} KiB for {flows} flows (at most {allowed_kib} KiB): {before:?} -> {after:?}",
        after.rss_kib.saturating_sub(before.rss_kib)
    );
    drop(tcp_held);
    assert!(gw.stop().success());
    teardown(lab);
}

/// Waits (up to 10 s) until the series `name` reaches `at_least`.
fn wait_metric(lab: &Lab, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(lab, name);
        if now >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {now}, not {at_least}: the queue lost packets? (queue drops: {})",
            metric(
                lab,
                "chokepoint_fast_path_queue_dropped{cause=\"queue_full\"}"
            )
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raises this process's open-file limit to hold `need` descriptors, or fails saying why.
fn raise_open_files(need: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= need as u64,
        "the hard open-file limit ({hard}) cannot hold the test's {need} connections' sockets"
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}
