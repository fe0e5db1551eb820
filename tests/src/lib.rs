//! End-to-end suites for Chokepoint: the real `chokepoint` binary, in a network-namespace lab
//! (the lab and the gateway runner are `chokepoint_lab`, shared with the demo).
//!
//! This library adds what only the suites need: the root check and finding the binaries built
//! with them (and the benches' reading of the machine's CPU time). The suites are in `tests/tests/it/`. They need root and fail (never skip) without it.

pub mod apiserver;
pub mod cpu;
pub mod objects;

use std::path::{Path, PathBuf};

use chokepoint_lab::Lab;
pub use chokepoint_lab::run::*;

pub use chokepoint_lab::require_root;

/// The `chokepoint` binary built with these tests (`target/<profile>/chokepoint`), or
/// `$CHOKEPOINT_BIN`.
pub fn chokepoint_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CHOKEPOINT_BIN") {
        return PathBuf::from(p);
    }
    workspace_bin("chokepoint")
}

/// A binary of the workspace built with these tests: `target/<profile>/<name>`.
fn workspace_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test binary> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p {name}` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// Starts the gateway built with these tests in the lab's node namespace.
pub fn start_gateway(lab: &Lab, files: &GatewayFiles) -> Gateway {
    Gateway::start(lab, files, &chokepoint_bin())
}

/// Tears the lab down and checks that nothing of it is left: none of its namespaces, and no
/// nftables table of ours in the root namespace.
pub fn teardown(lab: Lab) {
    let names = lab.netns_names();
    lab.teardown().expect("teardown");
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("chokepoint"),
        "an nftables table of ours exists in the root namespace"
    );
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for n in names {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "namespace {n} left behind"
        );
    }
}
