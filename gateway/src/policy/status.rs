//! What `/policies` reports of a snapshot: every policy (enforced and staged), the local pods
//! its subject selects, and per rule the flows it decided and when it last did.
//!
//! Built on request from the snapshot and its [hit counters](super::hits); the same types
//! are read back by `chokepoint status`.

use std::collections::BTreeSet;

use chokepoint_config::model::{Action, Tier};
use serde::{Deserialize, Serialize};

use super::flow::PolicyRef;
use super::hits::{PolicyHits, RuleHits};
use super::snapshot::{NOT_SUBJECT, Snapshot};
use crate::audit::Timestamp;

/// The body of `/policies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The generation of the snapshot in force (0: none installed yet).
    pub generation: u64,
    /// When the snapshot in force was installed.
    pub loaded_at: Option<Timestamp>,
    /// When this report was made (what `last_hit` times compare with).
    pub now: Timestamp,
    pub policies: Vec<PolicyStatus>,
    /// Policies that are not in force because they are invalid: the errors of the last
    /// refused reload (files) or of the objects the API source skipped.
    pub invalid: Vec<Invalid>,
}

/// One loaded policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// `cnp/name`, `anp/name`, `banp/name`, `dnp/namespace/name` or `np/namespace/name`.
    pub policy: String,
    /// The API kind (`ClusterNetworkPolicy`, …).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// `Admin`, `Baseline` or `NetworkPolicy`.
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    pub mode: Mode,
    /// The generation that loaded this version of the policy (earlier than the snapshot's
    /// when it did not change since), and when.
    pub generation: u64,
    pub loaded_at: Option<Timestamp>,
    /// The pods on this node it applies to, `namespace/name`.
    pub selects: Vec<String>,
    pub rules: Vec<RuleStatus>,
    /// NetworkPolicies that isolate egress: flows denied because no rule of any isolating
    /// policy allowed them, counted on the first isolating policy (the one the verdict names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_denied: Option<Hit>,
}

/// Enforced, or staged (decided a second time, only counted and audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforced,
    Staged,
}

