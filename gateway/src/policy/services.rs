//! The Services of a snapshot: which Service port a `ClusterIP:port` is, and the ready
//! backends behind each Service port.
//!
//! A [`ServiceRef`] names one port of one Service on one of its ClusterIPs (a dual-stack
//! Service has a ref per family, each with the backends of its family, as kube-proxy programs
//! them); a headless Service has one ref per port, without ClusterIP, with the backends of
//! every family. Everything is computed when the snapshot is compiled: looking up a Service
//! or its backends allocates nothing.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use chokepoint_config::inventory::{
    AddressType, EndpointSliceInfo, Inventory, ServiceInfo, ServicePort, TargetPort,
};
use chokepoint_config::model::{Protocol, ServicePeer};

use super::snapshot::{IpHasher, Snapshot};

/// One port of one Service on one ClusterIP (or of a headless Service). Resolve it with
/// [`Snapshot::service`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceRef(pub u32);

/// What a [`ServiceRef`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePortView<'s> {
    pub namespace: &'s str,
    pub name: &'s str,
    /// The Service port's name (`None` for the unnamed port of a one-port Service).
    pub port_name: Option<&'s str>,
    pub port: u16,
    pub protocol: Protocol,
    /// `None` for a headless Service.
    pub cluster_ip: Option<IpAddr>,
}

/// The Service half of a snapshot.
#[derive(Debug, Default)]
pub(super) struct ServiceIndex {
    services: Vec<ServiceInfo>,
    /// The refs of one Service are adjacent.
    ports: Vec<PortEntry>,
    /// The ready backends of every ref, each ref's sorted and adjacent.
    backends: Vec<SocketAddr>,
    by_address: HashMap<(IpAddr, u16, Protocol), u32, BuildHasherDefault<IpHasher>>,
    /// `(namespace, name)` → the Service's index in `services`.
    by_name: HashMap<(String, String), u32>,
    /// The refs of each Service (by index in `services`).
    refs: Vec<Range<u32>>,
    /// The ready endpoint addresses of every Service (all ports, all families), sorted; the
    /// Service's are `ready_ips[ready_ip_bounds[i]..ready_ip_bounds[i + 1]]`.
    ready_ips: Vec<IpAddr>,
    ready_ip_bounds: Vec<u32>,
}

#[derive(Debug)]
struct PortEntry {
    service: u32,
    /// Index into the Service's `ports`.
    port: u32,
    cluster_ip: Option<IpAddr>,
    backends: Range<u32>,
}

impl ServiceIndex {
    pub(super) fn build(inventory: &Inventory) -> ServiceIndex {
        let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSliceInfo>> = HashMap::new();
        for s in &inventory.endpoint_slices {
            slices_of
                .entry((s.namespace.as_str(), s.service.as_str()))
                .or_default()
                .push(s);
        }
        let mut services: Vec<&ServiceInfo> = inventory.services.iter().collect();
        // Deterministic whatever the listing order; a Service listed twice counts once.
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        services.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);

        let mut ix = ServiceIndex {
            ready_ip_bounds: vec![0],
            ..ServiceIndex::default()
        };
        for (si, svc) in services.iter().enumerate() {
            let si = si as u32;
            let slices = slices_of
                .get(&(svc.namespace.as_str(), svc.name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let first = ix.ports.len() as u32;
            let families: Vec<Option<IpAddr>> = if svc.is_headless() {
                vec![None]
            } else {
                svc.cluster_ips.iter().copied().map(Some).collect()
            };
            for (pi, port) in svc.ports.iter().enumerate() {
                for &cluster_ip in &families {
                    let backends =
                        append_sorted(&mut ix.backends, backends(port, cluster_ip, slices));
                    let r = ServiceRef(ix.ports.len() as u32);
                    ix.ports.push(PortEntry {
                        service: si,
                        port: pi as u32,
                        cluster_ip,
                        backends,
                    });
                    if let Some(ip) = cluster_ip {
                        ix.by_address.insert((ip, port.port, port.protocol), r.0);
                    }
                }
            }
            ix.by_name
                .insert((svc.namespace.clone(), svc.name.clone()), si);
            ix.refs.push(first..ix.ports.len() as u32);
            let ready = slices
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.is_ready())
                .flat_map(|e| e.addresses.iter().copied());
            let r = append_sorted(&mut ix.ready_ips, ready);
            ix.ready_ip_bounds.push(r.end);
        }
        ix.services = services.into_iter().cloned().collect();
        ix
    }

