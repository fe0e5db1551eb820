//! Compiling a world into an immutable, indexed snapshot.
//!
//! The indexes exist so that evaluation cost does not grow with policies that cannot apply:
//! each pod belongs to a *subject class* (its namespace and labels); the ordered lists of
//! cluster policies, DeveloperNetworkPolicies and NetworkPolicies that select a class are
//! computed here, once, using per-namespace and per-label indexes ([`subjects`]). Namespace
//! selectors of peers are precomputed into bitsets over namespaces.
//!
//! The layout ([`layout`]) is chosen for the cache: with 10,000s of policies, evaluation cost
//! is cache misses more than comparisons. Cluster-policy and DeveloperNetworkPolicy rules live
//! in one compact [`RuleArena`] (a policy's rules, a rule's peers and protocol entries are each
//! adjacent, with nothing behind an allocation of its own), namespace sets in one flat bitset
//! array, and the IP maps use a cheap hasher ([`hasher`]).
//!
//! Modules: [`layout`] (the compiled types evaluation reads), [`build`] (world → snapshot),
//! [`subjects`] (which policies select a subject class), [`hasher`] (the IP maps' hasher).

mod build;
mod hasher;
mod layout;
mod subjects;

use std::net::IpAddr;

use chokepoint_config::World;
use chokepoint_config::inventory::{NamespaceInfo, NodeInfo, PodInfo};
use chokepoint_config::model::{ClusterPolicy, DeveloperPolicy, NetworkPolicyRules};

use super::flow::{Decision, PolicyRef};
use super::hits::{Hits, Loaded};
use super::services::ServiceIndex;
use super::staged::Staged;
pub(in crate::policy) use hasher::IpHasher;
use hasher::{IpMap, IpSet};
use layout::{
    CompiledClusterPolicy, CompiledDeveloperPolicy, CompiledNetworkPolicy, NamespaceSets,
    RuleArena, SubjectClass,
};
pub(super) use layout::{
    CompiledNetworkPolicyPeer, CompiledNetworkPolicyRule, CompiledPeer, CompiledPort, CompiledRule,
    NOT_SUBJECT, PodEntry,
};

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
        Options {
            default_decision: Decision::Allow,
            unknown_source_decision: None,
        }
    }
}

/// How much a snapshot holds, for logs and the admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Admin and Baseline cluster policies.
    pub cluster_policies: usize,
    pub developer_policies: usize,
    pub network_policies: usize,
    /// Staged policies of every kind (not in the counts above).
    pub staged_policies: usize,
    pub pods: usize,
}

/// A pod in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodRef(pub u32);

/// The compiled, immutable decision state. Cheap to share (`Arc`), never locked.
#[derive(Debug)]
pub struct Snapshot {
    pub(super) options: Options,
    pub(super) cluster: Vec<CompiledClusterPolicy>,
    /// DeveloperNetworkPolicies, by namespace then name.
    pub(super) developer: Vec<CompiledDeveloperPolicy>,
    pub(super) network: Vec<CompiledNetworkPolicy>,
    pub(super) namespaces: Vec<NamespaceInfo>,
    pub(super) pods: Vec<PodEntry>,
    pub(super) nodes: Vec<NodeInfo>,
    pub(super) classes: Vec<SubjectClass>,
    /// Non-host-network pods by IP, with their subject class (evaluation needs the class
    /// first, and this spares it a load of the pod entry).
    pub(super) pod_by_ip: IpMap<(u32, u32)>,
    /// Node addresses (which host-network pods share).
    pub(super) node_by_ip: IpMap<u32>,
    /// IPs of host-network pods (normally node addresses too): sources that are never subjects.
    pub(super) host_network_ips: IpSet,
    /// IPs that more than one (non-host-network) pod claims, as during IP reuse when the
    /// inventory still lists the old pod; `pod_by_ip` holds the last one listed.
    pub(super) shared_pod_ips: IpSet,
    /// Interned namespace selectors, evaluated against every namespace.
    pub(super) namespace_sets: NamespaceSets,
    /// The rules of the cluster policies and DeveloperNetworkPolicies, in the compact form
    /// evaluation walks.
    pub(super) rules: RuleArena,
    /// ClusterIPs and the ready backends of every Service port.
    pub(super) services: ServiceIndex,
    /// The world as if its staged policies were enforced; `None` when none is staged.
    pub(super) staged: Option<Box<Staged>>,
    /// How often each rule decided a flow (atomics, shared with earlier snapshots for the
    /// policies that did not change).
    pub(super) hits: Hits,
    /// The generation this snapshot was installed as, and when; `None` before that.
    pub(super) installed: Option<Loaded>,
}

impl Snapshot {
    /// Compiles a validated world. Never fails: validation already happened in `config`.
    pub fn compile(world: &World, options: Options) -> Snapshot {
        Self::with_staged(world, options, None)
    }

