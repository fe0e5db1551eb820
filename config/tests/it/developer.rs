//! DeveloperNetworkPolicy `policy.chokepoint.dev/v1alpha1` (compile/developer.rs, with the
//! rule, peer and protocol checks it shares with ClusterNetworkPolicy v1alpha2): normalization,
//! and every finding with its line and column.
//!
//! `dnp(egress)` from `common` builds the DeveloperNetworkPolicy `team-a/p` (subject
//! `app: web`); its egress list starts on line 11, so in
//! `dnp("- action: Accept\n  to:\n  - networks: [10.0.0.0/8]\n")` the rule stands on 11:5, `to`
//! on 12:5, the peer on 13:7 and the CIDR on 13:18.

use crate::common::*;
use chokepoint_config::model::{
    Action, DomainPattern, Peer, PortMatch, PortRange, Protocol, Rule, Selector, ServicePeer,
};

const ACCEPT_NET: &str = "- action: Accept\n  to:\n  - networks: [10.0.0.0/8]\n";

/// A rule with `action` and one peer line (a list item under `to:`), then `more` lines.
fn rule(action: &str, peer: &str, more: &str) -> String {
    format!("- action: {action}\n  to:\n  - {peer}\n{more}")
}

/// `n` copies of `item` (one YAML line), each with `{i}` replaced by its index.
fn items(n: usize, item: &str) -> String {
    (0..n)
        .map(|i| format!("{}\n", item.replace("{i}", &i.to_string())))
        .collect()
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn tcp(first: u16, last: u16) -> PortMatch {
    PortMatch::Port {
        protocol: Protocol::Tcp,
        ports: PortRange { first, last },
    }
}

// ---------------------------------------------------------------------------------------------
// Normalization

#[test]
fn a_full_policy_normalizes_onto_the_cluster_rule_model() {
    let egress = r#"- name: same-namespace-db
  action: Accept
  to:
  - pods:
      podSelector: {matchLabels: {app: db}}
  protocols:
  - tcp: {destinationPort: {number: 5432}}
- name: cluster-dns
  action: Accept
  to:
  - pods:
      namespaceSelector: {}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
  protocols:
  - udp: {destinationPort: {number: 53}}
  - destinationNamedPort: dns-tcp
- name: stripe
  action: Accept
  to:
  - domainNames: [api.stripe.com, "*.Stripe.com."]
  protocols:
  - tcp: {destinationPort: {range: {start: 443, end: 444}}}
- name: never-the-office
  action: Deny
  to:
  - networks: [192.168.0.0/16, "fd00:abcd::/32"]
  - namespaces: {matchLabels: {security: restricted}}
"#;
    let l = load(&dnp(egress));
    let p = only_developer_policy(&l);
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("team-a", "p"));
    assert_eq!(p.pod_selector, Selector::equals("app", "web"));
    assert_eq!(
        (p.origin.file.to_str(), p.origin.line),
        (Some(FILE), 1),
        "the origin is where the object starts"
    );
    let rule = |name: &str, action, peers, protocols| Rule {
        name: Some(name.to_owned()),
        action,
        peers,
        protocols,
        unknown_fields: false,
    };
    assert_eq!(
        p.egress,
        vec![
            rule(
                "same-namespace-db",
                Action::Accept,
                vec![Peer::Pods {
                    // Omitted namespaceSelector: the policy's own namespace.
                    namespaces: Selector::equals("kubernetes.io/metadata.name", "team-a"),
                    pods: Selector::equals("app", "db"),
                }],
                Some(vec![PortMatch::Port {
                    protocol: Protocol::Tcp,
                    ports: PortRange::single(5432),
                }]),
            ),
            rule(
                "cluster-dns",
                Action::Accept,
                vec![Peer::Pods {
                    // `{}` says every namespace, explicitly.
                    namespaces: Selector::everything(),
                    pods: Selector::equals("k8s-app", "kube-dns"),
                }],
                Some(vec![
                    PortMatch::Port {
                        protocol: Protocol::Udp,
                        ports: PortRange::single(53),
                    },
                    PortMatch::Named("dns-tcp".into()),
                ]),
            ),
            rule(
                "stripe",
                Action::Accept,
                vec![Peer::DomainNames(vec![
                    DomainPattern::parse("api.stripe.com"),
                    DomainPattern::parse("*.stripe.com"),
                ])],
                Some(vec![tcp(443, 444)]),
            ),
            rule(
                "never-the-office",
                Action::Deny,
                vec![
                    Peer::Networks(vec![net("192.168.0.0/16"), net("fd00:abcd::/32")]),
                    Peer::Namespaces(Selector::equals("security", "restricted")),
                ],
                None,
            ),
        ]
    );
}