    /// The index of a Service by namespace and name.
    pub(super) fn service_index(&self, namespace: &str, name: &str) -> Option<u32> {
        self.by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// The backends a `services` peer matches: for an entry without ports its Service's ready
    /// endpoint addresses (any port), otherwise the ready backends of the named Service ports.
    /// A Service or port the inventory does not have contributes nothing.
    pub(super) fn peer_set(&self, peers: &[ServicePeer]) -> ServiceSet {
        let mut ips = Vec::new();
        let mut sockets = Vec::new();
        for peer in peers {
            let Some(i) = self.service_index(&peer.namespace, &peer.name) else {
                continue;
            };
            match &peer.ports {
                None => ips.extend_from_slice(self.ready_ips(i)),
                Some(names) => {
                    let svc = &self.services[i as usize];
                    for r in self.refs_of(i) {
                        let e = &self.ports[r.0 as usize];
                        let port = &svc.ports[e.port as usize];
                        if port.name.as_ref().is_some_and(|n| names.contains(n)) {
                            sockets.extend(
                                self.backends[e.backends.start as usize..e.backends.end as usize]
                                    .iter()
                                    .map(|b| (b.ip(), b.port(), port.protocol)),
                            );
                        }
                    }
                }
            }
        }
        ips.sort_unstable();
        ips.dedup();
        sockets.sort_unstable();
        sockets.dedup();
        ServiceSet { ips, sockets }
    }

    /// The ready endpoint addresses of a Service, every port and family, sorted.
    pub(super) fn ready_ips(&self, service: u32) -> &[IpAddr] {
        let i = service as usize;
        &self.ready_ips[self.ready_ip_bounds[i] as usize..self.ready_ip_bounds[i + 1] as usize]
    }

    /// The refs of a Service (by its index), in port order then family order.
    pub(super) fn refs_of(&self, service: u32) -> impl Iterator<Item = ServiceRef> + '_ {
        self.refs[service as usize].clone().map(ServiceRef)
    }
}

/// What a `services` peer matches, sorted for a binary search (no allocation per flow).
#[derive(Debug, Default)]
pub(super) struct ServiceSet {
    /// Any port and protocol at these addresses.
    ips: Vec<IpAddr>,
    /// Exactly these backends.
    sockets: Vec<(IpAddr, u16, Protocol)>,
}

impl ServiceSet {
    #[inline]
    pub(super) fn contains(&self, ip: IpAddr, port: u16, protocol: Protocol) -> bool {
        self.ips.binary_search(&ip).is_ok()
            || self.sockets.binary_search(&(ip, port, protocol)).is_ok()
    }
}

/// Appends `items` sorted and without duplicates; returns where they landed.
fn append_sorted<T: Ord>(dst: &mut Vec<T>, items: impl Iterator<Item = T>) -> Range<u32> {
    let mut items: Vec<T> = items.collect();
    items.sort_unstable();
    items.dedup();
    let start = dst.len() as u32;
    dst.extend(items);
    start..dst.len() as u32
}

/// The ready backends of one Service port on one family (`None`: every family): each ready
/// endpoint address with the port its slice gives for that Service port's name and protocol.
fn backends<'a>(
    port: &'a ServicePort,
    cluster_ip: Option<IpAddr>,
    slices: &'a [&'a EndpointSliceInfo],
) -> impl Iterator<Item = SocketAddr> + 'a {
    let family = cluster_ip.map(|ip| {
        if ip.is_ipv4() {
            AddressType::Ipv4
        } else {
            AddressType::Ipv6
        }
    });
    slices
        .iter()
        .filter(move |s| s.address_type != AddressType::Fqdn)
        .filter(move |s| family.is_none_or(|f| s.address_type == f))
        .flat_map(move |s| {
            s.ports
                .iter()
                .filter(|sp| sp.protocol == port.protocol && sp.serves(port.name.as_deref()))
                // A slice port without a number stands for every port: the Service's target.
                .filter_map(|sp| {
                    sp.port.or(match port.target_port {
                        TargetPort::Number(n) => Some(n),
                        TargetPort::Name(_) => None,
                    })
                })
                .flat_map(move |p| {
                    s.endpoints
                        .iter()
                        .filter(|e| e.is_ready())
                        .flat_map(move |e| e.addresses.iter().map(move |a| SocketAddr::new(*a, p)))
                })
        })
}

