//! A generated [`World`] as the Kubernetes objects it stands for (the JSON an API server
//! serves), for benchmarks that go through the Kubernetes source.

use chokepoint_config::World;
use chokepoint_config::model::{
    ClusterPolicy, NetworkPolicyPeer, NetworkPolicyPortSpec, NetworkPolicyRules, Peer, PortMatch,
    Protocol, Requirement, Selector, Subject, Tier,
};
use serde_json::{Value, json};

fn selector(s: &Selector) -> Value {
    let mut labels = serde_json::Map::new();
    let mut exprs = Vec::new();
    for r in &s.requirements {
        match r {
            Requirement::In(k, v) if v.len() == 1 => {
                labels.insert(k.clone(), json!(v[0]));
            }
            Requirement::In(k, v) => exprs.push(json!({"key": k, "operator": "In", "values": v})),
            Requirement::NotIn(k, v) => {
                exprs.push(json!({"key": k, "operator": "NotIn", "values": v}))
            }
            Requirement::Exists(k) => exprs.push(json!({"key": k, "operator": "Exists"})),
            Requirement::DoesNotExist(k) => {
                exprs.push(json!({"key": k, "operator": "DoesNotExist"}))
            }
        }
    }
    let mut out = json!({});
    if !labels.is_empty() {
        out["matchLabels"] = Value::Object(labels);
    }
    if !exprs.is_empty() {
        out["matchExpressions"] = Value::Array(exprs);
    }
    out
}

fn protocol_key(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn k8s_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

fn cluster_policy(p: &ClusterPolicy) -> Value {
    let subject = match &p.subject {
        Subject::Namespaces(s) => json!({"namespaces": selector(s)}),
        Subject::Pods { namespaces, pods } => {
            json!({"pods": {"namespaceSelector": selector(namespaces), "podSelector": selector(pods)}})
        }
    };
    let egress: Vec<Value> = p
        .egress
        .iter()
        .map(|r| {
            let to: Vec<Value> = r
                .peers
                .iter()
                .map(|peer| match peer {
                    Peer::Namespaces(s) => json!({"namespaces": selector(s)}),
                    Peer::Pods { namespaces, pods } => json!({"pods": {
                        "namespaceSelector": selector(namespaces), "podSelector": selector(pods)}}),
                    Peer::Nodes(s) => json!({"nodes": selector(s)}),
                    Peer::Networks(n) => json!({"networks": n.iter().map(|n| n.to_string()).collect::<Vec<_>>()}),
                    Peer::DomainNames(d) => json!({"domainNames": d.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
                    Peer::Services(list) => json!({"services": list.iter().map(|s| json!({
                        "namespace": s.namespace, "name": s.name, "ports": s.ports})).collect::<Vec<_>>()}),
                    Peer::Unknown => json!({}),
                })
                .collect();
            let mut rule = json!({"action": r.action.to_string(), "to": to});
            if let Some(name) = &r.name {
                rule["name"] = json!(name);
            }
            if let Some(protocols) = &r.protocols {
                let list: Vec<Value> = protocols
                    .iter()
                    .map(|m| match m {
                        PortMatch::Port { protocol, ports } if ports.first == ports.last => {
                            json!({protocol_key(*protocol): {"destinationPort": {"number": ports.first}}})
                        }
                        PortMatch::Port { protocol, ports } => json!({protocol_key(*protocol): {
                            "destinationPort": {"range": {"start": ports.first, "end": ports.last}}}}),
                        PortMatch::Named(n) => json!({"destinationNamedPort": n}),
                        PortMatch::Unknown => json!({}),
                    })
                    .collect();
                rule["protocols"] = json!(list);
            }
            rule
        })
        .collect();
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": p.name},
        "spec": {"tier": if p.tier == Tier::Admin { "Admin" } else { "Baseline" },
                 "priority": p.priority, "subject": subject, "egress": egress}
    })
}

fn network_policy(p: &NetworkPolicyRules) -> Value {
    let mut spec = json!({"podSelector": selector(&p.pod_selector)});
    match &p.egress {
        None => spec["policyTypes"] = json!(["Ingress"]),
        Some(rules) => {
            spec["policyTypes"] = json!(["Egress"]);
            let egress: Vec<Value> = rules
                .iter()
                .map(|r| {
                    let to: Vec<Value> = r
                        .peers
                        .iter()
                        .map(|peer| match peer {
                            NetworkPolicyPeer::Pods { namespaces, pods } => {
                                let mut v = json!({});
                                if let Some(n) = namespaces {
                                    v["namespaceSelector"] = selector(n);
                                }
                                if let Some(p) = pods {
                                    v["podSelector"] = selector(p);
                                }
                                v
                            }
                            NetworkPolicyPeer::IpBlock { cidr, except } => json!({"ipBlock": {
                                "cidr": cidr.to_string(),
                                "except": except.iter().map(|e| e.to_string()).collect::<Vec<_>>()}}),
                        })
                        .collect();
                    let ports: Vec<Value> = r
                        .ports
                        .iter()
                        .map(|port| {
                            let mut v = json!({"protocol": k8s_protocol(port.protocol)});
                            match &port.port {
                                NetworkPolicyPortSpec::Any => {}
                                NetworkPolicyPortSpec::Range(r) if r.first == r.last => v["port"] = json!(r.first),
                                NetworkPolicyPortSpec::Range(r) => {
                                    v["port"] = json!(r.first);
                                    v["endPort"] = json!(r.last);
                                }
                                NetworkPolicyPortSpec::Named(n) => v["port"] = json!(n),
                            }
                            v
                        })
                        .collect();
                    let mut rule = json!({});
                    if !to.is_empty() {
                        rule["to"] = json!(to);
                    }
                    if !ports.is_empty() {
                        rule["ports"] = json!(ports);
                    }
                    rule
                })
                .collect();
            spec["egress"] = json!(egress);
        }
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": p.name, "namespace": p.namespace}, "spec": spec})
}

/// Every namespace, node, pod, cluster policy and NetworkPolicy of the world as API objects.
pub fn objects(world: &World) -> Vec<Value> {
    let inv = &world.inventory;
    let mut out = Vec::new();
    for n in &inv.namespaces {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.name, "labels": n.labels}}));
    }
    for n in &inv.nodes {
        let addresses: Vec<Value> = n
            .addresses
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        out.push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name, "labels": n.labels},
                        "status": {"addresses": addresses}}));
    }
    for p in &inv.pods {
        let ports: Vec<Value> = p
            .ports
            .iter()
            .map(|c| {
                let mut v = json!({"containerPort": c.port, "protocol": k8s_protocol(c.protocol)});
                if let Some(n) = &c.name {
                    v["name"] = json!(n);
                }
                v
            })
            .collect();
        let ips: Vec<Value> = p
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect();
        out.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid, "labels": p.labels},
            "spec": {"nodeName": p.node_name, "hostNetwork": p.host_network,
                     "containers": [{"name": "app", "image": "app", "ports": ports}]},
            "status": {"phase": "Running", "podIP": p.ips.first().map(|i| i.to_string()), "podIPs": ips}}));
    }
    out.extend(world.cluster_policies.iter().map(cluster_policy));
    out.extend(world.network_policies.iter().map(network_policy));
    out
}
