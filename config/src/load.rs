//! Loading the declared world from files and directories of YAML or JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{NetworkPolicy, POLICY_GROUP, developer, v1alpha1, v1alpha2};
use crate::compile::{self, Checker, UnknownFields, unknown_field_hint};
use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::inventory::services::Finding;
use crate::inventory::{
    EndpointSliceInfo, Inventory, NamespaceInfo, NodeInfo, PodInfo, ServiceInfo,
};
use crate::mode::PolicyMode;
use crate::model::{ClusterPolicy, DeveloperPolicy, NetworkPolicyRules, Origin};
use crate::source::{Document, child, parse_documents};

/// Everything the gateway decides with: policies and the inventory.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub cluster_policies: Vec<ClusterPolicy>,
    pub network_policies: Vec<NetworkPolicyRules>,
    /// DeveloperNetworkPolicies, in the order they were read.
    pub developer_policies: Vec<DeveloperPolicy>,
    pub inventory: Inventory,
    /// Policies annotated `policy.chokepoint.dev/mode: staged`: they decide nothing.
    pub staged: StagedPolicies,
}

/// The staged policies of a world, by kind (see [`crate::mode`]).
#[derive(Debug, Clone, Default)]
pub struct StagedPolicies {
    pub cluster_policies: Vec<ClusterPolicy>,
    pub network_policies: Vec<NetworkPolicyRules>,
    pub developer_policies: Vec<DeveloperPolicy>,
}

impl StagedPolicies {
    pub fn is_empty(&self) -> bool {
        self.cluster_policies.is_empty()
            && self.network_policies.is_empty()
            && self.developer_policies.is_empty()
    }

    /// Adds copies of `other`'s policies.
    pub fn extend(&mut self, other: &StagedPolicies) {
        self.cluster_policies
            .extend(other.cluster_policies.iter().cloned());
        self.network_policies
            .extend(other.network_policies.iter().cloned());
        self.developer_policies
            .extend(other.developer_policies.iter().cloned());
    }
}

impl World {
    /// The world as if its staged policies were enforced (beside the enforced ones, with
    /// nothing staged); `None` when no policy is staged.
    pub fn with_staged_enforced(&self) -> Option<World> {
        if self.staged.is_empty() {
            return None;
        }
        let mut world = World {
            staged: StagedPolicies::default(),
            ..self.clone()
        };
        let staged = self.staged.clone();
        world.cluster_policies.extend(staged.cluster_policies);
        world.network_policies.extend(staged.network_policies);
        world.developer_policies.extend(staged.developer_policies);
        Some(world)
    }
}

/// A load's result: what was valid, and every finding. Callers refuse the world when
/// `diagnostics.has_errors()`.
#[derive(Debug, Default)]
pub struct Loaded {
    pub world: World,
    pub diagnostics: Diagnostics,
}

/// Reads files, and directories recursively (their `.yaml`, `.yml` and `.json` files, in
/// name order, skipping hidden entries such as a mounted ConfigMap's `..data`). A path that
/// does not exist is an error.
pub fn load_paths<P: AsRef<Path>>(paths: &[P], mode: UnknownFields) -> Loaded {
    let mut loader = Loader::new(mode);
    for path in paths {
        loader.path(path.as_ref(), true);
    }
    loader.finish()
}

/// Reads one text as if it were the file `file` (tests, stdin).
pub fn load_str(file: &Path, text: &str, mode: UnknownFields) -> Loaded {
    let mut loader = Loader::new(mode);
    loader.text(file, text);
    loader.finish()
}

/// Reads objects that came as JSON without a file (from the Kubernetes API): each one is
/// validated and compiled by the same code as a file's objects. Diagnostics name `source` as
/// their file and, having no line to point at, start with the field path
/// (`spec.egress[0].to[0].networks[0]: …`).
pub fn load_objects<'a>(
    source: &Path,
    objects: impl IntoIterator<Item = &'a Value>,
    mode: UnknownFields,
) -> Loaded {
    let mut loader = Loader::new(mode);
    let unlocated = Document::from_value(Value::Null);
    for value in objects {
        loader.object(source, &unlocated, "", value);
    }
    loader.finish()
}

