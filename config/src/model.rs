//! The normalized policy model that every API version compiles into.
//!
//! ClusterNetworkPolicy v1alpha2, AdminNetworkPolicy/BaselineAdminNetworkPolicy v1alpha1,
//! DeveloperNetworkPolicy and NetworkPolicy v1 all end up here; the verdict engine knows only
//! these types.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;

/// Labels of a namespace, pod or node.
pub type Labels = BTreeMap<String, String>;

/// Where an object came from, for messages and `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: PathBuf,
    pub line: u64,
}

/// The tier of a cluster-scoped policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Admin,
    Baseline,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        })
    }
}

/// A rule action (v1alpha1 `Allow` is normalized to `Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        })
    }
}

/// The API kind a cluster policy was written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl PolicyKind {
    /// The short name kubectl uses (`cnp/name`).
    pub fn short_name(self) -> &'static str {
        match self {
            PolicyKind::ClusterNetworkPolicy => "cnp",
            PolicyKind::AdminNetworkPolicy => "anp",
            PolicyKind::BaselineAdminNetworkPolicy => "banp",
        }
    }

    /// The API kind, as written in `kind:`.
    pub fn kind(self) -> &'static str {
        match self {
            PolicyKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            PolicyKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            PolicyKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }
}

/// L4 protocol of a connection or a port match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_k8s(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// A Kubernetes label selector, compiled. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// One selector requirement; `matchLabels` entries become `In` with one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// A selector for `key=value`.
    pub fn equals(key: &str, value: &str) -> Self {
        Selector {
            requirements: vec![Requirement::In(key.into(), vec![value.into()])],
        }
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// `key=value` pairs that every matching object must carry (from `In` with one value);
    /// used to index policies by label.
    pub fn required_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.requirements.iter().filter_map(|r| match r {
            Requirement::In(k, values) if values.len() == 1 => {
                Some((k.as_str(), values[0].as_str()))
            }
            _ => None,
        })
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::In(k, v) if v.len() == 1 => write!(f, "{k}={}", v[0])?,
                Requirement::In(k, v) => write!(f, "{k} in ({})", v.join(","))?,
                Requirement::NotIn(k, v) => write!(f, "{k} notin ({})", v.join(","))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

/// A `domainNames` entry: an exact name or `*.` + suffix (one or more whole labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    pub wildcard: bool,
    /// Lower case, without the `*.` and without a trailing dot.
    pub name: String,
}

impl DomainPattern {
    /// Parses a pattern that has already passed validation.
    pub fn parse(pattern: &str) -> Self {
        let p = pattern
            .strip_suffix('.')
            .unwrap_or(pattern)
            .to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(rest) => DomainPattern {
                wildcard: true,
                name: rest.to_owned(),
            },
            None => DomainPattern {
                wildcard: false,
                name: p,
            },
        }
    }

    /// Matches a DNS name (any case, one optional trailing dot).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if !self.wildcard {
            return name.eq_ignore_ascii_case(&self.name);
        }
        // `*.` stands for at least one whole label: the name must end with ".suffix" and have
        // something before that dot.
        let n = name.len();
        let s = self.name.len();
        n > s + 1
            && name.as_bytes()[n - s - 1] == b'.'
            && name[n - s..].eq_ignore_ascii_case(&self.name)
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// A cluster-scoped policy (ClusterNetworkPolicy or v1alpha1 ANP/BANP), egress side.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPolicy {
    pub name: String,
    pub kind: PolicyKind,
    pub tier: Tier,
    pub priority: u32,
    pub subject: Subject,
    pub egress: Vec<Rule>,
    pub origin: Origin,
}

/// A DeveloperNetworkPolicy (`policy.chokepoint.dev/v1alpha1`): a namespace owner's egress
/// rules, decided in the NetworkPolicy tier before NetworkPolicy v1. Every matching `Deny`
/// rule wins over every matching `Accept` rule, whatever their order; when none matches the
/// policy does not decide (no implicit isolation).
///
/// Rules are the cluster-policy [`Rule`]s with two restrictions validation enforces: the
/// action is `Accept` or `Deny` (never `Pass`) and there are no `nodes` peers; and one
/// addition, the `services` peer ([`Peer::Services`]). A `pods` peer without
/// `namespaceSelector`, and a `services` entry without `namespace`, are normalized to the
/// policy's own namespace, so the engine never sees the omission.
#[derive(Debug, Clone, PartialEq)]
pub struct DeveloperPolicy {
    pub namespace: String,
    pub name: String,
    /// Selects pods of `namespace`; the empty selector selects all of them.
    pub pod_selector: Selector,
    pub egress: Vec<Rule>,
    pub origin: Origin,
}

