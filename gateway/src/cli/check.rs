//! `chokepoint check PATH…`

use std::path::PathBuf;
use std::process::ExitCode;

use chokepoint_config::{UnknownFields, load_paths};

use super::{Error, report};

pub fn run(paths: &[PathBuf]) -> Result<ExitCode, Error> {
    let loaded = load_paths(paths, UnknownFields::Reject);
    report(loaded.diagnostics)?;
    let w = &loaded.world;
    println!(
        "ok: {} cluster policies, {} DeveloperNetworkPolicies, {} NetworkPolicies, {} namespaces, {} pods, {} nodes",
        w.cluster_policies.len(),
        w.developer_policies.len(),
        w.network_policies.len(),
        w.inventory.namespaces.len(),
        w.inventory.pods.len(),
        w.inventory.nodes.len()
    );
    Ok(ExitCode::SUCCESS)
}
