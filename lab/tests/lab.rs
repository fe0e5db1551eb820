//! The network-namespace lab itself: topology, plain routing through the node (no gateway
//! yet), isolation between labs, and teardown on drop, on panic and on a killed process.
//!
//! These tests need root. They FAIL (never skip) without it: CI must run them.
//!
//! Traffic goes only between namespaces the tests create; probes run in-process on threads
//! that entered a lab namespace ([`netns::run_in`]).

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chokepoint_config::model::Protocol;
use chokepoint_config::{UnknownFields, load_str};
use chokepoint_lab::probe::{
    TcpConnectArgs, TcpServeArgs, TcpServer, UdpSendArgs, UdpServeArgs, UdpServer, tcp_connect,
    udp_send,
};
use chokepoint_lab::{
    HOST_A_IPV4, HOST_B_IPV4, HostSpec, Lab, NODE_IPV4, PodSpec, Topology, netns, require_root,
};

const MIB: u64 = 1 << 20;

/// Two pods in two namespaces, two outside hosts.
fn topology() -> Topology {
    Topology::new()
        .namespace("tenant-a", [("tenant", "a")])
        .pod(PodSpec::new("tenant-a", "web").label("app", "web").port(
            Some("http"),
            8080,
            Protocol::Tcp,
        ))
        .pod(
            PodSpec::new("tenant-b", "batch")
                .label("app", "batch")
                .port(Some("dns"), 53, Protocol::Udp)
                .port(None, 9090, Protocol::Tcp),
        )
        .host(HostSpec::new("example", HOST_A_IPV4).ipv6("2001:db8::10".parse().unwrap()))
        .host(HostSpec::new("api", HOST_B_IPV4).ipv6("2001:db8::20".parse().unwrap()))
}

fn build(topology: Topology) -> Lab {
    require_root();
    topology.build().expect("building the lab")
}

