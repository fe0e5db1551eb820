//! Compiling a world into an immutable, indexed snapshot.
//!
//! The indexes exist so that evaluation cost does not grow with policies that cannot apply:
//! each pod belongs to a *subject class* (its namespace and labels); the ordered lists of
//! cluster policies and NetworkPolicies that select a class are computed here, once, using
//! per-namespace and per-label indexes. Namespace selectors of peers are precomputed into
//! bitsets over namespaces.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use chokepoint_config::World;
use chokepoint_config::inventory::{ContainerPort, NAMESPACE_NAME_LABEL, NamespaceInfo, NodeInfo, PodInfo};
use chokepoint_config::model::{
    Action, ClusterPolicy, Labels, NetworkPolicyPeer, NetworkPolicyRules, Peer, PolicyKind,
    PortMatch, Selector, Subject, Tier,
};
use ipnet::IpNet;

use super::flow::{Decision, PolicyRef};

/// Settings that are not part of the declared world.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// What happens when no tier decides (allow by default; deny for locked-down nodes).
    pub default_decision: Decision,
    /// What happens to a source IP that is no known pod; `None`: the default decision. The
    /// gateway denies them (a pod the inventory does not know yet must not slip through).
    pub unknown_source_decision: Option<Decision>,
}

impl Default for Options {
    fn default() -> Self {
        Options { default_decision: Decision::Allow, unknown_source_decision: None }
    }
}

/// A pod in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodRef(pub u32);

/// The compiled, immutable decision state. Cheap to share (`Arc`), never locked.
#[derive(Debug)]
pub struct Snapshot {
    pub(super) options: Options,
    pub(super) cluster: Vec<CompiledClusterPolicy>,
    pub(super) network: Vec<CompiledNetworkPolicy>,
    pub(super) namespaces: Vec<NamespaceInfo>,
    pub(super) pods: Vec<PodEntry>,
    pub(super) nodes: Vec<NodeInfo>,
    pub(super) classes: Vec<SubjectClass>,
    /// Non-host-network pods by IP.
    pub(super) pod_by_ip: HashMap<IpAddr, u32>,
    /// Node addresses (which host-network pods share).
    pub(super) node_by_ip: HashMap<IpAddr, u32>,
    /// IPs of host-network pods (normally node addresses too): sources that are never subjects.
    pub(super) host_network_ips: HashSet<IpAddr>,
    /// Interned namespace selectors, evaluated against every namespace.
    pub(super) namespace_sets: Vec<NamespaceSet>,
}

#[derive(Debug)]
pub(super) struct PodEntry {
    pub info: PodInfo,
    pub namespace: u32,
    pub class: u32,
}

/// The policies that select one (namespace, labels) class of pods, in evaluation order.
#[derive(Debug, Default)]
pub(super) struct SubjectClass {
    pub admin: Arc<[u32]>,
    pub baseline: Arc<[u32]>,
    /// NetworkPolicies that isolate the class's egress.
    pub network: Arc<[u32]>,
}

#[derive(Debug)]
pub(super) struct CompiledClusterPolicy {
    pub source: ClusterPolicy,
    pub rules: Vec<CompiledRule>,
}

#[derive(Debug)]
pub(super) struct CompiledRule {
    pub action: Action,
    /// The rule carried an unknown field: matches nothing (Accept) or everything (Deny/Pass).
    pub fail_closed: bool,
    pub peers: Vec<CompiledPeer>,
    pub ports: Option<Vec<PortMatch>>,
}

#[derive(Debug)]
pub(super) enum CompiledPeer {
    Namespaces(u32),
    Pods { namespaces: u32, pods: Selector },
    Nodes(Selector),
    Networks(Vec<IpNet>),
    DomainNames(Vec<chokepoint_config::model::DomainPattern>),
    Unknown,
}

#[derive(Debug)]
pub(super) struct CompiledNetworkPolicy {
    pub source: NetworkPolicyRules,
    pub namespace: u32,
    pub rules: Vec<CompiledNetworkPolicyRule>,
}

#[derive(Debug)]
pub(super) struct CompiledNetworkPolicyRule {
    pub peers: Vec<CompiledNetworkPolicyPeer>,
    pub ports: Vec<chokepoint_config::model::NetworkPolicyPort>,
}

#[derive(Debug)]
pub(super) enum CompiledNetworkPolicyPeer {
    /// `namespaces`: an interned namespace set; `pods: None` = every pod.
    Pods { namespaces: u32, pods: Option<Selector> },
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
}

/// A namespace selector, evaluated once against every namespace.
#[derive(Debug)]
pub(super) struct NamespaceSet {
    bits: Vec<u64>,
}

