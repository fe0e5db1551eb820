//! Prometheus metrics of the DNS proxy and the observation cache. Labels are bounded enums
//! only: never names, IPs or namespaces.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a query reached the proxy, or how the proxy reached the upstream.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// What became of a pod's query.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum QueryResult {
    /// The upstream's answer was recorded and released (whatever its RCODE).
    Ok,
    /// No trusted answer in time (upstream down or slow).
    Servfail,
    /// The query could not be parsed, or did not hold exactly one question.
    Formerr,
    /// An opcode other than QUERY.
    Notimp,
    /// The flow's verdict was deny (the gateway audits it); nothing was answered.
    Denied,
    /// Not answered: shorter than a DNS header, a response instead of a query, or over the
    /// in-flight limit.
    Dropped,
    /// An HTTPS or SVCB query of a pod subject to name rules, answered with no data (not
    /// forwarded): those records carry the ECH configurations that would hide its names.
    Withheld,
}

impl EncodeLabelValue for QueryResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(match self {
            QueryResult::Ok => "ok",
            QueryResult::Servfail => "servfail",
            QueryResult::Formerr => "formerr",
            QueryResult::Notimp => "notimp",
            QueryResult::Denied => "denied",
            QueryResult::Dropped => "dropped",
            QueryResult::Withheld => "withheld",
        })
    }
}

/// Why a live observation left the cache before its expiry.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum EvictionReason {
    /// Its namespace was at `dns.maxEntriesPerNamespace`: the namespace that inserts evicts
    /// its own entry closest to expiry.
    NamespaceQuota,
    /// The cache was at `dns.maxEntries`: the namespace holding the most entries gave one up.
    CacheFull,
    /// Its `(namespace, IP)` had [`MAX_NAMES_PER_IP`](crate::cache::MAX_NAMES_PER_IP) names.
    NamesPerIp,
}

impl EncodeLabelValue for EvictionReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(match self {
            EvictionReason::NamespaceQuota => "namespace_quota",
            EvictionReason::CacheFull => "cache_full",
            EvictionReason::NamesPerIp => "names_per_ip",
        })
    }
}

const EVICTION_REASONS: [EvictionReason; 3] = [
    EvictionReason::NamespaceQuota,
    EvictionReason::CacheFull,
    EvictionReason::NamesPerIp,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub reason: EvictionReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub transport: Transport,
    pub result: QueryResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub transport: Transport,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];
const RESULTS: [QueryResult; 7] = [
    QueryResult::Ok,
    QueryResult::Servfail,
    QueryResult::Formerr,
    QueryResult::Notimp,
    QueryResult::Denied,
    QueryResult::Dropped,
    QueryResult::Withheld,
];

