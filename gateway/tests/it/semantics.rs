//! The verdict engine against the normative semantics (README.md "Policy semantics", and the
//! network-policy-api: tiers, priorities, Accept/Deny/Pass, peers and ports), one table per rule of the spec. Every case names the deciding tier, policy,
//! rule and action, not only allow/deny, so a verdict that is right for the wrong reason
//! fails too.
//!
//! Choices the spec leaves open, as README.md and the engine document them:
//! - same-priority cluster policies run in name order (then kind: `anp` < `banp` < `cnp`);
//! - a v1alpha1 BaselineAdminNetworkPolicy runs after every Baseline ClusterNetworkPolicy;
//! - when NetworkPolicies isolate a source, an allowed flow names the first policy (in
//!   declaration order) with a matching rule, a denied one names the first isolating policy;
//! - an unknown peer or protocol entry matches every destination (port) in a Deny/Pass rule,
//!   the rule's other fields still apply; an unknown field on the rule itself makes the whole
//!   rule match everything;
//! - a host-network pod or node as source is exempt (allowed), an unknown source gets the
//!   default decision;
//! - DeveloperNetworkPolicies selecting a source are tried by name: the first matching Deny
//!   rule (policy name order, then rule order) decides, else the first matching Accept rule;
//!   the trace shows only that deciding step, or every DeveloperNetworkPolicy as `NoMatch`
//!   when none decides.

use crate::common::*;
use chokepoint::policy::{Decision, Options, Outcome, Snapshot, TierName};
use chokepoint_config::model::{
    Action, ClusterPolicy, Peer, PortMatch, PortRange, Protocol, Rule, Tier,
};
use chokepoint_config::{UnknownFields, load_str};

/// A ClusterNetworkPolicy; `subject` is a YAML flow mapping, each rule a flow mapping.
fn cnp(name: &str, tier: &str, priority: u32, subject: &str, rules: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {{name: {name}}}
spec:
  tier: {tier}
  priority: {priority}
  subject: {subject}
  egress:
"
    );
    for r in rules {
        s.push_str(&format!("  - {r}\n"));
    }
    s.push_str("---\n");
    s
}

/// A NetworkPolicy; `policy_types` and `egress` are left out when `None`.
fn np(
    namespace: &str,
    name: &str,
    pod_selector: &str,
    policy_types: Option<&str>,
    egress: Option<&[&str]>,
) -> String {
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{namespace: {namespace}, name: {name}}}
spec:
  podSelector: {pod_selector}
"
    );
    if let Some(t) = policy_types {
        s.push_str(&format!("  policyTypes: {t}\n"));
    }
    match egress {
        Some([]) => s.push_str("  egress: []\n"),
        Some(rules) => {
            s.push_str("  egress:\n");
            for r in rules {
                s.push_str(&format!("  - {r}\n"));
            }
        }
        None => {}
    }
    s.push_str("---\n");
    s
}

const ALL: &str = "{namespaces: {}}";
const PROD: &str = "{namespaces: {matchLabels: {env: prod}}}";
const EGRESS: Option<&str> = Some("[Egress]");

// ---------------------------------------------------------------------------------------
// Each tier alone

#[test]
fn admin_tier_alone() {
    let policies = cnp(
        "guard",
        "Admin",
        10,
        PROD,
        &[
            r#"{action: Accept, to: [{networks: ["192.0.2.0/25"]}]}"#,
            r#"{action: Deny, to: [{networks: ["192.0.2.0/24"]}]}"#,
        ],
    );
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 443, admin_accept("cnp/guard", 0)), // Accept is final
            tcp(WEB, OUT_HIGH, 443, admin_deny("cnp/guard", 1)), // Deny is final
            tcp(WEB, OUT2, 443, default_allow()),             // no rule matches
            tcp(DEV_WEB, OUT_HIGH, 443, default_allow()),     // dev is no subject
            tcp(PG4, OUT_HIGH, 5432, admin_deny("cnp/guard", 1)), // db is prod too
        ],
    );
    check(
        &snapshot_default_deny(&policies),
        &[
            tcp(WEB, OUT, 443, admin_accept("cnp/guard", 0)), // Accept beats the default
            tcp(WEB, OUT2, 443, default_deny()),              // no rule matches
            tcp(DEV_WEB, OUT, 443, default_deny()),           // not a subject
        ],
    );
}

#[test]
fn network_policy_tier_alone() {
    let policies = np(
        "app",
        "web-egress",
        "{matchLabels: {app: web}}",
        EGRESS,
        Some(&[
            r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}], ports: [{protocol: TCP, port: 443}]}"#,
        ]),
    );
    let cases = [
        tcp(WEB, OUT, 443, np_allow("np/app/web-egress", 0)), // allowed by a rule
        tcp(WEB, OUT, 80, np_isolated("np/app/web-egress")),  // port not allowed
        tcp(WEB, OUT2, 443, np_isolated("np/app/web-egress")), // peer not allowed
        udp(WEB, OUT, 443, np_isolated("np/app/web-egress")), // protocol not allowed
        tcp(WEB, API, 8080, np_isolated("np/app/web-egress")), // pod-to-pod is denied too
    ];
    check(&snapshot(&policies), &cases);
    // NetworkPolicy decides for the pods it isolates, whatever the default.
    check(&snapshot_default_deny(&policies), &cases);
    check(&snapshot(&policies), &[tcp(API, OUT, 80, default_allow())]);
    check(
        &snapshot_default_deny(&policies),
        &[tcp(API, OUT, 443, default_deny())],
    );
}

#[test]
fn baseline_tier_alone() {
    let policies = cnp(
        "base",
        "Baseline",
        10,
        ALL,
        &[
            r#"{action: Accept, to: [{networks: ["192.0.2.0/25"]}]}"#,
            r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#,
        ],
    );
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 80, baseline_accept("cnp/base", 0)), // Accept
            tcp(WEB, OUT_HIGH, 80, baseline_deny("cnp/base", 1)), // Deny
            tcp(WEB, PG4, 5432, baseline_deny("cnp/base", 1)), // pod to pod is IPv4 too
            tcp(DUAL4, OUT6, 80, default_allow()),             // IPv6 is not in 0.0.0.0/0
        ],
    );
    check(
        &snapshot_default_deny(&policies),
        &[
            tcp(WEB, OUT, 80, baseline_accept("cnp/base", 0)), // Accept beats the default
            tcp(DUAL4, OUT6, 80, default_deny()),              // no match
        ],
    );
}

#[test]
fn default_tier_alone() {
    check(
        &snapshot(""),
        &[
            tcp(WEB, OUT, 443, default_allow()),     // no policy at all
            udp(WEB, DNS, 53, default_allow()),      // pod to pod
            tcp(DEV_V6, OUT6, 443, default_allow()), // IPv6
        ],
    );
    check(
        &snapshot_default_deny(""),
        &[
            tcp(WEB, OUT, 443, default_deny()), // locked-down node
            udp(WEB, DNS, 53, default_deny()),  // pod to pod
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Tiers combined

#[test]
fn tiers_are_evaluated_admin_then_network_policy_then_baseline_then_default() {
    let policies = [
        cnp(
            "admin",
            "Admin",
            10,
            ALL,
            &[
                r#"{action: Accept, to: [{networks: ["198.51.100.0/24"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#,
                r#"{action: Deny, to: [{networks: ["198.51.100.0/24"]}]}"#,
                r#"{action: Pass, to: [{networks: ["203.0.113.0/24"]}]}"#,
            ],
        ),
        np(
            "app",
            "isolate-web",
            "{matchLabels: {app: web}}",
            EGRESS,
            Some(&[
                r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}], ports: [{port: 443}]}"#,
                r#"{to: [{ipBlock: {cidr: "198.51.100.0/24"}}]}"#,
            ]),
        ),
        cnp(
            "baseline",
            "Baseline",
            10,
            ALL,
            &[
                r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}]}"#,
                r#"{action: Deny, to: [{networks: ["203.0.113.0/24"]}]}"#,
            ],
        ),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT2, 443, admin_accept("cnp/admin", 0)), // Admin Accept
            tcp(WEB, OUT2, 80, admin_deny("cnp/admin", 1)),    // Admin Deny beats an NP allow
            tcp(WEB, OUT, 443, np_allow("np/app/isolate-web", 0)), // NP allows
            tcp(WEB, OUT, 80, np_isolated("np/app/isolate-web")), // isolation beats Baseline
            tcp(API, OUT, 80, baseline_accept("cnp/baseline", 0)), // not isolated: Baseline decides
            tcp(API, NODE1_EXT, 443, baseline_deny("cnp/baseline", 1)), // Pass, not isolated
            tcp(WEB, NODE1_EXT, 443, np_isolated("np/app/isolate-web")), // Pass, isolated: NP
            tcp(API, OUT6, 443, default_allow()),              // nothing matches: default
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Pass

#[test]
fn admin_pass_skips_the_rest_of_the_admin_tier() {
    let policies = [
        cnp(
            "a-pass",
            "Admin",
            1,
            ALL,
            &[
                r#"{action: Pass, to: [{networks: ["192.0.2.0/24"]}]}"#,
                // A lower rule of the same policy: skipped after the Pass.
                r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#,
            ],
        ),
        // A lower-precedence Admin policy: skipped after the Pass.
        cnp(
            "b-deny",
            "Admin",
            2,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["192.0.2.0/24"]}]}"#],
        ),
        np(
            "dev",
            "dev-allow",
            "{matchLabels: {app: web}}",
            EGRESS,
            Some(&[r#"{to: [{ipBlock: {cidr: "192.0.2.200/32"}}]}"#]),
        ),
        cnp(
            "c-base",
            "Baseline",
            1,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["192.0.2.128/25"]}]}"#],
        ),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 80, default_allow()), // Pass, then nothing matches
            tcp(WEB, OUT_HIGH, 80, baseline_deny("cnp/c-base", 0)), // Pass, then Baseline Deny
            tcp(WEB, OUT2, 80, admin_deny("cnp/a-pass", 1)), // no Pass: lower rule
            tcp(DEV_WEB, OUT_HIGH, 80, np_allow("np/dev/dev-allow", 0)), // Pass, then NP allows
            tcp(DEV_WEB, OUT, 80, np_isolated("np/dev/dev-allow")), // Pass, then NP isolates
            tcp(WEB, OUT6, 80, default_allow()), // IPv6: no rule
        ],
    );
    check(
        &snapshot_default_deny(&policies),
        &[tcp(WEB, OUT, 80, default_deny())],
    );
}

