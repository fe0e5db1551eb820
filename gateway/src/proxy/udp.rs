//! Transparent UDP: per-flow sessions keyed by (pod address, original destination).
//!
//! A flow is decided once, on its first datagram. Allowed flows get a session: an upstream
//! socket bound (transparently) to the pod's own address and connected to the destination,
//! and a reply socket bound to the original destination and connected to the pod, so replies
//! come from the address the pod wrote to. Once the reply socket exists the pod's later
//! datagrams are delivered to it directly (the capture rules route packets of transparent
//! sockets locally). Denied flows are remembered so they are audited once, not per datagram.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chokepoint_config::model::Protocol;
use chokepoint_config::settings::CaptureMode;
use chokepoint_redirect::conntrack::{Conntrack, L4};
use chokepoint_redirect::sockopt;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::service::Target;
use super::{Context, canonical, names};
use crate::drain;
use crate::metrics::{DirectionLabel, ErrorKind, ProtocolLabel};
use crate::policy::Flow;

/// Datagrams that arrive on the listener for a flow whose session is still starting.
const SESSION_QUEUE: usize = 64;
const MAX_DATAGRAM: usize = 65_535;

enum FlowState {
    Allowed(mpsc::Sender<Bytes>),
    Denied { last_seen: Instant },
}

/// Reads the TPROXY socket until a drain starts.
pub async fn serve(ctx: Arc<Context>, listener: UdpSocket, mut drain: drain::Watch) {
    let mut flows: HashMap<(SocketAddr, SocketAddr), FlowState> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let idle = ctx.settings.timeouts.udp_idle;
    let mut sweep = tokio::time::interval(idle.min(Duration::from_secs(10)));
    // After kube-proxy's DNAT a datagram's destination is the backend; conntrack still knows
    // the ClusterIP the pod sent it to (one lookup per new flow). Without it flows are still
    // decided on the backend, only their records do not name the Service.
    let mut conntrack = match ctx.settings.capture.mode {
        CaptureMode::Tproxy => Conntrack::open()
            .inspect_err(|e| {
                tracing::warn!(target: "proxy", "UDP flows will not name their Service: {e}");
            })
            .ok(),
        CaptureMode::Redirect => None,
    };
    loop {
        let received = tokio::select! {
            r = listener.async_io(Interest::READABLE, || sockopt::recv_with_original_dst(&listener, &mut buf)) => r,
            _ = sweep.tick() => {
                flows.retain(|_, f| match f {
                    FlowState::Allowed(tx) => !tx.is_closed(),
                    FlowState::Denied { last_seen } => last_seen.elapsed() < idle,
                });
                ctx.metrics.udp_flows.set(flows.len() as i64);
                continue;
            }
            _ = drain.signaled() => return,
        };
        let (len, src, original) = match received {
            Ok(r) => r,
            Err(e) => {
                ctx.metrics.error(ErrorKind::Datagram);
                tracing::debug!(target: "proxy", "udp receive failed: {e}");
                continue;
            }
        };
        let (src, original) = (canonical(src), canonical(original));
        let datagram = Bytes::copy_from_slice(&buf[..len]);
        let key = (src, original);
        if let Some(state) = flows.get_mut(&key) {
            match state {
                FlowState::Denied { last_seen } => {
                    *last_seen = Instant::now();
                    continue;
                }
                FlowState::Allowed(tx) => match tx.try_send(datagram) {
                    Ok(()) => continue,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        ctx.metrics.error(ErrorKind::Datagram);
                        continue;
                    }
                    // The session ended (idle); decide again as a new flow.
                    Err(mpsc::error::TrySendError::Closed(d)) => {
                        flows.remove(&key);
                        let ct = conntrack.as_mut();
                        start_flow(&ctx, &mut flows, key, d, drain.clone(), ct);
                    }
                },
            }
        } else {
            let ct = conntrack.as_mut();
            start_flow(&ctx, &mut flows, key, datagram, drain.clone(), ct);
        }
        ctx.metrics.udp_flows.set(flows.len() as i64);
    }
}

/// Where a datagram of a new flow from `pod` to `seen` was addressed before any DNAT.
fn before_nat(ct: Option<&mut Conntrack>, pod: SocketAddr, seen: SocketAddr) -> Option<SocketAddr> {
    match ct?.original_destination(L4::Udp, pod, seen) {
        Ok(found) => found.map(canonical),
        Err(e) => {
            tracing::debug!(target: "proxy", "conntrack lookup failed: {e}");
            None
        }
    }
}

