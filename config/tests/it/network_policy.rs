//! NetworkPolicy v1, egress side (compile/network_policy.rs): policyTypes defaulting, peers,
//! ipBlock, ports and endPort, with the position of every finding.
//!
//! `np(egress, extra)` from `common` puts the egress items on line 10 (a rule's first key at
//! column 5, a peer's at column 7) and `extra` after them.

use crate::common::*;
use chokepoint_config::model::{
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyPortSpec, NetworkPolicyRule, PortRange,
    Protocol, Requirement, Selector,
};

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// policyTypes

#[test]
fn an_egress_section_without_policy_types_isolates_egress() {
    let l = load(&np("- to:\n  - ipBlock: {cidr: 10.0.0.0/8}\n", ""));
    let p = only_network_policy(&l);
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("team-a", "np"));
    assert_eq!(p.pod_selector, Selector::equals("app", "web"));
    assert_eq!(
        p.egress,
        Some(vec![NetworkPolicyRule {
            peers: vec![NetworkPolicyPeer::IpBlock {
                cidr: net("10.0.0.0/8"),
                except: vec![]
            }],
            ports: vec![],
        }])
    );
}

#[test]
fn policy_types_egress_without_rules_isolates_with_zero_rules() {
    let l = load(&np("", "policyTypes: [Egress]"));
    assert_eq!(only_network_policy(&l).egress, Some(vec![]));
    let l = load(&np("", "policyTypes: [Ingress, Egress]\negress: []"));
    assert_eq!(only_network_policy(&l).egress, Some(vec![]));
}

#[test]
fn only_ingress_leaves_egress_alone() {
    // No policyTypes, no egress section: defaults to [Ingress].
    let l = load(&np("", "ingress:\n- from: [{podSelector: {}}]"));
    assert_eq!(only_network_policy(&l).egress, None);
    // Explicit [Ingress]: egress rules that are present do not isolate.
    let l = load(&np("- to: [{podSelector: {}}]\n", "policyTypes: [Ingress]"));
    assert_eq!(only_network_policy(&l).egress, None);
    // An empty egress list is no egress section.
    let l = load(&np("", "egress: []"));
    assert_eq!(only_network_policy(&l).egress, None);
}

#[test]
fn unknown_policy_types_are_errors() {
    let l = load(&np("", "policyTypes: [Egress, egress]"));
    assert_one_error(
        &l,
        9,
        25,
        &["unknown policy type `egress`", "use Ingress or Egress"],
    );
}

#[test]
fn an_empty_rule_allows_everything() {
    let l = load(&np("- {}\n", ""));
    assert_eq!(
        only_network_policy(&l).egress,
        Some(vec![NetworkPolicyRule {
            peers: vec![],
            ports: vec![]
        }])
    );
}

#[test]
fn a_missing_pod_selector_selects_every_pod_and_namespace_defaults() {
    let text = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
spec:
  policyTypes: [Egress]
";
    let p = only_network_policy(&load(text)).clone();
    assert_eq!(p.namespace, "default");
    assert!(p.pod_selector.is_everything());
    assert_eq!(p.egress, Some(vec![]));
}

#[test]
fn name_and_spec_are_required() {
    let l = load(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  namespace: a\nspec: {}\n",
    );
    assert_one_error(&l, 3, 1, &["`metadata.name` is required"]);
    let l = load("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\n");
    assert_one_error(&l, 1, 1, &["`spec` is required"]);
}

// ---------------------------------------------------------------------------------------------
// Peers

#[test]
fn selector_peers_and_and_or() {
    let egress = "- to:
  - podSelector: {matchLabels: {app: db}}
  - namespaceSelector: {}
  - namespaceSelector: {matchLabels: {team: b}}
    podSelector: {matchExpressions: [{key: app, operator: Exists}]}
";
    let l = load(&np(egress, ""));
    let rules = only_network_policy(&l).egress.clone().unwrap();
    assert_eq!(
        rules[0].peers,
        vec![
            NetworkPolicyPeer::Pods {
                namespaces: None,
                pods: Some(Selector::equals("app", "db"))
            },
            NetworkPolicyPeer::Pods {
                namespaces: Some(Selector::everything()),
                pods: None
            },
            NetworkPolicyPeer::Pods {
                namespaces: Some(Selector::equals("team", "b")),
                pods: Some(Selector {
                    requirements: vec![Requirement::Exists("app".into())]
                }),
            },
        ]
    );
}

