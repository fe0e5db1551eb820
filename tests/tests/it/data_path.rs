//! The data path end to end: real capture rules, the real gateway, real traffic between lab
//! namespaces.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4, HostSpec, Lab, PodSpec, Topology};
use chokepoint_tests::{
    GatewayFiles, HeldConnection, require_root, start_gateway, tcp_connect, tcp_server, teardown,
    udp_send, udp_server,
};

pub(crate) const DENY_HOST_B: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-host-b}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: tenant-a}}}
  egress:
  - name: no-host-b
    action: Deny
    to: [{networks: [198.51.100.20/32]}]
";

pub(crate) fn lab() -> Lab {
    require_root();
    Topology::new()
        .namespace("tenant-a", [("tenant", "a")])
        .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
        .host(HostSpec::new("host-a", HOST_A_IPV4))
        .host(HostSpec::new("host-b", HOST_B_IPV4))
        .build()
        .expect("build lab")
}

fn pod_ip(lab: &Lab) -> IpAddr {
    lab.pod("tenant-a", "web").unwrap().ips()[0]
}

fn pod_netns(lab: &Lab) -> String {
    lab.pod("tenant-a", "web").unwrap().netns.clone()
}

fn host_netns(lab: &Lab, name: &str) -> String {
    lab.host(name).unwrap().netns.clone()
}

#[test]
fn allowed_tcp_is_relayed_byte_exact_and_keeps_the_pod_source_ip() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", "");
    let _gw = start_gateway(&lab, &files);
    let server = tcp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
    );

    let report = tcp_connect(
        &pod_netns(&lab),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
        1 << 20,
        Duration::from_secs(10),
    );
    assert!(report.echo_ok, "{report:?}");
    assert_eq!(report.bytes_echoed, 1 << 20);
    assert_eq!(
        report.peer_seen.map(|p| p.ip()),
        Some(pod_ip(&lab)),
        "the destination must see the pod's own IP"
    );
    server.stop().unwrap();
    assert!(
        files.audit_records().is_empty(),
        "allowed connections are not audited"
    );
    teardown(lab);
}

#[test]
fn denied_tcp_is_reset_and_audited_once() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", "");
    let _gw = start_gateway(&lab, &files);
    let server = tcp_server(
        &host_netns(&lab, "host-b"),
        SocketAddr::new(HOST_B_IPV4.into(), 8080),
    );

    let started = Instant::now();
    let report = tcp_connect(
        &pod_netns(&lab),
        SocketAddr::new(HOST_B_IPV4.into(), 8080),
        1024,
        Duration::from_secs(5),
    );
    let took = started.elapsed();
    assert!(
        report.reset && !report.echo_ok && !report.timed_out,
        "{report:?}"
    );
    // A reset, not a drop (the probe tells the two apart); the time is reported, not asserted.
    eprintln!("denied connection reset after {took:?}");

    let records = files.wait_audit(1, Duration::from_secs(5));
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r["verdict"], "deny");
    assert_eq!(r["reason"], "rule");
    assert_eq!(r["node"], lab.node().name.as_str());
    assert_eq!(r["source"]["ip"], pod_ip(&lab).to_string());
    assert_eq!(r["source"]["namespace"], "tenant-a");
    assert_eq!(r["source"]["pod"], "web");
    assert_eq!(r["destination"]["ip"], HOST_B_IPV4.to_string());
    assert_eq!(r["destination"]["port"], 8080);
    assert_eq!(r["destination"]["protocol"], "tcp");
    assert_eq!(r["decided_by"]["tier"], "Admin");
    assert_eq!(r["decided_by"]["policy"], "deny-host-b");
    assert_eq!(r["decided_by"]["rule"], "no-host-b");
    assert_eq!(r["decided_by"]["rule_index"], 0);
    assert_eq!(r["decided_by"]["action"], "Deny");
    assert_eq!(r["count"], 1);
    let served = server.stop().unwrap();
    assert_eq!(
        served.connections, 0,
        "a denied connection must never reach the destination"
    );
    teardown(lab);
}

