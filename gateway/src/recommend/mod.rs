//! Policies from observed traffic (`chokepoint recommend`): flow-log and audit records in,
//! per source namespace a DeveloperNetworkPolicy that accepts exactly what was observed out.
//!
//! - [`observed`]: reading the records into what each namespace reached ([`Observed`]):
//!   a Service, a pod by its namespace and workload labels, DNS names, or an address; with
//!   the ports and protocols seen.
//! - [`build`]: the policies, grouped into as few rules as the kind's limits allow.

pub mod build;
pub mod observed;

pub use build::{POLICY_NAME, policies};
pub use observed::{Observed, Peer, PortKey, Reading};
