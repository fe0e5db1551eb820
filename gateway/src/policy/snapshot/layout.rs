//! The compiled form evaluation reads: pods, subject classes, the rule arena, NetworkPolicies
//! and namespace sets. Indexes into the snapshot's arrays are `u32`, ranges are [`Span`]s, so
//! the hot structures stay small and `Copy`.

use std::ops::Range;
use std::sync::Arc;

use chokepoint_config::inventory::{ContainerPort, PodInfo};
use chokepoint_config::model::{
    Action, ClusterPolicy, DeveloperPolicy, DomainPattern, NetworkPolicyPort, NetworkPolicyRules,
    PortRange, Protocol, Selector,
};
use ipnet::IpNet;

use crate::policy::services::ServiceSet;

#[derive(Debug)]
pub(in crate::policy) struct PodEntry {
    pub info: PodInfo,
    pub namespace: u32,
}

/// The policies that select one (namespace, labels) class of pods, in evaluation order.
#[derive(Debug, Default)]
pub(in crate::policy) struct SubjectClass {
    pub admin: Arc<[u32]>,
    pub baseline: Arc<[u32]>,
    /// DeveloperNetworkPolicies that select the class, by name.
    pub developer: Arc<[u32]>,
    /// NetworkPolicies that isolate the class's egress.
    pub network: Arc<[u32]>,
}

/// A cluster policy; its rules are `Snapshot::rules.of(index)`.
#[derive(Debug)]
pub(in crate::policy) struct CompiledClusterPolicy {
    pub source: ClusterPolicy,
}

/// A DeveloperNetworkPolicy; its rules are `Snapshot::rules.of(rules)`.
#[derive(Debug)]
pub(in crate::policy) struct CompiledDeveloperPolicy {
    pub source: DeveloperPolicy,
    pub namespace: u32,
    /// The policy's index in the [`RuleArena`].
    pub rules: u32,
}

/// The rules of every cluster policy and DeveloperNetworkPolicy, compact and contiguous.
/// Cluster policies come first (arena index = index in `Snapshot::cluster`), then the
/// DeveloperNetworkPolicies (`CompiledDeveloperPolicy::rules`).
#[derive(Debug, Default)]
pub(in crate::policy) struct RuleArena {
    /// The rules of arena policy `i` are `rules[bounds[i]..bounds[i + 1]]`.
    pub(super) bounds: Vec<u32>,
    pub rules: Vec<CompiledRule>,
    pub peers: Vec<CompiledPeer>,
    pub ports: Vec<CompiledPort>,
    pub networks: Vec<IpNet>,
    /// Interned pod and node selectors of peers.
    pub selectors: Vec<Selector>,
    /// Named ports of `protocols` entries.
    pub port_names: Vec<String>,
    pub domain_names: Vec<Vec<DomainPattern>>,
    /// The backends of `services` peers, resolved against the inventory's Services.
    pub service_sets: Vec<ServiceSet>,
}

impl RuleArena {
    /// The rules of arena policy `policy`, in order.
    #[inline]
    pub fn of(&self, policy: u32) -> &[CompiledRule] {
        let i = policy as usize;
        &self.rules[self.bounds[i] as usize..self.bounds[i + 1] as usize]
    }
}

/// A range of one of the [`RuleArena`]'s arrays.
#[derive(Debug, Clone, Copy)]
pub(in crate::policy) struct Span {
    pub(super) start: u32,
    pub(super) end: u32,
}

impl Span {
    #[inline]
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, Copy)]
pub(in crate::policy) struct CompiledRule {
    pub action: Action,
    /// The rule carried an unknown field: matches nothing (Accept) or everything (Deny/Pass).
    pub fail_closed: bool,
    /// `false`: the rule has no `protocols` (every protocol and port); `true`: `ports` lists
    /// the entries (an empty list matches nothing).
    pub has_ports: bool,
    /// Range of [`RuleArena::ports`].
    pub ports: Span,
    /// Range of [`RuleArena::peers`].
    pub peers: Span,
}

#[derive(Debug, Clone, Copy)]
pub(in crate::policy) enum CompiledPeer {
    Namespaces(u32),
    /// `pods`: index of [`RuleArena::selectors`].
    Pods {
        namespaces: u32,
        pods: u32,
    },
    /// Index of [`RuleArena::selectors`].
    Nodes(u32),
    /// Range of [`RuleArena::networks`].
    Networks(Span),
    /// Index of [`RuleArena::domain_names`].
    DomainNames(u32),
    /// Index of [`RuleArena::service_sets`].
    Services(u32),
    Unknown,
}

/// A [`PortMatch`](chokepoint_config::model::PortMatch), with the name of a named port interned.
#[derive(Debug, Clone, Copy)]
pub(in crate::policy) enum CompiledPort {
    Port {
        protocol: Protocol,
        ports: PortRange,
    },
    /// Index of [`RuleArena::port_names`].
    Named(u32),
    Unknown,
}

#[derive(Debug)]
pub(in crate::policy) struct CompiledNetworkPolicy {
    pub source: NetworkPolicyRules,
    pub namespace: u32,
    pub rules: Vec<CompiledNetworkPolicyRule>,
}

#[derive(Debug)]
pub(in crate::policy) struct CompiledNetworkPolicyRule {
    pub peers: Vec<CompiledNetworkPolicyPeer>,
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug)]
pub(in crate::policy) enum CompiledNetworkPolicyPeer {
    /// `namespaces`: an interned namespace set; `pods: None` = every pod.
    Pods {
        namespaces: u32,
        pods: Option<Selector>,
    },
    IpBlock {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
}

/// Namespace selectors, each evaluated once against every namespace: one bitset per set,
/// all in one array.
#[derive(Debug, Default)]
pub(in crate::policy) struct NamespaceSets {
    /// Words per set (the namespaces are all known before the first set is made).
    pub(super) words: usize,
    pub(super) count: usize,
    pub(super) bits: Vec<u64>,
}

impl NamespaceSets {
    #[inline]
    pub fn contains(&self, set: u32, namespace: u32) -> bool {
        let i = namespace as usize;
        i / 64 < self.words
            && self
                .bits
                .get(set as usize * self.words + i / 64)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The subject class of a pod that is no subject (it runs on another node): its IP is a
/// destination, never a source this gateway decides for.
pub(in crate::policy) const NOT_SUBJECT: u32 = u32::MAX;

impl PodEntry {
    pub fn named_port(&self, name: &str) -> impl Iterator<Item = &ContainerPort> {
        self.info
            .ports
            .iter()
            .filter(move |p| p.name.as_deref() == Some(name))
    }
}
