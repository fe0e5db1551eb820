//! Transparent TCP: accept a pod's connection, decide it, then relay or reset.
//!
//! Per connection ([`handle`]): the original destination; [`decide`] (the verdict, and the
//! check of the name a connection accepted by name shows); the metadata handler for a
//! metadata address, else [`forward`] (connect upstream, relay, re-decide on reload).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chokepoint_config::model::Protocol;
use chokepoint_config::settings::CaptureMode;
use chokepoint_redirect::sockopt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use chokepoint_dns::Cache;

use super::relay::{Moved, RelayEnd, relay};
use super::service::Target;
use super::{Context, canonical, limits, names};
use crate::audit::{AuditRecord, FlowDetails};
use crate::drain;
use crate::l7::peek::{self, Shown};
use crate::metrics::{DirectionLabel, ErrorKind, ProtocolLabel};
use crate::policy::{Flow, Snapshot, Verdict};

/// Accepts until a drain starts; each connection runs in its own task holding a drain watch.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener, mut drain: drain::Watch) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                ctx.metrics.proxied(ProtocolLabel::Tcp);
                let ctx = ctx.clone();
                let watch = drain.clone();
                let span = tracing::debug_span!("tcp", src = %peer);
                tokio::spawn(
                    async move {
                        handle(&ctx, stream, peer).await;
                        drop(watch);
                    }
                    .instrument(span),
                );
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(e) => {
                tracing::warn!(target: "proxy", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One accepted connection: recover its destination, [`decide`] it, then hand it to the
/// metadata handler or [`forward`] it.
async fn handle(ctx: &Context, pod: TcpStream, peer: SocketAddr) {
    let peer = canonical(peer);
    let Ok(original) = original_destination(ctx, &pod) else {
        ctx.metrics.error(ErrorKind::OriginalDestination);
        reset(pod);
        return;
    };
    // Held until the connection closes, whatever it turns out to be.
    let snapshot = ctx.state.snapshot();
    let _permit = match ctx.limits.tcp.acquire(limits::holder(&snapshot, peer.ip())) {
        Ok(permit) => permit,
        Err(exceeded) => {
            reset(pod);
            let details = FlowDetails::new(peer, original, Protocol::Tcp);
            let verdict = super::service::refused_verdict();
            return ctx.refuse_over_limit(&snapshot, &verdict, &details, exceeded);
        }
    };
    drop(snapshot);
    let Some(Decided {
        pod,
        dst: original,
        addressed,
        names,
        one_request,
    }) = decide(ctx, pod, peer, original).await
    else {
        return;
    };
    let name_refs = names::as_strs(&names);
    let flow = Flow::to(peer.ip(), original, Protocol::Tcp, &name_refs).addressed(addressed);
    if ctx.metadata.intercepts(original) {
        return crate::metadata::serve(ctx.for_metadata(), pod, peer, original, flow.names).await;
    }
    forward(ctx, pod, peer, original, &flow, one_request).await;
}

/// Where the connection arrived: the backend when kube-proxy's DNAT ran before the capture.
fn original_destination(ctx: &Context, pod: &TcpStream) -> io::Result<SocketAddr> {
    match ctx.settings.capture.mode {
        // TPROXY delivers the connection to a socket whose local address is the destination.
        CaptureMode::Tproxy => pod.local_addr(),
        CaptureMode::Redirect => sockopt::original_dst(pod),
    }
    .map(canonical)
}

/// An allowed connection, with the names it was decided with.
struct Decided {
    pod: TcpStream,
    /// The backend the connection goes to.
    dst: SocketAddr,
    /// The ClusterIP:port the pod addressed, when it went to a Service.
    addressed: Option<SocketAddr>,
    names: Vec<Arc<str>>,
    /// Cleartext HTTP accepted by its Host: only its first request is relayed (see l7::http).
    one_request: bool,
}

/// Decides a connection against the snapshot in force: the backend it reaches (a Service's,
/// see [`Context::target`]), the verdict, then, for an Accept by name, the check of the name
/// the connection shows. A refused connection is reset and
/// audited here; an allowed one comes back with the names it was decided with (the shown one
/// alone once it is confirmed).
async fn decide(
    ctx: &Context,
    pod: TcpStream,
    peer: SocketAddr,
    seen: SocketAddr,
) -> Option<Decided> {
    let snapshot = ctx.state.snapshot();
    // After kube-proxy's DNAT, conntrack still knows the ClusterIP the pod addressed.
    let before_nat = match ctx.settings.capture.mode {
        CaptureMode::Tproxy => sockopt::original_dst(&pod).ok().map(canonical),
        CaptureMode::Redirect => None,
    };
    let (original, addressed) = match ctx.target(&snapshot, Protocol::Tcp, peer, seen, before_nat) {
        Target::Backend { dst, addressed } => (dst, addressed),
        Target::Refused { addressed, reason } => {
            reset(pod);
            ctx.refused(&snapshot, Protocol::Tcp, peer, addressed, reason);
            return None;
        }
    };
    let cache = ctx.names.as_deref();
    // Names were resolved to the address the pod connected to (a ClusterIP's Service name).
    let named = addressed.map_or(original.ip(), |a| a.ip());
    let names = names::lookup(cache, &snapshot, peer.ip(), named, true);
    let name_refs = names::as_strs(&names);
    let flow = Flow::to(peer.ip(), original, Protocol::Tcp, &name_refs).addressed(addressed);
    let verdict = snapshot.evaluate_counted(&flow);
    ctx.metrics.decided(ProtocolLabel::Tcp, &verdict);
    let staged = ctx.staged(&snapshot, &flow, &verdict);
    if !verdict.is_allowed() {
        reset(pod);
        ctx.audit_named(&snapshot, &flow, peer.port(), &verdict, staged.as_ref());
        return None;
    }
    if ctx.metadata.refuses(original, true) {
        reset(pod);
        ctx.audit_metadata_refused(&snapshot, &flow, peer.port(), &verdict, staged.as_ref());
        return None;
    }
    let mut confirmed = None;
    // Cleartext HTTP accepted by its Host: one request per connection (see l7::http).
    let mut one_request = false;
    if verdict.by_domain_names
        && let Some(cache) = cache
    {
        match check_shown_name(ctx, &pod, &snapshot, cache, &flow, &verdict, peer.port()).await {
            Ok((name, one)) => {
                confirmed = name;
                one_request = one;
            }
            Err(record) => {
                reset(pod);
                ctx.auditor.record(record.staged(staged.as_ref()));
                return None;
            }
        }
    }
    // Allowed: audited only when the staged policies would decide it otherwise.
    ctx.audit_named(&snapshot, &flow, peer.port(), &verdict, staged.as_ref());
    let decided_with = confirmed.as_ref().map_or(&names[..], std::slice::from_ref);
    ctx.log_allowed(&snapshot, &flow, &verdict, decided_with);
    Some(Decided {
        pod,
        dst: original,
        addressed,
        names: confirmed.map_or(names, |name| vec![name]),
        one_request,
    })
}

/// Peeks at the name a connection accepted by name shows (TLS SNI, HTTP Host) and checks it
/// ([`names::check`]): `Ok` with the name it is now known as (`None` when it showed none and
/// `fqdn.withoutName` let it through) and whether it is cleartext HTTP accepted by its Host,
/// `Err` with the audit record of the refusal.
async fn check_shown_name(
    ctx: &Context,
    pod: &TcpStream,
    snapshot: &Snapshot,
    cache: &Cache,
    flow: &Flow<'_>,
    verdict: &Verdict,
    src_port: u16,
) -> Result<(Option<Arc<str>>, bool), Box<AuditRecord>> {
    let shown = peek::shown_name(pod, ctx.settings.fqdn.peek_timeout).await;
    // The port the pod addressed (a Service's port, not its backend's) says which protocol
    // the client speaks.
    let port = flow.addressed.map_or(flow.port, |a| a.port());
    let without_name = ctx.settings.fqdn.without_name_on(port);
    let result = names::check(snapshot, cache, flow, &shown, without_name);
    ctx.metrics.name_checked(result);
    if let Some(reason) = names::denial(result) {
        let (sni, host) = names::shown_fields(&shown);
        let details = FlowDetails::from_flow(flow, src_port).sni(sni).host(host);
        let record = AuditRecord::new(ctx.auditor.node(), snapshot, verdict, &details);
        return Err(Box::new(record.denied_because(reason)));
    }
    // From here on the connection is what it said it is (a re-check on reload too).
    Ok(match shown {
        Shown::Sni(name) => (Some(name.into()), false),
        Shown::Host(name) => (Some(name.into()), true),
        // A conflict is always refused above.
        Shown::Ech { .. } | Shown::Nothing | Shown::Conflict => (None, false),
    })
}

/// Connects to the destination and relays until either side ends, the idle timeout passes
/// or (with `recheckOnReload`) a new snapshot denies the flow.
async fn forward(
    ctx: &Context,
    mut pod: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
    flow: &Flow<'_>,
    one_request: bool,
) {
    let mut upstream = match ctx.upstream.connect(peer, original).await {
        Ok(s) => s,
        Err(kind) => {
            ctx.metrics.error(kind);
            reset(pod);
            return;
        }
    };
    if one_request && let Err(e) = super::first_request::send_closing(&mut pod, &mut upstream).await
    {
        tracing::debug!(target: "proxy", "first request not sent: {e}");
        ctx.metrics.error(ErrorKind::Relay);
        reset(pod);
        return;
    }
    ctx.metrics.active_connections.inc();
    let moved = Moved::default();
    let result = if ctx.settings.policy.recheck_on_reload {
        relay_while_allowed(ctx, &mut pod, &mut upstream, peer.port(), flow, &moved).await
    } else {
        Some(relay(&mut pod, &mut upstream, ctx.settings.timeouts.idle, &moved).await)
    };
    ctx.metrics.active_connections.dec();
    // Whatever ended the relay, the bytes it moved are counted.
    let counted = moved.get();
    ctx.metrics.bytes(DirectionLabel::Sent, counted.sent);
    ctx.metrics
        .bytes(DirectionLabel::Received, counted.received);
    match result {
        None => {
            tracing::debug!(target: "proxy", "closed: a new snapshot denies this connection");
            reset(pod);
        }
        Some(Ok(RelayEnd::Idle)) => {
            tracing::debug!(target: "proxy", "closed after the idle timeout");
        }
        Some(Ok(RelayEnd::Closed)) => {}
        Some(Err(e)) => {
            ctx.metrics.error(ErrorKind::Relay);
            tracing::debug!(target: "proxy", "relay ended: {e}");
        }
    }
}

/// Relays, deciding the flow again after every snapshot swap; `None` (audited) when a new
/// snapshot denies it.
async fn relay_while_allowed(
    ctx: &Context,
    pod: &mut TcpStream,
    upstream: &mut TcpStream,
    src_port: u16,
    flow: &Flow<'_>,
    moved: &Moved,
) -> Option<io::Result<RelayEnd>> {
    let mut changes = ctx.state.subscribe();
    let relayed = relay(pod, upstream, ctx.settings.timeouts.idle, moved);
    tokio::pin!(relayed);
    loop {
        tokio::select! {
            r = &mut relayed => return Some(r),
            Ok(()) = changes.changed() => {
                if let Some((snapshot, verdict)) = ctx.recheck(flow) {
                    ctx.audit_named(&snapshot, flow, src_port, &verdict, None);
                    return None;
                }
            }
        }
    }
}

/// Closes with RST (linger 0), so a denied client fails at once instead of waiting.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Binds a transparent listener (TPROXY delivers to it whatever the destination).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(sockopt::transparent_tcp_listener(addr)?)
}
