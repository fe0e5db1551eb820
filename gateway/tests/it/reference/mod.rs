//! A deliberately naive reference evaluator, written from the spec (README.md
//! "Policy semantics" and the network-policy-api), not from the engine.
//!
//! It works on the raw [`World`] for every flow: no indexes, no interning, no subject
//! classes, no precomputed namespace sets. Every selector, CIDR and domain pattern is matched
//! by code in this file, so a shared helper cannot hide a shared bug. It is slow on purpose
//! and only meant for small generated worlds.
//!
//! Where the spec leaves a choice open, it makes the choice README.md and the engine document
//! (see the header of `semantics.rs`).

use std::net::IpAddr;

use chokepoint::policy::{Decision, Flow, Outcome, Reason, TierName};
use chokepoint_config::World;
use chokepoint_config::inventory::{AddressType, NAMESPACE_NAME_LABEL, PodInfo, TargetPort};
use chokepoint_config::model::{
    Action, ClusterPolicy, DeveloperPolicy, DomainPattern, Labels, NetworkPolicyPeer,
    NetworkPolicyPortSpec, NetworkPolicyRule, NetworkPolicyRules, Peer, PolicyKind, PortMatch,
    Protocol, Requirement, Rule, Selector, ServicePeer, Subject, Tier,
};
use ipnet::IpNet;

use crate::common::{StepView, Want};

/// The reference evaluator over one world.
#[derive(Debug)]
pub struct Reference<'w> {
    world: &'w World,
    default: Decision,
}

/// The destination of the flow being decided.
struct Dst<'w> {
    ip: IpAddr,
    /// The pod (never a host-network one) that owns the IP.
    pod: Option<&'w PodInfo>,
}

impl<'w> Reference<'w> {
    pub fn new(world: &'w World, default: Decision) -> Self {
        Reference { world, default }
    }

    /// The verdict and the trace of the policies consulted, in order.
    pub fn evaluate(&self, flow: &Flow<'_>) -> (Want, Vec<StepView>) {
        let mut trace = Vec::new();
        let want = self.decide(flow, &mut trace);
        (want, trace)
    }

    fn decide(&self, flow: &Flow<'_>, trace: &mut Vec<StepView>) -> Want {
        let pods = &self.world.inventory.pods;
        let nodes = &self.world.inventory.nodes;

        // Only pods (never host-network ones) are subjects.
        let Some(src) = pods
            .iter()
            .find(|p| !p.host_network && p.ips.contains(&flow.src))
        else {
            let host = nodes.iter().any(|n| n.addresses.contains(&flow.src))
                || pods
                    .iter()
                    .any(|p| p.host_network && p.ips.contains(&flow.src));
            if host {
                trace.push((TierName::Default, None, None, Outcome::Exempt));
                return verdict(
                    Decision::Allow,
                    TierName::Default,
                    None,
                    Reason::HostNetworkSource,
                );
            }
            trace.push((TierName::Default, None, None, Outcome::Default));
            return verdict(self.default, TierName::Default, None, Reason::UnknownSource);
        };

        // A pod talking to one of its own IPs is not subject to policy.
        if src.ips.contains(&flow.dst) {
            trace.push((TierName::Default, None, None, Outcome::Exempt));
            return verdict(Decision::Allow, TierName::Default, None, Reason::Hairpin);
        }

        let dst = Dst {
            ip: flow.dst,
            pod: pods
                .iter()
                .find(|p| !p.host_network && p.ips.contains(&flow.dst)),
        };

        // 1. Admin.
        if let Some(v) = self.cluster_tier(Tier::Admin, src, flow, &dst, trace) {
            return v;
        }

        // 2a. NetworkPolicy tier, DeveloperNetworkPolicies: those of the source's namespace
        //     that select it. Of all their rules that match, a Deny decides, else an Accept
        //     (the first in policy-name order, then rule order, names the verdict); with no
        //     match they do not decide and NetworkPolicy v1 goes on as if they did not exist.
        let mut developer: Vec<&DeveloperPolicy> = self
            .world
            .developer_policies
            .iter()
            .filter(|p| p.namespace == src.namespace && selects(&p.pod_selector, &src.labels))
            .collect();
        developer.sort_by(|a, b| a.name.cmp(&b.name));
        let matching: Vec<(&DeveloperPolicy, usize, Action)> = developer
            .iter()
            .flat_map(|p| {
                p.egress
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| self.rule_matches(r, flow, &dst))
                    .map(move |(i, r)| (*p, i, r.action))
            })
            .collect();
        let decisive = matching
            .iter()
            .find(|m| m.2 == Action::Deny)
            .or_else(|| matching.iter().find(|m| m.2 == Action::Accept));
        if let Some(&(p, i, action)) = decisive {
            let label = format!("dnp/{}/{}", p.namespace, p.name);
            let i = i as u16;
            trace.push((
                TierName::NetworkPolicy,
                Some(label.clone()),
                Some(i),
                Outcome::Matched(action),
            ));
            return Want {
                decision: if action == Action::Deny {
                    Decision::Deny
                } else {
                    Decision::Allow
                },
                tier: TierName::NetworkPolicy,
                policy: Some(label),
                rule: Some(i),
                action: Some(action),
                reason: Reason::Rule,
            };
        }
        for p in &developer {
            trace.push((
                TierName::NetworkPolicy,
                Some(format!("dnp/{}/{}", p.namespace, p.name)),
                None,
                Outcome::NoMatch,
            ));
        }

