//! Records → the graph the page draws.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use chokepoint_config::World;
use chokepoint_config::inventory::PodInfo;
use chokepoint_config::model::{Labels, Subject};
use serde::Serialize;

use crate::audit::{AuditRecord, DecidedBy, ServiceName};
use crate::flows::{FlowLine, FlowRecord};
use crate::policy::Decision;

/// Where an edge ends or starts: a workload, or something outside the inventory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Node {
    pub id: String,
    /// The namespace, or `external` for destinations outside the cluster.
    pub group: String,
    pub label: String,
    /// The pods the records name for this workload.
    pub pods: BTreeSet<String>,
    /// The policies whose subject selects those pods (`Kind namespace/name`).
    pub policies: BTreeSet<String>,
}

/// How an edge's flows were decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    Allowed,
    Denied,
    /// Decided one way now, another way by the staged policies.
    Staged,
}

/// Flows from one node to another on one port and protocol, of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: String,
    pub kind: EdgeKind,
    pub count: u64,
    /// Who decided (tier, kind, policy, rule), one entry per distinct decision.
    pub decided_by: BTreeSet<String>,
    /// For `staged` edges: what the staged policies would decide.
    pub staged: BTreeSet<String>,
    /// The Services the flows were addressed to.
    pub services: BTreeSet<String>,
}

/// The whole map.
#[derive(Debug, Default, Serialize)]
pub struct Graph {
    pub groups: Vec<String>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

type EdgeKey = (String, String, u16, String, EdgeKind);

/// Builds a graph from parsed lines; `world` names workloads and the policies that select them.
#[derive(Debug)]
pub struct Builder<'w> {
    world: &'w World,
    /// The inventory's pods by namespace and name, and namespaces' labels by name: looked up
    /// once per pod the records name.
    pods: HashMap<(&'w str, &'w str), &'w PodInfo>,
    namespace_labels: HashMap<&'w str, &'w Labels>,
    nodes: BTreeMap<String, Node>,
    edges: BTreeMap<EdgeKey, Edge>,
}

