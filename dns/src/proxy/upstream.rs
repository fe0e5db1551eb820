//! Exchanges with the canonical upstream: a fresh transaction id per query, a socket of a
//! random port that serves one query at a time (kept for a few queries, see [`UdpSockets`]),
//! and only an answer with that id, the same question, from the upstream's address is
//! accepted.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use chokepoint_redirect::sockopt;
use hickory_proto::op::Query;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::{DnsProxy, UpstreamError};
use crate::metrics::Transport;
use crate::wire::{self, Matched};

/// Large enough for any UDP datagram.
const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    /// Where upstream answers are received: one buffer for any datagram per worker thread,
    /// used only inside a receive that does not wait (nothing is held across an `await`), so
    /// neither a socket nor a query needs one of its own; the answer is then copied out at its
    /// size. (A zeroed 64 KiB per query was a fifth of the proxy's time under load; one per
    /// socket still showed, in the allocator's consolidation of the freed ones.)
    static RECEIVE_SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; MAX_DATAGRAM]);
}

impl DnsProxy {
    fn observe_latency(&self, transport: Transport, started: Instant) {
        self.metrics
            .upstream_answered(transport, started.elapsed().as_secs_f64());
    }

    fn upstream_failed(&self, transport: Transport) {
        self.metrics.upstream_failed(transport);
    }

    /// Sends `query` with a fresh id (written into it) from a UDP socket connected to the
    /// upstream and waits until `deadline` for the matching answer; everything else arriving
    /// on the socket is ignored and counted.
    pub(super) async fn udp_exchange(
        &self,
        query: &mut [u8],
        question: &Query,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Matched), UpstreamError> {
        let result = self.udp_exchange_inner(query, question, deadline).await;
        if result.is_err() {
            self.upstream_failed(Transport::Udp);
        }
        result
    }

    async fn udp_exchange_inner(
        &self,
        query: &mut [u8],
        question: &Query,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Matched), UpstreamError> {
        let id = self.ids.next();
        wire::set_id(query, id);
        let mut upstream = match self.udp_sockets.take() {
            Some(reused) => reused,
            None => Upstream::new(self.new_udp_socket().await?),
        };
        let Upstream {
            socket, answered, ..
        } = &mut upstream;
        let started = Instant::now();
        timeout_at(deadline, socket.send(query))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        loop {
            // Interest in errors too: an ICMP "port unreachable" is then the receive's error,
            // at once, not a timeout.
            let receive = socket.async_io(Interest::READABLE | Interest::ERROR, || {
                RECEIVE_SCRATCH.with_borrow_mut(|buf| {
                    let (n, from) = sockopt::recv_from(socket, buf)?;
                    Ok(self.take_answer(&buf[..n], from, id, question, answered))
                })
            });
            let received = timeout_at(deadline, receive)
                .await
                .map_err(|_| UpstreamError::Timeout)?;
            if let Some(answer) = received? {
                self.observe_latency(Transport::Udp, started);
                answered.push(id);
                forget_readiness(socket);
                self.udp_sockets.give(upstream);
                return Ok(answer);
            }
        }
    }

    /// What a datagram received on an upstream socket is: the answer to query `id` (copied
    /// out, at its size) or something ignored (counted, unless a late copy of an answer).
    fn take_answer(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        id: u16,
        question: &Query,
        answered: &[u16],
    ) -> Option<(Vec<u8>, Matched)> {
        if from.ip() != self.upstream.ip() || from.port() != self.upstream.port() {
            self.metrics.ignored_responses.inc();
            tracing::debug!(target: "dns", %from, "ignored a datagram from a stranger");
            return None;
        }
        match wire::check_response(datagram, id, question) {
            Ok(matched) => Some((datagram.to_vec(), matched)),
            Err(wire::Mismatch::WrongId) if is_stale(datagram, answered) => {
                tracing::trace!(target: "dns", "ignored a late copy of an earlier answer");
                None
            }
            Err(why) => {
                self.metrics.ignored_responses.inc();
                tracing::debug!(target: "dns", ?why, "ignored a non-matching upstream datagram");
                None
            }
        }
    }

    /// A socket of a random port connected to the upstream, with the proxy's mark.
    async fn new_udp_socket(&self) -> Result<UdpSocket, UpstreamError> {
        let local: SocketAddr = if self.upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        if let Some(mark) = self.mark {
            sockopt::set_mark(&socket, mark)?;
        }
        // Connected: the kernel already drops datagrams from other addresses; the source is
        // checked again all the same.
        socket.connect(self.upstream).await?;
        Ok(socket)
    }

