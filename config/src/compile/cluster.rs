//! ClusterNetworkPolicy v1alpha2 and AdminNetworkPolicy/BaselineAdminNetworkPolicy v1alpha1,
//! and the egress rules and peers they share with DeveloperNetworkPolicy
//! (`developer.rs`, which compiles its rules with [`v1alpha2_egress`] and its own [`Dialect`]);
//! their ports are checked in `ports.rs`.

use crate::api::{EgressPeer, IngressPeer, Subject as ApiSubject, v1alpha1, v1alpha2};
use crate::model::{
    Action, ClusterPolicy, Origin, Peer, PolicyKind, PortMatch, Rule, Selector, Subject, Tier,
};
use crate::source::child;

use super::ports::{named_port_guard, protocols, v1alpha1_ports};
use super::{Checker, all_ok, domain_pattern, masked_cidr, selector};

/// The per-kind and per-version differences in shape and limits.
pub(super) struct Dialect {
    /// The kind, for messages.
    pub kind_name: &'static str,
    pub max_rules: usize,
    pub max_peers: usize,
    pub max_ports: usize,
    /// What a `pods` peer (or subject) without `namespaceSelector` selects.
    pub omitted_pod_namespaces: OmittedNamespaces,
    pub nodes_allowed: bool,
    pub domain_names_allowed: bool,
    /// `Some(own namespace)`: `services` peers are allowed (DeveloperNetworkPolicy) and an
    /// entry without `namespace` means this one.
    pub services_namespace: Option<String>,
    /// What to write instead of `domainNames` in a Deny rule.
    pub domain_deny_hint: &'static str,
    pub actions: &'static [(&'static str, Action)],
    pub actions_hint: &'static str,
}

/// What a `pods: {podSelector}` without `namespaceSelector` means.
pub(super) enum OmittedNamespaces {
    /// An error (v1alpha1 requires the field).
    Required,
    /// Every namespace (v1alpha2).
    Everything,
    /// The policy's own namespace (DeveloperNetworkPolicy), as this selector.
    Own(Selector),
}

const CLUSTER_DOMAIN_DENY_HINT: &str = "deny with `networks` or a lower-precedence Deny instead";

const V1ALPHA2: Dialect = Dialect {
    kind_name: "ClusterNetworkPolicy",
    max_rules: 25,
    max_peers: 25,
    max_ports: 25,
    omitted_pod_namespaces: OmittedNamespaces::Everything,
    nodes_allowed: true,
    domain_names_allowed: true,
    services_namespace: None,
    domain_deny_hint: CLUSTER_DOMAIN_DENY_HINT,
    actions: &[
        ("Accept", Action::Accept),
        ("Deny", Action::Deny),
        ("Pass", Action::Pass),
    ],
    actions_hint: "use Accept, Deny or Pass (v1alpha2 renamed v1alpha1's `Allow` to `Accept`)",
};

const ANP: Dialect = Dialect {
    kind_name: "AdminNetworkPolicy",
    max_rules: 100,
    max_peers: 100,
    max_ports: 100,
    omitted_pod_namespaces: OmittedNamespaces::Required,
    nodes_allowed: true,
    domain_names_allowed: true,
    services_namespace: None,
    domain_deny_hint: CLUSTER_DOMAIN_DENY_HINT,
    actions: &[
        ("Allow", Action::Accept),
        ("Deny", Action::Deny),
        ("Pass", Action::Pass),
    ],
    actions_hint: "use Allow, Deny or Pass (`Accept` is the v1alpha2 ClusterNetworkPolicy spelling)",
};

const BANP: Dialect = Dialect {
    kind_name: "BaselineAdminNetworkPolicy",
    max_rules: 100,
    max_peers: 100,
    max_ports: 100,
    omitted_pod_namespaces: OmittedNamespaces::Required,
    nodes_allowed: true,
    domain_names_allowed: false,
    services_namespace: None,
    domain_deny_hint: CLUSTER_DOMAIN_DENY_HINT,
    actions: &[("Allow", Action::Accept), ("Deny", Action::Deny)],
    actions_hint: "use Allow or Deny (a BaselineAdminNetworkPolicy has no Pass)",
};

