//! `capture:`: how pod traffic reaches the gateway (the rules `chokepoint-redirect` installs).
//!
//! The mode is [`chokepoint_redirect::CaptureMode`] itself, not a copy: `chokepoint-redirect`
//! is a leaf crate (it depends on no other Chokepoint crate), so this crate may depend on it
//! and the gateway hands the validated mode to the capture rules unchanged. The other
//! direction would make the capture rules compile the policy API.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use chokepoint_redirect::CaptureMode;

use super::defaults;
use super::field::{self, Choice};
use crate::compile::Checker;
use crate::source::child;

impl Choice for CaptureMode {
    const WHAT: &'static str = "capture mode";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("tproxy", CaptureMode::Tproxy),
        ("redirect", CaptureMode::Redirect),
    ];
}

/// Where allowed L4 flows are relayed (`capture.l4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum L4Path {
    /// Every flow goes through the gateway's proxy.
    Proxy,
    /// A new flow's first packet waits in a kernel queue for the gateway's verdict; an allowed
    /// flow that needs no look at its bytes then stays in the kernel (TPROXY mode only).
    Kernel,
}

impl Choice for L4Path {
    const WHAT: &'static str = "L4 path";
    const NAMES: &'static [(&'static str, Self)] =
        &[("proxy", L4Path::Proxy), ("kernel", L4Path::Kernel)];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    /// nftables TPROXY + policy routing (TCP and UDP; keeps the pod's source IP upstream), or
    /// REDIRECT + SO_ORIGINAL_DST (TCP only, UDP is dropped; for hosts where TPROXY cannot be
    /// used).
    pub mode: CaptureMode,
    /// Pod-facing interfaces (nftables `iifname` patterns, `*` allowed at the end).
    pub interfaces: Vec<String>,
    /// Pod address ranges.
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
    /// fwmark that routes captured packets and transparent replies to the local table.
    pub capture_mark: u32,
    /// SO_MARK of the gateway's own upstream sockets: never captured.
    pub gateway_mark: u32,
    /// The mark bits Chokepoint owns; both marks lie inside it, other bits are preserved.
    pub mark_mask: u32,
    /// Routing table holding the `local` default routes.
    pub route_table: u32,
    /// Preference of the `fwmark → routeTable` ip rule.
    pub rule_priority: u32,
    /// Install the rules at start (and take over rules an earlier gateway left).
    pub install: bool,
    /// Remove the rules on SIGTERM/SIGINT (default). `false` keeps them, like a crash does:
    /// pod egress stays failed closed until the next gateway takes over — what a DaemonSet
    /// wants, where SIGTERM means an upgrade or an eviction, not "stop filtering". Remove them
    /// for good with `chokepoint redirect --remove`.
    pub remove_on_shutdown: bool,
    /// `proxy` (default) or `kernel` (the fast path).
    pub l4: L4Path,
    /// The first NFQUEUE number of the fast path.
    pub queue: u16,
    /// How many queues (one reader thread each).
    pub queues: u16,
    /// The ct mark bits holding a fast-path flow's state (one run of at least 4 bits, outside
    /// `markMask`).
    pub flow_mark_mask: u32,
    /// The two ct mark bits that note which ends of a fast-path TCP connection closed (FIN or
    /// RST), outside `markMask` and `flowMarkMask`: the gateway gives the connection's place
    /// in `limits:` back when both are set.
    pub close_mark_mask: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawCapture {
    mode: Option<String>,
    interfaces: Option<Vec<String>>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
    capture_mark: Option<i64>,
    gateway_mark: Option<i64>,
    mark_mask: Option<i64>,
    route_table: Option<i64>,
    rule_priority: Option<i64>,
    install: Option<bool>,
    remove_on_shutdown: Option<bool>,
    l4: Option<String>,
    queue: Option<i64>,
    queues: Option<i64>,
    flow_mark_mask: Option<i64>,
    close_mark_mask: Option<i64>,
}

