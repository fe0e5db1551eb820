//! Compiling a world into an immutable, indexed snapshot.
//!
//! The indexes exist so that evaluation cost does not grow with policies that cannot apply:
//! each pod belongs to a *subject class* (its namespace and labels); the ordered lists of
//! cluster policies, DeveloperNetworkPolicies and NetworkPolicies that select a class are
//! computed here, once, using
//! per-namespace and per-label indexes. Namespace selectors of peers are precomputed into
//! bitsets over namespaces.
//!
//! The layout is chosen for the cache: with 10,000s of policies, evaluation cost is cache
//! misses more than comparisons. Cluster-policy and DeveloperNetworkPolicy rules live in one
//! compact [`RuleArena`]
//! (a policy's rules, a rule's peers and protocol entries are each adjacent, with nothing
//! behind an allocation of its own), namespace sets in one flat bitset array, and the IP maps
//! use a cheap hasher ([`IpHasher`]).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use chokepoint_config::World;
use chokepoint_config::inventory::{
    ContainerPort, NAMESPACE_NAME_LABEL, NamespaceInfo, NodeInfo, PodInfo,
};
use chokepoint_config::model::{
    Action, ClusterPolicy, DeveloperPolicy, DomainPattern, Labels, NetworkPolicyPeer,
    NetworkPolicyRules, Peer, PolicyKind, PortMatch, PortRange, Protocol, Rule, Selector, Subject,
    Tier,
};
use ipnet::IpNet;

use super::flow::{Decision, PolicyRef};
use super::services::{ServiceIndex, ServiceSet};

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
}

/// The hasher of the IP-keyed maps. Evaluation does up to three lookups per flow and std's
/// SipHash would cost more than the rest of each; the keys are the inventory's own addresses
/// (a flow only looks up, never inserts), so hash flooding is not a concern. An FxHash-style
/// mix with a final avalanche, so that every input bit reaches the bits hashbrown uses.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct IpHasher(u64);

impl IpHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IpHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // murmur3's fmix64.
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        z ^ (z >> 33)
    }
}

pub(super) type IpMap<V> = HashMap<IpAddr, V, BuildHasherDefault<IpHasher>>;
pub(super) type IpSet = HashSet<IpAddr, BuildHasherDefault<IpHasher>>;

#[derive(Debug)]
pub(super) struct PodEntry {
    pub info: PodInfo,
    pub namespace: u32,
}

/// The policies that select one (namespace, labels) class of pods, in evaluation order.
#[derive(Debug, Default)]
pub(super) struct SubjectClass {
    pub admin: Arc<[u32]>,
    pub baseline: Arc<[u32]>,
    /// DeveloperNetworkPolicies that select the class, by name.
    pub developer: Arc<[u32]>,
    /// NetworkPolicies that isolate the class's egress.
    pub network: Arc<[u32]>,
}

/// A cluster policy; its rules are `Snapshot::rules.of(index)`.
#[derive(Debug)]
pub(super) struct CompiledClusterPolicy {
    pub source: ClusterPolicy,
}

/// A DeveloperNetworkPolicy; its rules are `Snapshot::rules.of(rules)`.
#[derive(Debug)]
pub(super) struct CompiledDeveloperPolicy {
    pub source: DeveloperPolicy,
    pub namespace: u32,
    /// The policy's index in the [`RuleArena`].
    pub rules: u32,
}

/// The rules of every cluster policy and DeveloperNetworkPolicy, compact and contiguous.
/// Cluster policies come first (arena index = index in `Snapshot::cluster`), then the
/// DeveloperNetworkPolicies (`CompiledDeveloperPolicy::rules`).
#[derive(Debug, Default)]
pub(super) struct RuleArena {
    /// The rules of arena policy `i` are `rules[bounds[i]..bounds[i + 1]]`.
    bounds: Vec<u32>,
    pub rules: Vec<CompiledRule>,
    pub peers: Vec<CompiledPeer>,
    pub ports: Vec<CompiledPort>,
    pub networks: Vec<IpNet>,
    /// Interned pod and node selectors of peers.
    pub selectors: Vec<Selector>,
    /// Named ports of `protocols` entries.
    pub port_names: Vec<String>,
    pub domain_names: Vec<Vec<DomainPattern>>,
    /// The backends of `services` peers, resolved against the inventory's Services.
    pub service_sets: Vec<ServiceSet>,
}

impl RuleArena {
    /// The rules of arena policy `policy`, in order.
    #[inline]
    pub fn of(&self, policy: u32) -> &[CompiledRule] {
        let i = policy as usize;
        &self.rules[self.bounds[i] as usize..self.bounds[i + 1] as usize]
    }
}