/// The priority a v1alpha1 BaselineAdminNetworkPolicy (which has none) sorts at among
/// Baseline ClusterNetworkPolicies: the last, ties broken by name.
pub const BANP_PRIORITY: u32 = 1000;

/// Validates and normalizes a ClusterNetworkPolicy v1alpha2.
pub fn cluster_network_policy(
    c: &mut Checker,
    obj: &v1alpha2::ClusterNetworkPolicy,
    origin: Origin,
) -> Option<ClusterPolicy> {
    let name = object_name(c, obj.metadata.name.as_deref());
    let Some(spec) = &obj.spec else {
        c.error("", "`spec` is required");
        return None;
    };
    let tier = match spec.tier.as_deref() {
        Some("Admin") => Some(Tier::Admin),
        Some("Baseline") => Some(Tier::Baseline),
        Some(other) => {
            c.error(
                "/spec/tier",
                format!("unknown tier `{other}`; use Admin or Baseline (case matters)"),
            );
            None
        }
        None => {
            c.error("/spec", "`tier` is required (Admin or Baseline)");
            None
        }
    };
    let priority = priority(c, spec.priority);
    let subject = subject(c, &V1ALPHA2, spec.subject.as_ref());
    let egress = v1alpha2_egress(c, &V1ALPHA2, spec.egress.as_deref().unwrap_or_default());
    ingress(
        c,
        &V1ALPHA2,
        spec.ingress.as_deref().unwrap_or_default(),
        |c, p, r| {
            if let Some(list) = &r.protocols {
                protocols(c, &child(p, "protocols"), list);
            }
            (r.name.as_deref(), r.action.as_deref(), r.from.as_deref())
        },
    );
    checked(
        c,
        ClusterPolicy {
            name: name?,
            kind: PolicyKind::ClusterNetworkPolicy,
            tier: tier?,
            priority: priority?,
            subject: subject?,
            egress: egress?,
            origin,
        },
    )
}

/// Validates and normalizes an AdminNetworkPolicy or BaselineAdminNetworkPolicy v1alpha1.
pub fn admin_network_policy(
    c: &mut Checker,
    obj: &v1alpha1::AdminNetworkPolicy,
    baseline: bool,
    origin: Origin,
) -> Option<ClusterPolicy> {
    let (dialect, kind) = if baseline {
        (&BANP, PolicyKind::BaselineAdminNetworkPolicy)
    } else {
        (&ANP, PolicyKind::AdminNetworkPolicy)
    };
    let name = object_name(c, obj.metadata.name.as_deref());
    if baseline && name.as_deref().is_some_and(|n| n != "default") {
        c.error(
            "/metadata/name",
            "a BaselineAdminNetworkPolicy is a singleton and must be named `default`",
        );
    }
    let Some(spec) = &obj.spec else {
        c.error("", "`spec` is required");
        return None;
    };
    let (tier, priority) = if baseline {
        if spec.priority.is_some() {
            c.error(
                "/spec/priority",
                "a BaselineAdminNetworkPolicy has no `priority`",
            );
        }
        (Tier::Baseline, Some(BANP_PRIORITY))
    } else {
        (Tier::Admin, priority(c, spec.priority))
    };
    let subject = subject(c, dialect, spec.subject.as_ref());
    let egress = rules(
        c,
        dialect,
        spec.egress.as_deref().unwrap_or_default(),
        |c, p, r| {
            let ports = r
                .ports
                .as_ref()
                .map(|list| v1alpha1_ports(c, dialect, &child(p, "ports"), list));
            (
                r.name.as_deref(),
                r.action.as_deref(),
                r.to.as_deref(),
                ports,
            )
        },
    );
    ingress(
        c,
        dialect,
        spec.ingress.as_deref().unwrap_or_default(),
        |c, p, r| {
            if let Some(list) = &r.ports {
                v1alpha1_ports(c, dialect, &child(p, "ports"), list);
            }
            (r.name.as_deref(), r.action.as_deref(), r.from.as_deref())
        },
    );
    checked(
        c,
        ClusterPolicy {
            name: name?,
            kind,
            tier,
            priority: priority?,
            subject: subject?,
            egress: egress?,
            origin,
        },
    )
}