fn eviction_index(r: EvictionReason) -> usize {
    match r {
        EvictionReason::NamespaceQuota => 0,
        EvictionReason::CacheFull => 1,
        EvictionReason::NamesPerIp => 2,
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

/// The DNS metrics; cheap to clone (every metric is an `Arc` inside). Create one, hand clones
/// to [`Cache::new`](crate::Cache::new) and [`DnsProxy::new`](crate::DnsProxy::new), and
/// [`register`](Self::register) it once.
///
/// Every labelled series is created up front and kept as a handle, so counting a query is one
/// atomic add: `Family::get_or_create` takes a lock, which a per-query path must not.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Pod queries by transport and result.
    pub queries: Family<QueryLabels, Counter>,
    /// Time from sending to the upstream to a trusted answer, by upstream transport.
    pub upstream_latency: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    /// Upstream exchanges that failed (timeout, connection error, mismatched TCP answer).
    pub upstream_failures: Family<UpstreamLabels, Counter>,
    /// Datagrams on an upstream socket that were not the answer (wrong id, question or
    /// source, or unparseable): possible spoofing.
    pub ignored_responses: Counter,
    /// Truncated UDP answers retried over TCP.
    pub truncated_retries: Counter,
    /// Matching upstream answers that could not be parsed in full: released, not recorded.
    pub unparsed_answers: Counter,
    /// Pod queries the kernel dropped because a listener's receive buffer was full
    /// (`SO_RXQ_OVFL`; TPROXY listeners only).
    pub receive_overflows: Counter,
    /// Observations `(namespace, name, IP)` in the cache.
    pub cache_entries: Gauge,
    /// Observations removed before expiry, by reason.
    pub cache_evictions: Family<EvictionLabels, Counter>,
    /// Observations removed after expiry.
    pub cache_expired: Counter,
    /// `queries` series: transport-major, in `RESULTS` order.
    query_series: Vec<Counter>,
    /// `upstream_latency` and `upstream_failures` series by transport.
    latency_series: [Histogram; 2],
    failure_series: [Counter; 2],
    /// `cache_evictions` series, in `EVICTION_REASONS` order.
    eviction_series: [Counter; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        let queries = Family::<QueryLabels, Counter>::default();
        let query_series = TRANSPORTS
            .iter()
            .flat_map(|&transport| RESULTS.iter().map(move |&result| (transport, result)))
            .map(|(transport, result)| {
                queries
                    .get_or_create(&QueryLabels { transport, result })
                    .clone()
            })
            .collect();
        let upstream_latency: Family<UpstreamLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let upstream_failures = Family::<UpstreamLabels, Counter>::default();
        let latency_series = TRANSPORTS.map(|transport| {
            upstream_latency
                .get_or_create(&UpstreamLabels { transport })
                .clone()
        });
        let failure_series = TRANSPORTS.map(|transport| {
            upstream_failures
                .get_or_create(&UpstreamLabels { transport })
                .clone()
        });
        let cache_evictions = Family::<EvictionLabels, Counter>::default();
        let eviction_series = EVICTION_REASONS.map(|reason| {
            cache_evictions
                .get_or_create(&EvictionLabels { reason })
                .clone()
        });
        Metrics {
            queries,
            upstream_latency,
            upstream_failures,
            query_series,
            latency_series,
            failure_series,
            ignored_responses: Counter::default(),
            truncated_retries: Counter::default(),
            unparsed_answers: Counter::default(),
            receive_overflows: Counter::default(),
            cache_entries: Gauge::default(),
            cache_evictions,
            eviction_series,
            cache_expired: Counter::default(),
        }
    }
}

impl Metrics {
    /// Registers everything under the `chokepoint_dns_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chokepoint_dns");
        r.register(
            "queries",
            "Pod DNS queries by transport and result",
            self.queries.clone(),
        );
        r.register(
            "upstream_latency_seconds",
            "Time from forwarding a query to the upstream's trusted answer",
            self.upstream_latency.clone(),
        );
        r.register(
            "upstream_failures",
            "Upstream exchanges that timed out or failed",
            self.upstream_failures.clone(),
        );
        r.register(
            "ignored_responses",
            "Datagrams on upstream sockets that did not match the query (id, question, source)",
            self.ignored_responses.clone(),
        );
        r.register(
            "truncated_retries",
            "Truncated UDP answers retried over TCP",
            self.truncated_retries.clone(),
        );
        r.register(
            "unparsed_answers",
            "Matching upstream answers that could not be parsed: released unrecorded",
            self.unparsed_answers.clone(),
        );
        r.register(
            "receive_overflows",
            "Pod queries dropped unread because a DNS listener's receive buffer was full",
            self.receive_overflows.clone(),
        );
        r.register(
            "cache_entries",
            "Observations (namespace, name, IP) in the cache",
            self.cache_entries.clone(),
        );
        r.register(
            "cache_evictions",
            "Observations evicted before expiry, by reason (namespace quota, cache full, names per IP)",
            self.cache_evictions.clone(),
        );
        r.register(
            "cache_expired",
            "Observations removed after expiry",
            self.cache_expired.clone(),
        );
    }

    pub(crate) fn query(&self, transport: Transport, result: QueryResult) {
        let r = RESULTS.iter().position(|x| *x == result).unwrap_or(0);
        self.query_series[transport_index(transport) * RESULTS.len() + r].inc();
    }

    pub(crate) fn upstream_answered(&self, transport: Transport, seconds: f64) {
        self.latency_series[transport_index(transport)].observe(seconds);
    }

    pub(crate) fn evicted(&self, reason: EvictionReason, n: usize) {
        if n > 0 {
            self.eviction_series[eviction_index(reason)].inc_by(n as u64);
        }
    }

    /// Evictions so far for `reason`.
    pub fn evictions(&self, reason: EvictionReason) -> u64 {
        self.eviction_series[eviction_index(reason)].get()
    }

    /// Evictions so far, every reason.
    pub fn evictions_total(&self) -> u64 {
        self.eviction_series.iter().map(Counter::get).sum()
    }

    pub(crate) fn upstream_failed(&self, transport: Transport) {
        self.failure_series[transport_index(transport)].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_bounded_lowercase_labels() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.query(Transport::Udp, QueryResult::Servfail);
        m.query(Transport::Tcp, QueryResult::Dropped);
        m.upstream_answered(Transport::Tcp, 0.001);
        m.upstream_failed(Transport::Udp);
        m.evicted(EvictionReason::NamespaceQuota, 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for needle in [
            r#"chokepoint_dns_queries_total{transport="udp",result="servfail"} 1"#,
            r#"chokepoint_dns_queries_total{transport="tcp",result="dropped"} 1"#,
            r#"chokepoint_dns_queries_total{transport="udp",result="ok"} 0"#,
            r#"chokepoint_dns_upstream_latency_seconds_count{transport="tcp"} 1"#,
            r#"chokepoint_dns_upstream_failures_total{transport="udp"} 1"#,
            r#"chokepoint_dns_cache_evictions_total{reason="namespace_quota"} 2"#,
            r#"chokepoint_dns_cache_evictions_total{reason="cache_full"} 0"#,
            "chokepoint_dns_cache_entries 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
