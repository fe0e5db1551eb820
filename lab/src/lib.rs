//! The network-namespace lab: a throwaway node with pods and outside hosts, built from
//! network namespaces and veth pairs, for the demo (`chokepoint-demo`) and the test suites.
//!
//! It is a crate of its own so that the product binary never contains it: `chokepoint`
//! does not depend on it, only the demo and the tests do.
//!
//! # What a lab owns
//!
//! A [`Lab`] owns, and removes again, exactly these things, all named with its own prefix
//! `ckp-<pid>-<n>` (unique per process and per lab, so labs built in parallel never collide):
//!
//! - one NODE network namespace `<prefix>-node`, where the gateway runs;
//! - one POD namespace per declared pod, `<prefix>-p<i>`;
//! - one OUTSIDE-host namespace per declared host, `<prefix>-h<i>`;
//! - one veth pair per pod and per host. Each pair is created directly *inside* the two
//!   namespaces it joins (`ip link add … netns A type veth peer … netns B`), so no lab
//!   interface ever exists in the machine's root namespace, and deleting a namespace
//!   destroys its pairs;
//! - the addresses, routes and sysctls inside those namespaces — forwarding and a relaxed
//!   `rp_filter` exist **only in the node namespace**. Nothing is ever changed in the root
//!   namespace, and the node has no route to the real network.
//!
//! Teardown happens in [`Lab::teardown`], in `Drop` (so also when a test panics, and when
//! the build itself fails half-way), and — for a process that dies without unwinding
//! (Ctrl-C, SIGKILL) — in a small *guardian*: an `sh` child in its own process group that
//! holds the read end of a pipe and deletes the lab's namespaces when the pipe closes
//! without the word `done`. Processes still running inside a deleted namespace keep it
//! alive (nameless, with its veths) until they exit; that never touches the root namespace.
//!
//! # Topology
//!
//! ```text
//!  pod i  <prefix>-p<i>                node  <prefix>-node                     host j  <prefix>-h<j>
//!  eth0 10.244.1.(10+i)/32   <-veth->  ckpod<i> 10.0.0.1/32
//!       fd00:244:1::(10+i)/128                  fe80::1/64, fd00:10::1/128
//!  default via 10.0.0.1                         route <pod ip>/32 dev ckpod<i>
//!  default via fe80::1 (IPv6)
//!                                      ckout<j> 10.0.0.1/32          <-veth->  eth0 <host ip>/32
//!                                               fe80::1/64, fd00:10::1/128          <host IPv6>/128
//!                                               route <host ip>/32 dev ckout<j>     default via 10.0.0.1
//!                                      no default route                             default via fe80::1 (IPv6)
//! ```
//!
//! The node's address ([`NODE_IPV4`], and [`NODE_IPV6`] with IPv6 on) sits unnumbered on every
//! node-side veth and is the pods' and the hosts' next hop, so packets between pods and hosts
//! are plainly routed by the node (IP forwarding on). Pod-facing node interfaces all start
//! with [`POD_IFACE_PREFIX`] (`iifname "ckpod*"` in nftables), host-facing ones with
//! [`HOST_IFACE_PREFIX`]. IPv6 is off unless [`Topology::ipv6`] turns it on.
//!
//! # Using a lab
//!
//! ```no_run
//! use chokepoint_lab::{HOST_A_IPV4, HostSpec, PodSpec, Topology};
//! use chokepoint_config::model::Protocol;
//! # fn demo() -> Result<(), chokepoint_lab::Error> {
//! let lab = Topology::new()
//!     .namespace("tenant-a", [("tenant", "a")])
//!     .pod(PodSpec::new("tenant-a", "web").label("app", "web").port(Some("http"), 8080, Protocol::Tcp))
//!     .host(HostSpec::new("example", HOST_A_IPV4))
//!     .host(HostSpec::metadata())
//!     .build()?;
//! std::fs::write("/tmp/inventory.yaml", lab.inventory_yaml()).unwrap();
//! let gateway = lab
//!     .command(lab.node_netns(), "target/debug/chokepoint")
//!     .args(["run", "--config", "gateway.yaml"])
//!     .spawn();
//! // … traffic from the probes (see [`probe`]), in-process with [`netns::run_in`] …
//! lab.teardown()
//! # }
//! ```

pub mod forge;
pub mod http;
pub mod imds;
pub mod kube_proxy;
pub mod netns;
pub mod probe;
pub mod rollout;
pub mod run;
pub mod services;