#[test]
fn an_omitted_pod_namespace_selector_is_the_policys_own_namespace() {
    // The same peer in two namespaces' policies selects each policy's own namespace.
    let peer = "pods: {podSelector: {matchLabels: {app: db}}}";
    let a = dnp(&rule("Accept", peer, ""));
    let b = a.replace("namespace: team-a", "namespace: team-b");
    let l = load(&format!("{a}---\n{b}"));
    assert_clean(&l);
    let own: Vec<(&str, &Peer)> = l
        .world
        .developer_policies
        .iter()
        .map(|p| (p.namespace.as_str(), &p.egress[0].peers[0]))
        .collect();
    let db_in = |ns: &str| Peer::Pods {
        namespaces: Selector::equals("kubernetes.io/metadata.name", ns),
        pods: Selector::equals("app", "db"),
    };
    assert_eq!(
        own,
        vec![("team-a", &db_in("team-a")), ("team-b", &db_in("team-b"))]
    );

    // An explicit selector is kept as written, also one that names other namespaces.
    let l = load(&dnp(&rule(
        "Deny",
        "pods: {namespaceSelector: {matchLabels: {team: b}}, podSelector: {}}",
        "",
    )));
    assert_eq!(
        only_developer_policy(&l).egress[0].peers,
        vec![Peer::Pods {
            namespaces: Selector::equals("team", "b"),
            pods: Selector::everything(),
        }]
    );
}