#[test]
fn baseline_pass_goes_to_the_default() {
    let policies = [
        cnp(
            "a-pass",
            "Baseline",
            5,
            ALL,
            &[r#"{action: Pass, to: [{networks: ["192.0.2.0/24"]}]}"#],
        ),
        cnp(
            "b-deny",
            "Baseline",
            6,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#],
        ),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 80, default_allow()), // Pass skips b-deny
            tcp(WEB, OUT2, 80, baseline_deny("cnp/b-deny", 0)), // no Pass
        ],
    );
    check(
        &snapshot_default_deny(&policies),
        &[tcp(WEB, OUT, 80, default_deny())],
    );
}

// ---------------------------------------------------------------------------------------
// Order

#[test]
fn priority_ascending_then_name() {
    let policies = [
        // Declared out of order on purpose: declaration order must not matter.
        cnp(
            "beta",
            "Admin",
            10,
            ALL,
            &[
                r#"{action: Deny, to: [{networks: ["198.51.100.0/24"]}]}"#,
                r#"{action: Deny, to: [{networks: ["2001:db8::/32"]}]}"#,
            ],
        ),
        cnp(
            "alpha",
            "Admin",
            10,
            ALL,
            &[
                r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}]}"#,
                r#"{action: Accept, to: [{networks: ["198.51.100.0/24"]}]}"#,
            ],
        ),
        cnp(
            "omega",
            "Admin",
            1000,
            ALL,
            &[r#"{action: Accept, to: [{networks: ["2001:db8::/32", "203.0.113.0/24"]}]}"#],
        ),
        cnp(
            "zeta",
            "Admin",
            5,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["192.0.2.0/24"]}]}"#],
        ),
        cnp(
            "last-declared",
            "Admin",
            0,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["203.0.113.0/24"]}]}"#],
        ),
        cnp(
            "b-base",
            "Baseline",
            3,
            ALL,
            &[r#"{action: Accept, to: [{networks: ["10.0.0.0/8"]}]}"#],
        ),
        cnp(
            "a-base",
            "Baseline",
            3,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["10.0.2.0/24"]}]}"#],
        ),
        cnp(
            "c-base",
            "Baseline",
            2,
            ALL,
            &[r#"{action: Accept, to: [{networks: ["10.0.2.10/32"]}]}"#],
        ),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 80, admin_deny("cnp/zeta", 0)), // priority beats name
            tcp(WEB, OUT2, 80, admin_accept("cnp/alpha", 1)), // same priority: name order
            tcp(DUAL4, OUT6, 80, admin_deny("cnp/beta", 1)), // 10 before 1000
            tcp(WEB, NODE1_EXT, 80, admin_deny("cnp/last-declared", 0)), // priority 0 first
            tcp(WEB, PG4, 80, baseline_accept("cnp/c-base", 0)), // Baseline: priority
            tcp(WEB, "10.0.2.99", 80, baseline_deny("cnp/a-base", 0)), // Baseline: name
            tcp(WEB, DEV_DB, 80, baseline_accept("cnp/b-base", 0)), // Baseline: next name
        ],
    );
}

#[test]
fn first_matching_rule_wins_inside_a_policy() {
    let policies = cnp(
        "ordered",
        "Admin",
        10,
        ALL,
        &[
            r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#,
            r#"{action: Deny, to: [{networks: ["192.0.2.0/24"]}]}"#,
            r#"{action: Accept, to: [{networks: ["0.0.0.0/0"]}]}"#,
            r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#,
        ],
    );
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 443, admin_accept("cnp/ordered", 0)), // rule 0
            tcp(WEB, OUT, 80, admin_deny("cnp/ordered", 1)),    // rule 1
            udp(WEB, OUT, 443, admin_deny("cnp/ordered", 1)),   // rule 0 is TCP only
            tcp(WEB, OUT2, 80, admin_accept("cnp/ordered", 2)), // rule 2 shadows rule 3
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Subjects

#[test]
fn subjects_select_by_namespace_and_pod_labels() {
    let policies = [
        cnp(
            "exprs",
            "Admin",
            1,
            "{namespaces: {matchExpressions: [{key: team, operator: In, values: [shop, data]}, {key: env, operator: NotIn, values: [dev]}]}}",
            &[r#"{action: Deny, to: [{networks: ["192.0.2.0/24"]}]}"#],
        ),
        cnp(
            "no-team",
            "Admin",
            2,
            "{namespaces: {matchExpressions: [{key: team, operator: DoesNotExist}]}}",
            &[r#"{action: Deny, to: [{networks: ["198.51.100.0/24"]}]}"#],
        ),
        cnp(
            "has-app",
            "Admin",
            3,
            "{pods: {namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: Exists}]}}}",
            &[r#"{action: Deny, to: [{networks: ["203.0.113.0/24"]}]}"#],
        ),
        cnp(
            "by-name",
            "Admin",
            4,
            "{namespaces: {matchLabels: {kubernetes.io/metadata.name: dev}}}",
            &[r#"{action: Deny, to: [{networks: ["2001:db8::/32"]}]}"#],
        ),
        // v1alpha2: `pods` without namespaceSelector selects in every namespace.
        cnp(
            "web-anywhere",
            "Admin",
            5,
            "{pods: {podSelector: {matchLabels: {app: web}}}}",
            &[r#"{action: Deny, to: [{networks: ["10.0.2.0/24"]}]}"#],
        ),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 80, admin_deny("cnp/exprs", 0)), // In and NotIn
            tcp(PG4, OUT, 80, admin_deny("cnp/exprs", 0)), // In (second value)
            tcp(DEV_WEB, OUT, 80, default_allow()),        // NotIn excludes dev
            tcp(DNS, OUT2, 80, admin_deny("cnp/no-team", 0)), // DoesNotExist
            tcp(WEB, OUT2, 80, default_allow()),           // DoesNotExist excludes
            tcp(DEV_DB, NODE1_EXT, 80, admin_deny("cnp/has-app", 0)), // Exists
            tcp(DNS, NODE1_EXT, 80, default_allow()),      // Exists excludes
            tcp(DEV_V6, OUT6, 80, admin_deny("cnp/by-name", 0)), // automatic name label
            tcp(DUAL6, OUT6, 80, default_allow()),         // name label excludes
            tcp(WEB, PG4, 80, admin_deny("cnp/web-anywhere", 0)), // pods in app
            tcp(DEV_WEB, PG4, 80, admin_deny("cnp/web-anywhere", 0)), // pods in dev
            tcp(API, PG4, 80, default_allow()),            // other pods
        ],
    );
}

// ---------------------------------------------------------------------------------------
// NetworkPolicy v1 specifics

#[test]
fn network_policy_types_defaults() {
    let policies = [
        // Only ingress rules and no policyTypes: isolates ingress only.
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: app, name: ingress-only}
spec:
  podSelector: {}
  ingress: [{}]
---
"
        .to_owned(),
        // policyTypes [Ingress]: the egress rules are ignored, egress is not isolated.
        np(
            "app",
            "explicit-ingress",
            "{}",
            Some("[Ingress]"),
            Some(&[r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}]}"#]),
        ),
        // policyTypes [Egress] and no rules: deny all.
        np("dev", "deny-all", "{}", EGRESS, None),
        // egress: [{}]: allow all.
        np("db", "allow-all", "{}", EGRESS, Some(&["{}"])),
        // No policyTypes but egress rules: isolates egress.
        np(
            "kube-system",
            "implicit",
            "{matchLabels: {k8s-app: kube-dns}}",
            None,
            Some(&[r#"{to: [{ipBlock: {cidr: "198.51.100.0/24"}}]}"#]),
        ),
    ]
    .concat();
    let s = snapshot_default_deny(&policies);
    check(
        &s,
        &[
            tcp(WEB, OUT, 80, default_deny()), // ingress-only does not isolate egress
            tcp(API, OUT, 80, default_deny()), // [Ingress] ignores egress rules
            tcp(DEV_WEB, OUT, 80, np_isolated("np/dev/deny-all")), // [Egress] with no rules denies
            tcp(DEV_WEB, DEV_DB, 5432, np_isolated("np/dev/deny-all")), // ... pod to pod too
            tcp(DEV_V6, OUT6, 443, np_isolated("np/dev/deny-all")), // ... IPv6 too
            tcp(DEV_WEB, DEV_WEB, 80, hairpin()), // ... not the pod itself
            tcp(PG4, OUT, 80, np_allow("np/db/allow-all", 0)), // egress [{}] allows all
            sctp(PG6, OUT6, 9, np_allow("np/db/allow-all", 0)), // ... every protocol
            tcp(DNS, OUT2, 80, np_allow("np/kube-system/implicit", 0)), // implicit Egress allows
            tcp(DNS, OUT, 80, np_isolated("np/kube-system/implicit")), // implicit Egress isolates
        ],
    );
    let (_, trace) = s.explain(&tcp(WEB, OUT, 80, default_deny()).flow());
    assert_eq!(
        steps(&s, &trace),
        vec![
            tier_step(TierName::NetworkPolicy, Outcome::NotIsolated),
            tier_step(TierName::Default, Outcome::Default)
        ]
    );
}

#[test]
fn network_policies_are_a_union_within_the_source_namespace() {
    let policies = [
        np(
            "app",
            "a",
            "{matchLabels: {app: web}}",
            EGRESS,
            Some(&[r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}], ports: [{port: 443}]}"#]),
        ),
        np(
            "app",
            "b",
            "{}",
            EGRESS,
            Some(&[
                "{ports: [{port: 53, protocol: UDP}]}",
                r#"{to: [{ipBlock: {cidr: "198.51.100.0/24"}}]}"#,
            ]),
        ),
        // Another namespace's policy selects nothing here, even with `podSelector: {}`.
        np("dev", "c", "{}", EGRESS, Some(&["{}"])),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 443, np_allow("np/app/a", 0)),   // a allows
            udp(WEB, DNS, 53, np_allow("np/app/b", 0)),    // b allows (no `to`: anywhere)
            tcp(WEB, OUT2, 22, np_allow("np/app/b", 1)),   // b allows (no `ports`: any)
            tcp(WEB, OUT, 80, np_isolated("np/app/a")),    // neither allows
            tcp(API, OUT, 443, np_isolated("np/app/b")),   // api is isolated by b only
            udp(API, OUT6, 53, np_allow("np/app/b", 0)),   // b allows api
            tcp(DEV_WEB, OUT, 1, np_allow("np/dev/c", 0)), // dev allowed by c
            tcp(PG4, OUT, 80, default_allow()),            // db not isolated
        ],
    );
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_and_in_two_peers_is_or() {
    let policies = [
        np(
            "app",
            "and",
            "{matchLabels: {app: web}}",
            EGRESS,
            Some(&[
                "{to: [{namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: db}}}]}",
            ]),
        ),
        np(
            "app",
            "or",
            "{matchLabels: {app: api}}",
            EGRESS,
            Some(&[
                "{to: [{namespaceSelector: {matchLabels: {env: dev}}}, {podSelector: {matchLabels: {app: web}}}]}",
            ]),
        ),
        // podSelector alone: pods of the policy's own namespace only.
        np(
            "app",
            "own",
            "{matchLabels: {app: dual}}",
            EGRESS,
            Some(&["{to: [{podSelector: {matchLabels: {app: db}}}]}"]),
        ),
        // namespaceSelector {} alone: every pod, but no outside host, node or host-network pod.
        np(
            "dev",
            "every-pod",
            "{matchLabels: {app: db}}",
            EGRESS,
            Some(&["{to: [{namespaceSelector: {}}]}"]),
        ),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, PG4, 5432, np_allow("np/app/and", 0)), // AND: prod and db
            tcp(WEB, PG6, 5432, np_allow("np/app/and", 0)), // AND: prod and db (IPv6)
            tcp(WEB, DEV_DB, 5432, np_isolated("np/app/and")), // AND: db but not prod
            tcp(WEB, API, 8080, np_isolated("np/app/and")), // AND: prod but not db
            tcp(API, DEV_DB, 5432, np_allow("np/app/or", 0)), // OR: namespace dev
            tcp(API, DEV_V6, 80, np_allow("np/app/or", 0)), // OR: namespace dev (IPv6)
            tcp(API, WEB, 80, np_allow("np/app/or", 0)),    // OR: app=web in app
            tcp(API, PG4, 5432, np_isolated("np/app/or")),  // OR: neither
            tcp(API, NODE1, 80, np_isolated("np/app/or")),  // OR: not a host-network pod
            tcp(DUAL4, PG4, 5432, np_isolated("np/app/own")), // podSelector alone: own namespace
            tcp(DUAL4, DEV_DB, 5432, np_isolated("np/app/own")), // ... not dev either
            tcp(DEV_DB, PG4, 5432, np_allow("np/dev/every-pod", 0)), // namespaceSelector {}: a pod
            tcp(DEV_DB, DNS, 53, np_allow("np/dev/every-pod", 0)), // ... any namespace
            tcp(DEV_DB, OUT, 80, np_isolated("np/dev/every-pod")), // ... not outside
            tcp(DEV_DB, NODE2, 80, np_isolated("np/dev/every-pod")), // ... not a node
            tcp(DEV_DB, NODE1, 80, np_isolated("np/dev/every-pod")), // ... not host-network
        ],
    );
}