        // 2b. NetworkPolicy: isolated when a policy of the source's namespace with Egress in
        //    its policyTypes selects it; then allowed iff some rule of those policies matches.
        let isolating: Vec<&NetworkPolicyRules> = self
            .world
            .network_policies
            .iter()
            .filter(|np| {
                np.namespace == src.namespace
                    && np.egress.is_some()
                    && selects(&np.pod_selector, &src.labels)
            })
            .collect();
        if !isolating.is_empty() {
            for np in &isolating {
                let label = format!("np/{}/{}", np.namespace, np.name);
                let rules = np.egress.as_deref().unwrap_or_default();
                match rules
                    .iter()
                    .position(|r| self.network_rule_matches(np, r, flow, &dst))
                {
                    Some(i) => {
                        let i = i as u16;
                        trace.push((
                            TierName::NetworkPolicy,
                            Some(label.clone()),
                            Some(i),
                            Outcome::Matched(Action::Accept),
                        ));
                        return Want {
                            decision: Decision::Allow,
                            tier: TierName::NetworkPolicy,
                            policy: Some(label),
                            rule: Some(i),
                            action: None,
                            reason: Reason::Rule,
                        };
                    }
                    None => trace.push((
                        TierName::NetworkPolicy,
                        Some(label),
                        None,
                        Outcome::IsolatedNoMatch,
                    )),
                }
            }
            let first = isolating[0];
            return verdict(
                Decision::Deny,
                TierName::NetworkPolicy,
                Some(format!("np/{}/{}", first.namespace, first.name)),
                Reason::NetworkPolicyIsolation,
            );
        }
        trace.push((TierName::NetworkPolicy, None, None, Outcome::NotIsolated));

        // 3. Baseline.
        if let Some(v) = self.cluster_tier(Tier::Baseline, src, flow, &dst, trace) {
            return v;
        }