mod inventory;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use chokepoint_config::inventory::{ContainerPort, Inventory};
use chokepoint_config::model::{Labels, Protocol};

/// Prefix of every lab's names: `ckp-<pid>-<n>`.
pub const NAME_PREFIX: &str = "ckp";
/// Node-side names of the pod-facing veths: `ckpod0`, `ckpod1`, …
pub const POD_IFACE_PREFIX: &str = "ckpod";
/// Node-side names of the host-facing veths: `ckout0`, `ckout1`, …
pub const HOST_IFACE_PREFIX: &str = "ckout";
/// The interface name of a pod's or host's side of its veth.
pub const INNER_IFACE: &str = "eth0";

/// The node's IPv4 address: unnumbered on every node-side veth; every pod's and host's next hop.
pub const NODE_IPV4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The node's IPv6 address (with IPv6 on).
pub const NODE_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 1);
/// The node's link-local address on every node-side veth: the IPv6 next hop.
pub const NODE_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Documentation addresses for outside hosts (RFC 5737), and the metadata server's.
pub const HOST_A_IPV4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const HOST_B_IPV4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const HOST_C_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
pub const METADATA_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// At most this many pods, and at most this many hosts, per lab.
pub const MAX_MEMBERS: usize = 200;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Why a lab could not be built or torn down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid lab topology: {0}")]
    Invalid(String),
    #[error(
        "the network-namespace lab needs root (it runs `ip netns add`, creates veths and sets \
         sysctls inside its own namespaces); run as root"
    )]
    NotRoot,
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Fails with [`Error::NotRoot`] when this process cannot build a lab, and with a clear
/// message when `ip` (iproute2) is missing.
pub fn preflight() -> Result<(), Error> {
    if effective_uid() != Some(0) {
        return Err(Error::NotRoot);
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Error::Command {
            command: "ip -V".into(),
            status: s.to_string(),
            stderr: String::new(),
        }),
        Err(e) => Err(Error::io(
            "running `ip` (install iproute2, see scripts/setup.sh)",
        )(e)),
    }
}

/// For test suites: panics (the test fails, it is never skipped) unless [`preflight`] passes
/// and `nft` is installed, saying what to do. CI runs the suites as root.
pub fn require_root() {
    if let Err(e) = preflight() {
        panic!(
            "this test builds network namespaces and cannot run here: {e}. It fails rather than \
             skips on purpose: run the tests as root (after scripts/setup.sh)."
        );
    }
    let nft = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        nft.is_ok_and(|s| s.success()),
        "`nft` is missing: run scripts/setup.sh (apt-get install -y nftables iproute2)"
    );
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

// ------------------------------------------------------------------------------------ specs

/// A pod to create: Kubernetes identity (namespace, name, labels, container ports) plus,
/// optionally, a fixed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
    /// `None`: `10.244.1.(10+i)` for the i-th pod.
    pub ipv4: Option<Ipv4Addr>,
    /// `spec.serviceAccountName` in the inventory.
    pub service_account: Option<String>,
    pub annotations: Labels,
}

impl PodSpec {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            labels: Labels::new(),
            ports: Vec::new(),
            ipv4: None,
            service_account: None,
            annotations: Labels::new(),
        }
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// A container port; `name` is what `destinationNamedPort` refers to.
    pub fn port(mut self, name: Option<&str>, port: u16, protocol: Protocol) -> Self {
        self.ports.push(ContainerPort {
            name: name.map(str::to_owned),
            port,
            protocol,
        });
        self
    }

    pub fn ipv4(mut self, ip: Ipv4Addr) -> Self {
        self.ipv4 = Some(ip);
        self
    }

    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = Some(name.into());
        self
    }

    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
}

/// An outside host: a namespace with one address (and optionally an IPv6 one), reached
/// through the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// For lookups ([`Lab::host`]) and messages only.
    pub name: String,
    pub ipv4: Ipv4Addr,
    /// Used only when the topology has IPv6 on.
    pub ipv6: Option<Ipv6Addr>,
}

impl HostSpec {
    pub fn new(name: impl Into<String>, ipv4: Ipv4Addr) -> Self {
        HostSpec {
            name: name.into(),
            ipv4,
            ipv6: None,
        }
    }

    pub fn ipv6(mut self, ip: Ipv6Addr) -> Self {
        self.ipv6 = Some(ip);
        self
    }

    /// The cloud metadata server: `metadata`, 169.254.169.254 and fd00:ec2::254.
    pub fn metadata() -> Self {
        HostSpec::new("metadata", METADATA_IPV4).ipv6(METADATA_IPV6)
    }
}

