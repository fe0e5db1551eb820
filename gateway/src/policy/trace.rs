//! The tier-by-tier record of an evaluation ("which policy dropped my traffic?").

use chokepoint_config::model::Action;

use super::flow::{PolicyRef, TierName};

/// What one consulted policy (or tier) contributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A rule matched with this action (for NetworkPolicies: a rule allowed the flow).
    Matched(Action),
    /// The policy applies to the source but none of its rules matched.
    NoMatch,
    /// The source is egress-isolated by this NetworkPolicy and none of its rules matched.
    IsolatedNoMatch,
    /// No NetworkPolicy isolates the source's egress: the tier does not decide.
    NotIsolated,
    /// No tier decided: the default action.
    Default,
    /// The evaluation stopped before the tiers (hairpin, host network, unknown source).
    Exempt,
}

/// One entry of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub tier: TierName,
    pub policy: Option<PolicyRef>,
    pub rule_index: Option<u16>,
    pub outcome: Outcome,
}

/// Receives steps while evaluating; the hot path uses a recorder that does nothing.
pub trait Trace {
    fn step(&mut self, step: Step);
}

/// Discards every step.
#[derive(Debug, Default)]
pub(crate) struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn step(&mut self, _: Step) {}
}

impl Trace for Vec<Step> {
    fn step(&mut self, step: Step) {
        self.push(step);
    }
}