#[test]
fn an_empty_pod_selector_selects_every_pod_and_the_namespace_defaults() {
    let text = "apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata:
  name: everyone
spec:
  subject: {podSelector: {}}
";
    let l = load(text);
    let p = only_developer_policy(&l);
    assert_eq!(p.namespace, "default", "as kubectl applies it");
    assert!(p.pod_selector.is_everything());
    assert!(p.egress.is_empty(), "no rules: the policy never decides");
    // ... and an own-namespace `pods` peer in it means `default`.
    let l = load(&format!(
        "{text}  egress:\n  - {{action: Accept, to: [{{pods: {{podSelector: {{}}}}}}]}}\n"
    ));
    assert_eq!(
        only_developer_policy(&l).egress[0].peers,
        vec![Peer::Pods {
            namespaces: Selector::equals("kubernetes.io/metadata.name", "default"),
            pods: Selector::everything(),
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Required fields, actions

#[test]
fn name_spec_subject_and_pod_selector_are_required() {
    let l = load(&dnp(ACCEPT_NET).replace("  name: p\n", ""));
    assert_one_error(&l, 3, 1, &["`metadata.name` is required"]);

    let l = load(
        "apiVersion: policy.chokepoint.dev/v1alpha1\nkind: DeveloperNetworkPolicy\nmetadata: {name: p, namespace: a}\n",
    );
    assert_one_error(&l, 1, 1, &["`spec` is required"]);

    let l = load(&dnp(ACCEPT_NET).replace(
        "  subject:\n    podSelector:\n      matchLabels: {app: web}\n",
        "",
    ));
    assert_one_error(
        &l,
        6,
        1,
        &["`subject` is required", "subject: {podSelector: {...}}"],
    );

    let l = load(&dnp(ACCEPT_NET).replace(
        "    podSelector:\n      matchLabels: {app: web}\n",
        "    {}\n",
    ));
    assert_one_error(
        &l,
        7,
        3,
        &[
            "`podSelector` is required",
            "`{}` selects every pod of the namespace",
        ],
    );
}

#[test]
fn actions_are_accept_and_deny_only() {
    for (name, action) in [("Accept", Action::Accept), ("Deny", Action::Deny)] {
        let l = load(&dnp(&rule(name, "networks: [10.0.0.0/8]", "")));
        assert_eq!(only_developer_policy(&l).egress[0].action, action);
    }
    for bad in ["Pass", "Allow", "accept"] {
        let l = load(&dnp(&rule(bad, "networks: [10.0.0.0/8]", "")));
        assert_one_error(
            &l,
            11,
            5,
            &[
                &format!("unknown action `{bad}`"),
                "use Accept or Deny",
                "no Pass",
            ],
        );
    }
    let l = load(&dnp("- to: [{networks: [10.0.0.0/8]}]\n"));
    assert_one_error(&l, 11, 5, &["`action` is required", "use Accept or Deny"]);
}

// ---------------------------------------------------------------------------------------------
// Peers

#[test]
fn domain_names_only_in_accept_rules() {
    let l = load(&dnp(&rule("Accept", "domainNames: [api.example.com]", "")));
    assert_eq!(
        only_developer_policy(&l).egress[0].peers,
        vec![Peer::DomainNames(vec![DomainPattern::parse(
            "api.example.com"
        )])]
    );
    let l = load(&dnp(&rule("Deny", "domainNames: [api.example.com]", "")));
    assert_one_error(
        &l,
        13,
        7,
        &[
            "`domainNames` may only be used in Accept rules, not Deny",
            "NPEP-133",
            "deny its addresses with `networks` instead",
        ],
    );
    // The pattern rules are the ClusterNetworkPolicy ones.
    let l = load(&dnp(&rule("Accept", "domainNames: [\"*.com\"]", "")));
    assert_one_error(&l, 13, 21, &["`*.com` is not a valid domain name pattern"]);
}

#[test]
fn nodes_peers_are_for_cluster_admins() {
    let l = load(&dnp(&rule("Accept", "nodes: {}", "")));
    assert_one_error(
        &l,
        13,
        7,
        &[
            "`nodes` is not a DeveloperNetworkPolicy peer",
            "ClusterNetworkPolicy",
            "use `networks`",
        ],
    );
}

#[test]
fn a_peer_sets_exactly_one_field() {
    let l = load(&dnp(&rule(
        "Accept",
        "{networks: [10.0.0.0/8], namespaces: {}}",
        "",
    )));
    assert_one_error(
        &l,
        13,
        7,
        &["this peer sets `namespaces` and `networks`; set exactly one of"],
    );
}

#[test]
fn the_shared_cidr_port_and_named_port_checks_apply() {
    let l = load(&dnp(&rule("Deny", "networks: [10.0.0.5/8]", "")));
    assert_one_error(&l, 13, 18, &["has host bits set; write `10.0.0.0/8`"]);

    let l = load(&dnp(&rule(
        "Accept",
        "networks: [10.0.0.0/8]",
        "  protocols:\n  - tcp: {destinationPort: {range: {start: 443, end: 443}}}\n",
    )));
    assert_one_error(
        &l,
        15,
        31,
        &[
            "range start 443 must be less than end 443",
            "write `number: 443`",
        ],
    );

    let l = load(&dnp(&rule(
        "Accept",
        "networks: [10.0.0.0/8]",
        "  protocols:\n  - destinationNamedPort: http\n",
    )));
    assert_one_error(
        &l,
        11,
        5,
        &["a named port cannot be used with `networks`, `nodes` or `domainNames` peers"],
    );
}

// ---------------------------------------------------------------------------------------------
// `services` peers

fn service(namespace: &str, name: &str, ports: Option<&[&str]>) -> ServicePeer {
    ServicePeer {
        namespace: namespace.into(),
        name: name.into(),
        ports: ports.map(|p| p.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn a_services_peer_names_services_by_namespace_and_name_and_optionally_port_names() {
    let egress = r#"- name: api-server
  action: Accept
  to:
  - services:
    - {namespace: default, name: kubernetes, ports: [https]}
    - {name: db}
    - {namespace: egress, name: proxy, ports: [http-proxy, admin]}
"#;
    let l = load(&dnp(egress));
    let p = only_developer_policy(&l);
    assert_eq!(
        p.egress[0].peers,
        vec![Peer::Services(vec![
            service("default", "kubernetes", Some(&["https"])),
            // No namespace: the policy's own, like a `pods` peer.
            service("team-a", "db", None),
            service("egress", "proxy", Some(&["http-proxy", "admin"])),
        ])]
    );
}

#[test]
fn services_entries_are_checked_at_their_fields() {
    let cases: [(&str, u64, u64, &[&str]); 7] = [
        (
            "services: [{namespace: default}]",
            13,
            18,
            &["`name` is required: the Service's name"],
        ),
        (
            "services: [{name: Kube_API}]",
            13,
            19,
            &["`Kube_API` is not a Service name", "starting with a letter"],
        ),
        (
            "services: [{name: 1api}]",
            13,
            19,
            &["`1api` is not a Service name"],
        ),
        (
            "services: [{namespace: Team-A, name: db}]",
            13,
            19,
            &["`Team-A` is not a namespace name"],
        ),
        (
            "services: [{name: db, ports: [HTTPS]}]",
            13,
            37,
            &["`HTTPS` is not a Service port name", "`spec.ports[].name`"],
        ),
        (
            "services: [{name: db, ports: [a-very-long-port-name]}]",
            13,
            37,
            &["at most 15"],
        ),
        (
            "services: [{name: db, port: 443}]",
            13,
            29,
            &["unknown field `port`"],
        ),
    ];
    for (peer, line, column, parts) in cases {
        assert_one_error(&load(&dnp(&rule("Accept", peer, ""))), line, column, parts);
    }
    // Empty lists say how many entries are needed.
    let l = load(&dnp(&rule("Accept", "services: []", "")));
    assert_one_error(&l, 13, 7, &["`services` must have at least 1 entry"]);
    let l = load(&dnp(&rule(
        "Accept",
        "services: [{name: db, ports: []}]",
        "",
    )));
    assert_one_error(&l, 13, 29, &["`ports` must have at least 1 entry"]);
    // Every mistake of one peer, each at its own field.
    let l = load(&dnp(&rule(
        "Deny",
        "services: [{name: Db}, {namespace: x_y, name: ok}]",
        "",
    )));
    assert_errors(
        &l,
        &[
            (13, 19, "`Db` is not a Service name"),
            (13, 31, "`x_y` is not a namespace name"),
        ],
    );
}

#[test]
fn services_are_one_peer_field_and_only_developer_policies_have_them() {
    let l = load(&dnp(&rule(
        "Accept",
        "{services: [{name: db}], networks: [10.0.0.0/8]}",
        "",
    )));
    assert_one_error(&l, 13, 7, &["this peer sets `networks` and `services`"]);
    let l = load(&cnp(&rule("Accept", "services: [{name: db}]", "")));
    assert_one_error(
        &l,
        13,
        7,
        &[
            "unknown field `services`: only a DeveloperNetworkPolicy has `services` peers",
            "`pods`",
        ],
    );
    // Read from a cluster, a cluster policy's `services` peer fails closed.
    let l = load_fail_closed(&cnp(&rule("Deny", "services: [{name: db}]", "")));
    assert_errors(&l, &[]);
    assert_warnings(&l, &[(13, 7, "the peer fails closed")]);
    assert_eq!(
        l.world.cluster_policies[0].egress[0].peers,
        vec![Peer::Unknown]
    );
}

#[test]
fn at_most_25_services_and_25_port_names() {
    let names = |n: usize| {
        (0..n)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let many = |n: usize| {
        format!(
            "services: [{}]",
            (0..n)
                .map(|i| format!("{{name: s{i}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    only_developer_policy(&load(&dnp(&rule("Accept", &many(25), ""))));
    let l = load(&dnp(&rule("Accept", &many(26), "")));
    assert_one_error(
        &l,
        13,
        7,
        &["`services` has 26 entries; at most 25 are allowed"],
    );
    let ports = |n: usize| format!("services: [{{name: db, ports: [{}]}}]", names(n));
    only_developer_policy(&load(&dnp(&rule("Accept", &ports(25), ""))));
    let l = load(&dnp(&rule("Accept", &ports(26), "")));
    assert_one_error(
        &l,
        13,
        29,
        &["`ports` has 26 entries; at most 25 are allowed"],
    );
}

/// A Service the inventory lists, for the resolution warnings.
const DB_SERVICE: &str = "---
apiVersion: v1
kind: Service
metadata: {namespace: team-a, name: db}
spec:
  clusterIPs: [10.96.0.20]
  ports: [{name: pg, port: 5432}, {name: metrics, port: 9187}]
";

#[test]
fn services_and_port_names_the_inventory_lacks_are_warned_about_at_the_policy() {
    let peer = "services: [{name: db, ports: [pg, pgbouncer]}, {name: cache}]";
    let l = load(&format!("{}{DB_SERVICE}", dnp(&rule("Accept", peer, ""))));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[
            (
                1,
                1,
                "spec.egress[0].to[0].services[0].ports[1]: Service team-a/db has no port named `pgbouncer` (its named ports: pg, metrics); the name matches nothing",
            ),
            (
                1,
                1,
                "spec.egress[0].to[0].services[1]: the inventory has no Service team-a/cache; the entry matches nothing until it exists",
            ),
        ],
    );
    assert_eq!(
        warnings(&l)[0].object.as_deref(),
        Some("DeveloperNetworkPolicy/team-a/p")
    );
    // The policy still loads: the Service may come later.
    assert_eq!(l.world.developer_policies.len(), 1);
    // Without any Service in the inventory (policies checked on their own) nothing is said.
    assert_clean(&load(&dnp(&rule("Accept", peer, ""))));
}

// ---------------------------------------------------------------------------------------------
// Limits (the upstream v1alpha2 ones)

#[test]
fn at_most_25_rules_peers_protocols_cidrs_and_domain_names() {
    type Build = fn(usize) -> String;
    let cases: [(&str, Build, u64, u64); 5] = [
        (
            "egress",
            |n| items(n, "- {action: Accept, to: [{networks: [10.0.0.0/8]}]}"),
            10,
            3,
        ),
        (
            "to",
            |n| {
                format!(
                    "- action: Accept\n  to:\n{}",
                    items(n, "  - networks: [10.0.{i}.0/24]")
                )
            },
            12,
            5,
        ),
        (
            "protocols",
            |n| {
                format!(
                    "{ACCEPT_NET}  protocols:\n{}",
                    items(n, "  - tcp: {destinationPort: {number: 1{i}}}")
                )
            },
            14,
            5,
        ),
        (
            "networks",
            |n| {
                format!(
                    "- action: Deny\n  to:\n  - networks:\n{}",
                    items(n, "    - 10.0.{i}.0/24")
                )
            },
            13,
            7,
        ),
        (
            "domainNames",
            |n| {
                format!(
                    "- action: Accept\n  to:\n  - domainNames:\n{}",
                    items(n, "    - host{i}.example.com")
                )
            },
            13,
            7,
        ),
    ];
    for (field, build, line, column) in cases {
        let l = load(&dnp(&build(25)));
        only_developer_policy(&l);
        let l = load(&dnp(&build(26)));
        assert_one_error(
            &l,
            line,
            column,
            &[&format!("`{field}` has 26 entries; at most 25 are allowed")],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown fields, with hints for habits from the other kinds

#[test]
fn unknown_fields_are_rejected_with_hints() {
    let base = dnp(ACCEPT_NET);
    let cases: [(String, u64, u64, &[&str]); 7] = [
        (
            base.replace("spec:\n", "spec:\n  priority: 10\n"),
            7,
            3,
            &[
                "unknown field `priority`",
                "no tier or priority",
                "Deny rules win over its Accept rules",
            ],
        ),
        (
            base.replace("spec:\n", "spec:\n  tier: Admin\n"),
            7,
            3,
            &["unknown field `tier`", "no tier or priority"],
        ),
        (
            base.replace("spec:\n", "spec:\n  ingress: []\n"),
            7,
            3,
            &["unknown field `ingress`", "egress rules only"],
        ),
        (
            base.replace("  subject:\n", "  subject:\n    namespaces: {}\n"),
            8,
            5,
            &[
                "unknown field `namespaces`",
                "applies to pods of its own namespace",
            ],
        ),
        (
            dnp(&format!(
                "{ACCEPT_NET}  ports:\n  - portNumber: {{port: 443}}\n"
            )),
            14,
            5,
            &[
                "unknown field `ports`",
                "uses `protocols:`",
                "destinationPort: {number: 443}",
            ],
        ),
        (
            dnp(&rule("Accept", "ipBlock: {cidr: 10.0.0.0/8}", "")),
            13,
            7,
            &[
                "unknown field `ipBlock`",
                "`networks: [",
                "add a Deny rule for them",
            ],
        ),
        (
            dnp(&rule("Accept", "podSelector: {matchLabels: {app: db}}", "")),
            13,
            7,
            &[
                "unknown field `podSelector`",
                "write `pods: {podSelector: ...}`",
                "defaults to this policy's namespace",
            ],
        ),
    ];
    for (text, line, column, parts) in cases {
        assert_one_error(&load(&text), line, column, parts);
    }

    // A NetworkPolicy habit: the pod selector directly under spec.
    let l = load(&base.replace(
        "  subject:\n    podSelector:\n      matchLabels: {app: web}\n",
        "  podSelector: {matchLabels: {app: web}}\n",
    ));
    assert_errors(
        &l,
        &[
            (6, 1, "`subject` is required"),
            (
                7,
                3,
                "unknown field `podSelector`: select the policy's pods with `subject: {podSelector: ...}`",
            ),
        ],
    );

    // A field with no known habit behind it: no hint, still an error.
    let l = load(&dnp(&rule(
        "Accept",
        "networks: [10.0.0.0/8]\n    fqdn: x",
        "",
    )));
    assert_one_error(&l, 14, 7, &["unknown field `fqdn`"]);
}

#[test]
fn read_from_a_cluster_unknown_fields_fail_closed() {
    let egress = "- action: Deny
  to:
  - fqdnSelector: {matchNames: [example.com]}
- action: Accept
  to:
  - networks: [10.0.0.0/8]
  schedule: nightly
";
    let l = load_fail_closed(&dnp(egress));
    assert_errors(&l, &[]);
    assert_warnings(
        &l,
        &[
            (
                13,
                7,
                "unknown field `fqdnSelector` (the rule holding it fails closed)",
            ),
            (17, 5, "unknown field `schedule`"),
        ],
    );
    let rules = &l.world.developer_policies[0].egress;
    assert_eq!(rules[0].peers, vec![Peer::Unknown]);
    assert!(!rules[0].unknown_fields);
    assert!(rules[1].unknown_fields, "the rule itself fails closed");

    // Who the policy selects must be known.
    let l = load_fail_closed(
        &dnp(ACCEPT_NET).replace("  subject:\n", "  subject:\n    serviceAccounts: [x]\n"),
    );
    assert_errors(
        &l,
        &[(7, 3, "`subject` holds a field this build does not know")],
    );
    assert!(l.world.developer_policies.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Loading: apiVersion, kinds, duplicates, messages

#[test]
fn the_api_version_is_checked_and_the_group_is_ours() {
    let l = load(&dnp(ACCEPT_NET).replace(
        "policy.chokepoint.dev/v1alpha1",
        "policy.networking.k8s.io/v1alpha2",
    ));
    assert_one_error(
        &l,
        1,
        1,
        &["`DeveloperNetworkPolicy` is read as apiVersion `policy.chokepoint.dev/v1alpha1`"],
    );
    // Another kind of our group is an error (a typo must not be ignored silently).
    let l = load(&dnp(ACCEPT_NET).replace(
        "kind: DeveloperNetworkPolicy",
        "kind: DeveloperNetworkPolicies",
    ));
    assert_one_error(
        &l,
        2,
        1,
        &["kind `DeveloperNetworkPolicies` (policy.chokepoint.dev/v1alpha1) is not read"],
    );
}

#[test]
fn names_are_unique_per_namespace() {
    let a = dnp(ACCEPT_NET);
    let l = load(&format!("{a}---\n{a}"));
    let errs = errors(&l);
    assert_eq!(errs.len(), 1, "{}", dump(&l));
    assert_eq!(
        errs[0].object.as_deref(),
        Some("DeveloperNetworkPolicy/team-a/p")
    );
    assert!(
        errs[0]
            .message
            .contains("defined twice; first at test.yaml:1")
    );

    let b = a.replace("namespace: team-a", "namespace: team-b");
    let l = load(&format!("{a}---\n{b}"));
    assert_clean(&l);
    assert_eq!(l.world.developer_policies.len(), 2);
}

#[test]
fn every_mistake_is_reported_with_file_line_column_and_object() {
    let egress = "- name: one
  action: Pass
  to:
  - networks: [10.0.0.0/8]
- name: two
  action: Deny
  to:
  - domainNames: [api.example.com]
- name: three
  action: Accept
  to:
  - networks: [10.1.0.1/16]
";
    let l = load(&dnp(egress).replace("name: p", "name: shop-egress"));
    assert_errors(
        &l,
        &[
            (12, 5, "unknown action `Pass`"),
            (18, 7, "`domainNames` may only be used in Accept rules"),
            (22, 18, "CIDR `10.1.0.1/16` has host bits set"),
        ],
    );
    let first = errors(&l)[0].to_string();
    assert!(
        first.starts_with(
            "test.yaml:12:5: DeveloperNetworkPolicy/team-a/shop-egress: unknown action `Pass`; use Accept or Deny"
        ),
        "{first}"
    );
    // Without a namespace the object is named as kubectl would place it.
    let l = load(
        &dnp(&rule("Pass", "networks: [10.0.0.0/8]", "")).replace("  namespace: team-a\n", ""),
    );
    assert!(
        errors(&l)[0]
            .to_string()
            .starts_with("test.yaml:10:5: DeveloperNetworkPolicy/default/p: unknown action"),
        "{}",
        dump(&l)
    );
}
