//! What is decided (a [`Flow`]) and the decision (a [`Verdict`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use chokepoint_config::model::{Action, Protocol};

/// One connection (or UDP flow) to decide.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// The DNS names `dst` is known as for this source (from the DNS proxy); matched by
    /// `domainNames` peers.
    pub names: &'a [&'a str],
    /// The address the pod connected to, when it is not the destination: the
    /// `ClusterIP:port` of a Service before the node translated it to this backend. Not used
    /// to decide (policy is defined on the backend); it names the Service in records.
    pub addressed: Option<SocketAddr>,
}

impl<'a> Flow<'a> {
    /// A flow from `src` to the socket address `dst`.
    pub fn to(src: IpAddr, dst: SocketAddr, protocol: Protocol, names: &'a [&'a str]) -> Self {
        Flow {
            src,
            dst: dst.ip(),
            protocol,
            port: dst.port(),
            names,
            addressed: None,
        }
    }

    /// The same flow, addressed to `addressed` (a Service's `ClusterIP:port`) by the pod.
    pub fn addressed(self, addressed: Option<SocketAddr>) -> Self {
        Flow { addressed, ..self }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    Deny,
}

impl From<chokepoint_config::settings::DefaultAction> for Decision {
    /// The verdict the settings name for what no policy decides.
    fn from(a: chokepoint_config::settings::DefaultAction) -> Self {
        match a {
            chokepoint_config::settings::DefaultAction::Allow => Decision::Allow,
            chokepoint_config::settings::DefaultAction::Deny => Decision::Deny,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        })
    }
}

/// The tier a decision was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierName {
    Admin,
    NetworkPolicy,
    Baseline,
    Default,
}

impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TierName::Admin => "Admin",
            TierName::NetworkPolicy => "NetworkPolicy",
            TierName::Baseline => "Baseline",
            TierName::Default => "Default",
        })
    }
}

/// A policy in a snapshot; resolve names with [`crate::policy::Snapshot::policy_name`] and
/// friends (no strings are copied on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyRef {
    /// Index into the snapshot's cluster policies (Admin and Baseline).
    Cluster(u32),
    /// Index into the snapshot's DeveloperNetworkPolicies (NetworkPolicy tier).
    Developer(u32),
    /// Index into the snapshot's NetworkPolicies.
    Network(u32),
}

/// Why the verdict is what it is, beyond the rule that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A rule matched (a cluster-policy or DeveloperNetworkPolicy rule, or a NetworkPolicy
    /// rule allowed it).
    Rule,
    /// The source is egress-isolated by NetworkPolicies and none of their rules matched.
    NetworkPolicyIsolation,
    /// No tier decided; the default applies.
    Default,
    /// A pod connecting to its own IP is not subject to policy.
    Hairpin,
    /// The source is a host-network pod or a node: never a policy subject.
    HostNetworkSource,
    /// The source IP is no known pod.
    UnknownSource,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::NetworkPolicyIsolation => "network_policy_isolation",
            Reason::Default => "default",
            Reason::Hairpin => "hairpin",
            Reason::HostNetworkSource => "host_network_source",
            Reason::UnknownSource => "unknown_source",
        }
    }
}

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecidedBy {
    pub tier: TierName,
    pub policy: Option<PolicyRef>,
    /// Index of the rule in the policy's egress list.
    pub rule_index: Option<u16>,
    /// The action of the deciding cluster-policy or DeveloperNetworkPolicy rule (`None` for
    /// NetworkPolicy and Default).
    pub action: Option<Action>,
}

/// The verdict for one flow. A value, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    pub decision: Decision,
    pub decided_by: DecidedBy,
    pub reason: Reason,
    /// The deciding Accept rule matched only through a `domainNames` peer (one of the names
    /// the source resolved to the destination). The connection must then show a name of its
    /// own that fits the policy (TLS SNI, HTTP Host): see `proxy::names::check`.
    pub by_domain_names: bool,
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}
