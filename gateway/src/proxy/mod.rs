//! The data path: transparent TCP and UDP proxying with a verdict per connection or flow.
//!
//! Per connection: recover the original destination, identify the source pod by IP in the
//! current snapshot, look up the names the source's namespace resolved to the destination
//! (only when some rule has `domainNames`), evaluate, check the name a TCP connection shows
//! when it was accepted by name, then relay (Accept) or refuse and audit (Deny). The snapshot
//! is read with one atomic load; the name cache is sharded and read-locked per lookup;
//! nothing on this path does file I/O.

pub mod dns;
pub mod fast;
pub mod first_request;
pub mod limits;
pub mod names;
pub mod relay;
pub mod service;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use chokepoint_config::settings::GatewaySettings;
use chokepoint_dns::Cache;

use crate::audit::{AuditReason, AuditRecord, Auditor, FlowDetails};
use crate::flows::{FlowEvent, FlowLog};
use crate::metrics::{Metrics, ProtocolLabel};
use crate::policy::{Flow, Snapshot, StagedVerdict, Verdict};
use crate::state::PolicyState;
use crate::upstream::Connector;

/// What every connection task needs; shared behind an `Arc`.
#[derive(Debug)]
pub struct Context {
    pub state: Arc<PolicyState>,
    pub metrics: Metrics,
    pub auditor: Auditor,
    pub settings: Arc<GatewaySettings>,
    /// What pods resolved through the DNS proxy (`None` with `dns.enabled: false`).
    pub names: Option<Arc<Cache>>,
    /// Allowed connections to the metadata server go to its handler.
    pub metadata: crate::metadata::Metadata,
    /// How TCP connections upstream are made.
    pub upstream: Connector,
    /// What pods may hold at once (`limits:`).
    pub limits: limits::DataPathLimits,
    /// The log of allowed flows (`None` with `flows.enabled: false`).
    pub flows: Option<FlowLog>,
}

impl Context {
    /// What the metadata handler uses of this context.
    fn for_metadata(&self) -> crate::metadata::Context<'_> {
        crate::metadata::Context {
            state: &self.state,
            auditor: &self.auditor,
            metadata: &self.metadata,
            upstream: &self.upstream,
        }
    }

    /// Re-decides a live flow against the snapshot now in force; `Some` when it is now denied.
    fn recheck(&self, flow: &Flow<'_>) -> Option<(Arc<Snapshot>, Verdict)> {
        let snapshot = self.state.snapshot();
        let verdict = snapshot.evaluate(flow);
        (!verdict.is_allowed()).then_some((snapshot, verdict))
    }

    /// The flow's verdict as if the staged policies were enforced, where it differs from
    /// `verdict`; counted by kind. `None` at once when nothing is staged.
    fn staged<'s>(
        &self,
        snapshot: &'s Snapshot,
        flow: &Flow<'_>,
        verdict: &Verdict,
    ) -> Option<StagedVerdict<'s>> {
        let staged = snapshot.staged_difference(flow, verdict)?;
        self.metrics.staged(staged.difference);
        Some(staged)
    }

    /// Hands an allowed flow to the flow log, when it is on. `names`: what it was decided
    /// with (empty: the flow log looks them up).
    fn log_allowed(
        &self,
        snapshot: &Arc<Snapshot>,
        flow: &Flow<'_>,
        verdict: &Verdict,
        names: &[Arc<str>],
    ) {
        if let Some(log) = &self.flows {
            log.record(FlowEvent {
                snapshot: snapshot.clone(),
                verdict: *verdict,
                src: flow.src,
                dst: SocketAddr::new(flow.dst, flow.port),
                protocol: flow.protocol,
                addressed: flow.addressed,
                names: names.to_vec(),
            });
        }
    }

    fn audit_denied(&self, snapshot: &Snapshot, flow: &Flow<'_>, src_port: u16, verdict: &Verdict) {
        self.audit(snapshot, flow, src_port, verdict, None);
    }

    /// Records a denial, or an allowed flow with a staged difference.
    fn audit(
        &self,
        snapshot: &Snapshot,
        flow: &Flow<'_>,
        src_port: u16,
        verdict: &Verdict,
        staged: Option<&StagedVerdict<'_>>,
    ) {
        let details = FlowDetails::from_flow(flow, src_port);
        self.auditor
            .record_decision(snapshot, verdict, staged, &details);
    }

    /// Audits an allowed flow to a metadata address that only the metadata handler may speak
    /// to (see [`Metadata::refuses`](crate::metadata::Metadata::refuses)).
    fn audit_metadata_refused(
        &self,
        snapshot: &Snapshot,
        flow: &Flow<'_>,
        src_port: u16,
        verdict: &Verdict,
        staged: Option<&StagedVerdict<'_>>,
    ) {
        let details = FlowDetails::from_flow(flow, src_port);
        self.auditor.record(
            AuditRecord::new(self.auditor.node(), snapshot, verdict, &details)
                .denied_because(AuditReason::METADATA_PORT_REFUSED)
                .staged(staged),
        );
    }

    /// Counts and audits a connection or flow refused because `exceeded` is full; `verdict`
    /// is what policy said (TCP is refused before it is decided).
    fn refuse_over_limit(
        &self,
        snapshot: &Snapshot,
        verdict: &Verdict,
        details: &FlowDetails<'_>,
        exceeded: limits::Exceeded,
    ) {
        let (label, reason) = match details.protocol {
            chokepoint_config::model::Protocol::Udp => {
                (ProtocolLabel::Udp, AuditReason::FLOW_LIMIT)
            }
            _ => (ProtocolLabel::Tcp, AuditReason::CONNECTION_LIMIT),
        };
        self.metrics.limit_refused(label, exceeded);
        self.auditor.record(
            AuditRecord::new(self.auditor.node(), snapshot, verdict, details)
                .denied_because(reason),
        );
    }

    /// Like `audit`, and the record names the destination's DNS names even when the
    /// engine did not need them (no rule has `domainNames`): the audit log says what the pod
    /// was trying to reach. Only recorded flows pay for that lookup.
    fn audit_named(
        &self,
        snapshot: &Snapshot,
        flow: &Flow<'_>,
        src_port: u16,
        verdict: &Verdict,
        staged: Option<&StagedVerdict<'_>>,
    ) {
        if verdict.is_allowed() && staged.is_none() {
            return;
        }
        if !flow.names.is_empty() || self.names.is_none() {
            return self.audit(snapshot, flow, src_port, verdict, staged);
        }
        let names = names::lookup(
            self.names.as_deref(),
            snapshot,
            flow.src,
            names::named_ip(flow),
            false,
        );
        let name_refs = names::as_strs(&names);
        let flow = Flow {
            names: &name_refs,
            ..*flow
        };
        self.audit(snapshot, &flow, src_port, verdict, staged);
    }
}

/// IPv4 peers of dual-stack sockets appear as `::ffff:a.b.c.d`; use the IPv4 form.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