#[test]
fn a_peer_must_set_something() {
    let l = load(&np("- to:\n  - {}\n", ""));
    assert_one_error(
        &l,
        11,
        7,
        &[
            "a peer must set `podSelector`, `namespaceSelector`",
            "or `ipBlock`",
        ],
    );
}

#[test]
fn ip_block_cannot_be_combined_with_selectors() {
    for other in ["podSelector: {}", "namespaceSelector: {}"] {
        let l = load(&np(
            &format!("- to:\n  - ipBlock: {{cidr: 10.0.0.0/8}}\n    {other}\n"),
            "",
        ));
        assert_one_error(
            &l,
            11,
            7,
            &["`ipBlock` cannot be combined with `podSelector` or `namespaceSelector`"],
        );
    }
}

#[test]
fn ip_block_except_must_lie_strictly_inside() {
    let ok =
        "- to:\n  - ipBlock:\n      cidr: 10.0.0.0/8\n      except: [10.1.0.0/16, 10.2.3.0/24]\n";
    let l = load(&np(ok, ""));
    assert_eq!(
        only_network_policy(&l).egress.as_ref().unwrap()[0].peers,
        vec![NetworkPolicyPeer::IpBlock {
            cidr: net("10.0.0.0/8"),
            except: vec![net("10.1.0.0/16"), net("10.2.3.0/24")],
        }]
    );

    let bad = "- to:
  - ipBlock:
      cidr: 10.0.0.0/8
      except:
      - 10.0.0.0/8
      - 192.168.0.0/16
      - 10.0.0.0/7
      - \"2001:db8::/64\"
      - 10.9.0.0/16
";
    let l = load(&np(bad, ""));
    assert_errors(
        &l,
        &[
            (
                14,
                11,
                "except `10.0.0.0/8` must lie strictly inside cidr `10.0.0.0/8`",
            ),
            (15, 11, "except `192.168.0.0/16` must lie strictly inside"),
            (16, 11, "except `10.0.0.0/7` must lie strictly inside"),
            (17, 11, "except `2001:db8::/64` must lie strictly inside"),
        ],
    );
    assert!(l.world.network_policies.is_empty());
}

#[test]
fn ip_block_cidrs_are_parsed_and_host_bits_only_warned_about() {
    let l = load(&np(
        "- to:\n  - ipBlock: {cidr: 10.0.0.5/8, except: [10.1.2.3/16]}\n",
        "",
    ));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[(
            11,
            17,
            "`10.0.0.5/8` has host bits set; it is read as `10.0.0.0/8`",
        )],
    );
    assert_eq!(
        l.world.network_policies[0].egress.as_ref().unwrap()[0].peers,
        vec![NetworkPolicyPeer::IpBlock {
            cidr: net("10.0.0.0/8"),
            except: vec![net("10.1.0.0/16")]
        }]
    );

    let l = load(&np("- to:\n  - ipBlock: {cidr: 10.0.0.1}\n", ""));
    assert_one_error(
        &l,
        11,
        17,
        &["`10.0.0.1` is not a CIDR", "write `10.0.0.1/32`"],
    );
    let l = load(&np(
        "- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [nope]}\n",
        "",
    ));
    assert_one_error(&l, 11, 44, &["`nope` is not a CIDR"]);
}

