//! Loading files (load.rs, source.rs, diagnostic.rs): every mistake of every file is reported
//! with its position; multi-document YAML, JSON and directories; objects the loader does not
//! read; duplicates.

use std::path::{Path, PathBuf};

use crate::common::*;
use chokepoint_config::model::{PolicyKind, Tier};
use chokepoint_config::{Severity, UnknownFields, load_paths, load_str};

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

// ---------------------------------------------------------------------------------------------
// Every mistake, with its position

#[test]
fn three_independent_mistakes_give_exactly_three_located_errors() {
    let l = load_paths(&[fixture("three-mistakes.yaml")], UnknownFields::Reject);
    assert_errors(
        &l,
        &[
            (8, 3, "priority 2000 is out of range; use 0 to 1000"),
            (
                24,
                5,
                "unknown field `ports`: v1alpha2 replaced `ports:` with `protocols:`",
            ),
            (
                29,
                18,
                "CIDR `203.0.113.7/24` has host bits set; write `203.0.113.0/24`",
            ),
        ],
    );
    assert_warnings(&l, &[]);
    for d in errors(&l) {
        assert_eq!(d.file, fixture("three-mistakes.yaml"));
        assert_eq!(
            d.object.as_deref(),
            Some("ClusterNetworkPolicy/egress-lockdown")
        );
    }
    assert!(l.diagnostics.has_errors());
    assert!(
        l.world.cluster_policies.is_empty(),
        "an invalid policy is not loaded"
    );
}

#[test]
fn diagnostics_print_as_file_line_column_object_message() {
    let text = std::fs::read_to_string(fixture("three-mistakes.yaml")).unwrap();
    let l = load_str(
        Path::new("policies/lockdown.yaml"),
        &text,
        UnknownFields::Reject,
    );
    let printed = l.diagnostics.to_string();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    assert_eq!(
        lines[0],
        "policies/lockdown.yaml:8:3: ClusterNetworkPolicy/egress-lockdown: priority 2000 is out of range; use 0 to 1000 (lower runs first)"
    );
    assert!(lines[1].starts_with(
        "policies/lockdown.yaml:24:5: ClusterNetworkPolicy/egress-lockdown: unknown field `ports`"
    ));
    assert_eq!(
        lines[2],
        "policies/lockdown.yaml:29:18: ClusterNetworkPolicy/egress-lockdown: CIDR `203.0.113.7/24` has host bits set; write `203.0.113.0/24`"
    );

    // Warnings say so; findings about a whole file have no position.
    let l = load("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s, namespace: a}\n");
    assert_eq!(
        l.diagnostics.to_string(),
        "test.yaml:2:1: warning: ConfigMap/s: kind `ConfigMap` (v1) is not read by Chokepoint; ignored\n"
    );
    let l = load_paths(
        &[Path::new("/nonexistent/chokepoint/policy.yaml")],
        UnknownFields::Reject,
    );
    assert!(
        l.diagnostics
            .to_string()
            .starts_with("/nonexistent/chokepoint/policy.yaml: cannot read: "),
        "{}",
        dump(&l)
    );
}

#[test]
fn errors_from_two_files_are_all_reported_in_file_order() {
    let l = load_paths(
        &[fixture("three-mistakes.yaml"), fixture("legacy-anp.yaml")],
        UnknownFields::Reject,
    );
    let got: Vec<(PathBuf, u64, u64)> = errors(&l)
        .iter()
        .map(|d| (d.file.clone(), d.line, d.column))
        .collect();
    assert_eq!(
        got,
        vec![
            (fixture("legacy-anp.yaml"), 11, 5),
            (fixture("legacy-anp.yaml"), 15, 7),
            (fixture("three-mistakes.yaml"), 8, 3),
            (fixture("three-mistakes.yaml"), 24, 5),
            (fixture("three-mistakes.yaml"), 29, 18),
        ],
        "{}",
        dump(&l)
    );
    let e = errors(&l);
    assert!(
        e[0].message
            .contains("unknown action `Accept`; use Allow, Deny or Pass")
    );
    assert_eq!(e[0].object.as_deref(), Some("AdminNetworkPolicy/legacy"));
    assert!(
        e[1].message
            .contains("range start 9000 is greater than end 8000")
    );
}

#[test]
fn every_object_of_a_file_is_checked_even_after_an_invalid_one() {
    let bad = cnp("- action: Deny\n  to:\n  - networks: [10.0.0.1/8]\n");
    let good =
        cnp("- action: Deny\n  to:\n  - networks: [10.0.0.0/8]\n").replace("name: p", "name: q");
    let l = load(&format!("{bad}---\n{bad}---\n{good}").replacen("name: p", "name: first", 1));
    assert_errors(
        &l,
        &[
            (13, 18, "write `10.0.0.0/8`"),
            (27, 18, "write `10.0.0.0/8`"),
        ],
    );
    let names: Vec<&str> = l
        .world
        .cluster_policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["q"],
        "valid objects are still read; callers refuse the world on errors"
    );
}

