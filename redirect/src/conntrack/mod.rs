//! Conntrack entries over ctnetlink: the destination a flow was addressed to before NAT, and
//! for the fast path a walk over the entries with their marks, a mark update of one entry,
//! and the stream of entries that end ([`events`]).
//!
//! With the capture after kube-proxy's DNAT, a UDP datagram's original destination
//! (`IP_RECVORIGDSTADDR`) is already the backend; unlike TCP there is no `SO_ORIGINAL_DST` for
//! UDP sockets. Conntrack still holds the tuple the pod sent to. One `IPCTNL_MSG_CT_GET` by the
//! flow's *reply* tuple (backend → pod, which we know) returns the entry with its *original*
//! tuple (pod → ClusterIP). One round trip to the kernel per new flow, no dump.
//!
//! Needs `CAP_NET_ADMIN` and a kernel with `CONFIG_NF_CT_NETLINK`.

pub mod events;

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::Socket;

use crate::netlink::{
    self, Message, NFGENMSG_LEN, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_HDRLEN, attr, find, malformed, u16_at, u32_at,
};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
/// `NLM_F_ROOT | NLM_F_MATCH`: every entry.
const NLM_F_DUMP: u16 = 0x300;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// conntrack's TCP states after both ends closed or one reset.
const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
const TCP_CONNTRACK_CLOSE: u8 = 8;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// How long one lookup may wait for the kernel's answer (it answers in microseconds).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(100);

pub use crate::spec::L4;

impl L4 {
    pub(crate) fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
        }
    }

    fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(L4::Tcp),
            17 => Some(L4::Udp),
            _ => None,
        }
    }
}

/// One TCP or UDP conntrack entry: its original tuple (as the first packet went), where the
/// flow really goes, and its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub protocol: L4,
    pub src: SocketAddr,
    /// What the first packet was addressed to (a ClusterIP when kube-proxy translated it).
    pub dst: SocketAddr,
    /// Where the flow goes: the reply tuple's source, the backend after a destination NAT,
    /// `dst` without one (or when the kernel left the reply tuple out).
    pub reached: SocketAddr,
    pub mark: u32,
    /// A TCP connection both ends closed, or one reset (conntrack keeps it a while longer).
    pub closed: bool,
}

/// A ctnetlink socket for looking up single conntrack entries (blocking, with a short
/// timeout: each lookup is one request and one answer).
#[derive(Debug)]
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    /// Opens the socket (in the calling thread's network namespace).
    pub fn open() -> io::Result<Self> {
        let socket = netlink::socket("ctnetlink")?;
        socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Conntrack {
            socket,
            seq: 0,
            buf: vec![0; 8192],
        })
    }

    /// Where the flow from `source` whose packets now go to `destination` was addressed before
    /// any destination NAT: the original tuple's destination of the conntrack entry whose
    /// reply tuple is `destination → source`. `None` when there is no such entry (no
    /// conntrack for the flow, or a source NAT changed the reply tuple); equal to
    /// `destination` when nothing translated it.
    pub fn original_destination(
        &mut self,
        protocol: L4,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> io::Result<Option<SocketAddr>> {
        self.seq = self.seq.wrapping_add(1);
        let request = get_by_reply(self.seq, protocol, destination, source)?;
        self.send(&request)?;
        loop {
            let n = recv(&self.socket, &mut self.buf)?;
            match parse_answer(&self.buf[..n], self.seq)? {
                Answer::Stale => continue,
                Answer::NotFound => return Ok(None),
                Answer::Original(addr) => return Ok(Some(addr)),
            }
        }
    }
}

impl Conntrack {
    /// Every TCP and UDP entry of both families whose mark `wanted` accepts, read with one
    /// dump. Entries that come and go during the dump may or may not be in it.
    pub fn entries(&mut self, wanted: impl Fn(u32) -> bool) -> io::Result<Vec<Entry>> {
        self.seq = self.seq.wrapping_add(1);
        let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
        let request =
            Message::new(ty, NLM_F_REQUEST | NLM_F_DUMP, self.seq, AF_UNSPEC, 0).finish()?;
        self.send(&request)?;
        if self.buf.len() < DUMP_BUF {
            self.buf.resize(DUMP_BUF, 0);
        }
        let mut out = Vec::new();
        loop {
            let n = recv(&self.socket, &mut self.buf)?;
            for m in netlink::Messages(&self.buf[..n]) {
                if m.seq != self.seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => match netlink::error_code(m.body)? {
                        0 => return Ok(out),
                        e => return Err(io::Error::from_raw_os_error(e)),
                    },
                    _ => {
                        if let Some(entry) = parse_entry(m.body)
                            && wanted(entry.mark)
                        {
                            out.push(entry);
                        }
                    }
                }
            }
        }
    }

    /// Sets the bits `mask` of the mark of the entry whose original tuple is `entry`'s to
    /// those of `mark`, leaving the others. `false` when the entry is gone.
    pub fn set_mark(&mut self, entry: &Entry, mark: u32, mask: u32) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let tuple = tuple(entry.protocol, entry.src, entry.dst)?;
        let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
        // No NLM_F_CREATE: an update of the existing entry only.
        let mut msg = Message::new(
            ty,
            NLM_F_REQUEST | NLM_F_ACK,
            self.seq,
            family(&entry.src),
            0,
        );
        msg.attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple)
            .attr(CTA_MARK, &(mark & mask).to_be_bytes())
            .attr(CTA_MARK_MASK, &mask.to_be_bytes());
        self.send(&msg.finish()?)?;
        loop {
            let n = recv(&self.socket, &mut self.buf)?;
            for m in netlink::Messages(&self.buf[..n]) {
                if m.seq != self.seq || m.ty != NLMSG_ERROR {
                    continue;
                }
                return match netlink::error_code(m.body)? {
                    0 => Ok(true),
                    nix::libc::ENOENT => Ok(false),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
        }
    }

    fn send(&self, request: &[u8]) -> io::Result<()> {
        netlink::send_whole(&self.socket, request, "ctnetlink")
    }
}

