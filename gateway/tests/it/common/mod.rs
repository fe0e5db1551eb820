//! Helpers shared by the verdict-engine tests: a fixed inventory, loading policies from
//! inline YAML, building policies from the model directly, and table-driven expectations.

use std::fmt::Write as _;
use std::panic::Location;
use std::path::Path;

use chokepoint::policy::{
    Decision, Flow, Options, Outcome, Reason, Snapshot, Step, TierName, Verdict,
};
use chokepoint_config::model::{
    Action, ClusterPolicy, Origin, Peer, PolicyKind, PortMatch, PortRange, Protocol, Rule,
    Selector, Subject, Tier,
};
use chokepoint_config::{UnknownFields, World, load_str};

// Addresses of the inventory below.
pub const WEB: &str = "10.0.1.10"; // app/web, app=web, named port web=80/TCP, metrics=9090/TCP
pub const API: &str = "10.0.1.11"; // app/api, app=api, named port http=8080/TCP
pub const DUAL4: &str = "10.0.1.20"; // app/dual (dual-stack), app=dual, web=80/TCP
pub const DUAL6: &str = "fd00:1::20";
pub const PG4: &str = "10.0.2.10"; // db/pg (dual-stack), app=db, pg=5432/TCP, web=8080/TCP
pub const PG6: &str = "fd00:2::10";
pub const DEV_WEB: &str = "10.0.3.10"; // dev/web, app=web, web=8080/TCP
pub const DEV_DB: &str = "10.0.3.11"; // dev/db, app=db, pg=5432/TCP
pub const DEV_V6: &str = "fd00:3::10"; // dev/v6 (IPv6 only), app=v6, web=80/TCP
pub const DNS: &str = "10.0.4.10"; // kube-system/coredns, dns=53/UDP, dns-tcp=53/TCP
pub const NODE1: &str = "172.18.0.2"; // node-1 InternalIP; also kube-system/agent (hostNetwork)
pub const NODE1_V6: &str = "fd00:ff::2"; // node-1 InternalIP (IPv6)
pub const NODE1_EXT: &str = "203.0.113.2"; // node-1 ExternalIP
pub const NODE2: &str = "172.18.0.3"; // node-2
pub const OUT: &str = "192.0.2.10"; // outside hosts
pub const OUT_HIGH: &str = "192.0.2.200";
pub const OUT2: &str = "198.51.100.7";
pub const OUT6: &str = "2001:db8::7";

