//! The Kubernetes source: the watchers of `chokepoint_config::kube` deliver worlds, this
//! compiles each into a snapshot for this node (only its pods are subjects) on a blocking
//! thread and installs it, then hands the installed policies to the [reports](super::report)
//! (Events, conditions). Invalid objects were left out by the source; the reports count them
//! by kind.

use std::sync::Arc;
use std::time::Instant;

use chokepoint_config::kube::events::Outcome;
use chokepoint_config::kube::{ClientSource, KubeSource, WATCHED, WatchOptions};
use chokepoint_config::settings::GatewaySettings;
use kube::runtime::events::EventType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::report::Reports;
use crate::policy::Snapshot;
use crate::state::{PolicyState, options};

/// The `kind` label: one of the watched kinds (a fixed set, `WATCHED`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// `type` (`normal`, `warning`) and `outcome` (`published`, `superseded`, `dropped`,
/// `failed`) of an Event about a policy object.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub r#type: String,
    pub outcome: String,
}

/// `outcome` (`written`, `failed`) of a status write.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusWriteLabels {
    pub outcome: String,
}

/// Metrics of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Policy objects left out because they failed validation (each counted once per version).
    pub skipped_objects: Family<KindLabels, Counter>,
    /// Events about policy objects, by type and what became of them.
    pub events: Family<EventLabels, Counter>,
    /// 1 while this gateway holds the status Lease (writes DeveloperNetworkPolicy conditions).
    pub status_writer: Gauge,
    /// DeveloperNetworkPolicy status writes, by outcome.
    pub status_writes: Family<StatusWriteLabels, Counter>,
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
        let events = Family::<EventLabels, Counter>::default();
        for t in [EventType::Normal, EventType::Warning] {
            for o in [
                Outcome::Published,
                Outcome::Superseded,
                Outcome::Dropped,
                Outcome::Failed,
            ] {
                drop(events.get_or_create(&EventLabels::of(t, o)));
            }
        }
        let status_writes = Family::<StatusWriteLabels, Counter>::default();
        for outcome in ["written", "failed"] {
            drop(status_writes.get_or_create(&StatusWriteLabels {
                outcome: outcome.to_owned(),
            }));
        }
        ClusterMetrics {
            skipped_objects,
            events,
            status_writer: Gauge::default(),
            status_writes,
        }
    }
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("chokepoint").register(
            "kubernetes_skipped_objects",
            "Policy objects from the API server skipped because they failed validation, by kind",
            self.skipped_objects.clone(),
        );
        let r = registry.sub_registry_with_prefix("chokepoint");
        r.register(
            "kubernetes_events",
            "Events about policy objects by type and outcome (published, superseded by a newer change, dropped by the rate limit's full queue, failed)",
            self.events.clone(),
        );
        r.register(
            "kubernetes_status_writer",
            "1 while this gateway holds the status Lease and writes DeveloperNetworkPolicy conditions",
            self.status_writer.clone(),
        );
        r.register(
            "kubernetes_status_writes",
            "DeveloperNetworkPolicy status writes by outcome",
            self.status_writes.clone(),
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

/// The watchers and the reports, between [`start`] and [`follow`].
#[derive(Debug)]
pub struct Following {
    source: KubeSource,
    reports: Reports,
}

/// Starts the watchers (and the reports: Events, the status Lease), waits for the initial
/// sync of every kind and installs the first snapshot. Returns them for [`follow`].
pub async fn start(
    state: &Arc<PolicyState>,
    client: kube::Client,
    node: &str,
    metrics: &ClusterMetrics,
) -> Following {
    let settings = &state.sources().kubernetes;
    let options = WatchOptions {
        debounce: settings.debounce,
    };
    let mut reports = Reports::start(client.clone(), node, settings, metrics);
    let mut source = KubeSource::start(client, options);
    tracing::info!(target: "kube", node, "waiting for the initial sync of every watched kind");
    let first = source.next().await;
    let generation = install(state, node, &mut reports, first).await;
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
    Following { source, reports }
}

/// Installs every later update; runs until the process ends (or the task is aborted, which
/// stops the watchers and the reports).
pub async fn follow(state: Arc<PolicyState>, mut following: Following, node: String) {
    loop {
        let update = following.source.next().await;
        install(&state, &node, &mut following.reports, update).await;
    }
}

async fn install(
    state: &Arc<PolicyState>,
    node: &str,
    reports: &mut Reports,
    update: chokepoint_config::kube::Update,
) -> u64 {
    state.skipped(&update.findings);
    let options = options(state.sources());
    let node_name = node.to_owned();
    let started = Instant::now();
    // Compiling a large world takes a while, and so does comparing every policy with the
    // snapshot in force to keep the counters of the unchanged ones: keep both off the
    // runtime's workers.
    let installer = state.clone();
    let world = update.world;
    let installed = tokio::task::spawn_blocking(move || {
        installer.install(Snapshot::compile_for_node(&world, options, &node_name))
    })
    .await;
    match installed {
        Ok(generation) => {
            tracing::info!(target: "kube", generation, compile_ms = started.elapsed().as_millis() as u64, "snapshot rebuilt");
            reports
                .installed(&update.policies, generation, state.snapshot())
                .await;
            generation
        }
        Err(e) => {
            tracing::error!(target: "kube", "snapshot compile failed; the previous one stays: {e}");
            state.generation()
        }
    }
}
