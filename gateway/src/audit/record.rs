//! One audit record: the JSON object written per line.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use chokepoint_config::model::Protocol;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::time::Timestamp;
use crate::policy::{Decision, Flow, PolicyRef, Reason, Snapshot, StagedVerdict, Verdict};

/// Why a connection was denied, as written in the `reason` field.
///
/// String-backed so that later stages add their own reasons without touching this type:
/// `const MY_REASON: AuditReason = AuditReason::from_static("my_reason");`. Use lowercase
/// `snake_case` words; the value is part of the log schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuditReason(Cow<'static, str>);

impl AuditReason {
    /// A rule matched (a cluster-policy or DeveloperNetworkPolicy Deny rule).
    pub const RULE: AuditReason = AuditReason::from_static("rule");
    /// NetworkPolicies isolate the source's egress and none of their rules matched.
    pub const NETWORK_POLICY_ISOLATION: AuditReason =
        AuditReason::from_static("network_policy_isolation");
    /// No tier decided and the default is deny.
    pub const DEFAULT: AuditReason = AuditReason::from_static("default");
    /// The source IP is no known pod.
    pub const UNKNOWN_SOURCE: AuditReason = AuditReason::from_static("unknown_source");
    /// A pod connecting to its own IP (never denied by the engine; listed for completeness).
    pub const HAIRPIN: AuditReason = AuditReason::from_static("hairpin");
    /// A host-network source (never denied by the engine; listed for completeness).
    pub const HOST_NETWORK_SOURCE: AuditReason = AuditReason::from_static("host_network_source");
    /// The TLS SNI does not match the allowed domain pattern.
    pub const SNI_MISMATCH: AuditReason = AuditReason::from_static("sni_mismatch");
    /// The HTTP Host header does not match the allowed domain pattern.
    pub const HOST_MISMATCH: AuditReason = AuditReason::from_static("host_mismatch");
    /// The destination IP is not one the DNS proxy resolved for the name (no domain fronting).
    pub const NOT_RESOLVED: AuditReason = AuditReason::from_static("not_resolved");
    /// A connection accepted by a `domainNames` rule showed no name (no SNI or Host, or
    /// Encrypted Client Hello) and `fqdn.withoutName` is `deny`.
    pub const NO_NAME: AuditReason = AuditReason::from_static("no_name");
    /// A sensitive metadata-server path (user-data, identity) that configuration does not allow.
    pub const METADATA_PATH_DENIED: AuditReason = AuditReason::from_static("metadata_path_denied");
    /// A metadata credentials request for a role the pod may not have (its namespace's
    /// `iam.amazonaws.com/allowed-roles`, another pod's role, or no single pod owns the IP).
    pub const METADATA_ROLE_DENIED: AuditReason = AuditReason::from_static("metadata_role_denied");
    /// A flow to a metadata address that is not HTTP on its port (another TCP port, or UDP):
    /// only the metadata handler speaks to the metadata server, nothing is relayed raw.
    pub const METADATA_PORT_REFUSED: AuditReason =
        AuditReason::from_static("metadata_port_refused");
    /// A metadata request on a node whose `metadata.mode` is `deny`.
    pub const METADATA_DISABLED: AuditReason = AuditReason::from_static("metadata_disabled");

    /// A TCP connection beyond `limits.tcpConnectionsPerPod` or `limits.tcpConnections`
    /// (reset before it was decided).
    pub const CONNECTION_LIMIT: AuditReason = AuditReason::from_static("connection_limit");
    /// An allowed UDP flow beyond `limits.udpFlowsPerPod` or `limits.udpFlows` (its
    /// datagrams are dropped).
    pub const FLOW_LIMIT: AuditReason = AuditReason::from_static("flow_limit");

    pub const fn from_static(reason: &'static str) -> AuditReason {
        AuditReason(Cow::Borrowed(reason))
    }

