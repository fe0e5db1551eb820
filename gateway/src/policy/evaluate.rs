//! Evaluating a flow against a snapshot: the per-connection hot path.
//!
//! No allocation, no lock, no I/O: only lookups in the snapshot's indexes.

use std::net::IpAddr;

use chokepoint_config::model::{Action, NetworkPolicyPortSpec};

use super::flow::{DecidedBy, Decision, Flow, PolicyRef, Reason, TierName, Verdict};
use super::snapshot::{
    CompiledNetworkPolicyPeer, CompiledNetworkPolicyRule, CompiledPeer, CompiledPort, CompiledRule,
    NOT_SUBJECT, PodEntry, Snapshot,
};
use super::trace::{NoTrace, Outcome, Step, Trace};

/// How a rule matched a flow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleMatch {
    No,
    /// Only through `domainNames` peers: the destination counts as one of the names.
    ByName,
    /// Through an address peer (pods, namespaces, nodes, networks), or a fail-closed part.
    Direct,
}

/// What the flow's destination is, resolved once per evaluation.
#[derive(Clone, Copy)]
struct Destination<'s> {
    ip: IpAddr,
    /// A non-host-network pod that owns the IP.
    pod: Option<&'s PodEntry>,
    node: Option<u32>,
}

impl Snapshot {
    /// Decides a flow.
    pub fn evaluate(&self, flow: &Flow<'_>) -> Verdict {
        self.decide(flow, &mut NoTrace)
    }

    /// Decides a flow and records every tier and policy consulted.
    pub fn explain(&self, flow: &Flow<'_>) -> (Verdict, Vec<Step>) {
        let mut trace = Vec::new();
        let verdict = self.decide(flow, &mut trace);
        (verdict, trace)
    }

    pub(super) fn decide<T: Trace>(&self, flow: &Flow<'_>, trace: &mut T) -> Verdict {
        // An IPv4 peer of a dual-stack socket shows up as ::ffff:a.b.c.d: decide it as IPv4.
        let flow = &Flow {
            src: flow.src.to_canonical(),
            dst: flow.dst.to_canonical(),
            ..*flow
        };
        let exempt = |reason, trace: &mut T| {
            trace.step(Step {
                tier: TierName::Default,
                policy: None,
                rule_index: None,
                outcome: Outcome::Exempt,
            });
            self.default_verdict(reason, Decision::Allow)
        };
        let source = self
            .pod_by_ip
            .get(&flow.src)
            .filter(|&&(_, class)| class != NOT_SUBJECT);
        let Some(&(src, class)) = source else {
            if self.is_host_network(flow.src) {
                return exempt(Reason::HostNetworkSource, trace);
            }
            // Not a pod: no policy has it as subject.
            trace.step(Step {
                tier: TierName::Default,
                policy: None,
                rule_index: None,
                outcome: Outcome::Default,
            });
            let decision = self
                .options
                .unknown_source_decision
                .unwrap_or(self.options.default_decision);
            return self.default_verdict(Reason::UnknownSource, decision);
        };
        let src = &self.pods[src as usize];
        if src.info.ips.contains(&flow.dst) {
            return exempt(Reason::Hairpin, trace);
        }
        let dst = Destination {
            ip: flow.dst,
            pod: self
                .pod_by_ip
                .get(&flow.dst)
                .map(|&(i, _)| &self.pods[i as usize]),
            node: self.node_by_ip.get(&flow.dst).copied(),
        };
        let class = &self.classes[class as usize];

        if let Some(v) = self.cluster_tier(TierName::Admin, &class.admin, flow, dst, trace) {
            return v;
        }
        if !class.developer.is_empty()
            && let Some(v) = self.developer_tier(&class.developer, flow, dst, trace)
        {
            return v;
        }
        if !class.network.is_empty() {
            return self.network_policy_tier(&class.network, flow, dst, trace);
        }
        trace.step(Step {
            tier: TierName::NetworkPolicy,
            policy: None,
            rule_index: None,
            outcome: Outcome::NotIsolated,
        });
        if let Some(v) = self.cluster_tier(TierName::Baseline, &class.baseline, flow, dst, trace) {
            return v;
        }
        trace.step(Step {
            tier: TierName::Default,
            policy: None,
            rule_index: None,
            outcome: Outcome::Default,
        });
        self.default_verdict(Reason::Default, self.options.default_decision)
    }

    fn default_verdict(&self, reason: Reason, decision: Decision) -> Verdict {
        Verdict {
            decision,
            decided_by: DecidedBy {
                tier: TierName::Default,
                policy: None,
                rule_index: None,
                action: None,
            },
            reason,
            by_domain_names: false,
        }
    }

