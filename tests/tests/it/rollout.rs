//! The safe-rollout story end to end, as `docs/rollout.md` tells it: a namespace runs with the
//! flow log on and a staged Baseline deny of everything; the audit log shows what the deny
//! would break; `chokepoint recommend` turns the flow and audit logs into a
//! DeveloperNetworkPolicy; with it applied and the deny switched to enforced, the same traffic
//! still works and a destination that was never observed is refused.
//!
//! The pod resolves `api.example.test` (site-a) through the gateway's DNS proxy and connects
//! to it by name, and to site-b by address; site-c is never contacted before the switch.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use chokepoint_lab::services::{Dnsmasq, Zone, dig};
use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4, HOST_C_IPV4, HostSpec, PodSpec, Topology};
use chokepoint_tests::{
    GatewayFiles, admin_get, chokepoint_bin, require_root, start_gateway, tcp_connect, tcp_server,
    teardown,
};
use serde_json::Value;

/// Where pods send DNS (captured by the gateway; nothing owns it).
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// Not one of `fqdn.httpPorts`: a raw TCP client that shows no name is let through by name.
const ECHO: u16 = 7000;

fn baseline(mode: &str) -> String {
    format!(
        "\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  name: default
  annotations: {{policy.chokepoint.dev/mode: {mode}}}
spec:
  subject: {{namespaces: {{}}}}
  egress:
  - name: deny-everything-else
    action: Deny
    to: [{{networks: [0.0.0.0/0]}}]
"
    )
}

/// Would the staged deny break a flow to `ip`:`port`? (an allowed record with a staged deny)
fn staged_deny_of(records: &[Value], ip: &str, port: u16) -> bool {
    records.iter().any(|r| {
        r["verdict"] == "allow"
            && r["destination"]["ip"] == ip
            && r["destination"]["port"] == port
            && r["staged"]["verdict"] == "deny"
            && r["staged"]["decided_by"]["rule"] == "deny-everything-else"
    })
}