    pub fn new(reason: impl Into<Cow<'static, str>>) -> AuditReason {
        AuditReason(reason.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Reason> for AuditReason {
    fn from(reason: Reason) -> AuditReason {
        AuditReason::from_static(reason.as_str())
    }
}

impl fmt::Display for AuditReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for AuditReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AuditReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AuditReason, D::Error> {
        String::deserialize(d).map(AuditReason::new)
    }
}

/// Who opened the connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    pub ip: IpAddr,
    pub port: u16,
    /// `null` when the IP is no known pod.
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

/// Where it was going.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    pub ip: IpAddr,
    pub port: u16,
    /// The destination pod's namespace, when the IP is a pod's.
    pub namespace: Option<String>,
    /// The destination pod, when the IP is a pod's.
    pub pod: Option<String>,
    /// The destination pod's labels without the per-pod ones ([`workload_labels`]); absent
    /// for a destination that is no pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(with = "protocol_text")]
    pub protocol: Protocol,
    /// DNS names the source resolved to this IP (from the DNS proxy); may be empty.
    pub names: Vec<String>,
    /// TLS ClientHello SNI, when one was read.
    pub sni: Option<String>,
    /// HTTP Host header, when one was read.
    pub host: Option<String>,
    /// The HTTP method of a refused metadata request (absent in other records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The path of a refused metadata request (absent in other records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The Service the connection was addressed to, when the pod connected to a ClusterIP
    /// that the node translated to this destination (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// The ClusterIP the pod connected to (absent when it connected to the destination itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<IpAddr>,
}

/// A Service port, as records name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
    /// The Service port (not the backend's target port).
    pub port: u16,
}

impl ServiceName {
    /// The Service at `addressed` (a `ClusterIP:port`), when the snapshot knows one there.
    pub fn at(snapshot: &Snapshot, addressed: SocketAddr, protocol: Protocol) -> Option<Self> {
        let r = snapshot.service_at(addressed.ip(), addressed.port(), protocol)?;
        let v = snapshot.service(r);
        Some(ServiceName {
            namespace: v.namespace.to_owned(),
            name: v.name.to_owned(),
            port: v.port,
        })
    }
}

/// Who decided, with the names resolved from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecidedBy {
    /// `Admin`, `NetworkPolicy`, `Baseline` or `Default`.
    pub tier: String,
    /// `ClusterNetworkPolicy`, `AdminNetworkPolicy`, `BaselineAdminNetworkPolicy`,
    /// `DeveloperNetworkPolicy` or `NetworkPolicy`; `null` when no policy decided.
    pub kind: Option<String>,
    pub policy: Option<String>,
    /// The NetworkPolicy's or DeveloperNetworkPolicy's namespace (cluster policies have none).
    pub namespace: Option<String>,
    /// Cluster policies only.
    pub priority: Option<u32>,
    /// The rule's `name`, when it has one.
    pub rule: Option<String>,
    /// Index of the rule in the policy's `egress` list.
    pub rule_index: Option<u16>,
    /// `Accept`, `Deny` or `Pass` of the deciding cluster-policy or DeveloperNetworkPolicy rule.
    pub action: Option<String>,
}

/// The `staged` object: how the staged policies would decide the flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StagedRecord {
    #[serde(with = "decision_text")]
    pub verdict: Decision,
    pub reason: AuditReason,
    pub decided_by: DecidedBy,
}

impl StagedRecord {
    /// Names the staged verdict's policy and rule (from the snapshot that decided it).
    pub fn resolve(staged: &StagedVerdict<'_>) -> StagedRecord {
        StagedRecord {
            verdict: staged.verdict.decision,
            reason: staged.verdict.reason.into(),
            decided_by: DecidedBy::resolve(staged.snapshot, &staged.verdict),
        }
    }
}

/// A connection as the audit log describes it (the engine's [`Flow`] plus the source port
/// and what the L7 peeks saw).
#[derive(Debug, Clone, Copy)]
pub struct FlowDetails<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub protocol: Protocol,
    /// The DNS names the destination IP is known as for this source.
    pub names: &'a [&'a str],
    pub sni: Option<&'a str>,
    pub host: Option<&'a str>,
    /// What the pod connected to when the node translated it to `dst` (a ClusterIP:port).
    pub addressed: Option<SocketAddr>,
}

