//! The rules nft's text cannot write here: the jump into the packet queue, and the notes of
//! where translated flows were addressed.
//!
//! nftables' own `queue` statement needs `CONFIG_NFT_QUEUE`, which common kernels (this
//! project's lab and CI kernels among them) leave out, while the xtables `NFQUEUE` target
//! (`CONFIG_NETFILTER_XT_TARGET_NFQUEUE`) is nearly always built in. nf_tables runs xtables
//! targets through its compat expression, but `nft -f` cannot write one, so this module adds
//! the rule itself, in one nf_tables batch, as the only rule of the `fast_queue` chain that
//! [`render`](crate::render()) declares empty. Until it is there the chain returns and the
//! flow goes to the proxy: never through undecided.
//!
//! The target spreads packets over the queues by the CPU that handles them
//! (`--queue-cpu-fanout`: queue `first + cpu % count`), so that a reader that keeps to those
//! CPUs is woken on the CPU the packet is on; it has no `bypass`: with no reader the kernel
//! drops the packet.
//!
//! The notes ([`crate::addressed`]) are one `update` of a map per family, in chains of their
//! own that the capture jumps to. nft 1.0.6 writes them wrongly for IPv6 (the value's
//! registers overlap the key's last ones, so the key holds part of the ClusterIP), so they are
//! built here with the registers laid out by hand: the key in the 32-bit registers from
//! [`KEY_REGISTER`] on (source port, destination port, protocol, source address), the value
//! right after it (original destination port, original destination address).

use std::io::{self, Read};
use std::time::Duration;

use crate::netlink::{
    self, Message, Messages, NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_LIST_ELEM, NLA_F_NESTED,
    NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, error_code, nested,
};
use crate::spec::TABLE_NAME;

/// The chain holding the queue rule.
pub(crate) const QUEUE_CHAIN: &str = "fast_queue";

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWRULE: u16 = 6;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;
/// `xt_NFQ_info_v3`: queue number, number of queues, flags.
const NFQUEUE_REVISION: u32 = 3;
/// `NFQ_FLAG_CPU_FANOUT`; `NFQ_FLAG_BYPASS` (1) is never set.
const NFQ_FLAG_CPU_FANOUT: u16 = 0x02;

/// `NFT_REG32_00`: the first 32-bit register.
const KEY_REGISTER: u32 = 8;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;
const NFT_CT_PROTO_DST: u32 = 12;
const NFT_CT_DST_IP: u32 = 20;
const NFT_CT_DST_IP6: u32 = 22;
const IP_CT_DIR_ORIGINAL: u8 = 0;
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFTA_DYNSET_SREG_DATA: u16 = 5;
const NFT_DYNSET_OP_UPDATE: u32 = 1;

/// One family's note of where translated flows were addressed: its chain and map (which
/// [`render`](crate::render()) declares), and how its rule reads the source address and the
/// original destination address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Note {
    /// nft's `meta nfproto` and address type of the family.
    pub(crate) nfproto: &'static str,
    pub(crate) address_type: &'static str,
    pub(crate) chain: &'static str,
    pub(crate) map: &'static str,
    /// Offset and length of the source address in the network header.
    saddr: (u32, u32),
    ct_daddr: u32,
}

pub(crate) const NOTE_V4: Note = Note {
    nfproto: "ipv4",
    address_type: "ipv4_addr",
    chain: "fast_note_v4",
    map: crate::addressed::ADDRESSED_V4,
    saddr: (12, 4),
    ct_daddr: NFT_CT_DST_IP,
};
pub(crate) const NOTE_V6: Note = Note {
    nfproto: "ipv6",
    address_type: "ipv6_addr",
    chain: "fast_note_v6",
    map: crate::addressed::ADDRESSED_V6,
    saddr: (8, 16),
    ct_daddr: NFT_CT_DST_IP6,
};