struct Loader {
    mode: UnknownFields,
    loaded: Loaded,
    /// `Kind/namespace/name` → where it was first defined, to catch duplicates.
    seen: HashMap<String, (PathBuf, u64)>,
}

impl Loader {
    fn new(mode: UnknownFields) -> Self {
        Loader {
            mode,
            loaded: Loaded::default(),
            seen: HashMap::new(),
        }
    }

    fn file_error(&mut self, file: &Path, message: String) {
        self.loaded.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            line: 0,
            column: 0,
            object: None,
            message,
        });
    }

    fn path(&mut self, path: &Path, explicit: bool) {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return self.file_error(path, format!("cannot read: {e}")),
        };
        // Symlinked directories are followed only when named explicitly: no walk loops.
        let linked = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if meta.is_dir() && linked && !explicit {
            return;
        }
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        !p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                    })
                    .collect(),
                Err(e) => return self.file_error(path, format!("cannot list directory: {e}")),
            };
            entries.sort();
            for entry in entries {
                self.path(&entry, false);
            }
            return;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !explicit && !matches!(ext, "yaml" | "yml" | "json") {
            return;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => self.text(path, &text),
            Err(e) => self.file_error(path, format!("cannot read: {e}")),
        }
    }

    fn text(&mut self, file: &Path, text: &str) {
        match parse_documents(text) {
            Ok(docs) => {
                for doc in &docs {
                    self.object(file, doc, "", &doc.value);
                }
            }
            Err(e) => self.loaded.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: file.to_owned(),
                line: e.position.line,
                column: e.position.column,
                object: None,
                message: format!("not valid YAML: {}", e.message),
            }),
        }
    }

    fn object(&mut self, file: &Path, doc: &Document, base: &str, value: &Value) {
        let report =
            |this: &mut Self, severity, object: Option<String>, pointer: &str, message: String| {
                let pos = doc.position(&format!("{base}{pointer}"));
                let message = match field_path(pointer) {
                    Some(field) if !doc.has_positions() => format!("{field}: {message}"),
                    _ => message,
                };
                this.loaded.diagnostics.push(Diagnostic {
                    severity,
                    file: file.to_owned(),
                    line: pos.line,
                    column: pos.column,
                    object,
                    message,
                });
            };
        let Some(obj) = value.as_object() else {
            return report(
                self,
                Severity::Error,
                None,
                "",
                "expected a Kubernetes object (a mapping with `apiVersion` and `kind`)".into(),
            );
        };
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            return report(self, Severity::Error, None, "", "`kind` is missing".into());
        }
        if kind.ends_with("List")
            && let Some(items) = obj.get("items").and_then(Value::as_array)
        {
            for (i, item) in items.iter().enumerate() {
                self.object(file, doc, &child(&format!("{base}/items"), i), item);
            }
            return;
        }
        let label = object_label(kind, value);
        let origin_pos = doc.position(base);
        let origin = Origin {
            file: file.to_owned(),
            line: origin_pos.line,
        };
        let group = api_version.split('/').next().unwrap_or("");
        let expected = match kind {
            "ClusterNetworkPolicy" => Some(v1alpha2::API_VERSION),
            "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => Some(v1alpha1::API_VERSION),
            "NetworkPolicy" => Some("networking.k8s.io/v1"),
            developer::KIND => Some(developer::API_VERSION),
            "Namespace" | "Pod" | "Node" | "Service" => Some("v1"),
            "EndpointSlice" => Some("discovery.k8s.io/v1"),
            _ => None,
        };
        let Some(expected) = expected else {
            let what = if group == POLICY_GROUP || group == developer::GROUP {
                Severity::Error
            } else {
                Severity::Warning
            };
            return report(
                self,
                what,
                Some(label),
                "/kind",
                format!("kind `{kind}` ({api_version}) is not read by Chokepoint; ignored"),
            );
        };
        if api_version != expected {
            return report(
                self,
                Severity::Error,
                Some(label),
                "/apiVersion",
                format!("`{kind}` is read as apiVersion `{expected}`, not `{api_version}`"),
            );
        }
        if let Some((first_file, first_line)) = self.seen.get(&label) {
            let message = format!(
                "defined twice; first at {}:{first_line}",
                first_file.display()
            );
            return report(
                self,
                Severity::Error,
                Some(label),
                "/metadata/name",
                message,
            );
        }
        self.seen
            .insert(label.clone(), (file.to_owned(), origin_pos.line));

        let mut checker = match kind {
            "Namespace" | "Pod" | "Node" => {
                return self.inventory_object(kind, value, |this, msg| {
                    report(this, Severity::Error, Some(label.clone()), "", msg)
                });
            }
            "Service" | "EndpointSlice" => {
                for f in self.service_object(kind, value) {
                    report(
                        self,
                        Severity::Error,
                        Some(label.clone()),
                        &f.pointer,
                        f.message,
                    );
                }
                return;
            }
            _ => match PolicyMode::of(value)
                .and_then(|mode| self.policy_object(kind, value, origin, mode))
            {
                Ok(c) => c,
                Err((pointer, message)) => {
                    return report(self, Severity::Error, Some(label), &pointer, message);
                }
            },
        };
        checker.findings.sort_by(|a, b| {
            doc.position(&format!("{base}{}", a.pointer))
                .line
                .cmp(&doc.position(&format!("{base}{}", b.pointer)).line)
        });
        for f in checker.findings {
            report(self, f.severity, Some(label.clone()), &f.pointer, f.message);
        }
    }

    /// Compiles a policy object into the enforced or the staged policies; returns its checker
    /// with every finding.
    fn policy_object(
        &mut self,
        kind: &str,
        value: &Value,
        origin: Origin,
        mode: PolicyMode,
    ) -> Result<Checker, (String, String)> {
        let w = &mut self.loaded.world;
        let (cluster, network, developer) = match mode {
            PolicyMode::Enforced => (
                &mut w.cluster_policies,
                &mut w.network_policies,
                &mut w.developer_policies,
            ),
            PolicyMode::Staged => (
                &mut w.staged.cluster_policies,
                &mut w.staged.network_policies,
                &mut w.staged.developer_policies,
            ),
        };
        Ok(match kind {
            "ClusterNetworkPolicy" => {
                let (obj, mut c) = typed::<v1alpha2::ClusterNetworkPolicy>(kind, value, self.mode)?;
                if let Some(p) = compile::cluster_network_policy(&mut c, &obj, origin) {
                    cluster.push(p);
                }
                c
            }
            "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => {
                let (obj, mut c) = typed::<v1alpha1::AdminNetworkPolicy>(kind, value, self.mode)?;
                let baseline = kind == "BaselineAdminNetworkPolicy";
                if let Some(p) = compile::admin_network_policy(&mut c, &obj, baseline, origin) {
                    cluster.push(p);
                }
                c
            }
            developer::KIND => {
                let (obj, mut c) =
                    typed::<developer::DeveloperNetworkPolicy>(kind, value, self.mode)?;
                if let Some(p) = compile::developer_network_policy(&mut c, &obj, origin) {
                    developer.push(p);
                }
                c
            }
            _ => {
                let (obj, mut c) = typed::<NetworkPolicy>(kind, value, self.mode)?;
                if let Some(p) = compile::network_policy(&mut c, &obj, origin) {
                    network.push(p);
                }
                c
            }
        })
    }

    fn inventory_object(
        &mut self,
        kind: &str,
        value: &Value,
        error: impl FnOnce(&mut Self, String),
    ) {
        let inventory = &mut self.loaded.world.inventory;
        let added = match kind {
            "Namespace" => serde_json::from_value(value.clone())
                .map(|ns| NamespaceInfo::from_object(&ns).map(|n| inventory.namespaces.push(n))),
            // A finished pod is left out; a pod without a name is an error.
            "Pod" => {
                serde_json::from_value(value.clone()).map(|pod| match PodInfo::from_object(&pod) {
                    Some(p) => {
                        inventory.pods.push(p);
                        Some(())
                    }
                    None => pod.metadata.name.as_ref().map(|_| ()),
                })
            }
            _ => serde_json::from_value(value.clone())
                .map(|node| NodeInfo::from_object(&node).map(|n| inventory.nodes.push(n))),
        };
        match added {
            Ok(Some(())) => {}
            Ok(None) => error(self, "`metadata.name` is required".into()),
            Err(e) => error(self, format!("not a valid {kind}: {e}")),
        }
    }

    /// A Service or an EndpointSlice: added to the inventory, or every mistake found.
    fn service_object(&mut self, kind: &str, value: &Value) -> Vec<Finding> {
        let inventory = &mut self.loaded.world.inventory;
        let added = if kind == "Service" {
            deserialize(kind, value)
                .and_then(|svc| ServiceInfo::from_object(&svc).map(|s| inventory.services.push(s)))
        } else {
            deserialize(kind, value).and_then(|slice| {
                EndpointSliceInfo::from_object(&slice).map(|s| inventory.endpoint_slices.push(s))
            })
        };
        added.err().unwrap_or_default()
    }

    fn finish(mut self) -> Loaded {
        self.loaded.world.inventory.add_missing_namespaces();
        let world = &self.loaded.world;
        crate::compile::unresolved_services(
            &world.developer_policies,
            &world.inventory,
            &mut self.loaded.diagnostics,
        );
        self.loaded.diagnostics.sort();
        self.loaded
    }
}

