//! Kubernetes objects (JSON) for the tests against the test API server.

use serde_json::{Value, json};

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

/// A pod with one IP, a `web` TCP/80 container port, in `phase`.
pub fn pod(namespace: &str, name: &str, ip: &str, node: &str, labels: Value, phase: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                    "ports": [{"name": "web", "containerPort": 80, "protocol": "TCP"}]}]},
           "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// A ClusterNetworkPolicy for every namespace with one egress rule.
pub fn cnp(name: &str, tier: &str, priority: i64, rule: Value) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": name},
           "spec": {"tier": tier, "priority": priority, "subject": {"namespaces": {}},
                    "egress": [rule]}})
}

/// A ClusterIP Service with one named TCP port.
pub fn service(namespace: &str, name: &str, cluster_ip: &str, port_name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                    "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}})
}

/// The IPv4 EndpointSlice of a Service: each endpoint is (address, ready, pod name), on
/// the TCP port `port_name` = `port`.
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    endpoints: &[(&str, bool, &str)],
    port_name: &str,
    port: u16,
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready, pod)| {
            json!({"addresses": [ip], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-1"), "namespace": namespace,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]})
}
