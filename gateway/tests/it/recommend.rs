//! `chokepoint recommend` through the real binary: flow-log and audit records of the example
//! cluster (`deploy/examples/inventory.yaml`) in, DeveloperNetworkPolicies out. The output
//! passes `check`, and with a Baseline deny of everything else `explain` allows every observed
//! flow and denies flows that were not observed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The binary, run in `dir`.
pub(crate) fn chokepoint(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chokepoint"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run the chokepoint binary")
}

pub(crate) fn inventory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/inventory.yaml")
}

const WINDOW: &str = r#""time":"2026-12-02T10:16:00.000Z","node":"node-1","window_start":"2026-12-02T10:15:00.000Z","verdict":"allow","reason":"default""#;
const DEFAULT: &str = r#""decided_by":{"tier":"Default","kind":null,"policy":null,"namespace":null,"priority":null,"rule":null,"rule_index":null,"action":null}"#;
const WEB: &str =
    r#""source":{"ip":"10.244.1.10","namespace":"tenant-a","pod":"web-7f9c6b8d4-x2k8p"}"#;

/// A flow record of `source` to `destination` (the JSON object's inner fields).
fn flow(source: &str, destination: &str, count: u64) -> String {
    format!("{{{WINDOW},{source},\"destination\":{{{destination}}},{DEFAULT},\"count\":{count}}}")
}

