//! Services in the lab: ClusterIPs that the lab's node translates with the real mechanism,
//! and the Service and EndpointSlice objects the gateway's inventory gets for them.
//!
//! [`ServiceProxy::Nftables`] writes the tables kube-proxy's nftables mode writes (`ip
//! kube-proxy` and `ip6 kube-proxy`): a `service-ips` verdict map `ClusterIP . protocol . port`
//! → one chain per Service port, which picks an endpoint with `numgen random mod N vmap` and
//! jumps to a chain per endpoint that `dnat`s to it, at `prerouting` (priority `dstnat`) for
//! pods and at `output` for the node's own sockets; a Service port without ready endpoints is
//! in `no-endpoint-services` instead, whose packets the `input`/`forward`/`output` filter
//! chains `reject` (kube-proxy's `reject-chain`). The node routes the ClusterIPs to a device
//! that goes nowhere, as a real node's default route would route them: locally made packets
//! need a route before the `output` DNAT re-routes them to the endpoint.
//!
//! [`ServiceProxy::LocalVips`] is what a pod's packet meets on a node whose kube-proxy runs in
//! IPVS mode: every ClusterIP is a local address of the node (on `kube-ipvs0`) and
//! nothing translates it before the capture (IPVS does at `input`, after it; the IPVS module
//! itself is not in this lab's kernel, so the lab stops there).
//!
//! The tables and devices live in the node namespace and go with it at teardown.

use std::fmt::Write as _;
use std::net::IpAddr;

use chokepoint_config::model::{Labels, Protocol};

use super::{Error, Lab, run};

/// The device holding the ClusterIPs in [`ServiceProxy::LocalVips`] mode.
pub const IPVS_DEVICE: &str = "kube-ipvs0";
/// The device the ClusterIPs are routed to in [`ServiceProxy::Nftables`] mode.
pub const SERVICE_ROUTE_DEVICE: &str = "kube-svc0";

/// How the lab's node treats ClusterIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceProxy {
    /// kube-proxy's nftables mode: DNAT at `prerouting`/`output`, before the capture.
    Nftables,
    /// kube-proxy's IPVS mode as the capture sees it: the ClusterIPs are the node's own
    /// addresses and arrive untranslated.
    LocalVips,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortSpec {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    /// The endpoints' port.
    pub target_port: u16,
}

/// A Service: its ClusterIPs (one per family), ports, and endpoints: the pods of its
/// namespace its selector matches, plus explicit addresses (a Service without selector,
/// like one for a server outside the cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub selector: Option<Labels>,
    pub ports: Vec<ServicePortSpec>,
    pub addresses: Vec<IpAddr>,
}

impl ServiceSpec {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, cluster_ip: IpAddr) -> Self {
        ServiceSpec {
            namespace: namespace.into(),
            name: name.into(),
            cluster_ips: vec![cluster_ip],
            selector: None,
            ports: Vec::new(),
            addresses: Vec::new(),
        }
    }

    /// A second ClusterIP (dual-stack: one per family).
    pub fn cluster_ip(mut self, ip: IpAddr) -> Self {
        self.cluster_ips.push(ip);
        self
    }

    pub fn selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.selector
            .get_or_insert_with(Labels::new)
            .insert(key.into(), value.into());
        self
    }

    pub fn port(mut self, name: Option<&str>, port: u16, protocol: Protocol, target: u16) -> Self {
        self.ports.push(ServicePortSpec {
            name: name.map(str::to_owned),
            port,
            protocol,
            target_port: target,
        });
        self
    }

    /// An endpoint address that is no lab pod (e.g. a lab host).
    pub fn endpoint(mut self, ip: IpAddr) -> Self {
        self.addresses.push(ip);
        self
    }
}

/// The lab's Services with their endpoints resolved against its pods.
#[derive(Debug, Clone)]
pub struct LabServices {
    services: Vec<(ServiceSpec, Vec<IpAddr>)>,
}

