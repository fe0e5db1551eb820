//! A deterministic generator of large, realistic worlds for benchmarks (and, later, for
//! scale tests).
//!
//! [`generate`] builds a [`World`] shaped like a big multi-tenant cluster, from a seed and a
//! few sizes ([`Params`]; the default is the scale the policy-engine targets are stated at):
//!
//! * **Namespaces** `<team>-<env>-<nnnn>` labelled `team` (40 teams), `env` (prod, staging,
//!   dev) and `tier` (frontend, backend, data, platform), plus `kube-system`. Every namespace
//!   also carries `kubernetes.io/metadata.name` ([`NamespaceInfo::new`] adds it).
//! * **Pods** grouped into deployments (replica groups): every replica of a deployment shares
//!   `app` (one of ~60 names, distinct within a namespace), `role` (fixed per app) and
//!   `version` (`v1`, a few deployments running a `v2` canary next to it), so label sets repeat
//!   the way they do in real clusters. Each pod has a `web` TCP/80 container port, some also a
//!   `dns` UDP/53 one. Pods are spread over the nodes; each node owns a `/21` of
//!   `10.64.0.0/10` for pod IPs, and pods on the dual-stack nodes (every fourth) also get an
//!   IPv6 address from `fd00:10:64::/48`. `kube-system` runs CoreDNS (`k8s-app=kube-dns`,
//!   the DNS peer of NetworkPolicies) and one host-network `kube-proxy` per node.
//! * **Nodes** `node-nnn` with hostname, zone, instance-type and (for the first three)
//!   control-plane labels, an address in `10.0.0.0/16` and, on dual-stack nodes, one in
//!   `fd00:10::/64`.
//! * **Cluster policies** (ClusterNetworkPolicy v1alpha2): mostly Admin, some Baseline, with
//!   priorities 0..=1000. Subjects: one namespace by `kubernetes.io/metadata.name`, the
//!   namespaces of a team (sometimes narrowed by `env`), pods by `app` label (in all
//!   namespaces, a team's, or one environment's), and a handful selecting every namespace.
//!   1–5 rules each, with Accept/Deny/Pass (no Pass in Baseline), 1–3 peers of every kind
//!   (namespaces, pods, nodes, networks with documentation and `10.x` CIDRs) and, on most
//!   rules, protocols mixing single ports, ranges and named ports (named ports only in rules
//!   whose peers are all pods/namespaces, as validation requires).
//! * **NetworkPolicies**: spread over the namespaces (5 per namespace on average): default
//!   deny egress, allow DNS to CoreDNS, ingress-only ones (which do not isolate egress) and
//!   app egress policies with podSelector/namespaceSelector/ipBlock-with-except peers and
//!   port lists (numbers, ranges, named ports).
//!
//! [`flows`] then draws a pool of varied flows from such a world: sources are pod IPs,
//! destinations mix same-namespace and other pods, CoreDNS, node addresses and external
//! addresses, over TCP and UDP with assorted ports.
//!
//! Everything is driven by a [`Rng`] (splitmix64), so one seed always gives the same world.

// Not every user of this module calls every function.
#![allow(dead_code)]

pub mod objects;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chokepoint::policy::Flow;
use chokepoint_config::World;
use chokepoint_config::inventory::{
    ContainerPort, Inventory, NAMESPACE_NAME_LABEL, NamespaceInfo, NodeInfo, PodInfo,
};
use chokepoint_config::model::{
    Action, ClusterPolicy, Labels, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyPortSpec,
    NetworkPolicyRule, NetworkPolicyRules, Origin, Peer, PolicyKind, PortMatch, PortRange,
    Protocol, Requirement, Rule, Selector, Subject, Tier,
};
use ipnet::IpNet;

/// Sizes and seed of a generated world.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub seed: u64,
    /// Namespaces, `kube-system` included.
    pub namespaces: usize,
    /// Pods in total, `kube-system` included.
    pub pods: usize,
    pub nodes: usize,
    pub cluster_policies: usize,
    pub network_policies: usize,
}

impl Default for Params {
    /// The scale of the engine's targets: 1,000 namespaces, 50,000 pods, 100 nodes, 10,000
    /// cluster policies and 5,000 NetworkPolicies.
    fn default() -> Self {
        Params {
            seed: 0x00c0_ffee_5eed,
            namespaces: 1_000,
            pods: 50_000,
            nodes: 100,
            cluster_policies: 10_000,
            network_policies: 5_000,
        }
    }
}