/// A JSON pointer as kubectl spells a field: `/spec/egress/0/to` → `spec.egress[0].to`.
fn field_path(pointer: &str) -> Option<String> {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `Kind/name` or `Kind/namespace/name`.
fn object_label(kind: &str, value: &Value) -> String {
    let meta = &value["metadata"];
    let name = meta["name"].as_str().unwrap_or("<unnamed>");
    let namespaced = matches!(
        kind,
        "NetworkPolicy" | "Pod" | "Service" | "EndpointSlice" | developer::KIND
    );
    match meta["namespace"].as_str() {
        Some(ns) if namespaced => format!("{kind}/{ns}/{name}"),
        _ if namespaced => format!("{kind}/default/{name}"),
        _ => format!("{kind}/{name}"),
    }
}

/// Deserializes a Kubernetes object whose fields are not ours to police (unknown ones are
/// ignored), with the position of a mistake.
fn deserialize<T: DeserializeOwned>(kind: &str, value: &Value) -> Result<T, Vec<Finding>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        vec![Finding {
            pointer: error_pointer(e.path()),
            message: format!("not a valid {kind}: {}", e.into_inner()),
        }]
    })
}

/// Deserializes a policy object, collecting every field the typed shape does not know.
pub(crate) fn typed<T: DeserializeOwned>(
    kind: &str,
    value: &Value,
    mode: UnknownFields,
) -> Result<(T, Checker), (String, String)> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path| unknown.push(ignored_pointer(&path));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let obj: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let pointer = error_pointer(e.path());
        let mut message = e.into_inner().to_string();
        if message.starts_with("invalid type: boolean") {
            // YAML 1.1 (as kubectl reads it) takes bare y/n/yes/no/on/off as booleans.
            message.push_str("; quote the value (e.g. \"on\") if it is meant as text");
        }
        (pointer, message)
    })?;
    // metadata and status are not ours to police.
    unknown.retain(|p| !p.starts_with("/metadata") && !p.starts_with("/status"));
    let mut c = Checker::new(unknown.clone(), mode);
    for pointer in unknown {
        let field = pointer.rsplit('/').next().unwrap_or("");
        let mut message = format!("unknown field `{field}`");
        if let Some(hint) = unknown_field_hint(kind, &pointer) {
            message = format!("{message}: {hint}");
        }
        match mode {
            UnknownFields::Reject => c.error(pointer, message),
            UnknownFields::FailClosed => c.warning(
                pointer,
                format!("{message} (the rule holding it fails closed)"),
            ),
        }
    }
    Ok((obj, c))
}

fn ignored_pointer(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => child(&ignored_pointer(parent), index),
        P::Map { parent, key } => child(&ignored_pointer(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_pointer(parent)
        }
    }
}

fn error_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter().fold(String::new(), |p, seg| match seg {
        Segment::Seq { index } => child(&p, index),
        Segment::Map { key } => child(&p, key),
        Segment::Enum { variant } => child(&p, variant),
        Segment::Unknown => p,
    })
}