/// Declares a lab; [`Topology::build`] creates it.
#[derive(Debug, Clone)]
pub struct Topology {
    node_name: String,
    ipv6: bool,
    namespaces: BTreeMap<String, Labels>,
    namespace_annotations: BTreeMap<String, Labels>,
    pods: Vec<PodSpec>,
    hosts: Vec<HostSpec>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

impl Topology {
    pub fn new() -> Self {
        Topology {
            node_name: "lab-node".into(),
            ipv6: false,
            namespaces: BTreeMap::new(),
            namespace_annotations: BTreeMap::new(),
            pods: Vec::new(),
            hosts: Vec::new(),
        }
    }

    /// The node's Kubernetes name (in the inventory); default `lab-node`.
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }

    /// Dual-stack: pods get `fd00:244:1::(10+i)`, the node [`NODE_IPV6`], hosts their
    /// [`HostSpec::ipv6`]. Off by default.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// Labels of a Kubernetes namespace (`kubernetes.io/metadata.name` is added). Namespaces
    /// that pods use are declared implicitly, without further labels.
    pub fn namespace<K, V>(
        mut self,
        name: impl Into<String>,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let entry = self.namespaces.entry(name.into()).or_default();
        entry.extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// An annotation of a Kubernetes namespace (declaring the namespace if needed).
    pub fn namespace_annotation(
        mut self,
        namespace: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let namespace = namespace.into();
        self.namespaces.entry(namespace.clone()).or_default();
        self.namespace_annotations
            .entry(namespace)
            .or_default()
            .insert(key.into(), value.into());
        self
    }

    pub fn pod(mut self, pod: PodSpec) -> Self {
        self.pods.push(pod);
        self
    }

    pub fn host(mut self, host: HostSpec) -> Self {
        self.hosts.push(host);
        self
    }

    /// Creates the namespaces, veths, addresses, routes and sysctls. On any failure what was
    /// already created is removed again before the error is returned.
    pub fn build(self) -> Result<Lab, Error> {
        preflight()?;
        let plan = self.plan()?;
        let prefix = unique_prefix();
        let mut lab = Lab::planned(prefix, self, plan);
        let guardian = Guardian::spawn(&lab.netns_names())?;
        lab.guardian = Some(guardian);
        lab.create()?;
        Ok(lab)
    }

    /// Addresses for every pod, checked for duplicates.
    fn plan(&self) -> Result<Vec<(Ipv4Addr, Option<Ipv6Addr>)>, Error> {
        if self.pods.len() > MAX_MEMBERS || self.hosts.len() > MAX_MEMBERS {
            return Err(Error::Invalid(format!(
                "at most {MAX_MEMBERS} pods and {MAX_MEMBERS} hosts per lab"
            )));
        }
        let mut names = BTreeSet::new();
        let mut ips: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut claim = |ip: IpAddr, who: String| match ips.get(&ip) {
            Some(other) => Err(Error::Invalid(format!("{who} and {other} both have {ip}"))),
            None => {
                ips.insert(ip, who);
                Ok(())
            }
        };
        claim(NODE_IPV4.into(), "the node".into())?;
        claim(NODE_IPV6.into(), "the node".into())?;
        let mut plan = Vec::new();
        for (i, pod) in self.pods.iter().enumerate() {
            let who = format!("pod {}/{}", pod.namespace, pod.name);
            if pod.namespace.is_empty() || pod.name.is_empty() {
                return Err(Error::Invalid(format!(
                    "{who} needs a namespace and a name"
                )));
            }
            if !names.insert((pod.namespace.clone(), pod.name.clone())) {
                return Err(Error::Invalid(format!("{who} is declared twice")));
            }
            let n = u8::try_from(10 + i).expect("MAX_MEMBERS keeps this in range");
            let v4 = pod.ipv4.unwrap_or(Ipv4Addr::new(10, 244, 1, n));
            if !is_host_address(v4) {
                return Err(Error::Invalid(format!("{who}: {v4} is not a host address")));
            }
            let v6 = self.ipv6.then(|| pod_ipv6(i));
            claim(v4.into(), who.clone())?;
            if let Some(v6) = v6 {
                claim(v6.into(), who.clone())?;
            }
            plan.push((v4, v6));
        }
        let mut host_names = BTreeSet::new();
        for host in &self.hosts {
            let who = format!("host {}", host.name);
            if !host_names.insert(host.name.clone()) {
                return Err(Error::Invalid(format!("{who} is declared twice")));
            }
            if !is_host_address(host.ipv4) {
                return Err(Error::Invalid(format!(
                    "{who}: {} is not a host address",
                    host.ipv4
                )));
            }
            claim(host.ipv4.into(), who.clone())?;
            if self.ipv6
                && let Some(v6) = host.ipv6
            {
                claim(v6.into(), who.clone())?;
            }
        }
        Ok(plan)
    }
}

fn is_host_address(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

/// `fd00:244:1::<10+i>`, written with the same digits as the IPv4 address's last octet (as
/// the example inventory does: 10.244.1.10 ↔ fd00:244:1::10).
fn pod_ipv6(i: usize) -> Ipv6Addr {
    format!("fd00:244:1::{}", 10 + i)
        .parse()
        .expect("a valid IPv6 address")
}

fn unique_prefix() -> String {
    let pid = std::process::id();
    loop {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NAME_PREFIX}-{pid}-{n}");
        // Left over by an earlier process with the same pid whose guardian could not run?
        // Never reuse (nor delete) it; just take the next number.
        let taken = std::fs::read_dir(netns::NETNS_DIR).is_ok_and(|entries| {
            let mine = format!("{prefix}-");
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(&mine))
        });
        if !taken {
            return prefix;
        }
    }
}