/// splitmix64: tiny, fast, good enough for test data, and identical on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A uniformly chosen element.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// An index into `weights`, chosen with probability proportional to its weight.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        unreachable!("x < total")
    }
}

pub const TEAMS: &[&str] = &[
    "payments",
    "search",
    "identity",
    "checkout",
    "catalog",
    "ads",
    "ml",
    "infra",
    "data",
    "growth",
    "mobile",
    "web",
    "billing",
    "fraud",
    "risk",
    "ledger",
    "support",
    "crm",
    "marketing",
    "analytics",
    "storage",
    "network",
    "security",
    "sre",
    "observability",
    "messaging",
    "media",
    "maps",
    "travel",
    "booking",
    "inventory",
    "shipping",
    "pricing",
    "reviews",
    "social",
    "notifications",
    "platform",
    "devex",
    "compliance",
    "partners",
];
pub const ENVS: &[&str] = &["prod", "staging", "dev"];
const ENV_WEIGHTS: &[u32] = &[50, 25, 25];
pub const NAMESPACE_TIERS: &[&str] = &["frontend", "backend", "data", "platform"];

/// Application names and the `role` their pods carry.
pub const APPS: &[(&str, &str)] = &[
    ("web", "server"),
    ("api", "server"),
    ("gateway", "proxy"),
    ("auth", "server"),
    ("cart", "server"),
    ("checkout", "server"),
    ("catalog", "server"),
    ("search", "server"),
    ("recommender", "server"),
    ("billing", "server"),
    ("ledger", "server"),
    ("notifier", "worker"),
    ("mailer", "worker"),
    ("worker", "worker"),
    ("scheduler", "worker"),
    ("cron", "worker"),
    ("ingest", "worker"),
    ("etl", "worker"),
    ("stream", "worker"),
    ("indexer", "worker"),
    ("kafka", "queue"),
    ("zookeeper", "queue"),
    ("rabbitmq", "queue"),
    ("nats", "queue"),
    ("redis", "cache"),
    ("memcached", "cache"),
    ("varnish", "cache"),
    ("postgres", "db"),
    ("mysql", "db"),
    ("mongo", "db"),
    ("cassandra", "db"),
    ("elasticsearch", "db"),
    ("clickhouse", "db"),
    ("minio", "db"),
    ("prometheus", "monitoring"),
    ("grafana", "monitoring"),
    ("loki", "monitoring"),
    ("jaeger", "monitoring"),
    ("otel-collector", "monitoring"),
    ("envoy", "proxy"),
    ("nginx", "proxy"),
    ("haproxy", "proxy"),
    ("oauth-proxy", "proxy"),
    ("vault", "server"),
    ("consul", "server"),
    ("frontend", "server"),
    ("backend", "server"),
    ("admin", "server"),
    ("graphql", "server"),
    ("grpc-gw", "proxy"),
    ("image-resizer", "worker"),
    ("pdf-render", "worker"),
    ("ml-serving", "server"),
    ("feature-store", "db"),
    ("model-trainer", "worker"),
    ("webhook", "server"),
    ("audit", "worker"),
    ("session", "cache"),
    ("rate-limiter", "proxy"),
    ("config-server", "server"),
];
pub const ROLES: &[&str] = &[
    "server",
    "worker",
    "queue",
    "cache",
    "db",
    "monitoring",
    "proxy",
];
const ZONES: &[&str] = &["zone-a", "zone-b", "zone-c"];
const INSTANCE_TYPES: &[&str] = &["m5.2xlarge", "m5.4xlarge", "c5.4xlarge", "r5.2xlarge"];

/// Ports that policies and flows talk about.
const TCP_PORTS: &[u16] = &[80, 443, 8080, 8443, 5432, 3306, 6379, 9090, 9092, 27017, 22];