// ---------------------------------------------------------------------------------------------
// Documents and formats

#[test]
fn multi_document_files_keep_positions_and_origins() {
    let text = "# leading comment
---
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
---
# an empty document above, a comment here
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: second
spec:
  tier: Baseline
  priority: 7
  subject: {namespaces: {}}
...
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: third
spec:
  tier: Admin
  priority: 1001
  subject: {namespaces: {}}
";
    let l = load(text);
    assert_errors(&l, &[(25, 3, "priority 1001 is out of range")]);
    assert_eq!(l.world.inventory.namespaces.len(), 1);
    let p = &l.world.cluster_policies;
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].name.as_str(), p[0].tier, p[0].priority),
        ("second", Tier::Baseline, 7)
    );
    assert_eq!(p[0].origin.file, Path::new(FILE));
    assert_eq!(
        p[0].origin.line, 9,
        "a policy's origin is the line its document starts on"
    );
    assert!(p[0].egress.is_empty());
}

#[test]
fn empty_files_and_empty_documents_are_fine() {
    for text in ["", "# only a comment\n", "---\n---\n", "---\n...\n"] {
        let l = load(text);
        assert_clean(&l);
        assert!(l.world.cluster_policies.is_empty() && l.world.inventory.namespaces.is_empty());
    }
}

#[test]
fn json_files_load_and_their_errors_are_located() {
    let text = r#"{
  "apiVersion": "policy.networking.k8s.io/v1alpha2",
  "kind": "ClusterNetworkPolicy",
  "metadata": {"name": "j"},
  "spec": {
    "tier": "Admin",
    "priority": 3,
    "subject": {"namespaces": {}},
    "egress": [
      {"action": "Deny", "to": [{"networks": ["10.0.0.1/8"]}]},
      {"action": "Accept", "to": [{"domainNames": ["*.example.com"]}], "protocols": [{"tcp": {"destinationPort": {"number": 0}}}]}
    ]
  }
}"#;
    let l = load_str(Path::new("p.json"), text, UnknownFields::Reject);
    assert_errors(
        &l,
        &[
            (10, 47, "write `10.0.0.0/8`"),
            (11, 115, "port 0 is out of range"),
        ],
    );

    let fixed = text
        .replace("10.0.0.1/8", "10.0.0.0/8")
        .replace("\"number\": 0", "\"number\": 443");
    let l = load_str(Path::new("p.json"), &fixed, UnknownFields::Reject);
    assert_eq!(only_rules(&l).len(), 2);

    // `kubectl get ... -o json` prints a List.
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"team": "x"}}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"},
     "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]},
     "status": {"phase": "Running", "podIP": "10.1.0.4", "podIPs": [{"ip": "10.1.0.4"}]}}
], "metadata": {"resourceVersion": ""}}"#;
    let l = load_str(Path::new("inventory.json"), list, UnknownFields::Reject);
    assert_clean(&l);
    assert_eq!(
        l.world.inventory.pods[0].ips,
        vec!["10.1.0.4".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        l.world.inventory.namespaces[0]
            .labels
            .get("team")
            .map(String::as_str),
        Some("x")
    );
}

#[test]
fn invalid_yaml_is_a_located_error() {
    let l = load("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [a, b\n");
    assert_errors(&l, &[(4, 9, "not valid YAML")]);
    assert!(errors(&l)[0].object.is_none());

    let l = load("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n labels: {}\n");
    assert_errors(&l, &[(5, 2, "not valid YAML")]);

    // Duplicate keys are an error, not a silent last-one-wins.
    let l = load("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n");
    assert_errors(&l, &[(5, 3, "duplicate")]);
    assert!(l.world.inventory.namespaces.is_empty());

    // A syntax error in one file does not hide the objects or errors of the others.
    let l = load_paths(
        &[
            fixture("tree/notes.txt"),
            fixture("legacy-anp.yaml"),
            fixture("tree/10-admin.yaml"),
        ],
        UnknownFields::Reject,
    );
    assert_eq!(errors(&l).len(), 3, "{}", dump(&l));
    let notes = errors(&l)
        .into_iter()
        .find(|d| d.file.ends_with("notes.txt"))
        .unwrap();
    assert_eq!((notes.line, notes.column), (1, 27), "{}", dump(&l));
    assert_eq!(l.world.cluster_policies.len(), 1);
}

