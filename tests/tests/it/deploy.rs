//! The `deploy/` manifests: what `kubectl apply -k deploy/ --dry-run=client` would catch, and
//! more. Every manifest is parsed with the k8s-openapi types and compared with its own round
//! trip (a misspelt or misplaced field is dropped by the typed read, so it shows up as a
//! difference); the kustomization lists every file; RBAC grants exactly the watched kinds; the
//! embedded settings load; the DaemonSet has what the issue asks for; the committed
//! DeveloperNetworkPolicy CRD is what the Rust types generate.

use std::path::{Path, PathBuf};

use chokepoint_config::kube::{WATCHED, WRITTEN};
use chokepoint_config::settings::{GatewaySettings, SourceKind};
use chokepoint_config::source::parse_documents;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Fields of `original` that `round` lacks or changes, as JSON pointers.
fn lost(original: &Value, round: &Value, pointer: &str, out: &mut Vec<String>) {
    match (original, round) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost(v, w, &format!("{pointer}/{k}"), out),
                    None => out.push(format!("{pointer}/{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost(v, w, &format!("{pointer}/{i}"), out);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(pointer.to_owned()),
    }
}

fn typed<T: DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let obj: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: not a valid {}: {e}", doc["kind"]));
    let round = serde_json::to_value(&obj).unwrap();
    let mut out = Vec::new();
    lost(doc, &round, "", &mut out);
    assert!(
        out.is_empty(),
        "{file}: fields the {} type does not have (typos?): {out:?}",
        doc["kind"]
    );
    obj
}

#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    namespaced_roles: Vec<Role>,
    namespaced_bindings: Vec<RoleBinding>,
    configs: Vec<ConfigMap>,
    daemonsets: Vec<DaemonSet>,
    crds: Vec<CustomResourceDefinition>,
}

fn kustomization() -> (Value, Vec<String>) {
    let text = std::fs::read_to_string(deploy().join("kustomization.yaml")).unwrap();
    let k = parse_documents(&text).unwrap().remove(0).value;
    let resources = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    (k, resources)
}

fn load() -> Manifests {
    let (_, resources) = kustomization();
    let mut m = Manifests::default();
    for file in &resources {
        let text = std::fs::read_to_string(deploy().join(file))
            .unwrap_or_else(|e| panic!("kustomization lists {file}: {e}"));
        for doc in parse_documents(&text).unwrap_or_else(|e| panic!("{file}: {e:?}")) {
            let v = &doc.value;
            match (
                v["apiVersion"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or(""),
            ) {
                ("v1", "Namespace") => m.namespaces.push(typed(file, v)),
                ("v1", "ServiceAccount") => m.accounts.push(typed(file, v)),
                ("v1", "ConfigMap") => m.configs.push(typed(file, v)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => m.roles.push(typed(file, v)),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    m.bindings.push(typed(file, v))
                }
                ("rbac.authorization.k8s.io/v1", "Role") => m.namespaced_roles.push(typed(file, v)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    m.namespaced_bindings.push(typed(file, v))
                }
                ("apps/v1", "DaemonSet") => m.daemonsets.push(typed(file, v)),
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                    m.crds.push(typed(file, v))
                }
                (av, k) => panic!("{file}: unexpected {av} {k}"),
            }
        }
    }
    m
}

#[test]
fn the_kustomization_lists_every_manifest_and_nothing_else() {
    let (k, resources) = kustomization();
    let mut found = Vec::new();
    for dir in ["", "crds"] {
        for e in std::fs::read_dir(deploy().join(dir)).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            if name.ends_with(".yaml") && name != "kustomization.yaml" {
                found.push(if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                });
            }
        }
    }
    found.sort();
    let mut listed = resources.clone();
    listed.sort();
    assert_eq!(
        listed, found,
        "deploy/kustomization.yaml `resources` must list exactly the manifests"
    );
    let m = load();
    assert_eq!(k["namespace"], "chokepoint");
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.namespaces[0].metadata.name.as_deref(), Some("chokepoint"));
}

type Grant = (String, String, Vec<String>);

/// (group, resource, sorted verbs) of every rule.
fn grants(rules: Option<&Vec<PolicyRule>>) -> Vec<Grant> {
    let mut granted = Vec::new();
    for rule in rules.into_iter().flatten() {
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                let mut verbs = rule.verbs.clone();
                verbs.sort();
                granted.push((g.clone(), r.clone(), verbs));
            }
        }
    }
    granted.sort();
    granted
}

