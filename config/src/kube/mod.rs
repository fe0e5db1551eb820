//! The Kubernetes source: policies and the inventory read from the API server.
//!
//! It lives in `config`, behind the `kube` cargo feature, because this crate owns loading the
//! declared world from YAML files and from the Kubernetes API (ARCHITECTURE.md): API objects are JSON and go through
//! the very code files go through ([`crate::load::load_objects`]), so validation, hints and the
//! fail-closed treatment of unknown fields are one implementation. The feature keeps the
//! crates that only need settings (`dns`, `redirect`) from building a Kubernetes client.
//! Compiling the snapshot stays in the gateway; this module hands it a [`World`](crate::World).
//!
//! * [`kinds`]: the watched kinds (also what RBAC must grant, and what the test API server serves).
//! * [`objects`]: the stores of watched objects, keyed by UID, and the world assembled from them
//!   (pod IP reuse is resolved here).
//! * [`watch`]: one kube-runtime watcher per kind feeding the stores, readiness after the
//!   initial sync of every kind, debounced updates.
//! * [`list`]: the same kinds listed once (for `chokepoint explain`/`check` against a cluster).
//! * [`events`]: Events on policy objects (what each gateway made of each change), rate
//!   limited ([`ratelimit`]).
//! * [`lease`]: the Lease electing the one gateway that writes [`conditions`]: the
//!   `Accepted` and `Enforced` conditions of DeveloperNetworkPolicies.
//! * [`crd`]: the DeveloperNetworkPolicy CRD, generated from the Rust types.
//!
//! What is written back (Events, conditions, the Lease) is decided by the gateway after each
//! snapshot it installs (`gateway/src/source/report.rs`); this module has the API calls and
//! the rules that need no snapshot.

pub mod client;
pub mod conditions;
pub mod crd;
pub mod events;
pub mod kinds;
pub mod lease;
pub mod list;
pub mod objects;
pub mod ratelimit;
pub mod watch;

pub use client::{ClientSource, connect};
pub use kinds::{WATCHED, WRITTEN, WatchedKind, Written};
pub use list::list_once;
pub use objects::ClusterObjects;
pub use watch::{KubeSource, Update, WatchOptions};

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] ::kube::config::KubeconfigError),
    #[error("no Kubernetes configuration found (in-cluster or $KUBECONFIG/~/.kube/config): {0}")]
    Infer(#[from] ::kube::config::InferConfigError),
    #[error("in-cluster configuration: {0}")]
    InCluster(#[from] ::kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] ::kube::Error),
    #[error("listing {kind}: {source}")]
    List {
        kind: &'static str,
        source: ::kube::Error,
    },
}

/// The file name diagnostics about cluster objects carry (they come from no file).
pub const SOURCE_NAME: &str = "cluster";
