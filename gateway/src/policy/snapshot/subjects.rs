//! Which policies select a subject class, found without testing every policy.

use std::collections::HashMap;

use chokepoint_config::inventory::{NAMESPACE_NAME_LABEL, NamespaceInfo};
use chokepoint_config::model::{ClusterPolicy, Labels, Subject, Tier};

use super::layout::{
    CompiledClusterPolicy, CompiledDeveloperPolicy, CompiledNetworkPolicy, SubjectClass,
};

/// Finds the cluster policies that may select a class without testing every policy.
pub(super) struct SubjectIndex {
    /// Policies whose subject names no namespace or label we can index on.
    everywhere: Vec<u32>,
    by_namespace: HashMap<u32, Vec<u32>>,
    by_namespace_label: HashMap<(String, String), Vec<u32>>,
    by_pod_label: HashMap<(String, String), Vec<u32>>,
    /// DeveloperNetworkPolicies, by namespace (in `Snapshot::developer` order).
    developer_by_namespace: HashMap<u32, Vec<u32>>,
    /// NetworkPolicies that isolate egress, by namespace.
    network_by_namespace: HashMap<u32, Vec<u32>>,
}

impl SubjectIndex {
    pub(super) fn new(
        cluster: &[CompiledClusterPolicy],
        developer: &[CompiledDeveloperPolicy],
        network: &[CompiledNetworkPolicy],
        namespaces: &[NamespaceInfo],
    ) -> Self {
        let mut ix = SubjectIndex {
            everywhere: Vec::new(),
            by_namespace: HashMap::new(),
            by_namespace_label: HashMap::new(),
            by_pod_label: HashMap::new(),
            developer_by_namespace: HashMap::new(),
            network_by_namespace: HashMap::new(),
        };
        for (i, p) in developer.iter().enumerate() {
            ix.developer_by_namespace
                .entry(p.namespace)
                .or_default()
                .push(i as u32);
        }
        for (i, np) in network.iter().enumerate() {
            if np.source.egress.is_some() {
                ix.network_by_namespace
                    .entry(np.namespace)
                    .or_default()
                    .push(i as u32);
            }
        }
        let ns_index: HashMap<&str, u32> = namespaces
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i as u32))
            .collect();
        for (i, p) in cluster.iter().enumerate() {
            let i = i as u32;
            let (ns_sel, pod_sel) = match &p.source.subject {
                Subject::Namespaces(s) => (s, None),
                Subject::Pods { namespaces, pods } => (namespaces, Some(pods)),
            };
            if let Some((k, v)) = ns_sel.required_pairs().next() {
                if k == NAMESPACE_NAME_LABEL {
                    // A namespace that does not exist selects nothing: no entry at all.
                    if let Some(&ns) = ns_index.get(v) {
                        ix.by_namespace.entry(ns).or_default().push(i);
                    }
                } else {
                    ix.by_namespace_label
                        .entry((k.into(), v.into()))
                        .or_default()
                        .push(i);
                }
            } else if let Some((k, v)) = pod_sel.and_then(|s| s.required_pairs().next()) {
                ix.by_pod_label
                    .entry((k.into(), v.into()))
                    .or_default()
                    .push(i);
            } else {
                ix.everywhere.push(i);
            }
        }
        ix
    }

    pub(super) fn class(
        &self,
        cluster: &[CompiledClusterPolicy],
        developer: &[CompiledDeveloperPolicy],
        network: &[CompiledNetworkPolicy],
        namespace: &NamespaceInfo,
        ns: u32,
        labels: &Labels,
    ) -> SubjectClass {
        let mut candidates: Vec<u32> = self.everywhere.clone();
        candidates.extend(self.by_namespace.get(&ns).into_iter().flatten());
        for (k, v) in &namespace.labels {
            candidates.extend(
                self.by_namespace_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten(),
            );
        }
        for (k, v) in labels {
            candidates.extend(
                self.by_pod_label
                    .get(&(k.clone(), v.clone()))
                    .into_iter()
                    .flatten(),
            );
        }
        // Indices are positions in evaluation order, so sorting restores that order.
        candidates.sort_unstable();
        candidates.dedup();
        let selects = |p: &ClusterPolicy| match &p.subject {
            Subject::Namespaces(s) => s.matches(&namespace.labels),
            Subject::Pods { namespaces, pods } => {
                namespaces.matches(&namespace.labels) && pods.matches(labels)
            }
        };
        let (mut admin, mut baseline) = (Vec::new(), Vec::new());
        for i in candidates {
            let p = &cluster[i as usize].source;
            if selects(p) {
                match p.tier {
                    Tier::Admin => admin.push(i),
                    Tier::Baseline => baseline.push(i),
                }
            }
        }
        let developer: Vec<u32> = self
            .developer_by_namespace
            .get(&ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| developer[i as usize].source.pod_selector.matches(labels))
            .collect();
        let network: Vec<u32> = self
            .network_by_namespace
            .get(&ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| network[i as usize].source.pod_selector.matches(labels))
            .collect();
        SubjectClass {
            admin: admin.into(),
            baseline: baseline.into(),
            developer: developer.into(),
            network: network.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use chokepoint_config::{UnknownFields, load_str};

    use crate::policy::{Options, Snapshot};

    const WORLD: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: blue}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: green}}