#[test]
fn ip_block_with_except() {
    let policies = np(
        "app",
        "blocks",
        "{matchLabels: {app: web}}",
        EGRESS,
        Some(&[
            r#"{to: [{ipBlock: {cidr: "10.0.0.0/16", except: ["10.0.2.0/24"]}}]}"#,
            r#"{to: [{ipBlock: {cidr: "192.0.2.0/24", except: ["192.0.2.128/25"]}}, {ipBlock: {cidr: "fd00::/16", except: ["fd00:2::/32"]}}]}"#,
        ]),
    );
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, API, 8080, np_allow("np/app/blocks", 0)), // inside
            tcp(WEB, DEV_DB, 5432, np_allow("np/app/blocks", 0)), // inside, other namespace
            tcp(WEB, PG4, 5432, np_isolated("np/app/blocks")), // in except
            tcp(WEB, NODE1, 80, np_isolated("np/app/blocks")), // outside the cidr
            tcp(WEB, OUT, 80, np_allow("np/app/blocks", 1)),   // second rule
            tcp(WEB, OUT_HIGH, 80, np_isolated("np/app/blocks")), // second rule, except
            tcp(WEB, DUAL6, 80, np_allow("np/app/blocks", 1)), // IPv6 peer
            tcp(WEB, PG6, 5432, np_isolated("np/app/blocks")), // IPv6 except
            tcp(WEB, OUT6, 80, np_isolated("np/app/blocks")),  // IPv6 outside
        ],
    );
}

#[test]
fn port_ranges_are_inclusive() {
    let policies = [
        np(
            "app",
            "ranges",
            "{matchLabels: {app: web}}",
            EGRESS,
            Some(&[
                r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}], ports: [{protocol: TCP, port: 8000, endPort: 8100}, {protocol: UDP, port: 5000, endPort: 5001}, {port: 443}]}"#,
            ]),
        ),
        cnp(
            "ranges",
            "Admin",
            10,
            "{pods: {podSelector: {matchLabels: {app: api}}}}",
            &[
                r#"{action: Accept, to: [{networks: ["0.0.0.0/0"]}], protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 8100}}}}, {sctp: {destinationPort: {number: 9000}}}]}"#,
                r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#,
            ],
        ),
    ]
    .concat();
    let np_ = "np/app/ranges";
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 8000, np_allow(np_, 0)), // endPort: first
            tcp(WEB, OUT, 8050, np_allow(np_, 0)), // endPort: middle
            tcp(WEB, OUT, 8100, np_allow(np_, 0)), // endPort: last
            tcp(WEB, OUT, 7999, np_isolated(np_)), // endPort: below
            tcp(WEB, OUT, 8101, np_isolated(np_)), // endPort: above
            udp(WEB, OUT, 8050, np_isolated(np_)), // endPort: TCP range, UDP flow
            udp(WEB, OUT, 5000, np_allow(np_, 0)), // UDP range first
            udp(WEB, OUT, 5001, np_allow(np_, 0)), // UDP range last
            udp(WEB, OUT, 5002, np_isolated(np_)), // UDP range above
            tcp(WEB, OUT, 5000, np_isolated(np_)), // UDP range, TCP flow
            tcp(WEB, OUT, 443, np_allow(np_, 0)),  // protocol defaults to TCP
            udp(WEB, OUT, 443, np_isolated(np_)),  // ... so not UDP
            sctp(WEB, OUT, 443, np_isolated(np_)), // ... nor SCTP
            tcp(API, OUT, 8000, admin_accept("cnp/ranges", 0)), // CNP range: start
            tcp(API, OUT, 8100, admin_accept("cnp/ranges", 0)), // CNP range: end
            tcp(API, OUT, 7999, admin_deny("cnp/ranges", 1)), // CNP range: below
            tcp(API, OUT, 8101, admin_deny("cnp/ranges", 1)), // CNP range: above
            udp(API, OUT, 8050, admin_deny("cnp/ranges", 1)), // CNP range is TCP
            sctp(API, OUT, 9000, admin_accept("cnp/ranges", 0)), // CNP SCTP number
            tcp(API, OUT, 9000, admin_deny("cnp/ranges", 1)), // CNP SCTP number, TCP flow
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Named ports

#[test]
fn named_ports_resolve_against_the_destination_pod_with_its_protocol() {
    let policies = [
        cnp(
            "named",
            "Admin",
            10,
            "{pods: {podSelector: {matchLabels: {app: api}}}}",
            &[
                "{action: Accept, to: [{namespaces: {}}], protocols: [{destinationNamedPort: web}]}",
                "{action: Accept, to: [{namespaces: {}}], protocols: [{destinationNamedPort: dns}]}",
                "{action: Deny, to: [{namespaces: {}}]}",
            ],
        ),
        np(
            "app",
            "named",
            "{matchLabels: {app: web}}",
            EGRESS,
            Some(&[
                "{ports: [{protocol: UDP, port: dns}]}",
                // TCP by default: coredns's `dns` is a UDP port, so this never matches.
                "{ports: [{port: dns}]}",
                "{ports: [{port: pg}]}",
            ]),
        ),
    ]
    .concat();
    let named = "cnp/named";
    check(
        &snapshot(&policies),
        &[
            tcp(API, WEB, 80, admin_accept(named, 0)), // web is 80/TCP on app/web
            udp(API, WEB, 80, admin_deny(named, 2)),   // web is TCP, not UDP
            tcp(API, WEB, 9090, admin_deny(named, 2)), // another port of app/web
            tcp(API, DEV_WEB, 80, admin_deny(named, 2)), // web is 8080 on dev/web
            tcp(API, DEV_WEB, 8080, admin_accept(named, 0)), // ... so 8080 matches
            tcp(API, PG4, 8080, admin_accept(named, 0)), // web on db/pg (IPv4)
            tcp(API, PG6, 8080, admin_accept(named, 0)), // web on db/pg (IPv6)
            udp(API, DNS, 53, admin_accept(named, 1)), // dns is 53/UDP
            tcp(API, DNS, 53, admin_deny(named, 2)),   // 53/TCP is dns-tcp, not dns
            tcp(API, NODE1, 80, default_allow()),      // host-network pods are no peers
            udp(WEB, DNS, 53, np_allow("np/app/named", 0)), // NP: UDP named port
            tcp(WEB, DNS, 53, np_isolated("np/app/named")), // NP: TCP named port vs UDP port
            tcp(WEB, PG4, 5432, np_allow("np/app/named", 2)), // NP: pg on db/pg
            tcp(WEB, DEV_DB, 5432, np_allow("np/app/named", 2)), // NP: pg on dev/db
            tcp(WEB, API, 5432, np_isolated("np/app/named")), // NP: no pg on app/api
            tcp(WEB, OUT, 5432, np_isolated("np/app/named")), // NP: no pod outside
        ],
    );
}

// ---------------------------------------------------------------------------------------
// networks and nodes peers

#[test]
fn networks_match_pod_and_node_ips() {
    let policies = cnp(
        "internal",
        "Admin",
        10,
        "{namespaces: {matchLabels: {kubernetes.io/metadata.name: app}}}",
        &[
            r#"{action: Deny, to: [{networks: ["10.0.2.0/24", "172.18.0.0/16"]}]}"#,
            r#"{action: Accept, to: [{networks: ["fd00::/8"]}]}"#,
        ],
    );
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, PG4, 5432, admin_deny("cnp/internal", 0)), // a pod IP
            tcp(WEB, NODE1, 10250, admin_deny("cnp/internal", 0)), // node, host-net pod
            tcp(WEB, NODE2, 10250, admin_deny("cnp/internal", 0)), // another node
            tcp(WEB, PG6, 5432, admin_accept("cnp/internal", 1)), // IPv6 pod IP
            tcp(DUAL6, NODE1_V6, 10250, admin_accept("cnp/internal", 1)), // IPv6 node IP
            tcp(WEB, DEV_DB, 5432, default_allow()),            // not in the list
            tcp(WEB, OUT, 80, default_allow()),                 // outside
        ],
    );
}