// ------------------------------------------------------------------------------------ lab

/// The node of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNode {
    /// Kubernetes name, as in the inventory.
    pub name: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
}

/// A pod of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    /// The node side of its veth (`ckpod<i>`); inside the pod it is `eth0`.
    pub node_iface: String,
    pub service_account: Option<String>,
    pub annotations: Labels,
}

impl LabPod {
    /// IPv4 first, then IPv6 if any.
    pub fn ips(&self) -> Vec<IpAddr> {
        std::iter::once(IpAddr::V4(self.ipv4))
            .chain(self.ipv6.map(IpAddr::V6))
            .collect()
    }
}

/// An outside host of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabHost {
    pub name: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    /// The node side of its veth (`ckout<j>`); inside the host it is `eth0`.
    pub node_iface: String,
}

/// A built lab; see the [module documentation](self). Dropping it tears it down.
pub struct Lab {
    prefix: String,
    node: LabNode,
    pods: Vec<LabPod>,
    hosts: Vec<LabHost>,
    namespaces: BTreeMap<String, Labels>,
    namespace_annotations: BTreeMap<String, Labels>,
    ipv6: bool,
    /// Namespaces that exist now, in creation order.
    created: Vec<String>,
    guardian: Option<Guardian>,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("pods", &self.pods)
            .field("hosts", &self.hosts)
            .field("ipv6", &self.ipv6)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Lab {
    fn planned(prefix: String, topo: Topology, plan: Vec<(Ipv4Addr, Option<Ipv6Addr>)>) -> Lab {
        let mut namespaces = topo.namespaces;
        let pods: Vec<LabPod> = topo
            .pods
            .into_iter()
            .zip(plan)
            .enumerate()
            .map(|(i, (spec, (ipv4, ipv6)))| {
                namespaces.entry(spec.namespace.clone()).or_default();
                LabPod {
                    namespace: spec.namespace,
                    name: spec.name,
                    labels: spec.labels,
                    ports: spec.ports,
                    netns: format!("{prefix}-p{i}"),
                    ipv4,
                    ipv6,
                    node_iface: format!("{POD_IFACE_PREFIX}{i}"),
                    service_account: spec.service_account,
                    annotations: spec.annotations,
                }
            })
            .collect();
        let hosts = topo
            .hosts
            .into_iter()
            .enumerate()
            .map(|(j, spec)| LabHost {
                name: spec.name,
                netns: format!("{prefix}-h{j}"),
                ipv4: spec.ipv4,
                ipv6: spec.ipv6.filter(|_| topo.ipv6),
                node_iface: format!("{HOST_IFACE_PREFIX}{j}"),
            })
            .collect();
        Lab {
            node: LabNode {
                name: topo.node_name,
                netns: format!("{prefix}-node"),
                ipv4: NODE_IPV4,
                ipv6: topo.ipv6.then_some(NODE_IPV6),
            },
            prefix,
            pods,
            hosts,
            namespaces,
            namespace_annotations: topo.namespace_annotations,
            ipv6: topo.ipv6,
            created: Vec::new(),
            guardian: None,
        }
    }

    fn create(&mut self) -> Result<(), Error> {
        for name in self.netns_names() {
            ip(&["netns", "add", &name])?;
            self.created.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        let node = self.node.netns.clone();
        // Before the veths exist, so that they inherit `default`; set per interface below too.
        let mut node_sysctls = vec![
            "net.ipv4.ip_forward=1".to_owned(),
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            "net.ipv4.conf.default.rp_filter=0".to_owned(),
        ];
        if self.ipv6 {
            node_sysctls.push("net.ipv6.conf.all.forwarding=1".to_owned());
        }
        sysctl(&node, &node_sysctls)?;

        // `lo` existed before `default` was relaxed (TPROXY delivers through it).
        let mut ifaces = vec!["net.ipv4.conf.lo.rp_filter=0".to_owned()];
        let links = self
            .pods
            .iter()
            .map(|p| (&p.netns, &p.node_iface, IpAddr::V4(p.ipv4), p.ipv6))
            .chain(
                self.hosts
                    .iter()
                    .map(|h| (&h.netns, &h.node_iface, IpAddr::V4(h.ipv4), h.ipv6)),
            );
        for (inner, node_iface, v4, v6) in links {
            self.link(inner, node_iface, v4, v6)?;
            ifaces.push(format!("net.ipv4.conf.{node_iface}.rp_filter=0"));
        }
        sysctl(&node, &ifaces)?;
        Ok(())
    }

    /// One veth between the node and `inner` (a pod or a host), addressed and routed both ways.
    fn link(
        &self,
        inner: &str,
        node_iface: &str,
        v4: IpAddr,
        v6: Option<Ipv6Addr>,
    ) -> Result<(), Error> {
        let node = self.node.netns.as_str();
        let node_v4 = NODE_IPV4.to_string();
        let node_ll = NODE_LINK_LOCAL.to_string();
        ip(&[
            "link",
            "add",
            "name",
            node_iface,
            "netns",
            node,
            "type",
            "veth",
            "peer",
            "name",
            INNER_IFACE,
            "netns",
            inner,
        ])?;
        // Node side: unnumbered, the member's address routed to this interface.
        ip(&[
            "-n",
            node,
            "addr",
            "add",
            &format!("{node_v4}/32"),
            "dev",
            node_iface,
        ])?;
        ip(&["-n", node, "link", "set", node_iface, "up"])?;
        ip(&[
            "-n",
            node,
            "route",
            "add",
            &format!("{v4}/32"),
            "dev",
            node_iface,
        ])?;
        // Member side: its address, the node on-link, the node as the default gateway.
        ip(&[
            "-n",
            inner,
            "addr",
            "add",
            &format!("{v4}/32"),
            "dev",
            INNER_IFACE,
        ])?;
        ip(&["-n", inner, "link", "set", INNER_IFACE, "up"])?;
        ip(&[
            "-n",
            inner,
            "route",
            "add",
            &format!("{node_v4}/32"),
            "dev",
            INNER_IFACE,
            "scope",
            "link",
        ])?;
        ip(&[
            "-n",
            inner,
            "route",
            "add",
            "default",
            "via",
            &node_v4,
            "dev",
            INNER_IFACE,
            "src",
            &v4.to_string(),
        ])?;
        if self.ipv6 {
            let node_v6 = NODE_IPV6.to_string();
            ip(&[
                "-n",
                node,
                "addr",
                "add",
                &format!("{node_ll}/64"),
                "dev",
                node_iface,
                "nodad",
            ])?;
            ip(&[
                "-n",
                node,
                "addr",
                "add",
                &format!("{node_v6}/128"),
                "dev",
                node_iface,
                "nodad",
            ])?;
            if let Some(v6) = v6 {
                ip(&[
                    "-n",
                    node,
                    "-6",
                    "route",
                    "add",
                    &format!("{v6}/128"),
                    "dev",
                    node_iface,
                ])?;
                ip(&[
                    "-n",
                    inner,
                    "addr",
                    "add",
                    &format!("{v6}/128"),
                    "dev",
                    INNER_IFACE,
                    "nodad",
                ])?;
            }
            ip(&[
                "-n",
                inner,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &node_ll,
                "dev",
                INNER_IFACE,
            ])?;
        }
        Ok(())
    }

    /// `ckp-<pid>-<n>`: every name this lab creates starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn node(&self) -> &LabNode {
        &self.node
    }

    /// The node's network namespace, where the gateway runs.
    pub fn node_netns(&self) -> &str {
        &self.node.netns
    }

    pub fn pods(&self) -> &[LabPod] {
        &self.pods
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&LabPod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> Option<&LabHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    /// Every network namespace of the lab: the node, then the pods, then the hosts.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.node.netns.clone())
            .chain(self.pods.iter().map(|p| p.netns.clone()))
            .chain(self.hosts.iter().map(|h| h.netns.clone()))
            .collect()
    }

    /// The common prefix of the node's pod-facing interfaces (`ckpod`).
    pub fn pod_iface_prefix(&self) -> &'static str {
        POD_IFACE_PREFIX
    }

