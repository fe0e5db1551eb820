//! The product binary carries no test or demo code: the lab (fake metadata and credential
//! servers, launchers for dnsmasq, curl and openssl) and the demo are crates the `chokepoint`
//! package does not depend on, and its command line has no `demo` or `lab-probe`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use chokepoint_tests::chokepoint_bin;

/// The packages in the normal (linked) dependency graph of `package`, itself included, for
/// every target platform: what `cargo tree -e normal` prints.
fn linked_packages(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args(["tree", "-p", package, "-e", "normal", "--target", "all"])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_product_package_does_not_link_the_lab_or_the_demo() {
    let product = linked_packages("chokepoint");
    // The listing is the real graph: the product's own crates are in it.
    for crate_of_the_product in ["chokepoint", "chokepoint-config", "chokepoint-redirect"] {
        assert!(
            product.contains(crate_of_the_product),
            "{crate_of_the_product} missing from {product:?}"
        );
    }
    for test_code in ["chokepoint-lab", "chokepoint-demo", "chokepoint-tests"] {
        assert!(
            !product.contains(test_code),
            "the product binary links {test_code}: {product:?}"
        );
    }
    // And the same listing does see the lab where it belongs.
    assert!(linked_packages("chokepoint-demo").contains("chokepoint-lab"));
}

#[test]
fn the_product_command_line_has_no_demo_and_no_lab_probe() {
    let help = Command::new(chokepoint_bin())
        .arg("--help")
        .output()
        .expect("running chokepoint --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("explain"), "{help}");
    for gone in ["demo", "lab-probe"] {
        assert!(
            !help.contains(gone),
            "`chokepoint --help` lists {gone}:\n{help}"
        );
        // Hidden subcommands are absent from --help too: ask for the subcommand itself.
        let out = Command::new(chokepoint_bin())
            .args([gone, "--help"])
            .output()
            .expect("running chokepoint");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("unrecognized subcommand"),
            "`chokepoint {gone}` is a command: {stderr}"
        );
    }
}
