//! The Kubernetes source against a real HTTP API server of our own (`chokepoint_tests::apiserver`):
//! the real kube client and watcher code, the gateway's state, and verdicts as `explain`
//! computes them. Only loopback is used.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chokepoint::metrics::Metrics;
use chokepoint::policy::{Counts, Decision, Flow, InvalidOutcome, Reason, Snapshot, TierName};
use chokepoint::source::kube::{self, ClusterMetrics};
use chokepoint::state::PolicyState;
use chokepoint_config::model::Protocol;
use chokepoint_config::settings::GatewaySettings;
use chokepoint_tests::apiserver::ApiServer;
use chokepoint_tests::objects::{cnp, endpoint_slice, namespace, node, pod, service};
use serde_json::json;

const NODE: &str = "node-a";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn verdict(s: &Snapshot, src: &str, dst: &str, port: u16) -> (Decision, Reason, TierName) {
    let v = s.evaluate(&Flow {
        src: ip(src),
        dst: ip(dst),
        protocol: Protocol::Tcp,
        port,
        names: &[],
        addressed: None,
    });
    (v.decision, v.reason, v.decided_by.tier)
}

pub(crate) struct Gateway {
    pub(crate) state: Arc<PolicyState>,
    pub(crate) metrics: ClusterMetrics,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway's state on the Kubernetes source, after the initial sync.
async fn gateway(server: &ApiServer) -> Gateway {
    gateway_on(server, NODE, "").await
}

/// The gateway of `node`, identified to the server by its node name, with more
/// `policy.kubernetes` settings (`, key: value…`).
pub(crate) async fn gateway_on(server: &ApiServer, node: &str, kubernetes: &str) -> Gateway {
    let settings = GatewaySettings::from_str(
        std::path::Path::new("/etc/chokepoint/gateway.yaml"),
        &format!("node: {node}\ncapture: {{interfaces: [\"veth*\"]}}\npolicy: {{source: kubernetes, kubernetes: {{debounce: 20ms{kubernetes}}}}}\n"),
    )
    .unwrap();
    let state = Arc::new(PolicyState::empty(
        settings.policy.clone(),
        Metrics::default(),
    ));
    let metrics = ClusterMetrics::default();
    let source = tokio::time::timeout(
        Duration::from_secs(60),
        kube::start(&state, server.client_as(node), node, &metrics),
    )
    .await
    .expect("initial sync");
    let task = tokio::spawn(kube::follow(state.clone(), source, node.into()));
    Gateway {
        state,
        metrics,
        task,
    }
}

/// Waits until the snapshot satisfies `ok`; returns when (the first snapshot that does) was installed.
pub(crate) async fn until(g: &Gateway, what: &str, ok: impl Fn(&Snapshot) -> bool) -> Instant {
    let mut changed = g.state.subscribe();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if ok(&g.state.snapshot()) {
            return Instant::now();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            tokio::time::timeout(left, changed.changed()).await.is_ok(),
            "no snapshot where {what} (generation {})",
            g.state.generation()
        );
    }
}

pub(crate) fn seed(server: &ApiServer) {
    server.apply(namespace("a", json!({"team": "x"})));
    server.apply(namespace("b", json!({})));
    server.apply(node("node-a", "10.0.0.1"));
    server.apply(node("node-b", "10.0.0.2"));
    server.apply(pod(
        "a",
        "web",
        "10.1.0.10",
        "node-a",
        json!({"app": "web"}),
        "Running",
    ));
    server.apply(pod(
        "a",
        "remote",
        "10.1.0.11",
        "node-b",
        json!({"app": "web"}),
        "Running",
    ));
    server.apply(pod(
        "b",
        "db",
        "10.1.0.20",
        "node-b",
        json!({"app": "db"}),
        "Running",
    ));
    server.apply(cnp(
        "deny-secret",
        "Admin",
        10,
        json!({"name": "deny-secret", "action": "Deny", "to": [{"namespaces": {"matchLabels": {"team": "secret"}}}]}),
    ));
}

