//! Where a captured connection is decided and connected when its pod addressed a Service.
//!
//! Policy is defined on pods, so a connection is decided on the backend it reaches, never on a
//! ClusterIP. Three cases, told apart per connection or UDP flow:
//! - the node translated the ClusterIP before the capture (kube-proxy's iptables or nftables
//!   mode with the TPROXY capture): the packets already go to the backend and conntrack
//!   remembers the ClusterIP. Decide on the backend; the ClusterIP names the Service;
//! - the packets still go to a ClusterIP of the snapshot (REDIRECT mode captures before the
//!   DNAT; kube-proxy's IPVS mode translates after the capture; no kube-proxy): with
//!   `services.resolve: auto` the gateway picks one of the Service port's ready backends at
//!   random, as kube-proxy would, decides on it and connects there; with `kernel` it refuses
//!   (`service_not_translated`). A Service port without a ready backend is refused
//!   (`no_endpoints`), the way kube-proxy refuses it: a TCP reset, UDP dropped;
//! - no Service is involved: decide on the destination.

use std::hash::BuildHasher;
use std::net::SocketAddr;

use chokepoint_config::model::Protocol;
use chokepoint_config::settings::{CaptureMode, ServiceResolve};
use chokepoint_redirect::conntrack::{Conntrack, L4};

use crate::audit::{AuditReason, AuditRecord, FlowDetails};
use crate::metrics::ProtocolLabel;
use crate::policy::{DecidedBy, Decision, Reason, Snapshot, TierName, Verdict};

/// A connection to a Service port that has no ready endpoint.
pub const NO_ENDPOINTS: AuditReason = AuditReason::from_static("no_endpoints");
/// A connection still addressed to a ClusterIP with `services.resolve: kernel`.
pub const NOT_TRANSLATED: AuditReason = AuditReason::from_static("service_not_translated");

/// What a captured connection is decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Decide on `dst` and connect there; `addressed` is the `ClusterIP:port` the pod
    /// addressed when that is not `dst`.
    Backend {
        dst: SocketAddr,
        addressed: Option<SocketAddr>,
    },
    /// Addressed to the Service at `addressed`, refused for `reason` without a verdict.
    Refused {
        addressed: SocketAddr,
        reason: AuditReason,
    },
}

/// The target of a connection from `src` whose packets go to `seen` (TPROXY: the accepted
/// socket's local address or the datagram's destination; REDIRECT: `SO_ORIGINAL_DST`).
/// `before_nat` is where conntrack says the pod sent it, when known (TPROXY only).
pub fn target(
    snapshot: &Snapshot,
    resolve: ServiceResolve,
    protocol: Protocol,
    src: SocketAddr,
    seen: SocketAddr,
    before_nat: Option<SocketAddr>,
) -> Target {
    if let Some(addressed) = before_nat.filter(|a| *a != seen) {
        return Target::Backend {
            dst: seen,
            addressed: Some(addressed),
        };
    }
    let Some(service) = snapshot.service_at(seen.ip(), seen.port(), protocol) else {
        return Target::Backend {
            dst: seen,
            addressed: None,
        };
    };
    let refused = |reason| Target::Refused {
        addressed: seen,
        reason,
    };
    if resolve == ServiceResolve::Kernel {
        return refused(NOT_TRANSLATED);
    }
    let backends = snapshot.ready_backends(service);
    if backends.is_empty() {
        return refused(NO_ENDPOINTS);
    }
    // Random like kube-proxy's `numgen random`; a fresh `RandomState` per call is seeded anew.
    let pick = std::hash::RandomState::new().hash_one((src, seen)) as usize % backends.len();
    Target::Backend {
        dst: backends[pick],
        addressed: Some(seen),
    }
}

