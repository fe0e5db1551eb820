//! Staged policies (policy/staged.rs): traffic follows the enforced policies alone; the
//! second decision, as if the staged policies were enforced, is reported only where it
//! differs, by kind; `explain --staged` shows both.

use std::path::PathBuf;
use std::process::Command;

use chokepoint::policy::{Decision, Difference};
use serde_json::Value;

use crate::common::*;

/// A Baseline deny of everything; staged when `staged`.
fn baseline_deny_all(staged: bool) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: default
{}spec:
  tier: Baseline
  priority: 1000
  subject: {{namespaces: {{}}}}
  egress:
  - {{name: deny-all, action: Deny, to: [{{networks: [0.0.0.0/0, \"::/0\"]}}]}}
",
        if staged { STAGED } else { "" }
    )
}

/// An Admin policy `name` at `priority` with one rule `action` to `cidr` for namespace `app`.
fn admin(name: &str, priority: u32, action: &str, cidr: &str, staged: bool) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: {name}
{}spec:
  tier: Admin
  priority: {priority}
  subject: {{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: app}}}}}}
  egress:
  - {{name: r, action: {action}, to: [{{networks: [\"{cidr}\"]}}]}}
",
        if staged { STAGED } else { "" }
    )
}

#[test]
fn a_snapshot_without_staged_policies_has_no_second_decision() {
    let s = snapshot(&baseline_deny_all(false));
    assert!(!s.has_staged());
    assert!(s.staged().is_none());
    let f = flow(WEB, OUT, 443);
    let v = s.evaluate(&f);
    assert!(s.staged_difference(&f, &v).is_none());
}

#[test]
fn a_staged_deny_does_not_decide_traffic_and_is_reported_as_would_deny() {
    let s = snapshot(&baseline_deny_all(true));
    assert!(s.has_staged());
    let f = flow(WEB, OUT, 443);
    let v = s.evaluate(&f);
    assert_eq!(
        Want::of(&s, &v),
        default_allow(),
        "traffic follows the enforced policies"
    );
    let staged = s
        .staged_difference(&f, &v)
        .expect("the staged deny differs");
    assert_eq!(staged.difference, Difference::WouldDeny);
    assert_eq!(
        Want::of(staged.snapshot, &staged.verdict),
        baseline_deny("cnp/default", 0)
    );
}

#[test]
fn a_staged_accept_that_would_open_a_denied_flow_is_reported_as_would_allow() {
    let policies = format!(
        "{}---\n{}",
        admin("block", 20, "Deny", "192.0.2.0/24", false),
        admin("open", 10, "Accept", "192.0.2.10/32", true)
    );
    let s = snapshot(&policies);
    let f = flow(WEB, OUT, 443);
    let v = s.evaluate(&f);
    assert_eq!(Want::of(&s, &v), admin_deny("cnp/block", 0));
    let staged = s
        .staged_difference(&f, &v)
        .expect("the staged accept differs");
    assert_eq!(staged.difference, Difference::WouldAllow);
    assert_eq!(
        Want::of(staged.snapshot, &staged.verdict),
        admin_accept("cnp/open", 0)
    );
    // The rest of 192.0.2.0/24 is denied either way, by the same rule: no difference.
    let other = flow(WEB, OUT_HIGH, 443);
    let v = s.evaluate(&other);
    assert!(!v.is_allowed());
    assert!(s.staged_difference(&other, &v).is_none());
}

#[test]
fn the_same_verdict_by_another_policy_is_reported_as_other_policy() {
    let policies = format!(
        "{}---\n{}",
        admin("late", 20, "Accept", "192.0.2.0/24", false),
        admin("early", 10, "Accept", "192.0.2.0/24", true)
    );
    let s = snapshot(&policies);
    let f = flow(WEB, OUT, 443);
    let v = s.evaluate(&f);
    assert_eq!(Want::of(&s, &v), admin_accept("cnp/late", 0));
    let staged = s.staged_difference(&f, &v).expect("another policy decides");
    assert_eq!(staged.difference, Difference::OtherPolicy);
    assert_eq!(staged.verdict.decision, Decision::Allow);
}

#[test]
fn a_staged_policy_that_changes_nothing_for_a_flow_reports_no_difference() {
    // The staged policy selects namespace `app` only: `dev` flows decide as before, and an
    // enforced policy that the staged snapshot also holds is recognized as the same policy.
    let policies = format!(
        "{}---\n{}",
        admin("block", 20, "Deny", "192.0.2.0/24", false),
        admin("open", 10, "Accept", "198.51.100.0/24", true)
    );
    let s = snapshot(&policies);
    for f in [
        flow(DEV_WEB, OUT, 443),
        flow(WEB, OUT, 443),
        flow(WEB, WEB, 80),
    ] {
        let v = s.evaluate(&f);
        assert!(s.staged_difference(&f, &v).is_none(), "{f:?}");
    }
}

#[test]
fn every_enforced_verdict_is_the_one_without_the_staged_policies() {
    let enforced = format!(
        "{}---\n{}",
        admin("block", 20, "Deny", "192.0.2.0/24", false),
        admin("open", 30, "Accept", "198.51.100.0/24", false)
    );
    let with_staged = format!(
        "{enforced}---\n{}---\n{}",
        baseline_deny_all(true),
        admin("early", 1, "Accept", "0.0.0.0/0", true)
    );
    let (a, b) = (snapshot(&enforced), snapshot(&with_staged));
    let srcs = [WEB, API, DEV_WEB, DEV_DB, NODE1, "10.9.9.9"];
    let dsts = [OUT, OUT_HIGH, OUT2, PG4, DNS, NODE2, WEB];
    for src in srcs {
        for dst in dsts {
            let f = flow(src, dst, 443);
            assert_eq!(
                Want::of(&a, &a.evaluate(&f)),
                Want::of(&b, &b.evaluate(&f)),
                "{src} -> {dst}"
            );
        }
    }
}

// ----- `chokepoint explain --staged` -----

/// A directory of its own under the system's temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("chokepoint-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn explain(dir: &Dir, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chokepoint"))
        .arg("explain")
        .arg("--policies")
        .arg(&dir.0)
        .args(["--from", "app/web", "--to", "192.0.2.10:443"])
        .args(extra)
        .output()
        .expect("run the chokepoint binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn explain_staged_shows_both_verdicts_traces_and_the_difference() {
    let dir = Dir::new("explain-staged");
    let text = format!("{INVENTORY}\n---\n{}", baseline_deny_all(true));
    std::fs::write(dir.0.join("world.yaml"), text).unwrap();

    let json: Value = serde_json::from_str(&explain(&dir, &["--staged", "--output", "json"]))
        .expect("JSON output");
    assert_eq!(json["verdict"], "allow");
    assert_eq!(json["decided_by"]["tier"], "Default");
    let staged = &json["staged"];
    assert_eq!(staged["policies_staged"], true);
    assert_eq!(staged["difference"], "would_deny");
    assert_eq!(staged["verdict"], "deny");
    assert_eq!(staged["decided_by"]["tier"], "Baseline");
    assert_eq!(staged["decided_by"]["policy"], "default");
    assert_eq!(staged["decided_by"]["rule"], "deny-all");
    let last = staged["trace"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["policy"], "default");
    assert_eq!(last["result"], "matched");

    let table = explain(&dir, &["--staged"]);
    assert!(
        table.contains("verdict: ALLOW by Default (default)"),
        "{table}"
    );
    assert!(
        table.contains("as if the staged policies were enforced:"),
        "{table}"
    );
    assert!(
        table.contains("staged verdict: DENY by Baseline cnp/default rule[0] \"deny-all\" (rule)"),
        "{table}"
    );
    assert!(table.contains("difference: would_deny"), "{table}");

    // Without --staged the output is today's: no staged part.
    let plain: Value = serde_json::from_str(&explain(&dir, &["--output", "json"])).unwrap();
    assert!(plain.get("staged").is_none());
}

#[test]
fn explain_staged_without_staged_policies_says_so() {
    let dir = Dir::new("explain-unstaged");
    let text = format!("{INVENTORY}\n---\n{}", baseline_deny_all(false));
    std::fs::write(dir.0.join("world.yaml"), text).unwrap();
    let json: Value =
        serde_json::from_str(&explain(&dir, &["--staged", "--output", "json"])).unwrap();
    assert_eq!(json["staged"]["policies_staged"], false);
    assert!(json["staged"]["difference"].is_null());
    assert_eq!(json["staged"]["verdict"], json["verdict"]);
    let table = explain(&dir, &["--staged"]);
    assert!(table.contains("staged: no policy is staged"), "{table}");
}
