//! Policy status (policy/hits.rs, policy/status.rs, state.rs): per-rule hits of the flows the
//! data path decides, the pods each policy selects, counters across reloads, staged
//! policies' own counts, and the errors of refused reloads.

use std::path::Path;

use chokepoint::metrics::Metrics;
use chokepoint::policy::{InvalidOutcome, Mode, PolicyStatus, Report, RuleStatus};
use chokepoint::state::PolicyState;
use chokepoint_config::settings::GatewaySettings;
use chokepoint_config::{Diagnostic, Diagnostics, Severity};

use crate::common::*;

/// Admin `guard` for namespace `app`: Pass to 192.0.2.0/24 port 443, Deny the rest of
/// 192.0.2.0/24, Accept 198.51.100.0/24 (never hit below). Baseline `floor`: Deny
/// everything.
fn policies(guard_staged: bool) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: guard
{}spec:
  tier: Admin
  priority: 10
  subject: {{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: app}}}}}}
  egress:
  - {{name: pass-https, action: Pass, to: [{{networks: [192.0.2.0/24]}}], protocols: [{{tcp: {{destinationPort: {{number: 443}}}}}}]}}
  - {{name: deny-rest, action: Deny, to: [{{networks: [192.0.2.0/24]}}]}}
  - {{action: Accept, to: [{{networks: [198.51.100.0/24]}}]}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: floor
spec:
  tier: Baseline
  priority: 1000
  subject: {{namespaces: {{}}}}
  egress:
  - {{name: deny-all, action: Deny, to: [{{networks: [0.0.0.0/0]}}]}}
",
        if guard_staged { STAGED } else { "" }
    )
}

fn state(policies: &str) -> PolicyState {
    let settings = GatewaySettings::from_str(
        Path::new("/etc/chokepoint/gateway.yaml"),
        "node: node-1\ncapture: {interfaces: [\"veth*\"]}\npolicy: {paths: [p], inventory: [i]}\n",
    )
    .unwrap();
    PolicyState::first(settings.policy, Metrics::default(), snapshot(policies))
}

#[track_caller]
fn policy<'r>(report: &'r Report, label: &str, mode: Mode) -> &'r PolicyStatus {
    report
        .policies
        .iter()
        .find(|p| p.policy == label && p.mode == mode)
        .unwrap_or_else(|| panic!("{label} ({mode:?}) missing from {report:#?}"))
}

/// `(allowed, denied, passed, hit at all)` of every rule.
fn counts(p: &PolicyStatus) -> Vec<(u64, u64, u64, bool)> {
    p.rules
        .iter()
        .map(|r: &RuleStatus| (r.allowed, r.denied, r.passed, r.last_hit.is_some()))
        .collect()
}

/// The fast path evaluates first and counts later, once it knows the flow is its own: the
/// counts are those of `evaluate_counted`.
#[test]
fn matched_rules_counted_later_count_as_an_evaluation_that_counts() {
    let flows = [
        flow(WEB, OUT, 443),
        flow(API, OUT, 443),
        flow(WEB, OUT, 80),
        flow(WEB, PG4, 5432),
    ];
    let at_once = state(&policies(false));
    for f in &flows {
        at_once.snapshot().evaluate_counted(f);
    }
    let later = state(&policies(false));
    let s = later.snapshot();
    for f in &flows {
        let (verdict, matched) = s.evaluate_matched(f);
        assert_eq!(verdict, s.evaluate(f));
        s.count_matched(f, &verdict, &matched);
    }
    let (a, b) = (at_once.report(), later.report());
    for label in ["cnp/guard", "cnp/floor"] {
        assert_eq!(
            counts(policy(&a, label, Mode::Enforced)),
            counts(policy(&b, label, Mode::Enforced)),
            "{label}"
        );
    }
    assert!(
        counts(policy(&b, "cnp/floor", Mode::Enforced))[0].1 > 0,
        "something was counted"
    );
}

#[test]
fn the_deciding_rule_and_every_pass_on_the_way_are_counted_with_the_time_of_the_hit() {
    let state = state(&policies(false));
    let s = state.snapshot();
    // Passed by guard, denied by floor (twice); denied by guard's second rule (once).
    for f in [flow(WEB, OUT, 443), flow(API, OUT, 443), flow(WEB, OUT, 80)] {
        s.evaluate_counted(&f);
    }
    // Re-decisions (a recheck, a name check) count nothing.
    s.evaluate(&flow(WEB, OUT, 80));
    let report = state.report();
    assert_eq!(report.generation, 1);
    let guard = policy(&report, "cnp/guard", Mode::Enforced);
    assert_eq!(
        counts(guard),
        [(0, 0, 2, true), (0, 1, 0, true), (0, 0, 0, false)]
    );
    let actions: Vec<_> = guard.rules.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["Pass", "Deny", "Accept"]);
    assert_eq!(guard.rules[0].name.as_deref(), Some("pass-https"));
    assert_eq!(guard.rules[2].name, None);
    let floor = policy(&report, "cnp/floor", Mode::Enforced);
    assert_eq!(counts(floor), [(0, 2, 0, true)]);
    let hit = floor.rules[0].last_hit.unwrap();
    assert!(
        report.loaded_at.unwrap() <= hit && hit <= report.now,
        "{report:#?}"
    );
}

#[test]
fn a_policy_lists_the_pods_its_subject_selects() {
    let state = state(&policies(false));
    let report = state.report();
    assert_eq!(
        policy(&report, "cnp/guard", Mode::Enforced).selects,
        ["app/api", "app/dual", "app/web"]
    );
    // Every namespace: the host-network agent is no subject.
    let floor = &policy(&report, "cnp/floor", Mode::Enforced).selects;
    assert_eq!(floor.len(), 8, "{floor:?}");
    assert!(!floor.iter().any(|p| p == "kube-system/agent"), "{floor:?}");
}