/// The verdict a [`Target::Refused`] connection is counted and recorded with: no policy was
/// consulted, so it names the Default tier and no policy.
pub fn refused_verdict() -> Verdict {
    Verdict {
        decision: Decision::Deny,
        decided_by: DecidedBy {
            tier: TierName::Default,
            policy: None,
            rule_index: None,
            action: None,
        },
        reason: Reason::Default,
        by_domain_names: false,
    }
}

/// The audit record of a [`Target::Refused`] connection (see [`refused_verdict`]); `reason`
/// says why.
pub fn refusal_record(
    node: &str,
    snapshot: &Snapshot,
    src: SocketAddr,
    addressed: SocketAddr,
    protocol: Protocol,
    reason: AuditReason,
) -> AuditRecord {
    let details = FlowDetails::new(src, addressed, protocol).addressed(Some(addressed));
    AuditRecord::new(node, snapshot, &refused_verdict(), &details).denied_because(reason)
}

/// A conntrack socket for [`before_nat`], in TPROXY mode (REDIRECT captures before the DNAT:
/// what the gateway sees is what the pod addressed). Without one, `what` is still decided on
/// the backend; only its records do not name the Service.
pub(super) fn open_conntrack(ctx: &super::Context, what: &str) -> Option<Conntrack> {
    match ctx.settings.capture.mode {
        CaptureMode::Tproxy => Conntrack::open()
            .inspect_err(|e| {
                tracing::warn!(target: "proxy", "{what} will not name their Service: {e}");
            })
            .ok(),
        CaptureMode::Redirect => None,
    }
}

/// Where the flow from `pod` whose packets go to `seen` was addressed before any DNAT (the
/// ClusterIP, after kube-proxy's translation), from conntrack.
pub(super) fn before_nat(
    ct: Option<&mut Conntrack>,
    protocol: L4,
    pod: SocketAddr,
    seen: SocketAddr,
) -> Option<SocketAddr> {
    match ct?.original_destination(protocol, pod, seen) {
        Ok(found) => found.map(super::canonical),
        Err(e) => {
            tracing::debug!(target: "proxy", "conntrack lookup failed: {e}");
            None
        }
    }
}

impl super::Context {
    /// [`target`] with this gateway's `services.resolve`.
    pub(super) fn target(
        &self,
        snapshot: &Snapshot,
        protocol: Protocol,
        src: SocketAddr,
        seen: SocketAddr,
        before_nat: Option<SocketAddr>,
    ) -> Target {
        let resolve = self.settings.services.resolve;
        target(snapshot, resolve, protocol, src, seen, before_nat)
    }