/// Names of the network namespaces `ip netns list` shows.
fn netns_list() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    assert!(out.status.success(), "ip netns list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Interface names in the root namespace (this process's).
fn root_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("running ip link show");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

fn assert_gone(names: &[String], prefix: &str) {
    let listed = netns_list();
    let left: Vec<_> = names.iter().filter(|n| listed.contains(*n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !listed.iter().any(|n| n.starts_with(&format!("{prefix}-"))),
        "a namespace with the lab's prefix {prefix} is left: {listed:?}"
    );
    let links = root_links();
    assert!(
        !links
            .iter()
            .any(|l| l.starts_with("ckpod") || l.starts_with("ckout")),
        "a lab veth is in the root namespace: {links:?}"
    );
}

fn tcp_server(
    netns_name: &str,
    listen: &str,
) -> chokepoint_lab::probe::ServerHandle<chokepoint_lab::probe::TcpServeReport> {
    let args = TcpServeArgs::new(listen.parse().unwrap());
    netns::run_in(netns_name, || TcpServer::bind(&args))
        .expect("entering the host namespace")
        .expect("binding the TCP server")
        .spawn()
        .expect("starting the TCP server")
}

fn udp_server(
    netns_name: &str,
    listen: &str,
) -> chokepoint_lab::probe::ServerHandle<chokepoint_lab::probe::UdpServeReport> {
    let args = UdpServeArgs::new(listen.parse().unwrap());
    netns::run_in(netns_name, || UdpServer::bind(&args))
        .expect("entering the host namespace")
        .expect("binding the UDP server")
        .spawn()
        .expect("starting the UDP server")
}

fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_reach_outside_hosts_through_the_node_with_their_own_address() {
    let lab = build(topology());
    let web = lab.pod("tenant-a", "web").unwrap();
    let batch = lab.pod("tenant-b", "batch").unwrap();
    let example = lab.host("example").unwrap();
    let api = lab.host("api").unwrap();
    assert_eq!(web.ipv4.to_string(), "10.244.1.10");
    assert_eq!(batch.ipv4.to_string(), "10.244.1.11");
    assert_eq!(web.node_iface, "ckpod0");
    assert_eq!(example.node_iface, "ckout0");
    assert_eq!(lab.pod_iface_pattern(), "ckpod*");
    assert!(web.ipv6.is_none(), "IPv6 is off unless asked for");

    let server_a = tcp_server(&example.netns, "0.0.0.0:7000");
    let server_b = tcp_server(&api.netns, "0.0.0.0:7000");

    let to_a = SocketAddr::new(IpAddr::V4(example.ipv4), 7000);
    let report = netns::run_in(&web.netns, || tcp_connect(&TcpConnectArgs::new(to_a, MIB)))
        .expect("entering the pod");
    assert!(report.echo_ok, "{report:#?}");
    assert_eq!((report.bytes_sent, report.bytes_echoed), (MIB, MIB));
    assert!(report.connected && !report.reset && !report.timed_out);
    assert_eq!(
        report.peer_seen.unwrap().ip(),
        IpAddr::V4(web.ipv4),
        "no NAT on the way"
    );

    let to_b = SocketAddr::new(IpAddr::V4(api.ipv4), 7000);
    let report = netns::run_in(&batch.netns, || {
        tcp_connect(&TcpConnectArgs::new(to_b, MIB))
    })
    .expect("entering the pod");
    assert!(report.echo_ok, "{report:#?}");
    assert_eq!(report.peer_seen.unwrap().ip(), IpAddr::V4(batch.ipv4));

    // A closed port on a lab host is refused, and that is told apart from a timeout.
    let closed = SocketAddr::new(IpAddr::V4(example.ipv4), 7001);
    let report = netns::run_in(&web.netns, || {
        tcp_connect(&TcpConnectArgs::new(closed, 10).timeout_ms(2000))
    })
    .unwrap();
    assert!(
        report.reset && !report.timed_out && !report.connected,
        "{report:#?}"
    );

    let a = server_a.stop().unwrap();
    assert_eq!(a.connections, 1);
    assert_eq!(a.bytes_echoed, MIB);
    assert_eq!(a.peers[0].ip(), IpAddr::V4(web.ipv4));
    let b = server_b.stop().unwrap();
    assert_eq!(b.peers[0].ip(), IpAddr::V4(batch.ipv4));
    lab.teardown().expect("teardown");
}

#[test]
fn udp_goes_both_ways() {
    let lab = build(topology());
    let batch = lab.pod("tenant-b", "batch").unwrap();
    let api = lab.host("api").unwrap();
    let server = udp_server(&api.netns, "0.0.0.0:5353");
    let to = SocketAddr::new(IpAddr::V4(api.ipv4), 5353);
    let report = netns::run_in(&batch.netns, || udp_send(&UdpSendArgs::new(to))).unwrap();
    assert!(report.answered, "{report:#?}");
    assert_eq!(report.peer_seen.unwrap().ip(), IpAddr::V4(batch.ipv4));
    let served = server.stop().unwrap();
    assert_eq!(served.datagrams, 1);
}

#[test]
fn ipv6_when_asked_for() {
    let lab = build(topology().ipv6(true));
    let web = lab.pod("tenant-a", "web").unwrap();
    let example = lab.host("example").unwrap();
    let web6 = web.ipv6.expect("pods get IPv6");
    assert_eq!(web6.to_string(), "fd00:244:1::10");
    let host6 = example.ipv6.expect("the host keeps its IPv6");
    let server = tcp_server(&example.netns, "[::]:7000");
    let udp = udp_server(&example.netns, "[::]:5353");
    let report = netns::run_in(&web.netns, || {
        tcp_connect(&TcpConnectArgs::new(
            SocketAddr::new(host6.into(), 7000),
            256 * 1024,
        ))
    })
    .unwrap();
    assert!(report.echo_ok, "{report:#?}");
    assert_eq!(report.peer_seen.unwrap().ip(), IpAddr::V6(web6));
    let report = netns::run_in(&web.netns, || {
        udp_send(&UdpSendArgs::new(SocketAddr::new(host6.into(), 5353)))
    })
    .unwrap();
    assert!(report.answered, "{report:#?}");
    assert_eq!(report.peer_seen.unwrap().ip(), IpAddr::V6(web6));
    // IPv4 still works on the dual-stack listener, and is reported as IPv4.
    let report = netns::run_in(&web.netns, || {
        tcp_connect(&TcpConnectArgs::new(
            SocketAddr::new(example.ipv4.into(), 7000),
            1000,
        ))
    })
    .unwrap();
    assert!(report.echo_ok, "{report:#?}");
    assert_eq!(report.peer_seen.unwrap().ip(), IpAddr::V4(web.ipv4));
    drop((server, udp));
}

#[test]
fn the_node_forwards_and_relaxes_rp_filter_only_inside_the_lab() {
    let root_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let lab = build(topology());
    let sysctl = |name: &str| {
        let path = format!("/proc/sys/net/ipv4/{name}");
        // /proc/sys/net shows the namespace of the thread that opens it.
        netns::run_in(lab.node_netns(), || std::fs::read_to_string(&path))
            .unwrap()
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(sysctl("ip_forward"), "1");
    assert_eq!(sysctl("conf/all/rp_filter"), "0");
    assert_eq!(sysctl("conf/lo/rp_filter"), "0");
    assert_eq!(sysctl("conf/ckpod0/rp_filter"), "0");
    assert_eq!(sysctl("conf/ckout1/rp_filter"), "0");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        root_forward,
        "the root namespace's forwarding must not change"
    );

    // The node routes to the pods and hosts only; there is no way out to the real network.
    let routes = ip_output(&["-n", lab.node_netns(), "route", "show"]);
    assert!(!routes.contains("default"), "{routes}");
    for addr in [
        "10.244.1.10 dev ckpod0",
        "10.244.1.11 dev ckpod1",
        "192.0.2.10 dev ckout0",
        "198.51.100.20 dev ckout1",
    ] {
        assert!(routes.contains(addr), "no `{addr}` in\n{routes}");
    }
    let pod = &lab.pods()[0];
    let pod_routes = ip_output(&["-n", &pod.netns, "route", "show"]);
    assert!(
        pod_routes.contains(&format!("default via {NODE_IPV4} dev eth0")),
        "{pod_routes}"
    );
    let host_routes = ip_output(&["-n", &lab.hosts()[0].netns, "route", "show"]);
    assert!(
        host_routes.contains(&format!("default via {NODE_IPV4} dev eth0")),
        "{host_routes}"
    );
    let links = ip_output(&["-n", &pod.netns, "-o", "link", "show"]);
    assert!(links.contains(": eth0@"), "{links}");
}

#[test]
fn the_inventory_loads_as_the_lab() {
    let lab = build(
        topology()
            .ipv6(true)
            .node_name("node-7")
            .namespace_annotation(
                "tenant-a",
                "iam.amazonaws.com/allowed-roles",
                r#"["app-*"]"#,
            )
            .pod(
                PodSpec::new("tenant-a", "creds")
                    .service_account("app-sa")
                    .annotation("iam.amazonaws.com/role", "app-reader"),
            ),
    );
    let yaml = lab.inventory_yaml();
    let loaded = load_str(
        Path::new("lab-inventory.yaml"),
        &yaml,
        UnknownFields::Reject,
    );
    assert!(
        !loaded.diagnostics.has_errors(),
        "{:?}\n{yaml}",
        loaded.diagnostics
    );
    let inventory = loaded.world.inventory;
    assert_eq!(inventory, lab.inventory(), "{yaml}");

    let ns: Vec<_> = inventory
        .namespaces
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(ns, ["tenant-a", "tenant-b"]);
    assert_eq!(inventory.namespaces[0].labels["tenant"], "a");
    let web = inventory.pods.iter().find(|p| p.name == "web").unwrap();
    assert_eq!(web.namespace, "tenant-a");
    assert_eq!(web.labels["app"], "web");
    assert_eq!(
        web.ips,
        [
            IpAddr::from([10, 244, 1, 10]),
            "fd00:244:1::10".parse().unwrap()
        ]
    );
    assert_eq!(web.named_port("http").map(|p| p.port), Some(8080));
    assert_eq!(web.node_name.as_deref(), Some("node-7"));
    let batch = inventory.pods.iter().find(|p| p.name == "batch").unwrap();
    assert_eq!(batch.ports.len(), 2);
    let creds = inventory.pods.iter().find(|p| p.name == "creds").unwrap();
    assert_eq!(creds.service_account.as_deref(), Some("app-sa"));
    assert_eq!(creds.annotations["iam.amazonaws.com/role"], "app-reader");
    assert_eq!(web.service_account, None);
    assert_eq!(
        inventory.namespaces[0].annotations["iam.amazonaws.com/allowed-roles"],
        r#"["app-*"]"#
    );
    assert_eq!(inventory.nodes.len(), 1);
    assert_eq!(inventory.nodes[0].name, "node-7");
    assert_eq!(
        inventory.nodes[0].addresses,
        [IpAddr::from(NODE_IPV4), "fd00:10::1".parse().unwrap()]
    );
}

#[test]
fn labs_in_parallel_do_not_collide() {
    require_root();
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let a = s.spawn(|| build(topology()));
        let b = s.spawn(|| build(topology()));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_ne!(labs[0].prefix(), labs[1].prefix());
    let a: BTreeSet<_> = labs[0].netns_names().into_iter().collect();
    let b: BTreeSet<_> = labs[1].netns_names().into_iter().collect();
    assert!(a.is_disjoint(&b));
    // The same addresses and ports in both labs, at the same time: each sees only its own.
    let servers: Vec<_> = labs
        .iter()
        .map(|lab| tcp_server(&lab.hosts()[0].netns, "0.0.0.0:7000"))
        .collect();
    std::thread::scope(|s| {
        let runs: Vec<_> = labs
            .iter()
            .map(|lab| {
                s.spawn(move || {
                    let to = SocketAddr::new(lab.hosts()[0].ipv4.into(), 7000);
                    netns::run_in(&lab.pods()[0].netns, || {
                        tcp_connect(&TcpConnectArgs::new(to, MIB))
                    })
                    .unwrap()
                })
            })
            .collect();
        for run in runs {
            let report = run.join().unwrap();
            assert!(report.echo_ok, "{report:#?}");
        }
    });
    for server in servers {
        assert_eq!(
            server.stop().unwrap().connections,
            1,
            "each lab's server saw its own pod only"
        );
    }
    let prefixes: Vec<String> = labs.iter().map(|l| l.prefix().to_owned()).collect();
    let names: Vec<String> = labs.iter().flat_map(|l| l.netns_names()).collect();
    drop(labs);
    for prefix in &prefixes {
        assert_gone(&names, prefix);
    }
}

#[test]
fn drop_removes_every_namespace_and_veth() {
    let lab = build(topology().ipv6(true));
    let names = lab.netns_names();
    let prefix = lab.prefix().to_owned();
    assert_eq!(names.len(), 5, "node, 2 pods, 2 hosts: {names:?}");
    let listed = netns_list();
    for name in &names {
        assert!(
            name.starts_with(&prefix) && listed.contains(name),
            "{name} missing: {listed:?}"
        );
    }
    // The lab's veths were never in the root namespace, not even while it exists.
    assert_gone(&[], "no-such-prefix");
    drop(lab);
    assert_gone(&names, &prefix);
}

#[test]
fn a_panicking_test_body_still_tears_down() {
    require_root();
    let seen: Mutex<Option<(Vec<String>, String)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = build(topology());
        *seen.lock().unwrap() = Some((lab.netns_names(), lab.prefix().to_owned()));
        assert!(netns_list().contains(lab.node_netns()));
        panic!("expected panic: a test body failing while a lab is up");
    }));
    assert!(result.is_err());
    let (names, prefix) = seen.lock().unwrap().take().expect("the lab was built");
    assert_gone(&names, &prefix);
}

