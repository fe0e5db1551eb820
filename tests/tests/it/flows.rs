//! The log of allowed flows end to end: TCP connections and a UDP flow from a pod, one denied
//! connection beside them. The flow log counts every allowed flow exactly once under its key
//! and never lists the denial (that stays in the audit log). (The lab and the Admin deny of
//! host b are the data-path suite's.)

use std::net::SocketAddr;
use std::time::Duration;

use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4};
use chokepoint_tests::{
    GatewayFiles, start_gateway, tcp_connect, tcp_server, teardown, udp_send, udp_server,
};
use serde_json::Value;

use crate::data_path::{DENY_HOST_B, lab};

/// A short window, so that records come while the test waits.
pub(crate) const FLOWS: &str =
    "flows:\n  enabled: true\n  sink: file\n  path: flows.log\n  window: 1s\n";

/// The flows the log counted for `port`/`protocol`, over every window.
fn counted(records: &[Value], port: u16, protocol: &str) -> u64 {
    records
        .iter()
        .filter(|r| r["destination"]["port"] == port && r["destination"]["protocol"] == protocol)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn allowed_flows_are_counted_once_per_key_and_denials_stay_in_the_audit_log() {
    let lab = lab();
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", FLOWS);
    let gw = start_gateway(&lab, &files);
    let pod = lab.pod("tenant-a", "web").unwrap();
    let (pod_ns, pod_ip) = (pod.netns.clone(), pod.ips()[0]);
    let host_a = lab.host("host-a").unwrap().netns.clone();
    let tcp_a = SocketAddr::new(HOST_A_IPV4.into(), 8080);
    let udp_a = SocketAddr::new(HOST_A_IPV4.into(), 5353);
    let tcp = tcp_server(&host_a, tcp_a);
    let udp = udp_server(&host_a, udp_a);

    for _ in 0..3 {
        let report = tcp_connect(&pod_ns, tcp_a, 256, Duration::from_secs(10));
        assert!(report.echo_ok, "{report:?}");
    }
    let sent = udp_send(&pod_ns, udp_a, Duration::from_secs(5));
    assert!(sent.answered, "{sent:?}");
    let denied = tcp_connect(
        &pod_ns,
        SocketAddr::new(HOST_B_IPV4.into(), 8080),
        16,
        Duration::from_secs(5),
    );
    assert!(denied.reset, "{denied:?}");
    assert_eq!(tcp.stop().unwrap().connections, 3);
    drop(udp);

    let records = files.wait_flows(Duration::from_secs(10), |r| {
        counted(r, 8080, "tcp") >= 3 && counted(r, 5353, "udp") >= 1
    });
    assert_eq!(counted(&records, 8080, "tcp"), 3, "{records:#?}");
    assert_eq!(counted(&records, 5353, "udp"), 1, "{records:#?}");
    for r in &records {
        assert!(r.get("unitemized").is_none(), "nothing lost: {r}");
        assert_eq!(r["verdict"], "allow", "{r}");
        assert_eq!(r["node"], lab.node().name, "{r}");
        assert_eq!(r["source"]["ip"], pod_ip.to_string(), "{r}");
        assert_eq!(r["source"]["namespace"], "tenant-a", "{r}");
        assert_eq!(r["source"]["pod"], "web", "{r}");
        assert!(r["source"].get("port").is_none(), "no source port: {r}");
        assert_eq!(r["destination"]["ip"], HOST_A_IPV4.to_string(), "{r}");
        assert_eq!(r["decided_by"]["tier"], "Default", "{r}");
        assert!(r["window_start"].as_str().unwrap() <= r["time"].as_str().unwrap());
    }
    // A window holds one line per key: no two lines of one window share port and protocol.
    let mut keys: Vec<(String, u64, String)> = records
        .iter()
        .map(|r| {
            (
                r["window_start"].to_string(),
                r["destination"]["port"].as_u64().unwrap(),
                r["destination"]["protocol"].to_string(),
            )
        })
        .collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "{records:#?}");

    let audit = files.wait_audit(1, Duration::from_secs(5));
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["destination"]["ip"], HOST_B_IPV4.to_string());

    let (_, metrics) = chokepoint_tests::admin_get(&lab, "/metrics");
    assert!(
        metrics.contains("chokepoint_flow_log_flows_itemized_total 4"),
        "{metrics}"
    );
    assert!(metrics.contains("chokepoint_flow_log_events_dropped_total 0"));
    assert!(gw.stop().success());
    teardown(lab);
}
