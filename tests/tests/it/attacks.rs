//! Attacks on the capture, made as a pod would make them: root in its own network namespace
//! with `NET_RAW`, forging packets with raw sockets (`chokepoint_lab::forge`). Each test is
//! one class of attack, in IPv4 and IPv6; each must fail against the gateway as built.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use chokepoint_lab::forge::{self, Packet, Sniffer};
use chokepoint_lab::services::dig;
use chokepoint_lab::{
    HOST_A_IPV4, HostSpec, Lab, LabPod, METADATA_IPV4, METADATA_IPV6, NODE_IPV4, NODE_IPV6,
    PodSpec, Topology,
};
use chokepoint_tests::{
    GatewayFiles, admin_get, chokepoint_bin, nft_table, require_root, start_gateway, tcp_connect,
    tcp_server, teardown, udp_send, udp_server,
};
use serde_json::Value;

const HOST_A_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// The canonical DNS upstream of the DNS test (a fake one, in the test).
const UPSTREAM_IPV4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const UPSTREAM_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53);
/// What the attacker wants a name to resolve to.
const EVIL_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

/// The attacker's namespace may send nothing anywhere.
const DENY_MALLORY: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: mallory-deny-all}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: mallory}}}
  egress:
  - name: nothing
    action: Deny
    to: [{networks: [0.0.0.0/0, '::/0']}]
";

/// A dual-stack lab: the victim (tenant-a/web, allowed everywhere), the attacker
/// (mallory/attacker, denied everything), an outside host and the DNS upstream's host.
fn lab() -> Lab {
    require_root();
    let lab = Topology::new()
        .ipv6(true)
        .namespace("tenant-a", [("tenant", "a")])
        .namespace("mallory", [("tenant", "m")])
        .pod(PodSpec::new("tenant-a", "web"))
        .pod(PodSpec::new("mallory", "attacker"))
        .host(HostSpec::new("host-a", HOST_A_IPV4).ipv6(HOST_A_IPV6))
        .host(HostSpec::new("upstream", UPSTREAM_IPV4).ipv6(UPSTREAM_IPV6))
        .host(HostSpec::metadata())
        .build()
        .expect("build lab");
    // Before any rule exists: each pod resolves the node's addresses (the node refuses the
    // datagram), so a forged packet later leaves the pod at once instead of waiting behind
    // neighbour discovery, or being lost with it.
    for pod in lab.pods() {
        for node in [IpAddr::V4(NODE_IPV4), IpAddr::V6(NODE_IPV6)] {
            let r = udp_send(&pod.netns, SocketAddr::new(node, 9), Duration::from_secs(3));
            assert!(r.refused, "{}: {r:?}", pod.name);
        }
    }
    lab
}

fn victim(lab: &Lab) -> &LabPod {
    lab.pod("tenant-a", "web").unwrap()
}

fn attacker(lab: &Lab) -> &LabPod {
    lab.pod("mallory", "attacker").unwrap()
}

fn host_netns(lab: &Lab, name: &str) -> String {
    lab.host(name).unwrap().netns.clone()
}

/// The pod's address of the same family as `like`.
fn same_family(pod: &LabPod, like: IpAddr) -> IpAddr {
    *pod.ips()
        .iter()
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
        .expect("the lab is dual-stack")
}

fn host_ips() -> [IpAddr; 2] {
    [HOST_A_IPV4.into(), HOST_A_IPV6.into()]
}

/// Sends forged packets from inside `pod`'s namespace, routed via `via` (any off-link
/// address: the pod's default route takes the packet to the node whatever its header says).
fn forge_from(pod: &LabPod, packets: &[Packet], via: IpAddr) {
    let packets = packets.to_vec();
    netns_run(&pod.netns, move || {
        for p in &packets {
            forge::send(p, SocketAddr::new(via, 0)).expect("send a forged packet");
        }
    });
}

fn netns_run<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    chokepoint_lab::netns::run_in(netns, f).expect("enter netns")
}

/// Waits for `timeout` for datagrams on `socket`; returns their payloads.
fn drain(socket: &UdpSocket, timeout: Duration) -> Vec<Vec<u8>> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// Packets the capture's reverse-path check counted, read from the node's nft counter (0
/// while there is no such counter: the assertions on it then fail).
fn spoofed_counter(lab: &Lab) -> u64 {
    let table = nft_table(lab.node_netns()).expect("the capture table exists");
    let Some(at) = table.find("counter spoofed_sources {") else {
        return 0;
    };
    let rest = &table[at..];
    rest.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {rest}"))
}

