//! Where a new flow kube-proxy translated was addressed, for the fast path's reader.
//!
//! The queued first packet already carries the backend, and its conntrack entry is not in
//! the table yet (it is confirmed when the packet leaves the hook), so ctnetlink cannot
//! give the ClusterIP then, and this kernel's queue has no conntrack attributes
//! (`CONFIG_NETFILTER_NETLINK_GLUE_CT`). The capture therefore writes it down itself: right
//! before such a packet is queued, one rule per family puts
//! `source port . destination port . protocol . source address → original port . original
//! address` into a map of the table ([`ADDRESSED_V4`], [`ADDRESSED_V6`]; see
//! [`render`](crate::render())), with a short timeout and a size limit. The reader reads the
//! element with one `NFT_MSG_GETSETELEM`.
//!
//! nft 1.0.6 cannot write a longer key here (it fails to allocate registers for the whole
//! 5-tuple with the value), so the backend's address is not in the key: a pod that starts two
//! translated flows from the same source port to the same backend port within the timeout
//! finds the first one's ClusterIP (`update` keeps an element's value). The gateway checks
//! the answer against its Services and hands anything that does not fit to the proxy.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::Socket;

use crate::netlink::{
    self, Message, Messages, NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_LIST_ELEM,
    NLA_F_NESTED, NLM_F_REQUEST, NLMSG_ERROR, error_code, find, nested,
};
use crate::spec::{L4, TABLE_NAME};

/// The maps of IPv4 and IPv6 flows.
pub const ADDRESSED_V4: &str = "fast_addressed_v4";
pub const ADDRESSED_V6: &str = "fast_addressed_v6";
/// How long an element stays: the reader needs it for milliseconds, a full queue for longer.
pub const ADDRESSED_TIMEOUT_SECONDS: u32 = 3;
/// Elements per map; beyond that the capture's rule fails, the element is missing, and the
/// reader hands the flow to the proxy (which asks conntrack once the entry is confirmed).
pub const ADDRESSED_SIZE: u32 = 65536;

const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// How long one lookup may wait for the kernel's answer (it answers in microseconds).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(100);

/// A netlink socket for reading the maps (blocking, one request and one answer per lookup).
#[derive(Debug)]
pub struct AddressedMaps {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl AddressedMaps {
    /// Opens the socket (in the calling thread's network namespace).
    pub fn open() -> io::Result<Self> {
        let socket = netlink::socket("nf_tables maps")?;
        socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(AddressedMaps {
            socket,
            seq: 0,
            buf: vec![0; 4096],
        })
    }

    /// The `ClusterIP:port` the flow `src → dst` was addressed to, as the capture wrote it
    /// down; `None` when there is no element (not translated, timed out, or the map was full).
    pub fn lookup(
        &mut self,
        protocol: L4,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<Option<SocketAddr>> {
        self.seq = self.seq.wrapping_add(1);
        let request = request(self.seq, protocol, src, dst)?;
        netlink::send_whole(&self.socket, &request, "nf_tables")?;
        loop {
            let n = (&self.socket).read(&mut self.buf)?;
            for m in Messages(&self.buf[..n]) {
                if m.seq != self.seq {
                    continue;
                }
                if m.ty == NLMSG_ERROR {
                    return match error_code(m.body)? {
                        0 | nix::libc::ENOENT => Ok(None),
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
                if m.ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                    return parse(m.body, src.is_ipv4()).map(Some);
                }
            }
        }
    }
}

/// The map's key: each part in a register of its own (4 bytes, zero-padded), as nf_tables
/// lays out a concatenation.
fn key(protocol: L4, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut k = Vec::with_capacity(28);
    k.extend_from_slice(&src.port().to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k.extend_from_slice(&dst.port().to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k.extend_from_slice(&[protocol.number(), 0, 0, 0]);
    match src.ip() {
        IpAddr::V4(a) => k.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => k.extend_from_slice(&a.octets()),
    }
    k
}

fn request(seq: u32, protocol: L4, src: SocketAddr, dst: SocketAddr) -> io::Result<Vec<u8>> {
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{src} and {dst} are of different families"),
        ));
    }
    let mut value = Vec::new();
    netlink::attr(&mut value, NFTA_DATA_VALUE, &key(protocol, src, dst));
    let mut elem = Vec::new();
    nested(&mut elem, NFTA_SET_ELEM_KEY, &value);
    let mut list = Vec::new();
    nested(&mut list, NFTA_LIST_ELEM, &elem);
    let map = if src.is_ipv4() {
        ADDRESSED_V4
    } else {
        ADDRESSED_V6
    };
    let mut msg = Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
        NLM_F_REQUEST,
        seq,
        NFPROTO_INET,
        0,
    );
    msg.attr(NFTA_SET_ELEM_LIST_TABLE, &netlink::c_string(TABLE_NAME))
        .attr(NFTA_SET_ELEM_LIST_SET, &netlink::c_string(map));
    msg.attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &list);
    msg.finish()
}

