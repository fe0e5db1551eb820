//! Services and EndpointSlices, as far as deciding on a Service's backends needs them.
//!
//! Read from `kubectl get svc,endpointslices -A -o yaml` (or a combined dump with ns, pods
//! and nodes) and from the API server. Both go through [`ServiceInfo::from_object`] and
//! [`EndpointSliceInfo::from_object`], which return every mistake with the JSON pointer of
//! its field so that a file's loader can say `file:line:column`.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{Labels, Protocol};
use crate::source::child;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One mistake in an object: the JSON pointer of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub pointer: String,
    pub message: String,
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        }
    }
}

/// A Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub service_type: ServiceType,
    /// Every ClusterIP (`spec.clusterIPs`, else `spec.clusterIP`), both families of a
    /// dual-stack Service. Empty for a headless Service (`None`) and for ExternalName.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `None`: the Service has no selector (its EndpointSlices are managed by someone else,
    /// as `default/kubernetes`'s by the API server).
    pub selector: Option<Labels>,
}

/// One `spec.ports` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Required when the Service has more than one port; EndpointSlice ports carry the same
    /// name (or none).
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
}

/// `targetPort`: a number, or a container port name resolved per pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// `addressType` of an EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    Ipv4,
    Ipv6,
    /// Deprecated and ignored by kube-proxy: such a slice contributes no backend.
    Fqdn,
}

/// An EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSliceInfo {
    pub namespace: String,
    pub name: String,
    /// From the `kubernetes.io/service-name` label.
    pub service: String,
    pub address_type: AddressType,
    pub endpoints: Vec<EndpointInfo>,
    pub ports: Vec<EndpointPort>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Empty for an FQDN slice (its addresses are names).
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; `None` (unknown) counts as ready, as kube-proxy reads it.
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    /// The pod behind the endpoint (`targetRef` of kind Pod), in the slice's namespace unless
    /// the reference names another.
    pub pod: Option<PodName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// One port of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    /// The name of the Service port this is the target of (`None` or empty for an unnamed one).
    pub name: Option<String>,
    /// `None`: every port (a slice of a Service without ports).
    pub port: Option<u16>,
    pub protocol: Protocol,
}

impl EndpointInfo {
    /// Whether kube-proxy sends new connections to this endpoint.
    pub fn is_ready(&self) -> bool {
        self.ready != Some(false)
    }
}

impl EndpointPort {
    /// Whether this slice port is the target of a Service port with `name` (`None` or empty
    /// both mean the unnamed port).
    pub fn serves(&self, name: Option<&str>) -> bool {
        self.name.as_deref().unwrap_or("") == name.unwrap_or("")
    }
}

impl ServiceInfo {
    /// A headless Service: no ClusterIP, clients connect to endpoint addresses directly.
    pub fn is_headless(&self) -> bool {
        self.cluster_ips.is_empty()
    }

    /// Converts and validates; every finding carries the pointer of its field.
    pub fn from_object(svc: &Service) -> Result<ServiceInfo, Vec<Finding>> {
        let mut f = Findings::default();
        let name = f.name(&svc.metadata.name);
        let namespace = namespace_of(&svc.metadata.namespace);
        let spec = svc.spec.clone().unwrap_or_default();
        let service_type = match spec.type_.as_deref().unwrap_or("ClusterIP") {
            "ClusterIP" => ServiceType::ClusterIp,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ExternalName" => ServiceType::ExternalName,
            other => {
                f.push(
                    "/spec/type",
                    format!(
                        "unknown Service type `{other}`; use ClusterIP, NodePort, LoadBalancer or ExternalName"
                    ),
                );
                ServiceType::ClusterIp
            }
        };
        let cluster_ips = if service_type == ServiceType::ExternalName {
            Vec::new()
        } else {
            f.cluster_ips(spec.cluster_ip.as_deref(), spec.cluster_ips.as_deref())
        };
        let mut ports: Vec<ServicePort> = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let pp = child("/spec/ports", i);
            let Some(port) = f.port(&child(&pp, "port"), p.port) else {
                continue;
            };
            let Some(protocol) = f.protocol(&child(&pp, "protocol"), p.protocol.as_deref()) else {
                continue;
            };
            let target_port = match &p.target_port {
                None => Some(TargetPort::Number(port)),
                Some(IntOrString::Int(n)) => f
                    .port(&child(&pp, "targetPort"), *n)
                    .map(TargetPort::Number),
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => f.port(&child(&pp, "targetPort"), n).map(TargetPort::Number),
                    Err(_) if s.is_empty() => {
                        f.push(
                            &child(&pp, "targetPort"),
                            "`targetPort` is empty; give a port number or a container port name",
                        );
                        None
                    }
                    Err(_) => Some(TargetPort::Name(s.clone())),
                },
            };
            let name = p.name.clone().filter(|n| !n.is_empty());
            if let Some(other) = ports
                .iter()
                .position(|q| q.port == port && q.protocol == protocol)
            {
                f.push(
                    &child(&pp, "port"),
                    format!(
                        "port {port}/{protocol} is listed twice (also spec.ports[{other}]); give each Service port once"
                    ),
                );
                continue;
            }
            if name.is_some() && ports.iter().any(|q| q.name == name) {
                f.push(
                    &child(&pp, "name"),
                    "this port name is used twice; every Service port needs its own name",
                );
                continue;
            }
            if let Some(target_port) = target_port {
                ports.push(ServicePort {
                    name,
                    protocol,
                    port,
                    target_port,
                });
            }
        }
        if ports.len() > 1 && ports.iter().any(|p| p.name.is_none()) {
            f.push(
                "/spec/ports",
                "a Service with more than one port must name every port (EndpointSlice ports are matched by name)",
            );
        }
        f.finish(ServiceInfo {
            namespace,
            name: name.unwrap_or_default(),
            service_type,
            cluster_ips,
            ports,
            selector: spec.selector,
        })
    }
}