    /// Admin or Baseline: `Some` when a rule decided, `None` to go on to the next tier.
    fn cluster_tier<T: Trace>(
        &self,
        tier: TierName,
        policies: &[u32],
        flow: &Flow<'_>,
        dst: Destination<'_>,
        trace: &mut T,
    ) -> Option<Verdict> {
        for &i in policies {
            let policy_ref = Some(PolicyRef::Cluster(i));
            let Some((rule_index, action, by_name)) = self.first_matching_rule(i, flow, dst) else {
                trace.step(Step {
                    tier,
                    policy: policy_ref,
                    rule_index: None,
                    outcome: Outcome::NoMatch,
                });
                continue;
            };
            let rule_index = Some(rule_index as u16);
            trace.step(Step {
                tier,
                policy: policy_ref,
                rule_index,
                outcome: Outcome::Matched(action),
            });
            let decision = match action {
                Action::Accept => Decision::Allow,
                Action::Deny => Decision::Deny,
                // Skip the rest of this tier.
                Action::Pass => return None,
            };
            return Some(Verdict {
                decision,
                decided_by: DecidedBy {
                    tier,
                    policy: policy_ref,
                    rule_index,
                    action: Some(action),
                },
                reason: Reason::Rule,
                by_domain_names: by_name,
            });
        }
        None
    }

    /// The DeveloperNetworkPolicy half of the NetworkPolicy tier: a matching Deny rule of any
    /// policy wins, then a matching Accept rule; `None` (no implicit isolation) when no rule
    /// matches. Policies are tried by name, rules in order, so the first Deny (then Accept)
    /// found names the verdict. Only the deciding step is traced; when nothing matches, every
    /// policy is traced as `NoMatch`.
    fn developer_tier<T: Trace>(
        &self,
        policies: &[u32],
        flow: &Flow<'_>,
        dst: Destination<'_>,
        trace: &mut T,
    ) -> Option<Verdict> {
        let tier = TierName::NetworkPolicy;
        for action in [Action::Deny, Action::Accept] {
            for &i in policies {
                let rules = self.rules.of(self.developer[i as usize].rules);
                let Some((r, how)) = rules.iter().enumerate().find_map(|(i, r)| {
                    let how = if r.action == action {
                        self.rule_matches(r, flow, dst)
                    } else {
                        RuleMatch::No
                    };
                    (how != RuleMatch::No).then_some((i, how))
                }) else {
                    continue;
                };
                let policy = Some(PolicyRef::Developer(i));
                let rule_index = Some(r as u16);
                trace.step(Step {
                    tier,
                    policy,
                    rule_index,
                    outcome: Outcome::Matched(action),
                });
                return Some(Verdict {
                    decision: if action == Action::Accept {
                        Decision::Allow
                    } else {
                        Decision::Deny
                    },
                    decided_by: DecidedBy {
                        tier,
                        policy,
                        rule_index,
                        action: Some(action),
                    },
                    reason: Reason::Rule,
                    by_domain_names: how == RuleMatch::ByName,
                });
            }
        }
        for &i in policies {
            trace.step(Step {
                tier,
                policy: Some(PolicyRef::Developer(i)),
                rule_index: None,
                outcome: Outcome::NoMatch,
            });
        }
        None
    }

    fn first_matching_rule(
        &self,
        policy: u32,
        flow: &Flow<'_>,
        dst: Destination<'_>,
    ) -> Option<(usize, Action, bool)> {
        self.rules.of(policy).iter().enumerate().find_map(|(i, r)| {
            match self.rule_matches(r, flow, dst) {
                RuleMatch::No => None,
                how => Some((i, r.action, how == RuleMatch::ByName)),
            }
        })
    }

    fn rule_matches(
        &self,
        rule: &CompiledRule,
        flow: &Flow<'_>,
        dst: Destination<'_>,
    ) -> RuleMatch {
        // Fail closed: an unknown part never widens an Accept, and always widens a Deny/Pass.
        let unknown_matches = rule.action != Action::Accept;
        if rule.fail_closed {
            return if unknown_matches {
                RuleMatch::Direct
            } else {
                RuleMatch::No
            };
        }
        let arena = &self.rules;
        let ports_match = !rule.has_ports
            || arena.ports[rule.ports.range()].iter().any(|m| match *m {
                CompiledPort::Port { protocol, ports } => {
                    protocol == flow.protocol && ports.contains(flow.port)
                }
                CompiledPort::Named(name) => dst.pod.is_some_and(|p| {
                    p.named_port(&arena.port_names[name as usize])
                        .any(|cp| cp.protocol == flow.protocol && cp.port == flow.port)
                }),
                CompiledPort::Unknown => unknown_matches,
            });
        if !ports_match {
            return RuleMatch::No;
        }
        // An address peer settles it; a name peer only counts when no address peer matches,
        // since then the connection must also show that name (SNI/Host).
        let mut how = RuleMatch::No;
        for &peer in &arena.peers[rule.peers.range()] {
            if self.peer_matches(peer, flow, dst, unknown_matches) {
                if !matches!(peer, CompiledPeer::DomainNames(_)) {
                    return RuleMatch::Direct;
                }
                how = RuleMatch::ByName;
            }
        }
        how
    }

