//! The policy objects as users write them (serde shapes of the upstream CRDs, and of
//! Chokepoint's own [`developer::DeveloperNetworkPolicy`]).
//!
//! Every field is optional here on purpose: requiredness, enums and limits are checked by
//! [`crate::compile`], which can then report every mistake with its position instead of
//! stopping at the first one serde meets.

pub mod developer;
pub mod v1alpha1;
pub mod v1alpha2;

pub use k8s_openapi::api::networking::v1::NetworkPolicy;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use serde::{Deserialize, Serialize};

/// The API group of the network-policy-api objects.
pub const POLICY_GROUP: &str = "policy.networking.k8s.io";

/// A policy subject: exactly one of `namespaces` or `pods` (same shape in v1alpha1 and v1alpha2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "kube",
        schemars(schema_with = "crate::kube::crd::label_selector")
    )]
    pub namespaces: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// `pods: {namespaceSelector, podSelector}` (namespaceSelector is optional from v1alpha2 on).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "kube",
        schemars(schema_with = "crate::kube::crd::label_selector")
    )]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "kube",
        schemars(schema_with = "crate::kube::crd::label_selector")
    )]
    pub pod_selector: Option<LabelSelector>,
}

/// An egress peer: exactly one field set (same names in v1alpha1 and v1alpha2).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "kube",
        schemars(schema_with = "crate::kube::crd::label_selector")
    )]
    pub namespaces: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "kube",
        schemars(schema_with = "crate::kube::crd::label_selector")
    )]
    pub nodes: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
    /// DeveloperNetworkPolicy only: the ready endpoints of these Services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceReference>>,
}

/// A `services` peer entry (DeveloperNetworkPolicy): a Service by namespace and name, and
/// optionally the names of the Service ports it is limited to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServiceReference {
    /// The policy's own namespace when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Service port names; every port of the Service when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
}

/// An ingress peer: exactly one of `namespaces` or `pods`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct IngressPeer {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "kube",
        schemars(schema_with = "crate::kube::crd::label_selector")
    )]
    pub namespaces: Option<LabelSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// A policy object as written: the Kubernetes envelope around a kind's `spec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<S>,
    /// Written by implementations and controllers; read and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}
