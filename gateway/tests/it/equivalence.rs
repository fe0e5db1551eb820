//! The compiled, indexed engine against the naive reference evaluator (`reference/`), on
//! random small worlds and random flows.
//!
//! Worlds are drawn from small alphabets (two label keys, two values, a handful of
//! addresses, priorities and names) so that selectors, CIDRs, named ports, priority ties and
//! Pass chains collide often. `PROPTEST_CASES` sets the number of worlds (default 10 000);
//! each world is asked [`FLOWS`] flows.

use std::net::IpAddr;

use chokepoint::policy::{Decision, Flow, Options, Outcome, Reason, Snapshot, TierName};
use chokepoint_config::World;
use chokepoint_config::inventory::{
    AddressType, ContainerPort, EndpointInfo, EndpointPort, EndpointSliceInfo, Inventory,
    NAMESPACE_NAME_LABEL, NamespaceInfo, NodeInfo, PodInfo, ServiceInfo, ServicePort, ServiceType,
    TargetPort,
};
use chokepoint_config::model::{
    Action, ClusterPolicy, DeveloperPolicy, DomainPattern, Labels, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicyPortSpec, NetworkPolicyRule, NetworkPolicyRules, Origin, Peer,
    PolicyKind, PortMatch, PortRange, Protocol, Requirement, Rule, Selector, ServicePeer, Subject,
    Tier,
};
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

use crate::common::{StepView, Want, steps};
use crate::reference::Reference;

/// Flows asked of each generated world.
const FLOWS: usize = 8;

const KEYS: &[&str] = &["k1", "k2"];
const VALUES: &[&str] = &["v1", "v2"];
const NAMESPACES: &[&str] = &["ns0", "ns1", "ns2", "ns3"];
const POLICY_NAMES: &[&str] = &["a", "b", "c", "default"];
const PRIORITIES: &[u32] = &[0, 1, 5, 5, 10, 1000];
const PORT_NAMES: &[&str] = &["web", "dns", "dns-tcp", "metrics", "nope"];
const FLOW_PORTS: &[u16] = &[53, 80, 443, 1000, 5353, 8000, 8080, 8100, 8101, 9090];
const RANGES: &[(u16, u16)] = &[(50, 60), (79, 81), (1, 65535), (8000, 8100), (440, 450)];
const CIDRS: &[&str] = &[
    "0.0.0.0/0",
    "::/0",
    "10.0.0.0/8",
    "10.0.0.0/29",
    "10.0.0.8/29",
    "10.0.0.4/30",
    "10.0.0.5/32",
    "fd00::/64",
    "fd00::/125",
    "fd00::8/125",
    "172.16.0.0/24",
    "172.16.0.2/32",
    "fd01::/64",
    "192.0.2.0/24",
    "192.0.2.128/25",
    "203.0.113.0/24",
    "2001:db8::/32",
];
const IP_BLOCKS: &[(&str, &[&str])] = &[
    ("10.0.0.0/8", &["10.0.0.0/29"]),
    ("10.0.0.0/28", &[]),
    ("0.0.0.0/0", &["10.0.0.0/8", "172.16.0.0/16"]),
    ("::/0", &["fd00::/64"]),
    ("fd00::/64", &["fd00::8/125", "fd00::4/126"]),
    ("192.0.2.0/24", &["192.0.2.128/25"]),
    ("172.16.0.0/16", &[]),
    ("203.0.113.0/24", &[]),
];
const PATTERNS: &[&str] = &[
    "api.example.com",
    "*.example.com",
    "*.api.example.com",
    "Example.COM.",
];
const NAMES: &[&str] = &[
    "api.example.com",
    "www.api.example.com",
    "API.EXAMPLE.COM.",
    "example.com",
    "other.org",
    "x.y.example.com",
];
const SERVICE_NAMES: &[&str] = &["svc-a", "svc-b"];
/// Services live in the first two namespaces only, so that `services` peers often find one.
const SERVICE_NAMESPACES: &[&str] = &["ns0", "ns1"];
/// Service port names `services` peers ask for ("nope" is no Service's).
const SERVICE_PORT_NAMES: &[&str] = &["web", "dns", "metrics", "nope"];
/// Addresses no pod or node has.
const OUTSIDE: &[&str] = &[
    "192.0.2.10",
    "192.0.2.200",
    "198.51.100.1",
    "2001:db8::5",
    "10.0.0.15",
    "fd00::f",
];

