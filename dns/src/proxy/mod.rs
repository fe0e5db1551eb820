//! The DNS proxy: pod queries in, the canonical upstream's answers out, the cache updated in
//! between.
//!
//! The work is split in two layers:
//! - [`DnsProxy::answer`] is the transport-free core: one query's bytes in, the bytes to send
//!   back (or nothing) out. It validates the query, forwards it with a fresh transaction id
//!   from a random-port socket that serves one query at a time, trusts only an answer whose id, question and source match, handles
//!   truncation, records what the answer teaches in the [`Cache`], and only then returns the
//!   answer with the pod's id restored. Every failure is bounded by the configured timeout.
//! - [`DnsProxy::serve_udp`] and [`DnsProxy::serve_tcp`] are the transports: how queries
//!   arrive, which flow verdict applies ([`Policy::allow`]) and how answers leave. UDP has a
//!   transparent mode (TPROXY: original destination per datagram, answers from that address)
//!   and a plain mode (an ordinary socket, for tests and REDIRECT).
//!
//! DNS itself is never filtered by `domainNames` rules (NPEP-133): every name may be resolved;
//! only the flow to the DNS server is subject to the normal verdict.

mod serve;
mod upstream;

#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::answer::observe;
use crate::cache::Cache;
use crate::metrics::{Metrics, QueryResult, Transport};
use crate::settings::DnsSettings;
use crate::wire::{self, HEADER_LEN};

pub use serve::{
    UdpMode, transparent_tcp_listener, transparent_udp_socket, transparent_udp_sockets,
};

/// What the proxy asks the gateway. Both methods are called on the data path: keep them
/// cheap and non-blocking.
pub trait Policy: Send + Sync + 'static {
    /// The namespace of the pod with this source IP; `None` for a source that is no known
    /// pod (its answers are released but not recorded).
    fn source_namespace(&self, src: IpAddr) -> Option<Arc<str>>;

    /// The normal verdict for the DNS flow itself: `src` (the pod) to `original_dst` (the
    /// server the pod addressed, port 53 usually). Called once per UDP query and once per TCP
    /// connection. On `false` the query is not answered (UDP) or the connection is closed
    /// (TCP); auditing the denial is the gateway's job.
    fn allow(&self, src: SocketAddr, original_dst: SocketAddr, tcp: bool) -> bool;

    /// Whether name rules (`domainNames` peers) apply to the pod with this source IP. Its
    /// HTTPS and SVCB queries are then answered with no data: those records carry ECH
    /// configurations, and a client holding one hides the name it connects to behind an outer
    /// name, so the connection would show the gateway no name to check. Called only for those
    /// two query types.
    fn names_apply(&self, src: IpAddr) -> bool;
}

/// Fresh upstream transaction ids: SipHash (keyed from the OS's randomness once per process)
/// of a counter, i.e. unpredictable without the key. Together with random source ports (see
/// `upstream::UdpSockets`) this is the usual defence against blind spoofing.
struct IdGen {
    keys: RandomState,
    counter: AtomicU64,
}

impl IdGen {
    fn new() -> Self {
        IdGen {
            keys: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> u16 {
        self.keys
            .hash_one(self.counter.fetch_add(1, Ordering::Relaxed)) as u16
    }
}

/// The DNS proxy; see the [module docs](self). Build one, wrap it in an `Arc`, and run
/// [`serve_udp`](Self::serve_udp) and [`serve_tcp`](Self::serve_tcp) for each listener.
pub struct DnsProxy {
    upstream: SocketAddr,
    timeout: Duration,
    tcp_idle_timeout: Duration,
    mark: Option<u32>,
    cache: Arc<Cache>,
    policy: Arc<dyn Policy>,
    metrics: Metrics,
    ids: IdGen,
    in_flight: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
    replies: serve::ReplySockets,
    udp_sockets: upstream::UdpSockets,
}

impl fmt::Debug for DnsProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsProxy")
            .field("upstream", &self.upstream)
            .field("timeout", &self.timeout)
            .field("mark", &self.mark)
            .finish_non_exhaustive()
    }
}

