//! `DeveloperNetworkPolicy`, `policy.chokepoint.dev/v1alpha1`: Chokepoint's namespaced egress
//! allowlist for namespace owners (after the NPEP-136 seed).
//!
//! A DeveloperNetworkPolicy selects pods of its own namespace (`subject.podSelector`) and lists
//! egress rules with the same shape as a v1alpha2 ClusterNetworkPolicy's (`name`, `action`,
//! `to`, `protocols`); only `Accept` and `Deny`, and no `nodes` peers. See
//! `docs/developer-network-policy.md`.

use serde::{Deserialize, Serialize};

use super::{LabelSelector, v1alpha2};

/// The API group of Chokepoint's own policy kinds.
pub const GROUP: &str = "policy.chokepoint.dev";
pub const API_VERSION: &str = "policy.chokepoint.dev/v1alpha1";
pub const KIND: &str = "DeveloperNetworkPolicy";

pub type DeveloperNetworkPolicy = super::Object<Spec>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// The same rule shape as a v1alpha2 ClusterNetworkPolicy's egress rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<v1alpha2::EgressRule>>,
}

/// The pods of the policy's own namespace it applies to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "kube",
        schemars(schema_with = "crate::kube::crd::label_selector")
    )]
    pub pod_selector: Option<LabelSelector>,
}