#[test]
fn network_policy_isolation_denials_are_counted_on_the_policy_the_verdict_names() {
    let state = state(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: app, name: only-db}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: app, name: ingress-only}
spec:
  podSelector: {}
  policyTypes: [Ingress]
",
    );
    let s = state.snapshot();
    s.evaluate_counted(&flow(WEB, PG4, 5432));
    s.evaluate_counted(&flow(WEB, OUT, 443));
    s.evaluate_counted(&flow(API, OUT, 443));
    let report = state.report();
    let only_db = policy(&report, "np/app/only-db", Mode::Enforced);
    assert_eq!(counts(only_db), [(1, 0, 0, true)]);
    assert_eq!(only_db.rules[0].action, "Allow");
    assert_eq!(only_db.isolation_denied.map(|h| h.flows), Some(2));
    let ingress = policy(&report, "np/app/ingress-only", Mode::Enforced);
    assert!(ingress.rules.is_empty());
    assert_eq!(ingress.isolation_denied, None, "it isolates no egress");
}

#[test]
fn an_unchanged_policy_keeps_its_counts_and_load_time_across_a_reload_and_a_changed_one_restarts() {
    let state = state(&policies(false));
    state.snapshot().evaluate_counted(&flow(WEB, OUT, 80));
    state.snapshot().evaluate_counted(&flow(WEB, OUT, 443));
    let before = state.report();
    // floor changes (another CIDR); guard does not, but moves down its file.
    let changed = policies(false).replace("0.0.0.0/0", "0.0.0.0/1");
    let reloaded =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: unused}}\n---\n{changed}");
    assert_eq!(state.install(snapshot(&reloaded)), 2);
    state.snapshot().evaluate_counted(&flow(WEB, OUT, 80));
    let after = state.report();
    assert_eq!(after.generation, 2);
    let (guard0, guard) = (
        policy(&before, "cnp/guard", Mode::Enforced),
        policy(&after, "cnp/guard", Mode::Enforced),
    );
    assert_eq!(
        counts(guard),
        [(0, 0, 1, true), (0, 2, 0, true), (0, 0, 0, false)]
    );
    assert_eq!((guard.generation, guard.loaded_at), (1, guard0.loaded_at));
    let floor = policy(&after, "cnp/floor", Mode::Enforced);
    assert_eq!(
        counts(policy(&before, "cnp/floor", Mode::Enforced)),
        [(0, 1, 0, true)]
    );
    assert_eq!(
        counts(floor),
        [(0, 0, 0, false)],
        "a changed policy starts again"
    );
    assert_eq!(floor.generation, 2);
}

#[test]
fn staged_policies_are_reported_as_staged_with_the_counts_of_the_staged_decision() {
    let state = state(&policies(true));
    let s = state.snapshot();
    for f in [flow(WEB, OUT, 443), flow(WEB, OUT, 80)] {
        let v = s.evaluate_counted(&f);
        s.staged_difference(&f, &v);
    }
    let report = state.report();
    let labels: Vec<_> = report
        .policies
        .iter()
        .map(|p| (p.policy.as_str(), p.mode))
        .collect();
    assert_eq!(
        labels,
        [("cnp/floor", Mode::Enforced), ("cnp/guard", Mode::Staged)],
        "the enforced policies the staged snapshot holds too are listed once"
    );
    // Enforced: floor denied both. Staged: guard would pass one and deny the other, and
    // floor's hits in the staged decision are not counted again.
    assert_eq!(
        counts(policy(&report, "cnp/floor", Mode::Enforced)),
        [(0, 2, 0, true)]
    );
    assert_eq!(
        counts(policy(&report, "cnp/guard", Mode::Staged)),
        [(0, 0, 1, true), (0, 1, 0, true), (0, 0, 0, false)]
    );
    assert_eq!(
        policy(&report, "cnp/guard", Mode::Staged).selects,
        ["app/api", "app/dual", "app/web"]
    );
}

#[test]
fn a_refused_reload_is_reported_with_its_located_errors_until_an_update_is_installed() {
    let state = state(&policies(false));
    let error = Diagnostic {
        severity: Severity::Error,
        file: "policies/bad.yaml".into(),
        line: 7,
        column: 5,
        object: Some("ClusterNetworkPolicy/bad".into()),
        message: "spec.priority: expected 0..=1000".into(),
    };
    let warning = Diagnostic {
        severity: Severity::Warning,
        ..error.clone()
    };
    state.refused(&Diagnostics(vec![error, warning]));
    let report = state.report();
    assert_eq!(
        report.invalid.len(),
        1,
        "warnings are not invalid: {report:#?}"
    );
    let invalid = &report.invalid[0];
    assert_eq!(
        invalid.error,
        "policies/bad.yaml:7:5: ClusterNetworkPolicy/bad: spec.priority: expected 0..=1000"
    );
    assert_eq!(invalid.object.as_deref(), Some("ClusterNetworkPolicy/bad"));
    assert_eq!(invalid.outcome, InvalidOutcome::ReloadRefused);
    assert_eq!(report.generation, 1, "the last good snapshot stays");
    state.install(snapshot(&policies(false)));
    assert!(state.report().invalid.is_empty());
}

#[test]
fn the_report_reads_back_from_its_json() {
    let state = state(&policies(true));
    state.snapshot().evaluate_counted(&flow(WEB, OUT, 80));
    let report = state.report();
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["policies"][0]["mode"], "enforced");
    assert_eq!(value["policies"][1]["mode"], "staged");
    assert!(
        value["policies"][0]["rules"][0]["last_hit"].is_string(),
        "{value:#}"
    );
}