impl DnsProxy {
    /// A proxy forwarding to `upstream` (see [`resolve_upstream`](crate::resolve_upstream)) with the
    /// timeouts and limits of `settings`, recording into `cache`.
    pub fn new(
        settings: &DnsSettings,
        upstream: SocketAddr,
        cache: Arc<Cache>,
        policy: Arc<dyn Policy>,
        metrics: Metrics,
    ) -> Self {
        DnsProxy {
            upstream,
            timeout: settings.timeout,
            tcp_idle_timeout: settings.tcp_idle_timeout,
            mark: None,
            cache,
            policy,
            metrics,
            ids: IdGen::new(),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            tcp_connections: Arc::new(Semaphore::new(settings.max_tcp_connections.max(1))),
            replies: serve::ReplySockets::default(),
            udp_sockets: upstream::UdpSockets::default(),
        }
    }

    /// Sets `SO_MARK` (the gateway mark) on every socket the proxy opens: upstream sockets and
    /// transparent reply sockets, so the capture rules never take them. Needs `CAP_NET_ADMIN`.
    pub fn with_mark(mut self, mark: Option<u32>) -> Self {
        self.mark = mark;
        self
    }

    /// The canonical upstream.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The cache answers are recorded in.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Answers one query from `src` that arrived over `transport`: the bytes to send back, or
    /// `None` when nothing is to be sent (no DNS header, or a response instead of a query).
    /// The query is taken, not borrowed: the upstream's copy is made in its buffer, with the
    /// fresh id written over the pod's.
    ///
    /// Never takes longer than the configured timeout (plus local work), never panics on any
    /// input. The answer's observation is in the cache before this returns. Does not apply the
    /// flow verdict ([`Policy::allow`]): the transports do.
    pub async fn answer(
        &self,
        mut query: Vec<u8>,
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let (reply, result) = self.answer_inner(&mut query, src, transport).await;
        self.metrics.query(transport, result);
        reply
    }

    async fn answer_inner(
        &self,
        query: &mut [u8],
        src: SocketAddr,
        transport: Transport,
    ) -> (Option<Vec<u8>>, QueryResult) {
        let message = match triage(query) {
            Triage::Settled(reply, result) => {
                tracing::debug!(target: "dns", %src, ?result, "answered without the upstream");
                return (reply, result);
            }
            Triage::Forward(message) => message,
        };
        if withheld_type(message.queries[0].query_type)
            && self.policy.names_apply(src.ip().to_canonical())
        {
            // NOERROR without records ("no data"): the client falls back to A/AAAA and a
            // ClientHello with its real SNI, as for a name that publishes no HTTPS record.
            return (
                Some(wire::error_response(&message, ResponseCode::NoError)),
                QueryResult::Withheld,
            );
        }
        let deadline = Instant::now() + self.timeout;
        let namespace = self.policy.source_namespace(src.ip().to_canonical());
        let released = match transport {
            Transport::Udp => {
                self.forward_udp(query, &message, deadline, namespace.as_ref())
                    .await
            }
            Transport::Tcp => {
                self.forward_tcp(query, &message, deadline, namespace.as_ref())
                    .await
            }
        };
        match released {
            Some(mut reply) => {
                wire::set_id(&mut reply, message.metadata.id);
                (Some(reply), QueryResult::Ok)
            }
            None => (
                Some(wire::error_response(&message, ResponseCode::ServFail)),
                QueryResult::Servfail,
            ),
        }
    }