    fn peer_matches(
        &self,
        peer: CompiledPeer,
        flow: &Flow<'_>,
        dst: Destination<'_>,
        unknown_matches: bool,
    ) -> bool {
        let arena = &self.rules;
        match peer {
            CompiledPeer::Namespaces(set) => dst
                .pod
                .is_some_and(|p| self.namespace_sets.contains(set, p.namespace)),
            CompiledPeer::Pods { namespaces, pods } => dst.pod.is_some_and(|p| {
                self.namespace_sets.contains(namespaces, p.namespace)
                    && arena.selectors[pods as usize].matches(&p.info.labels)
            }),
            CompiledPeer::Nodes(selector) => dst.node.is_some_and(|n| {
                arena.selectors[selector as usize].matches(&self.nodes[n as usize].labels)
            }),
            CompiledPeer::Networks(nets) => arena.networks[nets.range()]
                .iter()
                .any(|n| n.contains(&dst.ip)),
            CompiledPeer::DomainNames(i) => {
                let patterns = &arena.domain_names[i as usize];
                flow.names
                    .iter()
                    .any(|name| patterns.iter().any(|p| p.matches(name)))
            }
            CompiledPeer::Services(i) => {
                arena.service_sets[i as usize].contains(dst.ip, flow.port, flow.protocol)
            }
            CompiledPeer::Unknown => unknown_matches,
        }
    }

    /// The source is egress-isolated: allowed only if some rule of some isolating policy matches.
    fn network_policy_tier<T: Trace>(
        &self,
        policies: &[u32],
        flow: &Flow<'_>,
        dst: Destination<'_>,
        trace: &mut T,
    ) -> Verdict {
        let tier = TierName::NetworkPolicy;
        for &i in policies {
            let policy_ref = Some(PolicyRef::Network(i));
            let rules = &self.network[i as usize].rules;
            if let Some(r) = rules
                .iter()
                .position(|r| self.network_rule_matches(r, flow, dst))
            {
                let rule_index = Some(r as u16);
                trace.step(Step {
                    tier,
                    policy: policy_ref,
                    rule_index,
                    outcome: Outcome::Matched(Action::Accept),
                });
                return Verdict {
                    decision: Decision::Allow,
                    decided_by: DecidedBy {
                        tier,
                        policy: policy_ref,
                        rule_index,
                        action: None,
                    },
                    reason: Reason::Rule,
                    by_domain_names: false,
                };
            }
            trace.step(Step {
                tier,
                policy: policy_ref,
                rule_index: None,
                outcome: Outcome::IsolatedNoMatch,
            });
        }
        Verdict {
            decision: Decision::Deny,
            decided_by: DecidedBy {
                tier,
                policy: Some(PolicyRef::Network(policies[0])),
                rule_index: None,
                action: None,
            },
            reason: Reason::NetworkPolicyIsolation,
            by_domain_names: false,
        }
    }

    fn network_rule_matches(
        &self,
        rule: &CompiledNetworkPolicyRule,
        flow: &Flow<'_>,
        dst: Destination<'_>,
    ) -> bool {
        let ports_match = rule.ports.is_empty()
            || rule.ports.iter().any(|p| {
                p.protocol == flow.protocol
                    && match &p.port {
                        NetworkPolicyPortSpec::Any => true,
                        NetworkPolicyPortSpec::Range(r) => r.contains(flow.port),
                        NetworkPolicyPortSpec::Named(name) => dst.pod.is_some_and(|d| {
                            d.named_port(name)
                                .any(|cp| cp.protocol == p.protocol && cp.port == flow.port)
                        }),
                    }
            });
        ports_match
            && (rule.peers.is_empty()
                || rule.peers.iter().any(|peer| match peer {
                    CompiledNetworkPolicyPeer::Pods { namespaces, pods } => {
                        dst.pod.is_some_and(|d| {
                            self.namespace_sets.contains(*namespaces, d.namespace)
                                && pods.as_ref().is_none_or(|s| s.matches(&d.info.labels))
                        })
                    }
                    CompiledNetworkPolicyPeer::IpBlock { cidr, except } => {
                        cidr.contains(&dst.ip) && !except.iter().any(|e| e.contains(&dst.ip))
                    }
                }))
    }
}