/// Waits (up to 10 s) until the node counted at least `n` spoofed packets; returns the count.
fn wait_spoofed(lab: &Lab, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counted = spoofed_counter(lab);
        if counted >= n || std::time::Instant::now() > deadline {
            return counted;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn denials_of<'a>(records: &'a [Value], pod: &str, port: u16) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["source"]["pod"] == pod && r["destination"]["port"] == port)
        .collect()
}

/// The pod forges one datagram "from" an outside host to itself: the node hands it to the
/// gateway, and conntrack would remember it. The pod's real datagrams back on that tuple
/// must still be decided as its own egress (denied here), never passed as "replies".
#[test]
fn a_forged_reply_state_gives_a_deny_all_pod_no_two_way_udp() {
    forged_reply_state(false);
}

/// The same where the reverse-path check cannot tell the forged source from the pod's own
/// (pods sharing a bridge: emulated by deleting the check): the connection-origin marks
/// alone keep the pod's "replies" decided.
#[test]
fn without_the_reverse_path_check_a_forged_reply_state_still_gives_nothing() {
    forged_reply_state(true);
}

fn forged_reply_state(without_reverse_path_check: bool) {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", "");
    let _gw = start_gateway(&lab, &files);
    if without_reverse_path_check {
        delete_reverse_path_check(&lab);
    }
    let pod = attacker(&lab).clone();
    for (i, host) in host_ips().into_iter().enumerate() {
        let server = udp_server(&host_netns(&lab, "host-a"), SocketAddr::new(host, 7000));
        let me = SocketAddr::new(same_family(&pod, host), 40_000 + i as u16);
        let there = SocketAddr::new(host, 7000);
        let answers = netns_run(&pod.netns, || {
            let socket = UdpSocket::bind(me).unwrap();
            // The forged "query" from the host, then the pod's own "answer" to it.
            for _ in 0..3 {
                forge::send(
                    &Packet::udp(there, me, b"forged query"),
                    SocketAddr::new(host, 0),
                )
                .unwrap();
            }
            std::thread::sleep(Duration::from_millis(300));
            socket.connect(there).unwrap();
            socket.send(b"two-way?").unwrap();
            drain(&socket, Duration::from_secs(1))
        });
        assert!(
            answers.is_empty(),
            "{host}: the pod got answers: {answers:?}"
        );
        let seen = server.stop().unwrap();
        assert_eq!(seen.datagrams, 0, "{host}: {seen:?}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let denied = loop {
        let records = files.audit_records();
        let denied = denials_of(&records, "attacker", 7000).len();
        if denied >= 2 || std::time::Instant::now() > deadline {
            break denied;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(denied, 2, "one denial per family, as the pod's own flow");
    if !without_reverse_path_check {
        assert!(
            wait_spoofed(&lab, 6) >= 6,
            "the forged queries are counted as spoofed"
        );
    }
    teardown(lab);
}

/// Deletes the pod chain's reverse-path rule in the lab's node namespace.
fn delete_reverse_path_check(lab: &Lab) {
    let listing = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.node_netns(),
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "chokepoint",
            "pod_capture",
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let handle = listing
        .lines()
        .find(|l| l.contains("fib saddr . iif oif missing"))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("no reverse-path rule in:\n{listing}"));
    let deleted = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.node_netns(),
            "nft",
            "delete",
            "rule",
            "inet",
            "chokepoint",
            "pod_capture",
            "handle",
            &handle,
        ])
        .status()
        .unwrap();
    assert!(deleted.success());
}