impl LabServices {
    /// Resolves each Service's endpoints: the ready lab pods of its namespace whose labels
    /// include its selector (every address of each), then its explicit addresses.
    pub fn new(lab: &Lab, specs: impl IntoIterator<Item = ServiceSpec>) -> LabServices {
        let services = specs
            .into_iter()
            .map(|spec| {
                let mut endpoints: Vec<IpAddr> = lab
                    .pods()
                    .iter()
                    .filter(|p| p.namespace == spec.namespace)
                    .filter(|p| {
                        spec.selector
                            .as_ref()
                            .is_some_and(|sel| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                    })
                    .flat_map(|p| p.ips())
                    .collect();
                endpoints.extend(spec.addresses.iter().copied());
                (spec, endpoints)
            })
            .collect();
        LabServices { services }
    }

    /// The ready endpoint addresses of `namespace/name` (both families).
    pub fn endpoints(&self, namespace: &str, name: &str) -> &[IpAddr] {
        self.services
            .iter()
            .find(|(s, _)| s.namespace == namespace && s.name == name)
            .map(|(_, e)| e.as_slice())
            .unwrap_or_default()
    }

    /// Makes the node treat the ClusterIPs the way `proxy` says.
    pub fn install(&self, lab: &Lab, proxy: ServiceProxy) -> Result<(), Error> {
        let node = lab.node_netns();
        let ip = |args: &[&str]| {
            let mut cmd = lab.command(node, "ip");
            cmd.args(args);
            super::run(&mut cmd, || format!("ip {}", args.join(" ")))
        };
        // A veth pair inside the node with only one end up stands in for a dummy device
        // (not every kernel has them): packets routed there go nowhere.
        let stub = |name: &str| {
            let peer = format!("{name}p");
            ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", name, "up"])
        };
        match proxy {
            ServiceProxy::Nftables => {
                stub(SERVICE_ROUTE_DEVICE)?;
                for ip_addr in self.cluster_ips() {
                    let prefix = if ip_addr.is_ipv4() { 32 } else { 128 };
                    ip(&[
                        "route",
                        "add",
                        &format!("{ip_addr}/{prefix}"),
                        "dev",
                        SERVICE_ROUTE_DEVICE,
                    ])?;
                }
                nft_apply(lab, &self.nft_script())
            }
            ServiceProxy::LocalVips => {
                stub(IPVS_DEVICE)?;
                for ip_addr in self.cluster_ips() {
                    let mut args = vec!["addr", "add"];
                    let cidr = if ip_addr.is_ipv4() {
                        format!("{ip_addr}/32")
                    } else {
                        format!("{ip_addr}/128")
                    };
                    args.extend([cidr.as_str(), "dev", IPVS_DEVICE]);
                    if ip_addr.is_ipv6() {
                        args.push("nodad");
                    }
                    ip(&args)?;
                }
                Ok(())
            }
        }
    }

    fn cluster_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.services
            .iter()
            .flat_map(|(s, _)| s.cluster_ips.iter().copied())
    }

    /// The `kube-proxy` tables of both families, as one `nft -f` script that replaces them.
    pub fn nft_script(&self) -> String {
        let mut out = String::new();
        for (family, v6) in [("ip", false), ("ip6", true)] {
            render_family(&mut out, family, v6, &self.services);
        }
        out
    }

    /// The Services and their EndpointSlices (one per family with endpoints) as inventory
    /// YAML documents, each starting with `---`.
    pub fn inventory_yaml(&self) -> String {
        let mut out = String::new();
        for (spec, endpoints) in &self.services {
            service_yaml(&mut out, spec);
            for v6 in [false, true] {
                let addrs: Vec<&IpAddr> = endpoints.iter().filter(|a| a.is_ipv6() == v6).collect();
                if addrs.is_empty() || !spec.cluster_ips.iter().any(|c| c.is_ipv6() == v6) {
                    continue;
                }
                slice_yaml(&mut out, spec, v6, &addrs);
            }
        }
        out
    }
}

/// `nft -f` in the node namespace (through a file: the lab's commands get no stdin).
fn nft_apply(lab: &Lab, script: &str) -> Result<(), Error> {
    let dir = run::TempDir::new("kube-proxy");
    let file = dir.path().join("kube-proxy.nft");
    std::fs::write(&file, script).map_err(Error::io(format!("writing {}", file.display())))?;
    let mut cmd = lab.command(lab.node_netns(), "nft");
    cmd.arg("-f").arg(&file);
    super::run(&mut cmd, || {
        format!("nft -f {} (kube-proxy tables)", file.display())
    })
}

/// nft's and our spelling (`tcp`); Kubernetes' is the upper-case one.
fn proto(p: Protocol) -> String {
    p.to_string()
}

