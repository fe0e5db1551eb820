//! The gateway as the DNS proxy sees it ([`chokepoint_dns::Policy`]): whose namespace a
//! query's answers are recorded for, and the normal verdict for the DNS flow itself (pod →
//! the server it addressed), audited when denied. DNS is never filtered by `domainNames`
//! rules (NPEP-133): every name may be resolved, only the flow to the server is decided.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use chokepoint_config::model::Protocol;

use super::Context;
use crate::metrics::ProtocolLabel;
use crate::policy::Flow;

/// [`chokepoint_dns::Policy`] over the gateway's snapshot, metrics and audit log.
#[derive(Debug)]
pub struct DnsFlows(pub Arc<Context>);

impl chokepoint_dns::Policy for DnsFlows {
    fn source_namespace(&self, src: IpAddr) -> Option<Arc<str>> {
        self.0.state.snapshot().source_namespace(src).map(Arc::from)
    }

    fn allow(&self, src: SocketAddr, original_dst: SocketAddr, tcp: bool) -> bool {
        let ctx = &self.0;
        let snapshot = ctx.state.snapshot();
        let (protocol, label) = if tcp {
            (Protocol::Tcp, ProtocolLabel::Tcp)
        } else {
            (Protocol::Udp, ProtocolLabel::Udp)
        };
        let flow = Flow::to(src.ip(), original_dst, protocol, &[]);
        let verdict = snapshot.evaluate(&flow);
        ctx.metrics.decided(label, &verdict);
        let staged = ctx.staged(&snapshot, &flow, &verdict);
        ctx.audit(&snapshot, &flow, src.port(), &verdict, staged.as_ref());
        verdict.is_allowed()
    }

    fn names_apply(&self, src: IpAddr) -> bool {
        self.0.state.snapshot().names_apply_to(src)
    }
}