#[test]
fn selector_operators_are_checked() {
    let text = np(
        "- to:\n  - podSelector: {matchExpressions: [{key: a, operator: In}]}\n",
        "",
    )
    .replace(
        "matchLabels: {app: web}",
        "matchExpressions: [{key: app, operator: Exists, values: [x]}]",
    );
    let l = load(&text);
    assert_errors(
        &l,
        &[
            (8, 24, "operator `Exists` takes no values"),
            (11, 40, "operator `In` needs at least one value"),
        ],
    );
    assert!(l.world.network_policies.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Ports

fn ports_of(egress: &str) -> Vec<NetworkPolicyPort> {
    let l = load(&np(egress, ""));
    only_network_policy(&l).egress.as_ref().unwrap()[0]
        .ports
        .clone()
}

#[test]
fn ports_default_to_tcp_and_take_numbers_names_and_ranges() {
    let ports = ports_of(
        "- ports:
  - port: 443
  - protocol: UDP
    port: 53
  - protocol: SCTP
  - port: http
  - port: 8000
    endPort: 8100
  - port: 9000
    endPort: 9000
",
    );
    assert_eq!(
        ports,
        vec![
            NetworkPolicyPort {
                protocol: Protocol::Tcp,
                port: NetworkPolicyPortSpec::Range(PortRange::single(443))
            },
            NetworkPolicyPort {
                protocol: Protocol::Udp,
                port: NetworkPolicyPortSpec::Range(PortRange::single(53))
            },
            NetworkPolicyPort {
                protocol: Protocol::Sctp,
                port: NetworkPolicyPortSpec::Any
            },
            NetworkPolicyPort {
                protocol: Protocol::Tcp,
                port: NetworkPolicyPortSpec::Named("http".into())
            },
            NetworkPolicyPort {
                protocol: Protocol::Tcp,
                port: NetworkPolicyPortSpec::Range(PortRange {
                    first: 8000,
                    last: 8100
                }),
            },
            NetworkPolicyPort {
                protocol: Protocol::Tcp,
                port: NetworkPolicyPortSpec::Range(PortRange::single(9000))
            },
        ]
    );
}

#[test]
fn end_port_rules() {
    let l = load(&np("- ports:\n  - port: 8100\n    endPort: 8000\n", ""));
    assert_one_error(&l, 12, 7, &["endPort 8000 must not be less than port 8100"]);

    let l = load(&np("- ports:\n  - endPort: 8000\n", ""));
    assert_one_error(&l, 11, 7, &["`endPort` needs a numeric `port`"]);

    let l = load(&np("- ports:\n  - port: http\n    endPort: 8000\n", ""));
    assert_one_error(&l, 12, 7, &["`endPort` cannot be used with a named port"]);

    let l = load(&np("- ports:\n  - port: 80\n    endPort: 65536\n", ""));
    assert_one_error(&l, 12, 7, &["port 65536 is out of range"]);
}

#[test]
fn port_numbers_and_names_are_checked() {
    for bad in [0, 65536] {
        let l = load(&np(&format!("- ports:\n  - port: {bad}\n"), ""));
        assert_one_error(&l, 11, 7, &[&format!("port {bad} is out of range")]);
    }
    for bad in [
        "HTTP",
        "my_port",
        "-web",
        "web-",
        "a--b",
        "averyveryverylong",
        "123-456",
    ] {
        let l = load(&np(&format!("- ports:\n  - port: \"{bad}\"\n"), ""));
        assert_one_error(&l, 11, 7, &[&format!("`{bad}` is not a valid port name")]);
    }
    let l = load(&np("- ports:\n  - protocol: ICMP\n    port: 8\n", ""));
    assert_one_error(&l, 11, 7, &["unknown protocol `ICMP`", "TCP, UDP or SCTP"]);
    let l = load(&np("- ports:\n  - protocol: tcp\n", ""));
    assert_one_error(&l, 11, 7, &["unknown protocol `tcp`"]);
}

#[test]
fn every_mistake_of_a_network_policy_is_reported() {
    let egress = "- to:
  - {}
  ports:
  - port: 0
- to:
  - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}
  ports:
  - protocol: ICMP
";
    let l = load(&np(egress, "policyTypes: [Outbound]"));
    assert_errors(
        &l,
        &[
            (11, 7, "a peer must set"),
            (13, 7, "port 0 is out of range"),
            (15, 44, "except `11.0.0.0/8` must lie strictly inside"),
            (17, 7, "unknown protocol `ICMP`"),
            (18, 17, "unknown policy type `Outbound`"),
        ],
    );
}
