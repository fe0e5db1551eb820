//! `chokepoint-demo` end to end: the README's first command (`make demo`).

use std::process::Command;

use chokepoint_lab::require_root;

#[test]
fn demo_matrix_matches_and_shows_audit_records() {
    require_root();
    // The demo runs the `chokepoint` next to it (target/<profile>/chokepoint), as `make demo`
    // does in target/release; `cargo test --workspace` builds it for the gateway's own tests.
    let out = Command::new(env!("CARGO_BIN_EXE_chokepoint-demo"))
        .output()
        .expect("run chokepoint-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.contains("observed as expected"))
        .expect("a summary line");
    let (got, total) = summary.split_once(' ').unwrap().0.split_once('/').unwrap();
    assert_eq!(got, total, "{stdout}");
    assert!(total.parse::<usize>().unwrap() >= 6);
    for verdict in ["allow", "deny/RST"] {
        assert!(
            stdout.contains(verdict),
            "the matrix shows both verdicts:\n{stdout}"
        );
    }
    let audit: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("audit JSON"))
        .collect();
    assert!(!audit.is_empty(), "{stdout}");
    assert!(audit.iter().all(|r| r["verdict"] == "deny"));
    // The FQDN part: a fronted request refused because its name was not resolved to that
    // address, and a declared site fetched over HTTPS by name.
    assert!(
        audit
            .iter()
            .any(|r| r["reason"] == "not_resolved" && r["destination"]["sni"] == "api.stripe.com"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.contains("https://api.stripe.com/")
            && l.contains("allow")
            && l.ends_with("ok")),
        "{stdout}"
    );
    assert!(stdout.contains("cleaned up"), "{stdout}");

    // The Service rows: a pod connects to the ClusterIP, the node's kube-proxy rules
    // translate it, and the verdict is the backend pod's: allowed for tenant-a, denied for
    // tenant-b (its NetworkPolicy isolates it), whose record names the Service.
    for (from, observed) in [("tenant-a/web", "allow"), ("tenant-b/web", "deny/RST")] {
        assert!(
            stdout.lines().any(|l| l.starts_with(from)
                && l.contains("svc/sensitive/db 10.96.0.20:5432 -> ")
                && l.contains(&format!(" {observed} "))
                && l.ends_with("ok")),
            "{from} through the Service:\n{stdout}"
        );
    }
    let via_service: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["destination"]["cluster_ip"] == "10.96.0.20")
        .collect();
    assert_eq!(via_service.len(), 1, "{stdout}");
    let r = via_service[0];
    assert_eq!(r["destination"]["service"]["namespace"], "sensitive", "{r}");
    assert_eq!(r["destination"]["service"]["name"], "db", "{r}");
    assert_eq!(r["destination"]["service"]["port"], 5432, "{r}");
    assert_eq!(
        r["destination"]["pod"], "db",
        "decided on the backend pod: {r}"
    );
    assert_eq!(r["source"]["namespace"], "tenant-b", "{r}");
    assert_eq!(r["decided_by"]["policy"], "allow-partner-sites", "{r}");

    // The metadata section: one allowed credential fetch, one audited path denial, one
    // audited policy denial.
    assert!(
        stdout.contains("3/3 metadata requests as expected."),
        "{stdout}"
    );
    assert!(stdout.contains("200 credentials, AccessKeyId"), "{stdout}");
    assert!(
        audit.iter().any(|r| r["reason"] == "metadata_path_denied"
            && r["destination"]["path"] == "/latest/user-data"),
        "{stdout}"
    );
    assert!(
        audit.iter().any(|r| r["reason"] == "rule"
            && r["destination"]["ip"] == "169.254.169.254"
            && r["decided_by"]["policy"] == "metadata-only-tenant-a"),
        "{stdout}"
    );

    // The rollout section: the staged deny's differences, a recommendation, then the same
    // traffic working under the enforced deny and an unobserved site refused.
    let rollout = stdout
        .split("Safe rollout")
        .nth(1)
        .unwrap_or_else(|| panic!("a rollout section:\n{stdout}"));
    assert!(!rollout.contains("MISMATCH"), "{rollout}");
    assert!(
        rollout.contains("what the staged deny would break (3 audit records"),
        "{rollout}"
    );
    assert!(
        rollout.contains("| kind: DeveloperNetworkPolicy"),
        "{rollout}"
    );
    assert!(
        rollout.contains("switched the deny to enforced: in force"),
        "{rollout}"
    );
    let enforced = rollout.split("with the deny enforced").nth(1).unwrap();
    assert_eq!(enforced.matches(" ok\n").count(), 4, "{rollout}");
    assert!(
        enforced.contains("(never observed): deny/RST ok"),
        "{rollout}"
    );

    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let prefixes: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "lab" && w[1].starts_with("ckp-"))
        .map(|w| w[1].trim_end_matches(':'))
        .collect();
    assert_eq!(prefixes.len(), 3, "three labs: {stdout}");
    for prefix in prefixes {
        assert!(!listed.contains(prefix), "the demo left namespaces behind");
    }
}