/// Pod CIDR of node `n`: `10.64.0.0 + n * 2048`, a `/21`.
fn node_pod_base(n: usize) -> u32 {
    u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (n as u32) * 2048
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector {
        requirements: pairs
            .iter()
            .map(|(k, v)| Requirement::In((*k).to_owned(), vec![(*v).to_owned()]))
            .collect(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("valid CIDR")
}

/// Builds a world; the same `params` always give the same world.
pub fn generate(params: &Params) -> World {
    let mut rng = Rng::new(params.seed);
    let nodes = gen_nodes(params.nodes);
    let namespaces = gen_namespaces(&mut rng, params.namespaces);
    let pods = gen_pods(&mut rng, params, &namespaces, &nodes);
    let mut ctx = Ctx::new(&namespaces, &pods);
    let cluster_policies = (0..params.cluster_policies)
        .map(|i| ctx.cluster_policy(&mut rng, i))
        .collect();
    let network_policies = ctx.network_policies(&mut rng, params.network_policies);
    World {
        cluster_policies,
        network_policies,
        developer_policies: Vec::new(),
        inventory: Inventory {
            namespaces,
            pods,
            nodes,
            ..Inventory::default()
        },
        staged: Default::default(),
    }
}

fn gen_nodes(n: usize) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| {
            let name = format!("node-{i:03}");
            let mut l = labels(&[
                ("kubernetes.io/hostname", &name),
                ("kubernetes.io/os", "linux"),
                ("topology.kubernetes.io/zone", ZONES[i % ZONES.len()]),
                (
                    "node.kubernetes.io/instance-type",
                    INSTANCE_TYPES[i % INSTANCE_TYPES.len()],
                ),
            ]);
            if i < 3 {
                l.insert(
                    "node-role.kubernetes.io/control-plane".into(),
                    String::new(),
                );
            }
            let mut addresses = vec![IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                (i / 250) as u8,
                (i % 250 + 4) as u8,
            ))];
            if i.is_multiple_of(4) {
                addresses.push(IpAddr::V6(Ipv6Addr::new(
                    0xfd00,
                    0x10,
                    0,
                    0,
                    0,
                    0,
                    0,
                    i as u16 + 4,
                )));
            }
            NodeInfo {
                name,
                labels: l,
                addresses,
            }
        })
        .collect()
}

fn gen_namespaces(rng: &mut Rng, n: usize) -> Vec<NamespaceInfo> {
    let mut out = vec![NamespaceInfo::new(
        "kube-system",
        labels(&[("team", "platform"), ("tier", "platform")]),
    )];
    for i in 1..n.max(1) {
        let team = rng.pick(TEAMS);
        let env = ENVS[rng.weighted(ENV_WEIGHTS)];
        let tier = rng.pick(NAMESPACE_TIERS);
        out.push(NamespaceInfo::new(
            format!("{team}-{env}-{i:04}"),
            labels(&[("team", team), ("env", env), ("tier", tier)]),
        ));
    }
    out
}

/// Hands out pod IPs node by node.
struct Ipam {
    next: Vec<u32>,
    node_names: Vec<String>,
}

impl Ipam {
    fn assign(&mut self, node: usize) -> Vec<IpAddr> {
        let k = self.next[node];
        assert!(k < 2046, "a node's /21 is full");
        self.next[node] += 1;
        let v4 = Ipv4Addr::from(node_pod_base(node) + 2 + k);
        let mut ips = vec![IpAddr::V4(v4)];
        if node.is_multiple_of(4) {
            ips.push(IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x10,
                0x64,
                node as u16,
                0,
                0,
                (k >> 16) as u16,
                k as u16 + 2,
            )));
        }
        ips
    }
}

fn hash_suffix(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
        .collect()
}

fn uid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// A pod scheduled on `node`, with the next IPs of that node's ranges.
fn pod(
    rng: &mut Rng,
    ipam: &mut Ipam,
    namespace: &str,
    name: String,
    labels: Labels,
    node: usize,
    ports: Vec<ContainerPort>,
) -> PodInfo {
    PodInfo {
        namespace: namespace.to_owned(),
        name,
        uid: Some(uid(rng)),
        labels,
        ips: ipam.assign(node),
        host_network: false,
        node_name: Some(ipam.node_names[node].clone()),
        ports,
        service_account: None,
        annotations: Default::default(),
    }
}