impl NamespaceSet {
    #[inline]
    pub fn contains(&self, namespace: u32) -> bool {
        let i = namespace as usize;
        self.bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

impl Snapshot {
    /// Compiles a validated world. Never fails: validation already happened in `config`.
    pub fn compile(world: &World, options: Options) -> Snapshot {
        let mut b = Builder::new(&world.inventory.namespaces);
        // Every namespace must be known before selectors are evaluated against them.
        for ns in world.inventory.pods.iter().map(|p| &p.namespace).chain(world.network_policies.iter().map(|n| &n.namespace)) {
            b.namespace_index(ns);
        }

        let mut policies: Vec<&ClusterPolicy> = world.cluster_policies.iter().collect();
        // Evaluation order inside a tier: priority ascending, ties by name, then kind. A v1alpha1
        // BaselineAdminNetworkPolicy has no priority of its own: it runs after every Baseline
        // ClusterNetworkPolicy, also those at priority 1000 whose names sort after `default`.
        let banp = |p: &ClusterPolicy| p.kind == PolicyKind::BaselineAdminNetworkPolicy;
        policies.sort_by(|a, c| {
            (a.tier, banp(a), a.priority, &a.name, a.kind.short_name())
                .cmp(&(c.tier, banp(c), c.priority, &c.name, c.kind.short_name()))
        });
        let cluster: Vec<CompiledClusterPolicy> = policies.iter().map(|p| b.cluster_policy(p)).collect();
        let network: Vec<CompiledNetworkPolicy> = world.network_policies.iter().map(|np| b.network_policy(np)).collect();

        let mut pod_by_ip = HashMap::new();
        let mut host_network_ips = HashSet::new();
        let mut pods = Vec::with_capacity(world.inventory.pods.len());
        let mut class_of: HashMap<(u32, &Labels), u32> = HashMap::new();
        let mut class_keys: Vec<(u32, &Labels)> = Vec::new();
        for (i, pod) in world.inventory.pods.iter().enumerate() {
            let namespace = b.namespace_index(&pod.namespace);
            let class = *class_of.entry((namespace, &pod.labels)).or_insert_with(|| {
                class_keys.push((namespace, &pod.labels));
                (class_keys.len() - 1) as u32
            });
            for ip in &pod.ips {
                if pod.host_network {
                    host_network_ips.insert(*ip);
                } else {
                    pod_by_ip.insert(*ip, i as u32);
                }
            }
            pods.push(PodEntry { info: pod.clone(), namespace, class });
        }

        let subject_index = SubjectIndex::new(&cluster, &network, &b.namespaces);
        let classes = class_keys
            .iter()
            .map(|&(ns, labels)| subject_index.class(&cluster, &network, &b.namespaces[ns as usize], ns, labels))
            .collect();

        let mut node_by_ip = HashMap::new();
        for (i, node) in world.inventory.nodes.iter().enumerate() {
            for ip in &node.addresses {
                node_by_ip.insert(*ip, i as u32);
            }
        }

        Snapshot {
            options,
            cluster,
            network,
            namespaces: b.namespaces,
            pods,
            nodes: world.inventory.nodes.clone(),
            classes,
            pod_by_ip,
            node_by_ip,
            host_network_ips,
            namespace_sets: b.namespace_sets,
        }
    }

    pub fn options(&self) -> Options {
        self.options
    }

    /// The cluster policy (Admin or Baseline) behind a reference.
    pub fn cluster_policy(&self, index: u32) -> Option<&ClusterPolicy> {
        self.cluster.get(index as usize).map(|p| &p.source)
    }

    /// The NetworkPolicy behind a reference.
    pub fn network_policy(&self, index: u32) -> Option<&NetworkPolicyRules> {
        self.network.get(index as usize).map(|p| &p.source)
    }

    /// The pod that owns `ip` (host-network pods own no IP of their own).
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<PodRef> {
        self.pod_by_ip.get(&ip).map(|&i| PodRef(i))
    }

    /// A pod by namespace and name.
    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<PodRef> {
        self.pods
            .iter()
            .position(|p| p.info.namespace == namespace && p.info.name == name)
            .map(|i| PodRef(i as u32))
    }

    /// The namespace a pod lives in, with its labels.
    pub fn pod_namespace(&self, pod: PodRef) -> &NamespaceInfo {
        &self.namespaces[self.pods[pod.0 as usize].namespace as usize]
    }

    /// True for node addresses and host-network pod IPs: sources that are never subjects.
    pub fn is_host_network(&self, ip: IpAddr) -> bool {
        self.node_by_ip.contains_key(&ip) || self.host_network_ips.contains(&ip)
    }

    pub fn pod(&self, pod: PodRef) -> &PodInfo {
        &self.pods[pod.0 as usize].info
    }

    /// The node that owns `ip` among its `status.addresses`.
    pub fn node_by_ip(&self, ip: IpAddr) -> Option<&NodeInfo> {
        self.node_by_ip.get(&ip).map(|&i| &self.nodes[i as usize])
    }

    /// `cnp/name`, `anp/name`, `banp/name` or `np/namespace/name`.
    pub fn policy_label(&self, policy: PolicyRef) -> String {
        match policy {
            PolicyRef::Cluster(i) => {
                let p = &self.cluster[i as usize].source;
                format!("{}/{}", p.kind.short_name(), p.name)
            }
            PolicyRef::Network(i) => {
                let p = &self.network[i as usize].source;
                format!("np/{}/{}", p.namespace, p.name)
            }
        }
    }

    /// How many cluster policies, NetworkPolicies and pods the snapshot holds.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.cluster.len(), self.network.len(), self.pods.len())
    }
}

impl PodEntry {
    pub fn named_port(&self, name: &str) -> impl Iterator<Item = &ContainerPort> {
        self.info.ports.iter().filter(move |p| p.name.as_deref() == Some(name))
    }
}

struct Builder {
    namespaces: Vec<NamespaceInfo>,
    namespace_by_name: HashMap<String, u32>,
    namespace_sets: Vec<NamespaceSet>,
    interned: HashMap<Selector, u32>,
}

impl Builder {
    fn new(namespaces: &[NamespaceInfo]) -> Self {
        let mut b = Builder {
            namespaces: Vec::new(),
            namespace_by_name: HashMap::new(),
            namespace_sets: Vec::new(),
            interned: HashMap::new(),
        };
        for ns in namespaces {
            if !b.namespace_by_name.contains_key(&ns.name) {
                b.namespace_by_name.insert(ns.name.clone(), b.namespaces.len() as u32);
                b.namespaces.push(ns.clone());
            }
        }
        b
    }

