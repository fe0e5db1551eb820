//! Helpers shared by the integration tests: loading inline YAML and asserting on findings.

use std::path::{Path, PathBuf};

use chokepoint_config::model::{ClusterPolicy, DeveloperPolicy, NetworkPolicyRules, Rule};
use chokepoint_config::{Diagnostic, Loaded, Severity, UnknownFields, load_str};

/// The file name inline texts are loaded as.
pub const FILE: &str = "test.yaml";

/// Loads `text` as `test.yaml`, rejecting unknown fields (how `chokepoint check` reads files).
pub fn load(text: &str) -> Loaded {
    load_str(Path::new(FILE), text, UnknownFields::Reject)
}

/// Loads `text` as `test.yaml`, failing closed on unknown fields (how cluster objects are read).
pub fn load_fail_closed(text: &str) -> Loaded {
    load_str(Path::new(FILE), text, UnknownFields::FailClosed)
}

/// The directory of the checked-in fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every finding, printed, for failure messages.
pub fn dump(loaded: &Loaded) -> String {
    loaded.diagnostics.to_string()
}

pub fn errors(loaded: &Loaded) -> Vec<&Diagnostic> {
    loaded.diagnostics.errors().collect()
}

pub fn warnings(loaded: &Loaded) -> Vec<&Diagnostic> {
    loaded.diagnostics.warnings().collect()
}

/// Asserts that the load produced exactly these errors, in order: (line, column, a substring
/// of the message). Warnings are not looked at.
#[track_caller]
pub fn assert_errors(loaded: &Loaded, expected: &[(u64, u64, &str)]) {
    assert_findings(loaded, Severity::Error, expected);
}

/// Same as [`assert_errors`] for warnings.
#[track_caller]
pub fn assert_warnings(loaded: &Loaded, expected: &[(u64, u64, &str)]) {
    assert_findings(loaded, Severity::Warning, expected);
}

#[track_caller]
fn assert_findings(loaded: &Loaded, severity: Severity, expected: &[(u64, u64, &str)]) {
    let got: Vec<&Diagnostic> = loaded
        .diagnostics
        .0
        .iter()
        .filter(|d| d.severity == severity)
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "expected {} {severity:?} finding(s), got:\n{}",
        expected.len(),
        dump(loaded)
    );
    for (d, (line, column, message)) in got.iter().zip(expected) {
        assert_eq!(
            (d.line, d.column),
            (*line, *column),
            "position of `{message}`; all findings:\n{}",
            dump(loaded)
        );
        assert!(
            d.message.contains(message),
            "`{}` does not contain `{message}`; all findings:\n{}",
            d.message,
            dump(loaded)
        );
    }
}

/// Asserts that exactly one error was reported, at `line:column`, containing every one of
/// `parts`; and that nothing was loaded from the object.
#[track_caller]
pub fn assert_one_error(loaded: &Loaded, line: u64, column: u64, parts: &[&str]) {
    let errs = errors(loaded);
    assert_eq!(errs.len(), 1, "expected one error, got:\n{}", dump(loaded));
    assert_eq!(
        (errs[0].line, errs[0].column),
        (line, column),
        "{}",
        dump(loaded)
    );
    for part in parts {
        assert!(
            errs[0].message.contains(part),
            "`{}` does not contain `{part}`",
            errs[0].message
        );
    }
    assert!(
        loaded.world.cluster_policies.is_empty(),
        "an invalid policy was loaded"
    );
    assert!(
        loaded.world.network_policies.is_empty(),
        "an invalid policy was loaded"
    );
    assert!(
        loaded.world.developer_policies.is_empty(),
        "an invalid policy was loaded"
    );
}

/// Asserts the load has no findings at all.
#[track_caller]
pub fn assert_clean(loaded: &Loaded) {
    assert!(
        loaded.diagnostics.0.is_empty(),
        "unexpected findings:\n{}",
        dump(loaded)
    );
}