#[test]
fn udp_allowed_and_denied_flows() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", "");
    let _gw = start_gateway(&lab, &files);
    let a = udp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 5353),
    );
    let b = udp_server(
        &host_netns(&lab, "host-b"),
        SocketAddr::new(HOST_B_IPV4.into(), 5353),
    );

    let ok = udp_send(
        &pod_netns(&lab),
        SocketAddr::new(HOST_A_IPV4.into(), 5353),
        Duration::from_secs(5),
    );
    assert!(ok.answered, "{ok:?}");
    assert_eq!(
        ok.peer_seen.map(|p| p.ip()),
        Some(pod_ip(&lab)),
        "the destination must see the pod's own IP"
    );

    for _ in 0..3 {
        let denied = udp_send(
            &pod_netns(&lab),
            SocketAddr::new(HOST_B_IPV4.into(), 5353),
            Duration::from_millis(500),
        );
        assert!(!denied.answered, "{denied:?}");
    }
    let records = files.wait_audit(1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    let records_later = files.audit_records();
    assert!(!records.is_empty());
    assert_eq!(records_later[0]["destination"]["protocol"], "udp");
    assert_eq!(
        records_later[0]["destination"]["ip"],
        HOST_B_IPV4.to_string()
    );
    let total: u64 = records_later
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    // Each udp_send uses a new source port, so each is a new flow: three flows, three
    // denials, however the audit log collapsed them.
    assert_eq!(total, 3, "{records_later:#?}");
    assert_eq!(
        b.stop().unwrap().datagrams,
        0,
        "denied datagrams must never reach the destination"
    );
    a.stop().unwrap();
    teardown(lab);
}

/// A TCP destination on the node itself (a hostNetwork service on the node's address): the
/// gateway's upstream connection keeps the pod's address, and the local service's replies
/// come back to the gateway's socket instead of being routed out to the pod.
#[test]
fn node_local_tcp_destinations_work_through_the_gateway() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", "");
    let gw = start_gateway(&lab, &files);
    let node = SocketAddr::new(chokepoint_lab::NODE_IPV4.into(), 9100);
    let tcp = tcp_server(lab.node_netns(), node);
    let report = tcp_connect(&pod_netns(&lab), node, 256 * 1024, Duration::from_secs(5));
    assert!(report.echo_ok, "{report:?}");
    assert_eq!(
        report.peer_seen.map(|p| p.ip()),
        Some(pod_ip(&lab)),
        "the node-local service sees the pod's own IP"
    );
    assert_eq!(tcp.stop().unwrap().connections, 1);
    assert!(gw.stop().success());
    teardown(lab);
}

#[test]
fn pod_to_pod_on_the_same_node_goes_through_the_gateway() {
    require_root();
    let lab = Topology::new()
        .namespace("tenant-a", [("tenant", "a")])
        .namespace("tenant-b", [("tenant", "b")])
        .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
        .pod(PodSpec::new("tenant-b", "db").label("app", "db"))
        .build()
        .expect("build lab");
    let deny_b = "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-tenant-b-db}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {tenant: a}}}
  egress:
  - {name: no-5432, action: Deny, to: [{namespaces: {matchLabels: {tenant: b}}}], protocols: [{tcp: {destinationPort: {number: 5432}}}]}
";
    let files = GatewayFiles::new(&lab, &[("p.yaml", deny_b)], "tproxy", "");
    let gw = start_gateway(&lab, &files);
    let db = lab.pod("tenant-b", "db").unwrap();
    let web = lab.pod("tenant-a", "web").unwrap();
    let s80 = tcp_server(&db.netns, SocketAddr::new(db.ipv4.into(), 80));
    let s5432 = tcp_server(&db.netns, SocketAddr::new(db.ipv4.into(), 5432));
    let ok = tcp_connect(
        &web.netns,
        SocketAddr::new(db.ipv4.into(), 80),
        64 * 1024,
        Duration::from_secs(5),
    );
    assert!(ok.echo_ok, "{ok:?}");
    assert_eq!(ok.peer_seen.map(|p| p.ip()), Some(IpAddr::from(web.ipv4)));
    let denied = tcp_connect(
        &web.netns,
        SocketAddr::new(db.ipv4.into(), 5432),
        64,
        Duration::from_secs(5),
    );
    assert!(denied.reset, "{denied:?}");
    let records = files.wait_audit(1, Duration::from_secs(5));
    assert_eq!(records[0]["destination"]["namespace"], "tenant-b");
    assert_eq!(records[0]["destination"]["pod"], "db");
    s80.stop().unwrap();
    assert_eq!(s5432.stop().unwrap().connections, 0);
    assert!(gw.stop().success());
    teardown(lab);
}