        // 4. Default.
        trace.push((TierName::Default, None, None, Outcome::Default));
        verdict(self.default, TierName::Default, None, Reason::Default)
    }

    /// Admin or Baseline: `Some` when Accept or Deny decided, `None` on Pass or no match.
    fn cluster_tier(
        &self,
        tier: Tier,
        src: &PodInfo,
        flow: &Flow<'_>,
        dst: &Dst<'_>,
        trace: &mut Vec<StepView>,
    ) -> Option<Want> {
        let tier_name = match tier {
            Tier::Admin => TierName::Admin,
            Tier::Baseline => TierName::Baseline,
        };
        let mut policies: Vec<&ClusterPolicy> = self
            .world
            .cluster_policies
            .iter()
            .filter(|p| p.tier == tier && self.subject_selects(&p.subject, src))
            .collect();
        // Priority ascending, ties by name then kind; a v1alpha1 BANP (no priority of its
        // own) after every Baseline ClusterNetworkPolicy.
        policies.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
        for p in policies {
            let label = format!("{}/{}", p.kind.short_name(), p.name);
            let Some(i) = p
                .egress
                .iter()
                .position(|r| self.rule_matches(r, flow, dst))
            else {
                trace.push((tier_name, Some(label), None, Outcome::NoMatch));
                continue;
            };
            let action = p.egress[i].action;
            let i = i as u16;
            trace.push((
                tier_name,
                Some(label.clone()),
                Some(i),
                Outcome::Matched(action),
            ));
            let decision = match action {
                Action::Accept => Decision::Allow,
                Action::Deny => Decision::Deny,
                Action::Pass => return None,
            };
            return Some(Want {
                decision,
                tier: tier_name,
                policy: Some(label),
                rule: Some(i),
                action: Some(action),
                reason: Reason::Rule,
            });
        }
        None
    }

    fn subject_selects(&self, subject: &Subject, pod: &PodInfo) -> bool {
        let ns = self.namespace_labels(&pod.namespace);
        match subject {
            Subject::Namespaces(s) => selects(s, &ns),
            Subject::Pods { namespaces, pods } => {
                selects(namespaces, &ns) && selects(pods, &pod.labels)
            }
        }
    }

    /// A namespace's labels; a namespace missing from the inventory still has its name label.
    fn namespace_labels(&self, name: &str) -> Labels {
        match self
            .world
            .inventory
            .namespaces
            .iter()
            .find(|n| n.name == name)
        {
            Some(n) => n.labels.clone(),
            None => Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())]),
        }
    }

    /// A cluster-policy (or DeveloperNetworkPolicy) rule: a peer matches and (no protocols, or
    /// one protocol entry matches). Unknown parts match nothing in Accept rules and everything
    /// otherwise.
    fn rule_matches(&self, rule: &Rule, flow: &Flow<'_>, dst: &Dst<'_>) -> bool {
        let unknown = rule.action != Action::Accept;
        if rule.unknown_fields {
            return unknown;
        }
        let protocol_ok = match &rule.protocols {
            None => true,
            Some(list) => list.iter().any(|m| match m {
                PortMatch::Port { protocol, ports } => {
                    *protocol == flow.protocol
                        && ports.first <= flow.port
                        && flow.port <= ports.last
                }
                PortMatch::Named(name) => named_port(dst.pod, name, flow.protocol, flow.port),
                PortMatch::Unknown => unknown,
            }),
        };
        let peer_ok = rule.peers.iter().any(|peer| match peer {
            Peer::Namespaces(s) => dst
                .pod
                .is_some_and(|d| selects(s, &self.namespace_labels(&d.namespace))),
            Peer::Pods { namespaces, pods } => dst.pod.is_some_and(|d| {
                selects(namespaces, &self.namespace_labels(&d.namespace))
                    && selects(pods, &d.labels)
            }),
            Peer::Nodes(s) => self
                .world
                .inventory
                .nodes
                .iter()
                .any(|n| n.addresses.contains(&dst.ip) && selects(s, &n.labels)),
            Peer::Networks(nets) => nets.iter().any(|n| cidr_contains(n, dst.ip)),
            Peer::DomainNames(patterns) => flow
                .names
                .iter()
                .any(|name| patterns.iter().any(|p| domain_matches(p, name))),
            Peer::Services(list) => list.iter().any(|s| self.service_backend(s, flow, dst)),
            Peer::Unknown => unknown,
        });
        protocol_ok && peer_ok
    }

    /// A `services` entry: the destination is a ready endpoint of the Service (any port when
    /// the entry names no ports; else the slice's port of a named Service port, on a family
    /// the Service has a ClusterIP of, or any family when it is headless).
    fn service_backend(&self, peer: &ServicePeer, flow: &Flow<'_>, dst: &Dst<'_>) -> bool {
        let inv = &self.world.inventory;
        let Some(svc) = inv
            .services
            .iter()
            .find(|s| s.namespace == peer.namespace && s.name == peer.name)
        else {
            return false;
        };
        inv.endpoint_slices
            .iter()
            .filter(|sl| sl.namespace == svc.namespace && sl.service == svc.name)
            .filter(|sl| sl.address_type != AddressType::Fqdn)
            .any(|sl| {
                let ready_here = sl
                    .endpoints
                    .iter()
                    .any(|e| e.ready != Some(false) && e.addresses.contains(&dst.ip));
                let Some(names) = &peer.ports else {
                    return ready_here;
                };
                let family_ok = svc.cluster_ips.is_empty()
                    || svc
                        .cluster_ips
                        .iter()
                        .any(|c| c.is_ipv4() == dst.ip.is_ipv4());
                ready_here
                    && family_ok
                    && svc.ports.iter().any(|sp| {
                        sp.protocol == flow.protocol
                            && sp.name.as_ref().is_some_and(|n| names.contains(n))
                            && sl.ports.iter().any(|ep| {
                                ep.protocol == sp.protocol
                                    && ep.name.as_deref().unwrap_or("")
                                        == sp.name.as_deref().unwrap_or("")
                                    && ep.port.or(match sp.target_port {
                                        TargetPort::Number(n) => Some(n),
                                        TargetPort::Name(_) => None,
                                    }) == Some(flow.port)
                            })
                    })
            })
    }

    /// A NetworkPolicy rule: (no `to`, or a peer matches) and (no `ports`, or a port matches).
    fn network_rule_matches(
        &self,
        np: &NetworkPolicyRules,
        rule: &NetworkPolicyRule,
        flow: &Flow<'_>,
        dst: &Dst<'_>,
    ) -> bool {
        let port_ok = rule.ports.is_empty()
            || rule.ports.iter().any(|p| {
                p.protocol == flow.protocol
                    && match &p.port {
                        NetworkPolicyPortSpec::Any => true,
                        NetworkPolicyPortSpec::Range(r) => {
                            r.first <= flow.port && flow.port <= r.last
                        }
                        NetworkPolicyPortSpec::Named(name) => {
                            named_port(dst.pod, name, p.protocol, flow.port)
                        }
                    }
            });
        let peer_ok = rule.peers.is_empty()
            || rule.peers.iter().any(|peer| match peer {
                NetworkPolicyPeer::Pods { namespaces, pods } => dst.pod.is_some_and(|d| {
                    let namespace_ok = match namespaces {
                        // podSelector alone: the policy's own namespace.
                        None => d.namespace == np.namespace,
                        Some(s) => selects(s, &self.namespace_labels(&d.namespace)),
                    };
                    namespace_ok && pods.as_ref().is_none_or(|s| selects(s, &d.labels))
                }),
                NetworkPolicyPeer::IpBlock { cidr, except } => {
                    cidr_contains(cidr, dst.ip) && !except.iter().any(|e| cidr_contains(e, dst.ip))
                }
            });
        port_ok && peer_ok
    }
}