impl EndpointSliceInfo {
    /// Converts and validates; a slice without the `kubernetes.io/service-name` label belongs
    /// to no Service and is an error here (kube-proxy ignores it).
    pub fn from_object(slice: &EndpointSlice) -> Result<EndpointSliceInfo, Vec<Finding>> {
        let mut f = Findings::default();
        let name = f.name(&slice.metadata.name);
        let namespace = namespace_of(&slice.metadata.namespace);
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty())
            .cloned();
        if service.is_none() {
            f.push(
                "/metadata/labels",
                format!(
                    "the label `{SERVICE_NAME_LABEL}` is missing; it names the Service this slice belongs to (add it, or leave the slice out)"
                ),
            );
        }
        let address_type = match slice.address_type.as_str() {
            "IPv4" => AddressType::Ipv4,
            "IPv6" => AddressType::Ipv6,
            "FQDN" => AddressType::Fqdn,
            other => {
                f.push(
                    "/addressType",
                    format!("unknown addressType `{other}`; use IPv4, IPv6 or FQDN"),
                );
                AddressType::Fqdn
            }
        };
        let mut endpoints = Vec::with_capacity(slice.endpoints.len());
        for (i, e) in slice.endpoints.iter().enumerate() {
            let ep = child("/endpoints", i);
            let mut addresses = Vec::new();
            if address_type != AddressType::Fqdn {
                for (j, a) in e.addresses.iter().enumerate() {
                    let ap = child(&child(&ep, "addresses"), j);
                    match a.parse::<IpAddr>() {
                        Ok(ip) if ip.is_ipv4() == (address_type == AddressType::Ipv4) => {
                            addresses.push(ip)
                        }
                        Ok(_) => f.push(
                            &ap,
                            format!(
                                "`{a}` is not an {} address, as the slice's addressType says",
                                slice.address_type
                            ),
                        ),
                        Err(_) => f.push(&ap, format!("`{a}` is not an IP address")),
                    }
                }
            }
            let conditions = e.conditions.clone().unwrap_or_default();
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    Some(PodName {
                        namespace: r.namespace.clone().unwrap_or_else(|| namespace.clone()),
                        name: r.name.clone()?,
                    })
                });
            endpoints.push(EndpointInfo {
                addresses,
                ready: conditions.ready,
                serving: conditions.serving,
                terminating: conditions.terminating,
                pod,
            });
        }
        let mut ports = Vec::new();
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            let pp = child("/ports", i);
            let port = match p.port {
                None => Some(None),
                Some(n) => f.port(&child(&pp, "port"), n).map(Some),
            };
            let protocol = f.protocol(&child(&pp, "protocol"), p.protocol.as_deref());
            if let (Some(port), Some(protocol)) = (port, protocol) {
                ports.push(EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol,
                });
            }
        }
        f.finish(EndpointSliceInfo {
            namespace,
            name: name.unwrap_or_default(),
            service: service.unwrap_or_default(),
            address_type,
            endpoints,
            ports,
        })
    }
}

