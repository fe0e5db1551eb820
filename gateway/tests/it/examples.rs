//! The example policies in `deploy/examples`, one directory per user story, checked against
//! the real `chokepoint` binary.
//!
//! Every story directory holds policy YAML and an `expected.txt` (format in
//! `deploy/examples/README.md`): one case per line,
//! `FROM -> TO [name=FQDN ...] => allow|deny TIER [POLICY]`. Each case runs
//! `chokepoint explain --policies <story dir> --inventory deploy/examples/inventory.yaml ...
//! --output json` and compares the verdict, the deciding tier and the deciding policy; for a
//! Service (`svc/NAMESPACE/NAME:PORT` or a ClusterIP) every ready backend must give the
//! expected one, and a Service without a ready backend fails the case. Every mismatch is
//! reported with its `file:line`, all of them at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const EXAMPLES: &str = "deploy/examples";
const INVENTORY: &str = "deploy/examples/inventory.yaml";
/// The required user stories; more may be added, none may disappear.
const SEED_STORIES: [&str; 10] = [
    "cluster-deny",
    "cluster-allow",
    "delegate-with-pass",
    "baseline-guardrails",
    "namespace-isolation",
    "block-node-ports",
    "deny-internet-never-192-168",
    "developer-allowlist",
    "api-server-access",
    "egress-through-proxy",
];
const MIN_CASES: usize = 4;

/// The workspace root: the binary runs there, so paths in messages read `deploy/examples/...`.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chokepoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chokepoint"))
        .current_dir(repo_root())
        .args(args)
        .output()
        .expect("run the chokepoint binary")
}

/// One line of an `expected.txt`.
#[derive(Debug)]
struct Case {
    /// `deploy/examples/<story>/expected.txt:<line>`.
    location: String,
    text: String,
    from: String,
    to: String,
    names: Vec<String>,
    expected: Outcome,
}