#[test]
fn rbac_grants_exactly_what_is_watched_and_written() {
    let m = load();
    assert_eq!(m.roles.len(), 1);
    let written = |own_namespace: bool| {
        WRITTEN
            .iter()
            .filter(move |w| w.own_namespace == own_namespace)
            .map(|w| {
                let mut verbs: Vec<String> = w.verbs.iter().map(|v| (*v).to_owned()).collect();
                verbs.sort();
                (w.group.to_owned(), w.resource.to_owned(), verbs)
            })
    };
    let mut expected: Vec<Grant> = WATCHED
        .iter()
        .map(|k| {
            (
                k.group.to_owned(),
                k.plural.to_owned(),
                vec!["list".into(), "watch".into()],
            )
        })
        .chain(written(false))
        .collect();
    expected.sort();
    assert_eq!(grants(m.roles[0].rules.as_ref()), expected);
    let b = &m.bindings[0];
    assert_eq!(b.role_ref.name, m.roles[0].metadata.name.clone().unwrap());
    let subject = &b.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), m.accounts[0].metadata.name.as_ref());
    assert_eq!(subject.namespace.as_deref(), Some("chokepoint"));

    // The Lease: only in the gateway's own namespace, where the DaemonSet runs.
    assert_eq!(m.namespaced_roles.len(), 1);
    let role = &m.namespaced_roles[0];
    assert_eq!(role.metadata.namespace.as_deref(), Some("chokepoint"));
    let mut expected: Vec<Grant> = written(true).collect();
    expected.sort();
    assert_eq!(grants(role.rules.as_ref()), expected);
    let b = &m.namespaced_bindings[0];
    assert_eq!(
        (b.role_ref.kind.as_str(), Some(&b.role_ref.name)),
        ("Role", role.metadata.name.as_ref())
    );
    assert_eq!(b.metadata.namespace, role.metadata.namespace);
    let subject = &b.subjects.as_ref().unwrap()[0];
    assert_eq!(Some(&subject.name), m.accounts[0].metadata.name.as_ref());
    assert_eq!(subject.namespace.as_deref(), Some("chokepoint"));
}

#[test]
fn the_daemonset_runs_the_gateway_as_the_issue_asks() {
    let m = load();
    let config = &m.configs[0];
    let settings_text = &config.data.as_ref().unwrap()["gateway.yaml"];
    let settings =
        GatewaySettings::from_str(Path::new("/etc/chokepoint/gateway.yaml"), settings_text)
            .unwrap_or_else(|e| panic!("deploy/configmap.yaml gateway.yaml:\n{e}"));
    assert_eq!(settings.policy.source, SourceKind::Kubernetes);
    assert!(
        !settings.capture.remove_on_shutdown,
        "a stopped gateway pod (upgrade, eviction) must leave pod egress closed, not open"
    );
    let state_file = settings.dns.state_file.as_ref().expect("dns.stateFile");

    let ds = &m.daemonsets[0];
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name, m.accounts[0].metadata.name);
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerates every taint"
    );
    let mounts = pod.containers[0].volume_mounts.iter().flatten();
    assert!(
        mounts
            .clone()
            .any(|m| state_file.starts_with(&m.mount_path) && m.read_only != Some(true)),
        "the DNS state file lies on a writable mount"
    );
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        grace as u64 > settings.timeouts.drain.as_secs(),
        "the grace period lets the drain finish"
    );

    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..])
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let admin = settings.listen.admin;
    for (what, probe) in [
        ("liveness", &c.liveness_probe),
        ("readiness", &c.readiness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{what} probe"));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(admin.port().into()),
            "{what}"
        );
        assert_eq!(
            get.host.as_deref(),
            Some(admin.ip().to_string().as_str()),
            "{what}"
        );
    }
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    let node = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .unwrap();
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    // The status Lease's namespace (policy.kubernetes.status.leaseNamespace unset).
    let namespace = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAMESPACE")
        .unwrap();
    assert_eq!(
        namespace
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.namespace"
    );
    assert!(
        !settings_text.contains("leaseNamespace"),
        "the Lease is in the gateway's own namespace"
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.is_some())
        .unwrap();
    assert_eq!(
        Some(&volume.config_map.as_ref().unwrap().name),
        config.metadata.name.as_ref()
    );
    assert!(
        c.args
            .iter()
            .flatten()
            .any(|a| a == "/etc/chokepoint/gateway.yaml")
    );
}

#[test]
fn the_committed_crd_is_what_the_types_generate() {
    let path = deploy().join("crds/developernetworkpolicies.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = chokepoint_config::kube::crd::developer_network_policy_yaml();
    assert!(
        committed == generated,
        "{} differs from what the Rust types generate; regenerate it with\n  cargo run -p chokepoint -- crd > deploy/crds/developernetworkpolicies.yaml",
        path.display()
    );
    let m = load();
    assert_eq!(m.crds.len(), 1);
    let names = &m.crds[0].spec.names;
    assert_eq!(names.kind, chokepoint_config::api::developer::KIND);
    let watched = chokepoint_config::kube::WatchedKind::by_name(&names.kind).unwrap();
    assert_eq!(names.plural, watched.plural);
    assert_eq!(m.crds[0].spec.group, watched.group);
    assert_eq!(m.crds[0].spec.versions[0].name, watched.version);
}