/// Container ports a pod may declare.
fn container_ports() -> Vec<ContainerPort> {
    let p = |name: Option<&str>, port, protocol| ContainerPort {
        name: name.map(str::to_owned),
        port,
        protocol,
    };
    vec![
        p(Some("web"), 80, Protocol::Tcp),
        p(Some("dns"), 53, Protocol::Udp),
        p(Some("dns-tcp"), 53, Protocol::Tcp),
        p(Some("web"), 8080, Protocol::Tcp),
        p(Some("metrics"), 9090, Protocol::Tcp),
        p(None, 443, Protocol::Tcp),
        p(Some("web"), 80, Protocol::Udp),
        p(Some("dns"), 5353, Protocol::Sctp),
    ]
}

/// `PROPTEST_CASES` cases (10 000 by default). XorShift, not the default ChaCha: in debug
/// builds drawing ChaCha numbers is most of a case's cost.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(cases)
    }
}

// ----- strategies -----

fn s(x: &str) -> String {
    x.to_owned()
}

/// Every label set over [`KEYS`] and [`VALUES`] (no label, one, or both keys).
fn label_sets() -> Vec<Labels> {
    let choices: Vec<Option<&str>> = std::iter::once(None)
        .chain(VALUES.iter().copied().map(Some))
        .collect();
    let mut sets = Vec::new();
    for a in &choices {
        for b in &choices {
            let pairs = [(KEYS[0], *a), (KEYS[1], *b)];
            sets.push(
                pairs
                    .iter()
                    .filter_map(|(k, v)| Some((s(k), s((*v)?))))
                    .collect(),
            );
        }
    }
    sets
}

// Selectors are drawn whole from enumerated lists: one random choice instead of a tree of
// them keeps generation cheap (most of a case's cost), and shrinking still works.

fn labels() -> impl Strategy<Value = Labels> {
    select(label_sets())
}

/// Single label requirements; `In` with one value (what selectors mostly use, and what the
/// engine indexes on) is listed twice to weigh more.
fn requirements() -> Vec<Requirement> {
    let mut out = Vec::new();
    for k in KEYS {
        for v in VALUES {
            out.push(Requirement::In(s(k), vec![s(v)]));
            out.push(Requirement::In(s(k), vec![s(v)]));
            out.push(Requirement::NotIn(s(k), vec![s(v)]));
        }
        out.push(Requirement::In(
            s(k),
            VALUES.iter().copied().map(s).collect(),
        ));
        out.push(Requirement::Exists(s(k)));
        out.push(Requirement::DoesNotExist(s(k)));
    }
    out
}

fn selector() -> impl Strategy<Value = Selector> {
    let one: Vec<Selector> = requirements()
        .into_iter()
        .map(|r| Selector {
            requirements: vec![r],
        })
        .collect();
    let mut two = Vec::new();
    for a in requirements() {
        for b in requirements() {
            two.push(Selector {
                requirements: vec![a.clone(), b],
            });
        }
    }
    prop_oneof![2 => Just(Selector::everything()), 4 => select(one), 2 => select(two)]
}

/// A namespace selector: a label selector, or one on the automatic name label (alone, or
/// before or after a label requirement: the engine indexes on the first usable one).
fn namespace_selector() -> impl Strategy<Value = Selector> {
    let name = || s(NAMESPACE_NAME_LABEL);
    let mut by_name = Vec::new();
    for (i, n) in NAMESPACES.iter().enumerate() {
        by_name.push(Requirement::In(name(), vec![s(n)]));
        by_name.push(Requirement::In(name(), vec![s(n)]));
        by_name.push(Requirement::NotIn(name(), vec![s(n)]));
        by_name.push(Requirement::In(
            name(),
            vec![s(n), s(NAMESPACES[(i + 1) % NAMESPACES.len()])],
        ));
    }
    let alone: Vec<Selector> = by_name
        .iter()
        .map(|r| Selector {
            requirements: vec![r.clone()],
        })
        .collect();
    let mut mixed = Vec::new();
    for a in &by_name {
        for b in requirements() {
            mixed.push(Selector {
                requirements: vec![a.clone(), b.clone()],
            });
            mixed.push(Selector {
                requirements: vec![b, a.clone()],
            });
        }
    }
    prop_oneof![6 => selector(), 2 => select(alone), 1 => select(mixed)]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![3 => Just(Protocol::Tcp), 2 => Just(Protocol::Udp), 1 => Just(Protocol::Sctp)]
}

fn port_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        select(FLOW_PORTS).prop_map(PortRange::single),
        select(RANGES).prop_map(|(first, last)| PortRange { first, last }),
    ]
}