/// kube-proxy's chain names: `service-<ns>/<name>/<proto>/<port name>` and
/// `endpoint-<same>__<ip>/<port>` (without its hash prefix).
fn port_id(spec: &ServiceSpec, port: &ServicePortSpec) -> String {
    let name = port.name.clone().unwrap_or_else(|| port.port.to_string());
    format!(
        "{}/{}/{}/{name}",
        spec.namespace,
        spec.name,
        proto(port.protocol)
    )
}

/// nft names cannot hold `:`; an IPv6 endpoint's is written with `.`.
fn endpoint_chain(id: &str, ep: &IpAddr, port: &ServicePortSpec) -> String {
    let ep = ep.to_string().replace(':', ".");
    format!("endpoint-{id}__{ep}/{}", port.target_port)
}

fn render_family(
    out: &mut String,
    family: &str,
    v6: bool,
    services: &[(ServiceSpec, Vec<IpAddr>)],
) {
    let (addr_type, daddr) = if v6 {
        ("ipv6_addr", "ip6 daddr")
    } else {
        ("ipv4_addr", "ip daddr")
    };
    let mut map_elements = Vec::new();
    let mut no_endpoints = Vec::new();
    let mut chains = String::new();
    for (spec, endpoints) in services {
        let family_endpoints: Vec<IpAddr> = endpoints
            .iter()
            .copied()
            .filter(|a| a.is_ipv6() == v6)
            .collect();
        for cluster_ip in spec.cluster_ips.iter().filter(|c| c.is_ipv6() == v6) {
            for port in &spec.ports {
                let id = port_id(spec, port);
                let key = format!("{cluster_ip} . {} . {}", proto(port.protocol), port.port);
                if family_endpoints.is_empty() {
                    no_endpoints.push(format!(
                        "{key} comment \"{}/{}:{}\" : goto reject-chain",
                        spec.namespace,
                        spec.name,
                        port.name.as_deref().unwrap_or("")
                    ));
                    continue;
                }
                map_elements.push(format!("{key} : goto service-{id}"));
                let choices = family_endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(&id, ep, port)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    chains,
                    "\tchain service-{id} {{\n\t\tnumgen random mod {} vmap {{ {choices} }}\n\t}}",
                    family_endpoints.len()
                );
                for ep in &family_endpoints {
                    let target = if v6 {
                        format!("[{ep}]:{}", port.target_port)
                    } else {
                        format!("{ep}:{}", port.target_port)
                    };
                    let _ = writeln!(
                        chains,
                        "\tchain {} {{\n\t\tmeta l4proto {} dnat to {target}\n\t}}",
                        endpoint_chain(&id, ep, port),
                        proto(port.protocol)
                    );
                }
            }
        }
    }
    let elements = |items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!("\t\telements = {{ {} }}\n", items.join(", "))
        }
    };
    let _ = write!(
        out,
        "table {family} kube-proxy\n\
         delete table {family} kube-proxy\n\
         table {family} kube-proxy {{\n\
         \tcomment \"rules for kube-proxy\"\n\
         \tmap service-ips {{\n\
         \t\ttype {addr_type} . inet_proto . inet_service : verdict\n\
         {}\t}}\n\
         \tmap no-endpoint-services {{\n\
         \t\ttype {addr_type} . inet_proto . inet_service : verdict\n\
         {}\t}}\n\
         \tchain nat-prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}}\n\
         \tchain nat-output {{\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}}\n\
         \tchain filter-input {{\n\t\ttype filter hook input priority 0; policy accept;\n\t\tct state new jump service-endpoints-check\n\t}}\n\
         \tchain filter-forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tct state new jump service-endpoints-check\n\t}}\n\
         \tchain filter-output {{\n\t\ttype filter hook output priority 0; policy accept;\n\t\tct state new jump service-endpoints-check\n\t}}\n\
         \tchain service-endpoints-check {{\n\t\t{daddr} . meta l4proto . th dport vmap @no-endpoint-services\n\t}}\n\
         \tchain services {{\n\t\t{daddr} . meta l4proto . th dport vmap @service-ips\n\t}}\n\
         \tchain reject-chain {{\n\t\treject\n\t}}\n\
         {chains}}}\n",
        elements(&map_elements),
        elements(&no_endpoints),
    );
}

