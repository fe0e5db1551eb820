//! Staged policies: each flow decided a second time, as if the staged policies were enforced.
//!
//! A snapshot with staged policies carries a second snapshot compiled from the enforced and
//! the staged policies together ([`Staged`]); one without carries nothing, so its flows do
//! exactly the work they would without the feature (one test of an `Option`). Policy
//! references of the two snapshots differ (the second interleaves the staged policies by
//! priority and name), so the second keeps, per policy, the index of the same policy in the
//! enforced snapshot: comparing who decided costs no string comparison.

use std::collections::HashMap;

use chokepoint_config::World;

use super::flow::{Decision, Flow, PolicyRef, Verdict};
use super::snapshot::{Options, Snapshot};

/// The snapshot "as if staged policies were enforced", with its policies mapped back.
#[derive(Debug)]
pub(super) struct Staged {
    pub(super) snapshot: Snapshot,
    /// Per policy of `snapshot`, the same policy's index in the enforced snapshot; `None`
    /// for a staged policy.
    cluster: Vec<Option<u32>>,
    developer: Vec<Option<u32>>,
    network: Vec<Option<u32>>,
}

/// How the staged verdict differs from the enforced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Difference {
    /// Allowed now; the staged policies would deny it.
    WouldDeny,
    /// Denied now; the staged policies would allow it.
    WouldAllow,
    /// The same decision, by another policy or rule.
    OtherPolicy,
}

impl Difference {
    /// The spelling of metrics and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Difference::WouldDeny => "would_deny",
            Difference::WouldAllow => "would_allow",
            Difference::OtherPolicy => "other_policy",
        }
    }
}

/// The verdict of a flow as if the staged policies were enforced, where it differs.
#[derive(Debug, Clone, Copy)]
pub struct StagedVerdict<'s> {
    /// The snapshot that decided it: resolve `verdict`'s policy references against it.
    pub snapshot: &'s Snapshot,
    pub verdict: Verdict,
    pub difference: Difference,
}

impl Staged {
    /// The second snapshot of `world`, when it has staged policies.
    pub(super) fn compile(
        world: &World,
        enforced: &Snapshot,
        options: Options,
        node: Option<&str>,
    ) -> Option<Staged> {
        let as_if = world.with_staged_enforced()?;
        let snapshot = Snapshot::build(&as_if, options, node);
        let cluster_index: HashMap<_, _> = (0..enforced.cluster.len() as u32)
            .map(|i| (cluster_key(enforced, i), i))
            .collect();
        let developer_index: HashMap<_, _> = (0..enforced.developer.len() as u32)
            .map(|i| (developer_key(enforced, i), i))
            .collect();
        let network_index: HashMap<_, _> = (0..enforced.network.len() as u32)
            .map(|i| (network_key(enforced, i), i))
            .collect();
        let cluster = (0..snapshot.cluster.len() as u32)
            .map(|i| cluster_index.get(&cluster_key(&snapshot, i)).copied())
            .collect();
        let developer = (0..snapshot.developer.len() as u32)
            .map(|i| developer_index.get(&developer_key(&snapshot, i)).copied())
            .collect();
        let network = (0..snapshot.network.len() as u32)
            .map(|i| network_index.get(&network_key(&snapshot, i)).copied())
            .collect();
        Some(Staged {
            snapshot,
            cluster,
            developer,
            network,
        })
    }

    /// The same policy in the enforced snapshot; `None` for a staged one.
    fn enforced_ref(&self, policy: PolicyRef) -> Option<PolicyRef> {
        let mapped = |v: &[Option<u32>], i: u32| v.get(i as usize).copied().flatten();
        match policy {
            PolicyRef::Cluster(i) => mapped(&self.cluster, i).map(PolicyRef::Cluster),
            PolicyRef::Developer(i) => mapped(&self.developer, i).map(PolicyRef::Developer),
            PolicyRef::Network(i) => mapped(&self.network, i).map(PolicyRef::Network),
        }
    }

    /// Decides `flow` as if staged, counting the staged policies' rule hits; `Some` when the decision, the deciding policy or its rule
    /// differs from the enforced `verdict`.
    pub(super) fn difference<'s>(
        &'s self,
        flow: &Flow<'_>,
        verdict: &Verdict,
    ) -> Option<StagedVerdict<'s>> {
        // Counted here, once per decided flow: the staged policies' own hits.
        let staged = self
            .snapshot
            .counted(flow, |p| self.enforced_ref(p).is_none());
        let (now, then) = (&verdict.decided_by, &staged.decided_by);
        let same_policy = match then.policy {
            None => now.policy.is_none(),
            Some(p) => self.enforced_ref(p).is_some_and(|e| Some(e) == now.policy),
        };
        let difference = match (verdict.decision, staged.decision) {
            (Decision::Allow, Decision::Deny) => Difference::WouldDeny,
            (Decision::Deny, Decision::Allow) => Difference::WouldAllow,
            _ if same_policy && now.tier == then.tier && now.rule_index == then.rule_index => {
                return None;
            }
            _ => Difference::OtherPolicy,
        };
        Some(StagedVerdict {
            snapshot: &self.snapshot,
            verdict: staged,
            difference,
        })
    }
}

fn cluster_key(s: &Snapshot, i: u32) -> (&'static str, &str) {
    let p = &s.cluster[i as usize].source;
    (p.kind.short_name(), &p.name)
}

fn developer_key(s: &Snapshot, i: u32) -> (&str, &str) {
    let p = &s.developer[i as usize].source;
    (&p.namespace, &p.name)
}

fn network_key(s: &Snapshot, i: u32) -> (&str, &str) {
    let p = &s.network[i as usize].source;
    (&p.namespace, &p.name)
}

impl Snapshot {
    /// Whether some policy is staged (then [`staged`](Self::staged) is `Some`).
    pub fn has_staged(&self) -> bool {
        self.staged.is_some()
    }

    /// The snapshot as if the staged policies were enforced, when some are staged (for
    /// `explain --staged`).
    pub fn staged(&self) -> Option<&Snapshot> {
        self.staged.as_deref().map(|s| &s.snapshot)
    }

    pub(super) fn staged_mut(&mut self) -> Option<&mut Snapshot> {
        self.staged.as_deref_mut().map(|s| &mut s.snapshot)
    }

    /// Whether `policy` of the [`staged`](Self::staged) snapshot is one of the staged
    /// policies (not an enforced one compiled beside them).
    pub(super) fn is_staged_policy(&self, policy: PolicyRef) -> bool {
        self.staged
            .as_deref()
            .is_some_and(|s| s.enforced_ref(policy).is_none())
    }

    /// Decides `flow` as if the staged policies were enforced, given its enforced `verdict`
    /// from this snapshot; `Some` where that differs. Without staged policies: `None` at
    /// once, without a second evaluation.
    #[inline]
    pub fn staged_difference(
        &self,
        flow: &Flow<'_>,
        verdict: &Verdict,
    ) -> Option<StagedVerdict<'_>> {
        self.staged.as_deref()?.difference(flow, verdict)
    }
}