/// As kubectl applies it: a namespaced object without a namespace lands in `default`.
fn namespace_of(ns: &Option<String>) -> String {
    ns.clone().unwrap_or_else(|| "default".to_owned())
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, pointer: &str, message: impl Into<String>) {
        self.0.push(Finding {
            pointer: pointer.to_owned(),
            message: message.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<Finding>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }

    fn name(&mut self, name: &Option<String>) -> Option<String> {
        let n = name.clone().filter(|n| !n.is_empty());
        if n.is_none() {
            self.push("/metadata", "`metadata.name` is required");
        }
        n
    }

    fn port(&mut self, pointer: &str, n: i32) -> Option<u16> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.push(pointer, format!("port {n} is out of range; use 1 to 65535"));
                None
            }
        }
    }

    fn protocol(&mut self, pointer: &str, p: Option<&str>) -> Option<Protocol> {
        let p = p.unwrap_or("TCP");
        let parsed = Protocol::from_k8s(p);
        if parsed.is_none() {
            self.push(
                pointer,
                format!("unknown protocol `{p}`; use TCP, UDP or SCTP"),
            );
        }
        parsed
    }

    /// `clusterIPs` when given (its first entry must equal `clusterIP`), else `clusterIP`;
    /// `None` and the empty string are no address (headless, not allocated yet).
    fn cluster_ips(&mut self, single: Option<&str>, list: Option<&[String]>) -> Vec<IpAddr> {
        let (pointer, given): (&str, Vec<&str>) = match list {
            Some(l) if !l.is_empty() => {
                ("/spec/clusterIPs", l.iter().map(String::as_str).collect())
            }
            _ => ("/spec/clusterIP", single.into_iter().collect()),
        };
        if let (Some(s), Some(first)) = (single, given.first())
            && list.is_some_and(|l| !l.is_empty())
            && !s.is_empty()
            && s != *first
        {
            self.push(
                "/spec/clusterIP",
                format!("`clusterIP` {s} differs from the first of `clusterIPs` ({first}); they must agree"),
            );
        }
        let mut out: Vec<IpAddr> = Vec::new();
        for (i, s) in given.iter().enumerate() {
            if s.is_empty() || *s == "None" {
                continue;
            }
            let p = if pointer == "/spec/clusterIPs" {
                child(pointer, i)
            } else {
                pointer.to_owned()
            };
            match s.parse::<IpAddr>() {
                Ok(ip) if out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) => self.push(
                    &p,
                    format!("`{s}`: a Service has at most one ClusterIP per IP family"),
                ),
                Ok(ip) => out.push(ip),
                Err(_) => self.push(
                    &p,
                    format!("`{s}` is not an IP address (use `None` for a headless Service)"),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(spec: serde_json::Value) -> Result<ServiceInfo, Vec<Finding>> {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "data"}, "spec": spec
        }))
        .unwrap();
        ServiceInfo::from_object(&svc)
    }

    #[test]
    fn a_dual_stack_service_keeps_both_cluster_ips_and_named_target_ports() {
        let s = service(serde_json::json!({
            "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00:96::20"],
            "ports": [{"name": "pg", "port": 5432, "targetPort": "postgres"},
                      {"name": "metrics", "port": 9187, "protocol": "TCP", "targetPort": 9187}],
            "selector": {"app": "db"}
        }))
        .unwrap();
        assert_eq!(s.cluster_ips.len(), 2);
        assert_eq!(s.ports[0].target_port, TargetPort::Name("postgres".into()));
        assert_eq!(s.ports[1].target_port, TargetPort::Number(9187));
        assert!(!s.is_headless());
    }

    #[test]
    fn a_headless_service_has_no_cluster_ip() {
        let s = service(serde_json::json!({"clusterIP": "None", "ports": [{"port": 80}]})).unwrap();
        assert!(s.is_headless());
        assert_eq!(s.ports[0].target_port, TargetPort::Number(80));
    }

    #[test]
    fn mistakes_are_reported_at_their_fields() {
        let e = service(serde_json::json!({
            "clusterIPs": ["10.96.0.300"],
            "ports": [{"name": "a", "port": 70000}, {"name": "b", "port": 80, "protocol": "ICMP"}]
        }))
        .unwrap_err();
        let at: Vec<&str> = e.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(
            at,
            [
                "/spec/clusterIPs/0",
                "/spec/ports/0/port",
                "/spec/ports/1/protocol"
            ]
        );
    }
}
