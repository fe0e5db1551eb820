//! Rendering a [`CaptureSpec`] into nft text and `ip` commands.
//!
//! The nft text is a complete `nft -f -` script: it declares the table, deletes it and declares
//! it again with its full contents, so one transaction replaces whatever `inet chokepoint` was
//! there (or creates it) and nothing else in the ruleset is touched. What [`render`] returns is
//! byte for byte what [`install`](crate::install) applies.
//!
//! # What a pod cannot get past
//!
//! A pod is root in its own network namespace with `NET_RAW`: it writes any source address,
//! any direction, any protocol. The pod chain (`pod_capture`, `pod_enforce` in REDIRECT
//! mode) is built so that none of that opens a way around the gateway:
//!
//! 1. **Reverse path first.** `fib saddr . iif oif missing` drops (counts, logs at most 10 a
//!    second) every pod packet whose source the node would not route back out of the
//!    interface it came in on: another pod's address, an outside host's, the node's own
//!    (local routes never match). With one interface per pod (Calico, Cilium, the lab) this
//!    binds each pod to its own addresses. On a shared bridge it binds the bridge's pods
//!    only to the bridge's range: the CNI's own anti-spoofing is then what separates them.
//! 2. **Reply direction only on connections that started on the other side.** conntrack
//!    calls a packet a "reply" whenever it matches the reverse tuple of an entry, and a pod
//!    creates entries itself: one forged "query" from an outside host to the pod is consumed
//!    by the gateway (TPROXY) and confirmed, and the pod's real datagrams back on that tuple
//!    would then be replies. So the chains record where each connection began, in the ct
//!    mark, on its first packet: the gateway's own connections get the gateway mark (in
//!    `output`), every connection whose first packet came neither from a pod nor from the
//!    gateway (another interface, another local process) gets the *inbound* mark (the
//!    union of the two marks, which matches neither). A pod's first packets never reach
//!    those rules: the pod jumps come first and the pod chain always ends in a verdict. A
//!    reply-direction packet of a pod passes undecided only on an inbound connection, on a
//!    connection of one of the gateway's transparent sockets (`socket transparent`: the
//!    socket is the gateway's, the answer B's own by rule 1), or to a local socket of the
//!    gateway's own connections (its DNS upstream on this node). Anything else — a forged
//!    entry, another pod's session, the DNS proxy's upstream sockets answered with a spoofed
//!    source — is decided as the pod's own egress or dropped.
//! 3. **ND only on the link.** Router and neighbour solicitations and neighbour
//!    advertisements pass with hop limit 255 to a link-local, link-scope multicast or node
//!    address; no other ICMP from pods passes (ICMP errors about connections into pods are
//!    replies of those connections, rule 2).
//! 4. **Fail closed.** Pod traffic no gateway socket took ends in the final drop.
//!
//! None of this depends on where the capture sits relative to a Service DNAT: the
//! reverse-path check reads the source and the input interface, which a DNAT does not
//! change, and the ct marks belong to the connection, whatever its tuples become.

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::Error;
use crate::addressed::{ADDRESSED_SIZE, ADDRESSED_TIMEOUT_SECONDS};
use crate::cmd;
use crate::fast_path::{CURRENT_SET, FastPath};
use crate::queue_rule::{NOTE_V4, NOTE_V6, Note, QUEUE_CHAIN};
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
pub(crate) const TPROXY_CHAINS: [&str; 6] = [
    "prerouting",
    SPOOFED_CHAIN,
    "pod_capture",
    "output",
    UNSERVED_CHAIN,
    "pod_unserved",
];
pub(crate) const REDIRECT_CHAINS: [&str; 6] = [
    SPOOFED_CHAIN,
    "nat_prerouting",
    "pod_redirect",
    "filter_prerouting",
    "pod_enforce",
    "output",
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

/// Priority of the TPROXY mode's NAT chain for Service ports without a ready endpoint: after
/// kube-proxy's DNAT (which binds every connection it translates, so this chain sees only what
/// it left alone) and before the capture chain.
pub(crate) const UNSERVED_PRIORITY: &str = "dstnat + 5";

/// The TPROXY mode's NAT chain for Service ports without a ready endpoint (see
/// [`unserved_services`]).
pub(crate) const UNSERVED_CHAIN: &str = "unserved_services";
/// The fast path's chain that notes closing ends (see [`fast_closing_chain`]).
pub(crate) const CLOSING_CHAIN: &str = "fast_closing";

/// The sets of `ClusterIP . protocol . port` of Service ports without a ready endpoint, per
/// family; the gateway keeps them ([`crate::set_unserved`]).
pub(crate) const UNSERVED_SETS: [(&str, &str, &str); 2] = [
    ("unserved_v4", "ipv4_addr", "ip"),
    ("unserved_v6", "ipv6_addr", "ip6"),
];

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

/// The mark a connection carries in conntrack when its first packet came neither from a pod
/// nor from the gateway: the union of the two marks, which matches neither of them (see
/// [`CaptureSpec::validate`]), so a CNI that copies the ct mark into the packet mark never
/// turns it into "captured" or "the gateway's own".
pub(crate) fn inbound_mark(spec: &CaptureSpec) -> u32 {
    (spec.capture_mark | spec.gateway_mark) & spec.mark_mask
}

fn ct_mark_match(mark: u32, mask: u32) -> String {
    mark_match(mark, mask).replace("meta mark", "ct mark")
}

fn ct_mark_set(mark: u32, mask: u32) -> String {
    mark_set(mark, mask).replace("meta mark", "ct mark")
}

/// Name of the chain that counts, logs (rate-limited) and drops packets from pods whose
/// source address fails the reverse-path check, and of its named counter.
pub(crate) const SPOOFED_CHAIN: &str = "spoofed_source";
/// `nft list counter inet chokepoint spoofed_sources`: packets dropped as spoofed.
pub const SPOOFED_COUNTER: &str = "spoofed_sources";
/// Prefix of the kernel log line for a spoofed packet (at most 10 a second).
pub const SPOOFED_LOG_PREFIX: &str = "chokepoint spoofed source: ";

/// The named counter of spoofed packets (declared before the chains that use it).
fn spoofed_counter(out: &mut String) {
    let _ = writeln!(out, "\tcounter {SPOOFED_COUNTER} {{\n\t}}\n");
}

/// The chain a spoofed pod packet ends in: counted, logged at most 10 times a second (a
/// kernel drop cannot be audited per packet by the gateway), dropped.
fn spoofed_chain(out: &mut String) {
    let _ = writeln!(
        out,
        "\tchain {SPOOFED_CHAIN} {{\n\
         \t\tcounter name \"{SPOOFED_COUNTER}\"\n\
         \t\tlimit rate 10/second burst 20 packets log prefix \"{SPOOFED_LOG_PREFIX}\" level warn\n\
         \t\tdrop\n\
         \t}}\n"
    );
}

/// First rule of the pod chain: a pod's source address must be one the node routes back out
/// of the interface the packet came in on (strict reverse path, both families). It binds pod
/// addresses to their interfaces, so a pod can neither use another pod's address nor forge
/// an outside host's or the node's (local addresses never pass). It looks only at the source
/// and the input interface, which a DNAT before or after it does not change.
fn reverse_path_check(out: &mut String) {
    let _ = writeln!(
        out,
        "\t\tfib saddr . iif oif missing jump {SPOOFED_CHAIN} comment \"source not routed via its input interface\""
    );
}

/// Which reply-direction packets of a pod pass without being decided. Never "any reply":
/// the pod itself creates conntrack entries with forged packets (an outside host's "query"
/// to the pod that the gateway consumes), so only the origin of the connection counts:
/// - one that started outside the pods and the gateway (ct mark [`inbound_mark`], set on its
///   first packet in the base chain or in `output`) is a connection *into* the pod: its
///   replies, and ICMP errors about it, are not egress;
/// - one the gateway opened (ct mark gateway) gets replies only to a local socket of the
///   node (its DNS upstream on this node, say), and only from the address it was opened to,
///   which the reverse-path check has tied to its interface.
///
/// Everything else of the reply direction is decided like new egress: a forged entry gives
/// nothing, the pod's "reply" reaches the gateway's listener as that pod's own flow.
fn pod_reply_accepts(out: &mut String, spec: &CaptureSpec) {
    let inbound = ct_mark_match(inbound_mark(spec), spec.mark_mask);
    let gateway = ct_mark_match(spec.gateway_mark, spec.mark_mask);
    let _ = writeln!(
        out,
        "\t\tct direction reply {inbound} accept comment \"replies on connections into pods\""
    );
    let _ = writeln!(
        out,
        "\t\tct direction reply {gateway} fib daddr type local accept comment \"replies to the gateway's own connections\""
    );
}

/// Neighbour discovery from pods: only the three types a host sends, only with hop limit 255
/// (so never from beyond the link, RFC 4861) and only to a link-local or node address.
/// Everything else of ICMPv6 (and all of ICMPv4) from pods is neither captured nor
/// accepted: the final drop takes it.
fn neighbour_discovery(out: &mut String, spec: &CaptureSpec) {
    if !spec.families.v6() {
        return;
    }
    let nd = "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255";
    let _ = writeln!(
        out,
        "\t\t{nd} ip6 daddr {{ fe80::/10, ff02::1, ff02::2, ff02::1:ff00:0/104 }} accept comment \"IPv6 neighbour discovery on the link\""
    );
    let _ = writeln!(
        out,
        "\t\t{nd} fib daddr type local accept comment \"IPv6 neighbour discovery to this node\""
    );
}

/// In a base chain, after the pod jumps (so never for a pod's packet): a connection whose
/// first packet came from elsewhere is one *into* the pods, should it reach one.
fn inbound_connection_mark(out: &mut String, spec: &CaptureSpec) {
    let _ = writeln!(
        out,
        "\t\tct state new {} comment \"connections that start outside the pods\"",
        ct_mark_set(inbound_mark(spec), spec.mark_mask)
    );
}

/// In `output`: connections the node opens are the gateway's (its mark) or, for any other
/// local process (kubelet probes, hostNetwork clients), connections into the pods.
fn local_connection_marks(out: &mut String, spec: &CaptureSpec) {
    let gateway_packet = mark_match(spec.gateway_mark, spec.mark_mask);
    let _ = writeln!(
        out,
        "\t\tct direction original {gateway_packet} {} comment \"connections the gateway opens\"",
        ct_mark_set(spec.gateway_mark, spec.mark_mask)
    );
    let _ = writeln!(
        out,
        "\t\tct state new {} {} comment \"connections other local processes open\"",
        mark_mismatch(spec.gateway_mark, spec.mark_mask),
        ct_mark_set(inbound_mark(spec), spec.mark_mask)
    );
}

/// The rules every pod chain starts with, in this order: the reverse-path check, the reply
/// directions that are not egress, neighbour discovery.
fn pod_common_accepts(out: &mut String, spec: &CaptureSpec) {
    reverse_path_check(out);
    pod_reply_accepts(out, spec);
    neighbour_discovery(out, spec);
}

/// Service ports without a ready endpoint, in TPROXY mode. kube-proxy refuses new connections
/// to them in its `input`/`forward`/`output` filter chains; a captured packet is delivered
/// locally, so it would meet the `input` reject, whose ICMP error from the ClusterIP the kernel
/// does not send: the pod would wait for its timeout and the gateway would never know. These
/// connections get the gateway's listener port instead (the address stays the ClusterIP, so
/// kube-proxy's check no longer matches): the gateway sees the ClusterIP in `SO_ORIGINAL_DST`
/// or conntrack, refuses the connection (TCP reset, UDP dropped) and audits it.
fn unserved_services(out: &mut String, spec: &CaptureSpec) {
    for (name, ty, _) in unserved_families(spec) {
        let _ = writeln!(
            out,
            "\tset {name} {{\n\t\ttype {ty} . inet_proto . inet_service\n\t}}\n"
        );
    }
    let _ = writeln!(out, "\tchain {UNSERVED_CHAIN} {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook prerouting priority {UNSERVED_PRIORITY}; policy accept;"
    );
    pod_jumps(out, spec, "pod_unserved");
    out.push_str("\t}\n\n\tchain pod_unserved {\n");
    for (name, _, family) in unserved_families(spec) {
        for (l4, port) in [("tcp", spec.tcp_port), ("udp", spec.udp_port)] {
            let _ = writeln!(
                out,
                "\t\tmeta l4proto {l4} {family} daddr . meta l4proto . th dport @{name} dnat {family} to {family} daddr:{port}"
            );
        }
    }
    out.push_str("\t}\n\n");
}

/// The unserved-port sets of the families `spec` serves.
pub(crate) fn unserved_families(
    spec: &CaptureSpec,
) -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    let families = spec.families;
    UNSERVED_SETS.into_iter().filter(move |(_, _, f)| {
        if *f == "ip" {
            families.v4()
        } else {
            families.v6()
        }
    })
}