impl<'w> Builder<'w> {
    pub fn new(world: &'w World) -> Builder<'w> {
        let inventory = &world.inventory;
        Builder {
            world,
            pods: inventory
                .pods
                .iter()
                .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
                .collect(),
            namespace_labels: inventory
                .namespaces
                .iter()
                .map(|n| (n.name.as_str(), &n.labels))
                .collect(),
            nodes: BTreeMap::new(),
            edges: BTreeMap::new(),
        }
    }

    pub fn line(&mut self, line: &FlowLine) {
        match line {
            FlowLine::Flow(r) => self.flow(r),
            FlowLine::Audit(r) => self.audit(r),
            FlowLine::Unitemized(_) => {}
        }
    }

    fn flow(&mut self, r: &FlowRecord) {
        let from = self.source(
            r.source.namespace.as_deref(),
            r.source.pod.as_deref(),
            r.source.ip,
        );
        let d = &r.destination;
        let to = self.endpoint(d.namespace.as_deref(), d.pod.as_deref(), &d.names, d.ip);
        let kind = match r.verdict {
            Decision::Allow => EdgeKind::Allowed,
            Decision::Deny => EdgeKind::Denied,
        };
        let service = d.service.as_ref().map(service_label);
        self.edge(
            from,
            to,
            d.port,
            &d.protocol.to_string(),
            kind,
            r.count,
            describe(&r.decided_by),
            None,
            service,
        );
    }

    fn audit(&mut self, r: &AuditRecord) {
        let from = self.source(
            r.source.namespace.as_deref(),
            r.source.pod.as_deref(),
            r.source.ip,
        );
        let d = &r.destination;
        let shown: Vec<String> = d.sni.iter().chain(d.host.iter()).cloned().collect();
        let names = if shown.is_empty() { &d.names } else { &shown };
        let to = self.endpoint(d.namespace.as_deref(), d.pod.as_deref(), names, Some(d.ip));
        let (kind, staged) = match (&r.staged, r.verdict) {
            (Some(s), _) => (
                EdgeKind::Staged,
                Some(format!("{} by {}", s.verdict, describe(&s.decided_by))),
            ),
            (None, Decision::Deny) => (EdgeKind::Denied, None),
            (None, Decision::Allow) => (EdgeKind::Allowed, None),
        };
        let service = d.service.as_ref().map(service_label);
        let mut decided = describe(&r.decided_by);
        if r.verdict == Decision::Deny && r.reason.as_str() != "rule" {
            decided = format!("{decided} ({})", r.reason);
        }
        self.edge(
            from,
            to,
            d.port,
            &d.protocol.to_string(),
            kind,
            r.count,
            decided,
            staged,
            service,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn edge(
        &mut self,
        from: String,
        to: String,
        port: u16,
        protocol: &str,
        kind: EdgeKind,
        count: u64,
        decided_by: String,
        staged: Option<String>,
        service: Option<String>,
    ) {
        let key = (from.clone(), to.clone(), port, protocol.to_owned(), kind);
        let e = self.edges.entry(key).or_insert_with(|| Edge {
            from,
            to,
            port,
            protocol: protocol.to_owned(),
            kind,
            count: 0,
            decided_by: BTreeSet::new(),
            staged: BTreeSet::new(),
            services: BTreeSet::new(),
        });
        e.count += count;
        e.decided_by.insert(decided_by);
        e.staged.extend(staged);
        e.services.extend(service);
    }

    fn source(&mut self, namespace: Option<&str>, pod: Option<&str>, ip: IpAddr) -> String {
        self.endpoint(namespace, pod, &[], Some(ip))
    }

    /// The node of a record's source or destination, created on first sight.
    fn endpoint(
        &mut self,
        namespace: Option<&str>,
        pod: Option<&str>,
        names: &[String],
        ip: Option<IpAddr>,
    ) -> String {
        let (id, group, label) = match (namespace, pod) {
            (Some(ns), Some(pod)) => {
                let workload = self.workload(ns, pod);
                (format!("{ns}/{workload}"), ns.to_owned(), workload)
            }
            _ if !names.is_empty() => {
                let label = names.join(", ");
                (format!("external:{label}"), "external".to_owned(), label)
            }
            _ => {
                let label = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
                (format!("external:{label}"), "external".to_owned(), label)
            }
        };
        let node = self.nodes.entry(id.clone()).or_insert_with(|| Node {
            id: id.clone(),
            group,
            label,
            pods: BTreeSet::new(),
            policies: BTreeSet::new(),
        });
        if let (Some(ns), Some(pod)) = (namespace, pod)
            && node.pods.insert(pod.to_owned())
            && let Some(p) = self.pods.get(&(ns, pod))
        {
            let empty = Labels::new();
            let ns_labels = self.namespace_labels.get(ns).copied().unwrap_or(&empty);
            node.policies.extend(selecting(self.world, p, ns_labels));
        }
        id
    }

    /// The workload a pod belongs to: its `app.kubernetes.io/name`, `app` or `k8s-app`
    /// label, else its name without the suffixes controllers add.
    fn workload(&self, namespace: &str, pod: &str) -> String {
        let labels = self.pods.get(&(namespace, pod)).map(|p| &p.labels);
        for key in ["app.kubernetes.io/name", "app", "k8s-app"] {
            if let Some(v) = labels.and_then(|l| l.get(key)) {
                return v.clone();
            }
        }
        controller_base(pod).to_owned()
    }

    pub fn finish(self) -> Graph {
        let mut groups: Vec<String> = self
            .nodes
            .values()
            .map(|n| n.group.clone())
            .filter(|g| g != "external")
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if self.nodes.values().any(|n| n.group == "external") {
            groups.push("external".to_owned());
        }
        Graph {
            groups,
            nodes: self.nodes.into_values().collect(),
            edges: self.edges.into_values().collect(),
        }
    }
}

/// `web-7f9c6b8d4-x2k8p` → `web` (Deployment), `db-0` → `db` (StatefulSet),
/// `node-exporter-hk7wz` → `node-exporter` (DaemonSet).
fn controller_base(pod: &str) -> &str {
    let mut base = pod;
    let strip = |s: &str, ok: fn(&str) -> bool| match s.rsplit_once('-') {
        Some((head, tail)) if !head.is_empty() && ok(tail) => Some(head.len()),
        _ => None,
    };
    let pod_suffix = |t: &str| t.len() == 5 && t.bytes().all(|b| b.is_ascii_alphanumeric());
    // A ReplicaSet's or Job's hash has digits; a word like `exporter` is part of the name.
    let hash = |t: &str| {
        (6..=10).contains(&t.len())
            && t.bytes().all(|b| b.is_ascii_alphanumeric())
            && t.bytes().any(|b| b.is_ascii_digit())
    };
    let ordinal = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if let Some(n) = strip(base, ordinal) {
        return &base[..n];
    }
    if let Some(n) = strip(base, pod_suffix) {
        base = &base[..n];
        if let Some(n) = strip(base, hash) {
            base = &base[..n];
        }
    }
    base
}

/// The policies whose subject selects the pod `p` of a namespace labelled `ns_labels`
/// (enforced and staged).
fn selecting(world: &World, p: &PodInfo, ns_labels: &Labels) -> Vec<String> {
    let namespace = p.namespace.as_str();
    let mut out = Vec::new();
    let staged = &world.staged;
    for (c, mark) in world
        .cluster_policies
        .iter()
        .map(|c| (c, ""))
        .chain(staged.cluster_policies.iter().map(|c| (c, " (staged)")))
    {
        let selects = match &c.subject {
            Subject::Namespaces(s) => s.matches(ns_labels),
            Subject::Pods { namespaces, pods } => {
                namespaces.matches(ns_labels) && pods.matches(&p.labels)
            }
        };
        if selects {
            out.push(format!("{} {}{mark}", c.kind.kind(), c.name));
        }
    }
    for (d, mark) in world
        .developer_policies
        .iter()
        .map(|d| (d, ""))
        .chain(staged.developer_policies.iter().map(|d| (d, " (staged)")))
    {
        if d.namespace == namespace && d.pod_selector.matches(&p.labels) {
            out.push(format!(
                "DeveloperNetworkPolicy {}/{}{mark}",
                d.namespace, d.name
            ));
        }
    }
    for (n, mark) in world
        .network_policies
        .iter()
        .map(|n| (n, ""))
        .chain(staged.network_policies.iter().map(|n| (n, " (staged)")))
    {
        if n.namespace == namespace && n.pod_selector.matches(&p.labels) {
            out.push(format!("NetworkPolicy {}/{}{mark}", n.namespace, n.name));
        }
    }
    out
}

fn service_label(s: &ServiceName) -> String {
    format!("svc/{}/{}:{}", s.namespace, s.name, s.port)
}

/// `Baseline: BaselineAdminNetworkPolicy default rule 0 "deny-everything-else"`.
fn describe(d: &DecidedBy) -> String {
    let mut s = d.tier.clone();
    if let (Some(kind), Some(policy)) = (&d.kind, &d.policy) {
        s.push_str(": ");
        s.push_str(kind);
        s.push(' ');
        if let Some(ns) = &d.namespace {
            s.push_str(ns);
            s.push('/');
        }
        s.push_str(policy);
        if let Some(i) = d.rule_index {
            s.push_str(&format!(" rule {i}"));
        }
        if let Some(rule) = &d.rule {
            s.push_str(&format!(" \"{rule}\""));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_fold_into_the_workload_their_controller_named() {
        for (pod, base) in [
            ("web-7f9c6b8d4-x2k8p", "web"),
            ("db-0", "db"),
            ("node-exporter-hk7wz", "node-exporter"),
            ("batch-28391040-z9vqt", "batch"),
            ("standalone", "standalone"),
            ("-0", "-0"),
        ] {
            assert_eq!(controller_base(pod), base, "{pod}");
        }
    }
}
