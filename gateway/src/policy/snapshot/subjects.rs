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

    use super::NAMESPACE_NAME_LABEL;
    use crate::policy::{Options, Snapshot};

    /// Three namespaces, four pods on two nodes, cluster policies whose subjects take each
    /// path of the index, a DeveloperNetworkPolicy and NetworkPolicies.
    fn world() -> String {
        let mut w = String::new();
        for (name, labels) in [("a", "{team: blue}"), ("b", "{team: green}"), ("c", "{}")] {
            w += &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n---\n"
            );
        }
        for (ns, name, labels, node, ip) in [
            ("a", "web", "{app: web}", "n1", "10.0.0.1"),
            ("a", "db", "{app: db}", "n1", "10.0.0.2"),
            ("b", "web", "{app: web}", "n2", "10.0.0.3"),
            ("c", "job", "{}", "n1", "10.0.0.4"),
        ] {
            w += &format!(
                "apiVersion: v1\nkind: Pod\n\
                 metadata: {{namespace: {ns}, name: {name}, labels: {labels}}}\n\
                 spec: {{nodeName: {node}}}\nstatus: {{podIP: {ip}}}\n---\n"
            );
        }
        let by_name =
            |ns: &str| format!("{{namespaces: {{matchLabels: {{{NAMESPACE_NAME_LABEL}: {ns}}}}}}}");
        for (name, tier, priority, subject) in [
            ("a-by-name", "Admin", 5, by_name("a")),
            (
                "team-green",
                "Admin",
                3,
                "{namespaces: {matchLabels: {team: green}}}".into(),
            ),
            (
                "web-pods",
                "Baseline",
                1,
                "{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}".into(),
            ),
            ("everywhere", "Admin", 10, "{namespaces: {}}".into()),
            (
                "team-blue-by-expression",
                "Admin",
                4,
                "{namespaces: {matchExpressions: [{key: team, operator: In, values: [blue]}]}}"
                    .into(),
            ),
            ("gone-namespace", "Admin", 1, by_name("gone")),
        ] {
            w += &format!(
                "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                 metadata: {{name: {name}}}\n\
                 spec:\n  tier: {tier}\n  priority: {priority}\n  subject: {subject}\n  \
                 egress: [{{action: Pass, to: [{{networks: [0.0.0.0/0]}}]}}]\n---\n"
            );
        }
        w + REST
    }

    const REST: &str = "\
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
spec: {podSelector: {}, policyTypes: [Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: ingress-only}
spec: {podSelector: {}, ingress: [{}]}
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
            &world(),
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
