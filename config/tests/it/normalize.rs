//! Normalization into the model (model.rs): every API version ends up in the same types.

use crate::common::*;
use chokepoint_config::model::{
    Action, ClusterPolicy, DomainPattern, Origin, Peer, PolicyKind, PortMatch, PortRange, Protocol,
    Requirement, Rule, Selector, Subject, Tier,
};

fn sel(requirements: Vec<Requirement>) -> Selector {
    Selector { requirements }
}

fn name_is(ns: &str) -> Selector {
    Selector::equals("kubernetes.io/metadata.name", ns)
}

fn tcp(first: u16, last: u16) -> PortMatch {
    PortMatch::Port {
        protocol: Protocol::Tcp,
        ports: PortRange { first, last },
    }
}

fn udp(port: u16) -> PortMatch {
    PortMatch::Port {
        protocol: Protocol::Udp,
        ports: PortRange::single(port),
    }
}

fn nets(list: &[&str]) -> Peer {
    Peer::Networks(list.iter().map(|s| s.parse().unwrap()).collect())
}

#[test]
fn a_cluster_network_policy_compiles_to_the_model() {
    // The example of the research notes (§1.3), as users write it.
    let text = "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: egress-example}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: app-ns}}}
  egress:
  - name: allow-dns
    action: Accept
    to: [{pods: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}},
                 podSelector: {matchLabels: {k8s-app: kube-dns}}}}]
    protocols: [{udp: {destinationPort: {number: 53}}}, {tcp: {destinationPort: {number: 53}}}]
  - name: allow-api
    action: Accept
    to: [{networks: [\"203.0.113.0/24\"]}]
    protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 8100}}}}]
  - name: allow-web-pods
    action: Accept
    to: [{namespaces: {matchLabels: {team: web}}}]
    protocols: [{destinationNamedPort: web}]
  - name: deny-rest
    action: Deny
    to: [{networks: [\"0.0.0.0/0\", \"::/0\"]}]
  ingress:
  - action: Accept
    from: [{namespaces: {}}]
";
    let l = load(text);
    let p = only_policy(&l);
    let rule = |name: &str, action, peers, protocols| Rule {
        name: Some(name.into()),
        action,
        peers,
        protocols,
        unknown_fields: false,
    };
    assert_eq!(
        p,
        &ClusterPolicy {
            name: "egress-example".into(),
            kind: PolicyKind::ClusterNetworkPolicy,
            tier: Tier::Admin,
            priority: 10,
            subject: Subject::Namespaces(name_is("app-ns")),
            egress: vec![
                rule(
                    "allow-dns",
                    Action::Accept,
                    vec![Peer::Pods {
                        namespaces: name_is("kube-system"),
                        pods: Selector::equals("k8s-app", "kube-dns")
                    }],
                    Some(vec![udp(53), tcp(53, 53)]),
                ),
                rule(
                    "allow-api",
                    Action::Accept,
                    vec![nets(&["203.0.113.0/24"])],
                    Some(vec![tcp(8000, 8100)])
                ),
                rule(
                    "allow-web-pods",
                    Action::Accept,
                    vec![Peer::Namespaces(Selector::equals("team", "web"))],
                    Some(vec![PortMatch::Named("web".into())]),
                ),
                rule(
                    "deny-rest",
                    Action::Deny,
                    vec![nets(&["0.0.0.0/0", "::/0"])],
                    None
                ),
            ],
            origin: Origin {
                file: FILE.into(),
                line: 1
            },
        }
    );
}

#[test]
fn v1alpha2_peers_and_subjects() {
    let egress = "- action: Pass
  to:
  - pods: {podSelector: {matchLabels: {app: db}}}
  - nodes: {}
  - nodes: {matchLabels: {node-role.kubernetes.io/control-plane: \"\"}}
  - domainNames: [API.Example.COM., \"*.cdn.example.net\"]
  protocols:
  - sctp: {destinationPort: {number: 9899}}
";
    // domainNames are Accept-only; use an Accept rule for the names.
    let l = load(&cnp(&egress.replace("Pass", "Accept")).replace(
        "    namespaces: {}\n",
        "    pods:\n      podSelector: {matchLabels: {app: web}}\n",
    ));
    let p = only_policy(&l);
    assert_eq!(
        p.subject,
        Subject::Pods {
            namespaces: Selector::everything(),
            pods: Selector::equals("app", "web")
        }
    );
    let r = &p.egress[0];
    assert_eq!(r.name, None);
    assert_eq!(
        r.peers,
        vec![
            Peer::Pods {
                namespaces: Selector::everything(),
                pods: Selector::equals("app", "db")
            },
            Peer::Nodes(Selector::everything()),
            Peer::Nodes(Selector::equals(
                "node-role.kubernetes.io/control-plane",
                ""
            )),
            Peer::DomainNames(vec![
                DomainPattern {
                    wildcard: false,
                    name: "api.example.com".into()
                },
                DomainPattern {
                    wildcard: true,
                    name: "cdn.example.net".into()
                },
            ]),
        ]
    );
    assert_eq!(
        r.protocols,
        Some(vec![PortMatch::Port {
            protocol: Protocol::Sctp,
            ports: PortRange::single(9899)
        }])
    );
}

#[test]
fn selectors_keep_every_operator() {
    let subject = "    namespaces:
      matchLabels: {env: prod}
      matchExpressions:
      - {key: team, operator: In, values: [a, b]}
      - {key: tier, operator: NotIn, values: [legacy]}
      - {key: owner, operator: Exists}
      - {key: quarantine, operator: DoesNotExist}
";
    let l = load(
        &cnp("- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n")
            .replace("    namespaces: {}\n", subject),
    );
    assert_eq!(
        only_policy(&l).subject,
        Subject::Namespaces(sel(vec![
            Requirement::In("env".into(), vec!["prod".into()]),
            Requirement::In("team".into(), vec!["a".into(), "b".into()]),
            Requirement::NotIn("tier".into(), vec!["legacy".into()]),
            Requirement::Exists("owner".into()),
            Requirement::DoesNotExist("quarantine".into()),
        ]))
    );
}

#[test]
fn v1alpha1_allow_becomes_accept_and_ports_become_protocols() {
    let egress = "- name: web
  action: Allow
  to:
  - pods:
      namespaceSelector: {matchLabels: {team: web}}
      podSelector: {}
  ports:
  - portNumber: {port: 443}
  - portNumber: {protocol: UDP, port: 53}
  - portRange: {start: 8000, end: 8100}
  - portRange: {protocol: SCTP, start: 1, end: 65535}
  - namedPort: http
- name: pass-dns
  action: Pass
  to:
  - namespaces: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
- action: Deny
  to:
  - networks: [\"10.0.0.0/8\"]
";
    let l = load(&anp(egress));
    let p = only_policy(&l);
    assert_eq!(
        (p.kind, p.tier, p.priority),
        (PolicyKind::AdminNetworkPolicy, Tier::Admin, 10)
    );
    assert_eq!(
        p.subject,
        Subject::Namespaces(Selector::equals("team", "a"))
    );
    let r = &p.egress;
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[0].name.as_deref(), r[0].action),
        (Some("web"), Action::Accept)
    );
    assert_eq!(
        r[0].peers,
        vec![Peer::Pods {
            namespaces: Selector::equals("team", "web"),
            pods: Selector::everything()
        }]
    );
    assert_eq!(
        r[0].protocols,
        Some(vec![
            tcp(443, 443),
            udp(53),
            tcp(8000, 8100),
            PortMatch::Port {
                protocol: Protocol::Sctp,
                ports: PortRange {
                    first: 1,
                    last: 65535
                }
            },
            PortMatch::Named("http".into()),
        ])
    );
    assert_eq!((r[1].action, r[1].protocols.as_ref()), (Action::Pass, None));
    assert_eq!(r[1].peers, vec![Peer::Namespaces(name_is("kube-system"))]);
    assert_eq!(
        (r[2].action, &r[2].peers),
        (Action::Deny, &vec![nets(&["10.0.0.0/8"])])
    );
}

#[test]
fn a_baseline_admin_network_policy_is_the_last_baseline_policy() {
    let l = load(&banp(
        "- action: Allow\n  to:\n  - namespaces: {}\n- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n",
    ));
    let p = only_policy(&l);
    assert_eq!(p.name, "default");
    assert_eq!(p.kind, PolicyKind::BaselineAdminNetworkPolicy);
    assert_eq!(p.kind.short_name(), "banp");
    assert_eq!((p.tier, p.priority), (Tier::Baseline, 1000));
    assert_eq!(
        p.subject,
        Subject::Pods {
            namespaces: Selector::everything(),
            pods: Selector::everything()
        }
    );
    let actions: Vec<Action> = p.egress.iter().map(|r| r.action).collect();
    assert_eq!(actions, [Action::Accept, Action::Deny]);
}

#[test]
fn policies_without_egress_have_no_rules() {
    let text = cnp("").replace("  egress:\n", "");
    assert!(only_policy(&load(&text)).egress.is_empty());
    let text = cnp("").replace("  egress:\n", "  egress: []\n");
    assert!(only_policy(&load(&text)).egress.is_empty());
}