    /// Counts and audits a [`Target::Refused`] connection (the caller resets or drops it).
    pub(super) fn refused(
        &self,
        snapshot: &Snapshot,
        protocol: Protocol,
        src: SocketAddr,
        addressed: SocketAddr,
        reason: AuditReason,
    ) {
        let label = match protocol {
            Protocol::Udp => ProtocolLabel::Udp,
            _ => ProtocolLabel::Tcp,
        };
        self.metrics.decided(label, &refused_verdict());
        let node = self.auditor.node();
        let record = refusal_record(node, snapshot, src, addressed, protocol, reason);
        self.auditor.record(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chokepoint_config::{UnknownFields, load_str};

    use crate::policy::Options;

    const WORLD: &str = "\
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: web}
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: v1
kind: Service
metadata: {namespace: db, name: db}
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ports: [{name: pg, port: 5432, protocol: TCP, targetPort: 5433}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: db, name: db-1, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
- {addresses: [10.244.2.1], conditions: {ready: true}}
- {addresses: [10.244.2.2], conditions: {ready: true}}
- {addresses: [10.244.2.3], conditions: {ready: false}}
ports: [{name: pg, port: 5433, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {namespace: db, name: empty}
spec:
  clusterIP: 10.96.0.30
  clusterIPs: [10.96.0.30]
  ports: [{port: 80, protocol: TCP, targetPort: 8080}]
";

    fn snapshot() -> Snapshot {
        let loaded = load_str(
            std::path::Path::new("world.yaml"),
            WORLD,
            UnknownFields::Reject,
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Snapshot::compile(&loaded.world, Options::default())
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const POD: &str = "10.244.1.10:40000";

    #[test]
    fn a_translated_connection_is_decided_on_the_backend_and_names_the_cluster_ip() {
        let t = target(
            &snapshot(),
            ServiceResolve::Kernel,
            Protocol::Tcp,
            sa(POD),
            sa("10.244.2.2:5433"),
            Some(sa("10.96.0.20:5432")),
        );
        let want = Target::Backend {
            dst: sa("10.244.2.2:5433"),
            addressed: Some(sa("10.96.0.20:5432")),
        };
        assert_eq!(t, want);
    }

    #[test]
    fn an_untranslated_cluster_ip_gets_a_ready_backend_picked_by_the_gateway() {
        let s = snapshot();
        let mut seen = std::collections::BTreeSet::new();
        for port in 40000..40200 {
            let t = target(
                &s,
                ServiceResolve::Auto,
                Protocol::Tcp,
                sa(&format!("10.244.1.10:{port}")),
                sa("10.96.0.20:5432"),
                Some(sa("10.96.0.20:5432")),
            );
            let Target::Backend { dst, addressed } = t else {
                panic!("{t:?}");
            };
            assert_eq!(addressed, Some(sa("10.96.0.20:5432")));
            seen.insert(dst);
        }
        let ready: std::collections::BTreeSet<_> =
            [sa("10.244.2.1:5433"), sa("10.244.2.2:5433")].into();
        assert_eq!(seen, ready, "both ready backends, never the unready one");
    }

    #[test]
    fn a_service_without_ready_endpoints_is_refused_with_its_own_reason() {
        let t = target(
            &snapshot(),
            ServiceResolve::Auto,
            Protocol::Tcp,
            sa(POD),
            sa("10.96.0.30:80"),
            None,
        );
        let want = Target::Refused {
            addressed: sa("10.96.0.30:80"),
            reason: NO_ENDPOINTS,
        };
        assert_eq!(t, want);
    }

    #[test]
    fn kernel_resolution_refuses_what_nothing_translated() {
        let t = target(
            &snapshot(),
            ServiceResolve::Kernel,
            Protocol::Tcp,
            sa(POD),
            sa("10.96.0.20:5432"),
            None,
        );
        assert!(matches!(t, Target::Refused { reason, .. } if reason == NOT_TRANSLATED));
    }

    #[test]
    fn other_destinations_and_other_ports_of_a_cluster_ip_are_left_alone() {
        let s = snapshot();
        for dst in ["192.0.2.10:443", "10.96.0.20:80"] {
            let t = target(
                &s,
                ServiceResolve::Auto,
                Protocol::Tcp,
                sa(POD),
                sa(dst),
                None,
            );
            let want = Target::Backend {
                dst: sa(dst),
                addressed: None,
            };
            assert_eq!(t, want);
        }
        // UDP to the TCP port of a Service is no Service either.
        let t = target(
            &s,
            ServiceResolve::Auto,
            Protocol::Udp,
            sa(POD),
            sa("10.96.0.20:5432"),
            None,
        );
        assert!(matches!(
            t,
            Target::Backend {
                addressed: None,
                ..
            }
        ));
    }

    #[test]
    fn the_refusal_record_names_the_service_and_its_reason() {
        let s = snapshot();
        let r = refusal_record(
            "n1",
            &s,
            sa(POD),
            sa("10.96.0.30:80"),
            Protocol::Tcp,
            NO_ENDPOINTS,
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["verdict"], "deny");
        assert_eq!(json["reason"], "no_endpoints");
        assert_eq!(json["destination"]["ip"], "10.96.0.30");
        assert_eq!(json["destination"]["cluster_ip"], "10.96.0.30");
        assert_eq!(json["destination"]["service"]["name"], "empty");
        assert_eq!(json["source"]["pod"], "web");
    }
}