fn start_flow(
    ctx: &Arc<Context>,
    flows: &mut HashMap<(SocketAddr, SocketAddr), FlowState>,
    (src, seen): (SocketAddr, SocketAddr),
    first: Bytes,
    watch: drain::Watch,
    conntrack: Option<&mut Conntrack>,
) {
    let snapshot = ctx.state.snapshot();
    let before_nat = before_nat(conntrack, src, seen);
    let denied = FlowState::Denied {
        last_seen: Instant::now(),
    };
    let (dst, addressed) = match ctx.target(&snapshot, Protocol::Udp, src, seen, before_nat) {
        Target::Backend { dst, addressed } => (dst, addressed),
        Target::Refused { addressed, reason } => {
            ctx.refused(&snapshot, Protocol::Udp, src, addressed, reason);
            flows.insert((src, seen), denied);
            return;
        }
    };
    let named = addressed.map_or(dst.ip(), |a| a.ip());
    let names = names::lookup(ctx.names.as_deref(), &snapshot, src.ip(), named, true);
    let name_refs = names::as_strs(&names);
    let flow = Flow::to(src.ip(), dst, Protocol::Udp, &name_refs).addressed(addressed);
    let verdict = snapshot.evaluate(&flow);
    ctx.metrics.decided(ProtocolLabel::Udp, &verdict);
    if !verdict.is_allowed() {
        ctx.audit_denied_named(&snapshot, &flow, src.port(), &verdict);
        flows.insert((src, seen), denied);
        return;
    }
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    flows.insert((src, seen), FlowState::Allowed(tx));
    let ctx = ctx.clone();
    let span = tracing::debug_span!("udp", %src, dst = %dst);
    let ends = Ends {
        pod: src,
        seen,
        dst,
        addressed,
    };
    tokio::spawn(
        async move {
            if let Err(e) = session(&ctx, &ends, &names, first, rx).await {
                ctx.metrics.error(ErrorKind::Datagram);
                tracing::debug!(target: "proxy", "udp session ended: {e}");
            }
            drop(watch);
        }
        .instrument(span),
    );
}

/// The addresses of one flow.
struct Ends {
    pod: SocketAddr,
    /// Where the pod's datagrams arrive (the backend after the node's DNAT, else what the pod
    /// addressed): the replies leave from here, and conntrack turns them into the address the
    /// pod wrote to.
    seen: SocketAddr,
    /// Where the gateway sends them: `seen`, or the backend it picked for a ClusterIP.
    dst: SocketAddr,
    addressed: Option<SocketAddr>,
}

async fn session(
    ctx: &Context,
    ends: &Ends,
    names: &[Arc<str>],
    first: Bytes,
    mut queued: mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    let mark = ctx.settings.capture.gateway_mark;
    // Both sockets are transparent and bound to non-local addresses: upstream to the pod's own
    // address, reply to where the pod's datagrams arrive. Connecting both matters: only this
    // flow's 4-tuple then reaches them, never another pod's datagrams to the same destination.
    let upstream = UdpSocket::from_std(sockopt::reply_socket(ends.pod, Some(mark))?)?;
    upstream.connect(ends.dst).await?;
    let reply = UdpSocket::from_std(sockopt::reply_socket(ends.seen, Some(mark))?)?;
    reply.connect(ends.pod).await?;
    upstream.send(&first).await?;
    ctx.metrics.bytes(DirectionLabel::Sent, first.len() as u64);

    let idle = ctx.settings.timeouts.udp_idle;
    let recheck = ctx.settings.policy.recheck_on_reload;
    let mut changes = ctx.state.subscribe();
    // A re-check keeps the names the flow was decided with: expiry never cuts a live flow.
    let name_refs = names::as_strs(names);
    let flow =
        Flow::to(ends.pod.ip(), ends.dst, Protocol::Udp, &name_refs).addressed(ends.addressed);
    let mut up_buf = vec![0u8; MAX_DATAGRAM];
    let mut pod_buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            r = upstream.recv(&mut up_buf) => {
                let n = r?;
                reply.send(&up_buf[..n]).await?;
                ctx.metrics.bytes(DirectionLabel::Received, n as u64);
            }
            r = reply.recv(&mut pod_buf) => {
                let n = r?;
                upstream.send(&pod_buf[..n]).await?;
                ctx.metrics.bytes(DirectionLabel::Sent, n as u64);
            }
            Some(d) = queued.recv() => {
                upstream.send(&d).await?;
                ctx.metrics.bytes(DirectionLabel::Sent, d.len() as u64);
            }
            Ok(()) = changes.changed(), if recheck => {
                if let Some((snapshot, verdict)) = ctx.recheck(&flow) {
                    ctx.audit_denied(&snapshot, &flow, ends.pod.port(), &verdict);
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(idle) => return Ok(()),
        }
    }
}

/// Binds the transparent UDP listener (original destination reported per datagram).
pub fn listen(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(sockopt::transparent_udp_socket(addr)?)
}