const CHILD_ENV: &str = "CHOKEPOINT_LAB_TEST_CHILD";

/// Not a test on its own: the child process of
/// [`a_process_killed_by_ctrl_c_leaves_nothing_behind`], which runs this test binary with
/// `CHOKEPOINT_LAB_TEST_CHILD=1`. Without that variable it returns at once.
#[test]
fn child_process_holding_a_lab() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let lab = build(topology());
    println!("\nLAB {} {}", lab.prefix(), lab.netns_names().join(" "));
    std::thread::sleep(Duration::from_secs(60));
    // Reaching this means the parent did not kill us; still clean up.
    drop(lab);
}

#[test]
fn a_process_killed_by_ctrl_c_leaves_nothing_behind() {
    use std::os::unix::process::CommandExt as _;
    require_root();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_holding_a_lab",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, like a foreground job a terminal sends Ctrl-C to.
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print `test … ... ` in front of it on the same line.
            if let Some(at) = line.find("LAB ") {
                let _ = tx.send(line[at + 4..].to_owned());
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child never reported its lab: {e}");
        }
    };
    let mut words = line.split_whitespace().map(str::to_owned);
    let prefix = words.next().unwrap();
    let names: Vec<String> = words.collect();
    assert!(netns_list().contains(&names[0]), "the child's lab exists");

    // Ctrl-C: SIGINT to the whole foreground process group. A shell may have started this
    // test with SIGINT ignored (background jobs of non-interactive shells are), and the child
    // inherits that; then SIGKILL to the group does what Ctrl-C would have done.
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed: {status}");

    // The guardian cleans up right after the child is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while names.iter().any(|n| netns::exists(n)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_gone(&names, &prefix);
}

