//! What to capture and where to send it: [`CaptureSpec`]. It has no defaults: the gateway
//! fills every field from its validated settings, where the defaults are written (the tests'
//! starting point is `spec_fixture.rs`).

use ipnet::IpNet;
use serde::Serialize;

use crate::Error;
pub use crate::fast_path::FastPath;

/// Name of the nftables table this crate owns (family `inet`). Nothing else may use it.
pub const TABLE_NAME: &str = "chokepoint";

/// How pod traffic is diverted into the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// nftables `tproxy` plus policy routing (`fwmark → local route table`). TCP and UDP; the
    /// original destination is the accepted socket's local address (TCP) or `IP_ORIGDSTADDR`
    /// (UDP). Upstream sockets may keep the pod's source IP. The default.
    Tproxy,
    /// nftables NAT `redirect` to the local TCP port; the original destination comes from
    /// `SO_ORIGINAL_DST`. TCP only (plus DNS when [`CaptureSpec::dns_port`] is set, which the
    /// DNS proxy can answer without knowing the original destination); every other pod packet
    /// is dropped. A fallback for environments where TPROXY does not work.
    Redirect,
}

/// The transport protocol of a flow (a conntrack lookup, a Service port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    Tcp,
    Udp,
}

/// The IP families the gateway serves. Pod traffic of a family that is not served is dropped,
/// not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpFamilies {
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// IPv4 and IPv6. The default.
    Dual,
}

impl IpFamilies {
    /// Whether IPv4 is served.
    pub fn v4(self) -> bool {
        matches!(self, IpFamilies::Ipv4 | IpFamilies::Dual)
    }

    /// Whether IPv6 is served.
    pub fn v6(self) -> bool {
        matches!(self, IpFamilies::Ipv6 | IpFamilies::Dual)
    }
}

/// Everything needed to render and install the capture rules of one node.
///
/// Pod traffic is every packet that enters through one of [`pod_interfaces`](Self::pod_interfaces)
/// *or* comes from one of [`pod_cidrs`](Self::pod_cidrs). Use this node's pod CIDR(s), not the
/// cluster CIDR: traffic from pods on other nodes must not be captured here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureSpec {
    /// TPROXY (default) or REDIRECT.
    pub mode: CaptureMode,
    /// Families the gateway serves; see [`IpFamilies`].
    pub families: IpFamilies,
    /// Pod-facing interfaces, e.g. `"cali*"`, `"veth*"`, `"lxc*"`. A trailing `*` is nftables'
    /// prefix wildcard; no other wildcard or quoting characters are allowed.
    pub pod_interfaces: Vec<String>,
    /// Pod source networks (IPv4 and/or IPv6). Host bits are ignored.
    pub pod_cidrs: Vec<IpNet>,
    /// Port of the gateway's TCP listener.
    pub tcp_port: u16,
    /// Port of the gateway's UDP socket (TPROXY mode only; REDIRECT mode drops pod UDP).
    pub udp_port: u16,
    /// When set, pod DNS (UDP and TCP to port 53) goes to this port (the DNS proxy) instead of
    /// the generic listeners. When `None`, DNS is captured like any other UDP/TCP.
    pub dns_port: Option<u16>,
    /// fwmark that routes a packet to [`route_table`](Self::route_table), i.e. to a local socket.
    pub capture_mark: u32,
    /// `SO_MARK` of the gateway's own sockets; packets carrying it are never captured.
    pub gateway_mark: u32,
    /// The mark bits Chokepoint owns; both marks must lie within it. Other bits are preserved
    /// when the capture mark is set and ignored when marks are matched.
    pub mark_mask: u32,
    /// Policy-routing table holding `local default dev lo` (TPROXY mode).
    pub route_table: u32,
    /// Preference of the `fwmark → route_table` ip rule (TPROXY mode).
    pub rule_priority: u32,
    /// The kernel fast path (TPROXY mode only): new pod flows wait in a packet queue for the
    /// gateway's decision, and allowed ones stay in the kernel. `None`: every flow is proxied.
    pub fast_path: Option<FastPath>,
}