---
apiVersion: v1
kind: Namespace
metadata: {name: c}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: web, labels: {app: web}}
spec: {nodeName: n1}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: db, labels: {app: db}}
spec: {nodeName: n1}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: b, name: web, labels: {app: web}}
spec: {nodeName: n2}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {namespace: c, name: job}
spec: {nodeName: n1}
status: {podIP: 10.0.0.4}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: a-by-name}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: a}}}
  egress: [{action: Pass, to: [{networks: [0.0.0.0/0]}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: team-green}
spec:
  tier: Admin
  priority: 3
  subject: {namespaces: {matchLabels: {team: green}}}
  egress: [{action: Pass, to: [{networks: [0.0.0.0/0]}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: web-pods}
spec:
  tier: Baseline
  priority: 1
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
  egress: [{action: Deny, to: [{networks: [0.0.0.0/0]}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: everywhere}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  egress: [{action: Pass, to: [{networks: [0.0.0.0/0]}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: team-blue-by-expression}
spec:
  tier: Admin
  priority: 4
  subject: {namespaces: {matchExpressions: [{key: team, operator: In, values: [blue]}]}}
  egress: [{action: Pass, to: [{networks: [0.0.0.0/0]}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: gone-namespace}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: gone}}}
  egress: [{action: Pass, to: [{networks: [0.0.0.0/0]}]}]
---
apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {namespace: a, name: web-out}
spec:
  subject: {podSelector: {matchLabels: {app: web}}}
  egress: [{action: Accept, to: [{networks: [192.0.2.0/24]}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: default-deny}
spec:
  podSelector: {}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: ingress-only}
spec:
  podSelector: {}
  ingress: [{}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: b, name: web-egress}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{}]
";

    fn snapshot(node: Option<&str>) -> Snapshot {
        let loaded = load_str(
            std::path::Path::new("world.yaml"),
            WORLD,
            UnknownFields::Reject,
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        match node {
            Some(n) => Snapshot::compile_for_node(&loaded.world, Options::default(), n),
            None => Snapshot::compile(&loaded.world, Options::default()),
        }
    }

    /// The names of the policies a pod's class lists, tier by tier.
    fn class_of(s: &Snapshot, ip: &str) -> Option<[Vec<String>; 4]> {
        let ip: IpAddr = ip.parse().unwrap();
        let &(_, class) = s.pod_by_ip.get(&ip)?;
        let class = s.classes.get(class as usize)?;
        let cluster = |list: &[u32]| -> Vec<String> {
            list.iter()
                .map(|&i| s.cluster[i as usize].source.name.clone())
                .collect()
        };
        Some([
            cluster(&class.admin),
            cluster(&class.baseline),
            class
                .developer
                .iter()
                .map(|&i| s.developer[i as usize].source.name.clone())
                .collect(),
            class
                .network
                .iter()
                .map(|&i| s.network[i as usize].source.name.clone())
                .collect(),
        ])
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn a_class_lists_exactly_the_policies_that_select_it_in_evaluation_order() {
        let s = snapshot(None);
        let none: Vec<String> = Vec::new();
        assert_eq!(
            class_of(&s, "10.0.0.1").unwrap(),
            [
                names(&["team-blue-by-expression", "a-by-name", "everywhere"]),
                names(&["web-pods"]),
                names(&["web-out"]),
                names(&["default-deny"]),
            ],
            "a/web: by expression, by namespace name and everywhere; the ingress-only \
             NetworkPolicy does not isolate egress"
        );
        assert_eq!(
            class_of(&s, "10.0.0.2").unwrap(),
            [
                names(&["team-blue-by-expression", "a-by-name", "everywhere"]),
                none.clone(),
                none.clone(),
                names(&["default-deny"]),
            ],
            "a/db: not a web pod"
        );
        assert_eq!(
            class_of(&s, "10.0.0.3").unwrap(),
            [
                names(&["team-green", "everywhere"]),
                names(&["web-pods"]),
                none.clone(),
                names(&["web-egress"]),
            ],
            "b/web: by namespace label"
        );
        assert_eq!(
            class_of(&s, "10.0.0.4").unwrap(),
            [names(&["everywhere"]), none.clone(), none.clone(), none],
            "c/job: only the policy for every namespace"
        );
    }

    #[test]
    fn pods_of_other_nodes_get_no_class() {
        let s = snapshot(Some("n1"));
        assert!(class_of(&s, "10.0.0.1").is_some());
        assert!(class_of(&s, "10.0.0.4").is_some());
        assert_eq!(
            s.pod_by_ip.get(&"10.0.0.3".parse::<IpAddr>().unwrap()),
            Some(&(2, super::super::NOT_SUBJECT)),
            "b/web runs on n2: a destination only"
        );
        assert!(class_of(&s, "10.0.0.3").is_none());
    }
}