fn cidr(text: &str) -> IpNet {
    text.parse().expect("CIDR")
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        3 => namespace_selector().prop_map(Peer::Namespaces),
        3 => (namespace_selector(), selector()).prop_map(|(namespaces, pods)| Peer::Pods { namespaces, pods }),
        1 => selector().prop_map(Peer::Nodes),
        3 => subsequence(CIDRS, 1..=2).prop_map(|c| Peer::Networks(c.into_iter().map(cidr).collect())),
        1 => subsequence(PATTERNS, 1..=2)
            .prop_map(|p| Peer::DomainNames(p.into_iter().map(DomainPattern::parse).collect())),
        1 => Just(Peer::Unknown),
        4 => prop::collection::vec(service_peer(), 1..=2).prop_map(Peer::Services),
    ]
}

fn service_peer() -> impl Strategy<Value = ServicePeer> {
    (
        select(SERVICE_NAMESPACES),
        select(SERVICE_NAMES),
        proptest::option::weighted(0.7, subsequence(SERVICE_PORT_NAMES, 1..=3)),
    )
        .prop_map(|(namespace, name, ports)| ServicePeer {
            namespace: s(namespace),
            name: s(name),
            ports: ports.map(|p| p.into_iter().map(s).collect()),
        })
}

/// A Service before its endpoints are resolved to addresses.
#[derive(Debug, Clone)]
struct ServiceSeed {
    namespace: &'static str,
    name: &'static str,
    /// 0: headless, 1: IPv4, 2: IPv6, 3: dual-stack.
    cluster: u8,
    /// (name, Service port, protocol, slice port).
    ports: Vec<(&'static str, u16, Protocol, u16)>,
    /// An address of the world's pods or outside, and `conditions.ready`.
    endpoints: Vec<(Index, Option<bool>)>,
}

fn service_seed() -> impl Strategy<Value = ServiceSeed> {
    // Few target ports, so that flows often reach a backend on its port.
    let port = (
        select(&["web", "dns", "metrics"][..]),
        select(FLOW_PORTS),
        prop_oneof![3 => Just(Protocol::Tcp), 1 => Just(Protocol::Udp)],
        select(&[80u16, 8080][..]),
    );
    (
        select(SERVICE_NAMESPACES),
        select(SERVICE_NAMES),
        0u8..4,
        prop::collection::vec(port, 1..=2),
        prop::collection::vec((any::<Index>(), proptest::option::of(any::<bool>())), 0..=6),
    )
        .prop_map(|(namespace, name, cluster, mut ports, endpoints)| {
            ports.dedup_by_key(|p| p.0);
            ServiceSeed {
                namespace,
                name,
                cluster,
                ports,
                endpoints,
            }
        })
}

/// The Services and their EndpointSlices (one per family) for the seeds; endpoint addresses
/// are drawn from `addresses`.
fn services(
    seeds: Vec<ServiceSeed>,
    addresses: &[IpAddr],
) -> (Vec<ServiceInfo>, Vec<EndpointSliceInfo>) {
    let mut services: Vec<ServiceInfo> = Vec::new();
    let mut slices = Vec::new();
    for (i, seed) in seeds.into_iter().enumerate() {
        if services
            .iter()
            .any(|q| q.namespace == seed.namespace && q.name == seed.name)
        {
            continue;
        }
        let v4 = ip(format!("10.96.0.{}", i + 1));
        let v6 = ip(format!("fd96::{}", i + 1));
        let cluster_ips = match seed.cluster {
            0 => vec![],
            1 => vec![v4],
            2 => vec![v6],
            _ => vec![v4, v6],
        };
        services.push(ServiceInfo {
            namespace: s(seed.namespace),
            name: s(seed.name),
            service_type: ServiceType::ClusterIp,
            cluster_ips,
            ports: seed
                .ports
                .iter()
                .map(|&(name, port, protocol, target)| ServicePort {
                    name: Some(s(name)),
                    protocol,
                    port,
                    target_port: TargetPort::Number(target),
                })
                .collect(),
            selector: None,
        });
        for (family, v4) in [(AddressType::Ipv4, true), (AddressType::Ipv6, false)] {
            slices.push(EndpointSliceInfo {
                namespace: s(seed.namespace),
                name: format!("{}-{i}-{v4}", seed.name),
                service: s(seed.name),
                address_type: family,
                endpoints: seed
                    .endpoints
                    .iter()
                    .map(|(at, ready)| (*at.get(addresses), *ready))
                    .filter(|(a, _)| a.is_ipv4() == v4)
                    .map(|(a, ready)| EndpointInfo {
                        addresses: vec![a],
                        ready,
                        serving: ready,
                        terminating: None,
                        pod: None,
                    })
                    .collect(),
                ports: seed
                    .ports
                    .iter()
                    .map(|&(name, _, protocol, target)| EndpointPort {
                        name: Some(s(name)),
                        port: Some(target),
                        protocol,
                    })
                    .collect(),
            });
        }
    }
    (services, slices)
}

fn port_match() -> impl Strategy<Value = PortMatch> {
    prop_oneof![
        4 => (protocol(), port_range()).prop_map(|(protocol, ports)| PortMatch::Port { protocol, ports }),
        2 => select(PORT_NAMES).prop_map(|n| PortMatch::Named(s(n))),
        1 => Just(PortMatch::Unknown),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    let action =
        prop_oneof![3 => Just(Action::Accept), 3 => Just(Action::Deny), 2 => Just(Action::Pass)];
    (
        action,
        prop::collection::vec(peer(), 1..=3),
        proptest::option::of(prop::collection::vec(port_match(), 1..=2)),
        proptest::bool::weighted(0.07),
    )
        .prop_map(|(action, peers, protocols, unknown_fields)| Rule {
            name: None,
            action,
            peers,
            protocols,
            unknown_fields,
        })
}

/// A rule of `services` peers alone, mostly without `protocols`: the shape the stories use
/// ("the API server", "the proxy Service"), drawn often so that flows to a Service's backends
/// meet port-limited `services` peers.
fn service_rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![Just(Action::Accept), Just(Action::Deny)],
        prop::collection::vec(prop::collection::vec(service_peer(), 1..=3), 1..=2),
        proptest::option::weighted(0.2, prop::collection::vec(port_match(), 1..=2)),
    )
        .prop_map(|(action, peers, protocols)| Rule {
            name: None,
            action,
            peers: peers.into_iter().map(Peer::Services).collect(),
            protocols,
            unknown_fields: false,
        })
}