fn web_port() -> ContainerPort {
    ContainerPort {
        name: Some("web".into()),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

fn dns_port() -> ContainerPort {
    ContainerPort {
        name: Some("dns".into()),
        port: 53,
        protocol: Protocol::Udp,
    }
}

fn gen_pods(
    rng: &mut Rng,
    params: &Params,
    namespaces: &[NamespaceInfo],
    nodes: &[NodeInfo],
) -> Vec<PodInfo> {
    let mut ipam = Ipam {
        next: vec![0; nodes.len()],
        node_names: nodes.iter().map(|n| n.name.clone()).collect(),
    };
    let mut pods = Vec::with_capacity(params.pods);

    // kube-system: one host-network kube-proxy per node (the node's addresses), and CoreDNS.
    for node in nodes {
        pods.push(PodInfo {
            namespace: "kube-system".into(),
            name: format!("kube-proxy-{}", hash_suffix(rng, 5)),
            uid: Some(uid(rng)),
            labels: labels(&[("k8s-app", "kube-proxy")]),
            ips: node.addresses.clone(),
            host_network: true,
            node_name: Some(node.name.clone()),
            ports: Vec::new(),
            service_account: None,
            annotations: Default::default(),
        });
    }
    let coredns_hash = hash_suffix(rng, 10);
    for _ in 0..4.min(params.pods) {
        let node = rng.below(nodes.len());
        let name = format!("coredns-{coredns_hash}-{}", hash_suffix(rng, 5));
        let l = labels(&[
            ("k8s-app", "kube-dns"),
            ("pod-template-hash", &coredns_hash),
        ]);
        let ports = vec![
            dns_port(),
            ContainerPort {
                name: Some("dns-tcp".into()),
                port: 53,
                protocol: Protocol::Tcp,
            },
        ];
        pods.push(pod(rng, &mut ipam, "kube-system", name, l, node, ports));
    }

    // Application namespaces: sizes vary around the mean, the last one takes the remainder.
    let apps_ns = &namespaces[1..];
    let mut remaining = params.pods.saturating_sub(pods.len());
    for (i, ns) in apps_ns.iter().enumerate() {
        let left = apps_ns.len() - i;
        let mean = remaining / left;
        let target = if left == 1 {
            remaining
        } else {
            rng.range(mean * 2 / 5, mean * 8 / 5).min(remaining)
        };
        remaining -= target;
        let mut app_order: Vec<usize> = (0..APPS.len()).collect();
        let mut made = 0;
        let mut deployment = 0;
        while made < target {
            // Distinct apps within a namespace (a partial Fisher-Yates shuffle).
            let j = deployment % APPS.len();
            let k = j + rng.below(APPS.len() - j);
            app_order.swap(j, k);
            let (app, role) = APPS[app_order[j]];
            let app = if deployment < APPS.len() {
                app.to_owned()
            } else {
                format!("{app}-{}", deployment / APPS.len())
            };
            deployment += 1;
            let replicas = [1, 2, 2, 3, 3, 3, 4, 5, 6, 8, 10, 12][rng.below(12)].min(target - made);
            // Some deployments are mid-rollout: a v2 canary next to v1.
            let canary = if replicas > 2 && rng.chance(0.2) {
                1 + rng.below(replicas / 2)
            } else {
                0
            };
            let dns = rng.chance(0.1);
            for r in 0..replicas {
                let version = if r < replicas - canary { "v1" } else { "v2" };
                let l = labels(&[("app", &app), ("role", role), ("version", version)]);
                let name = format!("{app}-{}-{}", hash_suffix(rng, 10), hash_suffix(rng, 5));
                let mut ports = vec![web_port()];
                if dns {
                    ports.push(dns_port());
                }
                let node = rng.below(nodes.len());
                pods.push(pod(rng, &mut ipam, &ns.name, name, l, node, ports));
            }
            made += replicas;
        }
    }
    pods
}

/// What the policy generators draw from.
struct Ctx<'w> {
    namespaces: &'w [NamespaceInfo],
    /// Per namespace: the `app` labels of its deployments.
    apps_by_namespace: Vec<Vec<&'w str>>,
    /// Every `app` label in use.
    apps: Vec<&'w str>,
}

impl<'w> Ctx<'w> {
    fn new(namespaces: &'w [NamespaceInfo], pods: &'w [PodInfo]) -> Self {
        let index: BTreeMap<&str, usize> = namespaces
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut apps_by_namespace: Vec<Vec<&str>> = vec![Vec::new(); namespaces.len()];
        for p in pods {
            if let Some(app) = p.labels.get("app") {
                let list = &mut apps_by_namespace[index[p.namespace.as_str()]];
                if !list.contains(&app.as_str()) {
                    list.push(app);
                }
            }
        }
        let apps = APPS.iter().map(|(a, _)| *a).collect();
        Ctx {
            namespaces,
            apps_by_namespace,
            apps,
        }
    }

    /// An application namespace (never `kube-system`).
    fn namespace(&self, rng: &mut Rng) -> usize {
        1 + rng.below(self.namespaces.len() - 1)
    }

    fn namespace_by_name(&self, rng: &mut Rng) -> Selector {
        let ns = self.namespace(rng);
        sel(&[(NAMESPACE_NAME_LABEL, &self.namespaces[ns].name)])
    }

    /// A namespace selector for a peer: one namespace, a team, an environment, a tier, or all.
    fn peer_namespaces(&self, rng: &mut Rng) -> Selector {
        match rng.weighted(&[40, 30, 15, 10, 5]) {
            0 => self.namespace_by_name(rng),
            1 => sel(&[("team", rng.pick(TEAMS))]),
            2 => sel(&[("env", rng.pick(ENVS))]),
            3 => sel(&[("tier", rng.pick(NAMESPACE_TIERS))]),
            _ => Selector::everything(),
        }
    }

    /// A pod selector for a peer: mostly one app, sometimes a set of apps or a role.
    fn peer_pods(&self, rng: &mut Rng) -> Selector {
        match rng.weighted(&[80, 10, 10]) {
            0 => sel(&[("app", rng.pick(&self.apps))]),
            1 => Selector {
                requirements: vec![Requirement::In(
                    "app".into(),
                    vec![
                        (rng.pick(&self.apps)).to_owned(),
                        (rng.pick(&self.apps)).to_owned(),
                    ],
                )],
            },
            _ => sel(&[("role", rng.pick(ROLES))]),
        }
    }

    fn networks(&self, rng: &mut Rng) -> Vec<IpNet> {
        let count = rng.range(1, 3);
        (0..count)
            .map(|_| match rng.weighted(&[12, 12, 12, 8, 20, 15, 6, 5, 4]) {
                0 => net("192.0.2.0/24"),
                1 => net("198.51.100.0/24"),
                2 => net(&format!("203.0.113.{}/28", rng.below(16) * 16)),
                3 => net(&format!("2001:db8:{:x}::/48", rng.below(16))),
                4 => net(&format!("10.{}.0.0/16", rng.range(100, 255))),
                // A node's pod CIDR.
                5 => {
                    let base = Ipv4Addr::from(node_pod_base(rng.below(100)));
                    net(&format!("{base}/21"))
                }
                6 => net("10.0.0.0/16"),
                7 => net("169.254.169.254/32"),
                _ => net("0.0.0.0/0"),
            })
            .collect()
    }

    fn protocols(&self, rng: &mut Rng, named_allowed: bool) -> Option<Vec<PortMatch>> {
        if rng.chance(0.3) {
            return None;
        }
        let count = rng.range(1, 3);
        let list = (0..count)
            .map(|_| {
                match rng.weighted(&[
                    50,
                    15,
                    10,
                    if named_allowed { 15 } else { 0 },
                    if named_allowed { 5 } else { 0 },
                ]) {
                    0 => PortMatch::Port {
                        protocol: Protocol::Tcp,
                        ports: PortRange::single(rng.pick(TCP_PORTS)),
                    },
                    1 => {
                        let first = [1024, 3000, 8000, 9000, 30000][rng.below(5)];
                        PortMatch::Port {
                            protocol: Protocol::Tcp,
                            ports: PortRange {
                                first,
                                last: first + 999,
                            },
                        }
                    }
                    2 => PortMatch::Port {
                        protocol: Protocol::Udp,
                        ports: PortRange::single(rng.pick(&[53, 123, 514])),
                    },
                    3 => PortMatch::Named("web".into()),
                    _ => PortMatch::Named("dns".into()),
                }
            })
            .collect();
        Some(list)
    }

    fn rule(&self, rng: &mut Rng, tier: Tier) -> Rule {
        let action = match tier {
            Tier::Admin => {
                [Action::Accept, Action::Deny, Action::Pass][rng.weighted(&[40, 35, 25])]
            }
            Tier::Baseline => [Action::Accept, Action::Deny][rng.weighted(&[50, 50])],
        };
        let peers: Vec<Peer> = (0..rng.range(1, 3))
            .map(|_| match rng.weighted(&[30, 30, 10, 30]) {
                0 => Peer::Namespaces(self.peer_namespaces(rng)),
                1 => Peer::Pods {
                    namespaces: if rng.chance(0.3) {
                        Selector::everything()
                    } else {
                        self.peer_namespaces(rng)
                    },
                    pods: self.peer_pods(rng),
                },
                2 => Peer::Nodes(match rng.below(3) {
                    0 => Selector {
                        requirements: vec![Requirement::Exists(
                            "node-role.kubernetes.io/control-plane".into(),
                        )],
                    },
                    1 => sel(&[("topology.kubernetes.io/zone", rng.pick(ZONES))]),
                    _ => Selector::everything(),
                }),
                _ => Peer::Networks(self.networks(rng)),
            })
            .collect();
        let named_allowed = peers
            .iter()
            .all(|p| matches!(p, Peer::Namespaces(_) | Peer::Pods { .. }));
        Rule {
            name: None,
            action,
            peers,
            protocols: self.protocols(rng, named_allowed),
            unknown_fields: false,
        }
    }

    fn cluster_policy(&mut self, rng: &mut Rng, i: usize) -> ClusterPolicy {
        let tier = if rng.chance(0.85) {
            Tier::Admin
        } else {
            Tier::Baseline
        };
        let (what, subject) = if i % 2000 == 1999 {
            // A handful of cluster-wide policies.
            ("all", Subject::Namespaces(Selector::everything()))
        } else {
            match rng.weighted(&[45, 25, 30]) {
                0 => ("ns", Subject::Namespaces(self.namespace_by_name(rng))),
                1 => {
                    let team = rng.pick(TEAMS);
                    let s = if rng.chance(0.3) {
                        sel(&[("team", team), ("env", rng.pick(ENVS))])
                    } else {
                        sel(&[("team", team)])
                    };
                    ("team", Subject::Namespaces(s))
                }
                _ => {
                    let namespaces = match rng.weighted(&[40, 40, 20]) {
                        0 => Selector::everything(),
                        1 => sel(&[("team", rng.pick(TEAMS))]),
                        _ => sel(&[("env", rng.pick(ENVS))]),
                    };
                    (
                        "app",
                        Subject::Pods {
                            namespaces,
                            pods: sel(&[("app", rng.pick(&self.apps))]),
                        },
                    )
                }
            }
        };
        ClusterPolicy {
            name: format!("{what}-{i:05}"),
            kind: PolicyKind::ClusterNetworkPolicy,
            tier,
            priority: rng.range(0, 1000) as u32,
            subject,
            egress: (0..rng.range(1, 5)).map(|_| self.rule(rng, tier)).collect(),
            origin: Origin::default(),
        }
    }

    fn np_peer(&self, rng: &mut Rng, ns: usize) -> NetworkPolicyPeer {
        match rng.weighted(&[35, 20, 15, 20, 10]) {
            // Another app of the same namespace.
            0 => {
                let apps = &self.apps_by_namespace[ns];
                let app = if apps.is_empty() {
                    rng.pick(&self.apps)
                } else {
                    rng.pick(apps)
                };
                NetworkPolicyPeer::Pods {
                    namespaces: None,
                    pods: Some(sel(&[("app", app)])),
                }
            }
            // Pods of a team's namespaces.
            1 => NetworkPolicyPeer::Pods {
                namespaces: Some(sel(&[("team", rng.pick(TEAMS))])),
                pods: if rng.chance(0.5) {
                    None
                } else {
                    Some(sel(&[("app", rng.pick(&self.apps))]))
                },
            },
            // An app in one other namespace.
            2 => {
                let other = self.namespace(rng);
                let apps = &self.apps_by_namespace[other];
                let app = if apps.is_empty() {
                    rng.pick(&self.apps)
                } else {
                    rng.pick(apps)
                };
                NetworkPolicyPeer::Pods {
                    namespaces: Some(sel(&[(NAMESPACE_NAME_LABEL, &self.namespaces[other].name)])),
                    pods: Some(sel(&[("app", app)])),
                }
            }
            // The internet, minus the cluster and the metadata service.
            3 => NetworkPolicyPeer::IpBlock {
                cidr: net("0.0.0.0/0"),
                except: vec![net("10.0.0.0/8"), net("169.254.169.254/32")],
            },
            _ => {
                // A documentation range, sometimes without its upper half (an `except` must lie
                // inside its `cidr`, or validation refuses the policy).
                let (cidr, upper_half) = rng.pick(&[
                    ("203.0.113.0/24", "203.0.113.128/25"),
                    ("198.51.100.0/24", "198.51.100.128/25"),
                    ("2001:db8::/32", "2001:db8:8000::/33"),
                ]);
                NetworkPolicyPeer::IpBlock {
                    cidr: net(cidr),
                    except: if rng.chance(0.5) {
                        vec![net(upper_half)]
                    } else {
                        Vec::new()
                    },
                }
            }
        }
    }

    fn np_ports(&self, rng: &mut Rng) -> Vec<NetworkPolicyPort> {
        if rng.chance(0.2) {
            return Vec::new();
        }
        (0..rng.range(1, 2))
            .map(|_| match rng.weighted(&[40, 15, 10, 15, 10, 10]) {
                0 => NetworkPolicyPort {
                    protocol: Protocol::Tcp,
                    port: NetworkPolicyPortSpec::Range(PortRange::single(rng.pick(TCP_PORTS))),
                },
                1 => NetworkPolicyPort {
                    protocol: Protocol::Tcp,
                    port: NetworkPolicyPortSpec::Range(PortRange {
                        first: 8000,
                        last: 8999,
                    }),
                },
                2 => NetworkPolicyPort {
                    protocol: Protocol::Tcp,
                    port: NetworkPolicyPortSpec::Any,
                },
                3 => NetworkPolicyPort {
                    protocol: Protocol::Tcp,
                    port: NetworkPolicyPortSpec::Named("web".into()),
                },
                4 => NetworkPolicyPort {
                    protocol: Protocol::Udp,
                    port: NetworkPolicyPortSpec::Named("dns".into()),
                },
                _ => NetworkPolicyPort {
                    protocol: Protocol::Udp,
                    port: NetworkPolicyPortSpec::Range(PortRange::single(53)),
                },
            })
            .collect()
    }

    fn network_policies(&self, rng: &mut Rng, count: usize) -> Vec<NetworkPolicyRules> {
        let mut per_namespace = vec![0usize; self.namespaces.len()];
        (0..count)
            .map(|_| {
                let ns = self.namespace(rng);
                per_namespace[ns] += 1;
                let namespace = self.namespaces[ns].name.clone();
                let apps = &self.apps_by_namespace[ns];
                let app_selector = |rng: &mut Rng| {
                    if apps.is_empty() {
                        Selector::everything()
                    } else {
                        sel(&[("app", rng.pick(apps))])
                    }
                };
                let (kind, pod_selector, egress) = match rng.weighted(&[15, 15, 25, 45]) {
                    0 => (
                        "default-deny-egress",
                        Selector::everything(),
                        Some(Vec::new()),
                    ),
                    1 => (
                        "allow-dns",
                        Selector::everything(),
                        Some(vec![NetworkPolicyRule {
                            peers: vec![NetworkPolicyPeer::Pods {
                                namespaces: Some(sel(&[(NAMESPACE_NAME_LABEL, "kube-system")])),
                                pods: Some(sel(&[("k8s-app", "kube-dns")])),
                            }],
                            ports: vec![
                                NetworkPolicyPort {
                                    protocol: Protocol::Udp,
                                    port: NetworkPolicyPortSpec::Range(PortRange::single(53)),
                                },
                                NetworkPolicyPort {
                                    protocol: Protocol::Tcp,
                                    port: NetworkPolicyPortSpec::Range(PortRange::single(53)),
                                },
                            ],
                        }]),
                    ),
                    2 => ("ingress-only", app_selector(rng), None),
                    _ => {
                        let s = app_selector(rng);
                        let rules = (0..rng.range(1, 3))
                            .map(|_| NetworkPolicyRule {
                                peers: (0..rng.range(1, 3))
                                    .map(|_| self.np_peer(rng, ns))
                                    .collect(),
                                ports: self.np_ports(rng),
                            })
                            .collect();
                        ("app-egress", s, Some(rules))
                    }
                };
                NetworkPolicyRules {
                    name: format!("{kind}-{}", per_namespace[ns]),
                    namespace,
                    pod_selector,
                    egress,
                    origin: Origin::default(),
                }
            })
            .collect()
    }
}

/// Draws `count` varied flows from `world`: sources are pod IPs (a few host-network ones
/// among them), see [`flows_from`]; destinations are pods of the same namespace (30%), other pods (25%), CoreDNS
/// (10%), node addresses (10%) and external addresses (25%: documentation ranges, well-known
/// public resolvers, cloud metadata, unassigned `10.x`). Mostly TCP, with assorted ports.
/// IPv6 is used when both ends have it, some of the time.
pub fn flows(world: &World, count: usize, seed: u64) -> Vec<Flow<'static>> {
    flows_from(world, count, seed, |_| true)
}

