//! Rule hits: how many flows each rule decided (or passed on), and when it last did.
//!
//! The counters are atomics beside the snapshot, one block per policy behind an `Arc`, so
//! counting a flow is a relaxed add (and a store of the time) on the matched rules: no lock,
//! no allocation. They are gathered only when `/policies` is read.
//!
//! Across a reload a policy whose spec did not change keeps its block ([`Hits::adopt`]): the
//! new snapshot shares the `Arc`, so flows still deciding on the old snapshot count into the
//! same counters and nothing is lost in the swap. A changed policy starts from zero (its rule
//! indexes may mean other rules now).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use chokepoint_config::model::{ClusterPolicy, DeveloperPolicy, NetworkPolicyRules};

use super::flow::{Flow, PolicyRef, Reason, Verdict};
use super::snapshot::Snapshot;
use super::trace::{Outcome, Step, Trace};

/// One rule's counter.
#[derive(Debug, Default)]
pub(super) struct RuleHits {
    count: AtomicU64,
    /// Milliseconds since the Unix epoch; 0: never.
    last: AtomicU64,
}

impl RuleHits {
    #[inline]
    fn hit(&self, now: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last.store(now, Ordering::Relaxed);
    }

    /// `(count, last hit in Unix milliseconds)`, `None` when never hit.
    pub(super) fn read(&self) -> (u64, Option<u64>) {
        let last = self.last.load(Ordering::Relaxed);
        (
            self.count.load(Ordering::Relaxed),
            (last != 0).then_some(last),
        )
    }
}

/// When a policy's current version was first installed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loaded {
    pub generation: u64,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// The counters of one version of one policy.
#[derive(Debug)]
pub(super) struct PolicyHits {
    pub rules: Box<[RuleHits]>,
    /// NetworkPolicies: flows denied because the source is isolated and no rule allowed them,
    /// counted on the policy the verdict names (the first isolating one).
    pub isolation: RuleHits,
    /// Set by the first install that carries this version; kept by later ones.
    pub loaded: OnceLock<Loaded>,
}

impl PolicyHits {
    fn new(rules: usize) -> Arc<PolicyHits> {
        Arc::new(PolicyHits {
            rules: (0..rules).map(|_| RuleHits::default()).collect(),
            isolation: RuleHits::default(),
            loaded: OnceLock::new(),
        })
    }
}

/// Every policy's counters, indexed like the snapshot's policies.
#[derive(Debug, Default)]
pub(super) struct Hits {
    pub cluster: Vec<Arc<PolicyHits>>,
    pub developer: Vec<Arc<PolicyHits>>,
    pub network: Vec<Arc<PolicyHits>>,
}

/// Milliseconds since the Unix epoch, never 0 (that means "never hit").
pub(super) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .max(1)
}

impl Hits {
    /// Zeroed counters for every rule of `snapshot`.
    pub(super) fn new(snapshot: &Snapshot) -> Hits {
        Hits {
            cluster: (0..snapshot.cluster.len() as u32)
                .map(|i| PolicyHits::new(snapshot.rules.of(i).len()))
                .collect(),
            developer: snapshot
                .developer
                .iter()
                .map(|p| PolicyHits::new(snapshot.rules.of(p.rules).len()))
                .collect(),
            network: snapshot
                .network
                .iter()
                .map(|p| PolicyHits::new(p.rules.len()))
                .collect(),
        }
    }

    pub(super) fn of(&self, policy: PolicyRef) -> Option<&PolicyHits> {
        match policy {
            PolicyRef::Cluster(i) => self.cluster.get(i as usize),
            PolicyRef::Developer(i) => self.developer.get(i as usize),
            PolicyRef::Network(i) => self.network.get(i as usize),
        }
        .map(|h| &**h)
    }