#[test]
fn documents_that_are_not_objects_are_errors() {
    let l = load("- a\n- b\n---\njust a string\n---\napiVersion: v1\nmetadata: {name: x}\n");
    assert_errors(
        &l,
        &[
            (1, 1, "expected a Kubernetes object"),
            (4, 1, "expected a Kubernetes object"),
            (6, 1, "`kind` is missing"),
        ],
    );

    let l = load(
        "apiVersion: v1\nkind: List\nitems:\n- 3\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n",
    );
    assert_errors(&l, &[(4, 3, "expected a Kubernetes object")]);
    assert_eq!(l.world.inventory.namespaces.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Kinds and versions

#[test]
fn other_kinds_are_ignored_with_a_warning_but_unknown_policy_kinds_are_errors() {
    let text = "apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: a}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: a}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: DeveloperNetworkPolicyX
metadata: {name: x}
";
    let l = load(text);
    assert_warnings(
        &l,
        &[
            (2, 1, "kind `ConfigMap` (v1) is not read"),
            (6, 1, "kind `Deployment` (apps/v1) is not read"),
        ],
    );
    assert_errors(
        &l,
        &[(
            10,
            1,
            "kind `DeveloperNetworkPolicyX` (policy.networking.k8s.io/v1alpha1) is not read",
        )],
    );

    // Warnings alone do not fail a load.
    let l = load("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n");
    assert!(!l.diagnostics.has_errors());
    assert_eq!(l.diagnostics.0[0].severity, Severity::Warning);
}

#[test]
fn each_kind_is_read_at_one_api_version() {
    let l = load(
        &cnp("- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n")
            .replace("/v1alpha2", "/v1alpha1"),
    );
    assert_one_error(
        &l,
        1,
        1,
        &[
            "`ClusterNetworkPolicy` is read as apiVersion `policy.networking.k8s.io/v1alpha2`, not `policy.networking.k8s.io/v1alpha1`",
        ],
    );
    let l = load(
        &anp("- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n").replace("/v1alpha1", "/v1beta1"),
    );
    assert_one_error(
        &l,
        1,
        1,
        &[
            "read as apiVersion `policy.networking.k8s.io/v1alpha1`, not `policy.networking.k8s.io/v1beta1`",
        ],
    );
    let l = load(
        &np("", "policyTypes: [Egress]")
            .replace("networking.k8s.io/v1", "networking.k8s.io/v1beta1"),
    );
    assert_one_error(
        &l,
        1,
        1,
        &["`NetworkPolicy` is read as apiVersion `networking.k8s.io/v1`"],
    );
    let l = load("kind: Namespace\nmetadata: {name: a}\n");
    assert_one_error(
        &l,
        1,
        1,
        &["`Namespace` is read as apiVersion `v1`, not ``"],
    );
}

// ---------------------------------------------------------------------------------------------
// Duplicates

#[test]
fn a_duplicate_object_is_an_error_naming_the_first_location() {
    let one = cnp("- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n");
    let l = load(&format!("{one}---\n{one}"));
    assert_errors(&l, &[(18, 3, "defined twice; first at test.yaml:1")]);
    assert_eq!(l.world.cluster_policies.len(), 1);

    // Same name, different kind or namespace: not a duplicate.
    let text = format!(
        "{one}---\n{}---\n{}---\n{}",
        anp("- action: Deny\n  to:\n  - networks: [0.0.0.0/0]\n"),
        np("", "policyTypes: [Egress]"),
        np("", "policyTypes: [Egress]").replace("namespace: team-a", "namespace: team-b")
    );
    let l = load(&text);
    assert_clean(&l);
    assert_eq!(
        (
            l.world.cluster_policies.len(),
            l.world.network_policies.len()
        ),
        (2, 2)
    );

    // Inventory objects too, also inside a List.
    let l = load(
        "apiVersion: v1\nkind: List\nitems:
- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: a}}
- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: b}}
- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: a}}
",
    );
    assert_errors(&l, &[(6, 42, "defined twice; first at test.yaml:4")]);
    assert_eq!(l.world.inventory.pods.len(), 2);
}

#[test]
fn a_duplicate_in_another_file_names_that_file() {
    let first = fixture("tree/10-admin.yaml");
    let l = load_paths(&[first.clone(), fixture("tree")], UnknownFields::Reject);
    let errs = errors(&l);
    assert_eq!(errs.len(), 1, "{}", dump(&l));
    assert_eq!(
        errs[0].object.as_deref(),
        Some("ClusterNetworkPolicy/allow-dns")
    );
    assert_eq!((errs[0].line, errs[0].column), (4, 3));
    assert!(
        errs[0]
            .message
            .contains(&format!("defined twice; first at {}:1", first.display())),
        "{}",
        errs[0].message
    );
}

// ---------------------------------------------------------------------------------------------
// Paths