    /// Compiles a world for the gateway of one node: every pod is a destination, but only the
    /// pods on `node` are subjects (egress of other nodes' pods never reaches this gateway, and
    /// their subject classes are not computed). Traffic from another node's pod is decided as
    /// from an unknown source.
    pub fn compile_for_node(world: &World, options: Options, node: &str) -> Snapshot {
        Self::with_staged(world, options, Some(node))
    }

    /// The enforced policies' snapshot, and beside it, when some policy is staged, the
    /// snapshot as if they were enforced.
    fn with_staged(world: &World, options: Options, node: Option<&str>) -> Snapshot {
        let mut snapshot = Self::build(world, options, node);
        snapshot.staged = Staged::compile(world, &snapshot, options, node).map(Box::new);
        snapshot
    }

    pub fn options(&self) -> Options {
        self.options
    }

    /// The cluster policy (Admin or Baseline) behind a reference.
    pub fn cluster_policy(&self, index: u32) -> Option<&ClusterPolicy> {
        self.cluster.get(index as usize).map(|p| &p.source)
    }

    /// The DeveloperNetworkPolicy behind a reference.
    pub fn developer_policy(&self, index: u32) -> Option<&DeveloperPolicy> {
        self.developer.get(index as usize).map(|p| &p.source)
    }

    /// The NetworkPolicy behind a reference.
    pub fn network_policy(&self, index: u32) -> Option<&NetworkPolicyRules> {
        self.network.get(index as usize).map(|p| &p.source)
    }

    /// The pod that owns `ip` (host-network pods own no IP of their own).
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<PodRef> {
        self.pod_by_ip.get(&ip).map(|&(i, _)| PodRef(i))
    }

    /// Whether more than one pod claims `ip` (then [`pod_by_ip`](Self::pod_by_ip) names only
    /// the last one listed).
    pub fn pod_ip_is_shared(&self, ip: IpAddr) -> bool {
        self.shared_pod_ips.contains(&ip)
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

    /// `cnp/name`, `anp/name`, `banp/name`, `dnp/namespace/name` or `np/namespace/name`.
    pub fn policy_label(&self, policy: PolicyRef) -> String {
        match policy {
            PolicyRef::Cluster(i) => {
                let p = &self.cluster[i as usize].source;
                format!("{}/{}", p.kind.short_name(), p.name)
            }
            PolicyRef::Developer(i) => {
                let p = &self.developer[i as usize].source;
                format!("dnp/{}/{}", p.namespace, p.name)
            }
            PolicyRef::Network(i) => {
                let p = &self.network[i as usize].source;
                format!("np/{}/{}", p.namespace, p.name)
            }
        }
    }

    /// The namespace of the (non-host-network) pod that owns `ip`: whose DNS lookups count
    /// for connections from `ip`.
    pub fn source_namespace(&self, ip: IpAddr) -> Option<&str> {
        let &(pod, _) = self.pod_by_ip.get(&ip.to_canonical())?;
        Some(&self.namespaces[self.pods[pod as usize].namespace as usize].name)
    }

    /// Whether any rule has a `domainNames` peer, staged policies' included. When none has,
    /// flows need no names and the data path skips the name cache.
    pub fn uses_domain_names(&self) -> bool {
        !self.rules.domain_names.is_empty() || self.staged().is_some_and(|s| s.uses_domain_names())
    }

    /// Whether a rule with a `domainNames` peer applies to the pod with this source IP (a
    /// cluster policy or DeveloperNetworkPolicy that selects it has one, staged or enforced;
    /// NetworkPolicies have no names).
    pub fn names_apply_to(&self, src: IpAddr) -> bool {
        if self.staged().is_some_and(|s| s.names_apply_to(src)) {
            return true;
        }
        if self.rules.domain_names.is_empty() {
            return false;
        }
        let Some(&(_, class)) = self
            .pod_by_ip
            .get(&src.to_canonical())
            .filter(|&&(_, class)| class != NOT_SUBJECT)
        else {
            return false;
        };
        let class = &self.classes[class as usize];
        // Arena indices: cluster policies are their own index, developer ones point there.
        let policies = class
            .admin
            .iter()
            .chain(class.baseline.iter())
            .copied()
            .chain(
                class
                    .developer
                    .iter()
                    .map(|&i| self.developer[i as usize].rules),
            );
        policies
            .flat_map(|p| self.rules.of(p))
            .flat_map(|rule| &self.rules.peers[rule.peers.range()])
            .any(|peer| matches!(peer, CompiledPeer::DomainNames(_)))
    }

    /// How many policies of each kind and pods the snapshot holds.
    pub fn counts(&self) -> Counts {
        Counts {
            cluster_policies: self.cluster.len(),
            developer_policies: self.developer.len(),
            network_policies: self.network.len(),
            // The staged snapshot holds the enforced policies and the staged ones.
            staged_policies: self.staged().map_or(0, |s| {
                let all = |s: &Snapshot| s.cluster.len() + s.developer.len() + s.network.len();
                all(s) - all(self)
            }),
            pods: self.pods.len(),
        }
    }
}