    /// Takes over the counters of every policy of `old` whose spec is the same in `new`
    /// (`self` belongs to `new`).
    fn adopt(&mut self, new: &Snapshot, old: &Snapshot) {
        fn cluster(s: &Snapshot) -> Vec<&ClusterPolicy> {
            s.cluster.iter().map(|p| &p.source).collect()
        }
        fn developer(s: &Snapshot) -> Vec<&DeveloperPolicy> {
            s.developer.iter().map(|p| &p.source).collect()
        }
        fn network(s: &Snapshot) -> Vec<&NetworkPolicyRules> {
            s.network.iter().map(|p| &p.source).collect()
        }
        adopt(
            &mut self.cluster,
            &cluster(new),
            &cluster(old),
            &old.hits.cluster,
        );
        adopt(
            &mut self.developer,
            &developer(new),
            &developer(old),
            &old.hits.developer,
        );
        adopt(
            &mut self.network,
            &network(new),
            &network(old),
            &old.hits.network,
        );
    }

    fn mark_loaded(&self, loaded: Loaded) {
        for h in self
            .cluster
            .iter()
            .chain(&self.developer)
            .chain(&self.network)
        {
            // Already set: the policy is unchanged since an earlier generation.
            let _ = h.loaded.set(loaded);
        }
    }
}

/// For each of `new`'s policies, the counters of the same policy in `old` when its spec is
/// unchanged (the two are not in the same order once policies come and go).
fn adopt<S: Versioned>(
    mine: &mut [Arc<PolicyHits>],
    new: &[&S],
    old: &[&S],
    old_hits: &[Arc<PolicyHits>],
) {
    let by_key: HashMap<_, _> = old
        .iter()
        .enumerate()
        .map(|(i, p)| (p.identity(), i))
        .collect();
    for (hits, p) in mine.iter_mut().zip(new) {
        let Some(&j) = by_key.get(&p.identity()) else {
            continue;
        };
        if p.same_spec(old[j]) && hits.rules.len() == old_hits[j].rules.len() {
            *hits = old_hits[j].clone();
        }
    }
}

/// A policy as far as keeping its counters goes: who it is, and whether its spec changed.
/// Where it was read from (`origin`) is no part of the spec: moving a policy in its file
/// keeps its counts.
trait Versioned {
    fn identity(&self) -> (&'static str, &str, &str);
    fn same_spec(&self, other: &Self) -> bool;
}

impl Versioned for ClusterPolicy {
    fn identity(&self) -> (&'static str, &str, &str) {
        (self.kind.short_name(), "", &self.name)
    }

    fn same_spec(&self, o: &Self) -> bool {
        (self.tier, self.priority, &self.subject, &self.egress)
            == (o.tier, o.priority, &o.subject, &o.egress)
    }
}

impl Versioned for DeveloperPolicy {
    fn identity(&self) -> (&'static str, &str, &str) {
        ("dnp", &self.namespace, &self.name)
    }

    fn same_spec(&self, o: &Self) -> bool {
        (&self.pod_selector, &self.egress) == (&o.pod_selector, &o.egress)
    }
}

impl Versioned for NetworkPolicyRules {
    fn identity(&self) -> (&'static str, &str, &str) {
        ("np", &self.namespace, &self.name)
    }

    fn same_spec(&self, o: &Self) -> bool {
        (&self.pod_selector, &self.egress) == (&o.pod_selector, &o.egress)
    }
}

/// Counts the matched rules of one evaluation; `count` says which policies are counted.
struct Counting<'h, F> {
    hits: &'h Hits,
    count: F,
    /// Read once, at the first hit.
    now: u64,
}

impl<F: Fn(PolicyRef) -> bool> Counting<'_, F> {
    fn now(&mut self) -> u64 {
        if self.now == 0 {
            self.now = unix_millis(SystemTime::now());
        }
        self.now
    }

    /// A matched rule: the deciding one, or a Pass on the way to it.
    fn rule(&mut self, policy: PolicyRef, rule: u16) {
        if (self.count)(policy)
            && let Some(r) = self
                .hits
                .of(policy)
                .and_then(|h| h.rules.get(rule as usize))
        {
            let now = self.now();
            r.hit(now);
        }
    }

    /// After the evaluation: an isolation deny is counted on the NetworkPolicy itself.
    fn isolation(&mut self, verdict: &Verdict) {
        if verdict.reason == Reason::NetworkPolicyIsolation
            && let Some(policy) = verdict.decided_by.policy
            && (self.count)(policy)
            && let Some(h) = self.hits.of(policy)
        {
            let now = self.now();
            h.isolation.hit(now);
        }
    }
}

