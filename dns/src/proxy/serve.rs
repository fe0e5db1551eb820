//! Transports: how pod queries arrive and how answers leave.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use chokepoint_redirect::sockopt::{self, Datagram, ReceiveOverflows};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{DnsProxy, canonical};
use crate::metrics::{QueryResult, Transport};

/// Large enough for any UDP datagram.
const MAX_DATAGRAM: usize = 65_535;
/// Queries one receive takes off a socket at most (`recvmmsg`): under load, a wake-up finds
/// a burst queued.
const BATCH: usize = 32;
/// At most one warning about a listener's dropped queries this often.
const OVERFLOW_WARN_EVERY: Duration = Duration::from_secs(60);
/// Queries of one TCP connection answered at once (RFC 7766 pipelining; answers may leave in
/// any order, matched by id).
const TCP_PIPELINE: usize = 32;

/// How UDP queries arrive and how their answers leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpMode {
    /// A TPROXY socket from [`transparent_udp_socket`]: the original destination comes with
    /// each datagram (`IP_RECVORIGDSTADDR`); the answer leaves from a transparent socket
    /// bound to that address (see `ReplySockets`) and marked with the proxy's mark, so the
    /// pod sees it come from the server it asked.
    Transparent,
    /// An ordinary socket (loopback tests; REDIRECT mode, where conntrack rewrites the reply's
    /// source): the original destination is taken to be the socket's local address, and the
    /// answer leaves from the same socket.
    Plain,
}

/// A tokio TPROXY UDP socket on `addr` (`IP_TRANSPARENT`, `IP_RECVORIGDSTADDR`); use it with
/// [`UdpMode::Transparent`]. Needs `CAP_NET_ADMIN`.
pub fn transparent_udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(sockopt::transparent_udp_socket(addr)?)
}

/// `count` TPROXY UDP sockets on `addr` that share its queries (`SO_REUSEPORT`: the kernel
/// spreads the pods' flows over them), one for each worker to serve with its own receive
/// loop: with one socket, a single task reads every query.
pub fn transparent_udp_sockets(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    (0..count.max(1))
        .map(|_| UdpSocket::from_std(sockopt::transparent_udp_socket_shared(addr)?))
        .collect()
}

/// A tokio TPROXY TCP listener on `addr`; an accepted connection's local address is the
/// server the pod asked. Needs `CAP_NET_ADMIN`.
pub fn transparent_tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(sockopt::transparent_tcp_listener(addr)?)
}

impl DnsProxy {
    /// Serves UDP queries from `socket` until `shutdown` completes. Each allowed query is
    /// answered by its own task (at most `max_in_flight` at once; more are dropped and
    /// counted); queries the flow verdict denies are dropped.
    pub async fn serve_udp<F>(self: Arc<Self>, socket: UdpSocket, mode: UdpMode, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        let socket = Arc::new(socket);
        let local = socket.local_addr().ok();
        // Zeroed, so allocated untouched: only the pages datagrams fill become memory.
        let mut buf = vec![0u8; MAX_DATAGRAM * BATCH];
        let mut batch = Vec::with_capacity(BATCH);
        let mut overflows = ReceiveOverflows::default();
        tokio::pin!(shutdown);
        loop {
            let received = tokio::select! {
                biased;
                _ = &mut shutdown => return,
                r = receive(&socket, mode, local, &mut buf, &mut batch) => r,
            };
            if let Err(e) = received {
                tracing::debug!(target: "dns", "udp receive failed: {e}");
                continue;
            }
            for (slot, datagram) in batch.drain(..).enumerate() {
                match datagram {
                    Ok(d) => {
                        self.account_overflows(&mut overflows, d.overflows);
                        let query = &buf[slot * MAX_DATAGRAM..][..d.len];
                        self.clone()
                            .take_udp_query(query, d.source, d.original, &socket, mode);
                    }
                    Err(e) => tracing::debug!(target: "dns", "udp datagram dropped: {e}"),
                }
            }
        }
    }