/// Pod A has a live UDP session through the gateway; pod B forges the destination's
/// answers to it. Nothing of that may reach A.
#[test]
fn a_pod_cannot_inject_datagrams_into_another_pods_udp_session() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", "");
    let _gw = start_gateway(&lab, &files);
    let (a, b) = (victim(&lab).clone(), attacker(&lab).clone());
    for host in host_ips() {
        let server = udp_server(&host_netns(&lab, "host-a"), SocketAddr::new(host, 7001));
        let there = SocketAddr::new(host, 7001);
        let (socket, echoed) = netns_run(&a.netns, || {
            let s = UdpSocket::bind(SocketAddr::new(same_family(&a, host), 0)).unwrap();
            s.connect(there).unwrap();
            s.send(b"hello").unwrap();
            let echoed = drain(&s, Duration::from_secs(2));
            (s, echoed)
        });
        assert_eq!(echoed.len(), 1, "{host}: the victim's own session works");
        let victim_addr = socket.local_addr().unwrap();
        let forged = Packet::udp(there, victim_addr, b"injected");
        forge_from(&b, &[forged.clone(), forged.clone(), forged], host);
        let got = drain(&socket, Duration::from_secs(1));
        assert!(
            !got.iter().any(|d| d.windows(8).any(|w| w == b"injected")),
            "{host}: the attacker's datagrams reached the victim: {got:?}"
        );
        server.stop().unwrap();
    }
    teardown(lab);
}

/// A pod sends with another pod's address: forged with a raw socket, and with the address
/// added to its own interface. Neither is decided (or forwarded) as the other pod.
#[test]
fn a_pod_cannot_send_as_another_pod() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", "");
    let gw = start_gateway(&lab, &files);
    let (a, b) = (victim(&lab).clone(), attacker(&lab).clone());
    let before = spoofed_counter(&lab);
    for (i, host) in host_ips().into_iter().enumerate() {
        let server = udp_server(&host_netns(&lab, "host-a"), SocketAddr::new(host, 7002));
        let there = SocketAddr::new(host, 7002);
        let as_victim = SocketAddr::new(same_family(&a, host), 5555);
        let forged = Packet::udp(as_victim, there, b"spoofed");
        forge_from(&b, &[forged.clone(), forged.clone(), forged], host);
        // The same with the victim's address on the attacker's own interface.
        let plen = if host.is_ipv4() { 32 } else { 128 };
        let added = std::process::Command::new("ip")
            .args(["-n", &b.netns, "addr", "add"])
            .arg(format!("{}/{plen}", as_victim.ip()))
            .args(["dev", "eth0"])
            .args(host.is_ipv6().then_some("nodad"))
            .status()
            .unwrap();
        assert!(added.success());
        netns_run(&b.netns, || {
            let s = UdpSocket::bind(SocketAddr::new(as_victim.ip(), 5556)).unwrap();
            for _ in 0..3 {
                s.send_to(b"spoofed", there).unwrap();
            }
        });
        // Counted by the node once they arrive (after the pod resolved the node's address).
        wait_spoofed(&lab, before + 6 * (i as u64 + 1));
        let seen = server.stop().unwrap();
        assert_eq!(seen.datagrams, 0, "{host}: sent as the victim: {seen:?}");
    }
    let counted = spoofed_counter(&lab) - before;
    assert!(counted >= 12, "12 spoofed datagrams, {counted} counted");
    let (status, metrics) = admin_get(&lab, "/metrics");
    assert_eq!(status, 200);
    let metric = metrics
        .lines()
        .find(|l| l.starts_with("chokepoint_capture_spoofed_packets_total "))
        .unwrap_or_else(|| panic!("no spoofed-packets metric in:\n{metrics}"));
    let value: f64 = metric.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(value >= counted as f64, "{metric} vs {counted}");
    assert!(
        files
            .audit_records()
            .iter()
            .all(|r| r["source"]["pod"] != "web"),
        "nothing may be decided as the victim"
    );
    drop(gw);
    teardown(lab);
}

