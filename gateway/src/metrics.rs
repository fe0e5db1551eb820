//! Prometheus metrics of the gateway. Labels are bounded enums only: never IPs, names or
//! policy names (those belong in the audit log).

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::policy::{Decision, Difference, Reason, TierName, Verdict};
use crate::proxy::limits::Exceeded;
use crate::proxy::names::NameCheck;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ProtocolLabel {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum VerdictLabel {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum TierLabel {
    Admin,
    NetworkPolicy,
    Baseline,
    Default,
}

/// The `reason` label of `connections`: a [`Reason`], spelled for Prometheus.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct ReasonLabel(pub Reason);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub protocol: ProtocolLabel,
    pub verdict: VerdictLabel,
    pub tier: TierLabel,
    pub reason: ReasonLabel,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DirectionLabel {
    /// Pod → upstream.
    Sent,
    /// Upstream → pod.
    Received,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: DirectionLabel,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ErrorKind {
    /// The original destination could not be recovered.
    OriginalDestination,
    ConnectTimeout,
    ConnectFailed,
    /// An error while relaying an established connection.
    Relay,
    /// A UDP datagram could not be forwarded or answered.
    Datagram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: ErrorKind,
}

/// The `result` label of `name_checks`: a [`NameCheck`], spelled for Prometheus.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct NameCheckLabel(pub NameCheck);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameCheckLabels {
    pub result: NameCheckLabel,
}

/// The `scope` label of `limit_refusals`: which cap was full.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct ScopeLabel(pub Exceeded);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxiedLabels {
    pub protocol: ProtocolLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub protocol: ProtocolLabel,
    pub scope: ScopeLabel,
}

/// The `difference` label of `staged_differences`: a [`Difference`], spelled for Prometheus.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct DifferenceLabel(pub Difference);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StagedLabels {
    pub difference: DifferenceLabel,
}

/// Label values in Prometheus style (lowercase `snake_case`), spelled out once per enum.
/// `Label(Domain) { .. }`: a label that wraps a domain enum, spelled by the domain's variants.
macro_rules! label_values {
    ($($ty:ident $(($domain:ident))? { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                let text = label_values!(@text self, $ty $(($domain))?, $($variant => $text),+);
                encoder.write_str(text)
            }
        }
    )+};
    (@text $v:ident, $ty:ident, $($variant:ident => $text:literal),+) => {
        match $v { $($ty::$variant => $text),+ }
    };
    (@text $v:ident, $ty:ident ($domain:ident), $($variant:ident => $text:literal),+) => {
        match $v.0 { $($domain::$variant => $text),+ }
    };
}

label_values! {
    ProtocolLabel { Tcp => "tcp", Udp => "udp" }
    VerdictLabel { Allow => "allow", Deny => "deny" }
    TierLabel {
        Admin => "admin",
        NetworkPolicy => "network_policy",
        Baseline => "baseline",
        Default => "default",
    }
    DirectionLabel { Sent => "sent", Received => "received" }
    ErrorKind {
        OriginalDestination => "original_destination",
        ConnectTimeout => "connect_timeout",
        ConnectFailed => "connect_failed",
        Relay => "relay",
        Datagram => "datagram",
    }
    NameCheckLabel(NameCheck) {
        Passed => "passed",
        NoNameAllowed => "no_name_allowed",
        SniMismatch => "sni_mismatch",
        HostMismatch => "host_mismatch",
        NotResolved => "not_resolved",
        NoNameDenied => "no_name_denied",
    }
    ScopeLabel(Exceeded) { Pod => "pod", Total => "total" }
    ReasonLabel(Reason) {
        Rule => "rule",
        NetworkPolicyIsolation => "network_policy_isolation",
        Default => "default",
        Hairpin => "hairpin",
        HostNetworkSource => "host_network_source",
        UnknownSource => "unknown_source",
    }
    DifferenceLabel(Difference) {
        WouldDeny => "would_deny",
        WouldAllow => "would_allow",
        OtherPolicy => "other_policy",
    }
    FastVerdictLabel {
        Kernel => "kernel",
        Proxy => "proxy",
        Revoked => "revoked",
        Dropped => "dropped",
    }
    QueueDropLabel { QueueFull => "queue_full", SocketFull => "socket_full" }
    ToProxyLabel {
        Denied => "denied",
        ByName => "by_name",
        Metadata => "metadata",
        ClusterIp => "cluster_ip",
        NoServiceNote => "no_service_note",
        ServiceNoteMismatch => "service_note_mismatch",
    }
}

