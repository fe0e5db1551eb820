//! Rendering a [`CaptureSpec`] into nft text and `ip` commands.
//!
//! The nft text is a complete `nft -f -` script: it declares the table, deletes it and declares
//! it again with its full contents, so one transaction replaces whatever `inet chokepoint` was
//! there (or creates it) and nothing else in the ruleset is touched. What [`render`] returns is
//! byte for byte what [`install`](crate::install) applies.

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::Error;
use crate::cmd;
use crate::spec::{CaptureMode, CaptureSpec, IpFamilies, TABLE_NAME};

/// The rendered capture: the nft script and the `ip` commands, in the order they are applied
/// (policy routing first, then nft, so packets are never marked before their route exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The complete script for `nft -f -`; applying it replaces the table atomically.
    pub nft: String,
    /// Policy-routing commands, each a full argv starting with `ip` (empty in REDIRECT mode).
    pub ip_commands: Vec<Vec<String>>,
}

impl Rendered {
    /// Shell text that does what `install` does on a clean node: the `ip` commands, then the
    /// nft script as a here-document. For `--print` and for operators who want to read it.
    pub fn to_shell(&self) -> String {
        let mut out = String::new();
        for argv in &self.ip_commands {
            out.push_str(&cmd::display(argv));
            out.push('\n');
        }
        out.push_str("nft -f - <<'EOF'\n");
        out.push_str(&self.nft);
        out.push_str("EOF\n");
        out
    }
}

/// Names of the chains (for [`verify`](crate::verify) and tests).
pub(crate) const TPROXY_CHAINS: [&str; 3] = ["prerouting", "pod_capture", "output"];
pub(crate) const REDIRECT_CHAINS: [&str; 4] = [
    "nat_prerouting",
    "pod_redirect",
    "filter_prerouting",
    "pod_enforce",
];

/// Priority of the TPROXY capture chain: after kube-proxy's Service DNAT (a nat chain at
/// `dstnat`, in iptables, nftables and iptables-nft mode alike), so the gateway sees the
/// backend a connection really reaches (the accepted socket's local address) while conntrack
/// still knows the ClusterIP the pod addressed (`SO_ORIGINAL_DST`). `tproxy` does not care
/// which filter priority it runs at; the routing decision it feeds comes after every hook.
pub(crate) const TPROXY_PRIORITY: &str = "dstnat + 10";

/// Priority of the REDIRECT mode's NAT chain: before kube-proxy's DNAT. The first nat chain
/// at a hook that binds a connection wins and later ones are skipped, so after kube-proxy a
/// Service connection would never be redirected (it would hit the fail-closed drop). The
/// gateway then sees the ClusterIP and picks the backend itself.
pub(crate) const REDIRECT_PRIORITY: &str = "dstnat - 10";

/// The comment on the final drop rule; [`verify`](crate::verify) looks for it.
pub(crate) const DROP_COMMENT: &str = "chokepoint: fail closed, pod traffic no gateway socket took";

/// Renders the nft script and the `ip` commands for `spec` (after [`CaptureSpec::validate`]).
pub fn render(spec: &CaptureSpec) -> Result<Rendered, Error> {
    spec.validate()?;
    let nft = match spec.mode {
        CaptureMode::Tproxy => render_tproxy(spec),
        CaptureMode::Redirect => render_redirect(spec),
    };
    let ip_commands = match spec.mode {
        CaptureMode::Tproxy => policy_routing(spec),
        CaptureMode::Redirect => Vec::new(),
    };
    Ok(Rendered { nft, ip_commands })
}

/// `ip route replace local default dev lo table T` and `ip rule add … fwmark M/MASK lookup T`
/// for each served family.
fn policy_routing(spec: &CaptureSpec) -> Vec<Vec<String>> {
    let table = spec.route_table.to_string();
    let fwmark = fwmark_selector(spec.capture_mark, spec.mark_mask);
    let mut out = Vec::new();
    for (flag, default) in families(spec.families) {
        out.push(cmd::argv([
            "ip", flag, "route", "replace", "local", default, "dev", "lo", "table", &table,
        ]));
        out.push(cmd::argv([
            "ip",
            flag,
            "rule",
            "add",
            "pref",
            &spec.rule_priority.to_string(),
            "fwmark",
            &fwmark,
            "lookup",
            &table,
        ]));
    }
    out
}