#[test]
fn redirect_mode_decides_tcp_and_drops_udp() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "redirect", "");
    let gw = start_gateway(&lab, &files);
    let a = tcp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
    );
    let b = tcp_server(
        &host_netns(&lab, "host-b"),
        SocketAddr::new(HOST_B_IPV4.into(), 8080),
    );
    let u = udp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 5353),
    );

    let ok = tcp_connect(
        &pod_netns(&lab),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
        256 * 1024,
        Duration::from_secs(5),
    );
    assert!(ok.echo_ok, "{ok:?}");
    let denied = tcp_connect(
        &pod_netns(&lab),
        SocketAddr::new(HOST_B_IPV4.into(), 8080),
        64,
        Duration::from_secs(5),
    );
    assert!(denied.reset, "{denied:?}");
    let records = files.wait_audit(1, Duration::from_secs(5));
    assert_eq!(records[0]["destination"]["ip"], HOST_B_IPV4.to_string());
    assert_eq!(records[0]["destination"]["port"], 8080);
    // REDIRECT mode has no UDP proxy: pod UDP is dropped, never let through.
    let dropped = udp_send(
        &pod_netns(&lab),
        SocketAddr::new(HOST_A_IPV4.into(), 5353),
        Duration::from_millis(500),
    );
    assert!(!dropped.answered, "{dropped:?}");
    assert_eq!(u.stop().unwrap().datagrams, 0);
    a.stop().unwrap();
    assert_eq!(b.stop().unwrap().connections, 0);
    assert!(gw.stop().success());
    teardown(lab);
}

#[test]
fn killed_gateway_fails_closed_and_a_restart_restores_traffic() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", "");
    let server = tcp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
    );
    let udp = udp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 5353),
    );
    let to = SocketAddr::new(HOST_A_IPV4.into(), 8080);

    let gw = start_gateway(&lab, &files);
    assert!(tcp_connect(&pod_netns(&lab), to, 1024, Duration::from_secs(5)).echo_ok);
    gw.kill();
    assert!(
        chokepoint_tests::nft_table(lab.node_netns()).is_some(),
        "SIGKILL must leave the capture rules in place"
    );
    let tcp = tcp_connect(&pod_netns(&lab), to, 1024, Duration::from_millis(1500));
    assert!(
        !tcp.connected && !tcp.echo_ok,
        "with the gateway down a pod must reach nothing: {tcp:?}"
    );
    let u = udp_send(
        &pod_netns(&lab),
        SocketAddr::new(HOST_A_IPV4.into(), 5353),
        Duration::from_millis(500),
    );
    assert!(!u.answered, "{u:?}");

    let gw = start_gateway(&lab, &files);
    let again = tcp_connect(&pod_netns(&lab), to, 1024, Duration::from_secs(5));
    assert!(again.echo_ok, "{again:?}");
    assert!(gw.stop().success());
    assert!(
        chokepoint_tests::nft_table(lab.node_netns()).is_none(),
        "an orderly stop removes the rules"
    );
    // Only the two connections made while a gateway ran reached the server.
    assert_eq!(server.stop().unwrap().connections, 2);
    assert_eq!(udp.stop().unwrap().datagrams, 0);
    teardown(lab);
}

/// `removeOnShutdown: false` (the DaemonSet's setting): SIGTERM drains but keeps the rules, so
/// an upgrade never opens egress; the next gateway takes them over; `chokepoint redirect
/// --remove` takes them away for good.
#[test]
fn a_gateway_that_keeps_its_rules_on_sigterm_leaves_pods_closed_until_the_next_one() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", "");
    let settings = std::fs::read_to_string(files.settings()).unwrap();
    std::fs::write(
        files.settings(),
        settings.replacen("capture:\n", "capture:\n  removeOnShutdown: false\n", 1),
    )
    .unwrap();
    let server = tcp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
    );
    let to = SocketAddr::new(HOST_A_IPV4.into(), 8080);
    let gw = start_gateway(&lab, &files);
    assert!(tcp_connect(&pod_netns(&lab), to, 1024, Duration::from_secs(5)).echo_ok);
    assert!(gw.stop().success(), "an orderly stop");
    assert!(
        chokepoint_tests::nft_table(lab.node_netns()).is_some(),
        "the rules stay"
    );
    let closed = tcp_connect(&pod_netns(&lab), to, 1024, Duration::from_millis(1500));
    assert!(!closed.connected, "no gateway, no egress: {closed:?}");

    let gw = start_gateway(&lab, &files);
    assert!(tcp_connect(&pod_netns(&lab), to, 1024, Duration::from_secs(5)).echo_ok);
    gw.kill();
    let removed = lab
        .command(lab.node_netns(), chokepoint_tests::chokepoint_bin())
        .args(["redirect", "--remove", "--config"])
        .arg(files.settings())
        .output()
        .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(chokepoint_tests::nft_table(lab.node_netns()).is_none());
    assert_eq!(server.stop().unwrap().connections, 2);
    teardown(lab);
}

