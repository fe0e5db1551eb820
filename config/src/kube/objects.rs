//! The watched objects, as the gateway needs them, and the world assembled from them.
//!
//! Every object is converted when it arrives (off the data path, outside any lock): an
//! inventory object into its [`crate::inventory`] form, a policy object through the same
//! validation and compilation as a file's ([`load_objects`]), so a rebuild only assembles
//! already-checked parts. Stores are keyed by UID: a deleted object and a new one of the same
//! name are different entries, and a relist replaces a kind's store as a whole.
//!
//! Pod IPs are reused. When two listed pods claim one IP (a terminating pod still listed with
//! the IP the network plugin already gave a new one), the IP belongs to the running pod, then to
//! the newest by creation time; the other pod keeps its other IPs. Succeeded and Failed pods
//! are not read at all ([`PodInfo::from_object`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DynamicObject;
use serde_json::Value;

use super::kinds::WatchedKind;
use crate::compile::UnknownFields;
use crate::diagnostic::{Diagnostics, Severity};
use crate::inventory::services::Finding;
use crate::inventory::{EndpointSliceInfo, NamespaceInfo, NodeInfo, PodInfo, ServiceInfo};
use crate::load::{World, load_objects};
use crate::mode::MODE_ANNOTATION;

/// One converted object.
#[derive(Debug, Clone)]
pub enum Entry {
    Namespace(NamespaceInfo),
    Node(NodeInfo),
    Pod(PodEntry),
    Service(ServiceInfo),
    EndpointSlice(EndpointSliceInfo),
    /// Boxed: a policy's compiled part is much larger than the other entries.
    Policy(Box<PolicyEntry>),
}

/// A pod, with what deciding between two claims on one IP needs.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub info: PodInfo,
    pub running: bool,
    pub created: Option<Time>,
}

/// A policy object after validation: what it contributes to the world (nothing when it is
/// invalid) and what was found.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    pub namespace: String,
    pub name: String,
    pub reference: ObjectReference,
    pub revision: Revision,
    pub part: World,
    pub diagnostics: Diagnostics,
    /// `status.conditions` as the object carries them (written by the elected gateway).
    pub conditions: Vec<Condition>,
}

impl PolicyEntry {
    /// Invalid: left out of the world.
    pub fn skipped(&self) -> bool {
        self.diagnostics.has_errors()
    }
}

/// Which version of a policy object, as far as what it means is concerned: its spec (the
/// `metadata.generation` the API server bumps on every spec change) and its mode (an
/// annotation, which changes no generation). A status write or a label change makes a new
/// resourceVersion, not a new revision: it is not reported again, and the snapshot is not
/// rebuilt for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub generation: Option<i64>,
    /// Stands in for the generation of an object that has none (the API server always sets
    /// it; a hand-written test object may not).
    pub resource_version: String,
    pub staged: bool,
}

impl Revision {
    /// Whether `other` means the same: same generation and mode. Without a generation only
    /// the same resourceVersion is.
    pub fn same_meaning(&self, other: &Revision) -> bool {
        self.staged == other.staged
            && match (self.generation, other.generation) {
                (Some(a), Some(b)) => a == b,
                _ => self.resource_version == other.resource_version,
            }
    }

    /// `generation 3`, or `resourceVersion 17` without one.
    pub fn describe(&self) -> String {
        match self.generation {
            Some(g) => format!("generation {g}"),
            None => format!("resourceVersion {}", self.resource_version),
        }
    }
}

/// What validation found in a policy object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Findings {
    None,
    /// Applied, with rules that fail closed (fields this build does not know); one per line.
    Warnings(String),
    /// Left out of the world; every finding, one per line (warnings marked).
    Errors(String),
}

/// A policy object as the reports about it (Events, conditions) need it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyObject {
    pub kind: &'static str,
    /// The store key: the UID (or `namespace/name`).
    pub uid: String,
    pub reference: ObjectReference,
    pub revision: Revision,
    pub findings: Findings,
    /// The object's `status.conditions` (DeveloperNetworkPolicies).
    pub conditions: Vec<Condition>,
}

