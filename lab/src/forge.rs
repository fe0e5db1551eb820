//! Forged packets, as an attacker inside a pod makes them: root in its own network namespace
//! with `NET_RAW`, free to write any source address, any direction, any protocol.
//!
//! [`Packet`] builds a complete IPv4 or IPv6 packet (UDP, a TCP SYN, ICMPv4 or ICMPv6, with
//! correct checksums) and [`send`] writes it with a raw `IPPROTO_RAW` socket, which takes the
//! IP header as written (`IP_HDRINCL` / `IPV6_HDRINCL` are implied). The kernel routes the
//! packet by the address given to `sendto`, not by the header: sending "via" an off-link
//! address makes the pod hand a packet addressed to *itself* to its default gateway (the
//! node), which is how a pod forges "replies" and conntrack entries. [`Sniffer`] is the other
//! end: a raw socket in a host or pod that reports what of one protocol arrived.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// IP protocol numbers used here.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
const PROTO_RAW: i32 = 255;

/// ICMPv6 neighbour-discovery types (RFC 4861) and echo request.
pub const ND_ROUTER_SOLICIT: u8 = 133;
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV4_ECHO_REQUEST: u8 = 8;

/// The transport part of a forged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: Vec<u8>,
    },
    /// A bare SYN (no options), as a connection's first segment.
    TcpSyn {
        src_port: u16,
        dst_port: u16,
        seq: u32,
    },
    /// ICMPv4 (IPv4 packets only): type, code and the body after the checksum.
    Icmpv4 { ty: u8, code: u8, body: Vec<u8> },
    /// ICMPv6 (IPv6 packets only): type, code and the body after the checksum.
    Icmpv6 { ty: u8, code: u8, body: Vec<u8> },
}

/// One forged IP packet. Build it with [`Packet::udp`], [`Packet::tcp_syn`],
/// [`Packet::icmpv6`] or [`Packet::icmpv4`]; [`Packet::bytes`] gives the wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    pub transport: Transport,
}

/// Why a packet cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgeError {
    #[error("source {0} and destination {1} are of different families")]
    MixedFamilies(IpAddr, IpAddr),
    #[error("{0} packets cannot carry {1}")]
    WrongIcmp(&'static str, &'static str),
    #[error("the packet would be {0} bytes, more than an IP packet can hold")]
    TooLong(usize),
}

impl Packet {
    pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Packet {
        Packet {
            src: src.ip(),
            dst: dst.ip(),
            hop_limit: 64,
            transport: Transport::Udp {
                src_port: src.port(),
                dst_port: dst.port(),
                payload: payload.to_vec(),
            },
        }
    }

    pub fn tcp_syn(src: SocketAddr, dst: SocketAddr, seq: u32) -> Packet {
        Packet {
            src: src.ip(),
            dst: dst.ip(),
            hop_limit: 64,
            transport: Transport::TcpSyn {
                src_port: src.port(),
                dst_port: dst.port(),
                seq,
            },
        }
    }

    pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, ty: u8, body: &[u8]) -> Packet {
        Packet {
            src: src.into(),
            dst: dst.into(),
            hop_limit,
            transport: Transport::Icmpv6 {
                ty,
                code: 0,
                body: body.to_vec(),
            },
        }
    }

    pub fn icmpv4(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, body: &[u8]) -> Packet {
        Packet {
            src: src.into(),
            dst: dst.into(),
            hop_limit: 64,
            transport: Transport::Icmpv4 {
                ty,
                code: 0,
                body: body.to_vec(),
            },
        }
    }

    /// A neighbour solicitation for `target` (RFC 4861 §4.3), without options.
    pub fn neighbor_solicit(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr) -> Packet {
        let mut body = vec![0u8; 4]; // reserved
        body.extend_from_slice(&target.octets());
        Packet::icmpv6(src, dst, 255, ND_NEIGHBOR_SOLICIT, &body)
    }

    /// The wire form: IP header, transport header, payload; every checksum filled in.
    pub fn bytes(&self) -> Result<Vec<u8>, ForgeError> {
        let proto = match (&self.transport, self.src) {
            (Transport::Udp { .. }, _) => PROTO_UDP,
            (Transport::TcpSyn { .. }, _) => PROTO_TCP,
            (Transport::Icmpv4 { .. }, IpAddr::V4(_)) => PROTO_ICMP,
            (Transport::Icmpv6 { .. }, IpAddr::V6(_)) => PROTO_ICMPV6,
            (Transport::Icmpv4 { .. }, IpAddr::V6(_)) => {
                return Err(ForgeError::WrongIcmp("IPv6", "ICMPv4"));
            }
            (Transport::Icmpv6 { .. }, IpAddr::V4(_)) => {
                return Err(ForgeError::WrongIcmp("IPv4", "ICMPv6"));
            }
        };
        let mut segment = self.transport_bytes();
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s, d, proto, segment.len()),
            (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(s, d, proto, segment.len()),
            (s, d) => return Err(ForgeError::MixedFamilies(s, d)),
        };
        let header_len = if self.src.is_ipv4() { 20 } else { 40 };
        if segment.len() + header_len > usize::from(u16::MAX) {
            return Err(ForgeError::TooLong(segment.len() + header_len));
        }
        // ICMPv4 has no pseudo-header; the others sum it with the segment.
        let sum = if proto == PROTO_ICMP {
            checksum(&[&segment])
        } else {
            checksum(&[&pseudo, &segment])
        };
        let at = checksum_offset(&self.transport);
        let sum = if proto == PROTO_UDP && sum == 0 {
            0xffff // 0 means "no checksum" in UDP
        } else {
            sum
        };
        segment[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        let mut out = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_header(s, d, proto, self.hop_limit, &segment),
            (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_header(s, d, proto, self.hop_limit, &segment),
            (s, d) => return Err(ForgeError::MixedFamilies(s, d)),
        };
        out.extend_from_slice(&segment);
        Ok(out)
    }

    fn transport_bytes(&self) -> Vec<u8> {
        match &self.transport {
            Transport::Udp {
                src_port,
                dst_port,
                payload,
            } => {
                let len = (8 + payload.len()) as u16;
                let mut b = Vec::with_capacity(usize::from(len));
                b.extend_from_slice(&src_port.to_be_bytes());
                b.extend_from_slice(&dst_port.to_be_bytes());
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                b
            }
            Transport::TcpSyn {
                src_port,
                dst_port,
                seq,
            } => {
                let mut b = Vec::with_capacity(20);
                b.extend_from_slice(&src_port.to_be_bytes());
                b.extend_from_slice(&dst_port.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes()); // ack
                b.push(5 << 4); // data offset: 5 words, no options
                b.push(0x02); // SYN
                b.extend_from_slice(&64_240u16.to_be_bytes()); // window
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                b
            }
            Transport::Icmpv4 { ty, code, body } | Transport::Icmpv6 { ty, code, body } => {
                let mut b = vec![*ty, *code, 0, 0];
                b.extend_from_slice(body);
                b
            }
        }
    }
}

