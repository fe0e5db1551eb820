//! Keeps the capture's sets of Service ports without a ready endpoint equal to the snapshot's
//! (TPROXY mode). kube-proxy refuses those connections in a filter chain the captured packet
//! would meet before the gateway's socket, without an answer the pod could see; with the sets,
//! the capture hands them to the gateway, which resets and audits them (`no_endpoints`, see
//! `proxy::service`). Applied off the data path: once at start, then after every snapshot swap
//! that changes them.

use std::net::SocketAddr;
use std::sync::Arc;

use chokepoint_config::model::Protocol;
use chokepoint_redirect::{CaptureMode, CaptureSpec, L4};

use crate::policy::Snapshot;
use crate::state::PolicyState;

type Ports = Vec<(SocketAddr, L4)>;

fn unserved(snapshot: &Snapshot) -> Ports {
    snapshot
        .unserved_ports()
        .into_iter()
        .filter_map(|(addr, protocol)| match protocol {
            Protocol::Tcp => Some((addr, L4::Tcp)),
            Protocol::Udp => Some((addr, L4::Udp)),
            Protocol::Sctp => None,
        })
        .collect()
}

/// Applies the sets for the snapshot in force; `Some` with what was applied. A failure is
/// logged: those connections then meet kube-proxy's reject as before (closed, unaudited).
fn apply(spec: &CaptureSpec, ports: Ports) -> Option<Ports> {
    match chokepoint_redirect::set_unserved(spec, &ports) {
        Ok(()) => {
            tracing::debug!(target: "redirect", ports = ports.len(), "Service ports without endpoints handed to the gateway");
            Some(ports)
        }
        Err(e) => {
            tracing::warn!(target: "redirect", "could not update the Service ports without endpoints: {e}");
            None
        }
    }
}

/// At start, after the rules are installed: the first sets, and the task that keeps them.
/// Nothing in REDIRECT mode, which captures before the Service DNAT.
pub fn start(spec: &CaptureSpec, state: &Arc<PolicyState>) -> Option<tokio::task::JoinHandle<()>> {
    if spec.mode != CaptureMode::Tproxy {
        return None;
    }
    let applied = apply(spec, unserved(&state.snapshot()));
    Some(tokio::spawn(follow(spec.clone(), state.clone(), applied)))
}

async fn follow(spec: CaptureSpec, state: Arc<PolicyState>, mut applied: Option<Ports>) {
    let mut changes = state.subscribe();
    while changes.changed().await.is_ok() {
        let ports = unserved(&state.snapshot());
        if applied.as_ref() == Some(&ports) {
            continue;
        }
        let spec = spec.clone();
        applied = tokio::task::spawn_blocking(move || apply(&spec, ports))
            .await
            .unwrap_or(None);
    }
}