impl PolicyObject {
    fn of(kind: &'static str, uid: &str, p: &PolicyEntry) -> PolicyObject {
        let lines = |warnings_marked: bool| {
            p.diagnostics
                .0
                .iter()
                .filter(|d| warnings_marked || d.severity == Severity::Warning)
                .map(|d| {
                    let tag = if warnings_marked && d.severity == Severity::Warning {
                        "warning: "
                    } else {
                        ""
                    };
                    format!("{tag}{}", d.message)
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let findings = if p.skipped() {
            Findings::Errors(lines(true))
        } else if p.diagnostics.0.is_empty() {
            Findings::None
        } else {
            Findings::Warnings(lines(false))
        };
        PolicyObject {
            kind,
            uid: uid.to_owned(),
            reference: p.reference.clone(),
            revision: p.revision.clone(),
            findings,
            conditions: p.conditions.clone(),
        }
    }
}

/// A converted object with its store key. `entry: None` is an object that is listed but not
/// read (a finished pod): it replaces whatever the key held before.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub key: String,
    pub entry: Option<Entry>,
}

/// The UID, or `namespace/name` for an object without one.
fn key(meta: &kube::api::ObjectMeta) -> String {
    match &meta.uid {
        Some(uid) if !uid.is_empty() => uid.clone(),
        _ => format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or("")
        ),
    }
}

pub fn namespace(ns: &Namespace) -> Keyed {
    Keyed {
        key: key(&ns.metadata),
        entry: NamespaceInfo::from_object(ns).map(Entry::Namespace),
    }
}

pub fn node(node: &Node) -> Keyed {
    Keyed {
        key: key(&node.metadata),
        entry: NodeInfo::from_object(node).map(Entry::Node),
    }
}

pub fn pod(pod: &Pod) -> Keyed {
    let running = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Running");
    Keyed {
        key: key(&pod.metadata),
        entry: PodInfo::from_object(pod).map(|info| {
            Entry::Pod(PodEntry {
                info,
                running,
                created: pod.metadata.creation_timestamp.clone(),
            })
        }),
    }
}

pub fn service(svc: &Service) -> Keyed {
    Keyed {
        key: key(&svc.metadata),
        entry: accepted("Service", &svc.metadata, ServiceInfo::from_object(svc))
            .map(Entry::Service),
    }
}

pub fn endpoint_slice(slice: &EndpointSlice) -> Keyed {
    Keyed {
        key: key(&slice.metadata),
        entry: accepted(
            "EndpointSlice",
            &slice.metadata,
            EndpointSliceInfo::from_object(slice),
        )
        .map(Entry::EndpointSlice),
    }
}

/// An inventory object the API server accepted but this build cannot read (a field out of
/// range, a protocol it does not know) is left out and logged: it contributes no backend,
/// and connections to it are decided as to any other address.
fn accepted<T>(
    kind: &str,
    meta: &kube::api::ObjectMeta,
    converted: Result<T, Vec<Finding>>,
) -> Option<T> {
    match converted {
        Ok(v) => Some(v),
        Err(findings) => {
            for f in findings {
                tracing::warn!(
                    target: "kube",
                    kind,
                    namespace = meta.namespace.as_deref().unwrap_or(""),
                    name = meta.name.as_deref().unwrap_or(""),
                    "left out: {}: {}",
                    f.pointer,
                    f.message
                );
            }
            None
        }
    }
}

/// Validates and compiles a policy object, keeping every field it carries: a field this build
/// does not know is detected by the loader and fails closed, never silently dropped.
pub fn policy(kind: &WatchedKind, obj: &DynamicObject) -> Keyed {
    let meta = &obj.metadata;
    let mut value = obj.data.clone();
    if let Value::Object(map) = &mut value {
        // The API server serves the version that was asked for; list items may omit it.
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.kind.to_owned()));
        let mut m = serde_json::Map::new();
        for (field, v) in [("name", &meta.name), ("namespace", &meta.namespace)] {
            if let Some(v) = v {
                m.insert(field.into(), Value::String(v.clone()));
            }
        }
        // The one annotation that changes what the object means: its mode.
        if let Some(mode) = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(MODE_ANNOTATION))
        {
            let annotations = serde_json::Map::from_iter([(
                MODE_ANNOTATION.to_owned(),
                Value::String(mode.clone()),
            )]);
            m.insert("annotations".into(), Value::Object(annotations));
        }
        map.insert("metadata".into(), Value::Object(m));
    }
    let loaded = load_objects(
        Path::new(super::SOURCE_NAME),
        [&value],
        UnknownFields::FailClosed,
    );
    let reference = ObjectReference {
        api_version: Some(kind.api_version()),
        kind: Some(kind.kind.to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    };
    let revision = Revision {
        generation: meta.generation,
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        staged: !loaded.world.staged.is_empty(),
    };
    // Conditions in another shape than metav1.Condition are read as none (and rewritten).
    let conditions = obj
        .data
        .pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    Keyed {
        key: key(meta),
        entry: Some(Entry::Policy(Box::new(PolicyEntry {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            reference,
            revision,
            part: loaded.world,
            diagnostics: loaded.diagnostics,
            conditions,
        }))),
    }
}

