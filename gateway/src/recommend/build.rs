//! Observed traffic → DeveloperNetworkPolicies.
//!
//! One policy per source namespace (more when the rules do not fit the kind's limit of 25),
//! selecting every pod of the namespace. Destinations seen on the same set of ports share a
//! rule; each rule accepts its peers on exactly those ports. Peers are written as stably as
//! the records allow: a Service's ready endpoints, pods by namespace and workload labels,
//! `domainNames`, and `/32` or `/128` networks for addresses reached without a name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chokepoint_config::api::developer::{self, DeveloperNetworkPolicy, Spec, Subject};
use chokepoint_config::api::v1alpha2::{DestinationPort, EgressRule, Port, ProtocolPort};
use chokepoint_config::api::{
    EgressPeer, LabelSelector, NamespacedPod, ObjectMeta, ServiceReference,
};
use chokepoint_config::inventory::NAMESPACE_NAME_LABEL;
use chokepoint_config::model::Protocol;

use super::observed::{Observed, Peer, PortKey};

/// The name of a namespace's recommended policy (`-2`, `-3` … when it needs more than one).
pub const POLICY_NAME: &str = "recommended-egress";

/// The kind's limits: rules per policy, peers per rule, entries per peer list, protocols.
const MAX: usize = 25;

/// The policies that accept exactly what `observed` saw, namespace by namespace.
pub fn policies(observed: &Observed) -> Vec<DeveloperNetworkPolicy> {
    let mut out = Vec::new();
    for (namespace, peers) in observed {
        let rules = rules(namespace, peers);
        for (i, chunk) in rules.chunks(MAX).enumerate() {
            let name = match i {
                0 => POLICY_NAME.to_owned(),
                n => format!("{POLICY_NAME}-{}", n + 1),
            };
            out.push(policy(namespace, name, chunk.to_vec()));
        }
    }
    out
}

fn policy(namespace: &str, name: String, egress: Vec<EgressRule>) -> DeveloperNetworkPolicy {
    DeveloperNetworkPolicy {
        api_version: Some(developer::API_VERSION.to_owned()),
        kind: Some(developer::KIND.to_owned()),
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            annotations: Some(BTreeMap::from([(
                "policy.chokepoint.dev/generated-by".to_owned(),
                "chokepoint recommend".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(Spec {
            subject: Some(Subject {
                pod_selector: Some(LabelSelector::default()),
            }),
            egress: Some(egress),
        }),
        status: None,
    }
}

/// The namespace's rules: peers grouped by the ports they were reached on.
fn rules(namespace: &str, peers: &BTreeMap<Peer, BTreeSet<PortKey>>) -> Vec<EgressRule> {
    let mut by_ports: BTreeMap<&BTreeSet<PortKey>, Vec<&Peer>> = BTreeMap::new();
    for (peer, ports) in peers {
        by_ports.entry(ports).or_default().push(peer);
    }
    let mut rules = Vec::new();
    for (ports, peers) in by_ports {
        let to = to(namespace, &peers);
        let ports: Vec<&PortKey> = ports.iter().collect();
        for to in to.chunks(MAX) {
            for ports in ports.chunks(MAX) {
                rules.push(EgressRule {
                    name: Some(format!("observed-{}", rules.len() + 1)),
                    action: Some("Accept".to_owned()),
                    to: Some(to.to_vec()),
                    protocols: Some(ports.iter().map(|p| protocol(p)).collect()),
                });
            }
        }
    }
    rules
}

/// The `to` list for peers reached on the same ports.
fn to(namespace: &str, peers: &[&Peer]) -> Vec<EgressPeer> {
    let mut services = Vec::new();
    let mut pods = Vec::new();
    let mut names = BTreeSet::new();
    let mut networks = Vec::new();
    for peer in peers {
        match peer {
            Peer::Service { namespace, name } => services.push(ServiceReference {
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                ports: None,
            }),
            Peer::Pods {
                namespace: theirs,
                labels,
            } => pods.push(EgressPeer {
                pods: Some(NamespacedPod {
                    // Omitted: the policy's own namespace.
                    namespace_selector: (theirs != namespace).then(|| LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            NAMESPACE_NAME_LABEL.to_owned(),
                            theirs.clone(),
                        )])),
                        match_expressions: None,
                    }),
                    pod_selector: Some(LabelSelector {
                        match_labels: (!labels.is_empty()).then(|| labels.clone()),
                        match_expressions: None,
                    }),
                }),
                ..EgressPeer::default()
            }),
            Peer::Names(n) => names.extend(n.iter().cloned()),
            Peer::Address(ip) => networks.push(host_network(*ip)),
        }
    }
    let mut to = Vec::new();
    for chunk in services.chunks(MAX) {
        to.push(EgressPeer {
            services: Some(chunk.to_vec()),
            ..EgressPeer::default()
        });
    }
    to.extend(pods);
    let names: Vec<String> = names.into_iter().collect();
    for chunk in names.chunks(MAX) {
        to.push(EgressPeer {
            domain_names: Some(chunk.to_vec()),
            ..EgressPeer::default()
        });
    }
    for chunk in networks.chunks(MAX) {
        to.push(EgressPeer {
            networks: Some(chunk.to_vec()),
            ..EgressPeer::default()
        });
    }
    to
}

fn host_network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn protocol(p: &PortKey) -> ProtocolPort {
    let port = Some(DestinationPort {
        destination_port: Some(Port {
            number: Some(i64::from(p.port)),
            range: None,
        }),
    });
    match p.protocol {
        Protocol::Tcp => ProtocolPort {
            tcp: port,
            ..ProtocolPort::default()
        },
        Protocol::Udp => ProtocolPort {
            udp: port,
            ..ProtocolPort::default()
        },
        Protocol::Sctp => ProtocolPort {
            sctp: port,
            ..ProtocolPort::default()
        },
    }
}