#[test]
fn directories_are_read_recursively_yaml_yml_and_json_only() {
    let l = load_paths(&[fixture("tree")], UnknownFields::Reject);
    assert_clean(&l);
    let w = &l.world;
    let cluster: Vec<(&str, PolicyKind)> = w
        .cluster_policies
        .iter()
        .map(|p| (p.name.as_str(), p.kind))
        .collect();
    assert_eq!(
        cluster,
        [
            ("allow-dns", PolicyKind::ClusterNetworkPolicy),
            ("default", PolicyKind::BaselineAdminNetworkPolicy)
        ]
    );
    assert_eq!(
        w.cluster_policies[0].origin.file,
        fixture("tree/10-admin.yaml")
    );
    assert_eq!(
        w.cluster_policies[1].origin.file,
        fixture("tree/sub/20-baseline.yml")
    );
    assert_eq!(w.cluster_policies[1].origin.line, 2);
    assert_eq!(w.network_policies.len(), 1);
    assert_eq!(
        w.network_policies[0].origin.file,
        fixture("tree/sub/deeper/30-np.json")
    );
    assert_eq!(
        (
            w.network_policies[0].namespace.as_str(),
            w.network_policies[0].name.as_str()
        ),
        ("shop", "web-egress")
    );
}

#[test]
fn a_file_named_explicitly_is_read_whatever_its_extension() {
    let l = load_paths(&[fixture("tree/notes.txt")], UnknownFields::Reject);
    assert_errors(&l, &[(1, 27, "not valid YAML")]);
    assert_eq!(errors(&l)[0].file, fixture("tree/notes.txt"));
}

#[test]
fn a_missing_path_is_an_error_and_the_other_paths_still_load() {
    let missing = Path::new("/nonexistent/chokepoint/policies");
    let l = load_paths(
        &[missing.to_path_buf(), fixture("tree/10-admin.yaml")],
        UnknownFields::Reject,
    );
    assert_errors(&l, &[(0, 0, "cannot read")]);
    assert_eq!(errors(&l)[0].file, missing);
    assert_eq!(l.world.cluster_policies.len(), 1);

    let none: [&Path; 0] = [];
    assert_clean(&load_paths(&none, UnknownFields::Reject));
}

#[test]
fn policies_inside_a_list_are_located_at_their_item() {
    // `kubectl get cnp -o yaml` prints a List; positions count from the top of the file.
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: policy.networking.k8s.io/v1alpha2
  kind: ClusterNetworkPolicy
  metadata: {name: a}
  spec: {tier: Admin, priority: 1, subject: {namespaces: {}}}
  status:
    conditions: [{type: Ready, status: \"True\"}]
- apiVersion: policy.networking.k8s.io/v1alpha2
  kind: ClusterNetworkPolicy
  metadata: {name: b}
  spec:
    tier: Admin
    priority: 2
    subject: {namespaces: {}}
    egress:
    - action: Deny
      to: [{networks: [10.0.0.1/8]}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicyList
  items:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: np, namespace: x}
    spec: {policyTypes: [Egress, Sideways]}
";
    let l = load(text);
    assert_errors(
        &l,
        &[
            (19, 24, "write `10.0.0.0/8`"),
            (26, 34, "unknown policy type `Sideways`"),
        ],
    );
    let e = errors(&l);
    assert_eq!(e[0].object.as_deref(), Some("ClusterNetworkPolicy/b"));
    assert_eq!(e[1].object.as_deref(), Some("NetworkPolicy/x/np"));
    let p = &l.world.cluster_policies;
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].name.as_str(), p[0].origin.line), ("a", 4));
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("chokepoint-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
#[test]
fn a_configmap_volume_is_read_once() {
    // A mounted ConfigMap holds each key three times: in the timestamped directory, through
    // the `..data` symlink and through the top-level symlink. Hidden entries are skipped.
    use std::os::unix::fs::symlink;
    let tmp = TempDir::new("configmap");
    let stamped = tmp.0.join("..2026_11_22_05_00_00.000000001");
    std::fs::create_dir(&stamped).unwrap();
    std::fs::copy(fixture("tree/10-admin.yaml"), stamped.join("admin.yaml")).unwrap();
    symlink("..2026_11_22_05_00_00.000000001", tmp.0.join("..data")).unwrap();
    symlink("..data/admin.yaml", tmp.0.join("admin.yaml")).unwrap();

    let l = load_paths(&[&tmp.0], UnknownFields::Reject);
    assert_clean(&l);
    assert_eq!(l.world.cluster_policies.len(), 1);
    assert_eq!(
        l.world.cluster_policies[0].origin.file,
        tmp.0.join("admin.yaml")
    );

    // A hidden file named explicitly is still read.
    let l = load_paths(&[stamped.join("admin.yaml")], UnknownFields::Reject);
    assert_eq!(l.world.cluster_policies.len(), 1);
}