/// The stores of every watched kind, and which kinds have been synced.
#[derive(Debug, Default)]
pub struct ClusterObjects {
    stores: BTreeMap<&'static str, HashMap<String, Entry>>,
    synced: BTreeMap<&'static str, bool>,
}

impl ClusterObjects {
    /// Stores for `kinds`, none of them synced yet.
    pub fn new(kinds: &[WatchedKind]) -> Self {
        let mut c = ClusterObjects::default();
        for k in kinds {
            c.stores.insert(k.kind, HashMap::new());
            c.synced.insert(k.kind, false);
        }
        c
    }

    /// True once every kind has been listed (or found absent) at least once.
    pub fn ready(&self) -> bool {
        self.synced.values().all(|s| *s)
    }

    /// The kinds not synced yet.
    pub fn pending(&self) -> Vec<&'static str> {
        self.synced
            .iter()
            .filter(|(_, s)| !**s)
            .map(|(k, _)| *k)
            .collect()
    }

    /// An object was added or changed. False when nothing the world is built from changed:
    /// a policy object's new resourceVersion without a new [`Revision`] (its status was
    /// written, a label changed) only updates what is stored about it.
    pub fn apply(&mut self, kind: &'static str, object: Keyed) -> bool {
        let store = self.stores.entry(kind).or_default();
        match object.entry {
            Some(Entry::Policy(new)) => {
                if let Some(Entry::Policy(old)) = store.get_mut(&object.key)
                    && old.revision.same_meaning(&new.revision)
                {
                    old.reference = new.reference;
                    old.revision.resource_version = new.revision.resource_version;
                    old.conditions = new.conditions;
                    return false;
                }
                store.insert(object.key, Entry::Policy(new));
            }
            Some(e) => {
                store.insert(object.key, e);
            }
            None => {
                store.remove(&object.key);
            }
        }
        true
    }

    pub fn delete(&mut self, kind: &'static str, key: &str) {
        if let Some(store) = self.stores.get_mut(kind) {
            store.remove(key);
        }
    }

    /// A complete list of the kind (initial sync or relist): replaces its store.
    pub fn replace(&mut self, kind: &'static str, objects: Vec<Keyed>) {
        let store: HashMap<String, Entry> = objects
            .into_iter()
            .filter_map(|o| o.entry.map(|e| (o.key, e)))
            .collect();
        self.stores.insert(kind, store);
        self.synced.insert(kind, true);
    }

    /// The kind is not served (its CRD is not installed): empty, and synced.
    pub fn absent(&mut self, kind: &'static str) {
        self.replace(kind, Vec::new());
    }

    /// Every stored policy object, sorted by kind, namespace and name.
    pub fn policy_objects(&self) -> Vec<PolicyObject> {
        let mut out: Vec<(&str, &str, PolicyObject)> = Vec::new();
        for (kind, store) in &self.stores {
            for (uid, entry) in store {
                if let Entry::Policy(p) = entry {
                    out.push((&p.namespace, &p.name, PolicyObject::of(kind, uid, p)));
                }
            }
        }
        out.sort_by(|a, b| (a.2.kind, a.0, a.1).cmp(&(b.2.kind, b.0, b.1)));
        out.into_iter().map(|(_, _, o)| o).collect()
    }

    /// The diagnostics of every stored policy object (for `check` against a cluster).
    pub fn diagnostics(&self) -> Diagnostics {
        let mut out = Diagnostics::default();
        for store in self.stores.values() {
            for e in store.values() {
                if let Entry::Policy(p) = e {
                    out.extend(p.diagnostics.clone());
                }
            }
        }
        out.0
            .sort_by(|a, b| (&a.object, &a.message).cmp(&(&b.object, &b.message)));
        out
    }

    /// Assembles the world from the stores: deterministic (sorted) whatever the arrival order.
    pub fn world(&self) -> World {
        let mut world = World::default();
        let inventory = &mut world.inventory;
        let mut pods: Vec<&PodEntry> = Vec::new();
        let mut policies: Vec<(usize, &PolicyEntry)> = Vec::new();
        for (kind, store) in &self.stores {
            let order = super::WATCHED
                .iter()
                .position(|k| k.kind == *kind)
                .unwrap_or(usize::MAX);
            for entry in store.values() {
                match entry {
                    Entry::Namespace(n) => inventory.namespaces.push(n.clone()),
                    Entry::Node(n) => inventory.nodes.push(n.clone()),
                    Entry::Pod(p) => pods.push(p),
                    Entry::Service(s) => inventory.services.push(s.clone()),
                    Entry::EndpointSlice(s) => inventory.endpoint_slices.push(s.clone()),
                    Entry::Policy(p) => policies.push((order, p)),
                }
            }
        }
        inventory.namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        inventory.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        inventory
            .services
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        inventory
            .endpoint_slices
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods.sort_by(|a, b| {
            (&a.info.namespace, &a.info.name).cmp(&(&b.info.namespace, &b.info.name))
        });
        inventory.pods = resolve_pod_ips(&pods);
        inventory.add_missing_namespaces();
        policies.sort_by(|(ka, a), (kb, b)| {
            (ka, &a.namespace, &a.name).cmp(&(kb, &b.namespace, &b.name))
        });
        for (_, p) in policies {
            world
                .cluster_policies
                .extend(p.part.cluster_policies.iter().cloned());
            world
                .network_policies
                .extend(p.part.network_policies.iter().cloned());
            world
                .developer_policies
                .extend(p.part.developer_policies.iter().cloned());
            world.staged.extend(&p.part.staged);
        }
        world
    }
}

