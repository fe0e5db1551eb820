//! The decision for one queued packet: where its flow goes. The same steps as the proxy's
//! (`tcp::decide`, `udp::start_flow`) up to the verdict, with one more answer: *proxy*, for
//! every flow whose verdict the proxy must finish (a look at its bytes, a backend the gateway
//! picks, the metadata server) or that it refuses and audits anyway (denials). So a denied
//! flow is audited once, by the proxy, with every field it always had, however often its
//! first packet is retransmitted.
//!
//! A flow kube-proxy translated is decided on the backend it reaches, like any other; the
//! ClusterIP the pod addressed (which the queued packet no longer carries: the reader reads
//! the capture's note of it for a new flow, asks conntrack for a live one) gives the names
//! and the Service in the records.

use std::net::SocketAddr;
use std::sync::Arc;

use chokepoint_config::model::Protocol;
use chokepoint_redirect::L4;
use chokepoint_redirect::packet::Tuple;

use super::permits::FastPermits;
use crate::audit::FlowDetails;
use crate::metrics::{ProtocolLabel, ToProxyLabel};
use crate::policy::{Flow, Snapshot};
use crate::proxy::{Context, canonical, names};

/// Where a queued packet's flow goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Allowed: the flow stays in the kernel.
    Kernel,
    /// The proxy decides it as without the fast path (its first packet only), for this
    /// reason.
    Proxy(ToProxyLabel),
    /// Refused: a live flow the policies in force deny, or a new one beyond the `limits:`
    /// caps; reset (TCP) or dropped, and audited here.
    Revoked,
}

fn protocol(l4: L4) -> (Protocol, ProtocolLabel) {
    match l4 {
        L4::Tcp => (Protocol::Tcp, ProtocolLabel::Tcp),
        L4::Udp => (Protocol::Udp, ProtocolLabel::Udp),
    }
}

/// Decides the first packet of a new flow; an allowed one takes its place in the `limits:`
/// caps from `permits`, or is refused (`Revoked`: reset or dropped, and audited).
/// `addressed`: the `ClusterIP:port` the pod sent it to, when kube-proxy translated it to
/// the backend `tuple.dst` (the verdict is the backend's; the names and records are the
/// Service's, as on the proxy).
pub fn first(
    ctx: &Context,
    snapshot: &Arc<Snapshot>,
    tuple: &Tuple,
    addressed: Option<SocketAddr>,
    permits: &FastPermits,
) -> Path {
    let (src, dst) = (canonical(tuple.src), canonical(tuple.dst));
    let addressed = addressed.map(canonical);
    let (protocol, label) = protocol(tuple.protocol);
    // The metadata server's handler, and a ClusterIP nothing translated (the gateway picks
    // the backend, or refuses it): the proxy's.
    if ctx.metadata.intercepts(dst)
        || addressed.is_some_and(|a| ctx.metadata.intercepts(a))
        || ctx.metadata.refuses(dst, protocol == Protocol::Tcp)
    {
        return Path::Proxy(ToProxyLabel::Metadata);
    }
    if snapshot
        .service_at(dst.ip(), dst.port(), protocol)
        .is_some()
    {
        return Path::Proxy(ToProxyLabel::ClusterIp);
    }
    // The capture's note of a translated flow's ClusterIP is keyed without the backend's
    // address (see `chokepoint_redirect::addressed`): a note that names a Service this
    // backend is not a ready endpoint of is another flow's, or newer than the snapshot.
    if let Some(a) = addressed
        && let Some(service) = snapshot.service_at(a.ip(), a.port(), protocol)
        && snapshot
            .ready_backends(service)
            .binary_search(&dst)
            .is_err()
    {
        return Path::Proxy(ToProxyLabel::ServiceNoteMismatch);
    }
    let named = addressed.map_or(dst.ip(), |a| a.ip());
    let names = names::lookup(ctx.names.as_deref(), snapshot, src.ip(), named, true);
    let name_refs = names::as_strs(&names);
    let flow = Flow::to(src.ip(), dst, protocol, &name_refs).addressed(addressed);
    let (verdict, matched) = snapshot.evaluate_matched(&flow);
    // Denied: the proxy refuses and audits it. Accepted by name: the proxy checks the name
    // the connection shows (SNI, Host); UDP accepted by name is relayed by the proxy too, as
    // without the fast path. The proxy counts the rule hits of those.
    if !verdict.is_allowed() {
        return Path::Proxy(ToProxyLabel::Denied);
    }
    if verdict.by_domain_names {
        return Path::Proxy(ToProxyLabel::ByName);
    }
    // Counted once, here, for the flows the proxy never sees.
    snapshot.count_matched(&flow, &verdict, &matched);
    ctx.metrics.decided(label, &verdict);
    let staged = ctx.staged(snapshot, &flow, &verdict);
    ctx.audit_named(snapshot, &flow, src.port(), &verdict, staged.as_ref());
    let placed =
        super::permits::acquire(ctx, snapshot, permits, tuple.protocol, tuple.src, tuple.dst);
    if let Err(exceeded) = placed {
        let details = FlowDetails::from_flow(&flow, src.port());
        ctx.refuse_over_limit(snapshot, &verdict, &details, exceeded);
        return Path::Revoked;
    }
    ctx.log_allowed(snapshot, &flow, &verdict, &names);
    Path::Kernel
}

/// Re-decides a live flow allowed at an older generation (its next packet after a reload),
/// `tuple.dst` being where it goes and `addressed` the ClusterIP it was sent to, as for
/// [`first`]. Without `recheckOnReload` a live flow keeps going, as a proxied one does.
pub fn again(
    ctx: &Context,
    snapshot: &Snapshot,
    tuple: &Tuple,
    addressed: Option<SocketAddr>,
) -> Path {
    if !ctx.settings.policy.recheck_on_reload {
        return Path::Kernel;
    }
    let (src, dst) = (canonical(tuple.src), canonical(tuple.dst));
    let addressed = addressed.map(canonical);
    let (protocol, _) = protocol(tuple.protocol);
    let named = addressed.map_or(dst.ip(), |a| a.ip());
    let names = names::lookup(ctx.names.as_deref(), snapshot, src.ip(), named, true);
    let name_refs = names::as_strs(&names);
    let flow = Flow::to(src.ip(), dst, protocol, &name_refs).addressed(addressed);
    let verdict = snapshot.evaluate(&flow);
    if verdict.is_allowed() {
        // Allowed by name: it was checked when it began; the proxy's live flows are not
        // looked at again either.
        return Path::Kernel;
    }
    ctx.audit_named(snapshot, &flow, src.port(), &verdict, None);
    Path::Revoked
}