/// The fast path's set (the current generation) and the chain the queue rule goes into
/// ([`crate::queue_rule`] adds it: nft's text cannot write it on kernels without nftables'
/// own `queue`).
fn fast_path_declarations(out: &mut String, spec: &CaptureSpec, fast: &FastPath) {
    let _ = writeln!(
        out,
        "\tset {CURRENT_SET} {{\n\t\ttype mark\n\t\telements = {{ {:#010x} }}\n\t}}\n",
        fast.marks().allowed(fast.generation)
    );
    // The notes' chains are empty here, like the queue chain: `crate::queue_rule` adds their
    // rules, which nft 1.0.6 writes wrongly.
    for note in addressed_families(spec) {
        let (map, address, chain) = (note.map, note.address_type, note.chain);
        let _ = writeln!(
            out,
            "\tmap {map} {{\n\t\ttype inet_service . inet_service . inet_proto . {address} : inet_service . {address}\n\t\tsize {ADDRESSED_SIZE}\n\t\tflags dynamic,timeout\n\t\ttimeout {ADDRESSED_TIMEOUT_SECONDS}s\n\t}}\n\n\tchain {chain} {{\n\t}}\n"
        );
    }
    let _ = writeln!(out, "\tchain {QUEUE_CHAIN} {{\n\t}}\n");
    fast_closing_chain(out, fast);
}