/// The unit tests' starting point (render.rs, the checks below); the integration tests use
/// the rest of it.
#[cfg(test)]
#[allow(dead_code)]
#[path = "spec_fixture.rs"]
mod fixture;

#[cfg(test)]
impl Default for CaptureSpec {
    fn default() -> Self {
        fixture::base()
    }
}

impl CaptureSpec {
    /// Checks the spec and reports every problem at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if self.pod_interfaces.is_empty() && self.pod_cidrs.is_empty() {
            problems
                .push("no pod interfaces and no pod CIDRs: nothing would be captured".to_string());
        }
        for name in &self.pod_interfaces {
            if let Err(why) = check_interface(name) {
                problems.push(format!("pod interface {name:?}: {why}"));
            }
        }
        for net in &self.pod_cidrs {
            if net.prefix_len() == 0 {
                problems.push(format!(
                    "pod CIDR {net}: a /0 would capture every packet the node receives"
                ));
            }
            match net {
                IpNet::V4(_) if !self.families.v4() => problems.push(format!(
                    "pod CIDR {net} is IPv4 but families is {:?}",
                    self.families
                )),
                IpNet::V6(_) if !self.families.v6() => problems.push(format!(
                    "pod CIDR {net} is IPv6 but families is {:?}",
                    self.families
                )),
                _ => {}
            }
        }
        for (what, port) in [("tcp_port", self.tcp_port), ("udp_port", self.udp_port)] {
            if port == 0 {
                problems.push(format!("{what} is 0"));
            }
        }
        if let Some(dns) = self.dns_port {
            if dns == 0 {
                problems.push("dns_port is 0".to_string());
            } else if dns == self.tcp_port || dns == self.udp_port {
                problems.push(format!(
                    "dns_port {dns} is also the TCP or UDP listener port; give the DNS proxy its own port"
                ));
            }
        }
        if self.mark_mask == 0 {
            problems.push("mark_mask is 0".to_string());
        }
        for (what, mark) in [
            ("capture_mark", self.capture_mark),
            ("gateway_mark", self.gateway_mark),
        ] {
            if mark & self.mark_mask == 0 {
                problems.push(format!(
                    "{what} {mark:#x} has no bit inside mark_mask {:#x}",
                    self.mark_mask
                ));
            } else if mark & !self.mark_mask != 0 {
                problems.push(format!(
                    "{what} {mark:#x} has bits outside mark_mask {:#x}",
                    self.mark_mask
                ));
            }
        }
        if self.capture_mark & self.mark_mask == self.gateway_mark & self.mark_mask {
            problems.push(format!(
                "capture_mark and gateway_mark must differ (both {:#x} under mask {:#x})",
                self.capture_mark & self.mark_mask,
                self.mark_mask
            ));
        }
        let (capture, gateway) = (
            self.capture_mark & self.mark_mask,
            self.gateway_mark & self.mark_mask,
        );
        if capture != gateway && (capture & gateway == capture || capture & gateway == gateway) {
            problems.push(format!(
                "capture_mark {capture:#x} and gateway_mark {gateway:#x} must not contain one another: their union {:#x} marks connections into pods and must differ from both",
                capture | gateway
            ));
        }
        if self.pod_interfaces.is_empty() {
            for (name, served, has_range) in [
                (
                    "IPv4",
                    self.families.v4(),
                    self.pod_cidrs.iter().any(|n| matches!(n, IpNet::V4(_))),
                ),
                (
                    "IPv6",
                    self.families.v6(),
                    self.pod_cidrs.iter().any(|n| matches!(n, IpNet::V6(_))),
                ),
            ] {
                if served && !has_range {
                    problems.push(format!(
                        "{name} is served but there are no pod interfaces and no {name} pod CIDR: {name} from pods would not be captured at all; set the pod interfaces (they also bind pod addresses to interfaces) or add this node's {name} pod range"
                    ));
                }
            }
        }
        if matches!(self.route_table, 0 | 253 | 254 | 255) {
            problems.push(format!(
                "route_table {} is reserved (0 unspec, 253 default, 254 main, 255 local)",
                self.route_table
            ));
        }
        if self.rule_priority == 0 || self.rule_priority >= 32766 {
            problems.push(format!(
                "rule_priority {} must be between 1 and 32765 (0 is the local rule, 32766 main)",
                self.rule_priority
            ));
        }
        if let Some(fast) = &self.fast_path {
            if self.mode != CaptureMode::Tproxy {
                problems.push(
                    "the fast path needs TPROXY mode (REDIRECT captures before the Service DNAT)"
                        .to_string(),
                );
            }
            fast.problems(self.mark_mask, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSpec(problems))
        }
    }
}

