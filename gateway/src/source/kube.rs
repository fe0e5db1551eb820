//! The Kubernetes source: the watchers of `chokepoint_config::kube` deliver worlds, this
//! compiles each into a snapshot for this node (only its pods are subjects) on a blocking
//! thread and installs it. Invalid objects were left out by the source; they are counted here
//! by kind.

use std::sync::Arc;
use std::time::Instant;

use chokepoint_config::kube::events::Reporter;
use chokepoint_config::kube::{ClientSource, KubeSource, WATCHED, WatchOptions};
use chokepoint_config::settings::GatewaySettings;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::policy::Snapshot;
use crate::state::{PolicyState, options};

/// The `kind` label: one of the watched kinds (a fixed set, `WATCHED`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Metrics of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Policy objects left out because they failed validation (each counted once per version).
    pub skipped_objects: Family<KindLabels, Counter>,
}

impl Default for ClusterMetrics {
    /// With a zero series per policy kind from the start: a family nothing has counted yet
    /// would not be in `/metrics` at all, and queries of it would find nothing to rate.
    fn default() -> Self {
        let skipped_objects = Family::<KindLabels, Counter>::default();
        for kind in WATCHED.iter().filter(|k| k.is_policy()) {
            // The guard only borrows the new series: it exists once created.
            drop(skipped_objects.get_or_create(&KindLabels {
                kind: kind.kind.to_owned(),
            }));
        }
        ClusterMetrics { skipped_objects }
    }
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("chokepoint").register(
            "kubernetes_skipped_objects",
            "Policy objects from the API server skipped because they failed validation, by kind",
            self.skipped_objects.clone(),
        );
    }
}

/// Where the client configuration comes from, per the settings.
pub fn client_source(settings: &GatewaySettings) -> ClientSource {
    match &settings.policy.kubernetes.kubeconfig {
        Some(path) => ClientSource::Kubeconfig(path.clone()),
        None => ClientSource::Infer,
    }
}

/// Starts the watchers, waits for the initial sync of every kind and installs the first
/// snapshot. Returns the source for [`follow`].
pub async fn start(
    state: &Arc<PolicyState>,
    client: kube::Client,
    node: &str,
    metrics: &ClusterMetrics,
) -> KubeSource {
    let options = WatchOptions {
        debounce: state.sources().kubernetes.debounce,
        events: Some(Reporter {
            controller: "chokepoint".into(),
            instance: Some(node.to_owned()),
        }),
    };
    let mut source = KubeSource::start(client, options);
    tracing::info!(target: "kube", node, "waiting for the initial sync of every watched kind");
    let first = source.next().await;
    let generation = install(state, node, metrics, first).await;
    let counts = state.snapshot().counts();
    tracing::info!(
        target: "kube",
        generation,
        cluster = counts.cluster_policies,
        network = counts.network_policies,
        staged = counts.staged_policies,
        pods = counts.pods,
        "initial sync done"
    );
    source
}

/// Installs every later update; runs until the process ends.
pub async fn follow(
    state: Arc<PolicyState>,
    mut source: KubeSource,
    node: String,
    metrics: ClusterMetrics,
) {
    loop {
        let update = source.next().await;
        install(&state, &node, &metrics, update).await;
    }
}

async fn install(
    state: &Arc<PolicyState>,
    node: &str,
    metrics: &ClusterMetrics,
    update: chokepoint_config::kube::Update,
) -> u64 {
    for kind in &update.skipped {
        metrics
            .skipped_objects
            .get_or_create(&KindLabels {
                kind: (*kind).to_owned(),
            })
            .inc();
    }
    state.skipped(&update.findings);
    let options = options(state.sources());
    let node_name = node.to_owned();
    let started = Instant::now();
    // Compiling a large world takes a while, and so does comparing every policy with the
    // snapshot in force to keep the counters of the unchanged ones: keep both off the
    // runtime's workers.
    let installer = state.clone();
    let installed = tokio::task::spawn_blocking(move || {
        installer.install(Snapshot::compile_for_node(
            &update.world,
            options,
            &node_name,
        ))
    })
    .await;
    match installed {
        Ok(generation) => {
            tracing::info!(target: "kube", generation, compile_ms = started.elapsed().as_millis() as u64, "snapshot rebuilt");
            generation
        }
        Err(e) => {
            tracing::error!(target: "kube", "snapshot compile failed; the previous one stays: {e}");
            state.generation()
        }
    }
}
