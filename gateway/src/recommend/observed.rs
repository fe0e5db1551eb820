//! What the records say each namespace reached.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use chokepoint_config::model::Protocol;
use chokepoint_config::{Diagnostic, Severity};

use crate::audit::{AuditRecord, ServiceName};
use crate::flows::{FlowDestination, FlowLine, FlowRecord};
use crate::policy::Decision;

/// A destination as a policy peer names it: the most stable name the records give.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// The pod addressed a Service: its ready endpoints, whichever pods back it later.
    Service { namespace: String, name: String },
    /// A pod, by its namespace and workload labels (never its name or IP).
    Pods {
        namespace: String,
        labels: BTreeMap<String, String>,
    },
    /// A destination reached by DNS names (or the name a connection showed).
    Names(BTreeSet<String>),
    /// An address outside the cluster reached without a name.
    Address(IpAddr),
}

/// A protocol and destination port, ordered for stable output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub protocol: Protocol,
    pub port: u16,
}

/// What the source namespaces reached: peer → ports, per namespace.
pub type Observed = BTreeMap<String, BTreeMap<Peer, BTreeSet<PortKey>>>;

/// Everything read from the record files.
#[derive(Debug, Default)]
pub struct Reading {
    pub observed: Observed,
    /// Allowed flows read (the sum of the records' counts).
    pub flows: u64,
    /// Records of denials, left out: they are not traffic that works today.
    pub denied: u64,
    /// Flows of windows the flow log could not itemize (`unitemized` lines).
    pub unitemized: u64,
    /// Problems with the input, each at its file and line.
    pub diagnostics: Vec<Diagnostic>,
}

impl Reading {
    /// Takes one record of a flow-log or audit file (`path`, line `n`). `namespaces`: the
    /// source namespaces to keep (all when empty).
    pub fn line(&mut self, path: &Path, n: u64, line: FlowLine, namespaces: &[String]) {
        match line {
            FlowLine::Flow(r) => self.flow(&r, namespaces),
            FlowLine::Audit(r) => self.audit(&r, namespaces),
            FlowLine::Unitemized(u) => {
                let count = u.unitemized.flows + u.unitemized.dropped;
                self.unitemized += count;
                self.diagnostics.push(Diagnostic {
                    severity: Severity::Warning,
                    file: path.to_owned(),
                    line: n,
                    column: 1,
                    object: None,
                    message: format!(
                        "{count} flows of the window that ended {} have no record (flows.maxKeys reached or the queue was full): destinations only they reached are missing; raise flows.maxKeys and observe again",
                        u.time
                    ),
                });
            }
        }
    }

    fn flow(&mut self, r: &FlowRecord, namespaces: &[String]) {
        let Some(ns) = self.working(
            r.verdict,
            r.count,
            r.source.namespace.as_deref(),
            namespaces,
        ) else {
            return;
        };
        let names: BTreeSet<String> = r.destination.names.iter().cloned().collect();
        let peer = peer(&r.destination, names);
        self.add(
            ns,
            peer,
            r.destination.protocol,
            r.destination.port,
            r.count,
        );
    }

    /// The source namespace of a record to recommend from: an allowed one (in an audit
    /// record, one a staged policy would decide otherwise: working traffic) of a wanted
    /// namespace. Denials are counted and left out.
    fn working(
        &mut self,
        verdict: Decision,
        count: u64,
        namespace: Option<&str>,
        namespaces: &[String],
    ) -> Option<String> {
        if verdict != Decision::Allow {
            self.denied += count;
            return None;
        }
        wanted(namespace, namespaces)
    }

    fn audit(&mut self, r: &AuditRecord, namespaces: &[String]) {
        let Some(ns) = self.working(
            r.verdict,
            r.count,
            r.source.namespace.as_deref(),
            namespaces,
        ) else {
            return;
        };
        let d = &r.destination;
        // The name a connection showed is what a domainNames rule checks.
        let names: BTreeSet<String> = match (&d.sni, &d.host) {
            (Some(n), _) | (None, Some(n)) => [n.clone()].into(),
            (None, None) => d.names.iter().cloned().collect(),
        };
        let as_flow = FlowDestination {
            ip: Some(d.ip),
            port: d.port,
            namespace: d.namespace.clone(),
            pod: d.pod.clone(),
            labels: d.labels.clone(),
            protocol: d.protocol,
            names: Vec::new(),
            service: d.service.clone(),
            cluster_ip: d.cluster_ip,
        };
        let peer = peer(&as_flow, names);
        self.add(ns, peer, d.protocol, d.port, r.count);
    }

    fn add(
        &mut self,
        namespace: String,
        peer: Option<Peer>,
        protocol: Protocol,
        port: u16,
        count: u64,
    ) {
        let Some(peer) = peer else {
            return;
        };
        self.flows += count;
        self.observed
            .entry(namespace)
            .or_default()
            .entry(peer)
            .or_default()
            .insert(PortKey { protocol, port });
    }
}

/// The source namespace, when it is one to recommend for.
fn wanted(namespace: Option<&str>, namespaces: &[String]) -> Option<String> {
    let ns = namespace?;
    (namespaces.is_empty() || namespaces.iter().any(|n| n == ns)).then(|| ns.to_owned())
}

/// The peer for a destination: its Service, else its pod, else its names, else its address.
fn peer(d: &FlowDestination, names: BTreeSet<String>) -> Option<Peer> {
    if let Some(ServiceName {
        namespace, name, ..
    }) = &d.service
    {
        return Some(Peer::Service {
            namespace: namespace.clone(),
            name: name.clone(),
        });
    }
    if let Some(namespace) = &d.namespace {
        return Some(Peer::Pods {
            namespace: namespace.clone(),
            labels: d.labels.clone().unwrap_or_default(),
        });
    }
    let names: BTreeSet<String> = names
        .into_iter()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| chokepoint_config::compile::is_domain_pattern(n) && !n.starts_with("*."))
        .collect();
    if !names.is_empty() {
        return Some(Peer::Names(names));
    }
    d.ip.map(Peer::Address)
}