impl<F: Fn(PolicyRef) -> bool> Trace for Counting<'_, F> {
    #[inline]
    fn step(&mut self, step: Step) {
        if let (Outcome::Matched(_), Some(policy), Some(rule)) =
            (step.outcome, step.policy, step.rule_index)
        {
            self.rule(policy, rule);
        }
    }
}

/// Matched rules kept per evaluation; more (never seen: a Pass and the deciding rule are the
/// usual two) are counted by evaluating again.
const MATCHED_KEPT: usize = 4;

/// The rules one evaluation matched, kept to be counted later
/// ([`Snapshot::count_matched`]): the fast path decides a flow before it knows whether the
/// proxy will decide (and count) it instead.
#[derive(Debug, Default)]
pub struct MatchedRules {
    rules: [Option<(PolicyRef, u16)>; MATCHED_KEPT],
    overflowed: bool,
}

impl Trace for MatchedRules {
    #[inline]
    fn step(&mut self, step: Step) {
        if let (Outcome::Matched(_), Some(policy), Some(rule)) =
            (step.outcome, step.policy, step.rule_index)
        {
            match self.rules.iter_mut().find(|slot| slot.is_none()) {
                Some(slot) => *slot = Some((policy, rule)),
                None => self.overflowed = true,
            }
        }
    }
}

impl Snapshot {
    /// Decides a flow for the data path: [`evaluate`](Self::evaluate), and count the hit on
    /// every rule that matched (the deciding one and the Pass rules before it). Call it once
    /// per flow: re-decisions (a recheck, a name check) use `evaluate` and count nothing.
    pub fn evaluate_counted(&self, flow: &Flow<'_>) -> Verdict {
        self.counted(flow, |_| true)
    }

    /// [`evaluate`](Self::evaluate), keeping the matched rules so that the caller can count
    /// them once it knows the flow is its to count ([`count_matched`](Self::count_matched)).
    pub fn evaluate_matched(&self, flow: &Flow<'_>) -> (Verdict, MatchedRules) {
        let mut matched = MatchedRules::default();
        let verdict = self.decide(flow, &mut matched);
        (verdict, matched)
    }

    /// Counts what [`evaluate_matched`](Self::evaluate_matched) gave for `flow`, exactly as
    /// [`evaluate_counted`](Self::evaluate_counted) would have.
    pub fn count_matched(&self, flow: &Flow<'_>, verdict: &Verdict, matched: &MatchedRules) {
        if matched.overflowed {
            self.evaluate_counted(flow);
            return;
        }
        let mut counting = Counting {
            hits: &self.hits,
            count: |_| true,
            now: 0,
        };
        for &(policy, rule) in matched.rules.iter().flatten() {
            counting.rule(policy, rule);
        }
        counting.isolation(verdict);
    }

    /// Evaluates and counts the policies `count` names.
    pub(super) fn counted(&self, flow: &Flow<'_>, count: impl Fn(PolicyRef) -> bool) -> Verdict {
        let mut counting = Counting {
            hits: &self.hits,
            count,
            now: 0,
        };
        let verdict = self.decide(flow, &mut counting);
        counting.isolation(&verdict);
        verdict
    }

    /// Before this snapshot is installed as generation `generation`: keeps the counters of
    /// every policy (staged ones too) whose spec is the same in `previous`, and notes when
    /// the others were loaded.
    pub fn carry_hits_from(
        &mut self,
        previous: Option<&Snapshot>,
        generation: u64,
        at: SystemTime,
    ) {
        let loaded = Loaded {
            generation,
            at: unix_millis(at),
        };
        let mut hits = std::mem::take(&mut self.hits);
        if let Some(old) = previous {
            hits.adopt(self, old);
        }
        hits.mark_loaded(loaded);
        self.hits = hits;
        self.installed = Some(loaded);
        let previous_staged = previous.and_then(Snapshot::staged);
        if let Some(staged) = self.staged_mut() {
            staged.carry_hits_from(previous_staged, generation, at);
        }
    }
}