/// One egress rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// The rule's index in the policy's `egress` list.
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Accept`, `Deny`, `Pass`; `Allow` for NetworkPolicy rules.
    pub action: String,
    /// Flows this rule decided (or passed on), by what it did with them.
    pub allowed: u64,
    pub denied: u64,
    pub passed: u64,
    pub last_hit: Option<Timestamp>,
}

/// A count and when it last grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub flows: u64,
    pub last_hit: Option<Timestamp>,
}

/// An error that keeps a policy (or a whole update) out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalid {
    /// `Kind/name` or `Kind/namespace/name`, when the error is about one object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The located error (`file:line:column: Kind/name: message`).
    pub error: String,
    pub outcome: InvalidOutcome,
    /// When it was found.
    pub since: Timestamp,
}

/// What became of an invalid policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidOutcome {
    /// The reload it came with was refused: the previous snapshot stays in force.
    ReloadRefused,
    /// The object was left out; the rest of the policies apply.
    Skipped,
}

fn timestamp(unix_millis: u64) -> Timestamp {
    Timestamp::from_unix_millis(i64::try_from(unix_millis).unwrap_or(i64::MAX))
}

fn hit(h: &RuleHits) -> Hit {
    let (flows, last) = h.read();
    Hit {
        flows,
        last_hit: last.map(timestamp),
    }
}

/// The pods on this node each policy selects, by arena position.
#[derive(Default)]
struct Selected {
    cluster: Vec<BTreeSet<u32>>,
    developer: Vec<BTreeSet<u32>>,
    network: Vec<BTreeSet<u32>>,
}

impl Snapshot {
    /// The status of every policy, enforced then staged; `invalid` is left empty for the
    /// caller (the state knows what was refused).
    pub fn status(&self, now: Timestamp) -> Report {
        let mut policies = self.policy_statuses(Mode::Enforced, |_| true);
        if let Some(staged) = self.staged() {
            policies.extend(staged.policy_statuses(Mode::Staged, |p| self.is_staged_policy(p)));
        }
        Report {
            generation: self.installed.map_or(0, |l| l.generation),
            loaded_at: self.installed.map(|l| timestamp(l.at)),
            now,
            policies,
            invalid: Vec::new(),
        }
    }

    fn selected(&self) -> Selected {
        let mut s = Selected {
            cluster: vec![BTreeSet::new(); self.cluster.len()],
            developer: vec![BTreeSet::new(); self.developer.len()],
            network: vec![BTreeSet::new(); self.network.len()],
        };
        for &(pod, class) in self.pod_by_ip.values() {
            if class == NOT_SUBJECT {
                continue;
            }
            let c = &self.classes[class as usize];
            for &i in c.admin.iter().chain(c.baseline.iter()) {
                s.cluster[i as usize].insert(pod);
            }
            for &i in c.developer.iter() {
                s.developer[i as usize].insert(pod);
            }
            for &i in c.network.iter() {
                s.network[i as usize].insert(pod);
            }
        }
        s
    }

    fn pod_names(&self, pods: &BTreeSet<u32>) -> Vec<String> {
        let mut names: Vec<String> = pods
            .iter()
            .map(|&p| {
                let info = &self.pods[p as usize].info;
                format!("{}/{}", info.namespace, info.name)
            })
            .collect();
        names.sort();
        names
    }

    fn policy_statuses(
        &self,
        mode: Mode,
        include: impl Fn(PolicyRef) -> bool,
    ) -> Vec<PolicyStatus> {
        let selected = self.selected();
        let mut out = Vec::new();
        for (i, p) in self.cluster.iter().enumerate() {
            let p = &p.source;
            let id = Identity {
                policy: PolicyRef::Cluster(i as u32),
                kind: p.kind.kind(),
                namespace: None,
                name: &p.name,
                tier: if p.tier == Tier::Admin {
                    "Admin"
                } else {
                    "Baseline"
                },
                priority: Some(p.priority),
            };
            let actions = p.egress.iter().map(|r| (r.name.clone(), r.action));
            if include(id.policy) {
                out.push(self.policy_status(id, mode, &selected.cluster[i], actions));
            }
        }
        for (i, p) in self.developer.iter().enumerate() {
            let p = &p.source;
            let id = Identity {
                policy: PolicyRef::Developer(i as u32),
                kind: "DeveloperNetworkPolicy",
                namespace: Some(&p.namespace),
                name: &p.name,
                tier: "NetworkPolicy",
                priority: None,
            };
            let actions = p.egress.iter().map(|r| (r.name.clone(), r.action));
            if include(id.policy) {
                out.push(self.policy_status(id, mode, &selected.developer[i], actions));
            }
        }
        for (i, p) in self.network.iter().enumerate() {
            let p = &p.source;
            let id = Identity {
                policy: PolicyRef::Network(i as u32),
                kind: "NetworkPolicy",
                namespace: Some(&p.namespace),
                name: &p.name,
                tier: "NetworkPolicy",
                priority: None,
            };
            let rules = p.egress.as_deref().unwrap_or_default();
            let actions = rules.iter().map(|_| (None, Action::Accept));
            if include(id.policy) {
                let mut status = self.policy_status(id, mode, &selected.network[i], actions);
                // Only a policy that isolates egress denies anything.
                status.isolation_denied = p
                    .egress
                    .is_some()
                    .then(|| self.hits.of(id.policy).map(|h| hit(&h.isolation)))
                    .flatten();
                out.push(status);
            }
        }
        out
    }

    fn policy_status(
        &self,
        id: Identity<'_>,
        mode: Mode,
        selected: &BTreeSet<u32>,
        actions: impl Iterator<Item = (Option<String>, Action)>,
    ) -> PolicyStatus {
        let h: Option<&PolicyHits> = self.hits.of(id.policy);
        let loaded = h.and_then(|h| h.loaded.get().copied());
        let network = matches!(id.policy, PolicyRef::Network(_));
        let never = Hit {
            flows: 0,
            last_hit: None,
        };
        let rules = actions
            .enumerate()
            .map(|(index, (name, action))| {
                let c = h.and_then(|h| h.rules.get(index)).map_or(never, hit);
                let count = |a: Action| if action == a { c.flows } else { 0 };
                RuleStatus {
                    index,
                    name,
                    action: match action {
                        Action::Accept if network => "Allow",
                        Action::Accept => "Accept",
                        Action::Deny => "Deny",
                        Action::Pass => "Pass",
                    }
                    .to_owned(),
                    allowed: count(Action::Accept),
                    denied: count(Action::Deny),
                    passed: count(Action::Pass),
                    last_hit: c.last_hit,
                }
            })
            .collect();
        PolicyStatus {
            policy: self.policy_label(id.policy),
            kind: id.kind.to_owned(),
            namespace: id.namespace.map(str::to_owned),
            name: id.name.to_owned(),
            tier: id.tier.to_owned(),
            priority: id.priority,
            mode,
            generation: loaded.map_or(0, |l| l.generation),
            loaded_at: loaded.map(|l| timestamp(l.at)),
            selects: self.pod_names(selected),
            rules,
            isolation_denied: None,
        }
    }
}

/// Who a policy is, as reported.
#[derive(Clone, Copy)]
struct Identity<'a> {
    policy: PolicyRef,
    kind: &'static str,
    namespace: Option<&'a str>,
    name: &'a str,
    tier: &'static str,
    priority: Option<u32>,
}