#[test]
fn nodes_peers_match_every_address_of_the_node() {
    let policies = cnp(
        "nodes",
        "Admin",
        10,
        ALL,
        &[
            "{action: Deny, to: [{nodes: {matchLabels: {role: worker}}}]}",
            "{action: Accept, to: [{nodes: {}}]}",
        ],
    );
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, NODE1, 22, admin_deny("cnp/nodes", 0)), // InternalIP
            tcp(DUAL6, NODE1_V6, 22, admin_deny("cnp/nodes", 0)), // IPv6 InternalIP
            tcp(WEB, NODE1_EXT, 22, admin_deny("cnp/nodes", 0)), // ExternalIP
            tcp(WEB, NODE2, 22, admin_accept("cnp/nodes", 1)), // another node
            tcp(WEB, PG4, 22, default_allow()),              // pods are not nodes
            tcp(WEB, OUT, 22, default_allow()),              // outside hosts neither
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Exemptions: hairpin, host network, unknown sources

#[test]
fn hairpin_is_never_subject_to_policy() {
    let deny_all = cnp(
        "deny-all",
        "Admin",
        0,
        ALL,
        &[r#"{action: Deny, to: [{networks: ["0.0.0.0/0", "::/0"]}]}"#],
    );
    check(
        &snapshot_default_deny(&deny_all),
        &[
            tcp(WEB, WEB, 80, hairpin()),                         // own IP
            udp(DNS, DNS, 53, hairpin()),                         // own IP, UDP
            tcp(DUAL4, DUAL4, 80, hairpin()),                     // dual-stack: own IPv4
            tcp(DUAL4, DUAL6, 80, hairpin()),                     // dual-stack: own other IP
            tcp(DUAL6, DUAL4, 80, hairpin()),                     // dual-stack: IPv6 to IPv4
            tcp(DEV_V6, DEV_V6, 80, hairpin()),                   // IPv6-only
            tcp(WEB, API, 8080, admin_deny("cnp/deny-all", 0)),   // another pod
            tcp(WEB, DEV_WEB, 80, admin_deny("cnp/deny-all", 0)), // same labels, other pod
        ],
    );
    let isolated = np("app", "deny-all", "{}", EGRESS, None);
    check(
        &snapshot(&isolated),
        &[
            tcp(WEB, WEB, 80, hairpin()), // own IP under NP deny-all
            tcp(WEB, API, 8080, np_isolated("np/app/deny-all")), // another pod
        ],
    );
}

#[test]
fn host_network_pods_are_never_subjects_nor_pod_peers() {
    let policies = [
        cnp(
            "all",
            "Admin",
            10,
            ALL,
            &[
                "{action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]}",
                "{action: Deny, to: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]}",
                "{action: Accept, to: [{nodes: {matchLabels: {role: worker}}}]}",
                r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#,
            ],
        ),
        cnp(
            "host-pods",
            "Admin",
            1,
            "{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}",
            &[r#"{action: Deny, to: [{networks: ["198.51.100.0/24"]}]}"#],
        ),
        np("kube-system", "deny-all", "{}", EGRESS, None),
    ]
    .concat();
    let cases = [
        tcp(NODE1, OUT, 80, host_network_source()), // host-network pod as source
        tcp(NODE1, WEB, 80, host_network_source()), // ... to a pod
        tcp(NODE2, OUT2, 80, host_network_source()), // a node without such pod
        tcp(NODE1_EXT, OUT, 80, host_network_source()), // node ExternalIP as source
        tcp(API, DEV_WEB, 80, admin_deny("cnp/all", 0)), // app=web pod is a peer
        tcp(WEB, OUT2, 80, admin_deny("cnp/host-pods", 0)), // app=web pod is a subject
        udp(API, DNS, 53, admin_deny("cnp/all", 1)), // kube-system pod is a peer
        tcp(API, NODE1, 80, admin_accept("cnp/all", 2)), // host-network app=web pod is no peer
        tcp(API, NODE2, 80, admin_deny("cnp/all", 3)), // a node is no pod
    ];
    check(&snapshot(&policies), &cases);
    // Exempt regardless of the default: the node's own traffic is not the gateway's to police.
    check(&snapshot_default_deny(&policies), &cases);
}

#[test]
fn unknown_sources_get_the_default() {
    let deny_all = cnp(
        "deny-all",
        "Admin",
        0,
        ALL,
        &[r#"{action: Deny, to: [{networks: ["0.0.0.0/0", "::/0"]}]}"#],
    );
    check(
        &snapshot(&deny_all),
        &[
            tcp(OUT, WEB, 80, unknown_source(Decision::Allow)), // outside host
            tcp("10.0.1.99", OUT, 80, unknown_source(Decision::Allow)), // unused pod-range IP
            tcp(OUT6, DUAL6, 80, unknown_source(Decision::Allow)), // IPv6
        ],
    );
    check(
        &snapshot_default_deny(&deny_all),
        &[
            tcp(OUT, WEB, 80, unknown_source(Decision::Deny)), // outside host
            tcp("10.0.1.99", OUT, 80, unknown_source(Decision::Deny)), // unused pod-range IP
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Fail closed (parts this build does not know)

fn fail_closed_world(policies: Vec<ClusterPolicy>) -> Snapshot {
    let mut w = load(INVENTORY);
    w.cluster_policies = policies;
    Snapshot::compile(&w, Options::default())
}

fn unknown_rule(action: Action, peers: Vec<Peer>, protocols: Option<Vec<PortMatch>>) -> Rule {
    Rule {
        unknown_fields: true,
        ..rule(action, peers, protocols)
    }
}

#[test]
fn unknown_parts_fail_closed() {
    let s = fail_closed_world(vec![
        cluster_policy(
            "accept-unknown",
            Tier::Admin,
            1,
            everyone(),
            vec![
                // Matches nothing.
                rule(Action::Accept, vec![Peer::Unknown], None),
                // The known peer still matches.
                rule(
                    Action::Accept,
                    vec![Peer::Unknown, networks(&["192.0.2.0/24"])],
                    Some(vec![tcp_port(443)]),
                ),
                // Matches nothing.
                rule(
                    Action::Accept,
                    vec![networks(&["198.51.100.0/24"])],
                    Some(vec![PortMatch::Unknown]),
                ),
                // The known protocol entry still matches.
                rule(
                    Action::Accept,
                    vec![networks(&["198.51.100.0/24"])],
                    Some(vec![PortMatch::Unknown, tcp_port(8443)]),
                ),
                // Matches nothing although its peer and port would.
                unknown_rule(Action::Accept, vec![networks(&["0.0.0.0/0"])], None),
            ],
        ),
        cluster_policy(
            "deny-unknown",
            Tier::Admin,
            2,
            everyone(),
            vec![
                // Every destination, port 22.
                rule(Action::Deny, vec![Peer::Unknown], Some(vec![tcp_port(22)])),
                // Every port to 203.0.113.0/24.
                rule(
                    Action::Deny,
                    vec![networks(&["203.0.113.0/24"])],
                    Some(vec![PortMatch::Unknown]),
                ),
                // Everything, whatever its peers and ports say.
                unknown_rule(
                    Action::Deny,
                    vec![networks(&["10.0.0.0/8"])],
                    Some(vec![PortMatch::Port {
                        protocol: Protocol::Udp,
                        ports: PortRange::single(5353),
                    }]),
                ),
            ],
        ),
    ]);
    check(
        &s,
        &[
            tcp(WEB, OUT, 443, admin_accept("cnp/accept-unknown", 1)), // known peer matches
            tcp(WEB, OUT2, 8443, admin_accept("cnp/accept-unknown", 3)), // known port matches
            tcp(WEB, OUT2, 22, admin_deny("cnp/deny-unknown", 0)),     // unknown peer: any dst
            tcp(DUAL6, OUT6, 22, admin_deny("cnp/deny-unknown", 0)),   // ... IPv6 too
            udp(WEB, NODE1_EXT, 22, admin_deny("cnp/deny-unknown", 1)), // protocols still apply
            tcp(WEB, NODE1_EXT, 9999, admin_deny("cnp/deny-unknown", 1)), // unknown port: any
            tcp(WEB, OUT, 80, admin_deny("cnp/deny-unknown", 2)),      // unknown rule: all
            tcp(WEB, OUT2, 443, admin_deny("cnp/deny-unknown", 2)), // ... nothing Accept-ed before
            sctp(DUAL6, OUT6, 1, admin_deny("cnp/deny-unknown", 2)), // ... any protocol
        ],
    );

    let pass = |r: Rule| {
        fail_closed_world(vec![
            cluster_policy("pass-unknown", Tier::Admin, 1, everyone(), vec![r]),
            cluster_policy(
                "later",
                Tier::Admin,
                2,
                everyone(),
                vec![rule(Action::Deny, vec![networks(&["0.0.0.0/0"])], None)],
            ),
            cluster_policy(
                "base",
                Tier::Baseline,
                1,
                everyone(),
                vec![rule(Action::Deny, vec![networks(&["192.0.2.0/24"])], None)],
            ),
        ])
    };
    let pass_cases = [
        tcp(WEB, OUT, 80, baseline_deny("cnp/base", 0)), // passed to Baseline
        tcp(WEB, OUT2, 80, default_allow()),             // passed to the default
    ];
    check(
        &pass(rule(Action::Pass, vec![Peer::Unknown], None)),
        &pass_cases,
    );
    check(
        &pass(rule(
            Action::Pass,
            vec![networks(&["203.0.113.0/24"])],
            Some(vec![PortMatch::Unknown]),
        )),
        &[tcp(WEB, OUT, 80, admin_deny("cnp/later", 0))],
    );
    check(
        &pass(unknown_rule(
            Action::Pass,
            vec![networks(&["203.0.113.0/24"])],
            None,
        )),
        &pass_cases,
    );
}

/// The same through the loader: a cluster object with a newer field fails closed.
#[test]
fn unknown_fields_read_from_a_cluster_fail_closed() {
    let policies = cnp(
        "newer",
        "Admin",
        10,
        ALL,
        &[
            r#"{action: Accept, to: [{networks: ["192.0.2.0/24"], futurePeerField: x}]}"#,
            r#"{action: Deny, to: [{futurePeer: {a: b}}], protocols: [{tcp: {destinationPort: {number: 22}}}]}"#,
            r#"{action: Deny, to: [{networks: ["198.51.100.0/24"]}], futureRuleField: true}"#,
        ],
    );
    let loaded = load_str(
        std::path::Path::new("t.yaml"),
        &format!("{INVENTORY}\n---\n{policies}"),
        UnknownFields::FailClosed,
    );
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let s = Snapshot::compile(&loaded.world, Options::default());
    check(
        &s,
        &[
            tcp(WEB, OUT, 22, admin_deny("cnp/newer", 1)), // unknown peer in Accept matches nothing
            tcp(WEB, PG4, 22, admin_deny("cnp/newer", 1)), // unknown peer: any dst
            tcp(WEB, OUT, 80, admin_deny("cnp/newer", 2)), // unknown rule field in Deny: everything
        ],
    );
}

// ---------------------------------------------------------------------------------------
// domainNames

#[test]
fn domain_names_match_the_names_of_the_destination() {
    let policies = cnp(
        "fqdn",
        "Admin",
        10,
        ALL,
        &[
            r#"{action: Accept, to: [{domainNames: ["api.example.com", "*.storage.example.net", "Mixed.Example.ORG."]}]}"#,
            r#"{action: Deny, to: [{networks: ["0.0.0.0/0", "::/0"]}]}"#,
        ],
    );
    let yes = || admin_accept("cnp/fqdn", 0);
    let no = || admin_deny("cnp/fqdn", 1);
    check(
        &snapshot(&policies),
        &[
            named(WEB, OUT, 443, &["api.example.com"], yes()), // exact
            named(WEB, OUT, 443, &["API.Example.COM"], yes()), // case
            named(WEB, OUT, 443, &["api.example.com."], yes()), // trailing dot
            named(WEB, OUT, 443, &["api.example.com.."], no()), // two trailing dots
            named(WEB, OUT, 443, &["www.api.example.com"], no()), // exact is not a suffix
            named(WEB, OUT, 443, &["example.com"], no()),      // parent domain
            named(WEB, OUT, 443, &["a.storage.example.net"], yes()), // wildcard: one label
            named(WEB, OUT, 443, &["a.b.c.storage.example.net"], yes()), // wildcard: three labels
            named(WEB, OUT, 443, &["A.STORAGE.Example.NET."], yes()), // wildcard: case and dot
            named(WEB, OUT, 443, &["storage.example.net"], no()), // wildcard needs a label
            named(WEB, OUT, 443, &["evilstorage.example.net"], no()), // wildcard: whole labels
            named(WEB, OUT, 443, &["mixed.example.org"], yes()), // pattern case and dot
            named(WEB, OUT, 443, &[], no()),                   // no names
            named(WEB, OUT, 443, &["other.org", "api.example.com"], yes()), // any of the names
            named(DUAL6, OUT6, 443, &["api.example.com"], yes()), // IPv6 destination
            named(WEB, PG4, 5432, &["a.storage.example.net"], yes()), // a pod destination
        ],
    );
}

/// A verdict says when the deciding Accept rule matched only by name (the connection must then
/// show a fitting SNI/Host).
#[test]
fn a_verdict_says_when_it_was_accepted_by_name_only() {
    let policies = cnp(
        "fqdn",
        "Admin",
        10,
        ALL,
        &[
            r#"{action: Accept, to: [{domainNames: ["*.example.com"]}, {networks: ["198.51.100.0/24"]}]}"#,
            r#"{action: Accept, to: [{domainNames: ["api.example.org"]}]}"#,
        ],
    ) + &dnp(
        "app",
        "sites",
        "{}",
        &[r#"{name: stripe, action: Accept, to: [{domainNames: ["api.stripe.com"]}]}"#],
    );
    let snapshot = snapshot(&policies);
    let flow = |dst: &'static str, names: &'static [&'static str]| chokepoint::policy::Flow {
        src: WEB.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 443,
        names,
        addressed: None,
    };
    // By name only.
    let v = snapshot.evaluate(&flow(OUT, &["www.example.com"]));
    assert!(v.is_allowed() && v.by_domain_names, "{v:?}");
    assert_eq!(v.decided_by.rule_index, Some(0));
    // The same rule by address: no name is needed, whatever names the IP has.
    let v = snapshot.evaluate(&flow(OUT2, &["www.example.com"]));
    assert!(v.is_allowed() && !v.by_domain_names, "{v:?}");
    // The second rule.
    let v = snapshot.evaluate(&flow(OUT, &["api.example.org"]));
    assert!(v.by_domain_names && v.decided_by.rule_index == Some(1));
    // A DeveloperNetworkPolicy rule, too.
    let v = snapshot.evaluate(&flow(OUT, &["api.stripe.com"]));
    assert!(v.by_domain_names, "{v:?}");
    assert_eq!(v.decided_by.tier, TierName::NetworkPolicy);
    // Not by a rule.
    let v = snapshot.evaluate(&flow(OUT, &[]));
    assert!(!v.by_domain_names);
    assert_eq!(snapshot.source_namespace(WEB.parse().unwrap()), Some("app"));
    assert!(snapshot.uses_domain_names());
}

/// Name rules apply to a pod when a policy selecting it has a `domainNames` peer (its DNS
/// answers for HTTPS/SVCB records are withheld then); pods of other namespaces are unaffected.
#[test]
fn name_rules_apply_to_the_pods_their_policies_select() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let by_address = cnp(
        "nets",
        "Baseline",
        10,
        ALL,
        &[r#"{action: Accept, to: [{networks: ["198.51.100.0/24"]}]}"#],
    );
    let named = dnp(
        "app",
        "sites",
        "{matchLabels: {app: web}}",
        &[r#"{name: stripe, action: Accept, to: [{domainNames: ["api.stripe.com"]}]}"#],
    );
    let s = snapshot(&(by_address.clone() + &named));
    assert!(s.names_apply_to(ip(WEB)));
    assert!(!s.names_apply_to(ip(API)), "app/api is not selected");
    assert!(!s.names_apply_to(ip(DEV_WEB)), "another namespace");
    assert!(!s.names_apply_to(ip("192.0.2.99")), "not a pod");
    let cluster = cnp(
        "fqdn",
        "Admin",
        10,
        ALL,
        &[r#"{action: Accept, to: [{domainNames: ["*.example.com"]}]}"#],
    );
    let s = snapshot(&cluster);
    assert!(s.names_apply_to(ip(WEB)) && s.names_apply_to(ip(DEV_WEB)));
    assert!(!snapshot(&by_address).names_apply_to(ip(WEB)));
}

// ---------------------------------------------------------------------------------------
// DeveloperNetworkPolicy: explicit Accept/Deny in the NetworkPolicy tier, before NetworkPolicy v1

/// A DeveloperNetworkPolicy; `pod_selector` is a YAML flow mapping, each rule a flow mapping.
fn dnp(namespace: &str, name: &str, pod_selector: &str, rules: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {{namespace: {namespace}, name: {name}}}
spec:
  subject: {{podSelector: {pod_selector}}}
  egress:
"
    );
    for r in rules {
        s.push_str(&format!("  - {r}\n"));
    }
    s.push_str("---\n");
    s
}

const WEB_PODS: &str = "{matchLabels: {app: web}}";

#[test]
fn developer_policies_decide_only_what_they_match() {
    let policies = dnp(
        "app",
        "web-egress",
        WEB_PODS,
        &[
            r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#,
            r#"{action: Deny, to: [{networks: ["198.51.100.0/24", "2001:db8::/32"]}]}"#,
        ],
    );
    let d = "dnp/app/web-egress";
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT, 443, dnp_accept(d, 0)),     // Accept
            tcp(WEB, OUT2, 443, dnp_deny(d, 1)),      // Deny
            udp(WEB, OUT2, 53, dnp_deny(d, 1)),       // Deny without protocols: every protocol
            tcp(WEB, OUT, 80, default_allow()),       // no rule matches: no implicit isolation
            tcp(WEB, API, 8080, default_allow()),     // pod-to-pod is not isolated either
            tcp(API, OUT2, 443, default_allow()),     // api is not selected
            tcp(DEV_WEB, OUT2, 443, default_allow()), // app=web of another namespace is not
        ],
    );
    check(
        &snapshot_default_deny(&policies),
        &[
            tcp(WEB, OUT, 443, dnp_accept(d, 0)), // Accept beats the default
            tcp(WEB, OUT, 80, default_deny()),    // no match: the default decides
        ],
    );
    // A dual-stack source is the same pod over IPv6.
    check(
        &snapshot(&dnp(
            "app",
            "dual",
            "{}",
            &[r#"{action: Deny, to: [{networks: ["2001:db8::/32"]}]}"#],
        )),
        &[
            tcp(DUAL6, OUT6, 443, dnp_deny("dnp/app/dual", 0)),
            tcp(DUAL4, OUT, 443, default_allow()),
        ],
    );
}

#[test]
fn developer_deny_beats_accept_whatever_the_order() {
    // One policy: the Accept rule comes first and covers the Deny rule's addresses.
    let one = dnp(
        "app",
        "mixed",
        WEB_PODS,
        &[
            r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}]}"#,
            r#"{action: Deny, to: [{networks: ["192.0.2.0/25"]}]}"#,
            r#"{action: Accept, to: [{networks: ["198.51.100.0/24"]}]}"#,
        ],
    );
    check(
        &snapshot(&one),
        &[
            tcp(WEB, OUT, 443, dnp_deny("dnp/app/mixed", 1)), // in both: Deny
            tcp(WEB, OUT_HIGH, 443, dnp_accept("dnp/app/mixed", 0)), // Accept only
            tcp(WEB, OUT2, 443, dnp_accept("dnp/app/mixed", 2)),
        ],
    );
    // Two policies: the accepting one sorts first by name and is written first; the other
    // one's Deny still wins. File order does not matter.
    let allow = dnp(
        "app",
        "a-allow-all",
        "{}",
        &[r#"{action: Accept, to: [{networks: ["0.0.0.0/0"]}]}"#],
    );
    let deny = dnp(
        "app",
        "z-deny-doc",
        WEB_PODS,
        &[
            r#"{action: Accept, to: [{networks: ["203.0.113.0/24"]}]}"#,
            r#"{action: Deny, to: [{networks: ["192.0.2.0/24"]}]}"#,
        ],
    );
    let cases = [
        tcp(WEB, OUT, 443, dnp_deny("dnp/app/z-deny-doc", 1)),
        tcp(API, OUT, 443, dnp_accept("dnp/app/a-allow-all", 0)), // z-deny-doc selects web only
        // Both accept: the first policy by name names the verdict.
        tcp(WEB, NODE1_EXT, 443, dnp_accept("dnp/app/a-allow-all", 0)),
        tcp(WEB, OUT2, 443, dnp_accept("dnp/app/a-allow-all", 0)),
    ];
    check(&snapshot(&format!("{allow}{deny}")), &cases);
    check(&snapshot(&format!("{deny}{allow}")), &cases);
}

#[test]
fn developer_accept_allows_what_network_policy_isolation_would_deny() {
    let policies = [
        np("app", "default-deny", "{}", EGRESS, Some(&[])),
        dnp(
            "app",
            "stripe",
            WEB_PODS,
            &[
                r#"{action: Accept, to: [{domainNames: ["api.stripe.com", "*.stripe.network"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#,
            ],
        ),
    ]
    .concat();
    let yes = || dnp_accept("dnp/app/stripe", 0);
    let isolated = || np_isolated("np/app/default-deny");
    check(
        &snapshot(&policies),
        &[
            named(WEB, OUT, 443, &["api.stripe.com"], yes()),
            named(WEB, OUT, 443, &["API.Stripe.com."], yes()),
            named(WEB, OUT6, 443, &["m.stripe.network"], yes()),
            named(WEB, OUT, 443, &["stripe.network"], isolated()), // wildcard needs a label
            named(WEB, OUT, 80, &["api.stripe.com"], isolated()),  // port not accepted
            named(WEB, OUT, 443, &[], isolated()),                 // no name, no Accept
            named(WEB, OUT, 443, &["evil.example"], isolated()),
            named(API, OUT, 443, &["api.stripe.com"], isolated()), // api is no subject
        ],
    );
}

#[test]
fn developer_deny_denies_what_network_policy_allows() {
    let policies = [
        np(
            "app",
            "allow-all",
            "{}",
            EGRESS,
            Some(&[r#"{to: [{ipBlock: {cidr: "0.0.0.0/0"}}]}"#]),
        ),
        dnp(
            "app",
            "no-office",
            "{}",
            &[r#"{action: Deny, to: [{networks: ["192.168.0.0/16"]}]}"#],
        ),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, "192.168.1.1", 443, dnp_deny("dnp/app/no-office", 0)),
            tcp(API, "192.168.7.7", 22, dnp_deny("dnp/app/no-office", 0)),
            tcp(WEB, OUT, 443, np_allow("np/app/allow-all", 0)), // no DNP match: NP decides
            tcp(WEB, OUT6, 443, np_isolated("np/app/allow-all")), // IPv6 is not in 0.0.0.0/0
        ],
    );
}

#[test]
fn admin_decides_before_developer_policies_and_baseline_after() {
    let policies = [
        cnp(
            "guard",
            "Admin",
            10,
            ALL,
            &[
                r#"{action: Deny, to: [{networks: ["192.0.2.128/25"]}]}"#,
                r#"{action: Pass, to: [{networks: ["198.51.100.0/24"]}]}"#,
                r#"{action: Accept, to: [{networks: ["203.0.113.0/24"]}]}"#,
            ],
        ),
        dnp(
            "app",
            "web-sites",
            WEB_PODS,
            &[
                r#"{action: Accept, to: [{networks: ["192.0.2.0/24", "198.51.100.0/24"]}]}"#,
                r#"{action: Deny, to: [{networks: ["203.0.113.0/24"]}]}"#,
            ],
        ),
        cnp(
            "closed",
            "Baseline",
            10,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["0.0.0.0/0", "::/0"]}]}"#],
        ),
    ]
    .concat();
    let d = "dnp/app/web-sites";
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, OUT_HIGH, 443, admin_deny("cnp/guard", 0)), // Admin Deny is final
            tcp(WEB, NODE1_EXT, 443, admin_accept("cnp/guard", 2)), // Admin Accept is final too
            tcp(WEB, OUT2, 443, dnp_accept(d, 0)),               // Pass delegates to the DNP
            tcp(WEB, OUT, 443, dnp_accept(d, 0)),                // DNP Accept beats Baseline
            tcp(WEB, OUT6, 443, baseline_deny("cnp/closed", 0)), // no DNP match: Baseline
            tcp(API, OUT, 443, baseline_deny("cnp/closed", 0)),  // not a DNP subject
        ],
    );
}