#[test]
fn silence_is_a_timeout() {
    let lab = build(topology());
    let web = lab.pod("tenant-a", "web").unwrap();
    let example = lab.host("example").unwrap();
    let _server = tcp_server(&example.netns, "0.0.0.0:7000");
    let udp = udp_server(&example.netns, "0.0.0.0:5353");
    // Inside the outside host's own namespace: it silently drops what it would send the pod.
    ip_output(&[
        "-n",
        &example.netns,
        "route",
        "add",
        "blackhole",
        &format!("{}/32", web.ipv4),
    ]);
    let to = SocketAddr::new(example.ipv4.into(), 7000);
    let report = netns::run_in(&web.netns, || {
        tcp_connect(&TcpConnectArgs::new(to, 10).timeout_ms(300))
    })
    .unwrap();
    assert!(
        report.timed_out && !report.reset && !report.connected,
        "{report:#?}"
    );
    let report = netns::run_in(&web.netns, || {
        udp_send(&UdpSendArgs::new(SocketAddr::new(example.ipv4.into(), 5353)).timeout_ms(300))
    })
    .unwrap();
    assert!(
        report.timed_out && !report.answered && !report.refused,
        "{report:#?}"
    );
    drop(udp);
}

// ------------------------------------------------------------------ probes on loopback only