/// The value of the one element of a `NFT_MSG_NEWSETELEM` answer: port (4 bytes, padded),
/// then the address.
fn parse(body: &[u8], v4: bool) -> io::Result<SocketAddr> {
    let malformed = || netlink::malformed("set element without a value");
    let attrs = body.get(NFGENMSG_LEN..).ok_or_else(malformed)?;
    let value = find(attrs, NFTA_SET_ELEM_LIST_ELEMENTS)
        .and_then(|l| find(l, NFTA_LIST_ELEM))
        .and_then(|e| find(e, NFTA_SET_ELEM_DATA))
        .and_then(|d| find(d, NFTA_DATA_VALUE))
        .ok_or_else(malformed)?;
    let bytes = |range: std::ops::Range<usize>| value.get(range).ok_or_else(malformed);
    let port = u16::from_be_bytes([bytes(0..2)?[0], bytes(0..2)?[1]]);
    let ip = if v4 {
        let o: [u8; 4] = bytes(4..8)?.try_into().map_err(|_| malformed())?;
        IpAddr::V4(Ipv4Addr::from(o))
    } else {
        let o: [u8; 16] = bytes(4..20)?.try_into().map_err(|_| malformed())?;
        IpAddr::V6(Ipv6Addr::from(o))
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLMSG_HDRLEN, u32_at};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_key_is_laid_out_one_register_per_part() {
        let k = key(L4::Udp, sa("10.244.1.10:40000"), sa("10.244.1.20:8080"));
        assert_eq!(
            k,
            [
                0x9c, 0x40, 0, 0, 0x1f, 0x90, 0, 0, 17, 0, 0, 0, 10, 244, 1, 10
            ]
        );
        let k6 = key(L4::Tcp, sa("[fd00::a]:1"), sa("[fd00::b]:2"));
        assert_eq!(k6.len(), 28);
        assert_eq!(k6[8], 6);
    }

    #[test]
    fn the_request_names_table_map_and_key() {
        let r = request(9, L4::Tcp, sa("[fd00::a]:1"), sa("[fd00::b]:2")).unwrap();
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        let attrs = &r[NLMSG_HDRLEN + NFGENMSG_LEN..];
        assert_eq!(
            find(attrs, NFTA_SET_ELEM_LIST_TABLE),
            Some(&b"chokepoint\0"[..])
        );
        assert_eq!(
            find(attrs, NFTA_SET_ELEM_LIST_SET),
            Some(&b"fast_addressed_v6\0"[..])
        );
        let value = find(attrs, NFTA_SET_ELEM_LIST_ELEMENTS)
            .and_then(|l| find(l, NFTA_LIST_ELEM))
            .and_then(|e| find(e, NFTA_SET_ELEM_KEY))
            .and_then(|k| find(k, NFTA_DATA_VALUE))
            .unwrap();
        assert_eq!(value.len(), 28);
        assert!(request(1, L4::Tcp, sa("10.0.0.1:1"), sa("[::1]:2")).is_err());
    }

    /// The answer's body: nfgenmsg, then the element list with one element's value.
    fn answer(value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        netlink::attr(&mut v, NFTA_DATA_VALUE, value);
        let mut elem = Vec::new();
        nested(&mut elem, NFTA_SET_ELEM_DATA, &v);
        let mut list = Vec::new();
        nested(&mut list, NFTA_LIST_ELEM, &elem);
        let mut body = vec![NFPROTO_INET, 0, 0, 0];
        nested(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS, &list);
        body
    }

    #[test]
    fn the_answer_gives_the_cluster_ip_and_port() {
        let body = answer(&[0x15, 0x38, 0, 0, 10, 96, 0, 20]);
        assert_eq!(parse(&body, true).unwrap(), sa("10.96.0.20:5432"));
        let mut v6 = vec![0x15, 0x38, 0, 0];
        v6.extend_from_slice(&"fd00:96::20".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            parse(&answer(&v6), false).unwrap(),
            sa("[fd00:96::20]:5432")
        );
    }

    #[test]
    fn short_answers_are_errors_not_panics() {
        let full = answer(&[0x15, 0x38, 0, 0, 10, 96, 0, 20]);
        for cut in 0..full.len() {
            assert!(parse(&full[..cut], true).is_err(), "cut at {cut}");
        }
        assert!(parse(&full, false).is_err(), "a v4 value read as v6");
    }
}