/// A dump's receive buffer: the kernel fills up to about this much per read.
const DUMP_BUF: usize = 64 * 1024;

fn recv(mut socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    socket.read(buf)
}

fn family(addr: &SocketAddr) -> u8 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// `IPCTNL_MSG_CT_GET` with `CTA_TUPLE_REPLY = (src → dst, protocol)`.
fn get_by_reply(seq: u32, protocol: L4, src: SocketAddr, dst: SocketAddr) -> io::Result<Vec<u8>> {
    let tuple = tuple(protocol, src, dst)?;
    let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let mut msg = Message::new(ty, NLM_F_REQUEST, seq, family(&src), 0);
    msg.attr(CTA_TUPLE_REPLY | NLA_F_NESTED, &tuple);
    msg.finish()
}

/// The attributes of a tuple (what goes inside `CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY`).
fn tuple(protocol: L4, src: SocketAddr, dst: SocketAddr) -> io::Result<Vec<u8>> {
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{src} and {dst} are of different families"),
        ));
    }
    let mut ip = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            attr(&mut ip, CTA_IP_V4_SRC, &s.octets());
            attr(&mut ip, CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            attr(&mut ip, CTA_IP_V6_SRC, &v6(s).octets());
            attr(&mut ip, CTA_IP_V6_DST, &v6(d).octets());
        }
    }
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[protocol.number()]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
    let mut tuple = Vec::new();
    attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    Ok(tuple)
}

/// Reads one entry of a dump (the body after `nlmsghdr`); `None` for other protocols and
/// anything malformed.
fn parse_entry(body: &[u8]) -> Option<Entry> {
    let attrs = body.get(NFGENMSG_LEN..)?;
    let orig = find(attrs, CTA_TUPLE_ORIG)?;
    let proto = find(orig, CTA_TUPLE_PROTO)?;
    let protocol = L4::from_number(*find(proto, CTA_PROTO_NUM)?.first()?)?;
    let (src_ip, dst_ip) = tuple_addresses(find(orig, CTA_TUPLE_IP)?)?;
    let port = |proto, ty| {
        find(proto, ty)
            .and_then(|p| <[u8; 2]>::try_from(p).ok())
            .map(u16::from_be_bytes)
    };
    let dst = SocketAddr::new(dst_ip, port(proto, CTA_PROTO_DST_PORT)?);
    let reached = find(attrs, CTA_TUPLE_REPLY)
        .and_then(|reply| {
            let (from, _) = tuple_addresses(find(reply, CTA_TUPLE_IP)?)?;
            Some(SocketAddr::new(
                from,
                port(find(reply, CTA_TUPLE_PROTO)?, CTA_PROTO_SRC_PORT)?,
            ))
        })
        .unwrap_or(dst);
    let mark = find(attrs, CTA_MARK).and_then(netlink::be32).unwrap_or(0);
    let tcp_state = find(attrs, CTA_PROTOINFO)
        .and_then(|p| find(p, CTA_PROTOINFO_TCP))
        .and_then(|t| find(t, CTA_PROTOINFO_TCP_STATE))
        .and_then(|s| s.first().copied());
    Some(Entry {
        closed: matches!(
            tcp_state,
            Some(TCP_CONNTRACK_TIME_WAIT | TCP_CONNTRACK_CLOSE)
        ),
        protocol,
        src: SocketAddr::new(src_ip, port(proto, CTA_PROTO_SRC_PORT)?),
        dst,
        reached,
        mark,
    })
}