    /// Sends `query` (with a fresh id) over a fresh TCP connection to the upstream and reads
    /// one answer, which must match; all before `deadline`.
    pub(super) async fn tcp_exchange(
        &self,
        query: &[u8],
        question: &Query,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Matched), UpstreamError> {
        let result = match timeout_at(deadline, self.tcp_exchange_inner(query, question)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout),
        };
        if result.is_err() {
            self.upstream_failed(Transport::Tcp);
        }
        result
    }

    async fn tcp_exchange_inner(
        &self,
        query: &[u8],
        question: &Query,
    ) -> Result<(Vec<u8>, Matched), UpstreamError> {
        let len = u16::try_from(query.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "query longer than 65535")
        })?;
        let socket = if self.upstream.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(mark) = self.mark {
            sockopt::set_mark(&socket, mark)?;
        }
        let started = Instant::now();
        let mut stream = socket.connect(self.upstream).await?;
        stream.set_nodelay(true)?;
        let id = self.ids.next();
        let mut frame = Vec::with_capacity(query.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(query);
        wire::set_id(&mut frame[2..], id);
        stream.write_all(&frame).await?;
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut reply).await?;
        match wire::check_response(&reply, id, question) {
            Ok(matched) => {
                self.observe_latency(Transport::Tcp, started);
                Ok((reply, matched))
            }
            Err(why) => {
                self.metrics.ignored_responses.inc();
                Err(UpstreamError::Mismatch(why))
            }
        }
    }
}

/// Tells the reactor that `socket` has nothing to read, without asking the kernel. Its next
/// exchange waits for the answer to a query not sent yet, whose arrival wakes it: without
/// this, that exchange's first receive would find the readiness of the answer just read and
/// ask the kernel in vain (a system call per query). Whatever else is queued now can only be
/// a late or stray datagram, read (and ignored) once the next answer wakes the socket. A
/// datagram arriving meanwhile keeps the readiness: tokio clears only what it had seen.
fn forget_readiness(socket: &UdpSocket) {
    let _ = socket.try_io(Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
}

/// Whether `datagram` (from the upstream, with an id the current query does not have) carries
/// the id of one of the socket's earlier, answered queries: a late copy of an answer (a
/// duplicate the network made), not a spoofing attempt.
fn is_stale(datagram: &[u8], answered: &[u16]) -> bool {
    datagram.len() >= 2 && answered.contains(&u16::from_be_bytes([datagram[0], datagram[1]]))
}

/// Upstream UDP sockets kept between queries. Each is bound to a random port, connected to the
/// upstream and registered with the reactor once; it serves one query at a time and at most
/// [`MAX_SOCKET_USES`] queries in all, then it is closed and a new port is drawn. Making,
/// registering and closing a socket per query was a quarter of the proxy's time under load.
///
/// The price is source-port entropy: a blind spoofer who knows the ports in use needs only the
/// transaction id (16 random bits, fresh per query) and the question. A socket whose exchange
/// failed (timeout, error) is never reused. One that comes back may still receive a late copy
/// of an earlier answer: it fails the id check like any other stray datagram, and is told
/// apart by its id (one of the socket's earlier ones) only so that it is not counted as
/// spoofing. (Draining such copies before each reuse cost a system call per query.)
#[derive(Default)]
pub(super) struct UdpSockets(Mutex<Vec<Upstream>>);

/// One upstream socket and what it served.
pub(super) struct Upstream {
    socket: UdpSocket,
    uses: u32,
    /// The ids of the queries this socket had answered (at most [`MAX_SOCKET_USES`]).
    answered: Vec<u16>,
}

impl Upstream {
    fn new(socket: UdpSocket) -> Upstream {
        Upstream {
            socket,
            uses: 0,
            answered: Vec::new(),
        }
    }
}

/// Queries one upstream socket serves before it is closed.
pub(super) const MAX_SOCKET_USES: u32 = 64;
/// Idle sockets kept at most (more than the queries usually in flight at once).
const MAX_IDLE_SOCKETS: usize = 512;

impl UdpSockets {
    fn take(&self) -> Option<Upstream> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    /// Takes back a socket whose exchange succeeded (one more use).
    fn give(&self, mut upstream: Upstream) {
        upstream.uses += 1;
        if upstream.uses >= MAX_SOCKET_USES {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_SOCKETS {
            idle.push(upstream);
        }
    }

    /// Idle sockets (tests).
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}