/// What a case expects, or what the binary answered.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    verdict: String,
    tier: String,
    /// `cnp/NAME`, `anp/NAME`, `banp/NAME`, `dnp/NAMESPACE/NAME` or `np/NAMESPACE/NAME`;
    /// `None` for the default.
    policy: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verdict, self.tier)?;
        if let Some(p) = &self.policy {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// Parses one non-empty, non-comment line.
fn parse_case(location: String, line: &str) -> Result<Case, String> {
    let (lhs, rhs) = line
        .split_once("=>")
        .ok_or("expected `FROM -> TO [name=FQDN ...] => allow|deny TIER [POLICY]`")?;
    let mut left = lhs.split_whitespace();
    let from = left.next().ok_or("FROM is missing")?.to_owned();
    if left.next() != Some("->") {
        return Err("expected `->` after FROM".into());
    }
    let to = left.next().ok_or("TO is missing")?.to_owned();
    let names = left
        .map(|t| {
            t.strip_prefix("name=")
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("`{t}`: expected `name=FQDN`"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let right: Vec<&str> = rhs.split_whitespace().collect();
    let (verdict, tier, policy) = match right.as_slice() {
        [v, t] => (*v, *t, None),
        [v, t, p] => (*v, *t, Some((*p).to_owned())),
        _ => return Err("expected `allow|deny TIER [POLICY]` after `=>`".into()),
    };
    if !matches!(verdict, "allow" | "deny") {
        return Err(format!("verdict `{verdict}`: expected allow or deny"));
    }
    if !matches!(tier, "Admin" | "NetworkPolicy" | "Baseline" | "Default") {
        return Err(format!(
            "tier `{tier}`: expected Admin, NetworkPolicy, Baseline or Default"
        ));
    }
    match (&policy, tier) {
        (Some(p), "Default") => return Err(format!("`{p}`: the Default tier names no policy")),
        (None, t) if t != "Default" => return Err(format!("the {t} tier needs a POLICY")),
        (Some(p), "NetworkPolicy")
            if !((p.starts_with("np/") || p.starts_with("dnp/"))
                && p.matches('/').count() == 2) =>
        {
            return Err(format!(
                "`{p}`: expected np/NAMESPACE/NAME or dnp/NAMESPACE/NAME"
            ));
        }
        (Some(p), "Admin" | "Baseline")
            if !["cnp/", "anp/", "banp/"].iter().any(|k| p.starts_with(k)) =>
        {
            return Err(format!("`{p}`: expected cnp/NAME, anp/NAME or banp/NAME"));
        }
        _ => {}
    }
    Ok(Case {
        location,
        text: line.to_owned(),
        from,
        to,
        names,
        expected: Outcome {
            verdict: verdict.to_owned(),
            tier: tier.to_owned(),
            policy,
        },
    })
}

/// The cases of one `expected.txt`, and an error with its location for each malformed line.
fn read_cases(expected: &Path, display: &str) -> (Vec<Case>, Vec<String>) {
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    let text = match std::fs::read_to_string(expected) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("{display}: cannot read: {e}"));
            return (cases, errors);
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let location = format!("{display}:{}", i + 1);
        match parse_case(location.clone(), line) {
            Ok(c) => cases.push(c),
            Err(e) => errors.push(format!("{location}: {e}\n    {raw}")),
        }
    }
    (cases, errors)
}

/// `kind/name` of the deciding policy, from `decided_by`.
fn deciding_policy(json: &Value) -> Result<Option<String>, String> {
    let decided_by = &json["decided_by"];
    let Some(name) = decided_by["policy"].as_str() else {
        return Ok(None);
    };
    let namespace = decided_by["namespace"].as_str();
    let kind = decided_by["kind"]
        .as_str()
        .ok_or("`decided_by.kind` is missing")?;
    Ok(Some(match kind {
        "ClusterNetworkPolicy" => format!("cnp/{name}"),
        "AdminNetworkPolicy" => format!("anp/{name}"),
        "BaselineAdminNetworkPolicy" => format!("banp/{name}"),
        "NetworkPolicy" => format!(
            "np/{}/{name}",
            namespace.ok_or("a NetworkPolicy without a namespace")?
        ),
        "DeveloperNetworkPolicy" => format!(
            "dnp/{}/{name}",
            namespace.ok_or("a DeveloperNetworkPolicy without a namespace")?
        ),
        other => return Err(format!("unknown policy kind `{other}`")),
    }))
}

/// Runs one case; `Err` describes the mismatch.
fn run_case(story_dir: &str, case: &Case) -> Result<(), String> {
    let mut args = vec![
        "explain",
        "--policies",
        story_dir,
        "--inventory",
        INVENTORY,
        "--from",
        &case.from,
        "--to",
        &case.to,
    ];
    for n in &case.names {
        args.extend(["--name", n.as_str()]);
    }
    args.extend(["--output", "json"]);
    let command = format!("chokepoint {}", args.join(" "));
    let out = chokepoint(&args);
    if !out.status.success() {
        return Err(format!(
            "`{command}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    let json: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "`{command}` printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    // A Service (`svc/...` or a ClusterIP) answers with the verdict of every ready backend.
    let Some(backends) = json["backends"].as_array() else {
        return compare(case, &command, &json);
    };
    if backends.is_empty() {
        return Err(format!(
            "the Service has no ready backend: nothing to decide on\n    {}\n    {command}",
            case.text
        ));
    }
    let wrong: Vec<String> = backends
        .iter()
        .filter_map(|b| {
            compare(case, &command, b)
                .err()
                .map(|e| format!("backend {}:{}: {e}", b["ip"], b["port"]))
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

/// Compares one verdict (`explain`'s answer, or one backend of a Service) with the case.
fn compare(case: &Case, command: &str, json: &Value) -> Result<(), String> {
    let str_field = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("`{command}`: no `{what}` in the output"))
    };
    let got = Outcome {
        verdict: str_field(&json["verdict"], "verdict")?,
        tier: str_field(&json["decided_by"]["tier"], "decided_by.tier")?,
        policy: deciding_policy(json).map_err(|e| format!("`{command}`: {e}"))?,
    };
    if got == case.expected {
        return Ok(());
    }
    Err(format!(
        "expected {}, got {} (reason: {})\n    {}\n    {command}",
        case.expected,
        got,
        json["reason"].as_str().unwrap_or("?"),
        case.text
    ))
}

/// The story directories under `deploy/examples`, by name.
fn story_dirs() -> Vec<String> {
    let dir = repo_root().join(EXAMPLES);
    let mut stories: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    stories.sort();
    stories
}

#[test]
fn every_story_gives_its_expected_verdicts() {
    let stories = story_dirs();
    let missing: Vec<&str> = SEED_STORIES
        .iter()
        .copied()
        .filter(|s| !stories.iter().any(|d| d == s))
        .collect();
    assert!(
        missing.is_empty(),
        "story directories missing from {EXAMPLES}: {missing:?}"
    );

    let mut failures = Vec::new();
    let mut total = 0;
    for story in &stories {
        let story_dir = format!("{EXAMPLES}/{story}");
        let display = format!("{story_dir}/expected.txt");
        let (cases, errors) = read_cases(&repo_root().join(&display), &display);
        failures.extend(errors);
        if cases.len() < MIN_CASES {
            failures.push(format!(
                "{display}: {} cases; every story needs at least {MIN_CASES}",
                cases.len()
            ));
        }
        for verdict in ["allow", "deny"] {
            if !cases.iter().any(|c| c.expected.verdict == verdict) {
                failures.push(format!(
                    "{display}: no case expects `{verdict}`; cover both verdicts"
                ));
            }
        }
        for case in &cases {
            if let Err(e) = run_case(&story_dir, case) {
                failures.push(format!("{}: {e}", case.location));
            }
        }
        total += cases.len();
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) with {total} example cases:\n\n{}\n",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn all_examples_validate_together() {
    let out = chokepoint(&["check", EXAMPLES]);
    assert!(
        out.status.success(),
        "`chokepoint check {EXAMPLES}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn expected_lines_parse() {
    let c = parse_case(
        "x:1".into(),
        "ns/pod -> [fd00::1]:53/udp name=a.example.com name=b.example.com => deny np/ns/np",
    )
    .unwrap_err();
    assert!(c.contains("tier"), "{c}");
    let c = parse_case(
        "x:1".into(),
        "ns/pod -> [fd00::1]:53/udp name=a.example.com => deny NetworkPolicy np/ns/deny-all",
    )
    .unwrap();
    assert_eq!(
        (c.from.as_str(), c.to.as_str()),
        ("ns/pod", "[fd00::1]:53/udp")
    );
    assert_eq!(c.names, ["a.example.com"]);
    assert_eq!(c.expected.to_string(), "deny NetworkPolicy np/ns/deny-all");
    assert!(parse_case("x:1".into(), "a -> b => allow Default cnp/x").is_err());
    assert!(parse_case("x:1".into(), "a -> b => allow Admin").is_err());
    assert!(parse_case("x:1".into(), "a -> b => allow Admin np/x").is_err());
    assert!(parse_case("x:1".into(), "a -> b => deny NetworkPolicy dnp/ns/p").is_ok());
    assert!(parse_case("x:1".into(), "a -> b => deny NetworkPolicy dnp/p").is_err());
    assert!(parse_case("x:1".into(), "a -> b => deny Admin dnp/ns/p").is_err());
    assert!(parse_case("x:1".into(), "a -> b foo => allow Default").is_err());
    assert!(parse_case("x:1".into(), "a b => allow Default").is_err());
}

/// The documented standalone settings file is valid and its stated defaults are the real ones.
#[test]
fn standalone_settings_example_is_valid() {
    use chokepoint_config::settings::{GatewaySettings, defaults, metadata_defaults};
    let path = repo_root().join("deploy/standalone/gateway.yaml");
    let s = GatewaySettings::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.listen.tcp, defaults::TCP_PORT);
    assert_eq!(s.listen.udp, defaults::UDP_PORT);
    assert_eq!(s.listen.admin.to_string(), defaults::ADMIN);
    assert_eq!(s.capture.capture_mark, defaults::CAPTURE_MARK);
    assert_eq!(s.capture.gateway_mark, defaults::GATEWAY_MARK);
    assert_eq!(s.capture.mark_mask, defaults::MARK_MASK);
    assert_eq!(s.capture.route_table, defaults::ROUTE_TABLE);
    assert_eq!(s.capture.rule_priority, defaults::RULE_PRIORITY);
    assert!(s.capture.install && s.capture.remove_on_shutdown);
    assert_eq!(s.services, Default::default());
    assert_eq!(s.limits, Default::default());
    assert_eq!(s.audit.max_bytes, defaults::AUDIT_MAX_BYTES);
    assert_eq!(s.audit.max_files, defaults::AUDIT_MAX_FILES);
    assert_eq!(
        s.timeouts.connect.as_millis() as u64,
        defaults::CONNECT_TIMEOUT_MS
    );
    assert_eq!(
        s.timeouts.idle.as_millis() as u64,
        defaults::IDLE_TIMEOUT_MS
    );
    assert_eq!(
        s.timeouts.udp_idle.as_millis() as u64,
        defaults::UDP_IDLE_TIMEOUT_MS
    );
    assert_eq!(
        s.timeouts.drain.as_millis() as u64,
        defaults::DRAIN_TIMEOUT_MS
    );
    assert_eq!(
        s.policy.reload_interval.as_millis() as u64,
        defaults::RELOAD_INTERVAL_MS
    );
    assert_eq!(
        s.audit.dedupe_window.as_millis() as u64,
        defaults::DEDUPE_WINDOW_MS
    );
    assert_eq!(
        s.policy.source,
        chokepoint_config::settings::SourceKind::Files
    );
    assert_eq!(
        s.policy.kubernetes.debounce.as_millis() as u64,
        defaults::KUBERNETES_DEBOUNCE_MS
    );
    let k = &s.policy.kubernetes;
    assert_eq!(k.events.per_second, defaults::EVENTS_PER_SECOND);
    assert_eq!(k.events.burst, defaults::EVENTS_BURST);
    assert_eq!(k.status.write, defaults::STATUS_WRITE);
    assert_eq!(k.status.lease_name, defaults::LEASE_NAME);
    assert_eq!(
        k.status.lease_duration.as_millis() as u64,
        defaults::LEASE_DURATION_MS
    );
    // Everything in `dns:` and `fqdn:` is a default (the upstream is commented out).
    assert_eq!(s.dns, chokepoint_config::settings::Dns::default());
    assert_eq!(s.fqdn, chokepoint_config::settings::Fqdn::default());
    let m = &s.metadata;
    assert_eq!(m, &chokepoint_config::settings::MetadataSettings::default());
    assert_eq!(m.max_header_bytes, metadata_defaults::MAX_HEADER_BYTES);
    assert_eq!(m.max_headers, metadata_defaults::MAX_HEADERS);
    assert_eq!(
        m.header_read_timeout.as_millis() as u64,
        metadata_defaults::HEADER_READ_TIMEOUT_MS
    );
    assert_eq!(
        m.upstream_timeout.as_millis() as u64,
        metadata_defaults::UPSTREAM_TIMEOUT_MS
    );
}

/// A Service case holds only when every ready backend gives the expected verdict: one backend
/// decided otherwise fails it, and names that backend.
#[test]
fn a_service_case_fails_when_one_backend_is_decided_otherwise() {
    // Cargo's scratch directory for integration tests, under target/.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-one-coredns");
    std::fs::create_dir_all(&dir).unwrap();
    // Denies one of the two CoreDNS pods behind kube-dns, by address.
    let policy = "apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {name: one-coredns, namespace: tenant-b}
spec:
  subject: {podSelector: {}}
  egress:
  - {name: not-the-first, action: Deny, to: [{networks: [10.244.1.2/32]}]}
";
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    let story = dir.to_str().unwrap();
    let case = |expected: &str| {
        let line = format!(
            "tenant-b/web-6c8f7d5b9-h3n6r -> svc/kube-system/kube-dns:dns/udp => {expected}"
        );
        parse_case("x:1".into(), &line).unwrap()
    };
    let err = run_case(story, &case("allow Default")).unwrap_err();
    assert!(err.contains("backend \"10.244.1.2\":53"), "{err}");
    assert!(!err.contains("10.244.2.2"), "{err}");
    let err = run_case(story, &case("deny NetworkPolicy dnp/tenant-b/one-coredns")).unwrap_err();
    assert!(err.contains("backend \"10.244.2.2\":53"), "{err}");
    // Where the backends agree, the case holds.
    let all = "tenant-b/web-6c8f7d5b9-h3n6r -> svc/default/kubernetes:https => allow Default";
    run_case(story, &parse_case("x:1".into(), all).unwrap()).unwrap();
}

/// `check` with an inventory that lists Services warns about a `services` entry naming a
/// port the Service does not have, and still succeeds (the entry is valid, it matches nothing).
#[test]
fn check_warns_about_service_port_names_the_inventory_lacks() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-unknown-port-name");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(
        repo_root().join("deploy/examples/api-server-access/tenant-b-policies.yaml"),
    )
    .unwrap();
    let typo = text.replace("        - https\n", "        - htps\n");
    assert_ne!(typo, text);
    let file = dir.join("policies.yaml");
    std::fs::write(&file, typo).unwrap();
    let out = chokepoint(&["check", file.to_str().unwrap(), INVENTORY]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: DeveloperNetworkPolicy/tenant-b/kube-api: spec.egress[0].to[0].services[0].ports[0]: Service default/kubernetes has no port named `htps` (its named ports: https)"),
        "{stderr}"
    );
    // The stories themselves resolve every Service they name.
    let out = chokepoint(&["check", EXAMPLES]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
}
