//! The data path: transparent TCP and UDP proxying with a verdict per connection or flow.
//!
//! Per connection: recover the original destination, identify the source pod by IP in the
//! current snapshot, evaluate, then relay (Accept) or refuse and audit (Deny). The snapshot is
//! read with one atomic load; nothing on this path locks or does file I/O.

pub mod relay;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use chokepoint_config::settings::GatewaySettings;

use crate::audit::{Auditor, FlowDetails};
use crate::metrics::Metrics;
use crate::policy::{Flow, Snapshot, Verdict};
use crate::state::PolicyState;

/// What every connection task needs; shared behind an `Arc`.
#[derive(Debug)]
pub struct Context {
    pub state: Arc<PolicyState>,
    pub metrics: Metrics,
    pub auditor: Auditor,
    pub settings: Arc<GatewaySettings>,
    /// Allowed connections to the metadata server go to its handler.
    pub metadata: crate::metadata::Metadata,
}

impl Context {
    /// Re-decides a live flow against the snapshot now in force; `Some` when it is now denied.
    fn recheck(&self, flow: &Flow<'_>) -> Option<(Arc<Snapshot>, Verdict)> {
        let snapshot = self.state.snapshot();
        let verdict = snapshot.evaluate(flow);
        (!verdict.is_allowed()).then_some((snapshot, verdict))
    }

    fn audit_denied(&self, snapshot: &Snapshot, flow: &Flow<'_>, src_port: u16, verdict: &Verdict) {
        self.auditor
            .record_denial(snapshot, verdict, &FlowDetails::from_flow(flow, src_port));
    }
}

/// IPv4 peers of dual-stack sockets appear as `::ffff:a.b.c.d`; use the IPv4 form.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