/// Linux interface names: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace. On top of
/// that, because the name is written into nft text inside double quotes: printable ASCII only,
/// no `"` or `\`, and `*` only as the final character (nft's prefix wildcard).
fn check_interface(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 15 {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." || name == "*" {
        return Err("not a valid interface name or pattern");
    }
    let body = name.strip_suffix('*').unwrap_or(name);
    if body
        .chars()
        .any(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '"' | '\\' | '*'))
    {
        return Err("only printable ASCII without / : \" \\ is allowed, and * only at the end");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_with_an_interface_is_valid() {
        let spec = CaptureSpec {
            pod_interfaces: vec!["cali*".into()],
            ..CaptureSpec::default()
        };
        spec.validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported() {
        let spec = CaptureSpec {
            families: IpFamilies::Ipv4,
            pod_interfaces: vec!["bad\"name".into(), "a*b".into(), "x".repeat(16)],
            pod_cidrs: vec!["fd00::/64".parse().unwrap(), "0.0.0.0/0".parse().unwrap()],
            tcp_port: 0,
            dns_port: Some(fixture::UDP_PORT),
            capture_mark: 0x2000,
            gateway_mark: 0x1_2000,
            route_table: 254,
            rule_priority: 32766,
            ..CaptureSpec::default()
        };
        let Err(Error::InvalidSpec(problems)) = spec.validate() else {
            panic!("expected InvalidSpec");
        };
        let text = problems.join("\n");
        for needle in [
            "\"bad\\\"name\"",
            "\"a*b\"",
            "longer than 15",
            "fd00::/64 is IPv6",
            "0.0.0.0/0",
            "tcp_port is 0",
            "dns_port 15002",
            "outside mark_mask",
            "must differ",
            "route_table 254",
            "rule_priority 32766",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn nothing_to_capture_is_rejected() {
        let err = CaptureSpec::default().validate().unwrap_err();
        assert!(
            err.to_string().contains("nothing would be captured"),
            "{err}"
        );
    }

    #[test]
    fn a_family_without_pod_range_or_interfaces_is_a_hole_and_rejected() {
        let spec = CaptureSpec {
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            ..CaptureSpec::default()
        };
        let err = spec.validate().unwrap_err().to_string();
        assert!(
            err.contains("IPv6 from pods would not be captured"),
            "{err}"
        );
        assert!(!err.contains("IPv4 from pods"), "{err}");
        // With pod interfaces every family of theirs is captured; with IPv4 only served, fine.
        let with_ifaces = CaptureSpec {
            pod_interfaces: vec!["cali*".into()],
            ..spec.clone()
        };
        with_ifaces.validate().unwrap();
        let v4_only = CaptureSpec {
            families: IpFamilies::Ipv4,
            ..spec
        };
        v4_only.validate().unwrap();
    }

    #[test]
    fn marks_that_contain_one_another_are_rejected() {
        let spec = CaptureSpec {
            pod_interfaces: vec!["cali*".into()],
            capture_mark: 0x1000,
            gateway_mark: 0x3000,
            ..CaptureSpec::default()
        };
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("must not contain one another"), "{err}");
    }
}
