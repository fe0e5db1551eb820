//! DeveloperNetworkPolicy `policy.chokepoint.dev/v1alpha1`: a namespaced egress allowlist
//! with the rule shape of a v1alpha2 ClusterNetworkPolicy.
//!
//! What differs from a ClusterNetworkPolicy, and why:
//! - the subject is `subject.podSelector`, pods of the policy's own namespace only (a
//!   namespace owner cannot make rules for other namespaces);
//! - actions are `Accept` and `Deny`; there is no `Pass` and no priority (every matching Deny
//!   wins over every matching Accept, whatever their order);
//! - no `nodes` peers (node addresses are the cluster admin's business);
//! - a `pods` peer without `namespaceSelector` means the policy's **own namespace**, as a
//!   NetworkPolicy's lone `podSelector` does (v1alpha2 reads it as every namespace). A namespace
//!   owner writing `pods: {podSelector: {matchLabels: {app: db}}}` means *our* database, and
//!   reading it as every namespace's `app=db` pods would quietly open other tenants' pods.
//!   `namespaceSelector: {}` still says "every namespace" explicitly. The omission is
//!   normalized here, so the engine only ever sees an explicit namespace selector;
//! - a `services` peer (Chokepoint's own): the ready endpoints of named Services, pods or not
//!   (`default/kubernetes` is the API server), so that a rule can follow a Service whose
//!   addresses the namespace owner does not know. An entry without `namespace` means the
//!   policy's own namespace, like a `pods` peer.

use crate::api::developer::{DeveloperNetworkPolicy, KIND};
use crate::inventory::NAMESPACE_NAME_LABEL;
use crate::model::{Action, DeveloperPolicy, Origin, Peer, Selector, ServicePeer};
use crate::source::child;

use super::Checker;
use super::cluster::{Dialect, OmittedNamespaces, object_name, v1alpha2_egress};
use super::selector;

/// The upstream v1alpha2 limits, Accept/Deny only, no nodes.
const DEVELOPER: Dialect = Dialect {
    kind_name: KIND,
    max_rules: 25,
    max_peers: 25,
    max_ports: 25,
    omitted_pod_namespaces: OmittedNamespaces::Everything, // replaced per object
    nodes_allowed: false,
    domain_names_allowed: true,
    services_namespace: None, // replaced per object
    domain_deny_hint: "deny its addresses with `networks` instead; a name that no Accept rule lists is left to NetworkPolicy and the Baseline",
    actions: &[("Accept", Action::Accept), ("Deny", Action::Deny)],
    actions_hint: "use Accept or Deny (a DeveloperNetworkPolicy has no Pass: its Deny rules win over its Accept rules, and what neither matches goes on to NetworkPolicy and Baseline)",
};

/// Validates and normalizes a DeveloperNetworkPolicy.
pub fn developer_network_policy(
    c: &mut Checker,
    obj: &DeveloperNetworkPolicy,
    origin: Origin,
) -> Option<DeveloperPolicy> {
    let name = object_name(c, obj.metadata.name.as_deref());
    // As kubectl applies it: a namespaced object without a namespace lands in `default`.
    let namespace = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let Some(spec) = &obj.spec else {
        c.error("", "`spec` is required");
        return None;
    };
    let pod_selector = subject(c, spec.subject.as_ref());
    let dialect = Dialect {
        omitted_pod_namespaces: OmittedNamespaces::Own(Selector::equals(
            NAMESPACE_NAME_LABEL,
            &namespace,
        )),
        services_namespace: Some(namespace.clone()),
        ..DEVELOPER
    };
    let egress = v1alpha2_egress(c, &dialect, spec.egress.as_deref().unwrap_or_default());
    if c.has_errors() {
        return None;
    }
    Some(DeveloperPolicy {
        namespace,
        name: name?,
        pod_selector: pod_selector?,
        egress: egress?,
        origin,
    })
}

fn subject(c: &mut Checker, s: Option<&crate::api::developer::Subject>) -> Option<Selector> {
    const P: &str = "/spec/subject";
    let Some(s) = s else {
        c.error(
            "/spec",
            "`subject` is required: `subject: {podSelector: {...}}` (`{}` selects every pod of the namespace)",
        );
        return None;
    };
    if c.unknown_under(P) {
        // As for cluster policies: who the policy selects cannot be known.
        if c.fails_closed() {
            c.error(
                P,
                "`subject` holds a field this build does not know; the policy cannot be applied",
            );
        }
        return None;
    }
    match &s.pod_selector {
        Some(sel) => selector(c, &format!("{P}/podSelector"), sel),
        None => {
            c.error(
                P,
                "`podSelector` is required (`{}` selects every pod of the namespace)",
            );
            None
        }
    }
}

/// A `services` peer: 1 to 25 Services, each with a valid name and namespace and, when given,
/// 1 to 25 port names.
pub(super) fn services_peer(
    c: &mut Checker,
    p: &str,
    list: &[crate::api::ServiceReference],
    own_namespace: &str,
) -> Option<Peer> {
    let mut ok = c.count(p, "services", list.len(), 1, 25);
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let sp = child(p, i);
        let name = match s.name.as_deref() {
            Some(n) if dns_label(n) => Some(n.to_owned()),
            Some(n) => {
                c.error(
                    child(&sp, "name"),
                    format!("`{n}` is not a Service name (lower-case letters, digits and `-`, at most 63, starting with a letter)"),
                );
                None
            }
            None => {
                c.error(&sp, "`name` is required: the Service's name");
                None
            }
        };
        let namespace = match s.namespace.as_deref() {
            None => Some(own_namespace.to_owned()),
            Some(n) if is_rfc1123_label(n) => Some(n.to_owned()),
            Some(n) => {
                c.error(
                    child(&sp, "namespace"),
                    format!("`{n}` is not a namespace name (lower-case letters, digits and `-`, at most 63)"),
                );
                None
            }
        };
        let ports = match &s.ports {
            None => Some(None),
            Some(names) => {
                let pp = child(&sp, "ports");
                let mut good = c.count(&pp, "ports", names.len(), 1, 25);
                for (j, n) in names.iter().enumerate() {
                    if !is_rfc1123_label(n) || n.len() > 15 {
                        c.error(
                            child(&pp, j),
                            format!("`{n}` is not a Service port name (lower-case letters, digits and `-`, at most 15); name the port as the Service's `spec.ports[].name` does"),
                        );
                        good = false;
                    }
                }
                good.then(|| Some(names.clone()))
            }
        };
        match (namespace, name, ports) {
            (Some(namespace), Some(name), Some(ports)) => out.push(ServicePeer {
                namespace,
                name,
                ports,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(Peer::Services(out))
}

/// An RFC 1123 label: what namespace and port names are.
pub(crate) fn is_rfc1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An RFC 1035 label: what Service names are (an RFC 1123 label starting with a letter).
fn dns_label(s: &str) -> bool {
    is_rfc1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}