    /// The nftables `iifname` wildcard for traffic from pods: `ckpod*`.
    pub fn pod_iface_pattern(&self) -> String {
        format!("{POD_IFACE_PREFIX}*")
    }

    /// `ip netns exec <netns> <program>` — see [`netns::command`].
    pub fn command(&self, netns: &str, program: impl AsRef<OsStr>) -> Command {
        netns::command(netns, program)
    }

    /// Runs `f` on a thread inside `netns` — see [`netns::run_in`].
    pub fn run_in<F, T>(&self, netns: &str, f: F) -> io::Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        netns::run_in(netns, f)
    }

    /// The lab as the inventory chokepoint decides with (what [`Lab::inventory_yaml`] loads as).
    pub fn inventory(&self) -> Inventory {
        inventory::inventory(self)
    }

    /// The lab as `kubectl get ns,pods,nodes -A -o yaml` would print it: a `kind: List` of the
    /// Namespaces (with labels), the Pods (labels, podIP/podIPs, container ports, nodeName)
    /// and the one Node (its addresses), for `chokepoint run|explain --inventory`.
    pub fn inventory_yaml(&self) -> String {
        inventory::yaml(self)
    }

    /// Removes everything the lab created and reports what could not be removed. Dropping a
    /// lab does the same, printing failures to stderr.
    pub fn teardown(mut self) -> Result<(), Error> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        while let Some(name) = self.created.pop() {
            if let Err(e) = ip(&["netns", "del", &name])
                && netns::exists(&name)
            {
                first_error.get_or_insert(e);
            }
        }
        if let Some(guardian) = self.guardian.take() {
            // When something could not be removed, let the guardian try once more.
            guardian.finish(first_error.is_none());
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            eprintln!("chokepoint lab {}: teardown: {e}", self.prefix);
        }
    }
}

