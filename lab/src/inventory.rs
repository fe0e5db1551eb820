//! The lab as Kubernetes objects: what `kubectl get ns,pods,nodes -A -o yaml` would print for
//! it, and the [`Inventory`] chokepoint loads from that.

use std::fmt::Write as _;
use std::net::IpAddr;

use chokepoint_config::inventory::{Inventory, NamespaceInfo, NodeInfo, PodInfo};
use chokepoint_config::model::{Labels, Protocol};

use super::Lab;

pub(super) fn inventory(lab: &Lab) -> Inventory {
    Inventory {
        namespaces: lab
            .namespaces
            .iter()
            .map(|(name, labels)| NamespaceInfo {
                annotations: lab
                    .namespace_annotations
                    .get(name)
                    .cloned()
                    .unwrap_or_default(),
                ..NamespaceInfo::new(name.clone(), labels.clone())
            })
            .collect(),
        pods: lab
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| PodInfo {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: Some(pod_uid(lab, i)),
                labels: p.labels.clone(),
                ips: p.ips(),
                host_network: false,
                node_name: Some(lab.node.name.clone()),
                ports: p.ports.clone(),
                service_account: p.service_account.clone(),
                annotations: p.annotations.clone(),
            })
            .collect(),
        nodes: vec![NodeInfo {
            name: lab.node.name.clone(),
            labels: node_labels(lab),
            addresses: node_addresses(lab),
        }],
        ..Inventory::default()
    }
}

fn pod_uid(lab: &Lab, i: usize) -> String {
    format!("{}-pod-{i}", lab.prefix)
}

fn node_labels(lab: &Lab) -> Labels {
    Labels::from([
        ("kubernetes.io/hostname".to_owned(), lab.node.name.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
    ])
}

fn node_addresses(lab: &Lab) -> Vec<IpAddr> {
    std::iter::once(IpAddr::V4(lab.node.ipv4))
        .chain(lab.node.ipv6.map(IpAddr::V6))
        .collect()
}

/// A YAML double-quoted scalar (JSON string syntax is a subset of it).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

fn k8s_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// `labels:` at `indent`, as a block mapping (or `{}`).
fn labels(out: &mut String, indent: &str, labels: &Labels) {
    map(out, indent, "labels", labels);
}

/// `annotations:` at `indent`, when there are any.
fn annotations(out: &mut String, indent: &str, annotations: &Labels) {
    if !annotations.is_empty() {
        map(out, indent, "annotations", annotations);
    }
}

fn map(out: &mut String, indent: &str, key: &str, entries: &Labels) {
    if entries.is_empty() {
        let _ = writeln!(out, "{indent}{key}: {{}}");
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for (k, v) in entries {
        let _ = writeln!(out, "{indent}  {}: {}", q(k), q(v));
    }
}

pub(super) fn yaml(lab: &Lab) -> String {
    let inv = inventory(lab);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The chokepoint lab {} as `kubectl get ns,pods,nodes -A -o yaml` would print it.",
        lab.prefix
    );
    out.push_str("apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n");

    for ns in &inv.namespaces {
        out.push_str("- apiVersion: v1\n  kind: Namespace\n  metadata:\n");
        annotations(&mut out, "    ", &ns.annotations);
        labels(&mut out, "    ", &ns.labels);
        let _ = writeln!(out, "    name: {}", q(&ns.name));
        out.push_str("  status:\n    phase: Active\n");
    }

    let node_ip = q(&lab.node.ipv4.to_string());
    for pod in &inv.pods {
        out.push_str("- apiVersion: v1\n  kind: Pod\n  metadata:\n");
        annotations(&mut out, "    ", &pod.annotations);
        labels(&mut out, "    ", &pod.labels);
        let _ = writeln!(out, "    name: {}", q(&pod.name));
        let _ = writeln!(out, "    namespace: {}", q(&pod.namespace));
        if let Some(uid) = &pod.uid {
            let _ = writeln!(out, "    uid: {}", q(uid));
        }
        out.push_str("  spec:\n    containers:\n    - name: main\n      image: lab\n");
        if !pod.ports.is_empty() {
            out.push_str("      ports:\n");
            for port in &pod.ports {
                let _ = writeln!(out, "      - containerPort: {}", port.port);
                if let Some(name) = &port.name {
                    let _ = writeln!(out, "        name: {}", q(name));
                }
                let _ = writeln!(out, "        protocol: {}", k8s_protocol(port.protocol));
            }
        }
        let _ = writeln!(out, "    nodeName: {}", q(&lab.node.name));
        if let Some(sa) = &pod.service_account {
            let _ = writeln!(out, "    serviceAccountName: {}", q(sa));
        }
        out.push_str("  status:\n");
        let _ = writeln!(out, "    hostIP: {node_ip}");
        out.push_str("    phase: Running\n");
        if let Some(first) = pod.ips.first() {
            let _ = writeln!(out, "    podIP: {}", q(&first.to_string()));
            out.push_str("    podIPs:\n");
            for ip in &pod.ips {
                let _ = writeln!(out, "    - ip: {}", q(&ip.to_string()));
            }
        }
    }

    for node in &inv.nodes {
        out.push_str("- apiVersion: v1\n  kind: Node\n  metadata:\n");
        labels(&mut out, "    ", &node.labels);
        let _ = writeln!(out, "    name: {}", q(&node.name));
        out.push_str("  status:\n    addresses:\n");
        for ip in &node.addresses {
            let _ = writeln!(
                out,
                "    - address: {}\n      type: InternalIP",
                q(&ip.to_string())
            );
        }
        let _ = writeln!(
            out,
            "    - address: {}\n      type: Hostname",
            q(&node.name)
        );
    }
    out
}
