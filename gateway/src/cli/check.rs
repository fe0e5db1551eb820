//! `chokepoint check PATH…`

use std::path::PathBuf;
use std::process::ExitCode;

use chokepoint_config::kube::ClientSource;
use chokepoint_config::{UnknownFields, World, load_paths};

use super::{Error, cluster, report};

pub fn run(paths: &[PathBuf]) -> Result<ExitCode, Error> {
    let loaded = load_paths(paths, UnknownFields::Reject);
    report(loaded.diagnostics)?;
    summary(&loaded.world)
}

/// Every policy object of the cluster, validated as the gateway validates them (fields this
/// build does not know are warnings: the gateway reads them failing closed).
pub fn run_cluster(source: &ClientSource) -> Result<ExitCode, Error> {
    let objects = cluster::read(source)?;
    report(objects.diagnostics())?;
    summary(&objects.world())
}

fn summary(w: &World) -> Result<ExitCode, Error> {
    println!(
        "ok: {} cluster policies, {} DeveloperNetworkPolicies, {} NetworkPolicies, {} namespaces, {} pods, {} nodes",
        w.cluster_policies.len(),
        w.developer_policies.len(),
        w.network_policies.len(),
        w.inventory.namespaces.len(),
        w.inventory.pods.len(),
        w.inventory.nodes.len()
    );
    let staged = &w.staged;
    if !staged.is_empty() {
        println!(
            "staged (decide nothing): {} cluster policies, {} DeveloperNetworkPolicies, {} NetworkPolicies",
            staged.cluster_policies.len(),
            staged.developer_policies.len(),
            staged.network_policies.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
