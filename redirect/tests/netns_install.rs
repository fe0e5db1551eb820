//! install / verify / remove in throwaway network namespaces. Needs root; fails (does not skip)
//! without it.

mod common;
mod specs;

use chokepoint_redirect::{
    CaptureMode, CaptureSpec, Error, InstallMode, IpFamilies, install, remove, verify,
};
use common::{Netns, require_root, sh};

fn tproxy_spec() -> CaptureSpec {
    CaptureSpec {
        pod_interfaces: vec!["veth*".into()],
        pod_cidrs: vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:244:1::/64".parse().unwrap(),
        ],
        ..specs::base()
    }
}

fn nft_table() -> Option<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", "chokepoint"])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rules(flag: &str) -> String {
    sh(&["ip", flag, "rule", "show"])
}

fn routes(flag: &str, table: u32) -> String {
    let out = std::process::Command::new("ip")
        .args([flag, "route", "show", "table", &table.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_clean(spec: &CaptureSpec) {
    assert!(nft_table().is_none(), "table left behind");
    for flag in ["-4", "-6"] {
        let rules = rules(flag);
        assert!(
            !rules.contains("0x1000") && !rules.contains(&spec.route_table.to_string()),
            "ip {flag} rules left behind:\n{rules}"
        );
        let routes = routes(flag, spec.route_table);
        assert!(
            routes.trim().is_empty(),
            "ip {flag} routes left behind:\n{routes}"
        );
    }
}

#[test]
fn install_conflict_replace_remove() {
    require_root();
    let ns = Netns::new("install");
    ns.run(|| {
        let spec = tproxy_spec();
        install(&spec, InstallMode::Fresh).expect("fresh install on a clean namespace");
        verify(&spec).expect("verify after install");

        let table = nft_table().expect("table installed");
        for needle in [
            "chain prerouting {",
            "type filter hook prerouting priority mangle; policy accept;",
            "iifname \"veth*\" jump pod_capture",
            "ip saddr @pod_v4 jump pod_capture",
            "ip6 saddr @pod_v6 jump pod_capture",
            "tproxy to :15001",
            "tproxy to :15002",
            "drop comment \"chokepoint: fail closed",
        ] {
            assert!(table.contains(needle), "{needle:?} not in:\n{table}");
        }
        for flag in ["-4", "-6"] {
            let rules = rules(flag);
            assert_eq!(
                rules
                    .matches("100:\tfrom all fwmark 0x1000/0x3000 lookup 1287")
                    .count(),
                1,
                "ip {flag} rule:\n{rules}"
            );
            let routes = routes(flag, 1287);
            assert!(
                routes.starts_with("local default dev lo"),
                "ip {flag} route table 1287:\n{routes}"
            );
        }

        // A second fresh install refuses, says what it found and how to remove it.
        let Err(Error::Conflict(leftovers)) = install(&spec, InstallMode::Fresh) else {
            panic!("second fresh install must report a conflict");
        };
        let message = Error::Conflict(leftovers.clone()).to_string();
        for needle in [
            "nftables table inet chokepoint",
            "100: from all fwmark 0x1000/0x3000 lookup 1287",
            "local default dev lo",
            "nft delete table inet chokepoint",
            "ip -4 rule del pref 100 fwmark 0x1000/0x3000 lookup 1287",
            "ip -6 rule del pref 100 fwmark 0x1000/0x3000 lookup 1287",
            "ip -4 route flush table 1287",
            "ip -6 route flush table 1287",
            "InstallMode::Replace",
        ] {
            assert!(message.contains(needle), "{needle:?} not in:\n{message}");
        }
        // The hint is literally runnable and sufficient.
        for command in &leftovers.remove_commands {
            sh(&["sh", "-c", command]);
        }
        assert_clean(&spec);
        install(&spec, InstallMode::Fresh).expect("fresh install after following the hint");

        // Replace over an identical install keeps one rule per family.
        install(&spec, InstallMode::Replace).expect("replace");
        verify(&spec).expect("verify after replace");
        for flag in ["-4", "-6"] {
            assert_eq!(rules(flag).matches("lookup 1287").count(), 1, "{flag}");
        }

        // Replace with a changed spec plus a stray rule on our mark: only the new state remains.
        sh(&[
            "ip",
            "-4",
            "rule",
            "add",
            "pref",
            "200",
            "fwmark",
            "0x1000/0x3000",
            "lookup",
            "77",
        ]);
        let changed = CaptureSpec {
            tcp_port: 16001,
            rule_priority: 150,
            ..spec.clone()
        };
        let Err(Error::Conflict(found)) = install(&changed, InstallMode::Fresh) else {
            panic!("conflict expected");
        };
        assert!(
            found
                .remove_commands
                .contains(&"ip -4 rule del pref 200 fwmark 0x1000/0x3000 lookup 77".to_string()),
            "{found}"
        );
        install(&changed, InstallMode::Replace).expect("replace with a changed spec");
        verify(&changed).expect("verify changed");
        let table = nft_table().unwrap();
        assert!(table.contains("tproxy to :16001"), "{table}");
        assert!(!table.contains("tproxy to :15001"), "{table}");
        let v4 = rules("-4");
        assert!(
            v4.contains("150:\tfrom all fwmark 0x1000/0x3000 lookup 1287"),
            "{v4}"
        );
        assert!(
            !v4.contains("100:\tfrom all fwmark") && !v4.contains("lookup 77"),
            "{v4}"
        );
        // The old spec no longer verifies, and says why.
        let Err(Error::NotInstalled { missing }) = verify(&spec) else {
            panic!("old spec must not verify");
        };
        assert!(
            missing.iter().any(|m| m.contains("port 15001")),
            "{missing:?}"
        );
        assert!(
            missing.iter().any(|m| m.contains("pref 100")),
            "{missing:?}"
        );

        // Remove leaves nothing and is idempotent.
        remove(&changed).expect("remove");
        assert_clean(&changed);
        remove(&changed).expect("remove again");
        let Err(Error::NotInstalled { missing }) = verify(&changed) else {
            panic!("verify after remove must fail");
        };
        assert!(missing[0].contains("table inet chokepoint"), "{missing:?}");
    });
}

#[test]
fn redirect_mode_installs_without_policy_routing() {
    require_root();
    let ns = Netns::new("redir");
    ns.run(|| {
        let spec = CaptureSpec {
            mode: CaptureMode::Redirect,
            families: IpFamilies::Ipv4,
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            ..specs::base()
        };
        install(&spec, InstallMode::Fresh).unwrap();
        verify(&spec).unwrap();
        let table = nft_table().unwrap();
        assert!(
            table.contains("type nat hook prerouting priority dstnat - 10"),
            "{table}"
        );
        assert!(table.contains("redirect to :15001"), "{table}");
        assert!(
            !rules("-4").contains("fwmark"),
            "no policy routing in REDIRECT mode"
        );
        assert!(matches!(
            install(&spec, InstallMode::Fresh),
            Err(Error::Conflict(_))
        ));
        // The same node switching to TPROXY replaces the table and adds the routing.
        let tproxy = CaptureSpec {
            mode: CaptureMode::Tproxy,
            ..spec.clone()
        };
        install(&tproxy, InstallMode::Replace).unwrap();
        verify(&tproxy).unwrap();
        assert!(rules("-4").contains("fwmark 0x1000/0x3000 lookup 1287"));
        // And back: REDIRECT needs no policy routing, so none may remain.
        install(&spec, InstallMode::Replace).unwrap();
        verify(&spec).unwrap();
        assert!(!rules("-4").contains("fwmark"), "{}", rules("-4"));
        assert!(
            routes("-4", 1287).trim().is_empty(),
            "{}",
            routes("-4", 1287)
        );
        assert!(verify(&tproxy).is_err());
        remove(&spec).unwrap();
        assert_clean(&spec);
    });
}

#[test]
fn every_golden_spec_applies_verifies_and_removes() {
    require_root();
    let ns = Netns::new("golden");
    ns.run(|| {
        for (name, spec) in specs::golden_specs() {
            install(&spec, InstallMode::Fresh).unwrap_or_else(|e| panic!("{name}: {e}"));
            verify(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
            remove(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_clean(&spec);
        }
    });
}

#[test]
fn a_failing_fresh_install_undoes_its_policy_routing() {
    require_root();
    let ns = Netns::new("undo");
    // With `lo` down the kernel takes the IPv4 local route but refuses the IPv6 one, so the
    // install fails half-way, after the IPv4 rule and route were added.
    ns.ip(&["link", "set", "lo", "down"]);
    ns.run(|| {
        let spec = tproxy_spec();
        let err = install(&spec, InstallMode::Fresh).expect_err("IPv6 local route must fail");
        let Error::Command {
            command, stderr, ..
        } = &err
        else {
            panic!("expected a command error, got {err}");
        };
        assert_eq!(command, "ip -6 route replace local ::/0 dev lo table 1287");
        assert!(!stderr.is_empty(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("`ip -6 route replace local ::/0 dev lo table 1287` failed"),
            "{text}"
        );
        assert_clean(&spec);
    });
}