/// The chain that notes which ends of a fast-path TCP flow closed ([`CloseMarks`]): each end's
/// FIN sets its bit, a RST both. The flow announces only its end until then (the verdict's
/// `ct event set destroy`); the rule that sets the second bit makes it announce mark changes
/// instead, so the change it makes is the connection's one announcement, and its end, when
/// `TIME_WAIT` runs out, is not announced (its place is back already). A retransmitted FIN
/// changes nothing and announces nothing. (`"mark"` is quoted: nft 1.0.6 reads the bare word
/// as the start of a `mark` expression.)
///
/// [`CloseMarks`]: crate::CloseMarks
fn fast_closing_chain(out: &mut String, fast: &FastPath) {
    let c = fast.closes();
    let (original, reply, both) = (c.original(), c.reply(), c.mask());
    let announce = "ct event set \"mark\"";
    let _ = writeln!(
        out,
        "\tchain {CLOSING_CHAIN} {{\n\t\ttcp flags & rst != 0 {announce} ct mark set ct mark | {both:#010x} return comment \"fast path: a reset closes both ends\"\n\t\tct direction original ct mark & {reply:#010x} != 0x00000000 {announce}\n\t\tct direction reply ct mark & {original:#010x} != 0x00000000 {announce}\n\t\tct direction original ct mark set ct mark | {original:#010x}\n\t\tct direction reply ct mark set ct mark | {reply:#010x}\n\t}}\n"
    );
}

