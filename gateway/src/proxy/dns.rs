//! The gateway as the DNS proxy sees it ([`chokepoint_dns::Policy`]): whose namespace a
//! query's answers are recorded for, and the normal verdict for the DNS flow itself (pod →
//! the server it addressed), audited when denied. DNS is never filtered by `domainNames`
//! rules (NPEP-133): every name may be resolved, only the flow to the server is decided.
//!
//! A query to a kube-dns-style ClusterIP is decided like any flow to a Service: on the
//! backend (kube-proxy's translation, or a ready endpoint the gateway picks), and its record
//! names the Service.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use chokepoint_config::model::Protocol;
use chokepoint_redirect::conntrack::{Conntrack, L4};

use super::Context;
use super::service::{Target, before_nat, open_conntrack};
use crate::metrics::ProtocolLabel;
use crate::policy::Flow;

/// [`chokepoint_dns::Policy`] over the gateway's snapshot, metrics and audit log.
#[derive(Debug)]
pub struct DnsFlows {
    ctx: Arc<Context>,
    /// Where a denied query was addressed before kube-proxy's DNAT, for its record only: the
    /// verdict never needs it, so allowed queries never pay for the lookup.
    conntrack: Mutex<Option<Conntrack>>,
}

impl DnsFlows {
    pub fn new(ctx: Arc<Context>) -> Self {
        let conntrack = Mutex::new(open_conntrack(&ctx, "denied DNS queries"));
        DnsFlows { ctx, conntrack }
    }

    /// The ClusterIP the pod addressed when the node translated it to `seen`.
    fn addressed(&self, protocol: L4, src: SocketAddr, seen: SocketAddr) -> Option<SocketAddr> {
        let mut ct = self
            .conntrack
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        before_nat(ct.as_mut(), protocol, src, seen).filter(|a| *a != seen)
    }
}

impl chokepoint_dns::Policy for DnsFlows {
    fn source_namespace(&self, src: IpAddr) -> Option<Arc<str>> {
        self.ctx
            .state
            .snapshot()
            .source_namespace(src)
            .map(Arc::from)
    }

    fn allow(&self, src: SocketAddr, seen: SocketAddr, tcp: bool) -> bool {
        let ctx = &self.ctx;
        let snapshot = ctx.state.snapshot();
        let (protocol, label, l4) = if tcp {
            (Protocol::Tcp, ProtocolLabel::Tcp, L4::Tcp)
        } else {
            (Protocol::Udp, ProtocolLabel::Udp, L4::Udp)
        };
        // Decided without conntrack: a translated query already goes to the backend.
        let (dst, addressed) = match ctx.target(&snapshot, protocol, src, seen, None) {
            Target::Backend { dst, addressed } => (dst, addressed),
            Target::Refused { addressed, reason } => {
                ctx.refused(&snapshot, protocol, src, addressed, reason);
                return false;
            }
        };
        let flow = Flow::to(src.ip(), dst, protocol, &[]).addressed(addressed);
        let verdict = snapshot.evaluate_counted(&flow);
        ctx.metrics.decided(label, &verdict);
        let staged = ctx.staged(&snapshot, &flow, &verdict);
        if !verdict.is_allowed() || staged.is_some() {
            let addressed = addressed.or_else(|| self.addressed(l4, src, seen));
            let flow = flow.addressed(addressed);
            ctx.audit(&snapshot, &flow, src.port(), &verdict, staged.as_ref());
        }
        if verdict.is_allowed() {
            ctx.log_allowed(&snapshot, &flow, &verdict, &[]);
        }
        verdict.is_allowed()
    }

    fn names_apply(&self, src: IpAddr) -> bool {
        self.ctx.state.snapshot().names_apply_to(src)
    }
}
