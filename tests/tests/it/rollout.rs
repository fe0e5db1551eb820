//! The safe-rollout story end to end, as `docs/rollout.md` tells it (the lab is
//! [`chokepoint_lab::rollout`], which the demo prints): a namespace runs with the flow log on
//! and a staged Baseline deny of everything; the audit log shows what the deny would break;
//! `chokepoint recommend` turns the flow and audit logs into a DeveloperNetworkPolicy; with it
//! applied and the deny switched to enforced, the same traffic still works and a destination
//! that was never observed is refused.

use std::time::Duration;

use chokepoint_lab::rollout::{CLUSTER_DNS, DENY_RULE, ECHO, SITE_A_NAME, Story, staged_deny_of};
use chokepoint_lab::{HOST_A_IPV4, HOST_B_IPV4, HOST_C_IPV4};
use chokepoint_tests::{chokepoint_bin, require_root, teardown};
use serde_json::Value;

#[test]
fn observe_stage_recommend_enforce_keeps_what_worked_and_refuses_the_rest() {
    require_root();
    let mut story = Story::start("lab-node", &chokepoint_bin()).expect("start the story");

    // 1. Observe, with the deny staged: everything works.
    let before = story.traffic();
    assert!(before.worked(), "{before:?}");

    // 2. The audit log says what the staged deny would break: DNS and both sites.
    let audit = story.files.wait_audit(3, Duration::from_secs(10));
    for (ip, port) in [
        (CLUSTER_DNS.to_string(), 53),
        (HOST_A_IPV4.to_string(), ECHO),
        (HOST_B_IPV4.to_string(), ECHO),
    ] {
        assert!(
            staged_deny_of(&audit, &ip, port),
            "{ip}:{port} in {audit:#?}"
        );
    }
    // The flow log has the same flows, site-a by its name.
    let flows = story.files.wait_flows(Duration::from_secs(10), |r| {
        r.iter()
            .any(|f| f["destination"]["names"][0] == SITE_A_NAME)
            && r.iter()
                .any(|f| f["destination"]["ip"] == HOST_B_IPV4.to_string())
            && r.iter().any(|f| f["destination"]["port"] == 53)
    });
    let named = flows
        .iter()
        .find(|f| f["destination"]["names"][0] == SITE_A_NAME)
        .unwrap_or_else(|| panic!("site-a by name in {flows:#?}"));
    assert_eq!(named["destination"]["ip"], Value::Null, "{named}");

    // 3. Recommend from both logs.
    let recommended = story.recommend(&chokepoint_bin()).expect("recommend");
    assert!(recommended.contains(SITE_A_NAME), "{recommended}");
    assert!(
        recommended.contains(&format!("{HOST_B_IPV4}/32")),
        "{recommended}"
    );
    assert!(
        recommended.contains(&format!("{CLUSTER_DNS}/32")),
        "{recommended}"
    );
    assert!(
        !recommended.contains(&HOST_C_IPV4.to_string()),
        "{recommended}"
    );

    // 4. Apply it, enforce the deny.
    let audited = story.files.audit_records().len();
    assert!(
        story.enforce(&recommended),
        "the gateway did not take both changes"
    );

    // 5. The same traffic still works; a destination never observed is refused.
    let after = story.traffic();
    assert!(after.worked(), "{after:?}");
    let refused = story.unobserved();
    assert!(refused.reset, "{refused:?}");
    let audit = story.files.wait_audit(audited + 1, Duration::from_secs(5));
    let new = &audit[audited..];
    assert_eq!(
        new.len(),
        1,
        "only the refusal, no staged differences left: {new:#?}"
    );
    assert_eq!(new[0]["verdict"], "deny");
    assert_eq!(new[0]["destination"]["ip"], HOST_C_IPV4.to_string());
    assert_eq!(new[0]["decided_by"]["tier"], "Baseline");
    assert_eq!(new[0]["decided_by"]["rule"], DENY_RULE);
    let flows = story.files.wait_flows(Duration::from_secs(10), |r| {
        r.iter()
            .any(|f| f["decided_by"]["policy"] == "recommended-egress")
    });
    assert!(
        flows
            .iter()
            .any(|f| f["decided_by"]["policy"] == "recommended-egress"),
        "the flow log now names the recommended policy: {flows:#?}"
    );
    assert!(story.stop().expect("gateway running").success());
    teardown(story.lab);
}