#[test]
fn reload_flips_new_connections_and_keeps_established_ones() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[], "tproxy", "");
    let mut gw = start_gateway(&lab, &files);
    let server = tcp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
    );
    let to = SocketAddr::new(HOST_A_IPV4.into(), 8080);
    let pod_ns = pod_netns(&lab);

    // An established connection, held open while the policy changes.
    let held = chokepoint_lab::netns::run_in(&pod_ns, || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .unwrap()
    .expect("connect before the reload");
    let mut held_reader = std::io::BufReader::new(held.try_clone().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut held_reader, &mut line).unwrap();
    assert!(line.starts_with("peer "), "{line}");

    files.write_policy(
        "deny.yaml",
        &DENY_HOST_B.replace("198.51.100.20/32", "192.0.2.10/32"),
    );
    gw.wait_for_log("snapshot reloaded", Duration::from_secs(10));
    let denied = tcp_connect(&pod_ns, to, 64, Duration::from_secs(5));
    assert!(
        denied.reset,
        "new connections follow the new snapshot: {denied:?}"
    );

    use std::io::{Read, Write};
    let mut held_w = held;
    held_w.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    held_reader.read_exact(&mut echo).unwrap();
    assert_eq!(
        &echo, b"still here",
        "an established connection survives the reload"
    );

    // An invalid update is refused and the last good snapshot stays.
    files.write_policy("deny.yaml", "kind: ClusterNetworkPolicy\n");
    gw.wait_for_log("reload refused", Duration::from_secs(10));
    assert!(
        tcp_connect(&pod_ns, to, 64, Duration::from_secs(5)).reset,
        "the last good snapshot stays in force"
    );
    drop(held_w);
    drop(held_reader);
    server.stop().unwrap();
    assert!(gw.stop().success());
    teardown(lab);
}

#[test]
fn admin_endpoint_reports_readiness_and_metrics() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", "");
    let gw = start_gateway(&lab, &files);
    assert_eq!(chokepoint_tests::admin_get(&lab, "/healthz").0, 200);
    assert_eq!(chokepoint_tests::admin_get(&lab, "/readyz").0, 200);
    let denied = tcp_connect(
        &pod_netns(&lab),
        SocketAddr::new(HOST_B_IPV4.into(), 80),
        16,
        Duration::from_secs(5),
    );
    assert!(denied.reset);
    let (status, metrics) = chokepoint_tests::admin_get(&lab, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"chokepoint_connections_total{protocol="tcp",verdict="deny",tier="admin",reason="rule"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("chokepoint_snapshot_generation 1"),
        "{metrics}"
    );
    let (status, dump) = chokepoint_tests::admin_get(&lab, "/config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["snapshot"]["cluster_policies"], 1);
    assert!(gw.stop().success());
    teardown(lab);
}

#[test]
fn recheck_on_reload_closes_connections_a_new_snapshot_denies() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[], "tproxy", "");
    let settings = std::fs::read_to_string(files.settings()).unwrap();
    std::fs::write(
        files.settings(),
        settings.replace(
            "  reloadInterval: 200ms\n",
            "  reloadInterval: 200ms\n  recheckOnReload: true\n",
        ),
    )
    .unwrap();
    let mut gw = start_gateway(&lab, &files);
    let server = tcp_server(
        &host_netns(&lab, "host-a"),
        SocketAddr::new(HOST_A_IPV4.into(), 8080),
    );
    let to = SocketAddr::new(HOST_A_IPV4.into(), 8080);
    let mut held = HeldConnection::open(&pod_netns(&lab), to);

    files.write_policy(
        "deny.yaml",
        &DENY_HOST_B.replace("198.51.100.20/32", "192.0.2.10/32"),
    );
    gw.wait_for_log("snapshot reloaded", Duration::from_secs(10));
    let ended = held.read_to_end();
    assert!(
        matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            || matches!(ended, Ok(0)),
        "the established connection must be closed by the recheck: {ended:?}"
    );
    let records = files.wait_audit(1, Duration::from_secs(5));
    assert_eq!(records[0]["destination"]["ip"], HOST_A_IPV4.to_string());
    server.stop().unwrap();
    assert!(gw.stop().success());
    teardown(lab);
}

#[test]
fn a_conflicting_leftover_is_reported_with_what_to_do() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[], "tproxy", "");
    // Someone else's rule on our fwmark, pointing at another table.
    let added = lab
        .command(lab.node_netns(), "ip")
        .args([
            "rule",
            "add",
            "pref",
            "100",
            "fwmark",
            "0x1000/0x3000",
            "lookup",
            "999",
        ])
        .status()
        .unwrap();
    assert!(added.success());
    let out = lab
        .command(lab.node_netns(), chokepoint_tests::chokepoint_bin())
        .args(["run", "--config"])
        .arg(files.settings())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the gateway must refuse to start over a foreign rule:\n{stderr}"
    );
    assert!(
        stderr.contains("ip -4 rule del") || stderr.contains("ip rule del"),
        "the error says how to remove it:\n{stderr}"
    );
    assert!(
        chokepoint_tests::nft_table(lab.node_netns()).is_none(),
        "nothing was installed"
    );
    teardown(lab);
}
