//! The DeveloperNetworkPolicy CRD, generated from the Rust types the gateway reads it with
//! ([`crate::api::developer`]): a field added there appears in the schema, so the committed
//! `deploy/crds/developernetworkpolicies.yaml` can be checked against this (and regenerated
//! with `chokepoint crd`).
//!
//! The schema only describes the shape; the rules (exactly one peer field, port ranges,
//! CIDRs, …) are checked by the gateway, which reports them as Events with the field path
//! rather than have the API server refuse the object with CEL messages.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::api::developer;

/// `metav1.LabelSelector`, as the Kubernetes OpenAPI describes it (k8s-openapi's own schema
/// support would be compiled for every Kubernetes type; this one is small and fixed).
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "A label selector; the empty selector selects everything.",
        "properties": {
            "matchLabels": {
                "type": "object",
                "additionalProperties": {"type": "string"}
            },
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"type": "string"},
                        "values": {"type": "array", "items": {"type": "string"}}
                    }
                }
            }
        },
        "x-kubernetes-map-type": "atomic"
    })
}

/// The openAPIV3Schema of `spec`: inlined (a CRD schema has no `$ref`), without the JSON
/// Schema keywords Kubernetes refuses.
fn spec_schema() -> Value {
    let mut settings = SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    let schema = settings
        .into_generator()
        .into_root_schema_for::<developer::Spec>();
    let mut value = schema.to_value();
    strip(&mut value);
    value
}

/// Removes what a structural schema may not carry: `title`, `$defs`/`definitions`, and the
/// `nullable` that schemars puts on every `Option` (an omitted field is how these types say
/// "unset"; `null` is not a value users write).
fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in ["title", "$defs", "definitions", "nullable", "$schema"] {
                map.remove(key);
            }
            if map.get("format").and_then(Value::as_str) == Some("int64") {
                map.remove("format");
            }
            for child in map.values_mut() {
                strip(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

/// `status`: the conditions the elected gateway writes (`super::conditions`), each a
/// `metav1.Condition`, one per `type`.
fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "Written by Chokepoint (one gateway, elected by a Lease): Accepted and Enforced.",
        "properties": {
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
                    "properties": {
                        "type": {"type": "string", "maxLength": 316},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "observedGeneration": {"type": "integer", "minimum": 0},
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "message": {"type": "string", "maxLength": 32768}
                    }
                }
            }
        }
    })
}

/// The CRD object.
pub fn developer_network_policy() -> CustomResourceDefinition {
    let plural = "developernetworkpolicies";
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.{}", developer::GROUP),
            "labels": {"app.kubernetes.io/name": "chokepoint"}
        },
        "spec": {
            "group": developer::GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": developer::KIND,
                "listKind": format!("{}List", developer::KIND),
                "plural": plural,
                "singular": "developernetworkpolicy",
                "shortNames": ["dnp"]
            },
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A namespace owner's explicit egress allowlist, decided by Chokepoint in the NetworkPolicy tier (docs/developer-network-policy.md).",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": status_schema()
                    }
                }},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Accepted", "type": "string",
                     "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"},
                    {"name": "Enforced", "type": "string",
                     "jsonPath": ".status.conditions[?(@.type==\"Enforced\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ]
            }]
        }
    });
    serde_json::from_value(crd).expect("the CRD literal matches the apiextensions/v1 types")
}

/// The CRD as the YAML committed under `deploy/crds/`.
pub fn developer_network_policy_yaml() -> String {
    let header = "# Generated from the Rust types (config/src/api/developer.rs) by `chokepoint crd`; do not edit.\n";
    let body =
        serde_saphyr::to_string(&developer_network_policy()).expect("a CRD serializes to YAML");
    format!("{header}{body}")
}