impl<'a> FlowDetails<'a> {
    pub fn new(src: SocketAddr, dst: SocketAddr, protocol: Protocol) -> FlowDetails<'a> {
        FlowDetails {
            src,
            dst,
            protocol,
            names: &[],
            sni: None,
            host: None,
            addressed: None,
        }
    }

    /// The engine's flow, with the source port it does not carry.
    pub fn from_flow(flow: &Flow<'a>, src_port: u16) -> FlowDetails<'a> {
        FlowDetails {
            src: SocketAddr::new(flow.src, src_port),
            dst: SocketAddr::new(flow.dst, flow.port),
            protocol: flow.protocol,
            names: flow.names,
            sni: None,
            host: None,
            addressed: flow.addressed,
        }
    }

    pub fn addressed(self, addressed: Option<SocketAddr>) -> Self {
        FlowDetails { addressed, ..self }
    }

    pub fn names(self, names: &'a [&'a str]) -> Self {
        FlowDetails { names, ..self }
    }

    pub fn sni(self, sni: Option<&'a str>) -> Self {
        FlowDetails { sni, ..self }
    }

    pub fn host(self, host: Option<&'a str>) -> Self {
        FlowDetails { host, ..self }
    }
}

/// One line of the audit log. Field names are a stable schema (docs/audit-log.md).
///
/// `count` is how many denials the record stands for (see the de-duplication rules in
/// [`Auditor`](super::Auditor)); `first_seen`/`last_seen` are present only when it is more
/// than one, and `time` is then equal to `last_seen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the (latest) denial happened.
    pub time: Timestamp,
    pub node: String,
    /// `deny`; `allow` only in a record written for its `staged` verdict.
    #[serde(with = "decision_text")]
    pub verdict: Decision,
    pub reason: AuditReason,
    pub source: Source,
    pub destination: Destination,
    pub decided_by: DecidedBy,
    /// The verdict as if the staged policies were enforced, when it differs (absent
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<StagedRecord>,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

impl AuditRecord {
    /// The record of one denial, stamped now. Resolves pod, policy and rule names from the
    /// snapshot (allocates: call it for denials only, never for allowed connections).
    ///
    /// Addresses are written canonically (an IPv4-mapped IPv6 address as plain IPv4), like
    /// the engine decides them.
    pub fn new(
        node: &str,
        snapshot: &Snapshot,
        verdict: &Verdict,
        flow: &FlowDetails<'_>,
    ) -> AuditRecord {
        let src_ip = flow.src.ip().to_canonical();
        let dst_ip = flow.dst.ip().to_canonical();
        let (namespace, pod) = pod_identity(snapshot, src_ip);
        let dst_pod = DestinationPod::at(snapshot, dst_ip);
        AuditRecord {
            time: Timestamp::now(),
            node: node.to_owned(),
            verdict: verdict.decision,
            reason: verdict.reason.into(),
            source: Source {
                ip: src_ip,
                port: flow.src.port(),
                namespace,
                pod,
            },
            destination: Destination {
                ip: dst_ip,
                port: flow.dst.port(),
                namespace: dst_pod.namespace,
                pod: dst_pod.pod,
                labels: dst_pod.labels,
                protocol: flow.protocol,
                names: flow.names.iter().map(|n| (*n).to_owned()).collect(),
                sni: flow.sni.map(str::to_owned),
                host: flow.host.map(str::to_owned),
                method: None,
                path: None,
                service: flow
                    .addressed
                    .and_then(|a| ServiceName::at(snapshot, a, flow.protocol)),
                cluster_ip: flow.addressed.map(|a| a.ip().to_canonical()),
            },
            decided_by: DecidedBy::resolve(snapshot, verdict),
            staged: None,
            count: 1,
            first_seen: None,
            last_seen: None,
        }
    }

    /// A connection the engine allowed but a later check (SNI, Host, resolution, metadata
    /// path) refused: the verdict becomes `deny` with `reason`; `decided_by` still names the
    /// rule that had allowed it.
    pub fn denied_because(mut self, reason: AuditReason) -> AuditRecord {
        self.verdict = Decision::Deny;
        self.reason = reason;
        self
    }

    /// Adds the flow's verdict as if the staged policies were enforced (`None`: no
    /// difference, the record stays as it was).
    pub fn staged(mut self, staged: Option<&StagedVerdict<'_>>) -> AuditRecord {
        self.staged = staged.map(StagedRecord::resolve);
        self
    }

