//! The capture next to a kube-proxy-style Service DNAT in the node (a nat chain at priority
//! `dstnat` translating a ClusterIP to a backend), with the real rules and socket options.
//! Needs root; fails (does not skip) without it.
//!
//! What is proven, for IPv4 and IPv6:
//! - TPROXY (capture at `dstnat + 10`): a pod's TCP connection to the ClusterIP arrives with the
//!   backend as the accepted socket's local address and the ClusterIP as `SO_ORIGINAL_DST`; a
//!   UDP datagram arrives with the backend as its original destination and conntrack (by the
//!   reply tuple) names the ClusterIP; the reply sent from the backend's address reaches the
//!   pod from the ClusterIP (conntrack reverses the DNAT);
//! - REDIRECT (NAT chain at `dstnat - 10`): the connection keeps our binding, kube-proxy's
//!   DNAT never runs for it, and `SO_ORIGINAL_DST` is the ClusterIP.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use chokepoint_redirect::conntrack::{Conntrack, L4};
use chokepoint_redirect::sockopt::{
    original_dst, recv_with_original_dst, reply_socket, transparent_tcp_listener,
    transparent_udp_socket,
};
use chokepoint_redirect::{
    CaptureMode, CaptureSpec, DEFAULT_GATEWAY_MARK, InstallMode, install, remove,
};
use common::*;

const WAIT: Duration = Duration::from_secs(3);

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

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// What kube-proxy's nftables mode does for these Services, reduced to the DNAT itself.
fn kube_proxy_dnat(node: &Netns) {
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
    let file = std::env::temp_dir().join(format!("{}-kube-proxy.nft", node.name));
    std::fs::write(&file, script).unwrap();
    node.exec(&["nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(file);
}

#[test]
fn tproxy_after_the_service_dnat_sees_the_backend_and_knows_the_cluster_ip() {
    require_root();
    let lab = Lab::new();
    kube_proxy_dnat(&lab.node);
    let spec = CaptureSpec {
        pod_interfaces: vec![NODE_POD_IFACES.into()],
        ..CaptureSpec::default()
    };
    lab.node.run(|| install(&spec, InstallMode::Fresh).unwrap());
    for svc in &SERVICES {
        let any = if svc.pod.contains(':') {
            "::"
        } else {
            "0.0.0.0"
        };
        let (tcp, gw_udp, mut conntrack) = lab.node.run(|| {
            (
                transparent_tcp_listener(sa(any, 15001)).unwrap(),
                transparent_udp_socket(sa(any, 15002)).unwrap(),
                Conntrack::open().unwrap(),
            )
        });
        let cluster_ip = sa(svc.cluster_ip, 80);
        let backend = sa(svc.backend, 8080);

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

        let cluster_dns = sa(svc.cluster_ip, 53);
        let pod_socket = udp(&lab.pod, &sa(svc.pod, 0).to_string());
        pod_socket.send_to(b"ping", cluster_dns).unwrap();
        let mut buf = [0u8; 64];
        let (n, src, orig) =
            poll_within(WAIT, || recv_with_original_dst(&gw_udp, &mut buf)).unwrap();
        assert_eq!(&buf[..n], b"ping");
        let udp_backend = sa(svc.backend, 5300);
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
        let reply = lab
            .node
            .run(|| reply_socket(orig, Some(DEFAULT_GATEWAY_MARK)))
            .unwrap();
        reply.send_to(b"pong", src).unwrap();
        let (n, from) = pod_socket
            .recv_from(&mut buf)
            .expect("reply reaches the pod");
        assert_eq!((&buf[..n], from), (&b"pong"[..], cluster_dns));

        // A flow nothing translated: conntrack gives its destination back unchanged, and a
        // flow conntrack never saw is not found.
        let direct = sa(svc.backend, 5301);
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
                .original_destination(L4::Udp, sa(svc.pod, 9), sa(svc.backend, 9))
                .unwrap(),
            None
        );
    }
    lab.node.run(|| remove(&spec).unwrap());
}

#[test]
fn redirect_before_the_service_dnat_keeps_the_cluster_ip() {
    require_root();
    let lab = Lab::new();
    kube_proxy_dnat(&lab.node);
    let spec = CaptureSpec {
        mode: CaptureMode::Redirect,
        pod_interfaces: vec![NODE_POD_IFACES.into()],
        ..CaptureSpec::default()
    };
    lab.node.run(|| install(&spec, InstallMode::Fresh).unwrap());
    for svc in &SERVICES {
        let any = if svc.pod.contains(':') {
            "::"
        } else {
            "0.0.0.0"
        };
        let listener = lab.node.run(|| {
            let l = TcpListener::bind(sa(any, 15001)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let cluster_ip = sa(svc.cluster_ip, 80);
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
    lab.node.run(|| remove(&spec).unwrap());
}