fn verdict(decision: Decision, tier: TierName, policy: Option<String>, reason: Reason) -> Want {
    Want {
        decision,
        tier,
        policy,
        rule: None,
        action: None,
        reason,
    }
}

fn order_key(p: &ClusterPolicy) -> (bool, u32, &str, &'static str) {
    (
        p.kind == PolicyKind::BaselineAdminNetworkPolicy,
        p.priority,
        p.name.as_str(),
        p.kind.short_name(),
    )
}

/// A label selector: every requirement holds (`NotIn` holds when the key is absent).
fn selects(selector: &Selector, labels: &Labels) -> bool {
    selector.requirements.iter().all(|r| match r {
        Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
        Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
        Requirement::Exists(k) => labels.contains_key(k),
        Requirement::DoesNotExist(k) => !labels.contains_key(k),
    })
}

/// A named port: the destination pod declares a container port of that name, protocol and
/// number.
fn named_port(pod: Option<&PodInfo>, name: &str, protocol: Protocol, port: u16) -> bool {
    pod.is_some_and(|d| {
        d.ports.iter().any(|cp| {
            cp.name.as_deref() == Some(name) && cp.protocol == protocol && cp.port == port
        })
    })
}

/// Prefix comparison on the integer form of the addresses; families never mix.
fn cidr_contains(net: &IpNet, ip: IpAddr) -> bool {
    let (net_bits, ip_bits, width) = match (net.addr(), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    let len = u32::from(net.prefix_len());
    len == 0 || (net_bits >> (width - len)) == (ip_bits >> (width - len))
}

/// NPEP-133: an exact name, or `*.` + suffix standing for one or more whole labels; case
/// does not matter and one trailing dot is allowed on either side.
fn domain_matches(pattern: &DomainPattern, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let suffix = pattern
        .name
        .strip_suffix('.')
        .unwrap_or(&pattern.name)
        .to_ascii_lowercase();
    if !pattern.wildcard {
        return name == suffix;
    }
    // `<one or more labels>.<suffix>`: what precedes the suffix is non-empty and ends in a dot.
    name.strip_suffix(suffix.as_str())
        .is_some_and(|head| head.len() >= 2 && head.ends_with('.'))
}