// ------------------------------------------------------------------------------------ helpers

/// Runs `ip ARGS…` and turns a failure into an error that names the command.
fn ip(args: &[&str]) -> Result<(), Error> {
    run(Command::new("ip").args(args), || {
        format!("ip {}", args.join(" "))
    })
}

/// `sysctl -w` inside a lab namespace (never in the root one).
fn sysctl(netns: &str, settings: &[String]) -> Result<(), Error> {
    let mut cmd = netns::command(netns, "sysctl");
    cmd.arg("-q").arg("-w").args(settings);
    run(&mut cmd, || {
        format!("ip netns exec {netns} sysctl -q -w {}", settings.join(" "))
    })
}

fn run(cmd: &mut Command, describe: impl Fn() -> String) -> Result<(), Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running `{}`", describe()))(e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: describe(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// Deletes the lab's namespaces if this process dies without tearing the lab down (Ctrl-C,
/// SIGKILL, abort): an `sh` in its own process group (so a terminal's Ctrl-C does not reach
/// it), blocked reading a pipe whose only writer is this process. Orderly teardown writes
/// `done`; any other end of the pipe means "clean up".
struct Guardian {
    child: Child,
    stdin: Option<ChildStdin>,
}

const GUARDIAN_SCRIPT: &str = r#"trap '' INT HUP
IFS= read -r line
[ "$line" = done ] && exit 0
for ns in "$@"; do ip netns del "$ns" 2>/dev/null; done
exit 0"#;

impl Guardian {
    fn spawn(netns_names: &[String]) -> Result<Guardian, Error> {
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(GUARDIAN_SCRIPT)
            .arg("chokepoint-lab-guardian")
            .args(netns_names)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(Error::io("starting the lab's cleanup guardian (sh)"))?;
        let stdin = child.stdin.take();
        Ok(Guardian { child, stdin })
    }

    fn finish(mut self, done: bool) {
        if let Some(mut stdin) = self.stdin.take()
            && done
        {
            // If the guardian is already gone there is nothing left to tell it.
            let _ = stdin.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // Only reached without `finish` if a lab is dropped half-built by a panic; closing
        // the pipe makes the guardian clean up, and waiting reaps it.
        self.stdin.take();
        let _ = self.child.wait();
    }
}
