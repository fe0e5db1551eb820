//! Validation of ClusterNetworkPolicy v1alpha2 and AdminNetworkPolicy/BaselineAdminNetworkPolicy
//! v1alpha1 (compile/cluster.rs and the shared checks in compile/mod.rs): every rule, with the
//! line and column each finding points at.
//!
//! The helpers in `common` build the objects; their egress list starts on line 11, so in
//! `cnp("- action: Accept\n  to:\n  - networks: [10.0.0.0/8]\n")` the rule stands on 11:5, `to`
//! on 12:5, the peer on 13:7 and the CIDR on 13:18.

use crate::common::*;
use chokepoint_config::model::{Action, Peer, PortMatch, PortRange, Protocol, Tier};

const ACCEPT_NET: &str = "- action: Accept\n  to:\n  - networks: [10.0.0.0/8]\n";

/// A rule with `action` and one peer line (written as a list item under `to:`, at column 3
/// of the rule text), optionally followed by `protocols`/`ports` lines.
fn rule(action: &str, peer: &str, more: &str) -> String {
    format!("- action: {action}\n  to:\n  - {peer}\n{more}")
}

/// `n` copies of `item` (a YAML list item of one line), each written with `{i}` replaced.
fn items(n: usize, item: &str) -> String {
    (0..n)
        .map(|i| format!("{}\n", item.replace("{i}", &i.to_string())))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tiers, priorities, names, spec

#[test]
fn tier_is_a_case_sensitive_enum_and_required() {
    let l = load(&cnp(ACCEPT_NET).replace("tier: Admin", "tier: admin"));
    assert_one_error(
        &l,
        6,
        3,
        &["unknown tier `admin`", "Admin or Baseline", "case matters"],
    );

    let l = load(&cnp(ACCEPT_NET).replace("  tier: Admin\n", ""));
    assert_one_error(&l, 5, 1, &["`tier` is required"]);

    let l = load(&cnp(ACCEPT_NET).replace("tier: Admin", "tier: Baseline"));
    assert_eq!(only_policy(&l).tier, Tier::Baseline);
}

#[test]
fn priority_is_0_to_1000_inclusive() {
    for ok in [0, 1000] {
        let l = load(&cnp(ACCEPT_NET).replace("priority: 10", &format!("priority: {ok}")));
        assert_eq!(only_policy(&l).priority, ok);
    }
    for bad in ["2000", "1001", "-1"] {
        let l = load(&cnp(ACCEPT_NET).replace("priority: 10", &format!("priority: {bad}")));
        assert_one_error(
            &l,
            7,
            3,
            &[&format!("priority {bad} is out of range"), "use 0 to 1000"],
        );
    }
    let l = load(&cnp(ACCEPT_NET).replace("  priority: 10\n", ""));
    assert_one_error(&l, 5, 1, &["`priority` is required"]);

    // v1alpha1 AdminNetworkPolicy: same range.
    let l = load(
        &anp(ACCEPT_NET.replace("Accept", "Allow").as_str())
            .replace("priority: 10", "priority: 1001"),
    );
    assert_one_error(&l, 6, 3, &["priority 1001 is out of range"]);
    let l =
        load(&anp(ACCEPT_NET.replace("Accept", "Allow").as_str()).replace("  priority: 10\n", ""));
    assert_one_error(&l, 5, 1, &["`priority` is required"]);
}

#[test]
fn a_priority_that_is_not_a_number_is_located() {
    let l = load(&cnp(ACCEPT_NET).replace("priority: 10", "priority: high"));
    assert_one_error(&l, 7, 3, &["invalid type"]);
}

#[test]
fn metadata_name_and_spec_are_required() {
    let l = load(&cnp(ACCEPT_NET).replace("  name: p\n", "  labels: {a: b}\n"));
    assert_one_error(&l, 3, 1, &["`metadata.name` is required"]);

    let l = load(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: p\n",
    );
    assert_one_error(&l, 1, 1, &["`spec` is required"]);

    let l = load(
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata:\n  name: p\n",
    );
    assert_one_error(&l, 1, 1, &["`spec` is required"]);
}

#[test]
fn rule_names_have_at_most_100_characters() {
    let ok = format!(
        "- name: {}\n{}",
        "r".repeat(100),
        ACCEPT_NET.replacen("- ", "  ", 1)
    );
    assert_eq!(
        only_rules(&load(&cnp(&ok)))[0].name.as_deref(),
        Some("r".repeat(100).as_str())
    );

    let long = format!(
        "- name: {}\n{}",
        "r".repeat(101),
        ACCEPT_NET.replacen("- ", "  ", 1)
    );
    assert_one_error(&load(&cnp(&long)), 11, 5, &["at most 100 characters"]);
}

// ---------------------------------------------------------------------------------------------
// Actions

#[test]
fn v1alpha2_actions_are_accept_deny_pass_and_allow_gets_a_hint() {
    for (name, action) in [
        ("Accept", Action::Accept),
        ("Deny", Action::Deny),
        ("Pass", Action::Pass),
    ] {
        let l = load(&cnp(&rule(name, "networks: [10.0.0.0/8]", "")));
        assert_eq!(only_rules(&l)[0].action, action);
    }
    let l = load(&cnp(&rule("Allow", "networks: [10.0.0.0/8]", "")));
    assert_one_error(
        &l,
        11,
        5,
        &[
            "unknown action `Allow`",
            "use Accept, Deny or Pass",
            "`Allow` to `Accept`",
        ],
    );

    let l = load(&cnp(&rule("accept", "networks: [10.0.0.0/8]", "")));
    assert_one_error(&l, 11, 5, &["unknown action `accept`"]);

    let l = load(&cnp(
        "- name: no-action\n  to:\n  - networks: [10.0.0.0/8]\n",
    ));
    assert_one_error(&l, 11, 5, &["`action` is required", "Accept, Deny or Pass"]);
}

#[test]
fn v1alpha1_actions_are_allow_deny_pass_and_accept_gets_a_hint() {
    for (name, action) in [
        ("Allow", Action::Accept),
        ("Deny", Action::Deny),
        ("Pass", Action::Pass),
    ] {
        let l = load(&anp(&rule(name, "networks: [10.0.0.0/8]", "")));
        assert_eq!(only_rules(&l)[0].action, action);
    }
    let l = load(&anp(&rule("Accept", "networks: [10.0.0.0/8]", "")));
    assert_one_error(
        &l,
        11,
        5,
        &[
            "unknown action `Accept`",
            "use Allow, Deny or Pass",
            "`Accept` is the v1alpha2",
        ],
    );
}

#[test]
fn a_baseline_admin_network_policy_has_no_pass() {
    for (name, action) in [("Allow", Action::Accept), ("Deny", Action::Deny)] {
        let l = load(&banp(&rule(name, "networks: [10.0.0.0/8]", "")));
        assert_eq!(only_rules(&l)[0].action, action);
    }
    let l = load(&banp(&rule("Pass", "networks: [10.0.0.0/8]", "")));
    assert_one_error(
        &l,
        11,
        5,
        &["unknown action `Pass`", "use Allow or Deny", "has no Pass"],
    );
    let l = load(&banp(&rule("Accept", "networks: [10.0.0.0/8]", "")));
    assert_one_error(&l, 11, 5, &["unknown action `Accept`"]);
}

// ---------------------------------------------------------------------------------------------
// Exactly one of ...

#[test]
fn subject_sets_exactly_one_of_namespaces_or_pods() {
    let l = load(&cnp(ACCEPT_NET).replace("  subject:\n    namespaces: {}\n", "  subject: {}\n"));
    assert_one_error(
        &l,
        8,
        3,
        &[
            "`subject` sets no field",
            "exactly one of `namespaces`, `pods`",
        ],
    );

    let both = "  subject:\n    namespaces: {}\n    pods: {podSelector: {}}\n";
    let l = load(&cnp(ACCEPT_NET).replace("  subject:\n    namespaces: {}\n", both));
    assert_one_error(&l, 8, 3, &["`subject` sets `namespaces` and `pods`"]);

    let l = load(&cnp(ACCEPT_NET).replace("  subject:\n    namespaces: {}\n", ""));
    assert_one_error(&l, 5, 1, &["`subject` is required"]);
}

#[test]
fn a_peer_sets_exactly_one_field() {
    let l = load(&cnp(&rule("Accept", "{}", "")));
    assert_one_error(
        &l,
        13,
        7,
        &[
            "this peer sets no field",
            "exactly one of `namespaces`, `pods`, `nodes`, `networks`, `domainNames`",
        ],
    );

    let l = load(&cnp(&rule(
        "Accept",
        "networks: [10.0.0.0/8]\n    namespaces: {}",
        "",
    )));
    assert_one_error(&l, 13, 7, &["this peer sets `namespaces` and `networks`"]);

    let l = load(&cnp("- action: Accept\n  to: []\n"));
    assert_one_error(&l, 12, 5, &["`to` must have at least 1 entry"]);

    let l = load(&cnp("- action: Accept\n"));
    assert_one_error(&l, 11, 5, &["`to` is required"]);
}

#[test]
fn a_protocols_entry_sets_exactly_one_field() {
    let l = load(&cnp(&rule(
        "Accept",
        "namespaces: {}",
        "  protocols:\n  - {}\n",
    )));
    assert_one_error(
        &l,
        15,
        7,
        &[
            "this protocols entry sets no field",
            "exactly one of `tcp`, `udp`, `sctp`, `destinationNamedPort`",
        ],
    );

    let two = "  protocols:\n  - tcp: {destinationPort: {number: 80}}\n    udp: {destinationPort: {number: 53}}\n";
    let l = load(&cnp(&rule("Accept", "namespaces: {}", two)));
    assert_one_error(&l, 15, 7, &["this protocols entry sets `tcp` and `udp`"]);

    let l = load(&cnp(&rule("Accept", "namespaces: {}", "  protocols: []\n")));
    assert_one_error(&l, 14, 5, &["`protocols` must have at least 1 entry"]);
}

#[test]
fn a_destination_port_sets_exactly_one_of_number_or_range() {
    // `tcp: {}` has no destinationPort; "any TCP port" is a range.
    let l = load(&cnp(&rule(
        "Accept",
        "namespaces: {}",
        "  protocols:\n  - tcp: {}\n",
    )));
    assert_one_error(
        &l,
        15,
        7,
        &[
            "`destinationPort` is required",
            "range: {start: 1, end: 65535}",
        ],
    );

    let l = load(&cnp(&rule(
        "Accept",
        "namespaces: {}",
        "  protocols:\n  - udp: {destinationPort: {}}\n",
    )));
    assert_one_error(
        &l,
        15,
        13,
        &[
            "`destinationPort` sets no field",
            "exactly one of `number`, `range`",
        ],
    );

    let both =
        "  protocols:\n  - sctp: {destinationPort: {number: 80, range: {start: 1, end: 2}}}\n";
    let l = load(&cnp(&rule("Accept", "namespaces: {}", both)));
    assert_one_error(&l, 15, 14, &["`destinationPort` sets `number` and `range`"]);

    let no_end = "  protocols:\n  - tcp: {destinationPort: {range: {start: 1}}}\n";
    let l = load(&cnp(&rule("Accept", "namespaces: {}", no_end)));
    assert_one_error(&l, 15, 31, &["`end` is required"]);
}

#[test]
fn a_v1alpha1_ports_entry_sets_exactly_one_field() {
    let l = load(&anp(&rule("Allow", "namespaces: {}", "  ports:\n  - {}\n")));
    assert_one_error(
        &l,
        15,
        7,
        &[
            "this ports entry sets no field",
            "exactly one of `portNumber`, `portRange`, `namedPort`",
        ],
    );

    let two = "  ports:\n  - portNumber: {port: 80}\n    namedPort: web\n";
    let l = load(&anp(&rule("Allow", "namespaces: {}", two)));
    assert_one_error(
        &l,
        15,
        7,
        &["this ports entry sets `portNumber` and `namedPort`"],
    );

    let l = load(&anp(&rule(
        "Allow",
        "namespaces: {}",
        "  ports:\n  - portNumber: {protocol: ICMP, port: 8}\n",
    )));
    assert_one_error(&l, 15, 20, &["unknown protocol `ICMP`", "TCP, UDP or SCTP"]);

    let l = load(&anp(&rule(
        "Allow",
        "namespaces: {}",
        "  ports:\n  - portNumber: {protocol: UDP}\n",
    )));
    assert_one_error(&l, 15, 7, &["`port` is required"]);

    let l = load(&anp(&rule("Allow", "namespaces: {}", "  ports: []\n")));
    assert_one_error(&l, 14, 5, &["`ports` must have at least 1 entry"]);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn v1alpha2_allows_25_rules_peers_protocols_networks_and_domain_names() {
    let deny = "- action: Deny\n  to:\n  - networks: [10.0.0.0/8]\n";
    assert_eq!(only_rules(&load(&cnp(&deny.repeat(25)))).len(), 25);
    let l = load(&cnp(&deny.repeat(26)));
    assert_one_error(
        &l,
        10,
        3,
        &["`egress` has 26 entries; at most 25 are allowed"],
    );

    let peers = |n| {
        format!(
            "- action: Deny\n  to:\n{}",
            items(n, "  - networks: [10.{i}.0.0/16]")
        )
    };
    assert_eq!(only_rules(&load(&cnp(&peers(25))))[0].peers.len(), 25);
    assert_one_error(
        &load(&cnp(&peers(26))),
        12,
        5,
        &["`to` has 26 entries; at most 25"],
    );

    let protocols = |n| {
        format!(
            "{ACCEPT_NET}  protocols:\n{}",
            items(n, "  - tcp: {destinationPort: {number: 1{i}}}")
        )
    };
    assert_eq!(
        only_rules(&load(&cnp(&protocols(25))))[0]
            .protocols
            .as_ref()
            .unwrap()
            .len(),
        25
    );
    assert_one_error(
        &load(&cnp(&protocols(26))),
        14,
        5,
        &["`protocols` has 26 entries; at most 25"],
    );

    let networks = |n| {
        format!(
            "- action: Deny\n  to:\n  - networks:\n{}",
            items(n, "    - 10.{i}.0.0/16")
        )
    };
    assert!(
        matches!(&only_rules(&load(&cnp(&networks(25))))[0].peers[0], Peer::Networks(n) if n.len() == 25)
    );
    assert_one_error(
        &load(&cnp(&networks(26))),
        13,
        7,
        &["`networks` has 26 entries; at most 25"],
    );

    let names = |n| {
        format!(
            "- action: Accept\n  to:\n  - domainNames:\n{}",
            items(n, "    - d{i}.example.com")
        )
    };
    assert!(
        matches!(&only_rules(&load(&cnp(&names(25))))[0].peers[0], Peer::DomainNames(d) if d.len() == 25)
    );
    assert_one_error(
        &load(&cnp(&names(26))),
        13,
        7,
        &["`domainNames` has 26 entries; at most 25"],
    );

    let ingress = format!(
        "  ingress:\n{}",
        items(26, "  - {action: Accept, from: [{namespaces: {}}]}")
    );
    let l = load(&(cnp(ACCEPT_NET) + &ingress));
    assert_one_error(&l, 14, 3, &["`ingress` has 26 entries; at most 25"]);
}

#[test]
fn v1alpha1_allows_100_rules_peers_and_ports_but_25_networks() {
    let deny = "- action: Deny\n  to:\n  - networks: [10.0.0.0/8]\n";
    assert_eq!(only_rules(&load(&anp(&deny.repeat(100)))).len(), 100);
    assert_one_error(
        &load(&anp(&deny.repeat(101))),
        10,
        3,
        &["`egress` has 101 entries; at most 100"],
    );
    assert_one_error(
        &load(&banp(&deny.repeat(101))),
        10,
        3,
        &["`egress` has 101 entries; at most 100"],
    );

    let peers = |n| {
        format!(
            "- action: Deny\n  to:\n{}",
            items(n, "  - namespaces: {matchLabels: {n: \"{i}\"}}")
        )
    };
    assert_eq!(only_rules(&load(&anp(&peers(100))))[0].peers.len(), 100);
    assert_one_error(
        &load(&anp(&peers(101))),
        12,
        5,
        &["`to` has 101 entries; at most 100"],
    );

    let ports = |n| {
        format!(
            "{}  ports:\n{}",
            rule("Allow", "namespaces: {}", ""),
            items(n, "  - portNumber: {port: 1{i}}")
        )
    };
    assert_eq!(
        only_rules(&load(&anp(&ports(100))))[0]
            .protocols
            .as_ref()
            .unwrap()
            .len(),
        100
    );
    assert_one_error(
        &load(&anp(&ports(101))),
        14,
        5,
        &["`ports` has 101 entries; at most 100"],
    );

    let networks = |n| {
        format!(
            "- action: Deny\n  to:\n  - networks:\n{}",
            items(n, "    - 10.{i}.0.0/16")
        )
    };
    assert_one_error(
        &load(&anp(&networks(26))),
        13,
        7,
        &["`networks` has 26 entries; at most 25"],
    );
}

// ---------------------------------------------------------------------------------------------
// Ports

#[test]
fn a_v1alpha2_range_needs_start_below_end() {
    let range = |s, e| {
        format!("  protocols:\n  - tcp: {{destinationPort: {{range: {{start: {s}, end: {e}}}}}}}\n")
    };
    let r = only_rules(&load(&cnp(&rule(
        "Accept",
        "namespaces: {}",
        &range(8000, 8100),
    ))))[0]
        .clone();
    assert_eq!(
        r.protocols,
        Some(vec![PortMatch::Port {
            protocol: Protocol::Tcp,
            ports: PortRange {
                first: 8000,
                last: 8100
            }
        }])
    );

    let l = load(&cnp(&rule("Accept", "namespaces: {}", &range(80, 80))));
    assert_one_error(
        &l,
        15,
        31,
        &[
            "range start 80 must be less than end 80",
            "for one port write `number: 80`",
        ],
    );

    let l = load(&cnp(&rule("Accept", "namespaces: {}", &range(90, 80))));
    assert_one_error(&l, 15, 31, &["range start 90 must be less than end 80"]);
    assert!(!errors(&l)[0].message.contains("number:"), "{}", dump(&l));
}

#[test]
fn a_v1alpha1_range_may_be_one_port_but_not_reversed() {
    let range =
        |s, e| format!("  ports:\n  - portRange: {{protocol: UDP, start: {s}, end: {e}}}\n");
    let r = only_rules(&load(&anp(&rule(
        "Allow",
        "namespaces: {}",
        &range(53, 53),
    ))))[0]
        .clone();
    assert_eq!(
        r.protocols,
        Some(vec![PortMatch::Port {
            protocol: Protocol::Udp,
            ports: PortRange::single(53)
        }])
    );

    let l = load(&anp(&rule("Allow", "namespaces: {}", &range(90, 80))));
    assert_one_error(&l, 15, 7, &["range start 90 is greater than end 80"]);
}

#[test]
fn ports_are_1_to_65535() {
    for bad in [0, 65536, -1] {
        let number = format!("  protocols:\n  - tcp: {{destinationPort: {{number: {bad}}}}}\n");
        let l = load(&cnp(&rule("Accept", "namespaces: {}", &number)));
        assert_one_error(
            &l,
            15,
            31,
            &[&format!("port {bad} is out of range"), "1 to 65535"],
        );
    }
    let start0 = "  protocols:\n  - udp: {destinationPort: {range: {start: 0, end: 10}}}\n";
    assert_one_error(
        &load(&cnp(&rule("Accept", "namespaces: {}", start0))),
        15,
        39,
        &["port 0 is out of range"],
    );
    let end_high = "  protocols:\n  - udp: {destinationPort: {range: {start: 1, end: 65536}}}\n";
    assert_one_error(
        &load(&cnp(&rule("Accept", "namespaces: {}", end_high))),
        15,
        49,
        &["port 65536 is out of range"],
    );

    let edges = "  protocols:\n  - tcp: {destinationPort: {number: 1}}\n  - tcp: {destinationPort: {number: 65535}}\n";
    let r = only_rules(&load(&cnp(&rule("Accept", "namespaces: {}", edges))))[0].clone();
    assert_eq!(
        r.protocols,
        Some(vec![
            PortMatch::Port {
                protocol: Protocol::Tcp,
                ports: PortRange::single(1)
            },
            PortMatch::Port {
                protocol: Protocol::Tcp,
                ports: PortRange::single(65535)
            },
        ])
    );

    let v1 = "  ports:\n  - portNumber: {port: 65536}\n";
    assert_one_error(
        &load(&anp(&rule("Allow", "namespaces: {}", v1))),
        15,
        20,
        &["port 65536 is out of range"],
    );
    let v1 = "  ports:\n  - portRange: {start: 0, end: 80}\n";
    assert_one_error(
        &load(&anp(&rule("Allow", "namespaces: {}", v1))),
        15,
        19,
        &["port 0 is out of range"],
    );
}

#[test]
fn named_ports_must_not_be_empty() {
    let l = load(&cnp(&rule(
        "Accept",
        "namespaces: {}",
        "  protocols:\n  - destinationNamedPort: \"\"\n",
    )));
    assert_one_error(&l, 15, 7, &["a named port must not be empty"]);
    let l = load(&anp(&rule(
        "Allow",
        "namespaces: {}",
        "  ports:\n  - namedPort: \"\"\n",
    )));
    assert_one_error(&l, 15, 7, &["a named port must not be empty"]);
}

#[test]
fn named_ports_cannot_be_used_with_networks_nodes_or_domain_names() {
    let named = "  protocols:\n  - destinationNamedPort: web\n";
    for peer in [
        "networks: [10.0.0.0/8]",
        "nodes: {}",
        "domainNames: [example.com]",
    ] {
        let l = load(&cnp(&rule("Accept", peer, named)));
        assert_one_error(
            &l,
            11,
            5,
            &["a named port cannot be used with `networks`, `nodes` or `domainNames` peers"],
        );
    }
    // One non-pod peer among pod peers is enough.
    let l = load(&cnp(&rule("Deny", "namespaces: {}\n  - nodes: {}", named)));
    assert_one_error(&l, 11, 5, &["a named port cannot be used"]);

    for peer in ["namespaces: {}", "pods: {podSelector: {}}"] {
        let r = only_rules(&load(&cnp(&rule("Accept", peer, named))))[0].clone();
        assert_eq!(r.protocols, Some(vec![PortMatch::Named("web".into())]));
    }

    let l = load(&anp(&rule(
        "Allow",
        "networks: [10.0.0.0/8]",
        "  ports:\n  - namedPort: web\n",
    )));
    assert_one_error(&l, 11, 5, &["a named port cannot be used"]);
    let l = load(&banp(&rule(
        "Allow",
        "nodes: {}",
        "  ports:\n  - namedPort: web\n",
    )));
    assert_one_error(&l, 11, 5, &["a named port cannot be used"]);
}

// ---------------------------------------------------------------------------------------------
// Networks and domain names

#[test]
fn cidrs_must_be_masked_and_the_message_gives_the_masked_form() {
    let l = load(&cnp(&rule("Deny", "networks: [10.0.0.5/8]", "")));
    assert_one_error(
        &l,
        13,
        18,
        &["CIDR `10.0.0.5/8` has host bits set", "write `10.0.0.0/8`"],
    );

    let l = load(&cnp(&rule("Deny", "networks: [\"2001:db8::1/32\"]", "")));
    assert_one_error(
        &l,
        13,
        18,
        &[
            "`2001:db8::1/32` has host bits set",
            "write `2001:db8::/32`",
        ],
    );

    let l = load(&cnp(&rule("Deny", "networks: [192.0.2.1]", "")));
    assert_one_error(
        &l,
        13,
        18,
        &["`192.0.2.1` is not a CIDR", "write `192.0.2.1/32`"],
    );

    let l = load(&cnp(&rule("Deny", "networks: [\"2001:db8::1\"]", "")));
    assert_one_error(&l, 13, 18, &["is not a CIDR", "write `2001:db8::1/128`"]);

    let l = load(&cnp(&rule(
        "Deny",
        "networks: [10.0.0.0/8, example.com]",
        "",
    )));
    assert_one_error(&l, 13, 30, &["`example.com` is not a CIDR"]);

    let l = load(&cnp(&rule("Deny", "networks: []", "")));
    assert_one_error(&l, 13, 7, &["`networks` must have at least 1 entry"]);

    // Every bad entry is reported, not just the first.
    let l = load(&cnp(
        "- action: Deny\n  to:\n  - networks:\n    - 10.0.0.1/8\n    - 192.0.2.0/24\n    - 198.51.100.1/24\n",
    ));
    assert_errors(
        &l,
        &[
            (14, 9, "write `10.0.0.0/8`"),
            (16, 9, "write `198.51.100.0/24`"),
        ],
    );
    assert!(l.world.cluster_policies.is_empty());
}

#[test]
fn domain_name_patterns_follow_the_upstream_pattern() {
    for ok in [
        "example.com",
        "*.example.com",
        "api.example.com.",
        "A-1.b_c.example.COM",
        "*.a.b.example.com",
    ] {
        let l = load(&cnp(&rule(
            "Accept",
            &format!("domainNames: [\"{ok}\"]"),
            "",
        )));
        assert!(
            matches!(&only_rules(&l)[0].peers[0], Peer::DomainNames(d) if d.len() == 1),
            "{ok}"
        );
    }
    let cases = [
        ("*.com", "at least two labels"),
        ("localhost", "at least two labels"),
        ("*", "`*` may only stand alone"),
        ("**.example.com", "`*` may only stand alone"),
        ("foo*.example.com", "`*` may only stand alone"),
        ("www.*.example.com", "`*` may only stand alone"),
        ("-a.example.com", "start and end with a letter or digit"),
        ("a-.example.com", "start and end with a letter or digit"),
        ("_a.example.com", "start and end with a letter or digit"),
        ("^a.example.com", "labels are letters, digits"),
        ("a..example.com", "labels are letters"),
        ("example.com..", "labels are letters"),
        ("exa mple.com", "labels are letters"),
        ("", "at least two labels"),
    ];
    for (bad, why) in cases {
        let l = load(&cnp(&rule(
            "Accept",
            &format!("domainNames: [\"{bad}\"]"),
            "",
        )));
        assert_one_error(
            &l,
            13,
            21,
            &[&format!("`{bad}` is not a valid domain name pattern"), why],
        );
    }
}

#[test]
fn domain_names_are_only_for_accept_rules() {
    for action in ["Deny", "Pass"] {
        let l = load(&cnp(&rule(action, "domainNames: [api.example.com]", "")));
        assert_one_error(
            &l,
            13,
            7,
            &[
                &format!("may only be used in Accept rules, not {action}"),
                "NPEP-133",
            ],
        );
    }
    let l = load(&anp(&rule("Deny", "domainNames: [api.example.com]", "")));
    assert_one_error(&l, 13, 7, &["may only be used in Accept rules, not Deny"]);
    let l = load(&anp(&rule("Allow", "domainNames: [api.example.com]", "")));
    assert!(matches!(&only_rules(&l)[0].peers[0], Peer::DomainNames(_)));
    // Baseline ClusterNetworkPolicies may use them (v1alpha2).
    let l = load(
        &cnp(&rule("Accept", "domainNames: [api.example.com]", ""))
            .replace("tier: Admin", "tier: Baseline"),
    );
    assert!(matches!(&only_rules(&l)[0].peers[0], Peer::DomainNames(_)));
}

// ---------------------------------------------------------------------------------------------
// BaselineAdminNetworkPolicy

#[test]
fn a_baseline_admin_network_policy_is_named_default() {
    let l = load(
        &banp(ACCEPT_NET.replace("Accept", "Allow").as_str())
            .replace("name: default", "name: baseline"),
    );
    assert_one_error(&l, 4, 3, &["singleton and must be named `default`"]);
}

#[test]
fn a_baseline_admin_network_policy_has_no_priority_and_no_domain_names() {
    let allow = ACCEPT_NET.replace("Accept", "Allow");
    let l = load(&banp(&allow).replace("spec:\n", "spec:\n  priority: 5\n"));
    assert_one_error(
        &l,
        6,
        3,
        &["a BaselineAdminNetworkPolicy has no `priority`"],
    );

    let l = load(&banp(&rule("Allow", "domainNames: [api.example.com]", "")));
    assert_one_error(
        &l,
        13,
        7,
        &["`domainNames` is not part of BaselineAdminNetworkPolicy v1alpha1"],
    );
}

// ---------------------------------------------------------------------------------------------
// Pods and selectors

#[test]
fn v1alpha1_pods_need_a_namespace_selector_v1alpha2_pods_do_not() {
    let pods = "  subject:\n    pods:\n      podSelector: {}\n";
    let l = load(
        &anp(ACCEPT_NET.replace("Accept", "Allow").as_str()).replace(
            "  subject:\n    namespaces:\n      matchLabels: {team: a}\n",
            pods,
        ),
    );
    assert_one_error(&l, 8, 5, &["`namespaceSelector` is required in v1alpha1"]);

    let l = load(&anp(&rule("Allow", "pods: {podSelector: {}}", "")));
    assert_one_error(&l, 13, 7, &["`namespaceSelector` is required in v1alpha1"]);

    let l = load(&cnp(&rule("Accept", "pods: {podSelector: {}}", "")));
    assert!(
        only_rules(&l)[0].peers[0]
            == Peer::Pods {
                namespaces: Default::default(),
                pods: Default::default()
            }
    );
}

#[test]
fn pods_need_a_pod_selector() {
    let l = load(&cnp(&rule("Accept", "pods: {namespaceSelector: {}}", "")));
    assert_one_error(&l, 13, 7, &["`podSelector` is required"]);
    let l = load(&cnp(ACCEPT_NET).replace(
        "    namespaces: {}\n",
        "    pods: {namespaceSelector: {}}\n",
    ));
    assert_one_error(&l, 9, 5, &["`podSelector` is required"]);
}

#[test]
fn selector_operators_are_checked_everywhere() {
    let subject = "    namespaces:
      matchExpressions:
      - {key: team, operator: In}
      - {key: env, operator: Exists, values: [prod]}
      - {key: tier, operator: Equals, values: [x]}
      - {key: ok, operator: NotIn, values: [x]}
";
    let l = load(&cnp(ACCEPT_NET).replace("    namespaces: {}\n", subject));
    assert_errors(
        &l,
        &[
            (11, 9, "operator `In` needs at least one value"),
            (12, 9, "operator `Exists` takes no values"),
            (
                13,
                21,
                "unknown operator `Equals`; use In, NotIn, Exists or DoesNotExist",
            ),
        ],
    );
    assert!(l.world.cluster_policies.is_empty());

    // In peers: namespaces, pods (both selectors) and nodes.
    let peers = "- action: Deny
  to:
  - namespaces: {matchExpressions: [{key: a, operator: NotIn, values: []}]}
  - pods:
      namespaceSelector: {matchExpressions: [{key: b, operator: DoesNotExist, values: [x]}]}
      podSelector: {matchExpressions: [{key: c, operator: Gt, values: [\"1\"]}]}
  - nodes: {matchExpressions: [{key: d, operator: In}]}
";
    let l = load(&cnp(peers));
    assert_errors(
        &l,
        &[
            (13, 39, "operator `NotIn` needs at least one value"),
            (15, 48, "operator `DoesNotExist` takes no values"),
            (16, 51, "unknown operator `Gt`"),
            (17, 34, "operator `In` needs at least one value"),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Ingress rules are validated even though an egress gateway does not enforce them.

#[test]
fn ingress_rules_are_validated() {
    let ingress = "  ingress:
  - action: Allow
    from: [{namespaces: {}}]
  - action: Accept
  - action: Deny
    from:
    - {}
    protocols:
    - tcp: {destinationPort: {number: 0}}
";
    let l = load(&(cnp(ACCEPT_NET) + ingress));
    assert_errors(
        &l,
        &[
            (15, 5, "unknown action `Allow`"),
            (17, 5, "`from` is required"),
            (
                20,
                7,
                "this peer sets no field; set exactly one of `namespaces`, `pods`",
            ),
            (22, 31, "port 0 is out of range"),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Hints for common mistakes (unknown fields are errors in Reject mode).

#[test]
fn unknown_fields_are_errors_with_hints() {
    // v1alpha2 renamed `ports` to `protocols`.
    let l = load(&cnp(&format!(
        "{ACCEPT_NET}  ports:\n  - portNumber: {{port: 80}}\n"
    )));
    assert_one_error(
        &l,
        14,
        5,
        &[
            "unknown field `ports`",
            "replaced `ports:` with `protocols:`",
        ],
    );

    // v1alpha1 has no `protocols`.
    let l = load(&anp(&format!(
        "{}  protocols:\n  - tcp: {{destinationPort: {{number: 80}}}}\n",
        ACCEPT_NET.replace("Accept", "Allow")
    )));
    assert_one_error(
        &l,
        14,
        5,
        &["unknown field `protocols`", "v1alpha1 uses `ports:`"],
    );

    // A subject written like a NetworkPolicy: one error, not a second one about the subject.
    let l = load(&cnp(ACCEPT_NET).replace("    namespaces: {}\n", "    podSelector: {}\n"));
    assert_one_error(
        &l,
        9,
        5,
        &[
            "unknown field `podSelector`",
            "subject: {pods: {namespaceSelector",
        ],
    );
    let l = load(&cnp(ACCEPT_NET).replace("    namespaces: {}\n", "    namespaceSelector: {}\n"));
    assert_one_error(
        &l,
        9,
        5,
        &[
            "unknown field `namespaceSelector`",
            "subject: {namespaces: {matchLabels",
        ],
    );

    // Peers under `from:` in an egress rule.
    let l = load(&cnp(
        "- action: Deny\n  from:\n  - networks: [10.0.0.0/8]\n",
    ));
    let errs = errors(&l);
    assert!(
        errs.iter().any(|d| (d.line, d.column) == (12, 5)
            && d.message
                .contains("egress rules list their peers under `to:`")),
        "{}",
        dump(&l)
    );

    // A peer with only an unknown field: the unknown field is the error, not "sets no field".
    let l = load(&cnp(&rule("Accept", "fqdn: [example.com]", "")));
    assert_one_error(&l, 13, 7, &["unknown field `fqdn`"]);
}
