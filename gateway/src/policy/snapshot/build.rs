//! Building a snapshot: namespaces first, then the policies in evaluation order (their rules
//! appended to the arena, selectors interned), then the pods with their subject classes.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use chokepoint_config::World;
use chokepoint_config::inventory::{NAMESPACE_NAME_LABEL, NamespaceInfo};
use chokepoint_config::model::{
    ClusterPolicy, DeveloperPolicy, Labels, NetworkPolicyPeer, NetworkPolicyRules, Peer,
    PolicyKind, PortMatch, Rule, Selector,
};

use super::hasher::{IpMap, IpSet};
use super::layout::{
    CompiledClusterPolicy, CompiledDeveloperPolicy, CompiledNetworkPolicy,
    CompiledNetworkPolicyPeer, CompiledNetworkPolicyRule, CompiledPeer, CompiledPort, CompiledRule,
    NOT_SUBJECT, NamespaceSets, PodEntry, RuleArena, Span,
};
use super::subjects::SubjectIndex;
use super::{Options, Snapshot};
use crate::policy::hits::Hits;
use crate::policy::services::ServiceIndex;

impl Snapshot {
    pub(in crate::policy) fn build(
        world: &World,
        options: Options,
        node: Option<&str>,
    ) -> Snapshot {
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

        let mut snapshot = Snapshot {
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
            staged: None,
            hits: Hits::default(),
            installed: None,
        };
        snapshot.hits = Hits::new(&snapshot);
        snapshot
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
        intern(&mut self.selectors, &mut self.rules.selectors, selector)
    }

    fn port_name(&mut self, name: &str) -> u32 {
        intern(&mut self.port_names, &mut self.rules.port_names, name)
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

/// The index of `value` in `list`, appended there on first sight; `ids` remembers them.
fn intern<Q, T>(ids: &mut HashMap<T, u32>, list: &mut Vec<T>, value: &Q) -> u32
where
    Q: ?Sized + Hash + Eq + ToOwned<Owned = T>,
    T: Borrow<Q> + Hash + Eq,
{
    if let Some(&id) = ids.get(value) {
        return id;
    }
    let id = list.len() as u32;
    list.push(value.to_owned());
    ids.insert(value.to_owned(), id);
    id
}

#[cfg(test)]
mod tests {
    use chokepoint_config::{UnknownFields, load_str};

    use super::*;

    const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: Pod
metadata: {namespace: unlisted, name: p, labels: {app: web}}
status: {podIP: 10.0.0.1}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: first}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress:
  - action: Accept
    to: [{namespaces: {matchLabels: {env: prod}}}, {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]
    protocols: [{tcp: {destinationPort: {number: 80}}}, {destinationNamedPort: web}]
  - action: Deny
    to: [{networks: ["10.0.0.0/8", "192.0.2.0/24"]}, {nodes: {matchLabels: {zone: z}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: second}
spec:
  tier: Admin
  priority: 2
  subject: {namespaces: {}}
  egress:
  - action: Accept
    to: [{pods: {namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: web}}}}]
    protocols: [{destinationNamedPort: web}]
---
apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {namespace: b, name: out}
spec:
  subject: {podSelector: {}}
  egress: [{action: Accept, to: [{domainNames: [api.example.com]}]}]
"#;

    fn snapshot() -> Snapshot {
        let loaded = load_str(
            std::path::Path::new("world.yaml"),
            WORLD,
            UnknownFields::Reject,
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Snapshot::compile(&loaded.world, Options::default())
    }

    #[test]
    fn a_policys_rules_and_a_rules_peers_and_ports_are_adjacent_in_the_arena() {
        let s = snapshot();
        let arena = &s.rules;
        let first = arena.of(0);
        assert_eq!(first.len(), 2);
        assert_eq!(arena.of(1).len(), 1);
        // The DeveloperNetworkPolicy's rules come after every cluster policy's.
        assert_eq!(s.developer[0].rules, 2);
        assert_eq!(arena.of(2).len(), 1);

        let accept = first[0];
        assert!(accept.has_ports && !accept.fail_closed);
        assert_eq!((accept.peers.range(), accept.ports.range()), (0..2, 0..2));
        let deny = first[1];
        assert!(!deny.has_ports, "no `protocols`: every protocol and port");
        assert_eq!((deny.peers.range(), deny.ports.range()), (2..4, 2..2));
        let CompiledPeer::Networks(networks) = arena.peers[2] else {
            panic!("{:?}", arena.peers[2]);
        };
        assert_eq!(
            arena.networks[networks.range()],
            [
                "10.0.0.0/8".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap()
            ]
        );
        assert!(matches!(arena.peers[3], CompiledPeer::Nodes(_)));
    }

    #[test]
    fn selectors_port_names_and_namespace_sets_are_interned_once() {
        let s = snapshot();
        let arena = &s.rules;
        // `app: web` (twice) and `zone: z`.
        assert_eq!(arena.selectors.len(), 2);
        assert_eq!(arena.port_names, ["web"]);
        let pods = |i: usize| match arena.peers[i] {
            CompiledPeer::Pods { namespaces, pods } => (namespaces, pods),
            other => panic!("{other:?}"),
        };
        let CompiledPeer::Namespaces(prod) = arena.peers[0] else {
            panic!("{:?}", arena.peers[0]);
        };
        let (every, web) = pods(1);
        let second = arena.of(1)[0].peers.range().start;
        assert_eq!(
            pods(second),
            (prod, web),
            "the same selectors, the same ids"
        );
        assert_ne!(every, prod);
        assert_eq!(arena.domain_names.len(), 1);
        assert!(s.uses_domain_names());
    }

    #[test]
    fn namespace_sets_cover_namespaces_the_inventory_does_not_list() {
        let s = snapshot();
        let CompiledPeer::Namespaces(prod) = s.rules.peers[0] else {
            panic!("{:?}", s.rules.peers[0]);
        };
        let CompiledPeer::Pods {
            namespaces: every, ..
        } = s.rules.peers[1]
        else {
            panic!("{:?}", s.rules.peers[1]);
        };
        let index = |name: &str| s.namespaces.iter().position(|n| n.name == name).unwrap() as u32;
        let (a, b, unlisted) = (index("a"), index("b"), index("unlisted"));
        let sets = &s.namespace_sets;
        assert!(sets.contains(prod, a));
        assert!(!sets.contains(prod, b) && !sets.contains(prod, unlisted));
        assert!([a, b, unlisted].iter().all(|&ns| sets.contains(every, ns)));
        assert!(
            !sets.contains(every, 64) && !sets.contains(99, a),
            "out of range is in no set"
        );
        assert_eq!(
            s.pod_namespace(s.pod_by_ip("10.0.0.1".parse().unwrap()).unwrap())
                .labels
                .get(NAMESPACE_NAME_LABEL)
                .map(String::as_str),
            Some("unlisted"),
            "an unlisted namespace gets its name label"
        );
    }
}
