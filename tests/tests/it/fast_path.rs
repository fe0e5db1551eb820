//! The kernel fast path end to end (`capture.l4: kernel`): the real gateway reads the queues,
//! allowed flows stay in the kernel (the proxy relays not a byte of them) and keep the pod's
//! address, denied ones still reach the proxy and are reset and audited once, UDP to a port a
//! process on the node itself holds works, and a reload that denies a live flow resets it.

use std::net::SocketAddr;
use std::time::Duration;

use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4, NODE_IPV4};
use chokepoint_tests::{
    GatewayFiles, admin_get, start_gateway, tcp_connect, tcp_server, teardown, udp_send, udp_server,
};

use crate::data_path::{DENY_HOST_B, lab};

/// The capture's `mode` line with the fast path switched on.
const KERNEL: &str = "tproxy\n  l4: kernel";

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[test]
fn allowed_flows_stay_in_the_kernel_and_denied_ones_are_still_audited() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], KERNEL, "");
    let gw = start_gateway(&lab, &files);
    let pod = lab.pod("tenant-a", "web").unwrap();
    let (pod_ns, pod_ip) = (pod.netns.clone(), pod.ips()[0]);
    let host_a = lab.host("host-a").unwrap().netns.clone();
    let host_b = lab.host("host-b").unwrap().netns.clone();

    let server = tcp_server(&host_a, SocketAddr::new(HOST_A_IPV4.into(), 8080));
    for _ in 0..3 {
        let report = tcp_connect(
            &pod_ns,
            SocketAddr::new(HOST_A_IPV4.into(), 8080),
            1 << 20,
            Duration::from_secs(10),
        );
        assert!(report.echo_ok, "{report:?}");
        assert_eq!(report.peer_seen.map(|p| p.ip()), Some(pod_ip));
    }
    server.stop().unwrap();

    // UDP to a host and to a port a process on the node holds (the proxy cannot relay that).
    let udp_host = udp_server(&host_a, SocketAddr::new(HOST_A_IPV4.into(), 5353));
    let node_ns = lab.node_netns().to_owned();
    let udp_node = udp_server(&node_ns, SocketAddr::new(NODE_IPV4.into(), 6000));
    for (to, what) in [
        (SocketAddr::new(HOST_A_IPV4.into(), 5353), "an outside host"),
        (SocketAddr::new(NODE_IPV4.into(), 6000), "a node process"),
    ] {
        let got = udp_send(&pod_ns, to, Duration::from_secs(3));
        assert!(got.answered, "UDP to {what}: {got:?}");
        assert_eq!(got.peer_seen.map(|p| p.ip()), Some(pod_ip), "UDP to {what}");
    }
    drop((udp_host, udp_node));

    let (_, metrics) = admin_get(&lab, "/metrics");
    assert!(
        metric(
            &metrics,
            "chokepoint_fast_path_verdicts_total{path=\"kernel\"}"
        ) >= 5.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "chokepoint_bytes_total{direction=\"sent\"}"),
        0.0,
        "the proxy relayed nothing: {metrics}"
    );

    // Denied: through the proxy as before, reset, one audit record.
    let denied_server = tcp_server(&host_b, SocketAddr::new(HOST_B_IPV4.into(), 8080));
    let report = tcp_connect(
        &pod_ns,
        SocketAddr::new(HOST_B_IPV4.into(), 8080),
        16,
        Duration::from_secs(5),
    );
    assert!(report.reset && !report.echo_ok, "{report:?}");
    let records = files.wait_audit(1, Duration::from_secs(5));
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["decided_by"]["policy"], "deny-host-b");
    assert_eq!(denied_server.stop().unwrap().connections, 0);
    assert!(gw.stop().success());
    teardown(lab);
}