pub(super) fn validate(c: &mut Checker, raw: RawCapture) -> Option<Capture> {
    let mode = field::choice(
        c,
        "/capture/mode",
        raw.mode.as_deref(),
        defaults::CAPTURE_MODE,
    );
    let interfaces = raw.interfaces.unwrap_or_default();
    for (i, name) in interfaces.iter().enumerate() {
        let body = name.strip_suffix('*').unwrap_or(name);
        if body.is_empty()
            || body.len() > 15
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            c.error(
                child("/capture/interfaces", i),
                format!(
                    "`{name}` is not an interface name (at most 15 characters, `*` only at the end)"
                ),
            );
        }
    }
    let pod_cidrs: Vec<Option<IpNet>> = raw
        .pod_cidrs
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| crate::compile::masked_cidr(c, &child("/capture/podCIDRs", i), s))
        .collect();
    if interfaces.is_empty() && pod_cidrs.is_empty() {
        c.error("/capture", "set `interfaces` (pod-facing interfaces) or `podCIDRs` (pod address ranges), or both: otherwise nothing is captured");
    }
    // Both families are always served: without interfaces, a family with no range would be a
    // family-sized hole in the capture (forged or not, its packets would pass uncaptured).
    if interfaces.is_empty() && !pod_cidrs.is_empty() && pod_cidrs.iter().all(Option::is_some) {
        let nets: Vec<&IpNet> = pod_cidrs.iter().flatten().collect();
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            if !nets.iter().any(|n| matches!(n, IpNet::V4(_)) == v4) {
                c.error("/capture/podCIDRs", format!("no {family} range and no `interfaces`: {family} from pods would not be captured at all; set `interfaces` (recommended: it also binds pod addresses to their interfaces) or add this node's {family} pod range"));
            }
        }
    }
    let capture_mark = mark(
        c,
        "/capture/captureMark",
        raw.capture_mark,
        defaults::CAPTURE_MARK,
    );
    let gateway_mark = mark(
        c,
        "/capture/gatewayMark",
        raw.gateway_mark,
        defaults::GATEWAY_MARK,
    );
    let mark_mask = mark(c, "/capture/markMask", raw.mark_mask, defaults::MARK_MASK);
    if capture_mark.is_some() && capture_mark == gateway_mark {
        c.error(
            "/capture/gatewayMark",
            "`gatewayMark` must differ from `captureMark`",
        );
    }
    if let Some(mask) = mark_mask {
        for (p, m) in [
            ("/capture/captureMark", capture_mark),
            ("/capture/gatewayMark", gateway_mark),
        ] {
            if let Some(m) = m
                && m & !mask != 0
            {
                c.error(
                    p,
                    format!("mark {m:#x} has bits outside `markMask` {mask:#x}"),
                );
            }
        }
    }
    let rule_priority = field::bounded(
        c,
        "/capture/rulePriority",
        raw.rule_priority,
        defaults::RULE_PRIORITY.into(),
        1..=32765,
        "use 1 to 32765 (before the main table's rule)",
    );
    let route_table = mark(
        c,
        "/capture/routeTable",
        raw.route_table,
        defaults::ROUTE_TABLE,
    );
    if let Some(t) = route_table
        && matches!(t, 253..=255)
    {
        c.error(
            "/capture/routeTable",
            format!("table {t} is a system table (default/main/local); pick another"),
        );
    }
    // REDIRECT has no fast path, so its default is the proxy; TPROXY's is the kernel.
    let l4_default = match mode {
        Some(CaptureMode::Redirect) => L4Path::Proxy,
        _ => defaults::L4_PATH,
    };
    let l4 = field::choice(c, "/capture/l4", raw.l4.as_deref(), l4_default);
    if l4 == Some(L4Path::Kernel) && mode == Some(CaptureMode::Redirect) {
        c.error(
            "/capture/l4",
            "`kernel` needs `mode: tproxy` (REDIRECT captures before the Service DNAT); use `l4: proxy`",
        );
    }
    let queue = field::bounded(
        c,
        "/capture/queue",
        raw.queue,
        defaults::QUEUE.into(),
        0..=65535,
        "use a queue number from 0 to 65535",
    );
    let queues = field::bounded(
        c,
        "/capture/queues",
        raw.queues,
        defaults::QUEUES.into(),
        1..=64,
        "use 1 to 64 queues (one reader thread each)",
    );
    if let (Some(q), Some(n)) = (queue, queues)
        && q + n > 65536
    {
        c.error(
            "/capture/queues",
            format!("queues {q}..{} run past 65535", q + n - 1),
        );
    }
    let flow_mark_mask = mark(
        c,
        "/capture/flowMarkMask",
        raw.flow_mark_mask,
        defaults::FLOW_MARK_MASK,
    );
    if let Some(m) = flow_mark_mask {
        if m.count_ones() < 4 || (m >> m.trailing_zeros()).trailing_ones() != m.count_ones() {
            c.error(
                "/capture/flowMarkMask",
                format!("{m:#x} must be one run of at least 4 bits (e.g. 0x0fff0000)"),
            );
        } else {
            outside_of(c, "/capture/flowMarkMask", m, &[("markMask", mark_mask)]);
        }
    }
    let close_mark_mask = mark(
        c,
        "/capture/closeMarkMask",
        raw.close_mark_mask,
        defaults::CLOSE_MARK_MASK,
    );
    if let Some(m) = close_mark_mask {
        if m.count_ones() != 2 {
            c.error(
                "/capture/closeMarkMask",
                format!("{m:#x} must be exactly 2 bits (e.g. 0x30000000)"),
            );
        } else {
            outside_of(
                c,
                "/capture/closeMarkMask",
                m,
                &[("markMask", mark_mask), ("flowMarkMask", flow_mark_mask)],
            );
        }
    }
    Some(Capture {
        l4: l4?,
        queue: queue? as u16,
        queues: queues? as u16,
        flow_mark_mask: flow_mark_mask?,
        close_mark_mask: close_mark_mask?,
        mode: mode?,
        interfaces,
        pod_cidrs: pod_cidrs.into_iter().collect::<Option<Vec<_>>>()?,
        capture_mark: capture_mark?,
        gateway_mark: gateway_mark?,
        mark_mask: mark_mask?,
        route_table: route_table?,
        rule_priority: rule_priority? as u32,
        install: raw.install.unwrap_or(defaults::INSTALL),
        remove_on_shutdown: raw
            .remove_on_shutdown
            .unwrap_or(defaults::REMOVE_ON_SHUTDOWN),
    })
}

/// Reports `m` (the value at `p`) if it shares bits with the first of `others` (a setting's
/// name and its value, if valid) it overlaps.
fn outside_of(c: &mut Checker, p: &str, m: u32, others: &[(&str, Option<u32>)]) {
    if let Some((name, other)) = others
        .iter()
        .find_map(|&(name, other)| other.filter(|o| o & m != 0).map(|o| (name, o)))
    {
        c.error(
            p,
            format!("{m:#x} overlaps `{name}` {other:#x}; pick bits outside it"),
        );
    }
}

/// A fwmark (or a table number): 1 to `u32::MAX`.
fn mark(c: &mut Checker, p: &str, v: Option<i64>, default: u32) -> Option<u32> {
    let Some(n) = v else {
        return Some(default);
    };
    match u32::try_from(n) {
        Ok(m) if m != 0 => Some(m),
        _ => {
            c.error(p, format!("{n} is not a valid mark (1 to 4294967295)"));
            None
        }
    }
}
