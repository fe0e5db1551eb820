//! The Kubernetes source at scale, through the test API server over real HTTP: the policy
//! bench's generated world (1,000 namespaces, 50,000 pods, 100 nodes, 10,000
//! ClusterNetworkPolicies, 5,000 NetworkPolicies; `gateway/benches/world`) served as API
//! objects, then
//! * initial sync: from starting the watchers to the first snapshot installed (paged lists of
//!   every kind, conversion and validation of every object, assembly, compile for one node);
//! * rebuild after one change (a namespace label, then a new pod): from the API server
//!   applying it to the new snapshot installed;
//! * memory: VmRSS before the gateway side starts (the server holding the objects) and the
//!   process's peak (VmHWM) after; server and client share the process.
//!
//! `cargo bench -p chokepoint-tests --bench kube_scale`; prints one summary block.

#[path = "../../gateway/benches/world/mod.rs"]
mod world;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chokepoint::metrics::Metrics;
use chokepoint::policy::Counts;
use chokepoint::source::kube::{self, ClusterMetrics};
use chokepoint::state::PolicyState;
use chokepoint_config::settings::GatewaySettings;
use chokepoint_tests::apiserver::ApiServer;
use serde_json::json;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn until_generation(state: &PolicyState, generation: u64) -> Instant {
    let mut changed = state.subscribe();
    while state.generation() < generation {
        tokio::time::timeout(Duration::from_secs(600), changed.changed())
            .await
            .expect("a new snapshot")
            .expect("state alive");
    }
    Instant::now()
}

fn main() {
    // `cargo bench` passes --bench; nothing else is understood.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let params = world::Params::default();
    let generated = world::generate(&params);
    let objects = world::objects::objects(&generated);
    let count = objects.len();
    drop(generated);
    let server = ApiServer::start_new(&[
        "ClusterNetworkPolicy",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "DeveloperNetworkPolicy",
    ])
    .await;
    server.apply_all(objects, false);
    let rss_server = status_kib("VmRSS:");

    let settings = GatewaySettings::from_str(
        std::path::Path::new("/etc/chokepoint/gateway.yaml"),
        "node: node-000\ncapture: {interfaces: [\"veth*\"]}\npolicy: {source: kubernetes}\n",
    )
    .unwrap();
    let state = Arc::new(PolicyState::empty(
        settings.policy.clone(),
        Metrics::default(),
    ));
    let metrics = ClusterMetrics::default();
    let started = Instant::now();
    let source = kube::start(&state, server.client(), "node-000", &metrics).await;
    let initial = started.elapsed();
    let Counts {
        cluster_policies,
        network_policies,
        pods,
        ..
    } = state.snapshot().counts();
    let skipped = chokepoint::metrics::render(&{
        let mut r = prometheus_client::registry::Registry::default();
        metrics.register(&mut r);
        r
    });
    let follow = tokio::spawn(kube::follow(state.clone(), source, "node-000".into()));

    let mut rebuilds = Vec::new();
    for (what, object) in [
        (
            "namespace label",
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "kube-system", "labels": {"team": "platform", "tier": "platform", "bench": "1"}}}),
        ),
        (
            "pod added",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bench-pod", "namespace": "kube-system", "labels": {"app": "bench"}},
            "spec": {"nodeName": "node-000", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.127.255.1", "podIPs": [{"ip": "10.127.255.1"}]}}),
        ),
    ] {
        let generation = state.generation() + 1;
        let rv = server.apply(object);
        let done = until_generation(&state, generation).await;
        rebuilds.push((what, done - server.applied_at(rv).unwrap()));
    }
    follow.abort();
    let peak = status_kib("VmHWM:");

    println!("\n== Kubernetes source at scale (test API server over HTTP, node-000) ==");
    println!(
        "objects served            {count} ({pods} pods, {cluster_policies} cluster policies, {network_policies} NetworkPolicies)"
    );
    println!("initial sync -> snapshot  {:.2} s", initial.as_secs_f64());
    for (what, d) in &rebuilds {
        println!(
            "event -> snapshot ({what:>15})  {:.0} ms",
            d.as_secs_f64() * 1000.0
        );
    }
    println!("VmRSS with server loaded  {:.0} MiB", mib(rss_server));
    println!(
        "VmHWM after all           {:.0} MiB (server + gateway side in one process)",
        mib(peak)
    );
    let skipped_line = skipped
        .lines()
        .filter(|l| l.starts_with("chokepoint_kubernetes_skipped_objects_total"))
        .collect::<Vec<_>>();
    println!("objects skipped as invalid {skipped_line:?}");
}