/// `(ip family flag, default route)` per served family.
pub(crate) fn families(f: IpFamilies) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if f.v4() {
        out.push(("-4", "0.0.0.0/0"));
    }
    if f.v6() {
        out.push(("-6", "::/0"));
    }
    out
}

/// The `fwmark` selector of the ip rule, as `ip` accepts it.
pub(crate) fn fwmark_selector(mark: u32, mask: u32) -> String {
    format!("{mark:#x}/{mask:#x}")
}

fn mark_match(mark: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!("meta mark {mark:#010x}")
    } else {
        format!("meta mark & {mask:#010x} == {mark:#010x}")
    }
}

fn mark_mismatch(mark: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!("meta mark != {mark:#010x}")
    } else {
        format!("meta mark & {mask:#010x} != {mark:#010x}")
    }
}

fn mark_set(mark: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!("meta mark set {mark:#010x}")
    } else {
        format!("meta mark set meta mark & {:#010x} | {mark:#010x}", !mask)
    }
}

/// `meta nfproto …` qualifier for single-family specs, and the family keyword of `tproxy`.
fn family_qualifier(f: IpFamilies) -> (&'static str, &'static str) {
    match f {
        IpFamilies::Dual => ("", ""),
        IpFamilies::Ipv4 => ("meta nfproto ipv4 ", "ip "),
        IpFamilies::Ipv6 => ("meta nfproto ipv6 ", "ip6 "),
    }
}

fn header(out: &mut String, mode: &str) {
    let _ = writeln!(
        out,
        "# Chokepoint capture ({mode} mode), rendered by chokepoint-redirect.\n\
         # One transaction: declaring the table first makes the delete succeed when it does not\n\
         # exist yet, so the table is replaced atomically and nothing else is touched.\n\
         table inet {TABLE_NAME}\n\
         delete table inet {TABLE_NAME}\n\
         table inet {TABLE_NAME} {{"
    );
}

/// Named interval sets of pod source networks, one per family that has any.
fn pod_sets(out: &mut String, spec: &CaptureSpec) {
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = spec
        .pod_cidrs
        .iter()
        .map(IpNet::trunc)
        .partition(|n| matches!(n, IpNet::V4(_)));
    for (name, ty, nets) in [("pod_v4", "ipv4_addr", v4), ("pod_v6", "ipv6_addr", v6)] {
        if nets.is_empty() {
            continue;
        }
        let elements = nets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "\tset {name} {{\n\
             \t\ttype {ty}\n\
             \t\tflags interval\n\
             \t\tauto-merge\n\
             \t\telements = {{ {elements} }}\n\
             \t}}\n"
        );
    }
}

/// The rules of a base chain that send pod traffic to `target`.
fn pod_jumps(out: &mut String, spec: &CaptureSpec, target: &str) {
    let mut seen = Vec::new();
    for name in &spec.pod_interfaces {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let _ = writeln!(out, "\t\tiifname \"{name}\" jump {target}");
    }
    if spec.pod_cidrs.iter().any(|n| matches!(n, IpNet::V4(_))) {
        let _ = writeln!(out, "\t\tip saddr @pod_v4 jump {target}");
    }
    if spec.pod_cidrs.iter().any(|n| matches!(n, IpNet::V6(_))) {
        let _ = writeln!(out, "\t\tip6 saddr @pod_v6 jump {target}");
    }
}

fn gateway_return(out: &mut String, spec: &CaptureSpec) {
    let _ = writeln!(
        out,
        "\t\t{} return comment \"the gateway's own traffic\"",
        mark_match(spec.gateway_mark, spec.mark_mask)
    );
}

/// Pod replies on connections *into* the pod, and ICMP errors about them, are not egress.
fn pod_common_accepts(out: &mut String, spec: &CaptureSpec) {
    let _ = writeln!(
        out,
        "\t\tct direction reply accept comment \"replies on connections into pods\""
    );
    if spec.families.v6() {
        let _ = writeln!(
            out,
            "\t\ticmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept comment \"IPv6 neighbour discovery\""
        );
    }
}