/// The Service b/db at 10.96.0.20:5432 (pg): the pod db is its ready endpoint, db-old's
/// address a not-ready one.
fn seed_db_service(server: &ApiServer) {
    server.apply(service("b", "db", "10.96.0.20", "pg", 5432));
    server.apply(endpoint_slice(
        "b",
        "db",
        &[("10.1.0.20", true, "db"), ("10.1.0.21", false, "db-old")],
        "pg",
        15432,
    ));
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_changes_drive_verdicts() {
    // ClusterNetworkPolicy is installed; the other three CRDs are not (404: empty, not an error).
    let server = ApiServer::start_new(&["ClusterNetworkPolicy"]).await;
    seed(&server);
    let g = gateway(&server).await;
    let s = g.state.snapshot();
    assert_eq!(g.state.generation(), 1);
    assert_eq!(
        s.counts(),
        Counts {
            cluster_policies: 1,
            developer_policies: 0,
            network_policies: 0,
            staged_policies: 0,
            pods: 3
        }
    );
    assert_eq!(
        verdict(&s, "10.1.0.10", "10.1.0.20", 5432).0,
        Decision::Allow
    );
    // Only pods on this node are subjects; another node's pod is still a destination.
    assert_eq!(
        verdict(&s, "10.1.0.11", "10.1.0.20", 5432).1,
        Reason::UnknownSource
    );
    assert!(s.pod_by_ip(ip("10.1.0.11")).is_some());

    let mut latencies = Vec::new();
    // A namespace label change puts b under the Deny rule.
    let rv = server.apply(namespace("b", json!({"team": "secret"})));
    let at = until(&g, "b is secret", |s| {
        verdict(s, "10.1.0.10", "10.1.0.20", 5432).0 == Decision::Deny
    })
    .await;
    latencies.push(("namespace label", at - server.applied_at(rv).unwrap()));
    assert_eq!(
        verdict(&g.state.snapshot(), "10.1.0.10", "10.1.0.20", 5432).2,
        TierName::Admin
    );

    // A new pod in b is denied as well; deleting it makes its IP no pod at all.
    let rv = server.apply(pod("b", "db2", "10.1.0.21", "node-b", json!({}), "Running"));
    let at = until(&g, "db2 exists", |s| s.pod_by_ip(ip("10.1.0.21")).is_some()).await;
    latencies.push(("pod added", at - server.applied_at(rv).unwrap()));
    assert_eq!(
        verdict(&g.state.snapshot(), "10.1.0.10", "10.1.0.21", 80).0,
        Decision::Deny
    );
    let rv = server.delete("Pod", Some("b"), "db2").unwrap();
    let at = until(&g, "db2 gone", |s| s.pod_by_ip(ip("10.1.0.21")).is_none()).await;
    latencies.push(("pod deleted", at - server.applied_at(rv).unwrap()));
    assert_eq!(
        verdict(&g.state.snapshot(), "10.1.0.10", "10.1.0.21", 80).0,
        Decision::Allow
    );

    // A finished pod still listed with web's IP does not take it over.
    server.apply(pod(
        "b",
        "old-job",
        "10.1.0.10",
        "node-a",
        json!({}),
        "Succeeded",
    ));
    // A policy change: Deny becomes Accept.
    let rv = server.apply(cnp(
        "deny-secret",
        "Admin",
        10,
        json!({"name": "now-accept", "action": "Accept", "to": [{"namespaces": {"matchLabels": {"team": "secret"}}}]}),
    ));
    let at = until(&g, "the rule accepts", |s| {
        verdict(s, "10.1.0.10", "10.1.0.20", 5432).0 == Decision::Allow
    })
    .await;
    latencies.push(("policy changed", at - server.applied_at(rv).unwrap()));
    let s = g.state.snapshot();
    assert_eq!(s.pod(s.pod_by_ip(ip("10.1.0.10")).unwrap()).name, "web");

    // An invalid policy is skipped with an Event and a metric; the rest still applies.
    server.apply(cnp(
        "bad-cidr",
        "Admin",
        5,
        json!({"action": "Deny", "to": [{"networks": ["10.1.0.5/16"]}]}),
    ));
    server.apply(cnp(
        "deny-node",
        "Admin",
        20,
        json!({"action": "Deny", "to": [{"networks": ["10.0.0.1/32"]}]}),
    ));
    until(&g, "deny-node applies", |s| {
        verdict(s, "10.1.0.10", "10.0.0.1", 22).0 == Decision::Deny
    })
    .await;
    let s = g.state.snapshot();
    assert_eq!(s.counts().cluster_policies, 2, "bad-cidr is left out");
    assert_eq!(
        verdict(&s, "10.1.0.10", "10.1.0.20", 5432).0,
        Decision::Allow
    );
    let e = wait_event(&server, "an Event for bad-cidr", |e| {
        e["regarding"]["name"] == "bad-cidr"
    })
    .await;
    assert_eq!(e["reason"], "InvalidPolicy");
    assert_eq!(e["type"], "Warning");
    let note = e["note"].as_str().unwrap();
    assert!(
        note.contains("spec.egress[0].to[0].networks[0]") && note.contains("10.1.0.0/16"),
        "{note}"
    );
    let text = metrics_text(&g.metrics);
    assert!(
        text.contains(
            r#"chokepoint_kubernetes_skipped_objects_total{kind="ClusterNetworkPolicy"} 1"#
        ),
        "{text}"
    );
    // `/policies` lists it as skipped, with the field that is wrong.
    let report = g.state.report();
    let skipped: Vec<_> = report
        .invalid
        .iter()
        .filter(|i| i.outcome == InvalidOutcome::Skipped)
        .collect();
    assert_eq!(skipped.len(), 1, "{report:#?}");
    assert_eq!(
        skipped[0].object.as_deref(),
        Some("ClusterNetworkPolicy/bad-cidr")
    );
    assert!(
        skipped[0]
            .error
            .contains("spec.egress[0].to[0].networks[0]"),
        "{report:#?}"
    );
    assert!(report.policies.iter().all(|p| p.name != "bad-cidr"));

    // A field this build does not know in a Deny rule's peer: the rule fails closed (denies
    // everything), and an Event says so.
    let rv = server.apply(cnp(
        "future",
        "Admin",
        1,
        json!({"name": "future", "action": "Deny", "to": [{"serviceAccounts": {"name": "x"}}]}),
    ));
    let at = until(&g, "the unknown peer denies", |s| {
        verdict(s, "10.1.0.10", "192.0.2.1", 443).0 == Decision::Deny
    })
    .await;
    latencies.push(("policy added", at - server.applied_at(rv).unwrap()));
    let e = wait_event(&server, "an Event for future", |e| {
        e["regarding"]["name"] == "future"
    })
    .await;
    assert_eq!(e["reason"], "UnknownFieldsFailClosed");
    assert!(
        e["note"].as_str().unwrap().contains("serviceAccounts"),
        "{e}"
    );

    // Deleting the policy lifts it.
    let rv = server
        .delete("ClusterNetworkPolicy", None, "future")
        .unwrap();
    let at = until(&g, "future gone", |s| {
        verdict(s, "10.1.0.10", "192.0.2.1", 443).0 == Decision::Allow
    })
    .await;
    latencies.push(("policy deleted", at - server.applied_at(rv).unwrap()));

    for (what, d) in &latencies {
        println!("API event -> new snapshot ({what}): {:.1} ms", millis(*d));
    }
}

/// The first Event that satisfies `ok`, waiting up to 30 s for it.
pub(crate) async fn wait_event(
    server: &ApiServer,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = server.events().into_iter().find(|e| ok(e)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no Event: {what}: {:#?}",
            server.events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn metrics_text(m: &ClusterMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    m.register(&mut registry);
    chokepoint::metrics::render(&registry)
}

/// The ready backends of the Service port at `cluster_ip:port`; `None` when no Service is there.
fn backends(s: &Snapshot, cluster_ip: &str, port: u16) -> Option<Vec<String>> {
    let r = s.service_at(ip(cluster_ip), port, Protocol::Tcp)?;
    Some(s.ready_backends(r).iter().map(|b| b.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_endpoint_slices_are_watched_and_only_ready_endpoints_are_backends() {
    let server = ApiServer::start_new(&["ClusterNetworkPolicy"]).await;
    seed(&server);
    seed_db_service(&server);
    let g = gateway(&server).await;
    until(&g, "the Service has its ready backend", |s| {
        backends(s, "10.96.0.20", 5432) == Some(vec!["10.1.0.20:15432".into()])
    })
    .await;
    let s = g.state.snapshot();
    let r = s.service_at(ip("10.96.0.20"), 5432, Protocol::Tcp).unwrap();
    assert_eq!((s.service(r).namespace, s.service(r).name), ("b", "db"));

    // The endpoint stops being ready: no backend is left.
    server.apply(endpoint_slice(
        "b",
        "db",
        &[("10.1.0.20", false, "db")],
        "pg",
        15432,
    ));
    until(&g, "the Service has no ready backend", |s| {
        backends(s, "10.96.0.20", 5432) == Some(Vec::new())
    })
    .await;
    // Ready again, then the Service is deleted: its ClusterIP names nothing.
    server.apply(endpoint_slice(
        "b",
        "db",
        &[("10.1.0.20", true, "db")],
        "pg",
        15432,
    ));
    until(&g, "the backend is back", |s| {
        backends(s, "10.96.0.20", 5432) == Some(vec!["10.1.0.20:15432".into()])
    })
    .await;
    server.delete("Service", Some("b"), "db");
    until(&g, "the ClusterIP names no Service", |s| {
        backends(s, "10.96.0.20", 5432).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_410_and_relist_leave_no_stale_snapshot() {
    let server = ApiServer::start_new(&["ClusterNetworkPolicy"]).await;
    seed(&server);
    server.apply(namespace("b", json!({"team": "secret"})));
    let g = gateway(&server).await;
    assert_eq!(
        verdict(&g.state.snapshot(), "10.1.0.10", "10.1.0.20", 5432).0,
        Decision::Deny
    );
    let (pod_lists, _) = server.requests("Pod");

    // Restart with history kept: the watch resumes from its version, no relist.
    server.stop().await;
    server.start().await;
    server.apply(pod("b", "db3", "10.1.0.23", "node-b", json!({}), "Running"));
    until(&g, "db3 after a restart", |s| {
        s.pod_by_ip(ip("10.1.0.23")).is_some()
    })
    .await;
    assert_eq!(
        server.requests("Pod").0,
        pod_lists,
        "resumed without a relist"
    );

    // Down while objects change, history compacted: 410 on re-watch, then a relist that
    // drops what was deleted meanwhile.
    server.stop().await;
    server.delete("Pod", Some("b"), "db").unwrap();
    server.apply(pod(
        "b",
        "db-new",
        "10.1.0.30",
        "node-b",
        json!({}),
        "Running",
    ));
    server.apply(namespace("b", json!({})));
    server.compact();
    server.start().await;
    until(&g, "the relisted state", |s| {
        s.pod_by_ip(ip("10.1.0.20")).is_none()
            && s.pod_by_ip(ip("10.1.0.30")).is_some()
            && verdict(s, "10.1.0.10", "10.1.0.30", 5432).0 == Decision::Allow
    })
    .await;
    assert!(server.requests("Pod").0 > pod_lists, "relisted after 410");

    // 410 without a restart, after a change the watchers never saw as an event.
    let before = server.requests("Namespace").0;
    server.apply_all(vec![namespace("b", json!({"team": "secret"}))], false);
    server.expire_watches();
    until(&g, "the relisted namespace", |s| {
        verdict(s, "10.1.0.10", "10.1.0.30", 5432).0 == Decision::Deny
    })
    .await;
    assert!(server.requests("Namespace").0 > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_installed_later_is_picked_up() {
    let server = ApiServer::start_new(&["ClusterNetworkPolicy"]).await;
    seed(&server);
    let g = gateway(&server).await;
    assert_eq!(g.state.snapshot().counts().developer_policies, 0);
    server.install_crd("DeveloperNetworkPolicy");
    server.apply(json!({
        "apiVersion": "policy.chokepoint.dev/v1alpha1", "kind": "DeveloperNetworkPolicy",
        "metadata": {"name": "only-db", "namespace": "a"},
        "spec": {"subject": {"podSelector": {}},
                 "egress": [{"action": "Deny", "to": [{"networks": ["192.0.2.0/24"]}]}]}
    }));
    // The watcher retries the absent kind with its backoff (at most 30 s apart).
    until(&g, "the DeveloperNetworkPolicy applies", |s| {
        verdict(s, "10.1.0.10", "192.0.2.9", 443)
            == (Decision::Deny, Reason::Rule, TierName::NetworkPolicy)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_policy_annotated_staged_decides_nothing_until_the_annotation_goes() {
    let server = ApiServer::start_new(&["ClusterNetworkPolicy"]).await;
    seed(&server);
    let g = gateway(&server).await;
    let deny_b = |annotations: serde_json::Value| {
        let mut p = cnp(
            "deny-b",
            "Admin",
            5,
            json!({"name": "no-b", "action": "Deny", "to": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}]}),
        );
        p["metadata"]["annotations"] = annotations;
        p
    };
    server.apply(deny_b(json!({"policy.chokepoint.dev/mode": "staged"})));
    until(&g, "the policy is staged", |s| {
        s.counts().staged_policies == 1
    })
    .await;
    let s = g.state.snapshot();
    let flow = Flow {
        src: ip("10.1.0.10"),
        dst: ip("10.1.0.20"),
        protocol: Protocol::Tcp,
        port: 5432,
        names: &[],
        addressed: None,
    };
    let v = s.evaluate(&flow);
    assert_eq!(
        v.decision,
        Decision::Allow,
        "a staged policy decides nothing"
    );
    let staged = s.staged_difference(&flow, &v).expect("it would deny");
    assert_eq!(staged.verdict.decision, Decision::Deny);
    // Enforced: the annotation is gone.
    server.apply(deny_b(json!({})));
    until(&g, "the policy is enforced", |s| {
        s.counts().staged_policies == 0
            && verdict(s, "10.1.0.10", "10.1.0.20", 5432).0 == Decision::Deny
    })
    .await;
}

/// Runs the `chokepoint` binary off the runtime's workers (the API server runs on them).
async fn chokepoint(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(chokepoint_tests::chokepoint_bin())
            .args(args)
            .output()
            .expect("run chokepoint")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_check_read_the_live_cluster() {
    let server = ApiServer::start_new(&["ClusterNetworkPolicy"]).await;
    seed(&server);
    server.apply(namespace("b", json!({"team": "secret"})));
    seed_db_service(&server);
    server.apply(cnp(
        "bad-cidr",
        "Admin",
        5,
        json!({"action": "Deny", "to": [{"networks": ["10.1.0.5/16"]}]}),
    ));
    let dir = std::env::temp_dir().join(format!("chokepoint-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    server.write_kubeconfig(&kubeconfig);
    let k = kubeconfig.display().to_string();

    let out = chokepoint(
        [
            "explain",
            "--kubeconfig",
            &k,
            "--from",
            "a/web",
            "--to",
            "b/db:5432",
            "--output",
            "json",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "deny", "{v}");
    assert_eq!(v["decided_by"]["policy"], "deny-secret");
    assert_eq!(v["destination"]["pod"], "db");
    // The invalid object is left out (and said so), as the gateway does.
    assert!(stderr.contains("ClusterNetworkPolicy/bad-cidr"), "{stderr}");

    // Through the Service: decided on its ready backend, the pod db.
    let out = chokepoint(
        [
            "explain",
            "--kubeconfig",
            &k,
            "--from",
            "a/web",
            "--to",
            "svc/b/db:pg",
            "--output",
            "json",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["service"]["cluster_ips"], json!(["10.96.0.20"]), "{v}");
    let backends = v["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "only the ready endpoint: {v}");
    assert_eq!(backends[0]["pod"], "db");
    assert_eq!(backends[0]["port"], 15432);
    assert_eq!(backends[0]["verdict"], "deny");
    assert_eq!(backends[0]["decided_by"]["policy"], "deny-secret");

    let out = chokepoint(["check", "--kubeconfig", &k].map(String::from).to_vec()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ClusterNetworkPolicy/bad-cidr: spec.egress[0].to[0].networks[0]: CIDR `10.1.0.5/16` has host bits set"),
        "{stderr}"
    );
    server.delete("ClusterNetworkPolicy", None, "bad-cidr");
    let out = chokepoint(["check", "--kubeconfig", &k].map(String::from).to_vec()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: 1 cluster policies") && stdout.contains("3 pods"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
