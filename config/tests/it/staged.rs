//! The `policy.chokepoint.dev/mode` annotation (mode.rs, load.rs): staged policies of every
//! kind are kept apart from the enforced ones; a value that is no mode is a located error.

use crate::common::*;
use chokepoint_config::PolicyMode;

const DENY_ONE: &str = "- action: Deny\n  to:\n  - networks: [192.0.2.0/24]\n";
const NP_ALLOW_ALL: &str = "- {}\n";

/// `text` with the mode annotation set to `value` (on lines 4 and 5).
fn annotated(text: &str, value: &str) -> String {
    text.replacen(
        "metadata:\n",
        &format!("metadata:\n  annotations:\n    policy.chokepoint.dev/mode: {value}\n"),
        1,
    )
}

#[test]
fn a_staged_policy_of_every_kind_is_loaded_as_staged_and_not_enforced() {
    let texts = [
        cnp(DENY_ONE),
        anp(DENY_ONE),
        banp(DENY_ONE),
        np(NP_ALLOW_ALL, ""),
        dnp(DENY_ONE),
    ];
    let text = texts
        .iter()
        .map(|t| annotated(t, "staged"))
        .collect::<Vec<_>>()
        .join("---\n");
    let l = load(&text);
    assert_clean(&l);
    let w = &l.world;
    assert!(w.cluster_policies.is_empty() && w.network_policies.is_empty());
    assert!(w.developer_policies.is_empty());
    assert_eq!(w.staged.cluster_policies.len(), 3);
    assert_eq!(w.staged.network_policies.len(), 1);
    assert_eq!(w.staged.developer_policies.len(), 1);
}

#[test]
fn enforced_or_no_annotation_enforces_the_policy() {
    let text = format!(
        "{}---\n{}",
        annotated(&cnp(DENY_ONE), "enforced"),
        np(NP_ALLOW_ALL, "")
    );
    let l = load(&text);
    assert_clean(&l);
    assert_eq!(l.world.cluster_policies.len(), 1);
    assert_eq!(l.world.network_policies.len(), 1);
    assert!(l.world.staged.is_empty());
    assert!(l.world.with_staged_enforced().is_none());
}

#[test]
fn the_world_as_if_staged_holds_enforced_and_staged_policies() {
    let text = format!(
        "{}---\n{}",
        annotated(&banp(DENY_ONE), "staged"),
        cnp(DENY_ONE)
    );
    let l = load(&text);
    assert_clean(&l);
    let as_if = l.world.with_staged_enforced().expect("a policy is staged");
    assert_eq!(as_if.cluster_policies.len(), 2);
    assert!(as_if.staged.is_empty());
}

#[test]
fn a_mode_that_is_not_staged_or_enforced_is_a_located_error() {
    for (value, shown) in [
        ("audit", "\"audit\""),
        ("true", "true"),
        ("Staged", "\"Staged\""),
    ] {
        let l = load(&annotated(&dnp(DENY_ONE), value));
        assert_one_error(
            &l,
            5,
            5,
            &[
                "annotation `policy.chokepoint.dev/mode` is",
                shown,
                "must be `staged`",
            ],
        );
        assert!(
            l.world.staged.is_empty(),
            "{value}: nothing is staged either"
        );
        let printed = l.diagnostics.to_string();
        assert!(
            printed.starts_with("test.yaml:5:5: DeveloperNetworkPolicy/team-a/p: "),
            "{printed}"
        );
    }
}

#[test]
fn the_mode_of_an_object_without_positions_is_reported_by_its_field_path() {
    let value = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "a",
                     "annotations": {"policy.chokepoint.dev/mode": "dry-run"}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
    });
    let l = chokepoint_config::load_objects(
        std::path::Path::new("cluster"),
        [&value],
        chokepoint_config::UnknownFields::FailClosed,
    );
    let printed = l.diagnostics.to_string();
    assert!(
        printed.contains("metadata.annotations.policy.chokepoint.dev/mode: annotation"),
        "{printed}"
    );
    assert_eq!(PolicyMode::of(&value).ok(), None);
}
