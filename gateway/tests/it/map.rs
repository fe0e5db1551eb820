//! `chokepoint map` rendered in a real browser: the recommend suite's records of the example
//! cluster drawn as a page, opened in headless Chromium (Debian's, installed by
//! `scripts/setup.sh`); the test counts what the page's script drew and takes a screenshot.

use std::path::Path;
use std::process::{Command, Output};

use crate::recommend::{Dir, EXISTING, audit, chokepoint, inventory, records};

/// Headless Chromium with the flags a closed network needs; `args` select the output.
fn chromium(profile: &Path, args: &[&str], page: &Path) -> Output {
    let out = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium: install it with scripts/setup.sh (Debian package `chromium`)");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_map_draws_every_workload_and_flow_in_a_browser() {
    let dir = Dir::new("map");
    dir.write("flows.log", &records());
    dir.write("audit.log", &audit());
    dir.write("existing.yaml", EXISTING);
    let inventory = inventory();
    let out = chokepoint(
        &dir.0,
        &[
            "map",
            "--flows",
            "flows.log",
            "audit.log",
            "--policies",
            "existing.yaml",
            "--inventory",
            inventory.to_str().unwrap(),
            "-o",
            "map.html",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = dir.0.join("map.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<link") && !html.contains("src=\""),
        "self-contained"
    );

    let profile = dir.0.join("profile");
    let dom = chromium(&profile, &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-rendered=\"true\""),
        "the page's script ran:\n{dom}"
    );
    // kube-system, sensitive, tenant-a, tenant-b, and outside.
    assert_eq!(dom.matches("<g class=\"group\"").count(), 5, "{dom}");
    // web, api (tenant-a); web (tenant-b); kube-dns; db; outside: api.example.com,
    // 198.51.100.7, the proxy 172.16.50.10, cdn.example.net, 203.0.113.9.
    assert_eq!(dom.matches("<g class=\"node").count(), 10, "{dom}");
    assert_eq!(
        dom.matches("<g class=\"node external\"").count(),
        5,
        "{dom}"
    );
    assert_eq!(
        dom.matches("<path class=\"edge allowed\"").count(),
        7,
        "{dom}"
    );
    assert_eq!(
        dom.matches("<path class=\"edge staged\"").count(),
        1,
        "{dom}"
    );
    assert_eq!(
        dom.matches("<path class=\"edge denied\"").count(),
        1,
        "{dom}"
    );
    assert_eq!(dom.matches("<tr class=\"edge-row").count(), 9, "{dom}");
    assert!(
        dom.contains("5 groups, 10 nodes, 9 edges (7 allowed, 1 denied, 1 staged)"),
        "{dom}"
    );
    // Pods fold into workloads; edges say who decided, and the staged verdict.
    assert!(dom.contains("data-id=\"tenant-a/web\""), "{dom}");
    assert!(
        !dom.contains("data-id=\"tenant-a/web-7f9c6b8d4-x2k8p\""),
        "{dom}"
    );
    assert!(
        dom.contains("Admin: ClusterNetworkPolicy no-203 rule 0"),
        "{dom}"
    );
    assert!(
        dom.contains(
            "deny by Baseline: BaselineAdminNetworkPolicy default rule 0 \"deny-everything-else\""
        ),
        "{dom}"
    );
    assert!(dom.contains("via svc/kube-system/kube-dns:53"), "{dom}");
    assert!(
        dom.contains("selected by: ClusterNetworkPolicy no-metadata"),
        "{dom}"
    );

    let shot = dir.0.join("map.png");
    chromium(
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1600,1000",
        ],
        &page,
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 10_000,
        "a drawn page, not a blank one: {} bytes",
        png.len()
    );
}
