//! The one rule nft's text cannot write here: the jump into the packet queue.
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

use std::io::{self, Read};
use std::time::Duration;

use crate::netlink::{
    self, Message, Messages, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, error_code,
    nested,
};
use crate::spec::TABLE_NAME;

/// The chain holding the queue rule.
pub(crate) const QUEUE_CHAIN: &str = "fast_queue";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWRULE: u16 = 6;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NFPROTO_INET: u8 = 1;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;
/// `xt_NFQ_info_v3`: queue number, number of queues, flags.
const NFQUEUE_REVISION: u32 = 3;
/// `NFQ_FLAG_CPU_FANOUT`; `NFQ_FLAG_BYPASS` (1) is never set.
const NFQ_FLAG_CPU_FANOUT: u16 = 0x02;

fn c_string(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// The batch that appends `NFQUEUE --queue-balance first:first+count-1 --queue-cpu-fanout`
/// to the queue chain.
fn batch(first: u16, count: u16, seq: u32) -> io::Result<Vec<u8>> {
    // struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; }, in host
    // order, padded to the 8 bytes XT_ALIGN gives it.
    let mut info = Vec::with_capacity(8);
    info.extend_from_slice(&first.to_ne_bytes());
    info.extend_from_slice(&count.to_ne_bytes());
    info.extend_from_slice(&NFQ_FLAG_CPU_FANOUT.to_ne_bytes());
    info.extend_from_slice(&[0, 0]);

    let mut target = Vec::new();
    netlink::attr(&mut target, NFTA_TARGET_NAME, &c_string("NFQUEUE"));
    netlink::attr(
        &mut target,
        NFTA_TARGET_REV,
        &NFQUEUE_REVISION.to_be_bytes(),
    );
    netlink::attr(&mut target, NFTA_TARGET_INFO, &info);
    let mut expr = Vec::new();
    netlink::attr(&mut expr, NFTA_EXPR_NAME, &c_string("target"));
    nested(&mut expr, NFTA_EXPR_DATA, &target);
    let mut list = Vec::new();
    nested(&mut list, NFTA_LIST_ELEM, &expr);

    let mut out = Message::new(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish()?;
    let mut rule = Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
        seq + 1,
        NFPROTO_INET,
        0,
    );
    rule.attr(NFTA_RULE_TABLE, &c_string(TABLE_NAME))
        .attr(NFTA_RULE_CHAIN, &c_string(QUEUE_CHAIN))
        .attr(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &list);
    out.extend_from_slice(&rule.finish()?);
    out.extend_from_slice(
        &Message::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq + 2,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish()?,
    );
    Ok(out)
}

/// Adds the queue rule to the installed table's (empty) queue chain, in the calling thread's
/// network namespace.
pub(crate) fn add(first: u16, count: u16) -> io::Result<()> {
    let socket = netlink::socket("nf_tables")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let seq = 1;
    socket.send(&batch(first, count, seq)?)?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = (&socket).read(&mut buf)?;
        for msg in Messages(&buf[..n]) {
            if msg.ty == NLMSG_ERROR && msg.seq == seq + 1 {
                return match error_code(msg.body)? {
                    0 => Ok(()),
                    e => Err(io::Error::new(
                        io::Error::from_raw_os_error(e).kind(),
                        format!(
                            "adding the NFQUEUE rule: {} (does the kernel have the xtables NFQUEUE target, CONFIG_NETFILTER_XT_TARGET_NFQUEUE, and nf_tables compat, CONFIG_NFT_COMPAT?)",
                            io::Error::from_raw_os_error(e)
                        ),
                    )),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{Attrs, NFGENMSG_LEN, NLMSG_HDRLEN, find};

    #[test]
    fn the_batch_is_begin_rule_end_and_the_rule_names_the_target() {
        let b = batch(100, 2, 1).unwrap();
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
}