/// Like [`flows`], with sources drawn only from the pods `source` accepts (for instance the
/// pods of one node: what one per-node gateway sees).
pub fn flows_from(
    world: &World,
    count: usize,
    seed: u64,
    source: impl Fn(&PodInfo) -> bool,
) -> Vec<Flow<'static>> {
    let mut rng = Rng::new(seed);
    let pods = &world.inventory.pods;
    let sources: Vec<&PodInfo> = pods.iter().filter(|p| source(p)).collect();
    assert!(!sources.is_empty(), "no pod is a possible source");
    let nodes = &world.inventory.nodes;
    let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in pods.iter().enumerate() {
        if !p.host_network {
            by_namespace.entry(&p.namespace).or_default().push(i);
        }
    }
    let coredns: Vec<usize> = (0..pods.len())
        .filter(|&i| {
            pods[i]
                .labels
                .get("k8s-app")
                .is_some_and(|v| v == "kube-dns")
        })
        .collect();
    let external_v4 = [
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(198, 51, 100, 7),
        Ipv4Addr::new(203, 0, 113, 20),
        Ipv4Addr::new(203, 0, 113, 200),
        Ipv4Addr::new(8, 8, 8, 8),
        Ipv4Addr::new(1, 1, 1, 1),
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(52, 94, 236, 248),
        Ipv4Addr::new(10, 150, 3, 4),
        Ipv4Addr::new(10, 0, 200, 1),
    ];
    let pick_family = |rng: &mut Rng, src: &[IpAddr], dst: &[IpAddr]| -> Option<(IpAddr, IpAddr)> {
        let v6 = |ips: &[IpAddr]| ips.iter().copied().find(IpAddr::is_ipv6);
        let v4 = |ips: &[IpAddr]| ips.iter().copied().find(IpAddr::is_ipv4);
        if let (Some(s), Some(d)) = (v6(src), v6(dst))
            && rng.chance(0.3)
        {
            return Some((s, d));
        }
        Some((v4(src)?, v4(dst)?))
    };
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let src_pod = sources[rng.below(sources.len())];
        let src_ips = &src_pod.ips;
        let (mut protocol, mut port) = if rng.chance(0.9) {
            (
                Protocol::Tcp,
                if rng.chance(0.85) {
                    rng.pick(TCP_PORTS)
                } else {
                    rng.range(1024, 65535) as u16
                },
            )
        } else {
            (Protocol::Udp, rng.pick(&[53, 123, 514, 8125, 5353]))
        };
        let addrs = match rng.weighted(&[30, 25, 10, 10, 25]) {
            0 => {
                let same: &[usize] = by_namespace
                    .get(src_pod.namespace.as_str())
                    .map_or(&[], Vec::as_slice);
                if same.is_empty() {
                    continue;
                }
                let dst = rng.pick(same);
                pick_family(&mut rng, src_ips, &pods[dst].ips)
            }
            1 => {
                let dst = &pods[rng.below(pods.len())];
                pick_family(&mut rng, src_ips, &dst.ips)
            }
            2 => {
                if coredns.is_empty() {
                    continue;
                }
                (protocol, port) = if rng.chance(0.9) {
                    (Protocol::Udp, 53)
                } else {
                    (Protocol::Tcp, 53)
                };
                let dst = rng.pick(&coredns);
                pick_family(&mut rng, src_ips, &pods[dst].ips)
            }
            3 => {
                if nodes.is_empty() {
                    continue;
                }
                if rng.chance(0.5) {
                    port = rng.pick(&[10250, 6443, 9100]);
                    protocol = Protocol::Tcp;
                }
                let node = &nodes[rng.below(nodes.len())];
                pick_family(&mut rng, src_ips, &node.addresses)
            }
            _ => {
                let v6_src = src_ips.iter().copied().find(IpAddr::is_ipv6);
                match v6_src {
                    Some(s) if rng.chance(0.3) => Some((
                        s,
                        IpAddr::V6(Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            rng.below(16) as u16,
                            0,
                            0,
                            0,
                            0,
                            1,
                        )),
                    )),
                    _ => src_ips
                        .iter()
                        .copied()
                        .find(IpAddr::is_ipv4)
                        .map(|s| (s, IpAddr::V4(rng.pick(&external_v4)))),
                }
            }
        };
        if let Some((src, dst)) = addrs {
            out.push(Flow {
                src,
                dst,
                protocol,
                port,
                names: &[],
                addressed: None,
            });
        }
    }
    out
}
