//! Transparent TCP: accept a pod's connection, decide it, then relay or reset.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chokepoint_config::model::Protocol;
use chokepoint_config::settings::CaptureMode;
use chokepoint_redirect::sockopt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::service::Target;
use super::{Context, canonical, names};
use crate::audit::{AuditRecord, FlowDetails};
use crate::drain;
use crate::l7::peek::{self, Shown};
use crate::metrics::{DirectionLabel, ErrorKind, ProtocolLabel};
use crate::policy::Flow;
use crate::proxy::relay::{RelayEnd, relay};

/// Accepts until a drain starts; each connection runs in its own task holding a drain watch.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener, mut drain: drain::Watch) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
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

async fn handle(ctx: &Context, mut pod: TcpStream, peer: SocketAddr) {
    let seen = match ctx.settings.capture.mode {
        // TPROXY delivers the connection to a socket whose local address is the destination.
        CaptureMode::Tproxy => pod.local_addr(),
        CaptureMode::Redirect => sockopt::original_dst(&pod),
    };
    let peer = canonical(peer);
    let Ok(seen) = seen.map(canonical) else {
        ctx.metrics.error(ErrorKind::OriginalDestination);
        reset(pod);
        return;
    };
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
            return ctx.refused(&snapshot, Protocol::Tcp, peer, addressed, reason);
        }
    };
    let cache = ctx.names.as_deref();
    // Names were resolved to the address the pod connected to (a ClusterIP's Service name).
    let named = addressed.map_or(original.ip(), |a| a.ip());
    let names = names::lookup(cache, &snapshot, peer.ip(), named, true);
    let name_refs = names::as_strs(&names);
    let flow = Flow::to(peer.ip(), original, Protocol::Tcp, &name_refs).addressed(addressed);
    let verdict = snapshot.evaluate(&flow);
    ctx.metrics.decided(ProtocolLabel::Tcp, &verdict);
    if !verdict.is_allowed() {
        reset(pod);
        ctx.audit_denied_named(&snapshot, &flow, peer.port(), &verdict);
        return;
    }
    let mut confirmed: Option<Arc<str>> = None;
    if verdict.by_domain_names
        && let Some(cache) = cache
    {
        let shown = peek::shown_name(&pod, ctx.settings.fqdn.peek_timeout).await;
        let result = names::check(
            &snapshot,
            cache,
            &flow,
            &shown,
            ctx.settings.fqdn.without_name,
        );
        ctx.metrics.name_checked(result);
        if let Some(reason) = names::denial(result) {
            reset(pod);
            let (sni, host) = names::shown_fields(&shown);
            let details = FlowDetails::from_flow(&flow, peer.port())
                .sni(sni)
                .host(host);
            ctx.auditor.record(
                AuditRecord::new(ctx.auditor.node(), &snapshot, &verdict, &details)
                    .denied_because(reason),
            );
            return;
        }
        // From here on the connection is what it said it is (a re-check on reload too).
        if let Shown::Sni(name) | Shown::Host(name) = shown {
            confirmed = Some(name.into());
        }
    }
    drop(snapshot);
    let names = confirmed.map_or(names, |name| vec![name]);
    let name_refs = names::as_strs(&names);
    let flow = Flow::to(peer.ip(), original, Protocol::Tcp, &name_refs).addressed(addressed);
    if ctx.metadata.intercepts(original) {
        return crate::metadata::serve(ctx, pod, peer, original, flow.names).await;
    }

    let mut upstream = match connect(ctx, peer, original).await {
        Ok(s) => s,
        Err(kind) => {
            ctx.metrics.error(kind);
            reset(pod);
            return;
        }
    };
    ctx.metrics.active_connections.inc();
    let idle = ctx.settings.timeouts.idle;
    let result = if ctx.settings.policy.recheck_on_reload {
        let mut changes = ctx.state.subscribe();
        let outcome = {
            let relayed = relay(&mut pod, &mut upstream, idle);
            tokio::pin!(relayed);
            loop {
                tokio::select! {
                    r = &mut relayed => break Some(r),
                    Ok(()) = changes.changed() => {
                        if let Some((snapshot, verdict)) = ctx.recheck(&flow) {
                            ctx.audit_denied_named(&snapshot, &flow, peer.port(), &verdict);
                            break None;
                        }
                    }
                }
            }
        };
        match outcome {
            Some(r) => r,
            None => {
                tracing::debug!(target: "proxy", "closed: a new snapshot denies this connection");
                ctx.metrics.active_connections.dec();
                reset(pod);
                return;
            }
        }
    } else {
        relay(&mut pod, &mut upstream, idle).await
    };
    ctx.metrics.active_connections.dec();
    match result {
        Ok((moved, end)) => {
            ctx.metrics.bytes(DirectionLabel::Sent, moved.sent);
            ctx.metrics.bytes(DirectionLabel::Received, moved.received);
            if end == RelayEnd::Idle {
                tracing::debug!(target: "proxy", "closed after the idle timeout");
            }
        }
        Err(e) => {
            ctx.metrics.error(ErrorKind::Relay);
            tracing::debug!(target: "proxy", "relay ended: {e}");
        }
    }
}

/// Connects upstream. With TPROXY the socket is bound to the pod's own IP, so the
/// destination (and its NetworkPolicies) see the real client; it carries the gateway mark
/// so that the capture rules skip it.
pub(crate) async fn connect(
    ctx: &Context,
    pod: SocketAddr,
    original: SocketAddr,
) -> Result<TcpStream, ErrorKind> {
    let bind = match ctx.settings.capture.mode {
        CaptureMode::Tproxy => Some(pod.ip()),
        CaptureMode::Redirect => None,
    };
    let family = socket2::Domain::for_address(original);
    let socket = sockopt::upstream_socket(bind, family, Some(ctx.settings.capture.gateway_mark))
        .map_err(|e| {
            tracing::warn!(target: "proxy", "cannot create the upstream socket: {e}");
            ErrorKind::ConnectFailed
        })?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    match tokio::time::timeout(ctx.settings.timeouts.connect, socket.connect(original)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => {
            tracing::debug!(target: "proxy", %original, "connect failed: {e}");
            Err(ErrorKind::ConnectFailed)
        }
        Err(_) => Err(ErrorKind::ConnectTimeout),
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