fn final_drop(out: &mut String) {
    let _ = writeln!(out, "\t\tcounter drop comment \"{DROP_COMMENT}\"");
}

fn render_tproxy(spec: &CaptureSpec) -> String {
    let set_capture = mark_set(spec.capture_mark, spec.mark_mask);
    let (nfproto, tproxy_family) = family_qualifier(spec.families);
    let transparent_reply = format!(
        "socket transparent 1 socket wildcard 0 {set_capture} accept comment \"replies to the gateway's transparent upstream sockets\""
    );
    let mut out = String::new();
    header(&mut out, "TPROXY");
    pod_sets(&mut out, spec);

    out.push_str("\tchain prerouting {\n");
    let _ = writeln!(
        out,
        "\t\ttype filter hook prerouting priority {TPROXY_PRIORITY}; policy accept;"
    );
    gateway_return(&mut out, spec);
    pod_jumps(&mut out, spec, "pod_capture");
    let _ = writeln!(out, "\t\t{transparent_reply}");
    out.push_str("\t}\n\n");

    out.push_str("\tchain pod_capture {\n");
    // A pod (or a pod's address) answering one of the gateway's transparent upstream sockets,
    // e.g. pod A's connection to pod B on the same node, which the gateway made as pod A.
    let _ = writeln!(out, "\t\tct direction reply {transparent_reply}");
    pod_common_accepts(&mut out, spec);
    // `tproxy` first looks for an established socket of the flow, then for the listener; when
    // it finds neither it does nothing and the rule's remaining statements are skipped.
    if let Some(dns) = spec.dns_port {
        let _ = writeln!(
            out,
            "\t\t{nfproto}meta l4proto {{ tcp, udp }} th dport 53 tproxy {tproxy_family}to :{dns} {set_capture} accept comment \"DNS to the DNS proxy\""
        );
    }
    let _ = writeln!(
        out,
        "\t\t{nfproto}meta l4proto tcp tproxy {tproxy_family}to :{} {set_capture} accept",
        spec.tcp_port
    );
    let _ = writeln!(
        out,
        "\t\t{nfproto}meta l4proto udp tproxy {tproxy_family}to :{} {set_capture} accept",
        spec.udp_port
    );
    final_drop(&mut out);
    out.push_str("\t}\n\n");

    // A destination on this node (a hostNetwork service, the node's own address) answers the
    // gateway's transparent upstream socket from here: its replies to the pod's address would
    // be routed out to the pod. Remember which connections are the gateway's (ct mark, under
    // the mask) and route their locally generated replies to the local table, where the
    // transparent socket takes them.
    let ct_gateway = mark_match(spec.gateway_mark, spec.mark_mask).replace("meta mark", "ct mark");
    let ct_set = mark_set(spec.gateway_mark, spec.mark_mask).replace("meta mark", "ct mark");
    out.push_str("\tchain output {\n");
    out.push_str("\t\ttype route hook output priority mangle; policy accept;\n");
    // Only connections the gateway opened: its answers to pods (reply sockets, the reply
    // direction of a pod's flow) carry the gateway mark too and must go out to the pod.
    let gateway_packet = mark_match(spec.gateway_mark, spec.mark_mask);
    let _ = writeln!(
        out,
        "\t\tct direction original {gateway_packet} {ct_set} comment \"connections the gateway opens\""
    );
    let not_gateway_packet = mark_mismatch(spec.gateway_mark, spec.mark_mask);
    let _ = writeln!(
        out,
        "\t\tct direction reply {ct_gateway} {not_gateway_packet} {set_capture} comment \"local replies to the gateway's transparent upstream sockets\""
    );
    out.push_str("\t}\n}\n");
    out
}