fn checksum_offset(t: &Transport) -> usize {
    match t {
        Transport::Udp { .. } => 6,
        Transport::TcpSyn { .. } => 16,
        Transport::Icmpv4 { .. } | Transport::Icmpv6 { .. } => 2,
    }
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, segment: &[u8]) -> Vec<u8> {
    let total = (20 + segment.len()) as u16;
    let mut h = Vec::with_capacity(usize::from(total));
    h.push(0x45); // version 4, 5 words
    h.push(0); // DSCP/ECN
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&0x4242u16.to_be_bytes()); // identification
    h.extend_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    h.push(ttl);
    h.push(proto);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, hop_limit: u8, segment: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(40 + segment.len());
    h.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class, no flow label
    h.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    h.push(proto);
    h.push(hop_limit);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.push(0);
    p.push(proto);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`: the one's complement
/// of the one's-complement sum of 16-bit big-endian words, an odd last byte padded with 0.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for byte in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `packet` from the calling thread's network namespace with a raw `IPPROTO_RAW`
/// socket. `via` only chooses the route (and, for IPv6 link-local or multicast, the
/// interface through `scope_id`); the header goes out exactly as built.
pub fn send(packet: &Packet, via: SocketAddr) -> io::Result<()> {
    RawSender::open(via.is_ipv4())?.send(packet, via)
}

/// One raw socket for many forged packets of one family (a flood opens it once).
#[derive(Debug)]
pub struct RawSender {
    socket: Socket,
    v4: bool,
}

impl RawSender {
    pub fn open(v4: bool) -> io::Result<RawSender> {
        let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(PROTO_RAW)))?;
        Ok(RawSender { socket, v4 })
    }

    /// Sends `packet` as it is, routed via `via` (see [`send`]).
    pub fn send(&self, packet: &Packet, via: SocketAddr) -> io::Result<()> {
        let bytes = packet
            .bytes()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if via.is_ipv4() != self.v4 || via.is_ipv4() != packet.src.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("route via {via} for an {} packet", family(packet.src)),
            ));
        }
        let sent = self.socket.send_to(&bytes, &SockAddr::from(via))?;
        if sent != bytes.len() {
            return Err(io::Error::other(format!(
                "raw socket sent {sent} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }
}

/// `via` for IPv6 link-scope destinations: `addr` on interface `iface` (e.g. `eth0`).
pub fn via_link(addr: Ipv6Addr, iface: &str) -> io::Result<SocketAddr> {
    let index = nix::net::if_::if_nametoindex(iface).map_err(io::Error::from)?;
    Ok(SocketAddr::V6(SocketAddrV6::new(addr, 0, 0, index)))
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// A raw socket that receives every packet of one IP protocol arriving in the namespace it
/// was opened in (ICMPv6 comes without the IPv6 header, the others with the IPv4 header).
#[derive(Debug)]
pub struct Sniffer {
    // A raw socket behind std's UDP type: `recv_from` is the same `recvfrom(2)` for both, and
    // std turns the source address into a `SocketAddr` without unsafe code.
    socket: std::net::UdpSocket,
}

impl Sniffer {
    /// Opens it; call inside the namespace (e.g. with [`super::netns::run_in`]).
    pub fn open(v6: bool, proto: u8) -> io::Result<Sniffer> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(proto))))?;
        Ok(Sniffer {
            socket: socket.into(),
        })
    }

    /// Every packet that arrives within `window`, with its source.
    pub fn collect(&self, window: Duration) -> io::Result<Vec<(IpAddr, Vec<u8>)>> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => out.push((from.ip().to_canonical(), buf[..n].to_vec())),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(out);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// RFC 1071 §3's worked example: the sum of 0001 f203 f4f5 f6f7 is ddf2.
    #[test]
    fn checksum_matches_the_rfc_1071_example() {
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        // Split anywhere, odd parts included: the same sum.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2], &[0x03, 0xf4, 0xf5, 0xf6], &[0xf7]]),
            !0xddf2
        );
        assert_eq!(checksum(&[&[0xab]]), !0xab00);
    }

    /// A UDP/IPv4 packet byte for byte; the two checksums were computed apart from this
    /// code (RFC 1071 by hand over the same header and pseudo-header).
    #[test]
    fn udp_over_ipv4_is_byte_exact() {
        let p = Packet::udp(v4("10.0.0.1:40000"), v4("10.0.0.2:53"), b"hi\n");
        let b = p.bytes().unwrap();
        assert_eq!(
            b,
            [
                0x45, 0x00, 0x00, 0x1f, 0x42, 0x42, 0x40, 0x00, 0x40, 0x11, 0xe4, 0x89, 10, 0, 0,
                1, 10, 0, 0, 2, // IPv4 header
                0x9c, 0x40, 0x00, 0x35, 0x00, 0x0b, 0xdc, 0xf6, b'h', b'i', b'\n', // UDP
            ]
        );
    }

    /// A valid checksum sums (with the pseudo-header) to 0 after complementing.
    fn verifies(pseudo: &[u8], segment: &[u8]) -> bool {
        checksum(&[pseudo, segment]) == 0
    }

    #[test]
    fn every_transport_checksum_verifies_in_both_families() {
        let pairs = [
            (v4("192.0.2.1:1000"), v4("10.244.1.10:2000")),
            (
                "[fd00:244:1::10]:1000".parse().unwrap(),
                "[2001:db8::1]:2000".parse().unwrap(),
            ),
        ];
        for (src, dst) in pairs {
            for p in [
                Packet::udp(src, dst, b"odd length payload!"),
                Packet::udp(src, dst, b""),
                Packet::tcp_syn(src, dst, 0xdead_beef),
            ] {
                let b = p.bytes().unwrap();
                let (hdr, seg, proto) = if src.is_ipv4() {
                    assert_eq!(checksum(&[&b[..20]]), 0, "IPv4 header checksum");
                    (20, &b[20..], b[9])
                } else {
                    assert_eq!(usize::from(u16::from_be_bytes([b[4], b[5]])), b.len() - 40);
                    (40, &b[40..], b[6])
                };
                assert!(hdr + seg.len() == b.len());
                let pseudo = match (src.ip(), dst.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s, d, proto, seg.len()),
                    (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(s, d, proto, seg.len()),
                    _ => unreachable!(),
                };
                assert!(verifies(&pseudo, seg), "{p:?}");
                assert_eq!(u16::from_be_bytes([seg[0], seg[1]]), src.port());
                assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), dst.port());
            }
        }
    }

    #[test]
    fn icmpv6_neighbor_solicitation_has_hop_limit_255_and_a_valid_checksum() {
        let src: Ipv6Addr = "fe80::10".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
        let target: Ipv6Addr = "fe80::1".parse().unwrap();
        let b = Packet::neighbor_solicit(src, dst, target).bytes().unwrap();
        assert_eq!(b[0] >> 4, 6);
        assert_eq!(b[6], PROTO_ICMPV6);
        assert_eq!(b[7], 255);
        assert_eq!(&b[8..24], &src.octets());
        assert_eq!(&b[24..40], &dst.octets());
        let seg = &b[40..];
        assert_eq!(seg[0], ND_NEIGHBOR_SOLICIT);
        assert_eq!(&seg[8..24], &target.octets());
        assert!(verifies(&pseudo_v6(src, dst, PROTO_ICMPV6, seg.len()), seg));
    }

    #[test]
    fn icmpv4_checksum_covers_only_the_message() {
        let p = Packet::icmpv4(
            "10.244.1.10".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            ICMPV4_ECHO_REQUEST,
            &[0, 1, 0, 1, b'x'],
        );
        let b = p.bytes().unwrap();
        assert_eq!(b[9], PROTO_ICMP);
        assert_eq!(checksum(&[&b[20..]]), 0);
    }

    #[test]
    fn mismatched_packets_are_refused() {
        let mixed = Packet::udp(v4("10.0.0.1:1"), "[::1]:2".parse().unwrap(), b"");
        assert!(matches!(mixed.bytes(), Err(ForgeError::MixedFamilies(..))));
        let mut wrong = Packet::icmpv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 8, b"");
        wrong.src = Ipv6Addr::LOCALHOST.into();
        wrong.dst = Ipv6Addr::LOCALHOST.into();
        assert!(matches!(wrong.bytes(), Err(ForgeError::WrongIcmp(..))));
        let huge = Packet::udp(v4("10.0.0.1:1"), v4("10.0.0.2:2"), &vec![0; 65_530]);
        assert!(matches!(huge.bytes(), Err(ForgeError::TooLong(_))));
        assert!(
            send(
                &Packet::udp(v4("10.0.0.1:1"), v4("10.0.0.2:2"), b""),
                "[::1]:0".parse().unwrap()
            )
            .is_err()
        );
    }
}
