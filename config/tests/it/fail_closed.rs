//! `UnknownFields::FailClosed`: objects read from a cluster whose CRDs may be newer than this
//! build. A field we do not know is a warning, and the peer, protocol entry or rule holding it
//! fails closed (matches nothing in an Accept rule, everything in a Deny/Pass rule). Under
//! `subject` nothing safe can be enforced: that is an error and the policy is not loaded.

use crate::common::*;
use chokepoint_config::model::{Action, NetworkPolicyPeer, Peer, PortMatch, PortRange, Protocol};

fn cidrs(list: &[&str]) -> Peer {
    Peer::Networks(list.iter().map(|s| s.parse().unwrap()).collect())
}

#[test]
fn an_unknown_field_in_a_peer_makes_that_peer_unknown() {
    let egress = "- action: Accept
  to:
  - networks: [10.0.0.0/8]
  - fqdnSelector: {matchNames: [example.com]}
- action: Deny
  to:
  - namespaces: {}
    serviceAccounts: [default]
";
    let l = load_fail_closed(&cnp(egress));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[
            (
                14,
                7,
                "unknown field `fqdnSelector` (the rule holding it fails closed)",
            ),
            (18, 7, "unknown field `serviceAccounts`"),
        ],
    );
    let rules = &l.world.cluster_policies[0].egress;
    assert_eq!(rules[0].peers, vec![cidrs(&["10.0.0.0/8"]), Peer::Unknown]);
    assert_eq!(rules[1].peers, vec![Peer::Unknown]);
    assert!(
        !rules[0].unknown_fields && !rules[1].unknown_fields,
        "the peers fail closed, not the rules"
    );

    // The same policy is an error when unknown fields are rejected.
    let l = load(&cnp(egress));
    assert_errors(
        &l,
        &[
            (14, 7, "unknown field `fqdnSelector`"),
            (18, 7, "unknown field `serviceAccounts`"),
        ],
    );
    assert!(l.world.cluster_policies.is_empty());
}

#[test]
fn an_unknown_field_in_a_protocols_entry_makes_that_entry_unknown() {
    let egress = "- action: Accept
  to:
  - namespaces: {}
  protocols:
  - tcp: {destinationPort: {number: 443}}
  - icmp: {type: 8}
  - udp: {destinationPort: {number: 53, except: [54]}}
";
    let l = load_fail_closed(&cnp(egress));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[
            (16, 7, "unknown field `icmp`"),
            (17, 43, "unknown field `except`"),
        ],
    );
    let rule = &l.world.cluster_policies[0].egress[0];
    assert_eq!(
        rule.protocols,
        Some(vec![
            PortMatch::Port {
                protocol: Protocol::Tcp,
                ports: PortRange::single(443)
            },
            PortMatch::Unknown,
            PortMatch::Unknown,
        ])
    );
    assert!(!rule.unknown_fields);
}

#[test]
fn an_unknown_field_in_a_v1alpha1_ports_entry_makes_that_entry_unknown() {
    let egress = "- action: Allow
  to:
  - namespaces: {}
  ports:
  - portNumber: {port: 443}
  - portSet: [80, 443]
";
    let l = load_fail_closed(&anp(egress));
    assert_errors(&l, &[]);
    assert_warnings(&l, &[(16, 7, "unknown field `portSet`")]);
    assert_eq!(
        l.world.cluster_policies[0].egress[0].protocols,
        Some(vec![
            PortMatch::Port {
                protocol: Protocol::Tcp,
                ports: PortRange::single(443)
            },
            PortMatch::Unknown
        ])
    );
}

#[test]
fn an_unknown_field_directly_on_a_rule_makes_the_rule_fail_closed() {
    let egress = "- action: Accept
  to:
  - networks: [10.0.0.0/8]
  schedule: office-hours
- action: Deny
  to:
  - networks: [0.0.0.0/0]
";
    let l = load_fail_closed(&cnp(egress));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[(
            14,
            5,
            "unknown field `schedule` (the rule holding it fails closed)",
        )],
    );
    let rules = &l.world.cluster_policies[0].egress;
    assert_eq!(rules.len(), 2);
    assert!(rules[0].unknown_fields);
    assert_eq!(
        rules[0].peers,
        vec![cidrs(&["10.0.0.0/8"])],
        "the rule itself is kept for explain"
    );
    assert!(!rules[1].unknown_fields);
}

