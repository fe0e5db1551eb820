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
//!   normalized here, so the engine only ever sees an explicit namespace selector.

use crate::api::developer::{DeveloperNetworkPolicy, KIND};
use crate::inventory::NAMESPACE_NAME_LABEL;
use crate::model::{Action, DeveloperPolicy, Origin, Selector};

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