/// Which pods a cluster policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Namespaces(Selector),
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
}

/// One egress rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: Option<String>,
    pub action: Action,
    pub peers: Vec<Peer>,
    /// `None`: every protocol and port.
    pub protocols: Option<Vec<PortMatch>>,
    /// The rule carried a field this build does not know: it fails closed (matches nothing
    /// when it accepts, everything when it denies or passes).
    pub unknown_fields: bool,
}

/// One `to` peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    Namespaces(Selector),
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
    Nodes(Selector),
    Networks(Vec<IpNet>),
    DomainNames(Vec<DomainPattern>),
    /// DeveloperNetworkPolicy only: the ready endpoints of these Services, as the inventory
    /// has them when the snapshot is compiled.
    Services(Vec<ServicePeer>),
    /// A peer with no field this build knows: fails closed.
    Unknown,
}

/// One Service of a `services` peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePeer {
    pub namespace: String,
    pub name: String,
    /// `None`: every port of the Service (its ready endpoints' addresses, any port);
    /// otherwise these Service ports' backends (address, target port and protocol).
    pub ports: Option<Vec<String>>,
}

/// One `protocols` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    Port {
        protocol: Protocol,
        ports: PortRange,
    },
    /// Resolved against the destination pod's container ports (name and protocol).
    Named(String),
    /// An entry with no field this build knows: fails closed.
    Unknown,
}

/// A NetworkPolicy v1, egress side.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicyRules {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Selector,
    /// `None` when the policy does not isolate egress (no `Egress` in its policyTypes).
    pub egress: Option<Vec<NetworkPolicyRule>>,
    pub origin: Origin,
}

/// One NetworkPolicy egress rule: allowed when a peer and a port match.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicyRule {
    /// Empty: every destination.
    pub peers: Vec<NetworkPolicyPeer>,
    /// Empty: every port and protocol.
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NetworkPolicyPeer {
    /// `namespaces: None` means the policy's own namespace; `pods: None` means every pod.
    Pods {
        namespaces: Option<Selector>,
        pods: Option<Selector>,
    },
    IpBlock {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicyPort {
    pub protocol: Protocol,
    pub port: NetworkPolicyPortSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkPolicyPortSpec {
    Any,
    Range(PortRange),
    Named(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(Selector::everything().matches(&l));
        assert!(Selector::equals("app", "web").matches(&l));
        assert!(!Selector::equals("app", "db").matches(&l));
        let s = |r| Selector {
            requirements: vec![r],
        };
        assert!(
            s(Requirement::In(
                "app".into(),
                vec!["db".into(), "web".into()]
            ))
            .matches(&l)
        );
        assert!(s(Requirement::NotIn("app".into(), vec!["db".into()])).matches(&l));
        assert!(s(Requirement::NotIn("missing".into(), vec!["x".into()])).matches(&l));
        assert!(!s(Requirement::NotIn("app".into(), vec!["web".into()])).matches(&l));
        assert!(s(Requirement::Exists("tier".into())).matches(&l));
        assert!(!s(Requirement::Exists("x".into())).matches(&l));
        assert!(s(Requirement::DoesNotExist("x".into())).matches(&l));
        assert!(!s(Requirement::DoesNotExist("app".into())).matches(&l));
    }

    #[test]
    fn domain_patterns_follow_npep_133() {
        let exact = DomainPattern::parse("Kubernetes.io.");
        assert!(exact.matches("kubernetes.io"));
        assert!(exact.matches("KUBERNETES.IO."));
        assert!(!exact.matches("www.kubernetes.io"));
        let wild = DomainPattern::parse("*.kubernetes.io");
        assert!(wild.matches("www.kubernetes.io"));
        assert!(wild.matches("latest.blog.Kubernetes.io."));
        assert!(!wild.matches("kubernetes.io"));
        assert!(!wild.matches("evilkubernetes.io"));
        assert!(!wild.matches(".kubernetes.io"));
        assert_eq!(wild.to_string(), "*.kubernetes.io");
    }
}