/// The match for a flow allowed on the fast path at any generation.
fn allowed_at_any(fast: &FastPath) -> String {
    let m = fast.marks();
    format!(
        "ct mark & {:#010x} {:#010x}-{:#010x}",
        m.mask(),
        m.allowed(1),
        m.allowed(m.max_generation())
    )
}

/// A FIN or RST of a flow allowed on the fast path (at any generation) goes through
/// [`fast_closing_chain`]; in every chain such a flow's packets pass, before they are accepted.
fn fast_closing_jump(out: &mut String, fast: &FastPath) {
    let _ = writeln!(
        out,
        "\t\tmeta l4proto tcp tcp flags & (fin | rst) != 0 {} jump {CLOSING_CHAIN} comment \"fast path: note the end that closed\"",
        allowed_at_any(fast)
    );
}

/// Flows the gateway revoked (denied after allowing them): TCP is reset, the rest dropped,
/// from both sides.
fn revoked(out: &mut String, fast: &FastPath, whose: &str) {
    let m = fast.marks();
    let state = format!("ct mark & {:#010x} == {:#010x}", m.mask(), m.revoked());
    let _ = writeln!(
        out,
        "\t\t{state} meta l4proto tcp reject with tcp reset comment \"fast path: {whose} the policies deny now\""
    );
    let _ = writeln!(out, "\t\t{state} drop");
}

