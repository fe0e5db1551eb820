//! Prometheus metrics of the gateway. Labels are bounded enums only: never IPs, names or
//! policy names (those belong in the audit log).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::policy::{Decision, TierName, Verdict};

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ProtocolLabel {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum VerdictLabel {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum TierLabel {
    Admin,
    NetworkPolicy,
    Baseline,
    Default,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub protocol: ProtocolLabel,
    pub verdict: VerdictLabel,
    pub tier: TierLabel,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
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

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
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

/// The data path's metrics; cheap to clone (every metric is an `Arc` inside).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub connections: Family<ConnectionLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub bytes: Family<DirectionLabels, Counter>,
    pub active_connections: Gauge,
    pub udp_flows: Gauge,
    pub snapshot_generation: Gauge,
    pub reloads: Counter,
    pub reload_failures: Counter,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chokepoint");
        r.register(
            "connections",
            "Connections and UDP flows decided, by verdict and deciding tier",
            self.connections.clone(),
        );
        r.register("errors", "Data-path errors by kind", self.errors.clone());
        r.register("bytes", "Bytes relayed by direction", self.bytes.clone());
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
    }

    pub fn decided(&self, protocol: ProtocolLabel, verdict: &Verdict) {
        let labels = ConnectionLabels {
            protocol,
            verdict: match verdict.decision {
                Decision::Allow => VerdictLabel::Allow,
                Decision::Deny => VerdictLabel::Deny,
            },
            tier: match verdict.decided_by.tier {
                TierName::Admin => TierLabel::Admin,
                TierName::NetworkPolicy => TierLabel::NetworkPolicy,
                TierName::Baseline => TierLabel::Baseline,
                TierName::Default => TierLabel::Default,
            },
        };
        self.connections.get_or_create(&labels).inc();
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    pub fn bytes(&self, direction: DirectionLabel, n: u64) {
        if n > 0 {
            self.bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(n);
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
        };
        m.decided(ProtocolLabel::Tcp, &deny);
        m.decided(ProtocolLabel::Tcp, &deny);
        m.bytes(DirectionLabel::Sent, 10);
        let text = render(&registry);
        assert!(
            text.contains(
                r#"chokepoint_connections_total{protocol="Tcp",verdict="Deny",tier="Admin"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"chokepoint_bytes_total{direction="Sent"} 10"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