    /// The method and path of the refused HTTP request (the metadata handler's denials).
    pub fn request(mut self, method: &str, path: &str) -> AuditRecord {
        self.destination.method = Some(method.to_owned());
        self.destination.path = Some(path.to_owned());
        self
    }

    /// Sets `time` (and nothing else).
    pub fn at(mut self, time: Timestamp) -> AuditRecord {
        self.time = time;
        self
    }

    /// The line as written, without the newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an audit record always serializes")
    }
}

impl DecidedBy {
    /// Names the verdict's policy and rule. A reference the snapshot does not hold (never
    /// expected) leaves the names `null` rather than failing on the data path.
    pub fn resolve(snapshot: &Snapshot, verdict: &Verdict) -> DecidedBy {
        let d = &verdict.decided_by;
        let mut out = DecidedBy {
            tier: d.tier.to_string(),
            kind: None,
            policy: None,
            namespace: None,
            priority: None,
            rule: None,
            rule_index: d.rule_index,
            action: d.action.map(|a| a.to_string()),
        };
        match d.policy {
            Some(PolicyRef::Cluster(i)) => {
                if let Some(p) = snapshot.cluster_policy(i) {
                    out.kind = Some(p.kind.kind().to_owned());
                    out.policy = Some(p.name.clone());
                    out.priority = Some(p.priority);
                    out.rule = d
                        .rule_index
                        .and_then(|r| p.egress.get(usize::from(r)))
                        .and_then(|r| r.name.clone());
                }
            }
            Some(PolicyRef::Developer(i)) => {
                if let Some(p) = snapshot.developer_policy(i) {
                    out.kind = Some("DeveloperNetworkPolicy".to_owned());
                    out.policy = Some(p.name.clone());
                    out.namespace = Some(p.namespace.clone());
                    out.rule = d
                        .rule_index
                        .and_then(|r| p.egress.get(usize::from(r)))
                        .and_then(|r| r.name.clone());
                }
            }
            Some(PolicyRef::Network(i)) => {
                if let Some(p) = snapshot.network_policy(i) {
                    out.kind = Some("NetworkPolicy".to_owned());
                    out.policy = Some(p.name.clone());
                    out.namespace = Some(p.namespace.clone());
                }
            }
            None => {}
        }
        out
    }
}

pub(crate) mod protocol_text {
    use chokepoint_config::model::Protocol;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match &*s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["tcp", "udp", "sctp"],
            )),
        }
    }
}

pub(crate) mod decision_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::policy::Decision;

    pub fn serialize<S: Serializer>(d: &Decision, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decision, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match &*s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            other => Err(serde::de::Error::unknown_variant(other, &["allow", "deny"])),
        }
    }
}

/// Labels Kubernetes sets per pod or per rollout (a new value for every ReplicaSet, revision,
/// StatefulSet ordinal or Job run): left out of records, so that what is left names the
/// workload and stays true across rollouts.
const PER_POD_LABELS: [&str; 10] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// A pod's labels without [`PER_POD_LABELS`]: what names its workload.
pub fn workload_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !PER_POD_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Namespace and name of the pod that owns `ip` in the snapshot.
pub(crate) fn pod_identity(snapshot: &Snapshot, ip: IpAddr) -> (Option<String>, Option<String>) {
    match snapshot.pod_by_ip(ip) {
        Some(p) => {
            let info = snapshot.pod(p);
            (Some(info.namespace.clone()), Some(info.name.clone()))
        }
        None => (None, None),
    }
}