/// The policy, unless the object had errors (some of its parts can be valid when others
/// are not).
fn checked(c: &Checker, policy: ClusterPolicy) -> Option<ClusterPolicy> {
    (!c.has_errors()).then_some(policy)
}

pub(super) fn object_name(c: &mut Checker, name: Option<&str>) -> Option<String> {
    match name {
        Some(n) if !n.is_empty() => Some(n.to_owned()),
        _ => {
            c.error("/metadata", "`metadata.name` is required");
            None
        }
    }
}

fn priority(c: &mut Checker, p: Option<i64>) -> Option<u32> {
    match p {
        Some(p @ 0..=1000) => Some(p as u32),
        Some(p) => {
            c.error(
                "/spec/priority",
                format!("priority {p} is out of range; use 0 to 1000 (lower runs first)"),
            );
            None
        }
        None => {
            c.error(
                "/spec",
                "`priority` is required (0 to 1000, lower runs first)",
            );
            None
        }
    }
}

fn subject(c: &mut Checker, d: &Dialect, s: Option<&ApiSubject>) -> Option<Subject> {
    const P: &str = "/spec/subject";
    let Some(s) = s else {
        c.error("/spec", "`subject` is required (`namespaces` or `pods`)");
        return None;
    };
    if c.unknown_under(P) {
        // Who the policy selects cannot be known: nothing safe to enforce. (When unknown
        // fields are rejected, the unknown field itself is already the error.)
        if c.fails_closed() {
            c.error(
                P,
                "`subject` holds a field this build does not know; the policy cannot be applied",
            );
        }
        return None;
    }
    let which = c.exactly_one(
        P,
        "`subject`",
        &[
            ("namespaces", s.namespaces.is_some()),
            ("pods", s.pods.is_some()),
        ],
    )?;
    if which == 0 {
        return selector(c, &child(P, "namespaces"), s.namespaces.as_ref()?)
            .map(Subject::Namespaces);
    }
    let (namespaces, pods) = namespaced_pods(c, d, &child(P, "pods"), s.pods.as_ref()?)?;
    Some(Subject::Pods { namespaces, pods })
}

fn namespaced_pods(
    c: &mut Checker,
    d: &Dialect,
    p: &str,
    pods: &crate::api::NamespacedPod,
) -> Option<(Selector, Selector)> {
    let namespaces = match (&pods.namespace_selector, &d.omitted_pod_namespaces) {
        (Some(s), _) => selector(c, &child(p, "namespaceSelector"), s),
        (None, OmittedNamespaces::Required) => {
            c.error(
                p,
                "`namespaceSelector` is required in v1alpha1 (`{}` selects every namespace)",
            );
            None
        }
        (None, OmittedNamespaces::Everything) => Some(Selector::everything()),
        (None, OmittedNamespaces::Own(own)) => Some(own.clone()),
    };
    let pod_selector = match &pods.pod_selector {
        Some(s) => selector(c, &child(p, "podSelector"), s),
        None => {
            c.error(p, "`podSelector` is required (`{}` selects every pod)");
            None
        }
    };
    Some((namespaces?, pod_selector?))
}

fn action(c: &mut Checker, d: &Dialect, p: &str, a: Option<&str>) -> Option<Action> {
    match a {
        Some(a) => match d.actions.iter().find(|(n, _)| *n == a) {
            Some((_, action)) => Some(*action),
            None => {
                c.error(
                    child(p, "action"),
                    format!("unknown action `{a}`; {}", d.actions_hint),
                );
                None
            }
        },
        None => {
            c.error(p, format!("`action` is required; {}", d.actions_hint));
            None
        }
    }
}

