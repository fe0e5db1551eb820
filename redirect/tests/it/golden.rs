//! Golden tests of the rendered capture (nft script + ip commands, in `Rendered::to_shell`
//! form). `CHOKEPOINT_BLESS=1 cargo test -p chokepoint-redirect --test it golden::` rewrites the
//! files under `tests/golden/`; review the diff before keeping it.
//!
//! `netns_install.rs` applies every one of these specs in a network namespace, so the goldens
//! are known to be accepted by nft and ip, not just to look right.

use std::path::PathBuf;

use chokepoint_redirect::render;

#[test]
fn rendered_capture_matches_the_golden_files() {
    let bless = std::env::var_os("CHOKEPOINT_BLESS").is_some();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut failures = Vec::new();
    for (name, spec) in crate::specs::golden_specs() {
        let rendered = render(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual = rendered.to_shell();
        let path = dir.join(format!("{name}.sh"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (bless with CHOKEPOINT_BLESS=1)", path.display()));
        if expected != actual {
            failures.push(format!(
                "{name}: rendered text differs from {}\n--- actual ---\n{actual}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_tproxy_variant_ends_pod_capture_with_the_drop() {
    for (name, spec) in crate::specs::golden_specs() {
        let nft = render(&spec).unwrap().nft;
        let chain = if nft.contains("chain pod_capture {") {
            "chain pod_capture {"
        } else {
            "chain pod_enforce {"
        };
        let body = &nft[nft.find(chain).unwrap()..];
        let body = &body[..body.find("\n\t}").unwrap()];
        let last = body.lines().last().unwrap().trim();
        assert!(
            last.starts_with("counter drop comment"),
            "{name}: {chain} must end with the drop, ends with {last:?}"
        );
    }
}