/// The kind of a generated cluster policy.
#[derive(Debug, Clone, Copy)]
enum Kind {
    AdminCnp,
    BaselineCnp,
    Anp,
    Banp,
}

fn cluster_policy() -> impl Strategy<Value = ClusterPolicy> {
    let kind = prop_oneof![3 => Just(Kind::AdminCnp), 3 => Just(Kind::BaselineCnp), 1 => Just(Kind::Anp), 1 => Just(Kind::Banp)];
    let subject = prop_oneof![
        namespace_selector().prop_map(Subject::Namespaces),
        (namespace_selector(), selector())
            .prop_map(|(namespaces, pods)| Subject::Pods { namespaces, pods }),
    ];
    (
        kind,
        select(POLICY_NAMES),
        select(PRIORITIES),
        subject,
        prop::collection::vec(rule(), 0..=4),
    )
        .prop_map(|(kind, name, priority, subject, mut egress)| {
            let (kind, tier, priority) = match kind {
                Kind::AdminCnp => (PolicyKind::ClusterNetworkPolicy, Tier::Admin, priority),
                Kind::BaselineCnp => (PolicyKind::ClusterNetworkPolicy, Tier::Baseline, priority),
                Kind::Anp => (PolicyKind::AdminNetworkPolicy, Tier::Admin, priority),
                // The loader gives a BANP priority 1000; it has no Pass.
                Kind::Banp => {
                    for r in &mut egress {
                        if r.action == Action::Pass {
                            r.action = Action::Deny;
                        }
                    }
                    (PolicyKind::BaselineAdminNetworkPolicy, Tier::Baseline, 1000)
                }
            };
            ClusterPolicy {
                name: s(name),
                kind,
                tier,
                priority,
                subject,
                egress,
                origin: Origin::default(),
            }
        })
}

/// A DeveloperNetworkPolicy: Accept and Deny rules only (validation allows no Pass). Its
/// `pods` peers carry explicit namespace selectors, as the loader normalizes them; peers are
/// otherwise drawn like a cluster policy's (nodes included: the engine must not care).
fn developer_policy() -> impl Strategy<Value = DeveloperPolicy> {
    let any_rule = rule().prop_map(|mut r| {
        if r.action == Action::Pass {
            r.action = Action::Deny;
        }
        r
    });
    let rule = prop_oneof![1 => any_rule, 1 => service_rule()];
    (
        select(NAMESPACES),
        select(POLICY_NAMES),
        selector(),
        prop::collection::vec(rule, 0..=4),
    )
        .prop_map(|(namespace, name, pod_selector, egress)| DeveloperPolicy {
            namespace: s(namespace),
            name: s(name),
            pod_selector,
            egress,
            origin: Origin::default(),
        })
}