/// In the pod chain, after the reverse-path check: the gateway's decision from the queue
/// (packet mark) is copied to the flow (ct mark); flows allowed at the current generation
/// pass, as do the replies of allowed flows (a pod answering another pod's allowed flow);
/// revoked ones are refused.
fn fast_path_decided(out: &mut String, fast: &FastPath) {
    let m = fast.marks();
    let mask = m.mask();
    let _ = writeln!(
        out,
        "\t\tmeta mark & {mask:#010x} != 0x00000000 ct mark set meta mark & {mask:#010x} ct event set destroy comment \"fast path: the gateway's decision, from the queue; the flow announces only its end\""
    );
    let _ = writeln!(
        out,
        "\t\tmeta mark & {mask:#010x} != 0x00000000 meta mark set meta mark & {:#010x}",
        !mask
    );
    fast_closing_jump(out, fast);
    let _ = writeln!(
        out,
        "\t\tct mark & {mask:#010x} == @{CURRENT_SET} accept comment \"fast path: flows the policies in force allow\""
    );
    let _ = writeln!(
        out,
        "\t\tct direction reply {} accept comment \"fast path: replies of allowed flows\"",
        allowed_at_any(fast)
    );
    revoked(out, fast, "flows");
}

/// The notes (see [`crate::addressed`]) of the families `spec` serves.
pub(crate) fn addressed_families(spec: &CaptureSpec) -> impl Iterator<Item = Note> {
    let families = spec.families;
    [
        families.v4().then_some(NOTE_V4),
        families.v6().then_some(NOTE_V6),
    ]
    .into_iter()
    .flatten()
}