#[test]
fn an_unknown_field_on_a_rule_is_seen_even_when_a_peer_also_has_one() {
    let egress = "- action: Accept
  to:
  - networks: [10.0.0.0/8]
  - fqdn: example.com
  schedule: office-hours
";
    let l = load_fail_closed(&cnp(egress));
    assert_errors(&l, &[]);
    let rule = &l.world.cluster_policies[0].egress[0];
    assert!(rule.unknown_fields, "{rule:?}");
    assert_eq!(rule.peers, vec![cidrs(&["10.0.0.0/8"]), Peer::Unknown]);
}

#[test]
fn v1alpha1_ports_on_a_v1alpha2_rule_fail_closed() {
    // `ports` is not a v1alpha2 field: read from a cluster, the rule must not accept every
    // port of 10.0.0.0/8.
    let egress = "- action: Accept
  to:
  - networks: [10.0.0.0/8]
  ports:
  - portNumber: {protocol: TCP, port: 443}
";
    let l = load_fail_closed(&cnp(egress));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[(
            14,
            5,
            "unknown field `ports`: v1alpha2 replaced `ports:` with `protocols:`",
        )],
    );
    let rule = &l.world.cluster_policies[0].egress[0];
    assert_eq!(rule.action, Action::Accept);
    assert_eq!(rule.protocols, None);
    assert!(rule.unknown_fields, "{rule:?}");
}

#[test]
fn an_unknown_field_under_subject_is_an_error_and_the_policy_is_not_loaded() {
    for subject in [
        "  subject:\n    namespaces: {}\n    serviceAccounts: {}\n",
        "  subject:\n    pods:\n      podSelector: {}\n      nodeSelector: {}\n",
        "  subject:\n    podSelector: {}\n",
    ] {
        let l = load_fail_closed(
            &cnp("- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n")
                .replace("  subject:\n    namespaces: {}\n", subject),
        );
        assert_errors(
            &l,
            &[(8, 3, "`subject` holds a field this build does not know")],
        );
        assert_eq!(warnings(&l).len(), 1, "{}", dump(&l));
        assert!(l.world.cluster_policies.is_empty(), "{subject}");
    }
}

#[test]
fn other_errors_still_count_in_fail_closed_mode() {
    let egress = "- action: Accept
  to:
  - networks: [10.0.0.1/8]
  - fqdn: example.com
";
    let l = load_fail_closed(&cnp(egress));
    assert_errors(&l, &[(13, 18, "write `10.0.0.0/8`")]);
    assert_warnings(&l, &[(14, 7, "unknown field `fqdn`")]);
    assert!(l.world.cluster_policies.is_empty());
}

#[test]
fn unknown_fields_in_metadata_and_status_are_not_ours() {
    let text = cnp("- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n").replace(
        "  name: p\n",
        "  name: p\n  managedFields: [{manager: kubectl}]\n  someFutureField: 1\n",
    ) + "status:\n  conditions: []\n  whatever: 1\n";
    assert_clean(&load(&text));
    assert_clean(&load_fail_closed(&text));
}

#[test]
fn a_network_policy_rule_with_an_unknown_field_allows_nothing() {
    // NetworkPolicy rules only allow: failing closed means the rule is not used, while the
    // policy still isolates the pods it selects.
    let egress = "- to:
  - ipBlock: {cidr: 10.0.0.0/8}
    serviceSelector: {}
- to:
  - podSelector: {}
  ports:
  - port: 443
    futureField: true
- to:
  - namespaceSelector: {}
  futureRuleField: 1
- to:
  - ipBlock: {cidr: 192.0.2.0/24}
";
    let l = load_fail_closed(&np(egress, ""));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[
            (12, 7, "unknown field `serviceSelector`"),
            (17, 7, "unknown field `futureField`"),
            (20, 5, "unknown field `futureRuleField`"),
        ],
    );
    let rules = l.world.network_policies[0]
        .egress
        .as_ref()
        .expect("egress isolated");
    assert_eq!(rules.len(), 1, "{rules:#?}");
    assert_eq!(
        rules[0].peers,
        vec![NetworkPolicyPeer::IpBlock {
            cidr: "192.0.2.0/24".parse().unwrap(),
            except: vec![]
        }]
    );

    // A rule whose only peer is unknown still isolates the pod (and allows nothing).
    let l = load_fail_closed(&np("- to:\n  - serviceSelector: {}\n", ""));
    assert_errors(&l, &[]);
    assert_eq!(l.world.network_policies[0].egress, Some(vec![]));

    // Rejected when unknown fields are errors.
    let l = load(&np(egress, ""));
    assert_eq!(errors(&l).len(), 3, "{}", dump(&l));
    assert!(l.world.network_policies.is_empty());
}