fn network_policy_peer() -> impl Strategy<Value = NetworkPolicyPeer> {
    prop_oneof![
        3 => (proptest::option::of(namespace_selector()), proptest::option::of(selector()))
            .prop_map(|(namespaces, pods)| NetworkPolicyPeer::Pods { namespaces, pods }),
        2 => select(IP_BLOCKS).prop_map(|(c, except)| NetworkPolicyPeer::IpBlock {
            cidr: cidr(c),
            except: except.iter().copied().map(cidr).collect(),
        }),
    ]
}

fn network_policy_port() -> impl Strategy<Value = NetworkPolicyPort> {
    let spec = prop_oneof![
        1 => Just(NetworkPolicyPortSpec::Any),
        3 => port_range().prop_map(NetworkPolicyPortSpec::Range),
        2 => select(PORT_NAMES).prop_map(|n| NetworkPolicyPortSpec::Named(s(n))),
    ];
    (protocol(), spec).prop_map(|(protocol, port)| NetworkPolicyPort { protocol, port })
}

fn network_policy() -> impl Strategy<Value = NetworkPolicyRules> {
    let rule = (
        prop::collection::vec(network_policy_peer(), 0..=2),
        prop::collection::vec(network_policy_port(), 0..=2),
    )
        .prop_map(|(peers, ports)| NetworkPolicyRule { peers, ports });
    (
        select(NAMESPACES),
        selector(),
        proptest::option::weighted(0.8, prop::collection::vec(rule, 0..=3)),
    )
        .prop_map(|(namespace, pod_selector, egress)| NetworkPolicyRules {
            namespace: s(namespace),
            name: String::new(), // numbered below
            pod_selector,
            egress,
            origin: Origin::default(),
        })
}

/// A pod before its addresses are assigned.
#[derive(Debug, Clone)]
struct PodSeed {
    namespace: &'static str,
    labels: Labels,
    /// 0: IPv4, 1: IPv6, 2: dual-stack.
    family: u8,
    host_network: bool,
    node: usize,
    ports: Vec<ContainerPort>,
}

fn pod_seed() -> impl Strategy<Value = PodSeed> {
    (
        select(NAMESPACES),
        labels(),
        0u8..3,
        proptest::bool::weighted(0.15),
        0usize..2,
        subsequence(container_ports(), 0..=3),
    )
        .prop_map(
            |(namespace, labels, family, host_network, node, ports)| PodSeed {
                namespace,
                labels,
                family,
                host_network,
                node,
                ports,
            },
        )
}

fn node() -> impl Strategy<Value = (Labels, bool, bool)> {
    (labels(), any::<bool>(), any::<bool>())
}

/// One flow, resolved against the world's addresses when the case runs.
#[derive(Debug, Clone)]
struct FlowSeed {
    /// Usually a pod address, so that most flows have a subject.
    src_is_pod: bool,
    src: Index,
    dst: Index,
    protocol: Protocol,
    port: u16,
    names: Vec<&'static str>,
    /// To an endpoint of a Service on one of its ports instead (when the world has any).
    to_backend: Option<Index>,
}

fn flow_seed() -> impl Strategy<Value = FlowSeed> {
    (
        proptest::bool::weighted(0.85),
        any::<Index>(),
        any::<Index>(),
        protocol(),
        select(FLOW_PORTS),
        subsequence(NAMES, 0..=2),
        proptest::option::weighted(0.5, any::<Index>()),
    )
        .prop_map(
            |(src_is_pod, src, dst, protocol, port, names, to_backend)| FlowSeed {
                src_is_pod,
                src,
                dst,
                protocol,
                port,
                names,
                to_backend,
            },
        )
}

/// A generated world, the default decision, and the flows to ask.
#[derive(Debug, Clone)]
struct Case {
    world: World,
    default: Decision,
    flows: Vec<FlowSeed>,
}

/// The addresses flows are drawn from.
struct Addresses {
    /// Pod addresses (host-network ones included).
    pods: Vec<IpAddr>,
    /// Pod addresses first, then everything else.
    all: Vec<IpAddr>,
    /// Every endpoint of every EndpointSlice on each of its ports, ready or not.
    backends: Vec<(IpAddr, u16, Protocol)>,
}