    /// UDP client: ask over UDP; on TC retry over TCP and release the full answer when it
    /// fits the client's EDNS size, else the truncated one (the client retries over TCP).
    async fn forward_udp(
        &self,
        query: &mut [u8],
        message: &Message,
        deadline: Instant,
        namespace: Option<&Arc<str>>,
    ) -> Option<Vec<u8>> {
        let question = &message.queries[0];
        let (answer, matched) = match self.udp_exchange(&mut *query, question, deadline).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(target: "dns", upstream = %self.upstream, "udp exchange failed: {e}");
                return None;
            }
        };
        if matched.truncated {
            self.metrics.truncated_retries.inc();
            match self.tcp_exchange(query, question, deadline).await {
                Ok((full, _)) => {
                    self.learn(namespace, &full);
                    if full.len() <= wire::client_udp_limit(message) {
                        return Some(full);
                    }
                    return Some(answer);
                }
                Err(e) => {
                    tracing::debug!(target: "dns", upstream = %self.upstream, "tcp retry after TC failed: {e}");
                }
            }
        }
        // Not truncated, or the retry failed: whatever this answer holds is the upstream's word.
        self.learn(namespace, &answer);
        Some(answer)
    }

    /// TCP client: ask over TCP (any size fits).
    async fn forward_tcp(
        &self,
        query: &[u8],
        message: &Message,
        deadline: Instant,
        namespace: Option<&Arc<str>>,
    ) -> Option<Vec<u8>> {
        match self
            .tcp_exchange(query, &message.queries[0], deadline)
            .await
        {
            Ok((reply, _)) => {
                self.learn(namespace, &reply);
                Some(reply)
            }
            Err(e) => {
                tracing::debug!(target: "dns", upstream = %self.upstream, "tcp exchange failed: {e}");
                None
            }
        }
    }

    /// Parses a trusted answer and records its observation for `namespace`.
    ///
    /// An answer that matched (id, question, source) but cannot be parsed in full is still
    /// released, unrecorded: nothing it holds is learned, so connections to its addresses stay
    /// subject to policy without `domainNames` (fail closed), while a parser stricter than the
    /// pod's own (exotic record types) cannot break the pod's DNS. It is counted in
    /// `chokepoint_dns_unparsed_answers_total`.
    fn learn(&self, namespace: Option<&Arc<str>>, response: &[u8]) {
        match Message::from_vec(response) {
            Ok(message) => {
                if let Some(namespace) = namespace {
                    let observation = observe(&message);
                    self.cache
                        .record(namespace, &observation, std::time::Instant::now());
                }
            }
            Err(e) => {
                self.metrics.unparsed_answers.inc();
                tracing::debug!(target: "dns", upstream = %self.upstream, "unparseable answer released unrecorded: {e}");
            }
        }
    }
}

/// Errors of one upstream exchange (the pod gets SERVFAIL).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("answer does not match the query: {0:?}")]
    Mismatch(wire::Mismatch),
}

/// What the proxy makes of a pod's query before asking anyone.
#[derive(Debug)]
pub enum Triage {
    /// Settled here: the reply to send (none for bytes that are no query) and the result.
    Settled(Option<Vec<u8>>, QueryResult),
    /// A well-formed standard query with exactly one question: for the upstream.
    Forward(Box<Message>),
}

/// Validates a pod's query (see [`DnsProxy::answer`]): no DNS header or a response → dropped;
/// unparsable → FORMERR (header only); another opcode → NOTIMP; not exactly one question →
/// FORMERR. Never panics, whatever the bytes (fuzzed).
pub fn triage(query: &[u8]) -> Triage {
    if query.len() < HEADER_LEN || wire::is_response(query) {
        return Triage::Settled(None, QueryResult::Dropped);
    }
    let message = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return Triage::Settled(wire::formerr_header(query), QueryResult::Formerr),
    };
    if message.metadata.op_code != OpCode::Query {
        return Triage::Settled(
            Some(wire::error_response(&message, ResponseCode::NotImp)),
            QueryResult::Notimp,
        );
    }
    if message.queries.len() != 1 || query.len() > usize::from(u16::MAX) {
        return Triage::Settled(
            Some(wire::error_response(&message, ResponseCode::FormErr)),
            QueryResult::Formerr,
        );
    }
    Triage::Forward(Box::new(message))
}

/// HTTPS (65) and SVCB (64): the record types that carry ECH configurations (RFC 9460),
/// withheld from pods that name rules apply to.
pub fn withheld_type(t: RecordType) -> bool {
    matches!(t, RecordType::HTTPS | RecordType::SVCB)
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