/// The source and destination of a tuple's `CTA_TUPLE_IP`.
fn tuple_addresses(ip: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let v4 = |ty| {
        find(ip, ty)
            .and_then(|a| <[u8; 4]>::try_from(a).ok())
            .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
    };
    let v6 = |ty| {
        find(ip, ty)
            .and_then(|a| <[u8; 16]>::try_from(a).ok())
            .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
    };
    match (v4(CTA_IP_V4_SRC), v4(CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => Some((s, d)),
        _ => Some((v6(CTA_IP_V6_SRC)?, v6(CTA_IP_V6_DST)?)),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// An answer to an earlier request (one that timed out): read on.
    Stale,
    NotFound,
    Original(SocketAddr),
}

/// Reads the first netlink message of `b` (the kernel answers a GET with one message).
fn parse_answer(b: &[u8], seq: u32) -> io::Result<Answer> {
    let len = u32_at(b, 0).ok_or_else(|| malformed("short header"))? as usize;
    let ty = u16_at(b, 4).ok_or_else(|| malformed("short header"))?;
    let got_seq = u32_at(b, 8).ok_or_else(|| malformed("short header"))?;
    if len < NLMSG_HDRLEN || len > b.len() {
        return Err(malformed("bad length"));
    }
    if got_seq != seq {
        return Ok(Answer::Stale);
    }
    let body = &b[NLMSG_HDRLEN..len];
    if ty == NLMSG_ERROR {
        let errno = u32_at(body, 0).ok_or_else(|| malformed("short error"))? as i32;
        return match -errno {
            0 | nix::libc::ENOENT => Ok(Answer::NotFound),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    let entry = parse_entry(body).ok_or_else(|| malformed("no complete original tuple"))?;
    Ok(Answer::Original(entry.dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The kernel's answer shape: header, nfgenmsg, then the original tuple (and more).
    fn answer(seq: u32, orig_dst: SocketAddr) -> Vec<u8> {
        let src = if orig_dst.is_ipv4() {
            sa("10.0.0.9:1")
        } else {
            sa("[fd00::9]:1")
        };
        let mut request = get_by_reply(seq, L4::Udp, src, orig_dst).unwrap();
        // Re-tag the request's tuple as the original one: same nesting the kernel uses.
        let tuple_at = NLMSG_HDRLEN + NFGENMSG_LEN + 2;
        request[tuple_at..tuple_at + 2]
            .copy_from_slice(&(CTA_TUPLE_ORIG | NLA_F_NESTED).to_ne_bytes());
        request[4..6].copy_from_slice(&0x100u16.to_ne_bytes());
        request
    }

    #[test]
    fn the_original_destination_is_read_from_the_original_tuple() {
        for dst in ["10.96.0.10:53", "[fd00:96::a]:5353"] {
            let got = parse_answer(&answer(7, sa(dst)), 7).unwrap();
            assert_eq!(got, Answer::Original(sa(dst)));
        }
    }

    #[test]
    fn answers_to_earlier_requests_are_skipped() {
        assert_eq!(
            parse_answer(&answer(6, sa("10.96.0.10:53")), 7).unwrap(),
            Answer::Stale
        );
    }

    #[test]
    fn no_entry_is_not_an_error() {
        let mut msg = vec![0u8; NLMSG_HDRLEN];
        msg.extend_from_slice(&(-nix::libc::ENOENT).to_ne_bytes());
        msg.extend_from_slice(&[0; 16]);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg[8..12].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(parse_answer(&msg, 3).unwrap(), Answer::NotFound);
        msg[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].copy_from_slice(&(-nix::libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_answer(&msg, 3).unwrap_err().raw_os_error(),
            Some(nix::libc::EPERM)
        );
    }

    #[test]
    fn truncated_answers_are_errors_not_panics() {
        let full = answer(1, sa("10.96.0.10:53"));
        for cut in 0..full.len() {
            let mut short = full[..cut].to_vec();
            if short.len() >= 4 {
                short[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            assert!(parse_answer(&short, 1).is_err(), "cut at {cut}");
        }
    }

    /// A dump entry's body: nfgenmsg, the original tuple, the reply tuple when given.
    fn entry_body(
        orig: (SocketAddr, SocketAddr),
        reply: Option<(SocketAddr, SocketAddr)>,
    ) -> Vec<u8> {
        let mut body = vec![AF_INET, 0, 0, 0];
        let t = tuple(L4::Tcp, orig.0, orig.1).unwrap();
        attr(&mut body, CTA_TUPLE_ORIG | NLA_F_NESTED, &t);
        if let Some((from, to)) = reply {
            let t = tuple(L4::Tcp, from, to).unwrap();
            attr(&mut body, CTA_TUPLE_REPLY | NLA_F_NESTED, &t);
        }
        body
    }

    #[test]
    fn an_entry_says_where_a_translated_flow_really_goes() {
        let (pod, cluster_ip, backend) = (
            sa("10.244.1.10:40000"),
            sa("10.96.0.20:5432"),
            sa("10.244.1.20:8080"),
        );
        let e = parse_entry(&entry_body((pod, cluster_ip), Some((backend, pod)))).unwrap();
        assert_eq!((e.src, e.dst, e.reached), (pod, cluster_ip, backend));
        // Not translated: the reply comes from where the pod sent it.
        let e = parse_entry(&entry_body((pod, backend), Some((backend, pod)))).unwrap();
        assert_eq!(e.reached, backend);
        // No reply tuple in the message: the original destination stands.
        let e = parse_entry(&entry_body((pod, cluster_ip), None)).unwrap();
        assert_eq!(e.reached, cluster_ip);
    }

    #[test]
    fn mixed_families_are_refused() {
        assert!(get_by_reply(1, L4::Tcp, sa("10.0.0.1:1"), sa("[::1]:2")).is_err());
    }
}