    /// What is new in the listener's kernel drop count goes to the metric and, at most once a
    /// minute, to the log: queries lost before anyone read them.
    fn account_overflows(&self, overflows: &mut ReceiveOverflows, reported: Option<u32>) {
        let Some(n) = overflows.account(reported, OVERFLOW_WARN_EVERY) else {
            return;
        };
        self.metrics.receive_overflows.inc_by(n.new);
        if let Some(dropped) = n.warn {
            tracing::warn!(target: "dns", dropped, total = n.total, "a DNS listener's receive buffer overflowed: pod queries were dropped unread (the pods retry) and are counted in chokepoint_dns_receive_overflows_total");
        }
    }

    /// Applies the flow verdict to one query from `src` to `original` and, if allowed, answers
    /// it on a task of its own.
    fn take_udp_query(
        self: Arc<Self>,
        query: &[u8],
        src: SocketAddr,
        original: SocketAddr,
        socket: &Arc<UdpSocket>,
        mode: UdpMode,
    ) {
        let (pod, server) = (canonical(src), canonical(original));
        if !self.policy.allow(pod, server, false) {
            self.metrics.query(Transport::Udp, QueryResult::Denied);
            return;
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.query(Transport::Udp, QueryResult::Dropped);
            return;
        };
        let query = query.to_vec();
        let socket = socket.clone();
        tokio::spawn(async move {
            let Some(reply) = self.answer(query, pod, Transport::Udp).await else {
                return;
            };
            drop(permit);
            let sent = match mode {
                UdpMode::Plain => socket.send_to(&reply, src).await.map(drop),
                UdpMode::Transparent => self.reply_transparent(original, src, &reply).await,
            };
            if let Err(e) = sent {
                tracing::debug!(target: "dns", %src, "udp answer not sent: {e}");
            }
        });
    }

    async fn reply_transparent(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        reply: &[u8],
    ) -> io::Result<()> {
        let socket = self.replies.socket(from, self.mark)?;
        socket.send_to(reply, to).await?;
        Ok(())
    }

    /// Serves TCP connections from `listener` until `shutdown` completes (connections already
    /// accepted finish on their own: idle timeout, or the pod closing). Each connection's
    /// flow verdict is asked once; then it may carry any number of length-prefixed queries,
    /// answered as they complete.
    pub async fn serve_tcp<F>(self: Arc<Self>, listener: TcpListener, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => return,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(r) => r,
                Err(e) => {
                    // EMFILE and friends: do not spin.
                    tracing::debug!(target: "dns", "tcp accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = self.tcp_connections.clone().try_acquire_owned() else {
                self.metrics.query(Transport::Tcp, QueryResult::Dropped);
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.tcp_connection(stream, peer).await;
                drop(permit);
            });
        }
    }

    async fn tcp_connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let Ok(original) = stream.local_addr() else {
            return;
        };
        let (pod, server) = (canonical(peer), canonical(original));
        if !self.policy.allow(pod, server, true) {
            self.metrics.query(Transport::Tcp, QueryResult::Denied);
            return;
        }
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut buf = BytesMut::with_capacity(1024);
        let mut tasks: JoinSet<Option<Vec<u8>>> = JoinSet::new();
        let mut open = true;
        let idle = tokio::time::sleep(self.tcp_idle_timeout);
        tokio::pin!(idle);
        loop {
            while tasks.len() < TCP_PIPELINE {
                let Some(query) = take_frame(&mut buf) else {
                    break;
                };
                let me = self.clone();
                tasks.spawn(async move {
                    let _permit = me.in_flight.clone().acquire_owned().await.ok()?;
                    me.answer(query, pod, Transport::Tcp).await
                });
            }
            if !open && tasks.is_empty() {
                return;
            }
            tokio::select! {
                r = reader.read_buf(&mut buf), if open && tasks.len() < TCP_PIPELINE => match r {
                    Ok(0) | Err(_) => open = false,
                    Ok(_) => idle.as_mut().reset(Instant::now() + self.tcp_idle_timeout),
                },
                Some(done) = tasks.join_next() => {
                    if let Ok(Some(reply)) = done {
                        let Ok(len) = u16::try_from(reply.len()) else {
                            continue;
                        };
                        let mut frame = Vec::with_capacity(reply.len() + 2);
                        frame.extend_from_slice(&len.to_be_bytes());
                        frame.extend_from_slice(&reply);
                        // A pod that stops reading does not hold the connection forever.
                        let written =
                            tokio::time::timeout(self.tcp_idle_timeout, writer.write_all(&frame)).await;
                        if !matches!(written, Ok(Ok(()))) {
                            return;
                        }
                    }
                    idle.as_mut().reset(Instant::now() + self.tcp_idle_timeout);
                },
                _ = &mut idle, if tasks.is_empty() => return,
            }
        }
    }
}

