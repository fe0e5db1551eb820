//! The declared world of a Chokepoint gateway.
//!
//! This crate owns the policy API types as users write them ([`api`]: ClusterNetworkPolicy
//! v1alpha2, AdminNetworkPolicy/BaselineAdminNetworkPolicy v1alpha1, NetworkPolicy v1, and
//! Chokepoint's namespaced DeveloperNetworkPolicy), the
//! normalized model they compile into ([`model`]), the inventory of namespaces, pods and nodes
//! ([`inventory`]), and loading all of it from YAML/JSON files with validation that reports
//! every mistake with its file, line and column ([`load`], [`compile`], [`diagnostic`]).
//! Without features it has no async runtime and no I/O beyond reading files; the `kube`
//! feature adds the Kubernetes source ([`kube`]: watchers, the one-shot list, Events, the
//! DeveloperNetworkPolicy CRD).

pub mod api;
pub mod compile;
pub mod diagnostic;
pub mod inventory;
pub mod load;
pub mod mode;
pub mod model;
pub mod settings;
pub mod source;

pub use compile::UnknownFields;
pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use load::{Loaded, StagedPolicies, World, load_objects, load_paths, load_str};
pub use mode::{MODE_ANNOTATION, PolicyMode};
#[cfg(feature = "kube")]
pub mod kube;