/// v1alpha2-shaped egress rules (`name`, `action`, `to`, `protocols`): ClusterNetworkPolicy
/// and DeveloperNetworkPolicy.
pub(super) fn v1alpha2_egress(
    c: &mut Checker,
    d: &Dialect,
    list: &[v1alpha2::EgressRule],
) -> Option<Vec<Rule>> {
    rules(c, d, list, |c, p, r| {
        let protocols = r
            .protocols
            .as_ref()
            .map(|list| protocols(c, &child(p, "protocols"), list));
        (
            r.name.as_deref(),
            r.action.as_deref(),
            r.to.as_deref(),
            protocols,
        )
    })
}

/// The parts of an egress rule that differ between versions, pre-extracted by the caller.
type RuleParts<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a [EgressPeer]>,
    Option<Option<Vec<PortMatch>>>,
);

fn rules<'a, R>(
    c: &mut Checker,
    d: &Dialect,
    list: &'a [R],
    parts: impl Fn(&mut Checker, &str, &'a R) -> RuleParts<'a>,
) -> Option<Vec<Rule>> {
    c.count("/spec/egress", "egress", list.len(), 0, d.max_rules);
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let p = child("/spec/egress", i);
        let (name, action_name, to, protocols) = parts(c, &p, r);
        rule_name(c, &p, name);
        let action = action(c, d, &p, action_name);
        let peers = peers(c, d, &p, to, action);
        let protocols = match protocols {
            None => Some(None),
            Some(list) => list.map(Some),
        };
        if let (Some(peers), Some(protocols)) = (&peers, &protocols) {
            named_port_guard(c, &p, peers, protocols.as_deref());
        }
        if let (Some(action), Some(peers), Some(protocols)) = (action, peers, protocols) {
            out.push(Rule {
                name: name.map(str::to_owned),
                action,
                peers,
                protocols,
                unknown_fields: rule_has_unknown_fields(c, &p),
            });
        }
    }
    (!c.has_errors()).then_some(out)
}

/// Ingress rules are validated (they are part of the API) but not enforced by an egress gateway.
fn ingress<'a, R>(
    c: &mut Checker,
    d: &Dialect,
    list: &'a [R],
    parts: impl Fn(
        &mut Checker,
        &str,
        &'a R,
    ) -> (Option<&'a str>, Option<&'a str>, Option<&'a [IngressPeer]>),
) {
    c.count("/spec/ingress", "ingress", list.len(), 0, d.max_rules);
    for (i, r) in list.iter().enumerate() {
        let p = child("/spec/ingress", i);
        let (name, action_name, from) = parts(c, &p, r);
        rule_name(c, &p, name);
        action(c, d, &p, action_name);
        let Some(from) = from else {
            c.error(&p, "`from` is required (at least one peer)");
            continue;
        };
        let fp = child(&p, "from");
        c.count(&fp, "from", from.len(), 1, d.max_peers);
        for (j, peer) in from.iter().enumerate() {
            let pp = child(&fp, j);
            let fields = [
                ("namespaces", peer.namespaces.is_some()),
                ("pods", peer.pods.is_some()),
            ];
            match c.exactly_one(&pp, "this peer", &fields) {
                Some(0) => {
                    selector(
                        c,
                        &child(&pp, "namespaces"),
                        peer.namespaces.as_ref().expect("checked"),
                    );
                }
                Some(_) => {
                    namespaced_pods(
                        c,
                        d,
                        &child(&pp, "pods"),
                        peer.pods.as_ref().expect("checked"),
                    );
                }
                None => {}
            }
        }
    }
}

fn rule_name(c: &mut Checker, p: &str, name: Option<&str>) {
    if let Some(n) = name
        && n.chars().count() > 100
    {
        c.error(child(p, "name"), "a rule name has at most 100 characters");
    }
}

/// A field this build does not know, directly on the rule (not inside one of its peers or
/// protocol entries, which fail closed on their own).
fn rule_has_unknown_fields(c: &Checker, p: &str) -> bool {
    c.fails_closed() && c.unknown_at(p)
}

