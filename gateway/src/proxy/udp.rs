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
use chokepoint_redirect::conntrack::{Conntrack, L4};
use chokepoint_redirect::sockopt::{self, ReceiveOverflows};
use nix::sys::socket::MsgFlags;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::service::{Target, before_nat, open_conntrack};
use super::{Context, canonical, names};
use crate::audit::FlowDetails;
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
    let mut overflows = ReceiveOverflows::default();
    // After kube-proxy's DNAT a datagram's destination is the backend; conntrack still knows
    // the ClusterIP the pod sent it to (one lookup per new flow). Without it flows are still
    // decided on the backend, only their records do not name the Service.
    let mut conntrack = open_conntrack(&ctx, "UDP flows");
    loop {
        let received = tokio::select! {
            r = listener.async_io(Interest::READABLE, || sockopt::recv_datagram(&listener, &mut buf)) => r,
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
            Ok(d) => {
                account_overflows(&ctx, &mut overflows, d.overflows);
                (d.len, d.source, d.original)
            }
            Err(e) => {
                ctx.metrics.error(ErrorKind::Datagram);
                tracing::debug!(target: "proxy", "udp receive failed: {e}");
                continue;
            }
        };
        let (src, original) = (canonical(src), canonical(original));
        // Copied out of the receive buffer only for a flow that is not denied.
        let payload = &buf[..len];
        let key = (src, original);
        if let Some(state) = flows.get_mut(&key) {
            match state {
                FlowState::Denied { last_seen } => {
                    *last_seen = Instant::now();
                    continue;
                }
                FlowState::Allowed(tx) => match tx.try_send(Bytes::copy_from_slice(payload)) {
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
            let datagram = Bytes::copy_from_slice(payload);
            start_flow(&ctx, &mut flows, key, datagram, drain.clone(), ct);
        }
        ctx.metrics.udp_flows.set(flows.len() as i64);
    }
}

/// What is new in the listener's kernel drop count goes to the metric and, at most once a
/// minute, to the log.
fn account_overflows(ctx: &Context, overflows: &mut ReceiveOverflows, reported: Option<u32>) {
    let Some(n) = overflows.account(reported, OVERFLOW_LOG_INTERVAL) else {
        return;
    };
    ctx.metrics.udp_receive_overflows.inc_by(n.new);
    if let Some(dropped) = n.warn {
        tracing::warn!(target: "proxy", dropped, total = n.total, "the UDP listener's receive buffer overflowed: datagrams (and flows they began) were dropped unread and are counted in chokepoint_udp_receive_overflows_total; raise listen.udpReceiveBuffer");
    }
}

const OVERFLOW_LOG_INTERVAL: Duration = Duration::from_secs(60);

fn start_flow(
    ctx: &Arc<Context>,
    flows: &mut HashMap<(SocketAddr, SocketAddr), FlowState>,
    (src, seen): (SocketAddr, SocketAddr),
    first: Bytes,
    watch: drain::Watch,
    conntrack: Option<&mut Conntrack>,
) {
    ctx.metrics.proxied(ProtocolLabel::Udp);
    let snapshot = ctx.state.snapshot();
    let before_nat = before_nat(conntrack, L4::Udp, src, seen);
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
    let verdict = snapshot.evaluate_counted(&flow);
    ctx.metrics.decided(ProtocolLabel::Udp, &verdict);
    let staged = ctx.staged(&snapshot, &flow, &verdict);
    let refused = verdict.is_allowed() && ctx.metadata.refuses(dst, false);
    if refused {
        ctx.audit_metadata_refused(&snapshot, &flow, src.port(), &verdict, staged.as_ref());
    } else {
        // A denial, or an allowed flow the staged policies would decide otherwise.
        ctx.audit_named(&snapshot, &flow, src.port(), &verdict, staged.as_ref());
    }
    if refused || !verdict.is_allowed() {
        flows.insert(
            (src, seen),
            FlowState::Denied {
                last_seen: Instant::now(),
            },
        );
        return;
    }
    let permit = match ctx
        .limits
        .udp
        .acquire(super::limits::holder(&snapshot, src.ip()))
    {
        Ok(permit) => permit,
        Err(exceeded) => {
            let details = FlowDetails::from_flow(&flow, src.port());
            ctx.refuse_over_limit(&snapshot, &verdict, &details, exceeded);
            // Remembered like a denied flow: its datagrams are dropped, audited once.
            flows.insert((src, seen), denied);
            return;
        }
    };
    ctx.log_allowed(&snapshot, &flow, &verdict, &names);
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
            drop((watch, permit));
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
    // No buffers of its own: each datagram is read into one of its exact size (see
    // `recv_sized`), so an idle session costs its sockets and its task, not 128 KiB.
    loop {
        tokio::select! {
            r = upstream.readable() => {
                r?;
                if let Some(d) = recv_sized(&upstream)? {
                    reply.send(&d).await?;
                    ctx.metrics.bytes(DirectionLabel::Received, d.len() as u64);
                }
            }
            r = reply.readable() => {
                r?;
                if let Some(d) = recv_sized(&reply)? {
                    upstream.send(&d).await?;
                    ctx.metrics.bytes(DirectionLabel::Sent, d.len() as u64);
                }
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

/// Reads the next datagram of a readable socket into a buffer of its size: its length comes
/// first from a zero-byte peek (`MSG_PEEK | MSG_TRUNC` reports the full length). `None` when
/// the readiness was spurious.
fn recv_sized(socket: &UdpSocket) -> io::Result<Option<Vec<u8>>> {
    use std::os::fd::AsRawFd as _;
    let peeked = socket.try_io(Interest::READABLE, || {
        nix::sys::socket::recv(
            socket.as_raw_fd(),
            &mut [],
            MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
        )
        .map_err(io::Error::from)
    });
    let len = match peeked {
        Ok(len) => len.min(MAX_DATAGRAM),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; len];
    match socket.try_recv(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Binds the transparent UDP listener (original destination and the kernel's drop count
/// reported per datagram) with a receive buffer of `receive_buffer` bytes.
pub fn listen(addr: SocketAddr, receive_buffer: usize) -> io::Result<UdpSocket> {
    let socket = sockopt::transparent_udp_socket(addr)?;
    let got = sockopt::set_receive_buffer(&socket, receive_buffer)?;
    tracing::debug!(target: "proxy", %addr, requested = receive_buffer, kernel = got, "UDP receive buffer");
    UdpSocket::from_std(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_are_read_whole_into_buffers_of_their_own_size() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.connect(rx.local_addr().unwrap()).await.unwrap();
        let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        for d in [&b""[..], b"hello", &big] {
            tx.send(d).await.unwrap();
        }
        for want in [&b""[..], b"hello", &big] {
            let got = loop {
                rx.readable().await.unwrap();
                if let Some(d) = recv_sized(&rx).unwrap() {
                    break d;
                }
            };
            assert_eq!(got, want);
            assert_eq!(got.capacity(), want.len());
        }
        assert!(recv_sized(&rx).unwrap().is_none(), "nothing left");
    }
}