/// Namespaces `app` (env=prod, team=shop), `db` (env=prod, team=data), `dev` (env=dev,
/// team=shop) and `kube-system`; the pods and nodes listed in the constants above.
pub const INVENTORY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {env: prod, team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: db, labels: {env: prod, team: data}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev, team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: web, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{name: web, containerPort: 80}, {name: metrics, containerPort: 9090, protocol: TCP}]}]
status: {podIPs: [{ip: "10.0.1.10"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: api, labels: {app: api}}
spec:
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIPs: [{ip: "10.0.1.11"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: dual, labels: {app: dual}}
spec:
  containers: [{name: c, ports: [{name: web, containerPort: 80}]}]
status: {podIPs: [{ip: "10.0.1.20"}, {ip: "fd00:1::20"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: db, name: pg, labels: {app: db}}
spec:
  containers: [{name: c, ports: [{name: pg, containerPort: 5432}, {name: web, containerPort: 8080}]}]
status: {podIPs: [{ip: "10.0.2.10"}, {ip: "fd00:2::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: dev, name: web, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]
status: {podIPs: [{ip: "10.0.3.10"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: dev, name: db, labels: {app: db}}
spec:
  containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]
status: {podIPs: [{ip: "10.0.3.11"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: dev, name: v6, labels: {app: v6}}
spec:
  containers: [{name: c, ports: [{name: web, containerPort: 80}]}]
status: {podIPs: [{ip: "fd00:3::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: kube-system, name: coredns, labels: {k8s-app: kube-dns}}
spec:
  containers: [{name: c, ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53, protocol: TCP}]}]
status: {podIPs: [{ip: "10.0.4.10"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: kube-system, name: agent, labels: {app: web}}
spec:
  hostNetwork: true
  nodeName: node-1
  containers: [{name: c, ports: [{name: web, containerPort: 80}]}]
status: {podIPs: [{ip: "172.18.0.2"}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {role: worker}}
status:
  addresses:
  - {type: InternalIP, address: "172.18.0.2"}
  - {type: InternalIP, address: "fd00:ff::2"}
  - {type: ExternalIP, address: "203.0.113.2"}
  - {type: Hostname, address: node-1}
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {role: control}}
status:
  addresses:
  - {type: InternalIP, address: "172.18.0.3"}
"#;

/// The annotation line that stages a policy (after `metadata:`).
pub const STAGED: &str = "  annotations: {policy.chokepoint.dev/mode: staged}\n";

/// A TCP flow from `src` to `dst:port`, with no names.
pub fn flow(src: &'static str, dst: &'static str, port: u16) -> Flow<'static> {
    Flow::to(
        src.parse().unwrap(),
        format!("{dst}:{port}").parse().unwrap(),
        Protocol::Tcp,
        &[],
    )
}

/// Loads YAML documents as the file `t.yaml`; every finding fails the test.
#[track_caller]
pub fn load(yaml: &str) -> World {
    let loaded = load_str(Path::new("t.yaml"), yaml, UnknownFields::Reject);
    assert!(
        !loaded.diagnostics.has_errors(),
        "the test's YAML does not load:\n{}",
        loaded.diagnostics
    );
    loaded.world
}

/// [`INVENTORY`] plus the policies in `policies` (YAML documents).
#[track_caller]
pub fn world(policies: &str) -> World {
    load(&format!("{INVENTORY}\n---\n{policies}"))
}

/// Compiles [`INVENTORY`] plus `policies` with the default options.
#[track_caller]
pub fn snapshot(policies: &str) -> Snapshot {
    Snapshot::compile(&world(policies), Options::default())
}

/// Compiles [`INVENTORY`] plus `policies` with the default decision set to deny.
#[track_caller]
pub fn snapshot_default_deny(policies: &str) -> Snapshot {
    Snapshot::compile(
        &world(policies),
        Options {
            default_decision: Decision::Deny,
            ..Options::default()
        },
    )
}

// ----- building policies from the model directly (for parts YAML cannot express) -----

pub fn origin() -> Origin {
    Origin::default()
}

/// A ClusterNetworkPolicy.
pub fn cluster_policy(
    name: &str,
    tier: Tier,
    priority: u32,
    subject: Subject,
    egress: Vec<Rule>,
) -> ClusterPolicy {
    ClusterPolicy {
        name: name.to_owned(),
        kind: PolicyKind::ClusterNetworkPolicy,
        tier,
        priority,
        subject,
        egress,
        origin: origin(),
    }
}

/// Every pod in every namespace.
pub fn everyone() -> Subject {
    Subject::Namespaces(Selector::everything())
}

pub fn rule(action: Action, peers: Vec<Peer>, protocols: Option<Vec<PortMatch>>) -> Rule {
    Rule {
        name: None,
        action,
        peers,
        protocols,
        unknown_fields: false,
    }
}

pub fn networks(cidrs: &[&str]) -> Peer {
    Peer::Networks(cidrs.iter().map(|c| c.parse().expect("CIDR")).collect())
}

pub fn tcp_port(port: u16) -> PortMatch {
    PortMatch::Port {
        protocol: Protocol::Tcp,
        ports: PortRange::single(port),
    }
}

// ----- expectations -----

/// What a verdict says, in comparable form (the policy by its label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub decision: Decision,
    pub tier: TierName,
    pub policy: Option<String>,
    pub rule: Option<u16>,
    pub action: Option<Action>,
    pub reason: Reason,
}

impl Want {
    /// A verdict as [`Want`], naming its policy with [`Snapshot::policy_label`].
    pub fn of(snapshot: &Snapshot, v: &Verdict) -> Want {
        Want {
            decision: v.decision,
            tier: v.decided_by.tier,
            policy: v.decided_by.policy.map(|p| snapshot.policy_label(p)),
            rule: v.decided_by.rule_index,
            action: v.decided_by.action,
            reason: v.reason,
        }
    }
}

fn by_rule(tier: TierName, policy: &str, rule: u16, action: Action) -> Want {
    Want {
        decision: if action == Action::Accept {
            Decision::Allow
        } else {
            Decision::Deny
        },
        tier,
        policy: Some(policy.to_owned()),
        rule: Some(rule),
        action: Some(action),
        reason: Reason::Rule,
    }
}

/// Accepted by rule `rule` of the Admin policy `policy` (a label such as `cnp/name`).
pub fn admin_accept(policy: &str, rule: u16) -> Want {
    by_rule(TierName::Admin, policy, rule, Action::Accept)
}

pub fn admin_deny(policy: &str, rule: u16) -> Want {
    by_rule(TierName::Admin, policy, rule, Action::Deny)
}

pub fn baseline_accept(policy: &str, rule: u16) -> Want {
    by_rule(TierName::Baseline, policy, rule, Action::Accept)
}

pub fn baseline_deny(policy: &str, rule: u16) -> Want {
    by_rule(TierName::Baseline, policy, rule, Action::Deny)
}

/// Accepted by rule `rule` of the DeveloperNetworkPolicy `policy` (`dnp/namespace/name`).
pub fn dnp_accept(policy: &str, rule: u16) -> Want {
    by_rule(TierName::NetworkPolicy, policy, rule, Action::Accept)
}

/// Denied by rule `rule` of the DeveloperNetworkPolicy `policy` (`dnp/namespace/name`).
pub fn dnp_deny(policy: &str, rule: u16) -> Want {
    by_rule(TierName::NetworkPolicy, policy, rule, Action::Deny)
}

/// Allowed by rule `rule` of the NetworkPolicy `policy` (`np/namespace/name`).
pub fn np_allow(policy: &str, rule: u16) -> Want {
    Want {
        decision: Decision::Allow,
        tier: TierName::NetworkPolicy,
        policy: Some(policy.to_owned()),
        rule: Some(rule),
        action: None,
        reason: Reason::Rule,
    }
}

/// Denied because NetworkPolicies isolate the source and none allows the flow; `policy` is
/// the first isolating policy.
pub fn np_isolated(policy: &str) -> Want {
    Want {
        decision: Decision::Deny,
        tier: TierName::NetworkPolicy,
        policy: Some(policy.to_owned()),
        rule: None,
        action: None,
        reason: Reason::NetworkPolicyIsolation,
    }
}

fn default_tier(decision: Decision, reason: Reason) -> Want {
    Want {
        decision,
        tier: TierName::Default,
        policy: None,
        rule: None,
        action: None,
        reason,
    }
}

/// No tier decided: the default allows.
pub fn default_allow() -> Want {
    default_tier(Decision::Allow, Reason::Default)
}

/// No tier decided: the (configured) default denies.
pub fn default_deny() -> Want {
    default_tier(Decision::Deny, Reason::Default)
}

/// A pod talking to its own IP.
pub fn hairpin() -> Want {
    default_tier(Decision::Allow, Reason::Hairpin)
}

pub fn host_network_source() -> Want {
    default_tier(Decision::Allow, Reason::HostNetworkSource)
}

pub fn unknown_source(decision: Decision) -> Want {
    default_tier(decision, Reason::UnknownSource)
}

// ----- table cases -----

/// One flow and what the engine must say about it. A failure names the case by the line
/// that built it (where a comment says what the case is about).
#[derive(Debug, Clone)]
pub struct Case {
    pub at: &'static Location<'static>,
    pub src: &'static str,
    pub dst: &'static str,
    pub protocol: Protocol,
    pub port: u16,
    pub names: &'static [&'static str],
    pub want: Want,
}

#[track_caller]
pub fn tcp(src: &'static str, dst: &'static str, port: u16, want: Want) -> Case {
    Case {
        at: Location::caller(),
        src,
        dst,
        protocol: Protocol::Tcp,
        port,
        names: &[],
        want,
    }
}

#[track_caller]
pub fn udp(src: &'static str, dst: &'static str, port: u16, want: Want) -> Case {
    Case {
        protocol: Protocol::Udp,
        ..tcp(src, dst, port, want)
    }
}

#[track_caller]
pub fn sctp(src: &'static str, dst: &'static str, port: u16, want: Want) -> Case {
    Case {
        protocol: Protocol::Sctp,
        ..tcp(src, dst, port, want)
    }
}

/// A TCP flow whose destination is known by `names` (from the DNS proxy).
#[track_caller]
pub fn named(
    src: &'static str,
    dst: &'static str,
    port: u16,
    names: &'static [&'static str],
    want: Want,
) -> Case {
    Case {
        names,
        ..tcp(src, dst, port, want)
    }
}

impl Case {
    pub fn flow(&self) -> Flow<'static> {
        Flow {
            src: self.src.parse().expect("source IP"),
            dst: self.dst.parse().expect("destination IP"),
            protocol: self.protocol,
            port: self.port,
            names: self.names,
            addressed: None,
        }
    }
}

/// Evaluates every case (with `evaluate` and with `explain`, which must agree) and fails
/// with the list of every case that did not get its expected verdict.
#[track_caller]
pub fn check(snapshot: &Snapshot, cases: &[Case]) {
    let mut failures = String::new();
    for c in cases {
        let flow = c.flow();
        let verdict = snapshot.evaluate(&flow);
        let (explained, _) = snapshot.explain(&flow);
        if verdict != explained {
            let _ = writeln!(
                failures,
                "- line {}: evaluate and explain disagree:\n    evaluate {verdict:?}\n    explain  {explained:?}",
                c.at.line()
            );
        }
        let got = Want::of(snapshot, &verdict);
        if got != c.want {
            let _ = writeln!(
                failures,
                "- line {} ({} -> {}:{}/{}{}):\n    want {:?}\n    got  {:?}",
                c.at.line(),
                c.src,
                c.dst,
                c.port,
                c.protocol,
                if c.names.is_empty() {
                    String::new()
                } else {
                    format!(" names {:?}", c.names)
                },
                c.want,
                got
            );
        }
    }
    assert!(
        failures.is_empty(),
        "verdicts differ from the spec:\n{failures}"
    );
}

// ----- traces -----

/// One trace step in comparable form.
pub type StepView = (TierName, Option<String>, Option<u16>, Outcome);

pub fn steps(snapshot: &Snapshot, steps: &[Step]) -> Vec<StepView> {
    steps
        .iter()
        .map(|s| {
            (
                s.tier,
                s.policy.map(|p| snapshot.policy_label(p)),
                s.rule_index,
                s.outcome,
            )
        })
        .collect()
}

/// A step naming a policy.
pub fn step(tier: TierName, policy: &str, rule: Option<u16>, outcome: Outcome) -> StepView {
    (tier, Some(policy.to_owned()), rule, outcome)
}

/// A step about a whole tier (NotIsolated, Default, Exempt).
pub fn tier_step(tier: TierName, outcome: Outcome) -> StepView {
    (tier, None, None, outcome)
}