/// A destination as records name it when it is a pod: namespace, name and workload labels.
#[derive(Debug, Default)]
pub(crate) struct DestinationPod {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

impl DestinationPod {
    /// The pod that owns `ip` in the snapshot, looked up once; all `None` for no pod.
    pub(crate) fn at(snapshot: &Snapshot, ip: IpAddr) -> DestinationPod {
        match snapshot.pod_by_ip(ip) {
            Some(p) => {
                let info = snapshot.pod(p);
                DestinationPod {
                    namespace: Some(info.namespace.clone()),
                    pod: Some(info.name.clone()),
                    labels: Some(workload_labels(&info.labels)),
                }
            }
            None => DestinationPod::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::sample;

    #[test]
    fn metadata_denials_carry_the_request() {
        let r = sample(80)
            .denied_because(AuditReason::METADATA_PATH_DENIED)
            .request("GET", "/latest/user-data");
        let json = r.to_json();
        assert!(
            json.contains(r#""host":null,"method":"GET","path":"/latest/user-data"},"#),
            "{json}"
        );
        assert!(json.contains(r#""reason":"metadata_path_denied""#));
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), r);
    }

    #[test]
    fn serializes_every_field_in_schema_order() {
        let json = sample(443).to_json();
        assert_eq!(
            json,
            r#"{"time":"2023-11-14T22:13:20.123Z","node":"node-1","verdict":"deny","reason":"rule","source":{"ip":"10.0.1.10","port":40000,"namespace":"app","pod":"web"},"destination":{"ip":"192.0.2.10","port":443,"namespace":null,"pod":null,"protocol":"tcp","names":["example.com"],"sni":null,"host":null},"decided_by":{"tier":"Admin","kind":"ClusterNetworkPolicy","policy":"block","namespace":null,"priority":10,"rule":"no-outside","rule_index":0,"action":"Deny"},"count":1}"#
        );
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&json).unwrap(),
            sample(443)
        );
    }

    #[test]
    fn first_and_last_seen_appear_with_a_count() {
        let mut r = sample(443);
        r.count = 3;
        r.first_seen = Some(Timestamp::from_unix_millis(1_700_000_000_000));
        r.last_seen = Some(r.time);
        let json = r.to_json();
        assert!(
            json.ends_with(r#""count":3,"first_seen":"2023-11-14T22:13:20.000Z","last_seen":"2023-11-14T22:13:20.123Z"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), r);
    }

    #[test]
    fn reasons_are_strings_that_callers_extend() {
        const CUSTOM: AuditReason = AuditReason::from_static("custom_check");
        assert_eq!(
            AuditReason::from(Reason::NetworkPolicyIsolation),
            AuditReason::NETWORK_POLICY_ISOLATION
        );
        assert_eq!(
            AuditReason::from(Reason::UnknownSource).as_str(),
            "unknown_source"
        );
        assert_eq!(AuditReason::new(String::from("custom_check")), CUSTOM);
        let r = sample(80).denied_because(AuditReason::SNI_MISMATCH);
        assert!(r.to_json().contains(r#""reason":"sni_mismatch""#));
        assert!(!r.to_json().contains(r#""path""#));
        assert_eq!(serde_json::to_string(&CUSTOM).unwrap(), r#""custom_check""#);
    }

    #[test]
    fn a_connection_addressed_to_a_service_names_it_and_its_cluster_ip() {
        let inventory = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: pg, port: 5432, targetPort: 15432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: data, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.21]}]
ports: [{name: pg, port: 15432}]
"#;
        let loaded = chokepoint_config::load_str(
            std::path::Path::new("inventory.yaml"),
            inventory,
            chokepoint_config::UnknownFields::Reject,
        );
        assert!(!loaded.diagnostics.has_errors(), "{:?}", loaded.diagnostics);
        let snapshot = Snapshot::compile(&loaded.world, Default::default());
        let flow = Flow::to(
            "10.244.2.9".parse().unwrap(),
            "10.244.1.21:15432".parse().unwrap(),
            Protocol::Tcp,
            &[],
        )
        .addressed(Some("10.96.0.20:5432".parse().unwrap()));
        let verdict = snapshot.evaluate(&flow);
        let r = AuditRecord::new(
            "n",
            &snapshot,
            &verdict,
            &FlowDetails::from_flow(&flow, 4000),
        );
        let json = r.to_json();
        assert!(
            json.contains(r#""host":null,"service":{"namespace":"data","name":"db","port":5432},"cluster_ip":"10.96.0.20"},"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), r);
        // Addressed to an IP that is no Service's: the address alone.
        let other = flow.addressed(Some("10.96.0.99:5432".parse().unwrap()));
        let json = AuditRecord::new(
            "n",
            &snapshot,
            &verdict,
            &FlowDetails::from_flow(&other, 4000),
        )
        .to_json();
        assert!(
            json.contains(r#""host":null,"cluster_ip":"10.96.0.99"},"#),
            "{json}"
        );
    }
}
