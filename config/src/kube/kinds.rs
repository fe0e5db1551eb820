//! The kinds the gateway reads from the API server.
//!
//! One table, used by the watchers, by the one-shot list of the CLI, by the RBAC check of the
//! `deploy/` manifests and by the test API server, so that they cannot drift apart.

use kube::discovery::ApiResource;

use crate::api::developer;

/// A watched kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedKind {
    pub kind: &'static str,
    /// Empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Served by a CRD that may not be installed: its absence (404) is an empty kind, not an
    /// error.
    pub optional: bool,
}

impl WatchedKind {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection path across all namespaces (`/api/v1/pods`,
    /// `/apis/networking.k8s.io/v1/networkpolicies`).
    pub fn path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.plural)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.plural)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }

    /// A policy kind (validated and possibly skipped), not part of the inventory.
    pub fn is_policy(&self) -> bool {
        !matches!(
            self.kind,
            "Namespace" | "Node" | "Pod" | "Service" | "EndpointSlice"
        )
    }

    pub fn by_name(kind: &str) -> Option<&'static WatchedKind> {
        WATCHED.iter().find(|k| k.kind == kind)
    }
}

const fn kind(
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    namespaced: bool,
    optional: bool,
) -> WatchedKind {
    WatchedKind {
        kind,
        group,
        version,
        plural,
        namespaced,
        optional,
    }
}

/// Every kind read, in the order their watchers start.
pub const WATCHED: &[WatchedKind] = &[
    kind("Namespace", "", "v1", "namespaces", false, false),
    kind("Node", "", "v1", "nodes", false, false),
    kind("Pod", "", "v1", "pods", true, false),
    kind("Service", "", "v1", "services", true, false),
    kind(
        "EndpointSlice",
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        true,
        false,
    ),
    kind(
        "NetworkPolicy",
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        true,
        false,
    ),
    kind(
        "ClusterNetworkPolicy",
        crate::api::POLICY_GROUP,
        "v1alpha2",
        "clusternetworkpolicies",
        false,
        true,
    ),
    kind(
        "AdminNetworkPolicy",
        crate::api::POLICY_GROUP,
        "v1alpha1",
        "adminnetworkpolicies",
        false,
        true,
    ),
    kind(
        "BaselineAdminNetworkPolicy",
        crate::api::POLICY_GROUP,
        "v1alpha1",
        "baselineadminnetworkpolicies",
        false,
        true,
    ),
    kind(
        developer::KIND,
        developer::GROUP,
        "v1alpha1",
        "developernetworkpolicies",
        true,
        true,
    ),
];

/// Something the gateway writes: with [`WATCHED`], exactly what its RBAC grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub group: &'static str,
    /// `plural` or `plural/subresource`.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Only in the gateway's own namespace (a Role there, not the ClusterRole).
    pub own_namespace: bool,
}

pub const WRITTEN: &[Written] = &[
    // Events on policy objects, in their namespaces (`events.rs`; `patch` adds to a series).
    Written {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        own_namespace: false,
    },
    // DeveloperNetworkPolicy conditions, by the elected gateway (`conditions.rs`).
    Written {
        group: developer::GROUP,
        resource: "developernetworkpolicies/status",
        verbs: &["patch"],
        own_namespace: false,
    },
    // The Lease electing it (`lease.rs`).
    Written {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "update"],
        own_namespace: true,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{v1alpha1, v1alpha2};

    #[test]
    fn api_versions_match_what_the_loader_expects() {
        let av = |k: &str| WatchedKind::by_name(k).unwrap().api_version();
        assert_eq!(av("ClusterNetworkPolicy"), v1alpha2::API_VERSION);
        assert_eq!(av("AdminNetworkPolicy"), v1alpha1::API_VERSION);
        assert_eq!(av("BaselineAdminNetworkPolicy"), v1alpha1::API_VERSION);
        assert_eq!(av(developer::KIND), developer::API_VERSION);
        assert_eq!(av("Pod"), "v1");
        assert_eq!(av("EndpointSlice"), "discovery.k8s.io/v1");
        assert_eq!(WatchedKind::by_name("Pod").unwrap().path(), "/api/v1/pods");
        assert_eq!(
            WatchedKind::by_name("NetworkPolicy").unwrap().path(),
            "/apis/networking.k8s.io/v1/networkpolicies"
        );
    }
}
