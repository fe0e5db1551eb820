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