/// What tenant-a's web pod (and one tenant-b pod) reached, as the gateway logs it.
pub(crate) fn records() -> String {
    let tb = r#""source":{"ip":"10.244.2.20","namespace":"tenant-b","pod":"web-6c8f7d5b9-h3n6r"}"#;
    [
        // DNS through the kube-dns Service, to a CoreDNS pod.
        flow(WEB, r#""ip":"10.244.1.2","port":53,"namespace":"kube-system","pod":"coredns-5d78c9869d-4xkqp","labels":{"k8s-app":"kube-dns"},"protocol":"udp","names":[],"service":{"namespace":"kube-system","name":"kube-dns","port":53},"cluster_ip":"10.96.0.10""#, 120),
        // A pod of another namespace, without a Service.
        flow(WEB, r#""ip":"10.244.2.40","port":5432,"namespace":"sensitive","pod":"db-0","labels":{"app":"db"},"protocol":"tcp","names":[]"#, 7),
        // A pod of its own namespace.
        flow(WEB, r#""ip":"10.244.2.11","port":8080,"namespace":"tenant-a","pod":"api-5b8d7c9f6-q4w7m","labels":{"app":"api"},"protocol":"tcp","names":[]"#, 30),
        // Outside, by name (every address of the name).
        flow(WEB, r#""ip":null,"port":443,"namespace":null,"pod":null,"protocol":"tcp","names":["api.example.com"]"#, 42),
        // Outside, without a name.
        flow(WEB, r#""ip":"198.51.100.7","port":22,"namespace":null,"pod":null,"protocol":"tcp","names":[]"#, 1),
        // A Service whose endpoints are no pods (the corporate proxy).
        flow(WEB, r#""ip":"172.16.50.10","port":3128,"namespace":null,"pod":null,"protocol":"tcp","names":[],"service":{"namespace":"egress","name":"proxy","port":3128},"cluster_ip":"10.96.0.50""#, 5),
        flow(tb, r#""ip":null,"port":443,"namespace":null,"pod":null,"protocol":"tcp","names":["api.example.com"]"#, 2),
    ]
    .join("\n")
}

/// Audit records: a flow a staged deny would break (allowed: it is working traffic) and a
/// real denial (left out).
pub(crate) fn audit() -> String {
    let staged = r#"{"time":"2026-12-02T10:15:10.000Z","node":"node-1","verdict":"allow","reason":"default","source":{"ip":"10.244.1.10","port":40000,"namespace":"tenant-a","pod":"web-7f9c6b8d4-x2k8p"},"destination":{"ip":"2001:db8::5","port":443,"namespace":null,"pod":null,"protocol":"tcp","names":["cdn.example.net"],"sni":"cdn.example.net","host":null},"decided_by":{"tier":"Default","kind":null,"policy":null,"namespace":null,"priority":null,"rule":null,"rule_index":null,"action":null},"staged":{"verdict":"deny","reason":"rule","decided_by":{"tier":"Baseline","kind":"BaselineAdminNetworkPolicy","policy":"default","namespace":null,"priority":null,"rule":"deny-everything-else","rule_index":0,"action":"Deny"}},"count":1}"#;
    let denied = r#"{"time":"2026-12-02T10:15:11.000Z","node":"node-1","verdict":"deny","reason":"rule","source":{"ip":"10.244.1.10","port":40001,"namespace":"tenant-a","pod":"web-7f9c6b8d4-x2k8p"},"destination":{"ip":"203.0.113.9","port":443,"namespace":null,"pod":null,"protocol":"tcp","names":[],"sni":null,"host":null},"decided_by":{"tier":"Admin","kind":"ClusterNetworkPolicy","policy":"no-203","namespace":null,"priority":5,"rule":null,"rule_index":0,"action":"Deny"},"count":3}"#;
    format!("{staged}\n{denied}\n")
}

pub(crate) const EXISTING: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-metadata}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  egress:
  - action: Deny
    to: [{networks: [169.254.169.254/32]}]
";

const BASELINE_DENY: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  egress:
  - name: deny-everything-else
    action: Deny
    to: [{networks: [0.0.0.0/0, \"::/0\"]}]
";

/// A fresh directory for one test's files, removed on drop.
pub(crate) struct Dir(pub PathBuf);

impl Dir {
    pub(crate) fn new(tag: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("chokepoint-records-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.0.join(name), text).unwrap();
        name.to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn verdict(dir: &Path, from: &str, to: &str, names: &[&str]) -> String {
    let inv = inventory();
    let mut args = vec![
        "explain",
        "--policies",
        "existing.yaml",
        "recommended.yaml",
        "baseline.yaml",
        "--inventory",
        inv.to_str().unwrap(),
        "--from",
        from,
        "--to",
        to,
        "--output",
        "json",
    ];
    for n in names {
        args.extend(["--name", n]);
    }
    let out = chokepoint(dir, &args);
    assert!(
        out.status.success(),
        "explain {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["verdict"].as_str().unwrap().to_owned()
}

#[test]
fn a_recommendation_accepts_every_observed_flow_and_nothing_else() {
    let dir = Dir::new("story");
    let flows = dir.write("flows.log", &records());
    let audit = dir.write("audit.log", &audit());
    let out = chokepoint(&dir.0, &["recommend", "--flows", &flows, &audit]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        stderr.contains("208 allowed flows read (3 denied left out): 2 DeveloperNetworkPolicies for 2 namespaces"),
        "{stderr}"
    );
    // Workloads by labels and Services, never pod names or pod IPs.
    for never in [
        "db-0",
        "10.244.2.40",
        "api-5b8d7c9f6",
        "10.244.1.2/",
        "203.0.113.9",
    ] {
        assert!(!yaml.contains(never), "`{never}` in:\n{yaml}");
    }
    for expected in [
        "api.example.com",
        "cdn.example.net",
        "198.51.100.7/32",
        "kube-dns",
        "name: proxy",
        "app: db",
    ] {
        assert!(yaml.contains(expected), "`{expected}` missing in:\n{yaml}");
    }
    dir.write("recommended.yaml", &yaml);
    dir.write("existing.yaml", EXISTING);
    dir.write("baseline.yaml", BASELINE_DENY);
    let inv = inventory();
    let check = chokepoint(
        &dir.0,
        &[
            "check",
            "existing.yaml",
            "recommended.yaml",
            "baseline.yaml",
            inv.to_str().unwrap(),
        ],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let web = "tenant-a/web-7f9c6b8d4-x2k8p";
    for (to, names) in [
        ("10.244.1.2:53/udp", &[][..]),
        ("10.244.2.2:53/udp", &[]), // the other CoreDNS pod: the Service, not one backend
        ("10.244.2.40:5432", &[]),
        ("10.244.1.41:5432", &[]), // db-1: the workload, not one pod
        ("10.244.2.11:8080", &[]),
        ("192.0.2.1:443", &["api.example.com"]),
        ("198.51.100.7:22", &[]),
        ("172.16.50.10:3128", &[]),
        ("172.16.50.11:3128", &[]),
        ("[2001:db8::5]:443", &["cdn.example.net"]),
    ] {
        assert_eq!(
            verdict(&dir.0, web, to, names),
            "allow",
            "observed: {to} {names:?}"
        );
    }
    for (to, names) in [
        ("192.0.2.1:443", &[][..]),             // the address without the name
        ("192.0.2.1:80", &["api.example.com"]), // another port
        ("10.244.2.40:5433", &[]),
        ("10.244.2.11:9090", &[]), // api, on a port it was not reached on
        ("10.244.1.30:9090", &[]), // monitoring
        ("198.51.100.8:22", &[]),
        ("203.0.113.9:443", &[]),   // only ever denied
        ("10.244.1.2:53/tcp", &[]), // DNS over TCP was not seen
        ("[2001:db8::6]:443", &["evil.example.org"]),
    ] {
        assert_eq!(
            verdict(&dir.0, web, to, names),
            "deny",
            "not observed: {to} {names:?}"
        );
    }
    // tenant-b's own policy: only what tenant-b did.
    assert_eq!(
        verdict(
            &dir.0,
            "tenant-b/web-6c8f7d5b9-h3n6r",
            "192.0.2.1:443",
            &["api.example.com"]
        ),
        "allow"
    );
    assert_eq!(
        verdict(
            &dir.0,
            "tenant-b/web-6c8f7d5b9-h3n6r",
            "198.51.100.7:22",
            &[]
        ),
        "deny"
    );
}

#[test]
fn json_output_and_a_namespace_choice_are_valid_policies_too() {
    let dir = Dir::new("json");
    let flows = dir.write("flows.log", &records());
    let out = chokepoint(
        &dir.0,
        &[
            "recommend",
            "--flows",
            &flows,
            "--namespace",
            "tenant-b",
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list:#}");
    assert_eq!(items[0]["metadata"]["namespace"], "tenant-b");
    assert_eq!(items[0]["kind"], "DeveloperNetworkPolicy");
    dir.write("recommended.json", &String::from_utf8_lossy(&out.stdout));
    let check = chokepoint(&dir.0, &["check", "recommended.json"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A namespace without records: said, and nothing written for it.
    let out = chokepoint(
        &dir.0,
        &["recommend", "--flows", &flows, "--namespace", "monitoring"],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no allowed flow from namespace monitoring")
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kind: DeveloperNetworkPolicy"));
}

#[test]
fn unreadable_lines_are_errors_at_their_line_and_unitemized_windows_are_warned_about() {
    let dir = Dir::new("bad");
    let mut text = records();
    text.push_str("\n{\"time\": 3}\n");
    text.push_str(r#"{"time":"2026-12-02T10:16:00.000Z","node":"node-1","window_start":"2026-12-02T10:15:00.000Z","unitemized":{"flows":12,"dropped":1}}"#);
    text.push('\n');
    let flows = dir.write("flows.log", &text);
    let out = chokepoint(&dir.0, &["recommend", "--flows", &flows, "missing.log"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flows.log:8:1: not a flow-log or audit record"),
        "{stderr}"
    );
    assert!(
        stderr.contains("flows.log:9:1: warning: 13 flows of the window"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.log: cannot read"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing is recommended from bad input"
    );
}