/// Neighbour discovery from a pod reaches only the link: never an outside host, not with
/// the gateway running and not with it killed. Other ICMP from pods is dropped.
#[test]
fn neighbour_discovery_and_icmp_from_a_pod_never_leave_the_node() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", "");
    let gw = start_gateway(&lab, &files);
    let (a, b) = (victim(&lab).clone(), attacker(&lab).clone());
    let b6 = match same_family(&b, HOST_A_IPV6.into()) {
        IpAddr::V6(ip) => ip,
        IpAddr::V4(_) => unreachable!(),
    };
    let b4 = match same_family(&b, HOST_A_IPV4.into()) {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => unreachable!(),
    };
    let attack = || {
        vec![
            Packet::neighbor_solicit(b6, HOST_A_IPV6, HOST_A_IPV6),
            Packet::icmpv6(b6, HOST_A_IPV6, 255, forge::ND_NEIGHBOR_ADVERT, &[0; 20]),
            Packet::icmpv6(b6, HOST_A_IPV6, 255, forge::ND_ROUTER_SOLICIT, &[0; 4]),
            Packet::icmpv6(
                b6,
                HOST_A_IPV6,
                64,
                forge::ICMPV6_ECHO_REQUEST,
                &[0, 1, 0, 1],
            ),
        ]
    };
    let host = host_netns(&lab, "host-a");
    let (sniff6, sniff4) = netns_run(&host, || {
        (
            Sniffer::open(true, forge::PROTO_ICMPV6).unwrap(),
            Sniffer::open(false, forge::PROTO_ICMP).unwrap(),
        )
    });
    // The node's own neighbour discovery with the host is none of the attacker's doing.
    let from_attacker = |got: Vec<(IpAddr, Vec<u8>)>| {
        got.into_iter()
            .filter(|(src, _)| *src == IpAddr::V6(b6) || *src == IpAddr::V4(b4))
            .collect::<Vec<_>>()
    };
    let ping4 = Packet::icmpv4(b4, HOST_A_IPV4, forge::ICMPV4_ECHO_REQUEST, &[0, 1, 0, 1]);
    forge_from(&b, &attack(), HOST_A_IPV6.into());
    forge_from(&b, std::slice::from_ref(&ping4), HOST_A_IPV4.into());
    let leaked = from_attacker(sniff6.collect(Duration::from_secs(1)).unwrap());
    assert!(leaked.is_empty(), "ICMPv6 reached the host: {leaked:?}");
    let leaked = from_attacker(sniff4.collect(Duration::from_millis(200)).unwrap());
    assert!(leaked.is_empty(), "ICMPv4 reached the host: {leaked:?}");
    // Neighbour discovery on the link still works: the victim's IPv6 goes through.
    let server = udp_server(&host, SocketAddr::new(HOST_A_IPV6.into(), 7003));
    let ok = udp_send(
        &a.netns,
        SocketAddr::new(HOST_A_IPV6.into(), 7003),
        Duration::from_secs(5),
    );
    assert!(ok.answered, "{ok:?}");
    server.stop().unwrap();

    gw.kill();
    forge_from(&b, &attack(), HOST_A_IPV6.into());
    forge_from(&b, std::slice::from_ref(&ping4), HOST_A_IPV4.into());
    let leaked = from_attacker(sniff6.collect(Duration::from_secs(1)).unwrap());
    assert!(leaked.is_empty(), "with the gateway down: {leaked:?}");
    let leaked = from_attacker(sniff4.collect(Duration::from_millis(200)).unwrap());
    assert!(leaked.is_empty(), "with the gateway down: {leaked:?}");
    drop(files);
    teardown(lab);
}

/// A fake canonical upstream: reports each query (who asked, the bytes) and answers it only
/// when told, with the given address.
struct SlowUpstream {
    queries: std::sync::mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    go: std::sync::mpsc::Sender<Ipv4Addr>,
    thread: std::thread::JoinHandle<()>,
}

impl SlowUpstream {
    fn start(netns: &str, listen: SocketAddr) -> SlowUpstream {
        let socket = netns_run(netns, || UdpSocket::bind(listen)).unwrap();
        let (qtx, queries) = std::sync::mpsc::channel();
        let (go, grx) = std::sync::mpsc::channel::<Ipv4Addr>();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let query = buf[..n].to_vec();
            let _ = qtx.send((from, query.clone()));
            if let Ok(ip) = grx.recv_timeout(Duration::from_secs(10)) {
                let _ = socket.send_to(&dns_answer(&query, ip), from);
            }
        });
        SlowUpstream {
            queries,
            go,
            thread,
        }
    }
}

/// An answer to `query` (its id and question) with one A record.
fn dns_answer(query: &[u8], ip: Ipv4Addr) -> Vec<u8> {
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = &query[12..end + 5];
    let mut a = query[..2].to_vec();
    a.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    a.extend_from_slice(question);
    a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    a.extend_from_slice(&ip.octets());
    a
}