#[test]
fn probe_tcp_echo_on_loopback() {
    let server = TcpServer::bind(&TcpServeArgs::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let handle = server.spawn().unwrap();
    let report = tcp_connect(&TcpConnectArgs::new(handle.local_addr(), 300_000));
    assert!(report.echo_ok, "{report:?}");
    assert_eq!(report.bytes_echoed, 300_000);
    assert_eq!(report.peer_seen.unwrap().ip(), IpAddr::from([127, 0, 0, 1]));
    assert!(report.connect_ms.is_some());
    let empty = tcp_connect(&TcpConnectArgs::new(handle.local_addr(), 0));
    assert!(empty.echo_ok, "{empty:?}");
    let served = handle.stop().unwrap();
    assert_eq!(served.connections, 2);
    assert_eq!(served.bytes_echoed, 300_000);
}

#[test]
fn probe_refused_is_a_reset_and_a_silent_server_a_timeout() {
    let (_held, closed) = closed_loopback_port(socket2::Type::STREAM);
    let report = tcp_connect(&TcpConnectArgs::new(closed, 10));
    assert!(
        report.reset && !report.timed_out && !report.connected,
        "{report:?}"
    );
    // A listener that never accepts completes the handshake but never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let report =
        tcp_connect(&TcpConnectArgs::new(silent.local_addr().unwrap(), 10).timeout_ms(200));
    assert!(
        report.connected && report.timed_out && !report.reset,
        "{report:?}"
    );
    // A server that cuts the connection with RST.
    let rude = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = rude.local_addr().unwrap();
    let cutter = std::thread::spawn(move || {
        let (conn, _) = rude.accept().unwrap();
        nix::sys::socket::setsockopt(
            &conn,
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(conn);
    });
    let report = tcp_connect(&TcpConnectArgs::new(addr, 10).timeout_ms(2000));
    cutter.join().unwrap();
    assert!(
        report.connected && report.reset && !report.timed_out,
        "{report:?}"
    );
}

#[test]
fn probe_udp_on_loopback() {
    let handle = UdpServer::bind(&UdpServeArgs::new("127.0.0.1:0".parse().unwrap()))
        .unwrap()
        .spawn()
        .unwrap();
    let report = udp_send(&UdpSendArgs::new(handle.local_addr()));
    assert!(report.answered, "{report:?}");
    assert_eq!(report.peer_seen.unwrap().ip(), IpAddr::from([127, 0, 0, 1]));
    assert_eq!(handle.stop().unwrap().datagrams, 1);
    let (_held, closed) = closed_loopback_port(socket2::Type::DGRAM);
    let report = udp_send(&UdpSendArgs::new(closed).timeout_ms(500));
    assert!(report.refused && !report.answered, "{report:?}");
}

/// A loopback port that refuses, held for as long as the socket lives. A port that is merely free
/// at the time of the check can be taken by anything else on the machine before the probe
/// arrives; this one is bound (without `SO_REUSEADDR`, so nothing else can bind it, and no client
/// gets it as its source port) but never answers: a TCP socket that is bound and not listening
/// gets a reset for every SYN, and a UDP socket connected to another port is not a match for
/// datagrams from anyone else, so they are refused with port unreachable.
fn closed_loopback_port(kind: socket2::Type) -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, kind, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    if kind == socket2::Type::DGRAM {
        // Port 9 (discard): any other peer would do, as long as it is not the probe.
        socket
            .connect(&SocketAddr::from(([127, 0, 0, 1], 9)).into())
            .unwrap();
    }
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}