/// The only cluster policy of a clean load.
#[track_caller]
pub fn only_policy(loaded: &Loaded) -> &ClusterPolicy {
    assert_clean(loaded);
    assert_eq!(
        loaded.world.cluster_policies.len(),
        1,
        "{:#?}",
        loaded.world.cluster_policies
    );
    &loaded.world.cluster_policies[0]
}

/// The egress rules of the only cluster policy of a clean load.
#[track_caller]
pub fn only_rules(loaded: &Loaded) -> &[Rule] {
    &only_policy(loaded).egress
}

/// The only NetworkPolicy of a clean load.
#[track_caller]
pub fn only_network_policy(loaded: &Loaded) -> &NetworkPolicyRules {
    assert_clean(loaded);
    assert_eq!(
        loaded.world.network_policies.len(),
        1,
        "{:#?}",
        loaded.world.network_policies
    );
    &loaded.world.network_policies[0]
}

/// The only DeveloperNetworkPolicy of a clean load.
#[track_caller]
pub fn only_developer_policy(loaded: &Loaded) -> &DeveloperPolicy {
    assert_clean(loaded);
    assert_eq!(
        loaded.world.developer_policies.len(),
        1,
        "{:#?}",
        loaded.world.developer_policies
    );
    &loaded.world.developer_policies[0]
}

/// Indents every line of `block` by `n` spaces.
fn indent(block: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    block
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

/// The line on which the egress list of [`cnp`], [`anp`] and [`banp`] starts; its items
/// are indented by two spaces, so a rule's first key stands at column 5 (`  - action: ...`).
#[allow(dead_code)] // documents the layout (and the line numbers) for the next test
pub const EGRESS_LINE: u64 = 11;

/// A ClusterNetworkPolicy named `p` (tier Admin, priority 10, every namespace) whose `egress:`
/// is `egress` (a YAML list, written at column 1), starting on line [`EGRESS_LINE`].
pub fn cnp(egress: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: p
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {{}}
  egress:
{}",
        indent(egress, 2)
    )
}

/// An AdminNetworkPolicy v1alpha1 named `p` (priority 10); egress as in [`cnp`].
pub fn anp(egress: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: p
spec:
  priority: 10
  subject:
    namespaces:
      matchLabels: {{team: a}}
  egress:
{}",
        indent(egress, 2)
    )
}

/// The BaselineAdminNetworkPolicy `default` v1alpha1; egress as in [`cnp`].
pub fn banp(egress: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata:
  name: default
spec:
  subject:
    pods:
      namespaceSelector: {{}}
      podSelector: {{}}
  egress:
{}",
        indent(egress, 2)
    )
}

/// The line on which the `egress:` items of [`np`] start (a rule's first key at column 5).
#[allow(dead_code)] // as EGRESS_LINE
pub const NP_EGRESS_LINE: u64 = 10;

/// A NetworkPolicy `team-a/np` selecting `app: web`, with `egress` as in [`cnp`] (starting on
/// line [`NP_EGRESS_LINE`]) followed by `extra` (more spec fields, written at column 1, e.g.
/// `policyTypes: [Egress]`). Pass an empty `egress` to leave the `egress:` key out; `extra`
/// then starts on line 9.
pub fn np(egress: &str, extra: &str) -> String {
    let egress = if egress.is_empty() {
        String::new()
    } else {
        format!("  egress:\n{}", indent(egress, 2))
    };
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: np
  namespace: team-a
spec:
  podSelector:
    matchLabels: {{app: web}}
{}{}",
        egress,
        indent(extra, 2)
    )
}

/// A DeveloperNetworkPolicy `team-a/p` selecting `app: web`, with `egress` as in [`cnp`]
/// (starting on line [`EGRESS_LINE`]).
pub fn dnp(egress: &str) -> String {
    format!(
        "apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata:
  name: p
  namespace: team-a
spec:
  subject:
    podSelector:
      matchLabels: {{app: web}}
  egress:
{}",
        indent(egress, 2)
    )
}