/// With the proxy's upstream port and query id known, a pod forges the upstream's answer to
/// the proxy's upstream socket. The pod asking must get the real answer; the cache too.
#[test]
fn forged_answers_to_the_dns_proxys_upstream_sockets_never_reach_the_cache() {
    let lab = lab();
    let upstream_ns = host_netns(&lab, "upstream");
    for upstream in [IpAddr::V4(UPSTREAM_IPV4), IpAddr::V6(UPSTREAM_IPV6)] {
        let upstream = SocketAddr::new(upstream, 53);
        let extra = format!("dns:\n  upstream: \"{upstream}\"\n");
        let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", &extra);
        let gw = start_gateway(&lab, &files);
        let fake = SlowUpstream::start(&upstream_ns, upstream);
        let victim_ns = victim(&lab).netns.clone();
        let asking = std::thread::spawn(move || {
            dig(
                &victim_ns,
                IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
                "bank.test",
                &[],
            )
        });
        let (proxy, query) = fake
            .queries
            .recv_timeout(Duration::from_secs(10))
            .expect("the proxy forwards the query");
        let node: IpAddr = if upstream.is_ipv4() {
            NODE_IPV4.into()
        } else {
            NODE_IPV6.into()
        };
        assert_eq!(proxy.ip(), node);
        let forged = Packet::udp(upstream, proxy, &dns_answer(&query, EVIL_IPV4));
        forge_from(
            attacker(&lab),
            &[forged.clone(), forged.clone(), forged],
            upstream.ip(),
        );
        std::thread::sleep(Duration::from_millis(300));
        fake.go.send(HOST_A_IPV4).unwrap();
        let answer = asking.join().unwrap();
        assert_eq!(
            answer.addresses,
            vec![IpAddr::V4(HOST_A_IPV4)],
            "{upstream}: {}",
            answer.output
        );
        fake.thread.join().unwrap();
        gw.stop();
    }
    teardown(lab);
}

/// Capture by pod ranges alone, with a range of one family only, would leave the other
/// family uncaptured from end to end: the gateway refuses to start, saying why.
#[test]
fn capture_by_an_ipv4_range_alone_is_refused_rather_than_leaving_ipv6_open() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", "");
    let settings = std::fs::read_to_string(files.settings()).unwrap();
    let interfaces = format!("  interfaces: [\"{}\"]", lab.pod_iface_pattern());
    assert!(settings.contains(&interfaces));
    std::fs::write(
        files.settings(),
        settings.replace(&interfaces, "  podCIDRs: [10.244.1.0/24]"),
    )
    .unwrap();
    let mut child = lab
        .command(lab.node_netns(), chokepoint_bin())
        .args(["run", "--config"])
        .arg(files.settings())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself; one that keeps running is killed and fails the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let status = status.unwrap_or_else(|| panic!("the gateway started:\n{log}"));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("IPv6 from pods would not be captured"),
        "{log}"
    );
    assert!(log.contains("gateway.yaml:"), "a located error: {log}");
    assert!(
        nft_table(lab.node_netns()).is_none(),
        "no rules were installed"
    );
    teardown(lab);
}

/// The metadata server is spoken to only by the metadata handler, on TCP port 80: another
/// TCP port, or UDP, of a metadata address is refused (and audited), never relayed raw.
#[test]
fn the_metadata_address_on_other_ports_and_over_udp_is_refused_and_audited() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", "");
    let _gw = start_gateway(&lab, &files);
    let victim_ns = victim(&lab).netns.clone();
    let imds = host_netns(&lab, "metadata");
    for ip in [IpAddr::V4(METADATA_IPV4), IpAddr::V6(METADATA_IPV6)] {
        let tcp = tcp_server(&imds, SocketAddr::new(ip, 8080));
        let udp = udp_server(&imds, SocketAddr::new(ip, 80));
        let conn = tcp_connect(
            &victim_ns,
            SocketAddr::new(ip, 8080),
            64,
            Duration::from_secs(5),
        );
        assert!(!conn.echo_ok && conn.reset, "{ip}: {conn:?}");
        let sent = udp_send(
            &victim_ns,
            SocketAddr::new(ip, 80),
            Duration::from_millis(500),
        );
        assert!(!sent.answered, "{ip}: {sent:?}");
        assert_eq!(tcp.stop().unwrap().connections, 0, "{ip}: TCP relayed");
        assert_eq!(udp.stop().unwrap().datagrams, 0, "{ip}: UDP relayed");
    }
    let records = files.wait_audit(4, Duration::from_secs(5));
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["reason"] == "metadata_port_refused")
        .collect();
    assert_eq!(refused.len(), 4, "{records:#?}");
    for r in refused {
        assert_eq!(r["verdict"], "deny");
        assert_eq!(r["source"]["pod"], "web");
    }
    teardown(lab);
}