fn render_redirect(spec: &CaptureSpec) -> String {
    let (nfproto, _) = family_qualifier(spec.families);
    let mut out = String::new();
    header(&mut out, "REDIRECT");
    pod_sets(&mut out, spec);

    out.push_str("\tchain nat_prerouting {\n");
    let _ = writeln!(
        out,
        "\t\ttype nat hook prerouting priority {REDIRECT_PRIORITY}; policy accept;"
    );
    gateway_return(&mut out, spec);
    pod_jumps(&mut out, spec, "pod_redirect");
    out.push_str("\t}\n\n");

    out.push_str("\tchain pod_redirect {\n");
    if let Some(dns) = spec.dns_port {
        let _ = writeln!(
            out,
            "\t\t{nfproto}meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns} comment \"DNS to the DNS proxy\""
        );
    }
    let _ = writeln!(
        out,
        "\t\t{nfproto}meta l4proto tcp redirect to :{}",
        spec.tcp_port
    );
    out.push_str("\t}\n\n");

    // After NAT: whatever was redirected now goes to a local address at one of our ports.
    out.push_str("\tchain filter_prerouting {\n");
    out.push_str("\t\ttype filter hook prerouting priority filter; policy accept;\n");
    gateway_return(&mut out, spec);
    pod_jumps(&mut out, spec, "pod_enforce");
    out.push_str("\t}\n\n");

    out.push_str("\tchain pod_enforce {\n");
    pod_common_accepts(&mut out, spec);
    if let Some(dns) = spec.dns_port {
        let _ = writeln!(
            out,
            "\t\t{nfproto}meta l4proto {{ tcp, udp }} th dport {dns} fib daddr type local accept comment \"redirected to the DNS proxy\""
        );
    }
    let _ = writeln!(
        out,
        "\t\t{nfproto}meta l4proto tcp th dport {} fib daddr type local accept comment \"redirected to the gateway\"",
        spec.tcp_port
    );
    final_drop(&mut out);
    out.push_str("\t}\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(families: IpFamilies, ifaces: &[&str], cidrs: &[&str]) -> CaptureSpec {
        CaptureSpec {
            families,
            pod_interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            pod_cidrs: cidrs.iter().map(|s| s.parse().unwrap()).collect(),
            ..CaptureSpec::default()
        }
    }

    #[test]
    fn full_mask_uses_plain_marks() {
        assert_eq!(mark_match(0x10, u32::MAX), "meta mark 0x00000010");
        assert_eq!(mark_mismatch(0x10, u32::MAX), "meta mark != 0x00000010");
        assert_eq!(
            mark_mismatch(0x2000, 0x3000),
            "meta mark & 0x00003000 != 0x00002000"
        );
        assert_eq!(mark_set(0x10, u32::MAX), "meta mark set 0x00000010");
        assert_eq!(
            mark_set(0x1000, 0x3000),
            "meta mark set meta mark & 0xffffcfff | 0x00001000"
        );
    }

    #[test]
    fn host_bits_are_dropped_and_duplicates_merged_by_nft() {
        let r = render(&spec(IpFamilies::Ipv4, &[], &["10.1.2.3/16"])).unwrap();
        assert!(r.nft.contains("elements = { 10.1.0.0/16 }"), "{}", r.nft);
    }

    #[test]
    fn duplicate_interfaces_are_rendered_once() {
        let r = render(&spec(IpFamilies::Dual, &["eth1", "eth1"], &[])).unwrap();
        assert_eq!(r.nft.matches("iifname \"eth1\"").count(), 1, "{}", r.nft);
    }

    #[test]
    fn invalid_specs_do_not_render() {
        assert!(matches!(
            render(&spec(IpFamilies::Dual, &["x\" accept"], &[])),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn shell_form_lists_ip_commands_then_nft() {
        let r = render(&spec(IpFamilies::Ipv4, &["veth*"], &[])).unwrap();
        let sh = r.to_shell();
        assert!(
            sh.starts_with(
                "ip -4 route replace local 0.0.0.0/0 dev lo table 1287\n\
             ip -4 rule add pref 100 fwmark 0x1000/0x3000 lookup 1287\n\
             nft -f - <<'EOF'\n"
            ),
            "{sh}"
        );
        assert!(sh.ends_with("}\nEOF\n"), "{sh}");
    }
}