impl Snapshot {
    /// The Service port a connection to `ip:port` over `protocol` is addressed to, when `ip`
    /// is a ClusterIP of the inventory.
    pub fn service_at(&self, ip: IpAddr, port: u16, protocol: Protocol) -> Option<ServiceRef> {
        self.services
            .by_address
            .get(&(ip.to_canonical(), port, protocol))
            .map(|&i| ServiceRef(i))
    }

    /// What a ref names.
    pub fn service(&self, r: ServiceRef) -> ServicePortView<'_> {
        let e = &self.services.ports[r.0 as usize];
        let svc = &self.services.services[e.service as usize];
        let port = &svc.ports[e.port as usize];
        ServicePortView {
            namespace: &svc.namespace,
            name: &svc.name,
            port_name: port.name.as_deref(),
            port: port.port,
            protocol: port.protocol,
            cluster_ip: e.cluster_ip,
        }
    }

    /// The ready backends of a Service port (endpoint address and the slice's port), sorted.
    /// Empty when the Service has no ready endpoint.
    pub fn ready_backends(&self, r: ServiceRef) -> &[SocketAddr] {
        let e = &self.services.ports[r.0 as usize];
        &self.services.backends[e.backends.start as usize..e.backends.end as usize]
    }

    /// Every `ClusterIP:port` over TCP or UDP whose Service port has no ready endpoint, sorted
    /// (what the capture must hand to the gateway rather than to kube-proxy's reject).
    pub fn unserved_ports(&self) -> Vec<(SocketAddr, Protocol)> {
        let ix = &self.services;
        let mut out: Vec<(SocketAddr, Protocol)> = ix
            .ports
            .iter()
            .filter(|e| e.backends.is_empty())
            .filter_map(|e| {
                let port = &ix.services[e.service as usize].ports[e.port as usize];
                let ip = e.cluster_ip?;
                matches!(port.protocol, Protocol::Tcp | Protocol::Udp)
                    .then_some((SocketAddr::new(ip, port.port), port.protocol))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The refs of the Service `namespace/name` whose port has the number or name `port`
    /// (one per ClusterIP; one for a headless Service). Empty when there is no such Service
    /// or port.
    pub fn service_ports(&self, namespace: &str, name: &str, port: &str) -> Vec<ServiceRef> {
        let Some(i) = self.services.service_index(namespace, name) else {
            return Vec::new();
        };
        self.services
            .refs_of(i)
            .filter(|&r| {
                let v = self.service(r);
                v.port_name == Some(port) || port.parse() == Ok(v.port)
            })
            .collect()
    }

    /// The Service `namespace/name`, when the inventory has it.
    pub fn service_info(&self, namespace: &str, name: &str) -> Option<&ServiceInfo> {
        let i = self.services.service_index(namespace, name)?;
        Some(&self.services.services[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use chokepoint_config::World;
    use chokepoint_config::inventory::{EndpointInfo, EndpointPort, ServiceType};

    use super::*;
    use crate::policy::Options;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn endpoint(addr: &str, ready: Option<bool>) -> EndpointInfo {
        EndpointInfo {
            addresses: vec![ip(addr)],
            ready,
            serving: ready,
            terminating: None,
            pod: None,
        }
    }

    fn slice(
        name: &str,
        family: AddressType,
        eps: Vec<EndpointInfo>,
        port: u16,
    ) -> EndpointSliceInfo {
        EndpointSliceInfo {
            namespace: "data".into(),
            name: name.into(),
            service: "db".into(),
            address_type: family,
            endpoints: eps,
            ports: vec![EndpointPort {
                name: Some("pg".into()),
                port: Some(port),
                protocol: Protocol::Tcp,
            }],
        }
    }

    fn snapshot() -> Snapshot {
        let db = ServiceInfo {
            namespace: "data".into(),
            name: "db".into(),
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![ip("10.96.0.20"), ip("fd00:96::20")],
            ports: vec![ServicePort {
                name: Some("pg".into()),
                protocol: Protocol::Tcp,
                port: 5432,
                target_port: TargetPort::Name("postgres".into()),
            }],
            selector: None,
        };
        let headless = ServiceInfo {
            name: "db-headless".into(),
            cluster_ips: Vec::new(),
            ..db.clone()
        };
        let mut world = World::default();
        world.inventory.services = vec![db, headless];
        world.inventory.endpoint_slices = vec![
            slice(
                "db-v4-a",
                AddressType::Ipv4,
                vec![
                    endpoint("10.244.1.21", Some(true)),
                    endpoint("10.244.1.22", Some(false)),
                    endpoint("10.244.1.23", None),
                ],
                15432,
            ),
            slice(
                "db-v6",
                AddressType::Ipv6,
                vec![endpoint("fd00:244::21", Some(true))],
                15432,
            ),
            EndpointSliceInfo {
                service: "db-headless".into(),
                ..slice(
                    "db-headless-v4",
                    AddressType::Ipv4,
                    vec![endpoint("10.244.1.21", Some(true))],
                    5432,
                )
            },
        ];
        Snapshot::compile(&world, Options::default())
    }

    #[test]
    fn a_cluster_ip_and_port_name_the_service_port_and_its_ready_backends_of_that_family() {
        let s = snapshot();
        let v4 = s.service_at(ip("10.96.0.20"), 5432, Protocol::Tcp).unwrap();
        let view = s.service(v4);
        assert_eq!(
            (view.namespace, view.name, view.port_name, view.port),
            ("data", "db", Some("pg"), 5432)
        );
        assert_eq!(view.cluster_ip, Some(ip("10.96.0.20")));
        // Not ready is left out; an unknown readiness counts as ready.
        assert_eq!(
            s.ready_backends(v4),
            [sock("10.244.1.21:15432"), sock("10.244.1.23:15432")]
        );
        let v6 = s
            .service_at(ip("fd00:96::20"), 5432, Protocol::Tcp)
            .unwrap();
        assert_eq!(s.ready_backends(v6), [sock("[fd00:244::21]:15432")]);
    }

    #[test]
    fn other_ports_protocols_and_addresses_are_no_service() {
        let s = snapshot();
        assert!(
            s.service_at(ip("10.96.0.20"), 5433, Protocol::Tcp)
                .is_none()
        );
        assert!(
            s.service_at(ip("10.96.0.20"), 5432, Protocol::Udp)
                .is_none()
        );
        assert!(
            s.service_at(ip("10.244.1.21"), 15432, Protocol::Tcp)
                .is_none()
        );
        // An IPv4-mapped address is the IPv4 ClusterIP.
        assert!(
            s.service_at(ip("::ffff:10.96.0.20"), 5432, Protocol::Tcp)
                .is_some()
        );
    }

    #[test]
    fn services_are_found_by_name_and_port_number_or_name() {
        let s = snapshot();
        assert_eq!(s.service_ports("data", "db", "pg").len(), 2);
        assert_eq!(
            s.service_ports("data", "db", "5432"),
            s.service_ports("data", "db", "pg")
        );
        assert!(s.service_ports("data", "db", "15432").is_empty());
        assert!(s.service_ports("data", "nope", "pg").is_empty());
        let headless = s.service_ports("data", "db-headless", "pg");
        assert_eq!(headless.len(), 1);
        assert_eq!(s.service(headless[0]).cluster_ip, None);
        assert_eq!(s.ready_backends(headless[0]), [sock("10.244.1.21:5432")]);
        let i = s.services.service_index("data", "db").unwrap();
        assert_eq!(
            s.services.ready_ips(i),
            [ip("10.244.1.21"), ip("10.244.1.23"), ip("fd00:244::21")]
        );
    }
}