    /// The index of a namespace; one that the inventory does not list gets only its name label.
    fn namespace_index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.namespace_by_name.get(name) {
            return i;
        }
        assert!(self.namespace_sets.is_empty(), "namespaces are all known before selectors are interned");
        let i = self.namespaces.len() as u32;
        self.namespaces.push(NamespaceInfo::new(name, Labels::new()));
        self.namespace_by_name.insert(name.to_owned(), i);
        i
    }

    fn namespace_set(&mut self, selector: &Selector) -> u32 {
        if let Some(&id) = self.interned.get(selector) {
            return id;
        }
        let mut bits = vec![0u64; self.namespaces.len().div_ceil(64)];
        for (i, ns) in self.namespaces.iter().enumerate() {
            if selector.matches(&ns.labels) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        let id = self.namespace_sets.len() as u32;
        self.namespace_sets.push(NamespaceSet { bits });
        self.interned.insert(selector.clone(), id);
        id
    }

    fn cluster_policy(&mut self, p: &ClusterPolicy) -> CompiledClusterPolicy {
        let rules = p
            .egress
            .iter()
            .map(|r| CompiledRule {
                action: r.action,
                fail_closed: r.unknown_fields,
                peers: r.peers.iter().map(|peer| self.peer(peer)).collect(),
                ports: r.protocols.clone(),
            })
            .collect();
        CompiledClusterPolicy { source: p.clone(), rules }
    }

    fn peer(&mut self, peer: &Peer) -> CompiledPeer {
        match peer {
            Peer::Namespaces(s) => CompiledPeer::Namespaces(self.namespace_set(s)),
            Peer::Pods { namespaces, pods } => {
                CompiledPeer::Pods { namespaces: self.namespace_set(namespaces), pods: pods.clone() }
            }
            Peer::Nodes(s) => CompiledPeer::Nodes(s.clone()),
            Peer::Networks(n) => CompiledPeer::Networks(n.clone()),
            Peer::DomainNames(d) => CompiledPeer::DomainNames(d.clone()),
            Peer::Unknown => CompiledPeer::Unknown,
        }
    }

    fn network_policy(&mut self, np: &NetworkPolicyRules) -> CompiledNetworkPolicy {
        let own = Selector::equals(NAMESPACE_NAME_LABEL, &np.namespace);
        let rules = np
            .egress
            .iter()
            .flatten()
            .map(|r| CompiledNetworkPolicyRule {
                peers: r
                    .peers
                    .iter()
                    .map(|peer| match peer {
                        NetworkPolicyPeer::Pods { namespaces, pods } => CompiledNetworkPolicyPeer::Pods {
                            namespaces: self.namespace_set(namespaces.as_ref().unwrap_or(&own)),
                            pods: pods.clone().filter(|s| !s.is_everything()),
                        },
                        NetworkPolicyPeer::IpBlock { cidr, except } => {
                            CompiledNetworkPolicyPeer::IpBlock { cidr: *cidr, except: except.clone() }
                        }
                    })
                    .collect(),
                ports: r.ports.clone(),
            })
            .collect();
        let namespace = self.namespace_by_name[&np.namespace];
        CompiledNetworkPolicy { source: np.clone(), namespace, rules }
    }
}

/// Finds the cluster policies that may select a class without testing every policy.
struct SubjectIndex {
    /// Policies whose subject names no namespace or label we can index on.
    everywhere: Vec<u32>,
    by_namespace: HashMap<u32, Vec<u32>>,
    by_namespace_label: HashMap<(String, String), Vec<u32>>,
    by_pod_label: HashMap<(String, String), Vec<u32>>,
    /// NetworkPolicies that isolate egress, by namespace.
    network_by_namespace: HashMap<u32, Vec<u32>>,
}

impl SubjectIndex {
    fn new(cluster: &[CompiledClusterPolicy], network: &[CompiledNetworkPolicy], namespaces: &[NamespaceInfo]) -> Self {
        let mut ix = SubjectIndex {
            everywhere: Vec::new(),
            by_namespace: HashMap::new(),
            by_namespace_label: HashMap::new(),
            by_pod_label: HashMap::new(),
            network_by_namespace: HashMap::new(),
        };
        for (i, np) in network.iter().enumerate() {
            if np.source.egress.is_some() {
                ix.network_by_namespace.entry(np.namespace).or_default().push(i as u32);
            }
        }
        let ns_index: HashMap<&str, u32> =
            namespaces.iter().enumerate().map(|(i, n)| (n.name.as_str(), i as u32)).collect();
        for (i, p) in cluster.iter().enumerate() {
            let i = i as u32;
            let (ns_sel, pod_sel) = match &p.source.subject {
                Subject::Namespaces(s) => (s, None),
                Subject::Pods { namespaces, pods } => (namespaces, Some(pods)),
            };
            if let Some((k, v)) = ns_sel.required_pairs().next() {
                if k == NAMESPACE_NAME_LABEL {
                    // A namespace that does not exist selects nothing: no entry at all.
                    if let Some(&ns) = ns_index.get(v) {
                        ix.by_namespace.entry(ns).or_default().push(i);
                    }
                } else {
                    ix.by_namespace_label.entry((k.into(), v.into())).or_default().push(i);
                }
            } else if let Some((k, v)) = pod_sel.and_then(|s| s.required_pairs().next()) {
                ix.by_pod_label.entry((k.into(), v.into())).or_default().push(i);
            } else {
                ix.everywhere.push(i);
            }
        }
        ix
    }