impl Case {
    fn addresses(&self) -> Addresses {
        let inv = &self.world.inventory;
        let pods: Vec<IpAddr> = inv
            .pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        let mut all = pods.clone();
        all.extend(inv.nodes.iter().flat_map(|n| n.addresses.iter().copied()));
        all.extend(OUTSIDE.iter().map(|a| a.parse::<IpAddr>().expect("IP")));
        let backends = inv
            .endpoint_slices
            .iter()
            .flat_map(|sl| {
                sl.endpoints.iter().flat_map(move |e| {
                    e.addresses.iter().flat_map(move |a| {
                        sl.ports
                            .iter()
                            .filter_map(move |p| Some((*a, p.port?, p.protocol)))
                    })
                })
            })
            .collect();
        Addresses {
            pods,
            all,
            backends,
        }
    }
}

fn ip(text: String) -> IpAddr {
    text.parse().expect("IP")
}

fn world_case() -> impl Strategy<Value = Case> {
    (
        2usize..=4,
        prop::collection::vec(labels(), 4),
        prop::collection::vec(node(), 1..=2),
        prop::collection::vec(pod_seed(), 2..=8),
        Just((1u8..=14).collect::<Vec<u8>>()).prop_shuffle(),
        prop::collection::vec(cluster_policy(), 0..=6),
        prop::collection::vec(network_policy(), 0..=3),
        prop::collection::vec(developer_policy(), 0..=4),
        prop_oneof![3 => Just(Decision::Allow), 1 => Just(Decision::Deny)],
        prop::collection::vec(flow_seed(), FLOWS),
        prop::collection::vec(service_seed(), 1..=4),
    )
        .prop_map(
            |(
                listed,
                ns_labels,
                nodes,
                pods,
                host_ids,
                policies,
                nps,
                dnps,
                default,
                flows,
                service_seeds,
            )| {
                // Namespaces beyond `listed` are not in the inventory: pods and policies
                // may still name them.
                let namespaces = NAMESPACES
                    .iter()
                    .zip(ns_labels)
                    .take(listed)
                    .map(|(n, l)| NamespaceInfo::new(*n, l))
                    .collect();
                let nodes: Vec<NodeInfo> = nodes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (labels, v6, external))| {
                        let mut addresses = vec![ip(format!("172.16.0.{}", i + 1))];
                        if v6 {
                            addresses.push(ip(format!("fd01::{}", i + 1)));
                        }
                        if external {
                            addresses.push(ip(format!("203.0.113.{}", i + 1)));
                        }
                        NodeInfo {
                            name: format!("node-{i}"),
                            labels,
                            addresses,
                        }
                    })
                    .collect();
                let pods: Vec<PodInfo> = pods
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let node = &nodes[p.node % nodes.len()];
                        let host = host_ids[i];
                        let ips = if p.host_network {
                            // A host-network pod has its node's addresses.
                            node.addresses.clone()
                        } else {
                            let v4 = ip(format!("10.0.0.{host}"));
                            let v6 = ip(format!("fd00::{host:x}"));
                            match p.family {
                                0 => vec![v4],
                                1 => vec![v6],
                                _ => vec![v4, v6],
                            }
                        };
                        PodInfo {
                            namespace: s(p.namespace),
                            name: format!("pod-{i}"),
                            uid: None,
                            labels: p.labels,
                            ips,
                            host_network: p.host_network,
                            node_name: Some(node.name.clone()),
                            ports: p.ports,
                            service_account: None,
                            annotations: Default::default(),
                        }
                    })
                    .collect();
                let endpoint_addresses: Vec<IpAddr> = pods
                    .iter()
                    .flat_map(|p| p.ips.iter().copied())
                    .chain(OUTSIDE.iter().map(|a| a.parse::<IpAddr>().expect("IP")))
                    .collect();
                let (services, endpoint_slices) = services(service_seeds, &endpoint_addresses);
                // Names are unique per kind (a BANP is a singleton named `default`).
                let mut cluster_policies: Vec<ClusterPolicy> = Vec::new();
                for (i, mut p) in policies.into_iter().enumerate() {
                    if p.kind == PolicyKind::BaselineAdminNetworkPolicy {
                        if cluster_policies.iter().any(|q| q.kind == p.kind) {
                            continue;
                        }
                        p.name = s("default");
                    } else if cluster_policies
                        .iter()
                        .any(|q| q.kind == p.kind && q.name == p.name)
                    {
                        p.name = format!("{}{i}", p.name);
                    }
                    cluster_policies.push(p);
                }
                let network_policies = nps
                    .into_iter()
                    .enumerate()
                    .map(|(i, np)| NetworkPolicyRules {
                        name: format!("np{i}"),
                        ..np
                    })
                    .collect();
                // Names are unique per namespace; file order is not name order, so that the
                // engine's name order is put to the test.
                let mut developer_policies: Vec<DeveloperPolicy> = Vec::new();
                for (i, mut p) in dnps.into_iter().enumerate() {
                    if developer_policies
                        .iter()
                        .any(|q| q.namespace == p.namespace && q.name == p.name)
                    {
                        p.name = format!("{}{i}", p.name);
                    }
                    developer_policies.push(p);
                }
                Case {
                    world: World {
                        cluster_policies,
                        network_policies,
                        developer_policies,
                        inventory: Inventory {
                            namespaces,
                            pods,
                            nodes,
                            services,
                            endpoint_slices,
                        },
                        staged: Default::default(),
                    },
                    default,
                    flows,
                }
            },
        )
}