/// Gives each IP to one pod: running before not running, then the newest, then the greater
/// UID (only so that the outcome never depends on arrival order). Host-network pods share the
/// node's addresses by design and take part in no contest.
fn resolve_pod_ips(pods: &[&PodEntry]) -> Vec<PodInfo> {
    let rank = |p: &PodEntry| (p.running, p.created.clone(), p.info.uid.clone());
    let mut owner: HashMap<IpAddr, usize> = HashMap::new();
    for (i, p) in pods.iter().enumerate() {
        if p.info.host_network {
            continue;
        }
        for ip in &p.info.ips {
            owner
                .entry(*ip)
                .and_modify(|o| {
                    if rank(p) > rank(pods[*o]) {
                        *o = i;
                    }
                })
                .or_insert(i);
        }
    }
    pods.iter()
        .enumerate()
        .map(|(i, p)| {
            let mut info = p.info.clone();
            if !info.host_network {
                info.ips.retain(|ip| owner.get(ip) == Some(&i));
            }
            info
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::WATCHED;
    use serde_json::json;

    fn pod_obj(name: &str, uid: &str, ips: &[&str], phase: &str, created: &str) -> Pod {
        let ips: Vec<Value> = ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "a", "uid": uid, "creationTimestamp": created},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": phase, "podIP": ips.first().map(|i| i["ip"].clone()), "podIPs": ips}
        }))
        .unwrap()
    }

    fn owner(objects: &ClusterObjects, ip: &str) -> Vec<String> {
        let ip: IpAddr = ip.parse().unwrap();
        objects
            .world()
            .inventory
            .pods
            .iter()
            .filter(|p| p.ips.contains(&ip))
            .map(|p| p.name.clone())
            .collect()
    }

    #[test]
    fn a_reused_ip_belongs_to_the_running_then_newest_pod() {
        let mut o = ClusterObjects::new(WATCHED);
        let t1 = "2026-11-20T10:00:00Z";
        let t2 = "2026-11-20T11:00:00Z";
        // A finished pod keeps listing the IP: not read at all.
        o.apply(
            "Pod",
            pod(&pod_obj("job", "u1", &["10.0.0.1"], "Succeeded", t2)),
        );
        o.apply(
            "Pod",
            pod(&pod_obj("web", "u2", &["10.0.0.1"], "Running", t1)),
        );
        assert_eq!(owner(&o, "10.0.0.1"), ["web"]);
        // Running beats Pending, even when the pending one is newer.
        o.apply(
            "Pod",
            pod(&pod_obj("new", "u3", &["10.0.0.1"], "Pending", t2)),
        );
        assert_eq!(owner(&o, "10.0.0.1"), ["web"]);
        // Two running pods: the newer one; the older keeps its other IP.
        o.apply(
            "Pod",
            pod(&pod_obj(
                "old",
                "u4",
                &["10.0.0.2", "fd00::2"],
                "Running",
                t1,
            )),
        );
        o.apply(
            "Pod",
            pod(&pod_obj("newer", "u5", &["10.0.0.2"], "Running", t2)),
        );
        assert_eq!(owner(&o, "10.0.0.2"), ["newer"]);
        assert_eq!(owner(&o, "fd00::2"), ["old"]);
        let pods = o.world().inventory.pods;
        assert_eq!(pods.len(), 4, "job is not read, the others are");
    }

    #[test]
    fn stores_are_keyed_by_uid() {
        let mut o = ClusterObjects::new(WATCHED);
        let t = "2026-11-20T10:00:00Z";
        // The same name again with a new UID (a recreated pod), then the old one's deletion.
        o.apply(
            "Pod",
            pod(&pod_obj("web", "old", &["10.0.0.1"], "Running", t)),
        );
        o.apply(
            "Pod",
            pod(&pod_obj("web", "new", &["10.0.0.9"], "Running", t)),
        );
        o.delete("Pod", "old");
        assert_eq!(owner(&o, "10.0.0.9"), ["web"]);
        assert!(
            owner(&o, "10.0.0.1").is_empty(),
            "no stale IP → pod mapping"
        );
        // A pod that finishes is dropped from the store by its update.
        o.apply(
            "Pod",
            pod(&pod_obj("web", "new", &["10.0.0.9"], "Failed", t)),
        );
        assert!(o.world().inventory.pods.is_empty());
    }

    #[test]
    fn readiness_needs_every_kind_and_absent_kinds_count() {
        let mut o = ClusterObjects::new(WATCHED);
        assert!(!o.ready());
        for k in WATCHED {
            if k.optional {
                o.absent(k.kind);
            } else {
                o.replace(k.kind, Vec::new());
            }
        }
        assert!(o.ready());
        assert!(o.pending().is_empty());
    }

    #[test]
    fn invalid_policies_are_skipped_with_their_findings() {
        let kind = crate::kube::WatchedKind::by_name("ClusterNetworkPolicy").unwrap();
        let obj = |generation: i64, rv: &str, cidr: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                "metadata": {"name": "p", "uid": "u", "resourceVersion": rv, "generation": generation},
                "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                         "egress": [{"action": "Deny", "to": [{"networks": [cidr]}]}]}
            }))
            .unwrap()
        };
        let mut o = ClusterObjects::new(WATCHED);
        assert!(o.apply(kind.kind, policy(kind, &obj(1, "1", "10.0.0.5/8"))));
        let objects = o.policy_objects();
        assert_eq!(objects.len(), 1);
        let Findings::Errors(message) = &objects[0].findings else {
            panic!("{objects:?}")
        };
        assert!(
            message
                .contains("spec.egress[0].to[0].networks[0]: CIDR `10.0.0.5/8` has host bits set"),
            "{message}"
        );
        assert_eq!(objects[0].revision.describe(), "generation 1");
        assert!(o.world().cluster_policies.is_empty());
        // Fixed: it applies.
        assert!(o.apply(kind.kind, policy(kind, &obj(2, "2", "10.0.0.0/8"))));
        assert_eq!(o.world().cluster_policies.len(), 1);
        assert_eq!(o.policy_objects()[0].findings, Findings::None);
    }

    #[test]
    fn a_status_write_changes_no_revision_and_rebuilds_nothing() {
        let kind = crate::kube::WatchedKind::by_name(crate::api::developer::KIND).unwrap();
        let obj = |generation: i64, rv: &str, status: Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "policy.chokepoint.dev/v1alpha1", "kind": "DeveloperNetworkPolicy",
                "metadata": {"name": "p", "namespace": "a", "uid": "u", "resourceVersion": rv, "generation": generation},
                "spec": {"subject": {"podSelector": {}},
                         "egress": [{"action": "Deny", "to": [{"networks": ["192.0.2.0/24"]}]}]},
                "status": status
            }))
            .unwrap()
        };
        let mut o = ClusterObjects::new(WATCHED);
        assert!(o.apply(kind.kind, policy(kind, &obj(1, "5", json!({})))));
        let accepted = json!({"conditions": [{"type": "Accepted", "status": "True",
            "observedGeneration": 1, "lastTransitionTime": "2026-11-20T10:00:00Z",
            "reason": "Valid", "message": "valid"}]});
        // The status was written: same generation, new resourceVersion.
        assert!(!o.apply(kind.kind, policy(kind, &obj(1, "6", accepted))));
        let p = &o.policy_objects()[0];
        assert_eq!(p.revision.resource_version, "6");
        assert_eq!(p.conditions.len(), 1);
        assert_eq!(p.conditions[0].type_, "Accepted");
        // The spec changed.
        assert!(o.apply(kind.kind, policy(kind, &obj(2, "7", json!({})))));
        // Staged by annotation: the same generation, another revision.
        let mut staged = obj(2, "8", json!({}));
        staged.metadata.annotations =
            Some([("policy.chokepoint.dev/mode".to_owned(), "staged".to_owned())].into());
        assert!(o.apply(kind.kind, policy(kind, &staged)));
        assert!(o.policy_objects()[0].revision.staged);
    }

    #[test]
    fn a_watched_policy_keeps_its_mode_annotation() {
        let kind = crate::kube::WatchedKind::by_name("ClusterNetworkPolicy").unwrap();
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "p", "uid": "u", "resourceVersion": "1",
                         "annotations": {"policy.chokepoint.dev/mode": "staged", "other": "x"}},
            "spec": {"tier": "Baseline", "priority": 1, "subject": {"namespaces": {}},
                     "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}]}
        }))
        .unwrap();
        let mut o = ClusterObjects::new(WATCHED);
        assert!(o.apply(kind.kind, policy(kind, &obj)));
        let world = o.world();
        assert!(world.cluster_policies.is_empty());
        assert_eq!(world.staged.cluster_policies.len(), 1);
    }
}