/// New flows (and flows allowed at an older generation) wait in the queue for the gateway's
/// decision, except those it told the proxy to take (the proxy state). A new flow kube-proxy
/// translated is flagged with the proxy state in the packet mark, and the ClusterIP it was
/// addressed to is written into a map for the reader (see [`crate::addressed`]): the flag
/// first, so that a full map leaves the reader without an answer, and it hands the flow to
/// the proxy, rather than deciding it as untranslated.
fn fast_path_queue(out: &mut String, spec: &CaptureSpec, fast: &FastPath) {
    let m = fast.marks();
    // Tells the reader a queued packet is a live flow's (allowed at an older generation), not
    // a new one's: the whole state field set in the packet mark, which the verdict replaces.
    let _ = writeln!(
        out,
        "\t\t{} meta mark set meta mark | {:#010x} comment \"fast path: a live flow, re-decided\"",
        allowed_at_any(fast),
        m.mask()
    );
    for note in addressed_families(spec) {
        let _ = writeln!(
            out,
            "\t\tmeta nfproto {} ct mark & {:#010x} == 0x00000000 ct status dnat ct direction original meta l4proto {{ tcp, udp }} meta mark set meta mark & {:#010x} | {:#010x} jump {} comment \"fast path: a new flow kube-proxy translated; note where the pod sent it\"",
            note.nfproto,
            m.mask(),
            !m.mask(),
            m.proxy(),
            note.chain
        );
    }
    let _ = writeln!(
        out,
        "\t\tct mark & {:#010x} != {:#010x} ct direction original meta l4proto {{ tcp, udp }} jump {QUEUE_CHAIN} comment \"fast path: new flows wait for the gateway's decision\"",
        m.mask(),
        m.proxy()
    );
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
    spoofed_counter(&mut out);
    unserved_services(&mut out, spec);
    if let Some(fast) = &spec.fast_path {
        fast_path_declarations(&mut out, spec, fast);
    }

    out.push_str("\tchain prerouting {\n");
    let _ = writeln!(
        out,
        "\t\ttype filter hook prerouting priority {TPROXY_PRIORITY}; policy accept;"
    );
    gateway_return(&mut out, spec);
    pod_jumps(&mut out, spec, "pod_capture");
    if let Some(fast) = &spec.fast_path {
        revoked(&mut out, fast, "the other side of flows");
        fast_closing_jump(&mut out, fast);
        // The far side of a flow the kernel carries: nothing below is for it (it has no
        // gateway socket), so it skips the socket lookup of the last rule.
        let _ = writeln!(
            out,
            "\t\t{} accept comment \"fast path: the other side of allowed flows\"",
            allowed_at_any(fast)
        );
    }
    inbound_connection_mark(&mut out, spec);
    let _ = writeln!(out, "\t\t{transparent_reply}");
    out.push_str("\t}\n\n");

    spoofed_chain(&mut out);
    out.push_str("\tchain pod_capture {\n");
    reverse_path_check(&mut out);
    // A pod answering one of the gateway's transparent upstream sockets, e.g. pod A's
    // connection to pod B on the same node, which the gateway made as pod A. The socket is
    // the gateway's; the reverse-path check has made sure the answer is B's own.
    let _ = writeln!(out, "\t\tct direction reply {transparent_reply}");
    pod_reply_accepts(&mut out, spec);
    neighbour_discovery(&mut out, spec);
    if let Some(fast) = &spec.fast_path {
        fast_path_decided(&mut out, fast);
    }
    // `tproxy` first looks for an established socket of the flow, then for the listener; when
    // it finds neither it does nothing and the rule's remaining statements are skipped.
    if let Some(dns) = spec.dns_port {
        let _ = writeln!(
            out,
            "\t\t{nfproto}meta l4proto {{ tcp, udp }} th dport 53 tproxy {tproxy_family}to :{dns} {set_capture} accept comment \"DNS to the DNS proxy\""
        );
    }
    if let Some(fast) = &spec.fast_path {
        fast_path_queue(&mut out, spec, fast);
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
    let ct_gateway = ct_mark_match(spec.gateway_mark, spec.mark_mask);
    out.push_str("\tchain output {\n");
    out.push_str("\t\ttype route hook output priority mangle; policy accept;\n");
    // Only connections the gateway opened: its answers to pods (reply sockets, the reply
    // direction of a pod's flow) carry the gateway mark too and must go out to the pod.
    local_connection_marks(&mut out, spec);
    let not_gateway_packet = mark_mismatch(spec.gateway_mark, spec.mark_mask);
    let _ = writeln!(
        out,
        "\t\tct direction reply {ct_gateway} {not_gateway_packet} {set_capture} comment \"local replies to the gateway's transparent upstream sockets\""
    );
    // A local process at the far end of a pod's fast-path flow closes it from here.
    if let Some(fast) = &spec.fast_path {
        fast_closing_jump(&mut out, fast);
    }
    out.push_str("\t}\n");
    if let Some(fast) = &spec.fast_path {
        challenges_untracked(&mut out, fast);
    }
    out.push_str("}\n");
    out
}

/// The challenge SYNs that wake a revoked connection's two ends (`crate::challenge`) leave
/// outside conntrack: each must reach its end with the addresses that end knows (towards the
/// pod from the ClusterIP it addressed, towards a Service's backend from the pod), which
/// conntrack would neither translate (a SYN on an established entry is invalid to it) nor,
/// for a SYN from the ClusterIP, let out at all (its reply tuple is the flow's own).
fn challenges_untracked(out: &mut String, fast: &FastPath) {
    let m = fast.marks();
    let _ = writeln!(
        out,
        "\n\tchain challenge_untracked {{\n\t\ttype filter hook output priority raw; policy accept;\n\t\tmeta mark & {:#010x} == {:#010x} notrack comment \"fast path: challenge SYNs to the ends of revoked connections\"\n\t}}",
        m.mask(),
        m.revoked()
    );
}

fn render_redirect(spec: &CaptureSpec) -> String {
    let (nfproto, _) = family_qualifier(spec.families);
    let mut out = String::new();
    header(&mut out, "REDIRECT");
    pod_sets(&mut out, spec);
    spoofed_counter(&mut out);

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
    inbound_connection_mark(&mut out, spec);
    out.push_str("\t}\n\n");

    spoofed_chain(&mut out);
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
    out.push_str("\t}\n\n");

    out.push_str("\tchain output {\n");
    out.push_str("\t\ttype filter hook output priority mangle; policy accept;\n");
    local_connection_marks(&mut out, spec);
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
        for chain in ["pod_capture", "pod_unserved"] {
            let jump = format!("iifname \"eth1\" jump {chain}");
            assert_eq!(r.nft.matches(&jump).count(), 1, "{}", r.nft);
        }
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

    #[test]
    fn every_pod_chain_starts_with_the_reverse_path_check() {
        for mode in [CaptureMode::Tproxy, CaptureMode::Redirect] {
            let r = render(&CaptureSpec {
                mode,
                ..spec(IpFamilies::Dual, &["veth*"], &[])
            })
            .unwrap();
            let chain = if mode == CaptureMode::Tproxy {
                "chain pod_capture {\n"
            } else {
                "chain pod_enforce {\n"
            };
            let body = &r.nft[r.nft.find(chain).unwrap() + chain.len()..];
            assert!(
                body.trim_start()
                    .starts_with("fib saddr . iif oif missing jump spoofed_source"),
                "{}",
                r.nft
            );
        }
    }

    #[test]
    fn no_reply_passes_without_a_connection_origin() {
        for mode in [CaptureMode::Tproxy, CaptureMode::Redirect] {
            let r = render(&CaptureSpec {
                mode,
                ..spec(IpFamilies::Dual, &["veth*"], &[])
            })
            .unwrap();
            for line in r.nft.lines().filter(|l| l.contains("ct direction reply")) {
                assert!(
                    line.contains("ct mark") || line.contains("socket transparent 1"),
                    "{line}"
                );
            }
            assert!(
                r.nft
                    .contains("ct mark set ct mark & 0xffffcfff | 0x00003000")
            );
        }
    }

    #[test]
    fn neighbour_discovery_is_rendered_only_with_ipv6() {
        let v4 = render(&spec(IpFamilies::Ipv4, &["veth*"], &[])).unwrap();
        assert!(!v4.nft.contains("icmpv6"), "{}", v4.nft);
        let dual = render(&spec(IpFamilies::Dual, &["veth*"], &[])).unwrap();
        for line in dual.nft.lines().filter(|l| l.contains("icmpv6")) {
            assert!(line.contains("ip6 hoplimit 255"), "{line}");
        }
    }

    #[test]
    fn unserved_service_ports_get_the_listener_ports_after_the_service_dnat_in_tproxy_mode_only() {
        let r = render(&spec(IpFamilies::Ipv4, &["veth*"], &[])).unwrap();
        assert!(
            r.nft.contains(&format!(
                "chain unserved_services {{\n\t\ttype nat hook prerouting priority {UNSERVED_PRIORITY}; policy accept;\n\t\tiifname \"veth*\" jump pod_unserved\n"
            )),
            "{}",
            r.nft
        );
        for l4 in ["tcp", "udp"] {
            assert!(r.nft.lines().any(|l| l.contains(&format!("meta l4proto {l4} ip daddr . meta l4proto . th dport @unserved_v4 dnat ip to ip daddr:"))), "{}", r.nft);
        }
        assert!(!r.nft.contains("unserved_v6"), "{}", r.nft);
        let redirect = render(&CaptureSpec {
            mode: CaptureMode::Redirect,
            ..spec(IpFamilies::Dual, &["veth*"], &[])
        })
        .unwrap();
        assert!(!redirect.nft.contains("unserved"), "{}", redirect.nft);
    }
}