#[test]
fn a_pods_peer_without_namespace_selector_is_the_policys_own_namespace() {
    let own = dnp(
        "dev",
        "no-db",
        "{}",
        &[r#"{action: Deny, to: [{pods: {podSelector: {matchLabels: {app: db}}}}]}"#],
    );
    check(
        &snapshot(&own),
        &[
            tcp(DEV_WEB, DEV_DB, 5432, dnp_deny("dnp/dev/no-db", 0)), // dev's db
            tcp(DEV_WEB, PG4, 5432, default_allow()), // db's app=db is another namespace
        ],
    );
    // `namespaceSelector: {}` says every namespace.
    let every = dnp(
        "dev",
        "no-db",
        "{}",
        &[
            r#"{action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}]}"#,
        ],
    );
    check(
        &snapshot(&every),
        &[
            tcp(DEV_WEB, DEV_DB, 5432, dnp_deny("dnp/dev/no-db", 0)),
            tcp(DEV_WEB, PG4, 5432, dnp_deny("dnp/dev/no-db", 0)),
        ],
    );
    // Under a namespace default-deny: open the own namespace's pods on a named port.
    let open = [
        np("dev", "default-deny", "{}", EGRESS, Some(&[])),
        dnp(
            "dev",
            "own-pods",
            "{}",
            &[r#"{action: Accept, to: [{pods: {podSelector: {}}}], protocols: [{destinationNamedPort: pg}]}"#],
        ),
    ]
    .concat();
    check(
        &snapshot(&open),
        &[
            tcp(DEV_WEB, DEV_DB, 5432, dnp_accept("dnp/dev/own-pods", 0)),
            tcp(DEV_WEB, DEV_DB, 5433, np_isolated("np/dev/default-deny")), // not the named port
            tcp(DEV_WEB, PG4, 5432, np_isolated("np/dev/default-deny")),    // another namespace
        ],
    );
}

#[test]
fn developer_policies_leave_exempt_flows_alone() {
    let policies = dnp(
        "app",
        "nothing",
        "{}",
        &[r#"{action: Deny, to: [{networks: ["0.0.0.0/0", "::/0"]}]}"#],
    );
    check(
        &snapshot(&policies),
        &[
            tcp(WEB, WEB, 80, hairpin()),
            tcp(NODE1, OUT, 80, host_network_source()),
            tcp(WEB, OUT, 80, dnp_deny("dnp/app/nothing", 0)),
        ],
    );
}

/// Read from a cluster: a Deny rule with a field this build does not know denies everything;
/// an Accept peer that it does not know matches nothing.
#[test]
fn developer_policies_fail_closed() {
    let policies = dnp(
        "app",
        "newer",
        WEB_PODS,
        &[
            r#"{action: Accept, to: [{networks: ["192.0.2.0/24"], futurePeerField: x}]}"#,
            r#"{action: Deny, to: [{networks: ["198.51.100.0/24"]}], futureRuleField: true}"#,
        ],
    );
    let loaded = load_str(
        std::path::Path::new("t.yaml"),
        &format!("{INVENTORY}\n---\n{policies}"),
        UnknownFields::FailClosed,
    );
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let s = Snapshot::compile(&loaded.world, Options::default());
    check(
        &s,
        &[
            tcp(WEB, OUT, 443, dnp_deny("dnp/app/newer", 1)),
            tcp(WEB, PG4, 5432, dnp_deny("dnp/app/newer", 1)),
            tcp(API, OUT, 443, default_allow()),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// DeveloperNetworkPolicy `services` peers: the ready endpoints of named Services

/// Services of [`INVENTORY`]'s world:
/// - `db/pg` (10.96.0.20, fd00:96::20): `pg` 5432 → 5432 and `web` 80 → 8080, endpoint the
///   pod db/pg (both families);
/// - `app/api` (10.96.0.11): `http` 80 → 8080, endpoint app/api;
/// - `default/kubernetes` (10.96.0.1): `https` 443 → 6443, endpoints 198.51.100.7 (ready) and
///   192.0.2.200 (not ready): no pods;
/// - `dev/single` (10.96.0.30): one unnamed port 80 → 8080, endpoint dev/web.
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {namespace: db, name: pg}
spec:
  clusterIPs: [10.96.0.20, "fd00:96::20"]
  ports: [{name: pg, port: 5432, targetPort: 5432}, {name: web, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: db, name: pg-v4, labels: {kubernetes.io/service-name: pg}}
addressType: IPv4
endpoints: [{addresses: [10.0.2.10], conditions: {ready: true}}]
ports: [{name: pg, port: 5432, protocol: TCP}, {name: web, port: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: db, name: pg-v6, labels: {kubernetes.io/service-name: pg}}
addressType: IPv6
endpoints: [{addresses: ["fd00:2::10"], conditions: {ready: true}}]
ports: [{name: pg, port: 5432, protocol: TCP}, {name: web, port: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {namespace: app, name: api}
spec:
  clusterIPs: [10.96.0.11]
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: app, name: api-1, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
endpoints: [{addresses: [10.0.1.11], conditions: {ready: true}}]
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {namespace: default, name: kubernetes}
spec:
  clusterIPs: [10.96.0.1]
  ports: [{name: https, port: 443, targetPort: 6443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: default, name: kubernetes, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
endpoints:
- {addresses: [198.51.100.7], conditions: {ready: true}}
- {addresses: [192.0.2.200], conditions: {ready: false}}
ports: [{name: https, port: 6443, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {namespace: dev, name: single}
spec:
  clusterIPs: [10.96.0.30]
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: dev, name: single-1, labels: {kubernetes.io/service-name: single}}
addressType: IPv4
endpoints: [{addresses: [10.0.3.10], conditions: {ready: true}}]
ports: [{port: 8080, protocol: TCP}]
---
"#;

/// [`SERVICES`] plus `policies`, compiled.
fn with_services(policies: &str) -> Snapshot {
    snapshot(&format!("{SERVICES}{policies}"))
}

#[test]
fn a_services_peer_matches_the_ready_endpoints_of_the_service_pods_or_not() {
    let policies = dnp(
        "app",
        "via-services",
        WEB_PODS,
        &[
            r#"{action: Accept, to: [{services: [{namespace: default, name: kubernetes}]}]}"#,
            r#"{action: Deny, to: [{services: [{namespace: db, name: pg, ports: [web]}]}]}"#,
        ],
    );
    let d = "dnp/app/via-services";
    check(
        &with_services(&policies),
        &[
            // Not a pod: the API server's address. Without `ports`, any port and protocol.
            tcp(WEB, OUT2, 6443, dnp_accept(d, 0)),
            tcp(WEB, OUT2, 22, dnp_accept(d, 0)),
            udp(WEB, OUT2, 53, dnp_accept(d, 0)),
            // A not-ready endpoint is no backend.
            tcp(WEB, OUT_HIGH, 6443, default_allow()),
            // `ports: [web]`: the backends of that Service port, on its target port, over its
            // protocol, in both families.
            tcp(WEB, PG4, 8080, dnp_deny(d, 1)),
            tcp(WEB, PG6, 8080, dnp_deny(d, 1)),
            tcp(WEB, PG4, 80, default_allow()), // the Service port is not the backend's
            tcp(WEB, PG4, 5432, default_allow()), // the `pg` port is not named
            udp(WEB, PG4, 8080, default_allow()),
            // The ClusterIP itself is no endpoint (the gateway decides on the backend).
            tcp(WEB, "10.96.0.1", 443, default_allow()),
            // Only the policy's subjects.
            tcp(API, OUT2, 6443, default_allow()),
        ],
    );
}

#[test]
fn a_services_entry_without_namespace_is_the_policys_own_namespace() {
    let own = |namespace: &str, subject: &str| {
        dnp(
            namespace,
            "own",
            subject,
            &[r#"{action: Deny, to: [{services: [{name: api, ports: [http]}]}]}"#],
        )
    };
    check(
        &with_services(&own("app", WEB_PODS)),
        &[tcp(WEB, API, 8080, dnp_deny("dnp/app/own", 0))],
    );
    // dev has no Service `api`: app's is not meant.
    check(
        &with_services(&own("dev", WEB_PODS)),
        &[tcp(DEV_WEB, API, 8080, default_allow())],
    );
}

#[test]
fn unknown_services_and_port_names_match_nothing() {
    let policies = dnp(
        "app",
        "absent",
        WEB_PODS,
        &[
            // No such Service, no such port name, and a port without a name: nothing.
            r#"{action: Deny, to: [{services: [{namespace: db, name: nope}, {namespace: db, name: pg, ports: [nope]}, {namespace: dev, name: single, ports: [http]}]}]}"#,
            r#"{action: Accept, to: [{services: [{namespace: dev, name: single}]}]}"#,
        ],
    );
    let s = with_services(&policies);
    check(
        &s,
        &[
            tcp(WEB, PG4, 5432, default_allow()),
            tcp(WEB, PG4, 8080, default_allow()),
            // The unnamed port's Service is matched without `ports`.
            tcp(WEB, DEV_WEB, 8080, dnp_accept("dnp/app/absent", 1)),
        ],
    );
    // Under a default deny the same absent Services open nothing.
    let accept_absent = dnp(
        "app",
        "absent",
        WEB_PODS,
        &[
            r#"{action: Accept, to: [{services: [{namespace: db, name: nope}, {namespace: db, name: pg, ports: [nope]}]}]}"#,
        ],
    );
    check(
        &snapshot_default_deny(&format!("{SERVICES}{accept_absent}")),
        &[
            tcp(WEB, PG4, 5432, default_deny()),
            tcp(WEB, OUT2, 6443, default_deny()),
        ],
    );
}

#[test]
fn a_services_peer_follows_the_endpoints_when_they_change() {
    let policies = dnp(
        "app",
        "api-server",
        WEB_PODS,
        &[
            r#"{action: Accept, to: [{services: [{namespace: default, name: kubernetes, ports: [https]}]}]}"#,
        ],
    );
    let before = snapshot_default_deny(&format!("{SERVICES}{policies}"));
    // The API server moved: 198.51.100.7 is gone, 192.0.2.200 became ready.
    let moved = SERVICES.replace(
        "- {addresses: [198.51.100.7], conditions: {ready: true}}\n- {addresses: [192.0.2.200], conditions: {ready: false}}",
        "- {addresses: [192.0.2.200], conditions: {ready: true}}",
    );
    assert_ne!(moved, SERVICES);
    let after = snapshot_default_deny(&format!("{moved}{policies}"));
    let d = "dnp/app/api-server";
    check(
        &before,
        &[
            tcp(WEB, OUT2, 6443, dnp_accept(d, 0)),
            tcp(WEB, OUT_HIGH, 6443, default_deny()),
        ],
    );
    check(
        &after,
        &[
            tcp(WEB, OUT2, 6443, default_deny()),
            tcp(WEB, OUT_HIGH, 6443, dnp_accept(d, 0)),
        ],
    );
}

#[test]
fn a_services_peer_combines_with_the_rules_protocols() {
    let policies = [
        np("app", "default-deny", "{}", EGRESS, Some(&[])),
        dnp(
            "app",
            "pg-only",
            WEB_PODS,
            &[
                r#"{action: Accept, to: [{services: [{namespace: db, name: pg}]}], protocols: [{tcp: {destinationPort: {number: 5432}}}]}"#,
                // A named port is the destination pod's: only pod endpoints have one.
                r#"{action: Accept, to: [{services: [{namespace: db, name: pg}, {namespace: default, name: kubernetes}]}], protocols: [{destinationNamedPort: web}]}"#,
            ],
        ),
    ]
    .concat();
    let d = "dnp/app/pg-only";
    let isolated = || np_isolated("np/app/default-deny");
    check(
        &with_services(&policies),
        &[
            tcp(WEB, PG4, 5432, dnp_accept(d, 0)),
            tcp(WEB, PG6, 5432, dnp_accept(d, 0)),
            tcp(WEB, PG4, 8080, dnp_accept(d, 1)), // pg's container port `web`
            tcp(WEB, OUT2, 6443, isolated()),      // no pod, no named port
            tcp(WEB, OUT2, 5432, isolated()),      // an endpoint of the other Service
            tcp(API, PG4, 5432, isolated()),
        ],
    );
}

#[test]
fn explain_traces_developer_policies() {
    let policies = [
        cnp("a1", "Admin", 1, ALL, &[r#"{action: Pass, to: [{networks: ["192.0.2.0/24"]}]}"#]),
        dnp(
            "app",
            "d1",
            "{}",
            &[r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#],
        ),
        dnp(
            "app",
            "d2",
            WEB_PODS,
            &[
                r#"{action: Accept, to: [{networks: ["198.51.100.0/24"]}]}"#,
                r#"{action: Deny, to: [{networks: ["192.0.2.0/25"]}]}"#,
            ],
        ),
        np(
            "app",
            "n1",
            WEB_PODS,
            EGRESS,
            Some(&[r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}], ports: [{port: 80}]}"#]),
        ),
    ]
    .concat();
    let s = snapshot(&policies);
    let admin = |p, r: Option<u16>, o| step(TierName::Admin, p, r, o);
    let network = |p, r: Option<u16>, o| step(TierName::NetworkPolicy, p, r, o);
    let trace_cases = [
        (
            // d1 accepts, d2 denies: only the deciding Deny is traced.
            tcp(WEB, OUT, 443, dnp_deny("dnp/app/d2", 1)),
            vec![
                admin("cnp/a1", Some(0), Outcome::Matched(Action::Pass)),
                network("dnp/app/d2", Some(1), Outcome::Matched(Action::Deny)),
            ],
        ),
        (
            tcp(WEB, OUT_HIGH, 443, dnp_accept("dnp/app/d1", 0)),
            vec![
                admin("cnp/a1", Some(0), Outcome::Matched(Action::Pass)),
                network("dnp/app/d1", Some(0), Outcome::Matched(Action::Accept)),
            ],
        ),
        (
            // No DNP rule matches: both are traced, then NetworkPolicy v1 decides.
            tcp(WEB, OUT_HIGH, 80, np_allow("np/app/n1", 0)),
            vec![
                admin("cnp/a1", Some(0), Outcome::Matched(Action::Pass)),
                network("dnp/app/d1", None, Outcome::NoMatch),
                network("dnp/app/d2", None, Outcome::NoMatch),
                network("np/app/n1", Some(0), Outcome::Matched(Action::Accept)),
            ],
        ),
        (
            tcp(WEB, OUT6, 80, np_isolated("np/app/n1")),
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                network("dnp/app/d1", None, Outcome::NoMatch),
                network("dnp/app/d2", None, Outcome::NoMatch),
                network("np/app/n1", None, Outcome::IsolatedNoMatch),
            ],
        ),
        (
            // api: d1 only, and no NetworkPolicy isolates it.
            tcp(API, OUT2, 80, default_allow()),
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                network("dnp/app/d1", None, Outcome::NoMatch),
                tier_step(TierName::NetworkPolicy, Outcome::NotIsolated),
                tier_step(TierName::Default, Outcome::Default),
            ],
        ),
    ];
    check(
        &s,
        &trace_cases
            .iter()
            .map(|(c, _)| c.clone())
            .collect::<Vec<_>>(),
    );
    for (case, want) in &trace_cases {
        let (_, trace) = s.explain(&case.flow());
        assert_eq!(
            &steps(&s, &trace),
            want,
            "trace of the case at line {}",
            case.at.line()
        );
    }
}

// ---------------------------------------------------------------------------------------
// IPv6 and dual stack

#[test]
fn ipv6_and_dual_stack() {
    let policies = cnp(
        "v6",
        "Admin",
        10,
        "{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: dual}}}}",
        &[
            r#"{action: Deny, to: [{networks: ["fd00:2::/32"]}]}"#,
            r#"{action: Accept, to: [{networks: ["::/0"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#,
            r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#,
            "{action: Accept, to: [{pods: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}, podSelector: {}}}]}",
        ],
    );
    check(
        &snapshot(&policies),
        &[
            tcp(DUAL6, PG6, 443, admin_deny("cnp/v6", 0)), // IPv6 CIDR, IPv6 source
            tcp(DUAL4, PG6, 443, admin_deny("cnp/v6", 0)), // subject by its IPv4 too
            tcp(DUAL6, OUT6, 443, admin_accept("cnp/v6", 1)), // ::/0
            tcp(DUAL6, OUT, 443, admin_deny("cnp/v6", 2)), // ::/0 is not IPv4
            tcp(DUAL4, NODE1_V6, 443, admin_accept("cnp/v6", 1)), // IPv6 node from the IPv4 address
            tcp(DUAL4, PG4, 5432, admin_accept("cnp/v6", 3)), // pods peer by IPv4
            tcp(DUAL4, PG4, 443, admin_deny("cnp/v6", 2)), // rule order
            tcp(DUAL6, DEV_V6, 80, default_allow()),       // no rule
            tcp(DEV_V6, PG6, 443, default_allow()),        // not a subject
        ],
    );
}

// ---------------------------------------------------------------------------------------
// v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy

#[test]
fn v1alpha1_policies_are_mapped() {
    let policies = [
        "apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {env: prod}}}
  egress:
  - {name: dns, action: Allow, to: [{pods: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: kube-dns}}}}], ports: [{portNumber: {protocol: UDP, port: 53}}, {namedPort: dns-tcp}]}
  - {action: Pass, to: [{networks: [\"198.51.100.0/24\"]}]}
  - {action: Deny, to: [{networks: [\"192.0.2.0/24\"]}], ports: [{portRange: {start: 8000, end: 8100}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  egress:
  - {action: Allow, to: [{networks: [\"192.0.2.0/24\"]}]}
  - {action: Deny, to: [{networks: [\"0.0.0.0/0\"]}]}
---
"
        .to_owned(),
        // Priority 1000 and a name after `default`: still before the BANP.
        cnp(
            "zz-last",
            "Baseline",
            1000,
            ALL,
            &[r#"{action: Deny, to: [{networks: ["192.0.2.0/24"]}], protocols: [{tcp: {destinationPort: {number: 443}}}]}"#],
        ),
        cnp(
            "aa-first",
            "Baseline",
            1000,
            ALL,
            &[r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}], protocols: [{tcp: {destinationPort: {number: 22}}}]}"#],
        ),
        // Same priority as the ANP, name after it.
        cnp("guard2", "Admin", 5, ALL, &[r#"{action: Deny, to: [{networks: ["10.0.4.0/24"]}]}"#]),
    ]
    .concat();
    check(
        &snapshot(&policies),
        &[
            udp(WEB, DNS, 53, admin_accept("anp/guard", 0)), // Allow is Accept; portNumber
            tcp(WEB, DNS, 53, admin_accept("anp/guard", 0)), // namedPort
            tcp(WEB, DNS, 80, admin_deny("cnp/guard2", 0)),  // same priority, later name
            tcp(WEB, OUT, 8050, admin_deny("anp/guard", 2)), // portRange, TCP by default
            udp(WEB, OUT, 8050, baseline_accept("banp/default", 0)), // portRange is TCP
            tcp(WEB, OUT, 443, baseline_deny("cnp/zz-last", 0)), // Baseline CNP before BANP (name)
            tcp(WEB, OUT, 22, baseline_accept("cnp/aa-first", 0)), // Baseline CNP before BANP
            tcp(WEB, OUT, 80, baseline_accept("banp/default", 0)), // BANP Allow
            tcp(WEB, OUT2, 80, baseline_deny("banp/default", 1)), // ANP Pass, then BANP Deny
            tcp(DEV_WEB, OUT, 8050, baseline_accept("banp/default", 0)), // not an ANP subject
        ],
    );
}

// ---------------------------------------------------------------------------------------
// explain: the trace

#[test]
fn explain_lists_every_consulted_policy_in_order() {
    let policies = [
        cnp("a1", "Admin", 1, ALL, &[r#"{action: Accept, to: [{networks: ["203.0.113.0/24"]}]}"#]),
        cnp(
            "a2",
            "Admin",
            2,
            "{namespaces: {matchLabels: {env: dev}}}",
            &[r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#],
        ),
        cnp(
            "a3",
            "Admin",
            3,
            ALL,
            &[
                r#"{action: Accept, to: [{networks: ["10.0.0.0/8"]}]}"#,
                r#"{action: Pass, to: [{networks: ["192.0.2.0/24"]}]}"#,
            ],
        ),
        cnp("a4", "Admin", 4, ALL, &[r#"{action: Deny, to: [{networks: ["0.0.0.0/0"]}]}"#]),
        np(
            "app",
            "n1",
            "{matchLabels: {app: api}}",
            EGRESS,
            Some(&[r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}], ports: [{port: 443}]}"#]),
        ),
        np(
            "app",
            "n2",
            "{matchLabels: {app: api}}",
            EGRESS,
            Some(&[
                r#"{to: [{ipBlock: {cidr: "198.51.100.0/24"}}]}"#,
                r#"{to: [{ipBlock: {cidr: "192.0.2.0/24"}}], ports: [{port: 8443}]}"#,
            ]),
        ),
        cnp(
            "b1",
            "Baseline",
            1,
            ALL,
            &[r#"{action: Accept, to: [{networks: ["203.0.113.0/24"]}]}"#],
        ),
        cnp(
            "b2",
            "Baseline",
            2,
            ALL,
            &[r#"{action: Accept, to: [{networks: ["192.0.2.0/24"]}], protocols: [{tcp: {destinationPort: {number: 80}}}]}"#],
        ),
    ]
    .concat();
    let s = snapshot(&policies);
    let admin = |p, r: Option<u16>, o| step(TierName::Admin, p, r, o);
    let baseline = |p, r: Option<u16>, o| step(TierName::Baseline, p, r, o);
    let network = |p, r: Option<u16>, o| step(TierName::NetworkPolicy, p, r, o);
    let trace_cases = [
        (
            tcp(WEB, OUT, 80, baseline_accept("cnp/b2", 0)), // Pass, not isolated, Baseline
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                admin("cnp/a3", Some(1), Outcome::Matched(Action::Pass)),
                tier_step(TierName::NetworkPolicy, Outcome::NotIsolated),
                baseline("cnp/b1", None, Outcome::NoMatch),
                baseline("cnp/b2", Some(0), Outcome::Matched(Action::Accept)),
            ],
        ),
        (
            tcp(WEB, OUT, 81, default_allow()), // Pass, not isolated, default
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                admin("cnp/a3", Some(1), Outcome::Matched(Action::Pass)),
                tier_step(TierName::NetworkPolicy, Outcome::NotIsolated),
                baseline("cnp/b1", None, Outcome::NoMatch),
                baseline("cnp/b2", None, Outcome::NoMatch),
                tier_step(TierName::Default, Outcome::Default),
            ],
        ),
        (
            tcp(API, OUT, 8443, np_allow("np/app/n2", 1)), // Pass, isolated, allowed
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                admin("cnp/a3", Some(1), Outcome::Matched(Action::Pass)),
                network("np/app/n1", None, Outcome::IsolatedNoMatch),
                network("np/app/n2", Some(1), Outcome::Matched(Action::Accept)),
            ],
        ),
        (
            tcp(API, OUT, 80, np_isolated("np/app/n1")), // Pass, isolated, denied
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                admin("cnp/a3", Some(1), Outcome::Matched(Action::Pass)),
                network("np/app/n1", None, Outcome::IsolatedNoMatch),
                network("np/app/n2", None, Outcome::IsolatedNoMatch),
            ],
        ),
        (
            tcp(WEB, OUT2, 80, admin_deny("cnp/a4", 0)), // Admin Deny
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                admin("cnp/a3", None, Outcome::NoMatch),
                admin("cnp/a4", Some(0), Outcome::Matched(Action::Deny)),
            ],
        ),
        (
            tcp(DEV_WEB, PG4, 80, admin_deny("cnp/a2", 0)), // a2 selects dev only
            vec![
                admin("cnp/a1", None, Outcome::NoMatch),
                admin("cnp/a2", Some(0), Outcome::Matched(Action::Deny)),
            ],
        ),
        (
            tcp(WEB, NODE1_EXT, 80, admin_accept("cnp/a1", 0)), // Admin Accept first
            vec![admin("cnp/a1", Some(0), Outcome::Matched(Action::Accept))],
        ),
        (
            tcp(WEB, WEB, 80, hairpin()), // hairpin
            vec![tier_step(TierName::Default, Outcome::Exempt)],
        ),
        (
            tcp(NODE1, OUT, 80, host_network_source()), // host network
            vec![tier_step(TierName::Default, Outcome::Exempt)],
        ),
        (
            tcp(OUT, WEB, 80, unknown_source(Decision::Allow)), // unknown source
            vec![tier_step(TierName::Default, Outcome::Default)],
        ),
    ];
    check(
        &s,
        &trace_cases
            .iter()
            .map(|(c, _)| c.clone())
            .collect::<Vec<_>>(),
    );
    for (case, want) in &trace_cases {
        let (_, trace) = s.explain(&case.flow());
        assert_eq!(
            &steps(&s, &trace),
            want,
            "trace of the case at line {}",
            case.at.line()
        );
    }
}

/// A dual-stack socket reports an IPv4 peer as `::ffff:a.b.c.d`; it is decided as that IPv4
/// address (same pod, same CIDRs).
#[test]
fn ipv4_mapped_ipv6_addresses_are_decided_as_ipv4() {
    let snapshot = snapshot_default_deny("");
    let mapped = |s: &str| match s.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(v4) => std::net::IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    let flow = |src, dst| chokepoint::policy::Flow {
        src,
        dst,
        protocol: Protocol::Tcp,
        port: 80,
        names: &[],
        addressed: None,
    };
    let plain = snapshot.evaluate(&flow(WEB.parse().unwrap(), WEB.parse().unwrap()));
    assert_eq!(plain.reason, chokepoint::policy::Reason::Hairpin);
    assert_eq!(snapshot.evaluate(&flow(mapped(WEB), mapped(WEB))), plain);
    let out = snapshot.evaluate(&flow(mapped(WEB), mapped(OUT)));
    assert_eq!(
        out,
        snapshot.evaluate(&flow(WEB.parse().unwrap(), OUT.parse().unwrap()))
    );
    assert_eq!(out.reason, chokepoint::policy::Reason::Default);
    assert_eq!(out.decision, Decision::Deny);
}

/// The gateway's setting for sources that are no known pod overrides the default.
#[test]
fn unknown_sources_follow_their_own_setting() {
    let snapshot = Snapshot::compile(
        &world(""),
        Options {
            unknown_source_decision: Some(Decision::Deny),
            ..Options::default()
        },
    );
    let flow = chokepoint::policy::Flow {
        src: OUT2.parse().unwrap(),
        dst: OUT.parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 80,
        names: &[],
        addressed: None,
    };
    let v = snapshot.evaluate(&flow);
    assert_eq!(
        (v.decision, v.reason),
        (Decision::Deny, chokepoint::policy::Reason::UnknownSource)
    );
    let pod_flow = chokepoint::policy::Flow {
        src: WEB.parse().unwrap(),
        ..flow
    };
    assert_eq!(snapshot.evaluate(&pod_flow).decision, Decision::Allow);
}