/// A range of one of the [`RuleArena`]'s arrays.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    #[inline]
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CompiledRule {
    pub action: Action,
    /// The rule carried an unknown field: matches nothing (Accept) or everything (Deny/Pass).
    pub fail_closed: bool,
    /// `false`: the rule has no `protocols` (every protocol and port); `true`: `ports` lists
    /// the entries (an empty list matches nothing).
    pub has_ports: bool,
    /// Range of [`RuleArena::ports`].
    pub ports: Span,
    /// Range of [`RuleArena::peers`].
    pub peers: Span,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum CompiledPeer {
    Namespaces(u32),
    /// `pods`: index of [`RuleArena::selectors`].
    Pods {
        namespaces: u32,
        pods: u32,
    },
    /// Index of [`RuleArena::selectors`].
    Nodes(u32),
    /// Range of [`RuleArena::networks`].
    Networks(Span),
    /// Index of [`RuleArena::domain_names`].
    DomainNames(u32),
    /// Index of [`RuleArena::service_sets`].
    Services(u32),
    Unknown,
}

/// A [`PortMatch`], with the name of a named port interned.
#[derive(Debug, Clone, Copy)]
pub(super) enum CompiledPort {
    Port {
        protocol: Protocol,
        ports: PortRange,
    },
    /// Index of [`RuleArena::port_names`].
    Named(u32),
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
    Pods {
        namespaces: u32,
        pods: Option<Selector>,
    },
    IpBlock {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
}

/// Namespace selectors, each evaluated once against every namespace: one bitset per set,
/// all in one array.
#[derive(Debug, Default)]
pub(super) struct NamespaceSets {
    /// Words per set (the namespaces are all known before the first set is made).
    words: usize,
    count: usize,
    bits: Vec<u64>,
}

impl NamespaceSets {
    #[inline]
    pub fn contains(&self, set: u32, namespace: u32) -> bool {
        let i = namespace as usize;
        i / 64 < self.words
            && self
                .bits
                .get(set as usize * self.words + i / 64)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The subject class of a pod that is no subject (it runs on another node): its IP is a
/// destination, never a source this gateway decides for.
pub(super) const NOT_SUBJECT: u32 = u32::MAX;

impl Snapshot {
    /// Compiles a validated world. Never fails: validation already happened in `config`.
    pub fn compile(world: &World, options: Options) -> Snapshot {
        Self::build(world, options, None)
    }

    /// Compiles a world for the gateway of one node: every pod is a destination, but only the
    /// pods on `node` are subjects (egress of other nodes' pods never reaches this gateway, and
    /// their subject classes are not computed). Traffic from another node's pod is decided as
    /// from an unknown source.
    pub fn compile_for_node(world: &World, options: Options, node: &str) -> Snapshot {
        Self::build(world, options, Some(node))
    }

    fn build(world: &World, options: Options, node: Option<&str>) -> Snapshot {
        let mut b = Builder::new(
            &world.inventory.namespaces,
            ServiceIndex::build(&world.inventory),
        );
        // Every namespace must be known before selectors are evaluated against them.
        for ns in world
            .inventory
            .pods
            .iter()
            .map(|p| &p.namespace)
            .chain(world.network_policies.iter().map(|n| &n.namespace))
            .chain(world.developer_policies.iter().map(|d| &d.namespace))
        {
            b.namespace_index(ns);
        }

        let mut policies: Vec<&ClusterPolicy> = world.cluster_policies.iter().collect();
        // Evaluation order inside a tier: priority ascending, ties by name, then kind. A v1alpha1
        // BaselineAdminNetworkPolicy has no priority of its own: it runs after every Baseline
        // ClusterNetworkPolicy, also those at priority 1000 whose names sort after `default`.
        let banp = |p: &ClusterPolicy| p.kind == PolicyKind::BaselineAdminNetworkPolicy;
        policies.sort_by(|a, c| {
            (a.tier, banp(a), a.priority, &a.name, a.kind.short_name()).cmp(&(
                c.tier,
                banp(c),
                c.priority,
                &c.name,
                c.kind.short_name(),
            ))
        });
        let cluster: Vec<CompiledClusterPolicy> =
            policies.iter().map(|p| b.cluster_policy(p)).collect();
        // After every cluster policy: their arena indexes are their positions in `cluster`.
        // By namespace then name, so that the deciding policy does not depend on file order.
        let mut developer_sources: Vec<&DeveloperPolicy> =
            world.developer_policies.iter().collect();
        developer_sources.sort_by(|a, c| (&a.namespace, &a.name).cmp(&(&c.namespace, &c.name)));
        let developer: Vec<CompiledDeveloperPolicy> = developer_sources
            .iter()
            .map(|p| b.developer_policy(p))
            .collect();
        let network: Vec<CompiledNetworkPolicy> = world
            .network_policies
            .iter()
            .map(|np| b.network_policy(np))
            .collect();

        let mut pod_by_ip = IpMap::default();
        let mut host_network_ips = IpSet::default();
        let mut shared_pod_ips = IpSet::default();
        let mut pods = Vec::with_capacity(world.inventory.pods.len());
        let mut class_of: HashMap<(u32, &Labels), u32> = HashMap::new();
        let mut class_keys: Vec<(u32, &Labels)> = Vec::new();
        for (i, pod) in world.inventory.pods.iter().enumerate() {
            let namespace = b.namespace_index(&pod.namespace);
            let subject = node.is_none_or(|n| pod.node_name.as_deref() == Some(n));
            let class = if subject {
                *class_of.entry((namespace, &pod.labels)).or_insert_with(|| {
                    class_keys.push((namespace, &pod.labels));
                    (class_keys.len() - 1) as u32
                })
            } else {
                NOT_SUBJECT
            };
            for ip in &pod.ips {
                if pod.host_network {
                    host_network_ips.insert(*ip);
                } else if pod_by_ip.insert(*ip, (i as u32, class)).is_some() {
                    shared_pod_ips.insert(*ip);
                }
            }
            pods.push(PodEntry {
                info: pod.clone(),
                namespace,
            });
        }

        let subject_index = SubjectIndex::new(&cluster, &developer, &network, &b.namespaces);
        let classes = class_keys
            .iter()
            .map(|&(ns, labels)| {
                subject_index.class(
                    &cluster,
                    &developer,
                    &network,
                    &b.namespaces[ns as usize],
                    ns,
                    labels,
                )
            })
            .collect();

        let mut node_by_ip = IpMap::default();
        for (i, node) in world.inventory.nodes.iter().enumerate() {
            for ip in &node.addresses {
                node_by_ip.insert(*ip, i as u32);
            }
        }

        Snapshot {
            options,
            cluster,
            developer,
            network,
            namespaces: b.namespaces,
            pods,
            nodes: world.inventory.nodes.clone(),
            classes,
            pod_by_ip,
            node_by_ip,
            host_network_ips,
            shared_pod_ips,
            namespace_sets: b.namespace_sets,
            rules: b.rules,
            services: b.services,
        }
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

    /// How many DeveloperNetworkPolicies the snapshot holds.
    pub fn developer_policy_count(&self) -> usize {
        self.developer.len()
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

    /// Whether any rule has a `domainNames` peer. When none has, flows need no names and the
    /// data path skips the name cache.
    pub fn uses_domain_names(&self) -> bool {
        !self.rules.domain_names.is_empty()
    }

    /// How many cluster policies, NetworkPolicies and pods the snapshot holds.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.cluster.len(), self.network.len(), self.pods.len())
    }
}

impl PodEntry {
    pub fn named_port(&self, name: &str) -> impl Iterator<Item = &ContainerPort> {
        self.info
            .ports
            .iter()
            .filter(move |p| p.name.as_deref() == Some(name))
    }
}

struct Builder {
    namespaces: Vec<NamespaceInfo>,
    namespace_by_name: HashMap<String, u32>,
    namespace_sets: NamespaceSets,
    interned: HashMap<Selector, u32>,
    rules: RuleArena,
    selectors: HashMap<Selector, u32>,
    port_names: HashMap<String, u32>,
    /// Built first: `services` peers resolve against it.
    services: ServiceIndex,
}

impl Builder {
    fn new(namespaces: &[NamespaceInfo], services: ServiceIndex) -> Self {
        let mut b = Builder {
            namespaces: Vec::new(),
            namespace_by_name: HashMap::new(),
            namespace_sets: NamespaceSets::default(),
            interned: HashMap::new(),
            rules: RuleArena {
                bounds: vec![0],
                ..RuleArena::default()
            },
            selectors: HashMap::new(),
            port_names: HashMap::new(),
            services,
        };
        for ns in namespaces {
            if !b.namespace_by_name.contains_key(&ns.name) {
                b.namespace_by_name
                    .insert(ns.name.clone(), b.namespaces.len() as u32);
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
        assert!(
            self.namespace_sets.is_empty(),
            "namespaces are all known before selectors are interned"
        );
        let i = self.namespaces.len() as u32;
        self.namespaces
            .push(NamespaceInfo::new(name, Labels::new()));
        self.namespace_by_name.insert(name.to_owned(), i);
        i
    }

    fn namespace_set(&mut self, selector: &Selector) -> u32 {
        if let Some(&id) = self.interned.get(selector) {
            return id;
        }
        let sets = &mut self.namespace_sets;
        if sets.words == 0 {
            sets.words = self.namespaces.len().div_ceil(64);
        }
        let id = sets.count as u32;
        sets.count += 1;
        let base = sets.bits.len();
        sets.bits.resize(base + sets.words, 0);
        for (i, ns) in self.namespaces.iter().enumerate() {
            if selector.matches(&ns.labels) {
                sets.bits[base + i / 64] |= 1 << (i % 64);
            }
        }
        self.interned.insert(selector.clone(), id);
        id
    }

    /// Appends the policy's rules to the arena: call it for the policies in the order of
    /// `Snapshot::cluster`, whose indexes `RuleArena::of` takes.
    fn cluster_policy(&mut self, p: &ClusterPolicy) -> CompiledClusterPolicy {
        self.rules(&p.egress);
        CompiledClusterPolicy { source: p.clone() }
    }

    /// Appends the policy's rules to the arena, after every cluster policy's.
    fn developer_policy(&mut self, p: &DeveloperPolicy) -> CompiledDeveloperPolicy {
        CompiledDeveloperPolicy {
            source: p.clone(),
            namespace: self.namespace_by_name[&p.namespace],
            rules: self.rules(&p.egress),
        }
    }

    /// Appends one policy's rules to the arena; returns the policy's arena index.
    fn rules(&mut self, egress: &[Rule]) -> u32 {
        for r in egress {
            let start = self.rules.ports.len() as u32;
            for m in r.protocols.iter().flatten() {
                let port = match m {
                    PortMatch::Port { protocol, ports } => CompiledPort::Port {
                        protocol: *protocol,
                        ports: *ports,
                    },
                    PortMatch::Named(name) => CompiledPort::Named(self.port_name(name)),
                    PortMatch::Unknown => CompiledPort::Unknown,
                };
                self.rules.ports.push(port);
            }
            let ports = Span {
                start,
                end: self.rules.ports.len() as u32,
            };
            // Into a temporary first: compiling a peer appends to the other arrays (networks,
            // selectors), never to `peers`, so the rule's peers stay adjacent.
            let peers: Vec<CompiledPeer> = r.peers.iter().map(|peer| self.peer(peer)).collect();
            let start = self.rules.peers.len() as u32;
            self.rules.peers.extend(peers);
            let peers = Span {
                start,
                end: self.rules.peers.len() as u32,
            };
            self.rules.rules.push(CompiledRule {
                action: r.action,
                fail_closed: r.unknown_fields,
                has_ports: r.protocols.is_some(),
                ports,
                peers,
            });
        }
        self.rules.bounds.push(self.rules.rules.len() as u32);
        (self.rules.bounds.len() - 2) as u32
    }

    fn peer(&mut self, peer: &Peer) -> CompiledPeer {
        match peer {
            Peer::Namespaces(s) => CompiledPeer::Namespaces(self.namespace_set(s)),
            Peer::Pods { namespaces, pods } => CompiledPeer::Pods {
                namespaces: self.namespace_set(namespaces),
                pods: self.selector(pods),
            },
            Peer::Nodes(s) => CompiledPeer::Nodes(self.selector(s)),
            Peer::Networks(n) => {
                let start = self.rules.networks.len() as u32;
                self.rules.networks.extend_from_slice(n);
                CompiledPeer::Networks(Span {
                    start,
                    end: self.rules.networks.len() as u32,
                })
            }
            Peer::DomainNames(d) => {
                self.rules.domain_names.push(d.clone());
                CompiledPeer::DomainNames(self.rules.domain_names.len() as u32 - 1)
            }
            Peer::Services(list) => {
                self.rules.service_sets.push(self.services.peer_set(list));
                CompiledPeer::Services(self.rules.service_sets.len() as u32 - 1)
            }
            Peer::Unknown => CompiledPeer::Unknown,
        }
    }

    fn selector(&mut self, selector: &Selector) -> u32 {
        if let Some(&id) = self.selectors.get(selector) {
            return id;
        }
        let id = self.rules.selectors.len() as u32;
        self.rules.selectors.push(selector.clone());
        self.selectors.insert(selector.clone(), id);
        id
    }

    fn port_name(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.port_names.get(name) {
            return id;
        }
        let id = self.rules.port_names.len() as u32;
        self.rules.port_names.push(name.to_owned());
        self.port_names.insert(name.to_owned(), id);
        id
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
                        NetworkPolicyPeer::Pods { namespaces, pods } => {
                            CompiledNetworkPolicyPeer::Pods {
                                namespaces: self.namespace_set(namespaces.as_ref().unwrap_or(&own)),
                                pods: pods.clone().filter(|s| !s.is_everything()),
                            }
                        }
                        NetworkPolicyPeer::IpBlock { cidr, except } => {
                            CompiledNetworkPolicyPeer::IpBlock {
                                cidr: *cidr,
                                except: except.clone(),
                            }
                        }
                    })
                    .collect(),
                ports: r.ports.clone(),
            })
            .collect();
        let namespace = self.namespace_by_name[&np.namespace];
        CompiledNetworkPolicy {
            source: np.clone(),
            namespace,
            rules,
        }
    }
}

/// Finds the cluster policies that may select a class without testing every policy.
struct SubjectIndex {
    /// Policies whose subject names no namespace or label we can index on.
    everywhere: Vec<u32>,
    by_namespace: HashMap<u32, Vec<u32>>,
    by_namespace_label: HashMap<(String, String), Vec<u32>>,
    by_pod_label: HashMap<(String, String), Vec<u32>>,
    /// DeveloperNetworkPolicies, by namespace (in `Snapshot::developer` order).
    developer_by_namespace: HashMap<u32, Vec<u32>>,
    /// NetworkPolicies that isolate egress, by namespace.
    network_by_namespace: HashMap<u32, Vec<u32>>,
}

impl SubjectIndex {
    fn new(
        cluster: &[CompiledClusterPolicy],
        developer: &[CompiledDeveloperPolicy],
        network: &[CompiledNetworkPolicy],
        namespaces: &[NamespaceInfo],
    ) -> Self {
        let mut ix = SubjectIndex {
            everywhere: Vec::new(),
            by_namespace: HashMap::new(),
            by_namespace_label: HashMap::new(),
            by_pod_label: HashMap::new(),
            developer_by_namespace: HashMap::new(),
            network_by_namespace: HashMap::new(),
        };
        for (i, p) in developer.iter().enumerate() {
            ix.developer_by_namespace
                .entry(p.namespace)
                .or_default()
                .push(i as u32);
        }
        for (i, np) in network.iter().enumerate() {
            if np.source.egress.is_some() {
                ix.network_by_namespace
                    .entry(np.namespace)
                    .or_default()
                    .push(i as u32);
            }
        }
        let ns_index: HashMap<&str, u32> = namespaces
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i as u32))
            .collect();
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
                    ix.by_namespace_label
                        .entry((k.into(), v.into()))
                        .or_default()
                        .push(i);
                }
            } else if let Some((k, v)) = pod_sel.and_then(|s| s.required_pairs().next()) {
                ix.by_pod_label
                    .entry((k.into(), v.into()))
                    .or_default()
                    .push(i);
            } else {
                ix.everywhere.push(i);
            }
        }
        ix
    }

    fn class(
        &self,
        cluster: &[CompiledClusterPolicy],
        developer: &[CompiledDeveloperPolicy],
        network: &[CompiledNetworkPolicy],
        namespace: &NamespaceInfo,
        ns: u32,
        labels: &Labels,
    ) -> SubjectClass {
        let mut candidates: Vec<u32> = self.everywhere.clone();
        candidates.extend(self.by_namespace.get(&ns).into_iter().flatten());
        for (k, v) in &namespace.labels {
            candidates.extend(
                self.by_namespace_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten(),
            );
        }
        for (k, v) in labels {
            candidates.extend(
                self.by_pod_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten(),
            );
        }
        // Indices are positions in evaluation order, so sorting restores that order.
        candidates.sort_unstable();
        candidates.dedup();
        let selects = |p: &ClusterPolicy| match &p.subject {
            Subject::Namespaces(s) => s.matches(&namespace.labels),
            Subject::Pods { namespaces, pods } => {
                namespaces.matches(&namespace.labels) && pods.matches(labels)
            }
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
        let developer: Vec<u32> = self
            .developer_by_namespace
            .get(&ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| developer[i as usize].source.pod_selector.matches(labels))
            .collect();
        let network: Vec<u32> = self
            .network_by_namespace
            .get(&ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| network[i as usize].source.pod_selector.matches(labels))
            .collect();
        SubjectClass {
            admin: admin.into(),
            baseline: baseline.into(),
            developer: developer.into(),
            network: network.into(),
        }
    }
}