    fn class(
        &self,
        cluster: &[CompiledClusterPolicy],
        network: &[CompiledNetworkPolicy],
        namespace: &NamespaceInfo,
        ns: u32,
        labels: &Labels,
    ) -> SubjectClass {
        let mut candidates: Vec<u32> = self.everywhere.clone();
        candidates.extend(self.by_namespace.get(&ns).into_iter().flatten());
        for (k, v) in &namespace.labels {
            candidates.extend(self.by_namespace_label.get(&(k.clone(), v.clone())).into_iter().flatten());
        }
        for (k, v) in labels {
            candidates.extend(self.by_pod_label.get(&(k.clone(), v.clone())).into_iter().flatten());
        }
        // Indices are positions in evaluation order, so sorting restores that order.
        candidates.sort_unstable();
        candidates.dedup();
        let selects = |p: &ClusterPolicy| match &p.subject {
            Subject::Namespaces(s) => s.matches(&namespace.labels),
            Subject::Pods { namespaces, pods } => namespaces.matches(&namespace.labels) && pods.matches(labels),
        };
        let (mut admin, mut baseline) = (Vec::new(), Vec::new());
        for i in candidates {
            let p = &cluster[i as usize].source;
            if selects(p) {
                match p.tier {
                    Tier::Admin => admin.push(i),
                    Tier::Baseline => baseline.push(i),
                }
            }
        }
        let network: Vec<u32> = self
            .network_by_namespace
            .get(&ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| network[i as usize].source.pod_selector.matches(labels))
            .collect();
        SubjectClass { admin: admin.into(), baseline: baseline.into(), network: network.into() }
    }
}