/// A burst of denied UDP flows, far more than the listener's receive buffer holds: every
/// flow is in the audit log's counts or in the listener's overflow metric, none is lost
/// silently. (The kernel reports its drop count with the next datagram read, so one more
/// flow follows the burst.)
#[test]
fn a_burst_of_denied_udp_flows_is_accounted_for_in_full() {
    const BURST: u16 = 3000;
    let lab = lab();
    let files = GatewayFiles::new(
        &lab,
        &[("deny.yaml", DENY_MALLORY)],
        "tproxy",
        "listen:\n  udpReceiveBuffer: 4096\n",
    );
    let _gw = start_gateway(&lab, &files);
    let pod = attacker(&lab).clone();
    let me = same_family(&pod, HOST_A_IPV4.into());
    let there = SocketAddr::new(HOST_A_IPV4.into(), 7010);
    let burst: Vec<Packet> = (0..BURST)
        .map(|i| Packet::udp(SocketAddr::new(me, 20_000 + i), there, b"burst"))
        .collect();
    forge_from(&pod, &burst, HOST_A_IPV4.into());
    std::thread::sleep(Duration::from_millis(200));
    forge_from(
        &pod,
        &[Packet::udp(SocketAddr::new(me, 19_999), there, b"last")],
        HOST_A_IPV4.into(),
    );
    let flows = u64::from(BURST) + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (audited, overflowed) = loop {
        let audited: u64 = denials_of(&files.audit_records(), "attacker", 7010)
            .iter()
            .map(|r| r["count"].as_u64().unwrap())
            .sum();
        let overflowed = metric(&lab, "chokepoint_udp_receive_overflows_total");
        if audited + overflowed >= flows || std::time::Instant::now() > deadline {
            break (audited, overflowed);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{flows} flows: {audited} audited, {overflowed} dropped by the kernel");
    assert_eq!(audited + overflowed, flows);
    assert!(
        overflowed > 0,
        "a 4 KiB buffer must overflow under this burst, or the test tests nothing"
    );
    teardown(lab);
}

/// The value of an unlabelled metric on the gateway's admin endpoint (0 when absent).
fn metric(lab: &Lab, name: &str) -> u64 {
    let (_, text) = admin_get(lab, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// What the defences must leave alone: connections *into* a pod, from an outside host and
/// from the node itself (kubelet's probes), both families, TCP and UDP, with their replies.
#[test]
fn connections_into_pods_from_outside_and_from_the_node_still_work() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_MALLORY)], "tproxy", "");
    let _gw = start_gateway(&lab, &files);
    // The attacker's pod is the server: its replies are not egress, whatever policy says.
    let pod = attacker(&lab).clone();
    let host = host_netns(&lab, "host-a");
    for ip in pod.ips() {
        let tcp = tcp_server(&pod.netns, SocketAddr::new(ip, 8081));
        let udp = udp_server(&pod.netns, SocketAddr::new(ip, 8082));
        for client in [host.as_str(), lab.node_netns()] {
            let c = tcp_connect(
                client,
                SocketAddr::new(ip, 8081),
                4096,
                Duration::from_secs(5),
            );
            assert!(c.echo_ok, "{client} -> {ip}: {c:?}");
            let u = udp_send(client, SocketAddr::new(ip, 8082), Duration::from_secs(5));
            assert!(u.answered, "{client} -> {ip}: {u:?}");
        }
        assert_eq!(tcp.stop().unwrap().connections, 2);
        assert_eq!(udp.stop().unwrap().datagrams, 2);
    }
    assert!(
        files.audit_records().is_empty(),
        "replies are not decided: {:#?}",
        files.audit_records()
    );
    teardown(lab);
}

