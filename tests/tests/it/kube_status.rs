//! What the gateways write back to the API server: one Event per policy change from each
//! gateway, and the `Accepted`/`Enforced` conditions of DeveloperNetworkPolicies from the one
//! holding the status Lease. Two gateways (node-a, node-b) against one test API server, each
//! identified to it by its node name. Only loopback is used.

use std::time::{Duration, Instant};

use chokepoint_tests::apiserver::ApiServer;
use serde_json::{Value, json};

use crate::kubernetes::{Gateway, gateway_on, metrics_text, seed, until, wait_event};

/// A short Lease, so that a takeover happens within seconds.
const KUBERNETES: &str = ", status: {leaseDuration: 2s}";
const LEASE: (&str, &str) = ("chokepoint", "chokepoint-status");

fn dnp(name: &str, cidr: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "policy.chokepoint.dev/v1alpha1", "kind": "DeveloperNetworkPolicy",
        "metadata": {"name": name, "namespace": "a", "annotations": annotations},
        "spec": {"subject": {"podSelector": {"matchLabels": {"app": "web"}}},
                 "egress": [{"action": "Deny", "to": [{"networks": [cidr]}]}]}
    })
}

fn holder(server: &ApiServer) -> Option<String> {
    server
        .lease(LEASE.0, LEASE.1)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The DNP's condition of `type_` as stored: (status, observedGeneration, reason, message).
fn condition(server: &ApiServer, name: &str, type_: &str) -> Option<(String, i64, String, String)> {
    let o = server.object("DeveloperNetworkPolicy", Some("a"), name)?;
    let c = o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        c["status"].as_str()?.to_owned(),
        c["observedGeneration"].as_i64()?,
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

fn generation(server: &ApiServer, name: &str) -> i64 {
    server
        .object("DeveloperNetworkPolicy", Some("a"), name)
        .unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap()
}

/// The Events about `name` from `node` with this reason.
fn events(server: &ApiServer, name: &str, node: &str, reason: &str) -> Vec<Value> {
    server
        .events()
        .into_iter()
        // A repeat of one Event is a PATCH of it (a series): count each Event once.
        .filter(|e| e.get("series").is_none_or(Value::is_null))
        .filter(|e| {
            e["regarding"]["name"] == name
                && e["reportingInstance"] == node
                && e["reason"] == reason
        })
        .collect()
}

async fn wait_conditions(
    server: &ApiServer,
    name: &str,
    accepted: (&str, &str),
    enforced: (&str, &str),
) {
    let g = generation(server, name);
    wait_for(
        &format!("{name}'s conditions at generation {g}"),
        30,
        || {
            let a = condition(server, name, "Accepted")?;
            let e = condition(server, name, "Enforced")?;
            ((a.0.as_str(), a.1, a.2.as_str()) == (accepted.0, g, accepted.1)
                && (e.0.as_str(), e.1, e.2.as_str()) == (enforced.0, g, enforced.1))
                .then_some(())
        },
    )
    .await;
}

fn status_writers(server: &ApiServer, name: &str) -> Vec<String> {
    server
        .status_writes()
        .into_iter()
        .filter(|w| w.name == name)
        .map(|w| w.client)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_reports_each_change_and_one_writes_the_conditions() {
    let server = ApiServer::start_new(&["ClusterNetworkPolicy", "DeveloperNetworkPolicy"]).await;
    // a/web runs on node-a, a/remote on node-b: each node's gateway selects one of them.
    seed(&server);
    let mut gateways: Vec<(&str, Option<Gateway>)> = vec![
        (
            "node-a",
            Some(gateway_on(&server, "node-a", KUBERNETES).await),
        ),
        (
            "node-b",
            Some(gateway_on(&server, "node-b", KUBERNETES).await),
        ),
    ];
    let leader = wait_for("a status writer", 30, || holder(&server)).await;
    let follower = if leader == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let g = |gateways: &[(&str, Option<Gateway>)], node: &str| -> usize {
        gateways.iter().position(|(n, _)| *n == node).unwrap()
    };

    // A new policy: one Normal Event per gateway, naming its node, the generation and the
    // pods it selects there.
    server.apply(dnp("only-web", "192.0.2.0/24", json!({})));
    for node in ["node-a", "node-b"] {
        let e = wait_event(&server, &format!("Enforced from {node}"), |e| {
            e["regarding"]["name"] == "only-web" && e["reportingInstance"] == node
        })
        .await;
        assert_eq!(
            (e["type"].as_str(), e["reason"].as_str()),
            (Some("Normal"), Some("Enforced")),
            "{e}"
        );
        let note = e["note"].as_str().unwrap();
        assert!(
            note.starts_with(&format!(
                "enforced on node {node} at generation 1 (snapshot "
            )) && note.ends_with("; selects 1 pod here"),
            "{note}"
        );
        assert_eq!(e["regarding"]["kind"], "DeveloperNetworkPolicy");
    }
    wait_conditions(
        &server,
        "only-web",
        ("True", "Valid"),
        ("True", "EnforcedByLeader"),
    )
    .await;
    let (_, _, _, message) = condition(&server, "only-web", "Enforced").unwrap();
    assert!(
        message.contains("chokepoint/chokepoint-status"),
        "{message}"
    );
    assert_eq!(
        status_writers(&server, "only-web"),
        std::slice::from_ref(&leader)
    );

    // Later rebuilds (a pod changes; the status write itself is a new resourceVersion) report
    // nothing again and write nothing again.
    server.apply(chokepoint_tests::objects::pod(
        "a",
        "web2",
        "10.1.0.12",
        "node-a",
        json!({}),
        "Running",
    ));
    let web2 = "10.1.0.12".parse().unwrap();
    for (_, gw) in &gateways {
        until(gw.as_ref().unwrap(), "the new pod", |s| {
            s.pod_by_ip(web2).is_some()
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in ["node-a", "node-b"] {
        assert_eq!(
            events(&server, "only-web", node, "Enforced").len(),
            1,
            "{node}"
        );
    }
    assert_eq!(status_writers(&server, "only-web").len(), 1);
    // What was there at the initial sync is not announced.
    assert!(
        server
            .events()
            .iter()
            .all(|e| e["regarding"]["name"] != "deny-secret"),
        "{:#?}",
        server.events()
    );

    // The spec changes: generation 2, reported again, the conditions follow.
    server.apply(dnp("only-web", "198.51.100.0/24", json!({})));
    assert_eq!(generation(&server, "only-web"), 2);
    for node in ["node-a", "node-b"] {
        wait_event(&server, &format!("generation 2 from {node}"), |e| {
            e["regarding"]["name"] == "only-web"
                && e["reportingInstance"] == node
                && e["note"]
                    .as_str()
                    .unwrap_or("")
                    .contains("at generation 2 ")
        })
        .await;
    }
    wait_conditions(
        &server,
        "only-web",
        ("True", "Valid"),
        ("True", "EnforcedByLeader"),
    )
    .await;

    // Staged (an annotation: the same generation, another mode).
    server.apply(dnp(
        "only-web",
        "198.51.100.0/24",
        json!({"policy.chokepoint.dev/mode": "staged"}),
    ));
    for node in ["node-a", "node-b"] {
        let e = wait_event(&server, &format!("Staged from {node}"), |e| {
            e["regarding"]["name"] == "only-web"
                && e["reportingInstance"] == node
                && e["reason"] == "Staged"
        })
        .await;
        assert!(
            e["note"]
                .as_str()
                .unwrap()
                .contains("would select 1 pod here"),
            "{e}"
        );
    }
    wait_conditions(&server, "only-web", ("True", "Valid"), ("False", "Staged")).await;

    // An invalid one: the validation error, as a Warning from each and in Accepted.
    server.apply(dnp("bad", "10.1.0.5/16", json!({})));
    for node in ["node-a", "node-b"] {
        let e = wait_event(&server, &format!("InvalidPolicy from {node}"), |e| {
            e["regarding"]["name"] == "bad" && e["reportingInstance"] == node
        })
        .await;
        assert_eq!(
            (e["type"].as_str(), e["reason"].as_str()),
            (Some("Warning"), Some("InvalidPolicy")),
            "{e}"
        );
    }
    wait_conditions(
        &server,
        "bad",
        ("False", "Invalid"),
        ("False", "NotAccepted"),
    )
    .await;
    let (_, _, _, message) = condition(&server, "bad", "Accepted").unwrap();
    assert!(
        message.contains("spec.egress[0].to[0].networks[0]") && message.contains("10.1.0.0/16"),
        "{message}"
    );
    // Its status write was no new change: one Warning per gateway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in ["node-a", "node-b"] {
        assert_eq!(
            events(&server, "bad", node, "InvalidPolicy").len(),
            1,
            "{node}"
        );
    }

    // Only the leader wrote any status.
    assert!(
        server.status_writes().iter().all(|w| w.client == leader),
        "{:?}",
        server
            .status_writes()
            .iter()
            .map(|w| (&w.client, &w.name))
            .collect::<Vec<_>>()
    );
    let text = metrics_text(&gateways[g(&gateways, &leader)].1.as_ref().unwrap().metrics);
    assert!(
        text.contains("chokepoint_kubernetes_status_writer 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"chokepoint_kubernetes_events_total{type="normal",outcome="published"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"chokepoint_kubernetes_events_total{type="warning",outcome="published"} 1"#
        ),
        "{text}"
    );
    let text = metrics_text(&gateways[g(&gateways, follower)].1.as_ref().unwrap().metrics);
    assert!(
        text.contains("chokepoint_kubernetes_status_writer 0"),
        "{text}"
    );
    assert!(
        text.contains(r#"chokepoint_kubernetes_status_writes_total{outcome="written"} 0"#),
        "{text}"
    );

    // The leader dies (its Lease is no longer renewed): the other takes over and writes.
    let i = g(&gateways, &leader);
    drop(gateways[i].1.take());
    wait_for("the takeover", 30, || {
        (holder(&server)? == follower).then_some(())
    })
    .await;
    server.apply(dnp("only-web", "203.0.113.0/24", json!({})));
    assert_eq!(generation(&server, "only-web"), 3);
    wait_conditions(
        &server,
        "only-web",
        ("True", "Valid"),
        ("True", "EnforcedByLeader"),
    )
    .await;
    assert_eq!(
        status_writers(&server, "only-web")
            .last()
            .map(String::as_str),
        Some(follower)
    );
    let lease = server.lease(LEASE.0, LEASE.1).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_is_paced_by_the_rate_limit() {
    let server = ApiServer::start_new(&["ClusterNetworkPolicy", "DeveloperNetworkPolicy"]).await;
    seed(&server);
    let gw = gateway_on(
        &server,
        "node-a",
        ", events: {perSecond: 2, burst: 2}, status: {write: false}",
    )
    .await;
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for n in &names {
        server.apply(dnp(n, "192.0.2.0/24", json!({})));
    }
    let mut times = Vec::new();
    for n in &names {
        let e = wait_event(&server, &format!("Enforced for {n}"), |e| {
            e["regarding"]["name"] == n.as_str()
        })
        .await;
        let t: k8s_openapi::jiff::Timestamp = e["eventTime"].as_str().unwrap().parse().unwrap();
        times.push(t);
    }
    times.sort();
    // Six Events through a bucket of two refilled at two a second: the last is at least
    // (6 - 2) / 2 = 2 s after the first, however the changes arrived.
    let spread = times[5].duration_since(times[0]);
    assert!(
        spread >= k8s_openapi::jiff::SignedDuration::from_millis(1990),
        "{spread:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = metrics_text(&gw.metrics);
    assert!(
        text.contains(r#"chokepoint_kubernetes_events_total{type="normal",outcome="published"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"chokepoint_kubernetes_events_total{type="normal",outcome="dropped"} 0"#),
        "{text}"
    );
    // `status.write: false`: no part in the election, no conditions.
    assert!(server.lease(LEASE.0, LEASE.1).is_none());
    assert!(server.status_writes().is_empty());
}