fn expression(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut expr = Vec::new();
    netlink::attr(&mut expr, NFTA_EXPR_NAME, &netlink::c_string(name));
    nested(&mut expr, NFTA_EXPR_DATA, data);
    nested(out, NFTA_LIST_ELEM, &expr);
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn payload(out: &mut Vec<u8>, register: u32, base: u32, offset: u32, len: u32) {
    let mut d = Vec::new();
    netlink::attr(&mut d, NFTA_PAYLOAD_DREG, &be32(register));
    netlink::attr(&mut d, NFTA_PAYLOAD_BASE, &be32(base));
    netlink::attr(&mut d, NFTA_PAYLOAD_OFFSET, &be32(offset));
    netlink::attr(&mut d, NFTA_PAYLOAD_LEN, &be32(len));
    expression(out, "payload", &d);
}

fn ct_original(out: &mut Vec<u8>, register: u32, key: u32) {
    let mut d = Vec::new();
    netlink::attr(&mut d, NFTA_CT_DREG, &be32(register));
    netlink::attr(&mut d, NFTA_CT_KEY, &be32(key));
    netlink::attr(&mut d, NFTA_CT_DIRECTION, &[IP_CT_DIR_ORIGINAL]);
    expression(out, "ct", &d);
}

/// The expressions of `update @map { th sport . th dport . meta l4proto . saddr : ct original
/// proto-dst . ct original daddr }`, register by register.
fn note_expressions(note: &Note) -> Vec<u8> {
    let mut list = Vec::new();
    let r = KEY_REGISTER;
    payload(&mut list, r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2);
    payload(&mut list, r + 1, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    let mut meta = Vec::new();
    netlink::attr(&mut meta, NFTA_META_DREG, &be32(r + 2));
    netlink::attr(&mut meta, NFTA_META_KEY, &be32(NFT_META_L4PROTO));
    expression(&mut list, "meta", &meta);
    let (offset, len) = note.saddr;
    payload(&mut list, r + 3, NFT_PAYLOAD_NETWORK_HEADER, offset, len);
    let value = r + 3 + len / 4;
    ct_original(&mut list, value, NFT_CT_PROTO_DST);
    ct_original(&mut list, value + 1, note.ct_daddr);
    let mut dynset = Vec::new();
    netlink::attr(
        &mut dynset,
        NFTA_DYNSET_SET_NAME,
        &netlink::c_string(note.map),
    );
    netlink::attr(&mut dynset, NFTA_DYNSET_OP, &be32(NFT_DYNSET_OP_UPDATE));
    netlink::attr(&mut dynset, NFTA_DYNSET_SREG_KEY, &be32(r));
    netlink::attr(&mut dynset, NFTA_DYNSET_SREG_DATA, &be32(value));
    expression(&mut list, "dynset", &dynset);
    list
}

/// The batch that appends `NFQUEUE --queue-balance first:first+count-1 --queue-cpu-fanout`
/// to the queue chain and each of `notes` to its chain: begin, one rule message each (`seq
/// + 1` on), end.
fn batch(first: u16, count: u16, notes: &[Note], seq: u32) -> io::Result<Vec<u8>> {
    // struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; }, in host
    // order, padded to the 8 bytes XT_ALIGN gives it.
    let mut info = Vec::with_capacity(8);
    info.extend_from_slice(&first.to_ne_bytes());
    info.extend_from_slice(&count.to_ne_bytes());
    info.extend_from_slice(&NFQ_FLAG_CPU_FANOUT.to_ne_bytes());
    info.extend_from_slice(&[0, 0]);

    let mut target = Vec::new();
    netlink::attr(&mut target, NFTA_TARGET_NAME, &netlink::c_string("NFQUEUE"));
    netlink::attr(
        &mut target,
        NFTA_TARGET_REV,
        &NFQUEUE_REVISION.to_be_bytes(),
    );
    netlink::attr(&mut target, NFTA_TARGET_INFO, &info);
    let mut queue = Vec::new();
    expression(&mut queue, "target", &target);

    let mut out = Message::new(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish()?;
    let mut rules = vec![(QUEUE_CHAIN, queue)];
    rules.extend(notes.iter().map(|n| (n.chain, note_expressions(n))));
    let mut next = seq;
    for (chain, expressions) in &rules {
        next += 1;
        let mut rule = Message::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
            next,
            NFPROTO_INET,
            0,
        );
        rule.attr(NFTA_RULE_TABLE, &netlink::c_string(TABLE_NAME))
            .attr(NFTA_RULE_CHAIN, &netlink::c_string(chain))
            .attr(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, expressions);
        out.extend_from_slice(&rule.finish()?);
    }
    out.extend_from_slice(
        &Message::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            next + 1,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish()?,
    );
    Ok(out)
}

/// Adds the queue rule and the `notes` to the installed table's (empty) chains, in one
/// transaction, in the calling thread's network namespace.
pub(crate) fn add(first: u16, count: u16, notes: &[Note]) -> io::Result<()> {
    let socket = netlink::socket("nf_tables")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let seq = 1;
    netlink::send_whole(&socket, &batch(first, count, notes, seq)?, "nf_tables")?;
    let rules = 1 + notes.len() as u32;
    let mut acknowledged = 0;
    let mut buf = vec![0u8; 8192];
    while acknowledged < rules {
        let n = (&socket).read(&mut buf)?;
        for msg in Messages(&buf[..n]) {
            if msg.ty != NLMSG_ERROR || !(seq + 1..=seq + rules).contains(&msg.seq) {
                continue;
            }
            match error_code(msg.body)? {
                0 => acknowledged += 1,
                e => {
                    let what = if msg.seq == seq + 1 {
                        "the NFQUEUE rule"
                    } else {
                        "the note of translated flows"
                    };
                    return Err(io::Error::new(
                        io::Error::from_raw_os_error(e).kind(),
                        format!(
                            "adding {what}: {} (does the kernel have the xtables NFQUEUE target, CONFIG_NETFILTER_XT_TARGET_NFQUEUE, nf_tables compat, CONFIG_NFT_COMPAT, and dynamic sets?)",
                            io::Error::from_raw_os_error(e)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{Attrs, NFGENMSG_LEN, NLMSG_HDRLEN, find};

    #[test]
    fn the_batch_is_begin_rule_end_and_the_rule_names_the_target() {
        let b = batch(100, 2, &[], 1).unwrap();
        let msgs: Vec<_> = Messages(&b).collect();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[2].ty, NFNL_MSG_BATCH_END);
        let rule = &msgs[1];
        assert_eq!(rule.ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE);
        let attrs = &rule.body[NFGENMSG_LEN..];
        assert_eq!(find(attrs, NFTA_RULE_TABLE), Some(&b"chokepoint\0"[..]));
        assert_eq!(find(attrs, NFTA_RULE_CHAIN), Some(&b"fast_queue\0"[..]));
        let list = find(attrs, NFTA_RULE_EXPRESSIONS).unwrap();
        let expr = find(list, NFTA_LIST_ELEM).unwrap();
        assert_eq!(find(expr, NFTA_EXPR_NAME), Some(&b"target\0"[..]));
        let target = find(expr, NFTA_EXPR_DATA).unwrap();
        assert_eq!(find(target, NFTA_TARGET_NAME), Some(&b"NFQUEUE\0"[..]));
        assert_eq!(find(target, NFTA_TARGET_REV), Some(&[0, 0, 0, 3][..]));
        let info = find(target, NFTA_TARGET_INFO).unwrap();
        assert_eq!(u16::from_ne_bytes([info[0], info[1]]), 100);
        assert_eq!(u16::from_ne_bytes([info[2], info[3]]), 2);
        assert_eq!(
            u16::from_ne_bytes([info[4], info[5]]),
            NFQ_FLAG_CPU_FANOUT,
            "CPU fanout, and never bypass"
        );
        assert_eq!(info.len(), 8);
        assert!(Attrs(attrs).count() >= 3);
        assert!(b.len() > NLMSG_HDRLEN * 3);
    }

    /// The 32-bit register each expression of a note writes (or, for the update, reads).
    fn registers(note: &Note) -> Vec<(String, u32)> {
        let rule = note_expressions(note);
        Attrs(&rule)
            .map(|(_, expr)| {
                let name = find(expr, NFTA_EXPR_NAME).unwrap();
                let name = String::from_utf8_lossy(&name[..name.len() - 1]).into_owned();
                let data = find(expr, NFTA_EXPR_DATA).unwrap();
                let reg = if name == "dynset" {
                    find(data, NFTA_DYNSET_SREG_DATA)
                } else {
                    find(data, 1)
                };
                (name, u32::from_be_bytes(reg.unwrap().try_into().unwrap()))
            })
            .collect()
    }

    #[test]
    fn a_note_keeps_key_and_value_in_registers_of_their_own() {
        // Key: ports, protocol, source address; the value starts right after the key.
        let names = |n: &Note| registers(n).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(&NOTE_V4),
            [
                "payload", "payload", "meta", "payload", "ct", "ct", "dynset"
            ]
        );
        let regs = |n: &Note| registers(n).into_iter().map(|(_, r)| r).collect::<Vec<_>>();
        assert_eq!(regs(&NOTE_V4), [8, 9, 10, 11, 12, 13, 12]);
        // IPv6: the source address takes 11..=14, the value 15 (port) and 16..=19.
        assert_eq!(regs(&NOTE_V6), [8, 9, 10, 11, 15, 16, 15]);
        let b = batch(100, 2, &[NOTE_V4, NOTE_V6], 1).unwrap();
        let msgs: Vec<_> = Messages(&b).collect();
        assert_eq!(msgs.len(), 5);
        let chains: Vec<_> = msgs[1..4]
            .iter()
            .map(|m| {
                find(&m.body[NFGENMSG_LEN..], NFTA_RULE_CHAIN)
                    .unwrap()
                    .to_vec()
            })
            .collect();
        assert_eq!(
            chains,
            [&b"fast_queue\0"[..], b"fast_note_v4\0", b"fast_note_v6\0"]
        );
        assert_eq!(msgs[4].seq, 5);
    }
}