/// A pod opens more connections and UDP flows than `limits:` lets one pod hold, over both
/// its addresses (they share its caps): the ones beyond are refused (TCP reset, UDP dropped)
/// and audited with a reason of their own, while another pod still connects; a connection
/// that closes gives its place back.
#[test]
fn a_pod_beyond_its_connection_and_flow_caps_is_refused_while_others_still_connect() {
    use std::io::{BufRead, BufReader};
    let lab = lab();
    let files = GatewayFiles::new(
        &lab,
        &[],
        "tproxy",
        "limits:\n  tcpConnectionsPerPod: 3\n  udpFlowsPerPod: 2\n",
    );
    let _gw = start_gateway(&lab, &files);
    let host = host_netns(&lab, "host-a");
    let [v4, v6] = host_ips();
    let mut servers = Vec::new();
    for ip in [v4, v6] {
        servers.push(tcp_server(&host, SocketAddr::new(ip, 7020)));
    }
    let udp: Vec<_> = [v4, v6]
        .iter()
        .map(|&ip| udp_server(&host, SocketAddr::new(ip, 7021)))
        .collect();
    let pod = attacker(&lab).clone();
    let victim_ns = victim(&lab).netns.clone();

    // Three held connections, relayed: the peer line comes from the server.
    let held: Vec<std::net::TcpStream> = [v4, v6, v4]
        .iter()
        .map(|&ip| {
            let to = SocketAddr::new(ip, 7020);
            let s = netns_run(&pod.netns, move || {
                std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            })
            .expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert!(line.starts_with("peer "), "{to}: {line:?}");
            s
        })
        .collect();
    for ip in [v4, v6] {
        let over = tcp_connect(
            &pod.netns,
            SocketAddr::new(ip, 7020),
            64,
            Duration::from_secs(5),
        );
        assert!(over.reset && !over.echo_ok, "{ip}: {over:?}");
        let other = tcp_connect(
            &victim_ns,
            SocketAddr::new(ip, 7020),
            64,
            Duration::from_secs(5),
        );
        assert!(other.echo_ok, "{ip}: {other:?}");
    }

    // Two UDP flows answered, the third dropped; the other pod's flows still answered.
    let flow = |ip: IpAddr| {
        let to = SocketAddr::new(ip, 7021);
        netns_run(&pod.netns, move || {
            let any: IpAddr = if ip.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let s = UdpSocket::bind(SocketAddr::new(any, 0)).unwrap();
            s.connect(to).unwrap();
            s.send(b"flow").unwrap();
            s
        })
    };
    let first = flow(v4);
    let second = flow(v6);
    for s in [&first, &second] {
        assert_eq!(drain(s, Duration::from_secs(2)).len(), 1, "{s:?}");
    }
    let third = flow(v4);
    assert!(drain(&third, Duration::from_millis(500)).is_empty());
    for ip in [v4, v6] {
        let other = udp_send(
            &victim_ns,
            SocketAddr::new(ip, 7021),
            Duration::from_secs(5),
        );
        assert!(other.answered, "{ip}: {other:?}");
    }

    let records = files.wait_audit(3, Duration::from_secs(5));
    let refused = |reason: &str| -> Vec<&Value> {
        records.iter().filter(|r| r["reason"] == reason).collect()
    };
    let tcp = refused("connection_limit");
    assert_eq!(tcp.len(), 2, "{records:#?}");
    let udp_refused = refused("flow_limit");
    assert_eq!(udp_refused.len(), 1, "{records:#?}");
    for r in tcp.iter().chain(&udp_refused) {
        assert_eq!(r["verdict"], "deny");
        assert_eq!(r["source"]["pod"], "attacker");
    }
    assert_eq!(udp_refused[0]["destination"]["port"], 7021);
    assert!(
        records.iter().all(|r| r["source"]["pod"] != "web"),
        "{records:#?}"
    );
    let (_, text) = admin_get(&lab, "/metrics");
    for line in [
        r#"chokepoint_limit_refusals_total{protocol="tcp",scope="pod"} 2"#,
        r#"chokepoint_limit_refusals_total{protocol="udp",scope="pod"} 1"#,
        r#"chokepoint_limit_refusals_total{protocol="tcp",scope="total"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }

    // A closed connection gives its place back (once the gateway has seen it close).
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let c = tcp_connect(
            &pod.netns,
            SocketAddr::new(v4, 7020),
            64,
            Duration::from_secs(5),
        );
        if c.echo_ok || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(again.echo_ok, "{again:?}");
    drop((first, second, third));
    for s in udp {
        s.stop().unwrap();
    }
    for s in servers {
        s.stop().unwrap();
    }
    teardown(lab);
}
