//! The inventory: namespaces, pods, nodes, Services and EndpointSlices, as far as policy
//! needs them.
//!
//! Read from ordinary Kubernetes objects (`kubectl get ns,pods,nodes,svc,endpointslices -A -o
//! yaml`), so a user can explain a live cluster's policies offline.

pub mod services;

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use crate::model::{Labels, Protocol};

pub use services::{
    AddressType, EndpointInfo, EndpointPort, EndpointSliceInfo, SERVICE_NAME_LABEL, ServiceInfo,
    ServicePort, ServiceType, TargetPort,
};

/// The label every namespace carries (set by the API server since 1.22).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The annotations the inventory keeps (by key prefix); the gateway reads no others.
/// Everything else (`kubectl.kubernetes.io/last-applied-configuration` and the like, often
/// kilobytes per object) is dropped so that a large cluster's snapshot stays small.
pub const KEPT_ANNOTATION_PREFIXES: [&str; 2] = ["iam.amazonaws.com/", "chokepoint.dev/"];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub namespaces: Vec<NamespaceInfo>,
    pub pods: Vec<PodInfo>,
    pub nodes: Vec<NodeInfo>,
    pub services: Vec<ServiceInfo>,
    pub endpoint_slices: Vec<EndpointSliceInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: Labels,
    /// Only those under [`KEPT_ANNOTATION_PREFIXES`].
    pub annotations: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub labels: Labels,
    /// Every pod IP (dual-stack pods have two).
    pub ips: Vec<IpAddr>,
    /// Host-network pods share the node's addresses and are never subjects or pod peers.
    pub host_network: bool,
    pub node_name: Option<String>,
    pub ports: Vec<ContainerPort>,
    /// `spec.serviceAccountName`, when the object has one.
    pub service_account: Option<String>,
    /// Only those under [`KEPT_ANNOTATION_PREFIXES`].
    pub annotations: Labels,
}

/// A declared container port; named ports in policies resolve against these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    /// Every IP in `status.addresses`.
    pub addresses: Vec<IpAddr>,
}

impl Inventory {
    /// Adds the namespaces that pods live in but that are not listed themselves, with only the
    /// automatic name label (so that selectors on `kubernetes.io/metadata.name` still work).
    pub fn add_missing_namespaces(&mut self) {
        let known: HashSet<&str> = self.namespaces.iter().map(|n| n.name.as_str()).collect();
        let mut missing: Vec<String> = self
            .pods
            .iter()
            .map(|p| p.namespace.as_str())
            .filter(|ns| !known.contains(ns))
            .map(str::to_owned)
            .collect();
        missing.sort();
        missing.dedup();
        for ns in missing {
            self.namespaces
                .push(NamespaceInfo::new(ns, Default::default()));
        }
    }
}

impl NamespaceInfo {
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| name.clone());
        NamespaceInfo {
            name,
            labels,
            annotations: Labels::new(),
        }
    }

    pub fn from_object(ns: &Namespace) -> Option<Self> {
        let name = ns.metadata.name.clone()?;
        Some(NamespaceInfo {
            annotations: kept_annotations(ns.metadata.annotations.as_ref()),
            ..NamespaceInfo::new(name, ns.metadata.labels.clone().unwrap_or_default())
        })
    }
}

impl PodInfo {
    /// `None` for a pod without a name, or one that has finished (its IP may already belong
    /// to another pod).
    pub fn from_object(pod: &Pod) -> Option<Self> {
        let name = pod.metadata.name.clone()?;
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            return None;
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(s) = status {
            let listed = s.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            for ip in s.pod_ip.as_deref().into_iter().chain(listed) {
                if let Ok(ip) = ip.parse()
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
        }
        let spec = pod.spec.as_ref();
        let ports = spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(ContainerPort {
                    name: p.name.clone(),
                    port: u16::try_from(p.container_port).ok()?,
                    protocol: Protocol::from_k8s(p.protocol.as_deref().unwrap_or("TCP"))?,
                })
            })
            .collect();
        Some(PodInfo {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name,
            uid: pod.metadata.uid.clone(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            node_name: spec.and_then(|s| s.node_name.clone()),
            ports,
            service_account: spec.and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            }),
            annotations: kept_annotations(pod.metadata.annotations.as_ref()),
        })
    }

    /// The container port a named port refers to, for a given protocol.
    pub fn named_port(&self, name: &str) -> Option<&ContainerPort> {
        self.ports.iter().find(|p| p.name.as_deref() == Some(name))
    }
}

/// The annotations under [`KEPT_ANNOTATION_PREFIXES`].
fn kept_annotations(all: Option<&std::collections::BTreeMap<String, String>>) -> Labels {
    all.into_iter()
        .flatten()
        .filter(|(k, _)| KEPT_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl NodeInfo {
    pub fn from_object(node: &Node) -> Option<Self> {
        let name = node.metadata.name.clone()?;
        let addresses = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.address.parse().ok())
            .collect();
        Some(NodeInfo {
            name,
            labels: node.metadata.labels.clone().unwrap_or_default(),
            addresses,
        })
    }
}