// ----- the properties -----

/// The flow a seed stands for in a world with these addresses.
fn flow_of<'s>(seed: &'s FlowSeed, at: &Addresses) -> Flow<'s> {
    let src = if seed.src_is_pod {
        *seed.src.get(&at.pods)
    } else {
        *seed.src.get(&at.all)
    };
    let (dst, port, protocol) = match seed.to_backend {
        Some(i) if !at.backends.is_empty() => *i.get(&at.backends),
        _ => (*seed.dst.get(&at.all), seed.port, seed.protocol),
    };
    Flow {
        src,
        dst,
        protocol,
        port,
        names: &seed.names,
        addressed: None,
    }
}

/// Asks every flow of a case of both evaluators; on a difference, says which flow.
fn compare(case: &Case) -> Result<Vec<(Want, Vec<StepView>)>, TestCaseError> {
    let snapshot = Snapshot::compile(
        &case.world,
        Options {
            default_decision: case.default,
            ..Options::default()
        },
    );
    let reference = Reference::new(&case.world, case.default);
    let at = case.addresses();
    let mut verdicts = Vec::with_capacity(case.flows.len());
    for seed in &case.flows {
        let flow = flow_of(seed, &at);
        let verdict = snapshot.evaluate(&flow);
        let (explained, trace) = snapshot.explain(&flow);
        prop_assert_eq!(
            verdict,
            explained,
            "evaluate and explain disagree on {:?}",
            flow
        );
        let got = Want::of(&snapshot, &verdict);
        let (want, want_trace) = reference.evaluate(&flow);
        prop_assert_eq!(&got, &want, "verdict for {:?}", flow);
        prop_assert_eq!(
            steps(&snapshot, &trace),
            want_trace.clone(),
            "trace for {:?}",
            flow
        );
        verdicts.push((got, want_trace));
    }
    Ok(verdicts)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn engine_agrees_with_the_reference(case in world_case()) {
        compare(&case)?;
    }
}

