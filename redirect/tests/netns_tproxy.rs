//! End-to-end capture in a three-namespace lab (pod ── node ── outside), with the real rules
//! and the real socket options. Needs root; fails (does not skip) without it.
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

mod common;
mod specs;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use chokepoint_redirect::sockopt::{
    original_dst, recv_with_original_dst, reply_socket, transparent_tcp_listener,
    transparent_udp_socket, upstream_socket,
};
use chokepoint_redirect::{CaptureMode, CaptureSpec, InstallMode, install, remove, verify};
use common::*;
use socket2::{Domain, SockAddr};
use specs::{DNS_PORT, GATEWAY_MARK};

const WAIT: Duration = Duration::from_secs(3);
/// How long a connection attempt that must fail is given.
const BLOCKED: Duration = Duration::from_millis(1500);

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
fn drop_count(node: &Netns, chain: &str) -> u64 {
    let listing = node.exec(&["nft", "list", "chain", "inet", "chokepoint", chain]);
    let line = listing
        .lines()
        .find(|l| l.contains("drop comment"))
        .unwrap_or_else(|| panic!("no drop rule in:\n{listing}"));
    let mut words = line.split_whitespace();
    words.find(|w| *w == "packets");
    words.next().unwrap().parse().unwrap()
}

/// Sends `payload` from the pod to `to` over UDP and returns the pod's socket.
fn pod_send_udp(lab: &Lab, from_ip: &str, to: &str, payload: &[u8]) -> UdpSocket {
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
    fn start(node: &Netns) -> Gateway {
        node.run(|| {
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
        spec.pod_interfaces = vec![NODE_POD_IFACES.into()];
    } else {
        spec.pod_cidrs = vec![
            "10.0.0.0/16".parse().unwrap(),
            "fd00:a::/64".parse().unwrap(),
        ];
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
    let lab = Lab::new();
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
    lab.node.run(|| {
        install(&spec, InstallMode::Fresh).unwrap();
        verify(&spec).unwrap();
    });
    let gw = Gateway::start(&lab.node);
    // Forget the neighbours learnt in the baseline, so IPv6 neighbour discovery has to pass the
    // capture chain (ARP is not in the inet family and never is filtered).
    lab.pod.ip(&["neigh", "flush", "all"]);
    lab.node.ip(&["neigh", "flush", "all"]);

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
        let reply = lab
            .node
            .run(|| reply_socket(orig, Some(GATEWAY_MARK)))
            .unwrap();
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
        let connected = lab
            .node
            .run(|| reply_socket(orig, Some(GATEWAY_MARK)))
            .unwrap();
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
        let greeting = lab.node.run(|| {
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
    let greeting = lab.node.run(|| {
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
    assert_eq!(
        pod2.peers.lock().unwrap()[1].ip().to_string(),
        "198.51.100.2"
    );

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
    lab.node.run(|| remove(&spec).unwrap());
    for f in &FAMILIES {
        let hello = tcp_hello(&lab.pod, &sa(f.outside, 443), WAIT).expect("after remove");
        assert_eq!(hello, "outside");
    }
}

#[test]
fn redirect_mode_captures_tcp_drops_udp_and_fails_closed() {
    require_root();
    let lab = Lab::new();
    let server = TcpServer::start(&lab.outside, &sa(OUTSIDE_V4, 443), "outside");
    let outside_udp = udp(&lab.outside, &sa(OUTSIDE_V4, 5353));
    assert_eq!(
        tcp_hello(&lab.pod, &sa(OUTSIDE_V4, 443), WAIT).unwrap(),
        "outside"
    );

    let spec = CaptureSpec {
        mode: CaptureMode::Redirect,
        pod_interfaces: vec![NODE_POD_IFACES.into()],
        dns_port: Some(DNS_PORT),
        ..specs::base()
    };
    lab.node.run(|| {
        install(&spec, InstallMode::Fresh).unwrap();
        verify(&spec).unwrap();
    });
    // Plain (non-transparent) sockets are enough for REDIRECT.
    let (listener, dns) = lab.node.run(|| {
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

    lab.node.run(|| remove(&spec).unwrap());
}
