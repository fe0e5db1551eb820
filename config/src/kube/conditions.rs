//! `status.conditions` of DeveloperNetworkPolicies: `Accepted` and `Enforced`, in the shape
//! of `metav1.Condition`, written by one gateway (the holder of the status Lease,
//! [`super::lease`]) through the status subresource.
//!
//! * `Accepted`: the writer's own validation. True (`Valid`, or `UnknownFieldsFailClosed` with
//!   the rules that fail closed), or False (`Invalid`, with every error).
//! * `Enforced`: True (`EnforcedByLeader`) when the writer's gateway has this generation
//!   installed; False when it is staged (`Staged`) or not accepted (`NotAccepted`). Whether
//!   each other node has it too is in that node's Event on the object, not here: a condition
//!   per node would be 1,000 conditions rewritten on every change.
//!
//! Messages hold nothing that changes without the object changing (no node name, no snapshot
//! number): a condition is rewritten only when the object or its validation changed, and a
//! new writer after a leader change writes nothing that is already right.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::events::truncate;
use super::kinds::WatchedKind;
use super::objects::{Findings, PolicyObject};

pub const ACCEPTED: &str = "Accepted";
pub const ENFORCED: &str = "Enforced";

/// The conditions `object` should carry after its revision was installed by the writer's
/// gateway; `lease` names the status Lease (`namespace/name`) for the message. An unchanged
/// condition keeps its `lastTransitionTime`; a changed status takes `now`.
pub fn desired(object: &PolicyObject, lease: &str, now: &Time) -> Vec<Condition> {
    let generation = object.revision.generation.unwrap_or(0);
    let (accepted, accepted_reason, accepted_message) = match &object.findings {
        Findings::None => (true, "Valid", "valid".to_owned()),
        Findings::Warnings(m) => (
            true,
            "UnknownFieldsFailClosed",
            format!("valid; rules holding fields this gateway does not know fail closed: {m}"),
        ),
        Findings::Errors(m) => (false, "Invalid", m.clone()),
    };
    let (enforced, enforced_reason, enforced_message) = if !accepted {
        (
            false,
            "NotAccepted",
            "not enforced: the object is invalid (see Accepted)".to_owned(),
        )
    } else if object.revision.staged {
        (
            false,
            "Staged",
            "staged (policy.chokepoint.dev/mode: staged): decided a second time and audited on every node, it decides nothing".to_owned(),
        )
    } else {
        (
            true,
            "EnforcedByLeader",
            format!(
                "in force on the node of the gateway holding Lease {lease}; each node's gateway confirms its own with a Normal Event on this object"
            ),
        )
    };
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_owned();
        let since = object
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            observed_generation: Some(generation),
            last_transition_time: since,
            reason: reason.to_owned(),
            // metav1.Condition allows 32 kB of message.
            message: truncate(message, 32_000),
        }
    };
    vec![
        condition(ACCEPTED, accepted, accepted_reason, accepted_message),
        condition(ENFORCED, enforced, enforced_reason, enforced_message),
    ]
}

/// Whether `observed` already says what `desired` does (the transition times aside), in
/// any order.
pub fn up_to_date(observed: &[Condition], desired: &[Condition]) -> bool {
    observed.len() == desired.len()
        && desired.iter().all(|d| {
            observed.iter().any(|o| {
                o.type_ == d.type_
                    && o.status == d.status
                    && o.observed_generation == d.observed_generation
                    && o.reason == d.reason
                    && o.message == d.message
            })
        })
}

/// Writes the conditions of one object with a merge patch of its status subresource (our
/// two conditions are the whole list: the patch replaces it).
pub async fn write(
    client: &Client,
    kind: &WatchedKind,
    namespace: &str,
    name: &str,
    conditions: &[Condition],
) -> Result<(), kube::Error> {
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &kind.api_resource());
    let patch = json!({"status": {"conditions": conditions}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::objects::Revision;
    use k8s_openapi::jiff::Timestamp;

    fn time(s: &str) -> Time {
        Time(s.parse::<Timestamp>().unwrap())
    }

    fn object(
        generation: i64,
        findings: Findings,
        staged: bool,
        conditions: Vec<Condition>,
    ) -> PolicyObject {
        PolicyObject {
            kind: "DeveloperNetworkPolicy",
            uid: "u".into(),
            reference: Default::default(),
            revision: Revision {
                generation: Some(generation),
                resource_version: "1".into(),
                staged,
            },
            findings,
            conditions,
        }
    }

    fn brief(c: &[Condition]) -> Vec<(String, String, i64, String)> {
        c.iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.observed_generation.unwrap(),
                    c.reason.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn valid_staged_and_invalid() {
        let t1 = time("2026-12-01T10:00:00Z");
        let lease = "chokepoint/chokepoint-status";
        let d = desired(&object(3, Findings::None, false, vec![]), lease, &t1);
        assert_eq!(
            brief(&d),
            [
                ("Accepted".into(), "True".into(), 3, "Valid".into()),
                (
                    "Enforced".into(),
                    "True".into(),
                    3,
                    "EnforcedByLeader".into()
                )
            ]
        );
        assert!(d[1].message.contains(lease), "{}", d[1].message);
        let d = desired(&object(1, Findings::None, true, vec![]), lease, &t1);
        assert_eq!(
            brief(&d)[1],
            ("Enforced".into(), "False".into(), 1, "Staged".into())
        );
        let msg = "spec.egress[0].to[0].networks[0]: CIDR `10.0.0.5/8` has host bits set";
        let d = desired(
            &object(2, Findings::Errors(msg.into()), false, vec![]),
            lease,
            &t1,
        );
        assert_eq!(
            brief(&d),
            [
                ("Accepted".into(), "False".into(), 2, "Invalid".into()),
                ("Enforced".into(), "False".into(), 2, "NotAccepted".into())
            ]
        );
        assert_eq!(d[0].message, msg);
        let d = desired(
            &object(2, Findings::Warnings("x".into()), false, vec![]),
            lease,
            &t1,
        );
        assert_eq!(d[0].reason, "UnknownFieldsFailClosed");
        assert_eq!(d[1].status, "True");
    }

    #[test]
    fn a_transition_time_moves_only_with_the_status() {
        let lease = "ns/l";
        let t1 = time("2026-12-01T10:00:00Z");
        let t2 = time("2026-12-01T11:00:00Z");
        let first = desired(&object(1, Findings::None, false, vec![]), lease, &t1);
        // A spec change (generation 2) that stays valid: up to date no more, same times.
        let second = desired(&object(2, Findings::None, false, first.clone()), lease, &t2);
        assert!(!up_to_date(&first, &second));
        assert!(second.iter().all(|c| c.last_transition_time == t1));
        // Becoming invalid moves both.
        let third = desired(
            &object(3, Findings::Errors("bad".into()), false, second.clone()),
            lease,
            &t2,
        );
        assert!(third.iter().all(|c| c.last_transition_time == t2));
        // What is written is up to date, whatever the order and the times.
        let mut observed = third.clone();
        observed.reverse();
        observed[0].last_transition_time = t1;
        assert!(up_to_date(&observed, &third));
        assert!(!up_to_date(&observed[..1], &third));
    }
}