fn peers(
    c: &mut Checker,
    d: &Dialect,
    p: &str,
    to: Option<&[EgressPeer]>,
    action: Option<Action>,
) -> Option<Vec<Peer>> {
    let Some(to) = to else {
        c.error(p, "`to` is required (at least one peer)");
        return None;
    };
    let tp = child(p, "to");
    c.count(&tp, "to", to.len(), 1, d.max_peers);
    let mut out = Vec::with_capacity(to.len());
    let mut ok = true;
    for (j, peer) in to.iter().enumerate() {
        match self::peer(c, d, &child(&tp, j), peer, action) {
            Some(peer) => out.push(peer),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn peer(
    c: &mut Checker,
    d: &Dialect,
    p: &str,
    peer: &EgressPeer,
    action: Option<Action>,
) -> Option<Peer> {
    if c.fails_closed() && c.unknown_under(p) {
        return Some(Peer::Unknown);
    }
    if d.services_namespace.is_none() && peer.services.is_some() {
        // Not part of the upstream API: read as the unknown field it is there.
        let message = format!(
            "unknown field `services`: only a DeveloperNetworkPolicy has `services` peers; in a {} name the Service's pods with `pods`",
            d.kind_name
        );
        if c.fails_closed() {
            c.warning(
                child(p, "services"),
                format!("{message} (the peer fails closed)"),
            );
            return Some(Peer::Unknown);
        }
        c.error(child(p, "services"), message);
        return None;
    }
    let mut fields = vec![
        ("namespaces", peer.namespaces.is_some()),
        ("pods", peer.pods.is_some()),
        ("nodes", peer.nodes.is_some()),
        ("networks", peer.networks.is_some()),
        ("domainNames", peer.domain_names.is_some()),
    ];
    if d.services_namespace.is_some() {
        fields.push(("services", peer.services.is_some()));
    }
    match c.exactly_one(p, "this peer", &fields)? {
        0 => selector(c, &child(p, "namespaces"), peer.namespaces.as_ref()?).map(Peer::Namespaces),
        1 => namespaced_pods(c, d, &child(p, "pods"), peer.pods.as_ref()?)
            .map(|(namespaces, pods)| Peer::Pods { namespaces, pods }),
        2 if !d.nodes_allowed => {
            c.error(
                child(p, "nodes"),
                format!(
                    "`nodes` is not a {} peer: node addresses are cluster infrastructure, opened or closed by cluster admins in a ClusterNetworkPolicy; for a known address use `networks`",
                    d.kind_name
                ),
            );
            None
        }
        2 => selector(c, &child(p, "nodes"), peer.nodes.as_ref()?).map(Peer::Nodes),
        3 => {
            let list = peer.networks.as_ref()?;
            let np = child(p, "networks");
            let counted = c.count(&np, "networks", list.len(), 1, 25);
            let nets: Vec<_> = list
                .iter()
                .enumerate()
                .map(|(k, s)| masked_cidr(c, &child(&np, k), s))
                .collect();
            all_ok(counted, nets).map(Peer::Networks)
        }
        5 => super::developer::services_peer(
            c,
            &child(p, "services"),
            peer.services.as_ref()?,
            d.services_namespace.as_deref()?,
        ),
        _ => {
            let list = peer.domain_names.as_ref()?;
            let dp = child(p, "domainNames");
            if !d.domain_names_allowed {
                c.error(&dp, "`domainNames` is not part of BaselineAdminNetworkPolicy v1alpha1; use a v1alpha2 ClusterNetworkPolicy");
                return None;
            }
            if let Some(a) = action
                && a != Action::Accept
            {
                c.error(
                    &dp,
                    format!(
                        "`domainNames` may only be used in Accept rules, not {a} (NPEP-133: the IPs behind a name are never all known); {}",
                        d.domain_deny_hint
                    ),
                );
            }
            let counted = c.count(&dp, "domainNames", list.len(), 1, 25);
            let pats: Vec<_> = list
                .iter()
                .enumerate()
                .map(|(k, s)| domain_pattern(c, &child(&dp, k), s))
                .collect();
            all_ok(counted, pats).map(Peer::DomainNames)
        }
    }
}
