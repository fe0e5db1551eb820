//! Staged policies end to end: a staged Baseline deny of everything, beside an enforced
//! Admin deny of one host. Traffic follows the enforced policy alone; the connection the
//! staged deny would break still connects and gets an audit record with the staged verdict.
//! (The lab and the Admin deny are the data-path suite's: one pod in `tenant-a`, hosts a and
//! b, host b denied.)

use std::net::SocketAddr;
use std::time::Duration;

use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4, Lab};
use chokepoint_tests::{Gateway, GatewayFiles, start_gateway, tcp_connect, tcp_server, teardown};

use crate::data_path::{DENY_HOST_B, lab};

const STAGED_BASELINE: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  name: default
  annotations: {policy.chokepoint.dev/mode: staged}
spec:
  subject: {namespaces: {}}
  egress:
  - name: deny-everything-else
    action: Deny
    to: [{networks: [0.0.0.0/0, \"::/0\"]}]
";

/// The gateway with the enforced Admin deny of host b and the staged Baseline deny.
pub(crate) fn with_staged_baseline(lab: &Lab) -> (GatewayFiles, Gateway) {
    let files = GatewayFiles::new(
        lab,
        &[("deny.yaml", DENY_HOST_B), ("staged.yaml", STAGED_BASELINE)],
        "tproxy",
        "",
    );
    let gw = start_gateway(lab, &files);
    (files, gw)
}

#[test]
fn a_staged_baseline_deny_records_the_flow_it_would_break_and_the_flow_still_connects() {
    let lab = lab();
    let (files, _gw) = with_staged_baseline(&lab);
    let pod = lab.pod("tenant-a", "web").unwrap();
    let (pod_ns, pod_ip) = (pod.netns.clone(), pod.ips()[0]);
    let host_a = SocketAddr::new(HOST_A_IPV4.into(), 8080);
    let server = tcp_server(&lab.host("host-a").unwrap().netns, host_a);

    let report = tcp_connect(&pod_ns, host_a, 4096, Duration::from_secs(10));
    assert!(
        report.echo_ok,
        "the staged deny decides nothing: {report:?}"
    );
    assert_eq!(server.stop().unwrap().connections, 1);

    let records = files.wait_audit(1, Duration::from_secs(5));
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r["verdict"], "allow", "the real verdict: {r}");
    assert_eq!(r["reason"], "default");
    assert_eq!(r["decided_by"]["tier"], "Default");
    assert_eq!(r["source"]["ip"], pod_ip.to_string());
    assert_eq!(r["source"]["pod"], "web");
    assert_eq!(r["destination"]["ip"], HOST_A_IPV4.to_string());
    assert_eq!(r["destination"]["port"], 8080);
    let staged = &r["staged"];
    assert_eq!(staged["verdict"], "deny", "{r}");
    assert_eq!(staged["reason"], "rule");
    assert_eq!(staged["decided_by"]["tier"], "Baseline");
    assert_eq!(staged["decided_by"]["kind"], "BaselineAdminNetworkPolicy");
    assert_eq!(staged["decided_by"]["policy"], "default");
    assert_eq!(staged["decided_by"]["rule"], "deny-everything-else");

    // The enforced Admin deny decides host-b either way: a plain denial, no staged part.
    let host_b = SocketAddr::new(HOST_B_IPV4.into(), 8080);
    let denied = tcp_connect(&pod_ns, host_b, 16, Duration::from_secs(5));
    assert!(denied.reset, "{denied:?}");
    let records = files.wait_audit(2, Duration::from_secs(5));
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[1]["verdict"], "deny");
    assert_eq!(records[1]["decided_by"]["policy"], "deny-host-b");
    assert!(records[1].get("staged").is_none(), "{}", records[1]);

    let (status, metrics) = chokepoint_tests::admin_get(&lab, "/metrics");
    assert_eq!(status, 200);
    for line in [
        r#"chokepoint_staged_differences_total{difference="would_deny"} 1"#,
        r#"chokepoint_staged_differences_total{difference="would_allow"} 0"#,
        r#"chokepoint_staged_differences_total{difference="other_policy"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    teardown(lab);
}
