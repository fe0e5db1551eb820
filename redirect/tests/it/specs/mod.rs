//! The capture specs behind the golden files (shared by `golden.rs` and `netns_install.rs`),
//! and the spec every test starts from.

#![allow(dead_code, unused_imports)]

use chokepoint_redirect::{CaptureMode, CaptureSpec, FastPath, IpFamilies};

#[path = "../../../src/spec_fixture.rs"]
mod fixture;

pub use fixture::{DNS_PORT, GATEWAY_MARK, base, fast_path};

fn spec(
    mode: CaptureMode,
    families: IpFamilies,
    ifaces: &[&str],
    cidrs: &[&str],
    dns: bool,
) -> CaptureSpec {
    CaptureSpec {
        mode,
        families,
        pod_interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
        pod_cidrs: cidrs.iter().map(|s| s.parse().unwrap()).collect(),
        dns_port: dns.then_some(DNS_PORT),
        ..base()
    }
}

/// `(golden file stem, spec)` for both modes: v4 only, dual stack, interfaces only, CIDRs only.
pub fn golden_specs() -> Vec<(&'static str, CaptureSpec)> {
    let mut out = Vec::new();
    for (prefix, mode) in [
        ("tproxy", CaptureMode::Tproxy),
        ("redirect", CaptureMode::Redirect),
    ] {
        let variants: [(&str, CaptureSpec); 4] = [
            (
                "v4",
                spec(mode, IpFamilies::Ipv4, &["cali*"], &["10.244.1.0/24"], true),
            ),
            (
                "dual",
                spec(
                    mode,
                    IpFamilies::Dual,
                    &["cali*"],
                    &["10.244.1.0/24", "fd00:10:244:1::/64"],
                    true,
                ),
            ),
            (
                "interfaces_only",
                spec(mode, IpFamilies::Dual, &["veth*", "eth1"], &[], false),
            ),
            (
                "cidrs_only",
                spec(
                    mode,
                    IpFamilies::Dual,
                    &[],
                    &["10.244.1.0/24", "10.244.2.0/24", "fd00:10:244:1::/64"],
                    false,
                ),
            ),
        ];
        for (variant, spec) in variants {
            let name: &'static str = Box::leak(format!("{prefix}_{variant}").into_boxed_str());
            out.push((name, spec));
        }
    }
    out.push((
        "tproxy_fast_path",
        CaptureSpec {
            fast_path: Some(fast_path()),
            ..spec(
                CaptureMode::Tproxy,
                IpFamilies::Dual,
                &["cali*"],
                &["10.244.1.0/24", "fd00:10:244:1::/64"],
                true,
            )
        },
    ));
    out
}
