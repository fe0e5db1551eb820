//! The verdict engine.
//!
//! [`Snapshot::compile`] turns a validated [`World`](chokepoint_config::World) into an
//! immutable, indexed snapshot; [`Snapshot::evaluate`] is a pure function from a [`Flow`] to a
//! [`Verdict`] that names who decided. [`Snapshot::explain`] does the same and records every
//! tier and policy it consulted, for `chokepoint explain` and the audit log.
//!
//! Semantics (README.md, "Policy semantics"): Admin cluster policies by priority ascending, ties broken by
//! name (then kind; a v1alpha1 BaselineAdminNetworkPolicy after every Baseline
//! ClusterNetworkPolicy); first matching rule wins; Accept and Deny are final; Pass skips the rest
//! of the tier. Then the NetworkPolicy tier: DeveloperNetworkPolicies first (a matching Deny
//! of any of them wins, then a matching Accept; no implicit isolation), then NetworkPolicy v1
//! (egress isolation by policyTypes, union of rules); then Baseline, then the configured
//! default.

mod evaluate;
mod flow;
mod hits;
mod services;
mod snapshot;
mod staged;
mod status;
mod trace;

pub use flow::{DecidedBy, Decision, Flow, PolicyRef, Reason, TierName, Verdict};
pub use hits::MatchedRules;
pub use services::{ServicePortView, ServiceRef};
pub use snapshot::{Counts, Options, PodRef, Snapshot};
pub use staged::{Difference, StagedVerdict};
pub use status::{Hit, Invalid, InvalidOutcome, Mode, PolicyStatus, Report, RuleStatus};
pub use trace::{Outcome, Step, Trace};