fn service_yaml(out: &mut String, spec: &ServiceSpec) {
    let ips = spec
        .cluster_ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    let _ = writeln!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: {}, name: {}}}\nspec:\n  type: ClusterIP\n  clusterIP: {}\n  clusterIPs: [{}]",
        spec.namespace,
        spec.name,
        ips[0],
        ips.join(", ")
    );
    if let Some(sel) = &spec.selector {
        let sel = sel
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "  selector: {{{sel}}}");
    }
    let _ = writeln!(out, "  ports:");
    for p in &spec.ports {
        let name = p
            .name
            .as_deref()
            .map(|n| format!("name: {n}, "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  - {{{name}port: {}, protocol: {}, targetPort: {}}}",
            p.port,
            proto(p.protocol).to_uppercase(),
            p.target_port
        );
    }
}

fn slice_yaml(out: &mut String, spec: &ServiceSpec, v6: bool, addrs: &[&IpAddr]) {
    let (suffix, ty) = if v6 { ("v6", "IPv6") } else { ("v4", "IPv4") };
    let _ = writeln!(
        out,
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: {ns}\n  name: {name}-{suffix}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: {ty}\nendpoints:",
        ns = spec.namespace,
        name = spec.name,
    );
    for a in addrs {
        let _ = writeln!(
            out,
            "- {{addresses: [\"{a}\"], conditions: {{ready: true}}}}"
        );
    }
    let _ = writeln!(out, "ports:");
    for p in &spec.ports {
        let name = p
            .name
            .as_deref()
            .map(|n| format!("name: {n}, "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {{{name}port: {}, protocol: {}}}",
            p.target_port,
            proto(p.protocol).to_uppercase()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> LabServices {
        let db = ServiceSpec::new("db", "db", "10.96.0.20".parse().unwrap())
            .cluster_ip("fd00:96::20".parse().unwrap())
            .port(Some("pg"), 5432, Protocol::Tcp, 5433);
        let empty = ServiceSpec::new("db", "empty", "10.96.0.30".parse().unwrap()).port(
            None,
            80,
            Protocol::Tcp,
            8080,
        );
        LabServices {
            services: vec![
                (
                    db,
                    vec![
                        "10.244.1.10".parse().unwrap(),
                        "10.244.1.11".parse().unwrap(),
                        "fd00:244:1::10".parse().unwrap(),
                    ],
                ),
                (empty, Vec::new()),
            ],
        }
    }

    #[test]
    fn each_family_gets_a_service_map_a_random_endpoint_choice_and_a_dnat_per_endpoint() {
        let nft = services().nft_script();
        let (v4, v6) = nft.split_at(nft.find("table ip6 kube-proxy\n").unwrap());
        assert!(
            v4.contains("10.96.0.20 . tcp . 5432 : goto service-db/db/tcp/pg"),
            "{v4}"
        );
        assert!(v4.contains("numgen random mod 2 vmap { 0 : goto endpoint-db/db/tcp/pg__10.244.1.10/5433, 1 : goto endpoint-db/db/tcp/pg__10.244.1.11/5433 }"), "{v4}");
        assert!(
            v4.contains("meta l4proto tcp dnat to 10.244.1.11:5433"),
            "{v4}"
        );
        assert!(v6.contains("numgen random mod 1 vmap"), "{v6}");
        assert!(v6.contains("dnat to [fd00:244:1::10]:5433"), "{v6}");
        assert!(!v6.contains("10.244.1.10"), "{v6}");
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_not_translated() {
        let nft = services().nft_script();
        assert!(
            nft.contains("10.96.0.30 . tcp . 80 comment \"db/empty:\" : goto reject-chain"),
            "{nft}"
        );
        assert!(!nft.contains("service-db/empty"), "{nft}");
        assert!(
            nft.contains("ct state new jump service-endpoints-check"),
            "{nft}"
        );
    }

    #[test]
    fn the_inventory_has_the_services_and_one_slice_per_family_with_endpoints() {
        let yaml = services().inventory_yaml();
        assert_eq!(yaml.matches("kind: Service\n").count(), 2, "{yaml}");
        assert!(
            yaml.contains("clusterIPs: [10.96.0.20, fd00:96::20]"),
            "{yaml}"
        );
        assert!(yaml.contains("name: db-v4"), "{yaml}");
        assert!(yaml.contains("name: db-v6"), "{yaml}");
        assert!(!yaml.contains("empty-v4"), "{yaml}");
        assert!(
            yaml.contains("- {name: pg, port: 5433, protocol: TCP}"),
            "{yaml}"
        );
    }
}