/// Why the fast path handed a new flow to the proxy.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ToProxyLabel {
    /// Denied: the proxy refuses and audits it.
    Denied,
    /// Accepted by `domainNames`: the proxy checks the name the connection shows.
    ByName,
    /// To the metadata server (or refused for it).
    Metadata,
    /// To a ClusterIP nothing translated: the gateway picks the backend, or refuses it.
    ClusterIp,
    /// Translated by kube-proxy, but the capture's note of its ClusterIP was not there (the
    /// map full, timed out, or no socket to read it).
    NoServiceNote,
    /// Translated, but the note names a Service this backend is not a ready endpoint of.
    ServiceNoteMismatch,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToProxyLabels {
    pub reason: ToProxyLabel,
}

const TO_PROXY: [ToProxyLabel; 6] = [
    ToProxyLabel::Denied,
    ToProxyLabel::ByName,
    ToProxyLabel::Metadata,
    ToProxyLabel::ClusterIp,
    ToProxyLabel::NoServiceNote,
    ToProxyLabel::ServiceNoteMismatch,
];

/// Where a fast-path decision sent a flow.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FastVerdictLabel {
    Kernel,
    Proxy,
    Revoked,
    Dropped,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum QueueDropLabel {
    QueueFull,
    SocketFull,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FastVerdictLabels {
    pub path: FastVerdictLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueDropLabels {
    pub cause: QueueDropLabel,
}

const FAST_VERDICTS: [FastVerdictLabel; 4] = [
    FastVerdictLabel::Kernel,
    FastVerdictLabel::Proxy,
    FastVerdictLabel::Revoked,
    FastVerdictLabel::Dropped,
];

/// The data path's metrics; cheap to clone (every metric is an `Arc` inside).
///
/// Every labelled series is created up front and kept as a handle, so counting a connection
/// is one atomic add: `Family::get_or_create` takes a lock, which the data path must not.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub connections: Family<ConnectionLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub bytes: Family<DirectionLabels, Counter>,
    pub name_checks: Family<NameCheckLabels, Counter>,
    /// Flows the staged policies would decide otherwise, by how.
    pub staged_differences: Family<StagedLabels, Counter>,
    pub active_connections: Gauge,
    pub udp_flows: Gauge,
    pub snapshot_generation: Gauge,
    pub reloads: Counter,
    pub reload_failures: Counter,
    /// Datagrams the kernel dropped at the UDP listener for want of receive buffer (read
    /// from `SO_RXQ_OVFL`): each may have been a flow's first, so a denied flow that is in
    /// no audit record is in this count.
    pub udp_receive_overflows: Counter,
    /// TCP connections the proxy's listener accepted and UDP flows its listener started:
    /// the proxy path's share (fast-path flows never count here).
    pub proxied: Family<ProxiedLabels, Counter>,
    /// `proxied` series: TCP, UDP.
    proxied_series: [Counter; 2],
    /// Connections and flows refused because a `limits:` cap was full.
    pub limit_refusals: Family<LimitLabels, Counter>,
    /// `limit_refusals` series: TCP pod, TCP total, UDP pod, UDP total.
    limit_series: [Counter; 4],
    /// `connections` series, indexed by [`connection_index`]; a combination the engine never
    /// decides (a rule in the Default tier, say) holds a counter that is not registered.
    connection_series: Vec<Counter>,
    /// `errors` series, in `ERROR_KINDS` order.
    error_series: Vec<Counter>,
    /// `bytes` series: sent, received.
    byte_series: [Counter; 2],
    /// `name_checks` series, in `NAME_CHECKS` order.
    name_check_series: Vec<Counter>,
    /// `staged_differences` series, in `DIFFERENCES` order.
    staged_series: Vec<Counter>,
    /// Fast-path decisions (`capture.l4: kernel`): queued packets, and live flows the walk
    /// after a reload re-decided; by where the flow goes.
    pub fast_path_verdicts: Family<FastVerdictLabels, Counter>,
    fast_path_series: [Counter; 4],
    /// The fast path's `proxy` verdicts, by why.
    pub fast_path_to_proxy: Family<ToProxyLabels, Counter>,
    to_proxy_series: [Counter; 6],
    /// The kernel's drop counts of the fast path's queues (cumulative, from
    /// `nfnetlink_queue`), by cause.
    pub fast_path_queue_drops: Family<QueueDropLabels, Gauge>,
    /// Packets waiting in the fast path's queues now.
    pub fast_path_queue_waiting: Gauge,
}

const PROTOCOLS: [ProtocolLabel; 2] = [ProtocolLabel::Tcp, ProtocolLabel::Udp];
const VERDICTS: [VerdictLabel; 2] = [VerdictLabel::Allow, VerdictLabel::Deny];
const TIERS: [TierLabel; 4] = [
    TierLabel::Admin,
    TierLabel::NetworkPolicy,
    TierLabel::Baseline,
    TierLabel::Default,
];
const ERROR_KINDS: [ErrorKind; 5] = [
    ErrorKind::OriginalDestination,
    ErrorKind::ConnectTimeout,
    ErrorKind::ConnectFailed,
    ErrorKind::Relay,
    ErrorKind::Datagram,
];

const NAME_CHECKS: [NameCheck; 6] = [
    NameCheck::Passed,
    NameCheck::NoNameAllowed,
    NameCheck::SniMismatch,
    NameCheck::HostMismatch,
    NameCheck::NotResolved,
    NameCheck::NoNameDenied,
];

const DIFFERENCES: [Difference; 3] = [
    Difference::WouldDeny,
    Difference::WouldAllow,
    Difference::OtherPolicy,
];

const REASONS: [Reason; 6] = [
    Reason::Rule,
    Reason::NetworkPolicyIsolation,
    Reason::Default,
    Reason::Hairpin,
    Reason::HostNetworkSource,
    Reason::UnknownSource,
];

fn connection_index(
    protocol: ProtocolLabel,
    verdict: VerdictLabel,
    tier: TierLabel,
    reason: Reason,
) -> usize {
    let p = PROTOCOLS.iter().position(|x| *x == protocol).unwrap_or(0);
    let v = VERDICTS.iter().position(|x| *x == verdict).unwrap_or(0);
    let t = TIERS.iter().position(|x| *x == tier).unwrap_or(0);
    let r = REASONS.iter().position(|x| *x == reason).unwrap_or(0);
    ((p * VERDICTS.len() + v) * TIERS.len() + t) * REASONS.len() + r
}

/// Whether the engine can decide with this tier, verdict and reason: rules decide in the
/// three policy tiers, isolation only denies in the NetworkPolicy tier, the rest is the
/// Default tier's.
fn decidable(verdict: VerdictLabel, tier: TierLabel, reason: Reason) -> bool {
    match reason {
        Reason::Rule => tier != TierLabel::Default,
        Reason::NetworkPolicyIsolation => {
            tier == TierLabel::NetworkPolicy && verdict == VerdictLabel::Deny
        }
        _ => tier == TierLabel::Default,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let connections = Family::<ConnectionLabels, Counter>::default();
        let mut connection_series =
            Vec::with_capacity(PROTOCOLS.len() * VERDICTS.len() * TIERS.len() * REASONS.len());
        for protocol in PROTOCOLS {
            for verdict in VERDICTS {
                for tier in TIERS {
                    for reason in REASONS {
                        let labels = ConnectionLabels {
                            protocol,
                            verdict,
                            tier,
                            reason: ReasonLabel(reason),
                        };
                        connection_series.push(if decidable(verdict, tier, reason) {
                            connections.get_or_create(&labels).clone()
                        } else {
                            Counter::default()
                        });
                    }
                }
            }
        }
        let errors = Family::<ErrorLabels, Counter>::default();
        let error_series = ERROR_KINDS
            .iter()
            .map(|&kind| errors.get_or_create(&ErrorLabels { kind }).clone())
            .collect();
        let bytes = Family::<DirectionLabels, Counter>::default();
        let byte_series = [DirectionLabel::Sent, DirectionLabel::Received]
            .map(|direction| bytes.get_or_create(&DirectionLabels { direction }).clone());
        let name_checks = Family::<NameCheckLabels, Counter>::default();
        let name_check_series = NAME_CHECKS
            .iter()
            .map(|&result| {
                name_checks
                    .get_or_create(&NameCheckLabels {
                        result: NameCheckLabel(result),
                    })
                    .clone()
            })
            .collect();
        let limit_refusals = Family::<LimitLabels, Counter>::default();
        let limit_series = [
            (ProtocolLabel::Tcp, Exceeded::Pod),
            (ProtocolLabel::Tcp, Exceeded::Total),
            (ProtocolLabel::Udp, Exceeded::Pod),
            (ProtocolLabel::Udp, Exceeded::Total),
        ]
        .map(|(protocol, scope)| {
            limit_refusals
                .get_or_create(&LimitLabels {
                    protocol,
                    scope: ScopeLabel(scope),
                })
                .clone()
        });
        let staged_differences = Family::<StagedLabels, Counter>::default();
        let staged_series = DIFFERENCES
            .iter()
            .map(|&d| {
                staged_differences
                    .get_or_create(&StagedLabels {
                        difference: DifferenceLabel(d),
                    })
                    .clone()
            })
            .collect();
        let fast_path_verdicts = Family::<FastVerdictLabels, Counter>::default();
        let fast_path_series = FAST_VERDICTS.map(|path| {
            fast_path_verdicts
                .get_or_create(&FastVerdictLabels { path })
                .clone()
        });
        let fast_path_to_proxy = Family::<ToProxyLabels, Counter>::default();
        let to_proxy_series = TO_PROXY.map(|reason| {
            fast_path_to_proxy
                .get_or_create(&ToProxyLabels { reason })
                .clone()
        });
        let proxied = Family::<ProxiedLabels, Counter>::default();
        let proxied_series =
            PROTOCOLS.map(|protocol| proxied.get_or_create(&ProxiedLabels { protocol }).clone());
        let fast_path_queue_drops = Family::<QueueDropLabels, Gauge>::default();
        for cause in [QueueDropLabel::QueueFull, QueueDropLabel::SocketFull] {
            let _ = fast_path_queue_drops.get_or_create(&QueueDropLabels { cause });
        }
        Metrics {
            fast_path_verdicts,
            fast_path_series,
            fast_path_to_proxy,
            to_proxy_series,
            fast_path_queue_drops,
            fast_path_queue_waiting: Gauge::default(),
            connections,
            staged_differences,
            staged_series,
            errors,
            bytes,
            name_checks,
            active_connections: Gauge::default(),
            udp_flows: Gauge::default(),
            snapshot_generation: Gauge::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            udp_receive_overflows: Counter::default(),
            proxied,
            proxied_series,
            limit_refusals,
            limit_series,
            connection_series,
            error_series,
            byte_series,
            name_check_series,
        }
    }
}

impl Metrics {
    /// Counts one fast-path verdict (no lock: the series exist).
    pub fn fast_path(&self, path: FastVerdictLabel) {
        let i = FAST_VERDICTS.iter().position(|p| *p == path).unwrap_or(0);
        self.fast_path_series[i].inc();
    }

    /// Counts why a fast-path `proxy` verdict was given (no lock: the series exist).
    pub fn fast_path_to_proxy(&self, reason: ToProxyLabel) {
        let i = TO_PROXY.iter().position(|r| *r == reason).unwrap_or(0);
        self.to_proxy_series[i].inc();
    }

    /// Sets the queue gauges from the kernel's counts (summed over the queues).
    pub fn fast_path_queues(&self, waiting: u64, queue_full: u64, socket_full: u64) {
        self.fast_path_queue_waiting.set(waiting as i64);
        for (cause, n) in [
            (QueueDropLabel::QueueFull, queue_full),
            (QueueDropLabel::SocketFull, socket_full),
        ] {
            self.fast_path_queue_drops
                .get_or_create(&QueueDropLabels { cause })
                .set(n as i64);
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chokepoint");
        r.register(
            "connections",
            "Connections and UDP flows decided, by verdict, deciding tier and reason",
            self.connections.clone(),
        );
        r.register("errors", "Data-path errors by kind", self.errors.clone());
        r.register("bytes", "Bytes relayed by direction", self.bytes.clone());
        r.register(
            "name_checks",
            "SNI/Host checks of TCP connections accepted by a domainNames rule, by result",
            self.name_checks.clone(),
        );
        r.register(
            "staged_differences",
            "Flows whose verdict or deciding policy would differ if the staged policies were enforced, by difference",
            self.staged_differences.clone(),
        );
        r.register(
            "active_connections",
            "TCP connections being relayed",
            self.active_connections.clone(),
        );
        r.register(
            "udp_flows",
            "UDP flows being tracked (allowed and denied)",
            self.udp_flows.clone(),
        );
        r.register(
            "snapshot_generation",
            "Generation of the policy snapshot in force",
            self.snapshot_generation.clone(),
        );
        r.register(
            "reloads",
            "Policy and inventory reloads that took effect",
            self.reloads.clone(),
        );
        r.register(
            "reload_failures",
            "Reloads refused because the files were invalid",
            self.reload_failures.clone(),
        );
        r.register(
            "udp_receive_overflows",
            "Datagrams the kernel dropped at the UDP listener because its receive buffer was full",
            self.udp_receive_overflows.clone(),
        );
        r.register(
            "proxied",
            "TCP connections the proxy's listener accepted and UDP flows it started, by protocol (fast-path flows never count here)",
            self.proxied.clone(),
        );
        r.register(
            "fast_path_verdicts",
            "Fast-path decisions (a queued packet, or a live flow re-decided by the walk after a reload), by path: kernel (allowed, stays in the kernel), proxy (to the proxy), revoked (denied after a reload), dropped (unreadable)",
            self.fast_path_verdicts.clone(),
        );
        r.register(
            "fast_path_to_proxy",
            "The fast path's proxy verdicts by reason: denied (the proxy refuses and audits), by_name (domainNames: the proxy checks SNI or Host), metadata, cluster_ip (nothing translated it), no_service_note and service_note_mismatch (kube-proxy translated it, and the capture's note of its ClusterIP was missing or did not fit)",
            self.fast_path_to_proxy.clone(),
        );
        r.register(
            "fast_path_queue_dropped",
            "Packets the kernel dropped at the fast path's queues (cumulative, read from nfnetlink_queue), by cause",
            self.fast_path_queue_drops.clone(),
        );
        r.register(
            "fast_path_queue_waiting",
            "Packets waiting in the fast path's queues",
            self.fast_path_queue_waiting.clone(),
        );
        r.register(
            "limit_refusals",
            "TCP connections reset and UDP flows dropped because a limits: cap was full, by protocol and cap",
            self.limit_refusals.clone(),
        );
    }

    pub fn limit_refused(&self, protocol: ProtocolLabel, scope: Exceeded) {
        let p = usize::from(protocol == ProtocolLabel::Udp);
        let s = usize::from(scope == Exceeded::Total);
        self.limit_series[p * 2 + s].inc();
    }

    pub fn decided(&self, protocol: ProtocolLabel, verdict: &Verdict) {
        let verdict_label = match verdict.decision {
            Decision::Allow => VerdictLabel::Allow,
            Decision::Deny => VerdictLabel::Deny,
        };
        let tier = match verdict.decided_by.tier {
            TierName::Admin => TierLabel::Admin,
            TierName::NetworkPolicy => TierLabel::NetworkPolicy,
            TierName::Baseline => TierLabel::Baseline,
            TierName::Default => TierLabel::Default,
        };
        self.connection_series[connection_index(protocol, verdict_label, tier, verdict.reason)]
            .inc();
    }

    pub fn name_checked(&self, result: NameCheck) {
        let i = NAME_CHECKS.iter().position(|r| *r == result).unwrap_or(0);
        self.name_check_series[i].inc();
    }

    pub fn staged(&self, difference: Difference) {
        let i = DIFFERENCES
            .iter()
            .position(|d| *d == difference)
            .unwrap_or(0);
        self.staged_series[i].inc();
    }

    /// Counts a connection or flow the proxy's listener took (no lock: the series exist).
    pub fn proxied(&self, protocol: ProtocolLabel) {
        let i = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0);
        self.proxied_series[i].inc();
    }

    pub fn error(&self, kind: ErrorKind) {
        let i = ERROR_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.error_series[i].inc();
    }

    pub fn bytes(&self, direction: DirectionLabel, n: u64) {
        if n > 0 {
            let i = match direction {
                DirectionLabel::Sent => 0,
                DirectionLabel::Received => 1,
            };
            self.byte_series[i].inc_by(n);
        }
    }
}

/// Renders a registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DecidedBy, Reason};

    #[test]
    fn counters_render_with_bounded_labels() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let deny = Verdict {
            decision: Decision::Deny,
            decided_by: DecidedBy {
                tier: TierName::Admin,
                policy: None,
                rule_index: None,
                action: None,
            },
            reason: Reason::Rule,
            by_domain_names: false,
        };
        m.decided(ProtocolLabel::Tcp, &deny);
        m.decided(ProtocolLabel::Tcp, &deny);
        m.bytes(DirectionLabel::Sent, 10);
        let allow = Verdict {
            decision: Decision::Allow,
            decided_by: DecidedBy {
                tier: TierName::Default,
                policy: None,
                rule_index: None,
                action: None,
            },
            reason: Reason::Default,
            by_domain_names: false,
        };
        m.decided(ProtocolLabel::Udp, &allow);
        m.error(ErrorKind::Relay);
        m.name_checked(NameCheck::NotResolved);
        m.limit_refused(ProtocolLabel::Udp, Exceeded::Pod);
        m.fast_path_to_proxy(ToProxyLabel::NoServiceNote);
        let text = render(&registry);
        for line in [
            r#"chokepoint_connections_total{protocol="tcp",verdict="deny",tier="admin",reason="rule"} 2"#,
            r#"chokepoint_bytes_total{direction="sent"} 10"#,
            r#"chokepoint_connections_total{protocol="udp",verdict="allow",tier="default",reason="default"} 1"#,
            r#"chokepoint_connections_total{protocol="udp",verdict="deny",tier="admin",reason="rule"} 0"#,
            r#"chokepoint_connections_total{protocol="udp",verdict="deny",tier="network_policy",reason="network_policy_isolation"} 0"#,
            r#"chokepoint_errors_total{kind="relay"} 1"#,
            r#"chokepoint_bytes_total{direction="received"} 0"#,
            r#"chokepoint_name_checks_total{result="not_resolved"} 1"#,
            r#"chokepoint_name_checks_total{result="passed"} 0"#,
            r#"chokepoint_limit_refusals_total{protocol="udp",scope="pod"} 1"#,
            r#"chokepoint_limit_refusals_total{protocol="tcp",scope="total"} 0"#,
            r#"chokepoint_fast_path_to_proxy_total{reason="no_service_note"} 1"#,
            r#"chokepoint_fast_path_to_proxy_total{reason="service_note_mismatch"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // Only what the engine can decide: 15 series per protocol.
        let series = text
            .lines()
            .filter(|l| l.starts_with("chokepoint_connections_total{"))
            .count();
        assert_eq!(series, 30, "{text}");
        assert!(!text.contains(r#"tier="default",reason="rule""#), "{text}");
    }
}