/// Waits until the snapshot in force (`/config_dump`) satisfies `done`.
fn wait_for_snapshot(lab: &chokepoint_lab::Lab, done: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = admin_get(lab, "/config_dump");
        let dump: Value = serde_json::from_str(&body).unwrap_or_default();
        if done(&dump["snapshot"]) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot did not change: {}",
            dump["snapshot"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn observe_stage_recommend_enforce_keeps_what_worked_and_refuses_the_rest() {
    require_root();
    let lab = Topology::new()
        .namespace("tenant-a", [("tenant", "a")])
        .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
        .host(HostSpec::new("dns", UPSTREAM))
        .host(HostSpec::new("site-a", HOST_A_IPV4))
        .host(HostSpec::new("site-b", HOST_B_IPV4))
        .host(HostSpec::new("site-c", HOST_C_IPV4))
        .build()
        .expect("build lab");
    let extra = format!(
        "dns:\n  upstream: {UPSTREAM}\nflows:\n  enabled: true\n  sink: file\n  path: flows.log\n  window: 1s\n  namespaces: [tenant-a]\n"
    );
    let files = GatewayFiles::new(
        &lab,
        &[("baseline.yaml", &baseline("staged"))],
        "tproxy",
        &extra,
    );
    let dir = files.dir.path().to_owned();
    let host = |name: &str| lab.host(name).unwrap().netns.clone();
    let zone = Zone::new().host("api.example.test", &[IpAddr::from(HOST_A_IPV4)], 300);
    let dnsmasq = Dnsmasq::start(&host("dns"), UPSTREAM.into(), &zone, 60, &dir).expect("dnsmasq");
    let site_a = SocketAddr::new(HOST_A_IPV4.into(), ECHO);
    let site_b = SocketAddr::new(HOST_B_IPV4.into(), ECHO);
    let site_c = SocketAddr::new(HOST_C_IPV4.into(), ECHO);
    let servers = [
        tcp_server(&host("site-a"), site_a),
        tcp_server(&host("site-b"), site_b),
        tcp_server(&host("site-c"), site_c),
    ];
    let gw = start_gateway(&lab, &files);
    let pod = lab.pod("tenant-a", "web").unwrap().netns.clone();

    // 1. Observe, with the deny staged: everything works.
    let traffic = || {
        let answer = dig(&pod, CLUSTER_DNS.into(), "api.example.test", &[]);
        assert_eq!(answer.status, "NOERROR", "{}", answer.output);
        assert_eq!(answer.addresses, [IpAddr::from(HOST_A_IPV4)]);
        for to in [site_a, site_b] {
            let r = tcp_connect(&pod, to, 512, Duration::from_secs(10));
            assert!(r.echo_ok, "{to}: {r:?}");
        }
    };
    traffic();

    // 2. The audit log says what the staged deny would break: DNS and both sites.
    let audit = files.wait_audit(3, Duration::from_secs(10));
    for (ip, port) in [
        (CLUSTER_DNS.to_string(), 53),
        (HOST_A_IPV4.to_string(), ECHO),
        (HOST_B_IPV4.to_string(), ECHO),
    ] {
        assert!(
            staged_deny_of(&audit, &ip, port),
            "{ip}:{port} in {audit:#?}"
        );
    }
    // The flow log has the same flows, site-a by its name.
    let flows = files.wait_flows(Duration::from_secs(10), |r| {
        r.iter()
            .any(|f| f["destination"]["names"][0] == "api.example.test")
            && r.iter()
                .any(|f| f["destination"]["ip"] == HOST_B_IPV4.to_string())
            && r.iter().any(|f| f["destination"]["port"] == 53)
    });
    let named = flows
        .iter()
        .find(|f| f["destination"]["names"][0] == "api.example.test")
        .unwrap_or_else(|| panic!("site-a by name in {flows:#?}"));
    assert_eq!(named["destination"]["ip"], Value::Null, "{named}");

    // 3. Recommend from both logs.
    let out = Command::new(chokepoint_bin())
        .current_dir(&dir)
        .args([
            "recommend",
            "--flows",
            "flows.log",
            "audit.log",
            "--namespace",
            "tenant-a",
        ])
        .output()
        .expect("run chokepoint recommend");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recommended = String::from_utf8(out.stdout).unwrap();
    assert!(recommended.contains("api.example.test"), "{recommended}");
    assert!(
        recommended.contains(&format!("{HOST_B_IPV4}/32")),
        "{recommended}"
    );
    assert!(
        recommended.contains(&format!("{CLUSTER_DNS}/32")),
        "{recommended}"
    );
    assert!(
        !recommended.contains(&HOST_C_IPV4.to_string()),
        "{recommended}"
    );

    // 4. Apply it, enforce the deny.
    let before = files.audit_records().len();
    files.write_policy("recommended.yaml", &recommended);
    files.write_policy("baseline.yaml", &baseline("enforced"));
    wait_for_snapshot(&lab, |s| {
        s["developer_policies"] == 1 && s["cluster_policies"] == 1 && s["staged_policies"] == 0
    });

    // 5. The same traffic still works; a destination never observed is refused.
    traffic();
    let refused = tcp_connect(&pod, site_c, 16, Duration::from_secs(5));
    assert!(refused.reset, "{refused:?}");
    let audit = files.wait_audit(before + 1, Duration::from_secs(5));
    let after = &audit[before..];
    assert_eq!(
        after.len(),
        1,
        "only the refusal, no staged differences left: {after:#?}"
    );
    assert_eq!(after[0]["verdict"], "deny");
    assert_eq!(after[0]["destination"]["ip"], HOST_C_IPV4.to_string());
    assert_eq!(after[0]["decided_by"]["tier"], "Baseline");
    assert_eq!(after[0]["decided_by"]["rule"], "deny-everything-else");

    let flows = files.wait_flows(Duration::from_secs(10), |r| {
        r.iter()
            .any(|f| f["decided_by"]["policy"] == "recommended-egress")
    });
    assert!(
        flows
            .iter()
            .any(|f| f["decided_by"]["policy"] == "recommended-egress"),
        "the flow log now names the recommended policy: {flows:#?}"
    );
    assert!(gw.stop().success());
    drop(dnsmasq);
    for s in servers {
        s.stop().unwrap();
    }
    teardown(lab);
}
