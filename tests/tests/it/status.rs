//! Policy status end to end (the staged suite's gateway: an Admin deny of host b, a staged
//! Baseline deny of everything): the real gateway counts the flows of a pod per rule, `/policies`
//! and `chokepoint status` report them with the pods each policy selects, a staged policy
//! with the counts of its staged decision, a refused reload with its located error, and an
//! unchanged policy keeps its counts through the reload that follows.

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4, Lab};
use chokepoint_tests::{admin_get, chokepoint_bin, tcp_connect, tcp_server, teardown};
use serde_json::Value;

use crate::data_path::lab;
use crate::staged::with_staged_baseline;

/// `chokepoint status` run in the node namespace (where the admin endpoint listens).
fn status(lab: &Lab, args: &[&str]) -> Output {
    lab.command(lab.node_netns(), chokepoint_bin())
        .args(["status", "--admin", "127.0.0.1:15000"])
        .args(args)
        .output()
        .expect("run chokepoint status")
}

fn status_json(lab: &Lab) -> Value {
    let out = status(lab, &["--output", "json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status --output json is JSON")
}

#[track_caller]
fn policy<'v>(report: &'v Value, label: &str, mode: &str) -> &'v Value {
    report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == label && p["mode"] == mode)
        .unwrap_or_else(|| panic!("{label} ({mode}) missing: {report:#}"))
}

/// Polls `/policies` until `done` holds (the reload is asynchronous).
fn wait_report(lab: &Lab, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = admin_get(lab, "/policies");
        assert_eq!(code, 200, "{body}");
        let report: Value = serde_json::from_str(&body).unwrap();
        if done(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "{what}: {report:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_rule_hits_selected_pods_staged_counts_and_refused_reloads() {
    let lab = lab();
    let (files, _gw) = with_staged_baseline(&lab);
    let pod_ns = lab.pod("tenant-a", "web").unwrap().netns.clone();
    let host_a = SocketAddr::new(HOST_A_IPV4.into(), 8080);
    let host_b = SocketAddr::new(HOST_B_IPV4.into(), 8080);
    let server = tcp_server(&lab.host("host-a").unwrap().netns, host_a);
    for _ in 0..2 {
        let denied = tcp_connect(&pod_ns, host_b, 16, Duration::from_secs(5));
        assert!(denied.reset, "{denied:?}");
    }
    let allowed = tcp_connect(&pod_ns, host_a, 16, Duration::from_secs(10));
    assert!(allowed.echo_ok, "{allowed:?}");
    server.stop().unwrap();

    let report = status_json(&lab);
    assert_eq!(report["generation"], 1);
    let deny = policy(&report, "cnp/deny-host-b", "enforced");
    assert_eq!(deny["selects"], serde_json::json!(["tenant-a/web"]));
    assert_eq!(deny["generation"], 1);
    let rule = &deny["rules"][0];
    assert_eq!(rule["name"], "no-host-b");
    assert_eq!(rule["action"], "Deny");
    assert_eq!((&rule["denied"], &rule["allowed"]), (&2.into(), &0.into()));
    assert!(rule["last_hit"].is_string(), "{rule}");
    // Staged: both host-b connections were decided by the enforced deny first (the staged
    // snapshot holds it too), the host-a one would be denied by the staged Baseline.
    let floor = policy(&report, "banp/default", "staged");
    assert_eq!(floor["rules"][0]["denied"], 1, "{floor:#}");
    assert_eq!(floor["selects"], serde_json::json!(["tenant-a/web"]));

    let out = status(&lab, &["--policy", "cnp/deny-host-b"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("cnp/deny-host-b  Admin tier priority 10, enforced"),
        "{table}"
    );
    assert!(
        table.contains("selects 1 pod(s) here: tenant-a/web"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .unwrap_or_else(|| panic!("no rule row: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["0", "no-host-b", "Deny", "0", "2", "0"],
        "{table}"
    );
    assert!(!table.contains("banp/default"), "filtered: {table}");

    let out = status(&lab, &["--policy", "cnp/no-such-policy"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no policy cnp/no-such-policy is loaded"),
        "{err}"
    );

    // An invalid update is refused and reported with where it is wrong.
    files.write_policy(
        "bad.yaml",
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: bad}\nspec:\n  tier: Admin\n  priority: 5\n  subject: {namespaces: {}}\n  egress:\n  - {action: Deny, to: [{networks: [10.0.0.5/8]}]}\n",
    );
    let report = wait_report(&lab, "the refused reload is reported", |r| {
        r["invalid"].as_array().is_some_and(|a| !a.is_empty())
    });
    let invalid = &report["invalid"][0];
    assert_eq!(invalid["outcome"], "reload_refused");
    let error = invalid["error"].as_str().unwrap();
    assert!(
        error.contains("bad.yaml:9:") && error.contains("10.0.0.5/8"),
        "{error}"
    );
    assert_eq!(report["generation"], 1, "the last good snapshot stays");
    let out = status(&lab, &[]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("not in force, invalid:") && table.contains("reload refused"),
        "{table}"
    );

    // Fixed: generation 2; the unchanged deny keeps its counts and its version's generation.
    std::fs::remove_file(files.dir.path().join("policies/bad.yaml")).unwrap();
    let report = wait_report(&lab, "the fixed files are installed", |r| {
        r["generation"] == 2
    });
    assert!(
        report["invalid"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let deny = policy(&report, "cnp/deny-host-b", "enforced");
    assert_eq!(deny["rules"][0]["denied"], 2, "{deny:#}");
    assert_eq!(deny["generation"], 1);
    teardown(lab);
}