/// The sockets UDP answers leave from in [`UdpMode::Transparent`]: one per server address
/// pods sent queries to, bound (transparently) to it, **unconnected**, and reused.
///
/// Unconnected matters: `tproxy` hands a flow's datagrams to a *connected* socket bound to
/// the flow's addresses before it looks for the listener, so a socket connected to the pod
/// would swallow the pod's next query from the same port — glibc sends the A and AAAA
/// queries from one socket at once, and load generators reuse ports all the time. An
/// unconnected socket never takes them. Reused: no socket is made per answer.
#[derive(Default)]
pub(super) struct ReplySockets(RwLock<HashMap<SocketAddr, Arc<UdpSocket>>>);

/// Distinct server addresses kept; pods addressing more (every public resolver there is)
/// start the map over, which costs a socket each, nothing else.
const MAX_REPLY_SOCKETS: usize = 256;

impl ReplySockets {
    fn socket(&self, from: SocketAddr, mark: Option<u32>) -> io::Result<Arc<UdpSocket>> {
        if let Some(s) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&from)
        {
            return Ok(s.clone());
        }
        let socket = Arc::new(UdpSocket::from_std(sockopt::reply_socket(from, mark)?)?);
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REPLY_SOCKETS {
            map.clear();
        }
        Ok(map.entry(from).or_insert(socket).clone())
    }
}

/// Receives what is queued into `batch` (see [`sockopt::recv_datagrams`]: datagram `i` in
/// `buf[i * MAX_DATAGRAM..]`): a burst with one system call in [`UdpMode::Transparent`], one
/// datagram in [`UdpMode::Plain`].
async fn receive(
    socket: &UdpSocket,
    mode: UdpMode,
    local: Option<SocketAddr>,
    buf: &mut [u8],
    batch: &mut Vec<io::Result<Datagram>>,
) -> io::Result<()> {
    match mode {
        UdpMode::Transparent => {
            socket
                .async_io(Interest::READABLE, || {
                    sockopt::recv_datagrams(socket, buf, MAX_DATAGRAM, batch)
                })
                .await
        }
        UdpMode::Plain => {
            let (len, source) = socket.recv_from(&mut buf[..MAX_DATAGRAM]).await?;
            let original = local.ok_or_else(|| io::Error::other("socket has no local address"))?;
            batch.clear();
            batch.push(Ok(Datagram {
                len,
                source,
                original,
                overflows: None,
            }));
            Ok(())
        }
    }
}

/// Takes one complete length-prefixed message off the front of `buf`.
fn take_frame(buf: &mut BytesMut) -> Option<Vec<u8>> {
    if buf.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if buf.len() < 2 + len {
        return None;
    }
    buf.advance(2);
    Some(buf.split_to(len).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole() {
        let mut buf = BytesMut::from(&[0u8, 3, 1, 2][..]);
        assert_eq!(take_frame(&mut buf), None);
        buf.extend_from_slice(&[3, 0, 0, 0, 1]);
        assert_eq!(take_frame(&mut buf), Some(vec![1, 2, 3]));
        assert_eq!(take_frame(&mut buf), Some(vec![]));
        assert_eq!(take_frame(&mut buf), None);
        assert_eq!(&buf[..], &[0, 1]);
    }
}