/// The generator is only useful if it reaches every kind of verdict and every turn of the
/// tiers: check that a few hundred worlds do (and agree while doing so).
#[test]
fn generated_worlds_reach_every_kind_of_verdict() {
    use Decision::{Allow, Deny};
    use TierName as T;

    let mut runner =
        TestRunner::new_with_rng(config(), TestRng::deterministic_rng(RngAlgorithm::XorShift));
    let strategy = world_case();
    let mut verdicts = Vec::new();
    let mut turns = Vec::new();
    // A DeveloperNetworkPolicy that does not decide, then NetworkPolicy v1 deciding.
    let mut developer_then_np = false;
    // A DeveloperNetworkPolicy Deny deciding although an Accept rule matches too.
    let mut deny_over_accept = false;
    // Flows whose verdict a `services` peer with `ports` decides (without those peers it
    // would differ), and those of them decided by a DeveloperNetworkPolicy.
    let mut by_service_ports = 0;
    let mut by_service_ports_dnp = 0;
    let mut flows = 0;
    for _ in 0..500 {
        let case = strategy.new_tree(&mut runner).expect("a world").current();
        let at = case.addresses();
        let world_without = without_service_ports(&case.world);
        let reference_without = Reference::new(&world_without, case.default);
        for (seed, (v, trace)) in case
            .flows
            .iter()
            .zip(compare(&case).unwrap_or_else(|e| panic!("{e}\n{case:#?}")))
        {
            let dnp = |s: &StepView| s.1.as_deref().is_some_and(|p| p.starts_with("dnp/"));
            developer_then_np |= trace.iter().any(|s| dnp(s) && s.3 == Outcome::NoMatch)
                && v.policy.as_deref().is_some_and(|p| p.starts_with("np/"));
            if v.policy.as_deref().is_some_and(|p| p.starts_with("dnp/"))
                && v.action == Some(Action::Deny)
            {
                // Would the source's DeveloperNetworkPolicies accept the flow without their
                // Deny rules?
                let mut world = case.world.clone();
                for p in &mut world.developer_policies {
                    p.egress.retain(|r| r.action != Action::Deny);
                }
                let flow = flow_of(seed, &at);
                let (without, _) = Reference::new(&world, case.default).evaluate(&flow);
                deny_over_accept |= without
                    .policy
                    .as_deref()
                    .is_some_and(|p| p.starts_with("dnp/"));
            }
            flows += 1;
            if reference_without.evaluate(&flow_of(seed, &at)).0 != v {
                by_service_ports += 1;
                by_service_ports_dnp +=
                    usize::from(v.policy.as_deref().is_some_and(|p| p.starts_with("dnp/")));
            }
            verdicts.push((v.decision, v.tier, v.action, v.reason));
            turns.extend(
                trace
                    .into_iter()
                    .map(|(tier, _, _, outcome)| (tier, outcome)),
            );
        }
    }
    let accept = Some(Action::Accept);
    let deny = Some(Action::Deny);
    let expected_verdicts = [
        (Allow, T::Admin, accept, Reason::Rule),
        (Deny, T::Admin, deny, Reason::Rule),
        (Allow, T::NetworkPolicy, None, Reason::Rule),
        (Deny, T::NetworkPolicy, None, Reason::NetworkPolicyIsolation),
        (Allow, T::NetworkPolicy, accept, Reason::Rule), // DeveloperNetworkPolicy Accept
        (Deny, T::NetworkPolicy, deny, Reason::Rule),    // DeveloperNetworkPolicy Deny
        (Allow, T::Baseline, accept, Reason::Rule),
        (Deny, T::Baseline, deny, Reason::Rule),
        (Allow, T::Default, None, Reason::Default),
        (Deny, T::Default, None, Reason::Default),
        (Allow, T::Default, None, Reason::Hairpin),
        (Allow, T::Default, None, Reason::HostNetworkSource),
        (Allow, T::Default, None, Reason::UnknownSource),
        (Deny, T::Default, None, Reason::UnknownSource),
    ];
    let missing: Vec<_> = expected_verdicts
        .iter()
        .filter(|k| !verdicts.contains(k))
        .collect();
    assert!(missing.is_empty(), "verdicts never generated: {missing:?}");
    let expected_turns = [
        (T::Admin, Outcome::NoMatch),
        (T::Admin, Outcome::Matched(Action::Pass)),
        (T::NetworkPolicy, Outcome::NotIsolated),
        (T::NetworkPolicy, Outcome::IsolatedNoMatch),
        (T::NetworkPolicy, Outcome::NoMatch), // DeveloperNetworkPolicies that do not decide
        (T::Baseline, Outcome::NoMatch),
        (T::Baseline, Outcome::Matched(Action::Pass)),
        (T::Default, Outcome::Exempt),
    ];
    let missing: Vec<_> = expected_turns
        .iter()
        .filter(|k| !turns.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "trace steps never generated: {missing:?}"
    );
    assert!(
        developer_then_np,
        "no DeveloperNetworkPolicy left a flow to NetworkPolicy v1"
    );
    assert!(
        deny_over_accept,
        "no DeveloperNetworkPolicy Deny decided over a matching Accept"
    );
    // Flows that only a port-limited `services` peer decides: about 1% of them (0.5% in
    // DeveloperNetworkPolicies), some 700 in the property's 10 000 worlds. Below that a bug
    // in the port-limited backend sets could go unnoticed.
    assert!(
        by_service_ports * 125 >= flows && by_service_ports_dnp * 200 >= flows,
        "`services` peers with `ports` decided {by_service_ports} of {flows} flows ({by_service_ports_dnp} in DeveloperNetworkPolicies)"
    );
}

/// The world with every `services` peer that limits a Service to named ports matching
/// nothing (the reference reads an empty `services` list so).
fn without_service_ports(world: &World) -> World {
    let mut world = world.clone();
    let rules = world
        .cluster_policies
        .iter_mut()
        .flat_map(|p| p.egress.iter_mut())
        .chain(
            world
                .developer_policies
                .iter_mut()
                .flat_map(|p| p.egress.iter_mut()),
        );
    for rule in rules {
        for peer in &mut rule.peers {
            if let Peer::Services(list) = peer {
                list.retain(|s| s.ports.is_none());
            }
        }
    }
    world
}
