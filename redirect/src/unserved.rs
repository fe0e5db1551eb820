//! Keeping the sets of Service ports without a ready endpoint (TPROXY mode; see the
//! `unserved_services` chain in [`render`](crate::render())).

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::Error;
use crate::cmd::{self, argv};
use crate::render::unserved_families;
use crate::spec::{CaptureMode, CaptureSpec, L4, TABLE_NAME};

/// The nft script that makes the unserved-port sets hold exactly `ports` (`ClusterIP:port`
/// and protocol), in one transaction. Ports of a family `spec` does not serve are left out
/// (nothing of that family is captured). `None` in REDIRECT mode, which captures before the
/// Service DNAT and needs no set.
pub fn render_unserved(spec: &CaptureSpec, ports: &[(SocketAddr, L4)]) -> Option<String> {
    if spec.mode != CaptureMode::Tproxy {
        return None;
    }
    let mut out = String::new();
    for (name, _, family) in unserved_families(spec) {
        let _ = writeln!(out, "flush set inet {TABLE_NAME} {name}");
        let elements: Vec<String> = ports
            .iter()
            .filter(|(a, _)| a.is_ipv4() == (family == "ip"))
            .map(|(a, l4)| {
                let proto = match l4 {
                    L4::Tcp => "tcp",
                    L4::Udp => "udp",
                };
                format!("{} . {proto} . {}", a.ip(), a.port())
            })
            .collect();
        if !elements.is_empty() {
            let _ = writeln!(
                out,
                "add element inet {TABLE_NAME} {name} {{ {} }}",
                elements.join(", ")
            );
        }
    }
    Some(out)
}

/// Applies [`render_unserved`] to the installed capture (the table must exist).
pub fn set_unserved(spec: &CaptureSpec, ports: &[(SocketAddr, L4)]) -> Result<(), Error> {
    match render_unserved(spec, ports) {
        Some(script) => cmd::run(&argv(["nft", "-f", "-"]), Some(&script)).map(drop),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::IpFamilies;

    fn ports() -> Vec<(SocketAddr, L4)> {
        vec![
            ("10.96.0.30:80".parse().unwrap(), L4::Tcp),
            ("10.96.0.30:53".parse().unwrap(), L4::Udp),
            ("[fd00:96::30]:80".parse().unwrap(), L4::Tcp),
        ]
    }

    #[test]
    fn each_family_set_is_flushed_and_refilled_in_one_script() {
        let spec = CaptureSpec {
            families: IpFamilies::Dual,
            ..CaptureSpec::default()
        };
        let script = render_unserved(&spec, &ports()).unwrap();
        assert_eq!(
            script,
            "flush set inet chokepoint unserved_v4\n\
             add element inet chokepoint unserved_v4 { 10.96.0.30 . tcp . 80, 10.96.0.30 . udp . 53 }\n\
             flush set inet chokepoint unserved_v6\n\
             add element inet chokepoint unserved_v6 { fd00:96::30 . tcp . 80 }\n"
        );
    }

    #[test]
    fn an_empty_list_only_flushes_and_a_family_not_served_is_left_out() {
        let spec = CaptureSpec {
            families: IpFamilies::Ipv4,
            ..CaptureSpec::default()
        };
        assert_eq!(
            render_unserved(&spec, &[]).unwrap(),
            "flush set inet chokepoint unserved_v4\n"
        );
        assert!(!render_unserved(&spec, &ports()).unwrap().contains("fd00"));
    }

    #[test]
    fn redirect_mode_keeps_no_set() {
        let spec = CaptureSpec {
            mode: CaptureMode::Redirect,
            ..CaptureSpec::default()
        };
        assert_eq!(render_unserved(&spec, &ports()), None);
    }
}
