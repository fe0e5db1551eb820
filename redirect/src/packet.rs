//! The 5-tuple of a queued packet's headers (IPv4 or IPv6, TCP or UDP), read the way
//! conntrack reads it: IPv6 extension headers are skipped to the transport header. A pod
//! writes these bytes, so every read is bounds-checked and anything unexpected is an error,
//! never a panic or a guess.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::spec::L4;

/// The addresses and protocol of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub protocol: L4,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// A TCP segment with SYN set and ACK clear: the first packet of a connection.
    pub syn: bool,
}

/// Why a packet has no usable 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("the headers are cut short")]
    Truncated,
    #[error("not IPv4 or IPv6")]
    NotIp,
    #[error("not TCP or UDP (protocol {0})")]
    Protocol(u8),
    #[error("a fragment after the first")]
    Fragment,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Reads the tuple of `packet` (starting at the IP header).
pub fn parse(packet: &[u8]) -> Result<Tuple, PacketError> {
    let version = packet.first().ok_or(PacketError::Truncated)? >> 4;
    let (protocol, src, dst, l4) = match version {
        4 => ipv4(packet)?,
        6 => ipv6(packet)?,
        _ => return Err(PacketError::NotIp),
    };
    let protocol = match protocol {
        TCP => L4::Tcp,
        UDP => L4::Udp,
        other => return Err(PacketError::Protocol(other)),
    };
    let header_len = if protocol == L4::Tcp { 14 } else { 4 };
    let ports = l4.get(..header_len).ok_or(PacketError::Truncated)?;
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    // Flags byte of the TCP header: SYN 0x02, ACK 0x10.
    let syn = protocol == L4::Tcp && ports[13] & 0x12 == 0x02;
    Ok(Tuple {
        protocol,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        syn,
    })
}

type Headers<'a> = (u8, IpAddr, IpAddr, &'a [u8]);

fn ipv4(p: &[u8]) -> Result<Headers<'_>, PacketError> {
    let header = p.get(..20).ok_or(PacketError::Truncated)?;
    let ihl = usize::from(header[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::Truncated);
    }
    // Fragment offset non-zero: no transport header here (conntrack reassembles before the
    // queue, so this is a packet no gateway should guess about).
    if u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0 {
        return Err(PacketError::Fragment);
    }
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let l4 = p.get(ihl..).ok_or(PacketError::Truncated)?;
    Ok((header[9], src.into(), dst.into(), l4))
}

fn ipv6(p: &[u8]) -> Result<Headers<'_>, PacketError> {
    let header = p.get(..40).ok_or(PacketError::Truncated)?;
    let addr = |at: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&header[at..at + 16]);
        Ipv6Addr::from(o)
    };
    let (src, dst) = (addr(8), addr(24));
    let mut next = header[6];
    let mut rest = &p[40..];
    // Hop-by-hop, routing, destination options: skip; a fragment header with a non-zero
    // offset has no transport header. At most a handful: a chain longer than the copied
    // headers ends in Truncated anyway.
    loop {
        match next {
            0 | 43 | 60 => {
                let h = rest.get(..2).ok_or(PacketError::Truncated)?;
                let len = (usize::from(h[1]) + 1) * 8;
                next = h[0];
                rest = rest.get(len..).ok_or(PacketError::Truncated)?;
            }
            44 => {
                let h = rest.get(..8).ok_or(PacketError::Truncated)?;
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    return Err(PacketError::Fragment);
                }
                next = h[0];
                rest = &rest[8..];
            }
            _ => return Ok((next, src.into(), dst.into(), rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(protocol: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        p.extend_from_slice(&[10, 244, 1, 10, 10, 0, 2, 1]);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&[0; 9]);
        h.push(flags);
        h.extend_from_slice(&[0; 6]);
        h
    }

    #[test]
    fn an_ipv4_syn_gives_its_tuple() {
        let t = parse(&v4(TCP, &tcp(40000, 443, 0x02))).unwrap();
        assert_eq!(t.protocol, L4::Tcp);
        assert_eq!(t.src, "10.244.1.10:40000".parse().unwrap());
        assert_eq!(t.dst, "10.0.2.1:443".parse().unwrap());
        assert!(t.syn);
        assert!(!parse(&v4(TCP, &tcp(40000, 443, 0x12))).unwrap().syn);
    }

    #[test]
    fn ipv6_extension_headers_are_skipped_to_udp() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        p.extend_from_slice(&"fd00:244:1::10".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00:2::1".parse::<Ipv6Addr>().unwrap().octets());
        // Destination options (8 bytes) then UDP.
        p.extend_from_slice(&[UDP, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        let t = parse(&p).unwrap();
        assert_eq!(t.protocol, L4::Udp);
        assert_eq!(t.dst, "[fd00:2::1]:53".parse().unwrap());
        p[6] = 60;
        assert_eq!(parse(&p).unwrap().src.port(), 40000);
    }

    #[test]
    fn what_a_pod_can_forge_is_an_error_not_a_panic() {
        assert_eq!(parse(&[]), Err(PacketError::Truncated));
        assert_eq!(parse(&[0x45; 10]), Err(PacketError::Truncated));
        assert_eq!(parse(&v4(1, &[8, 0, 0, 0])), Err(PacketError::Protocol(1)));
        assert_eq!(parse(&v4(TCP, &[0; 6])), Err(PacketError::Truncated));
        let mut frag = v4(UDP, &[0; 8]);
        frag[7] = 1;
        assert_eq!(parse(&frag), Err(PacketError::Fragment));
        let mut bad_ihl = v4(UDP, &[0; 8]);
        bad_ihl[0] = 0x4f;
        assert_eq!(parse(&bad_ihl), Err(PacketError::Truncated));
        assert_eq!(parse(&[0x20; 40]), Err(PacketError::NotIp));
        // Every prefix of a valid packet, and every single-byte change, parses or errs.
        let good = v4(TCP, &tcp(1, 2, 2));
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
            for b in [0u8, 0xff, 0x60, 0x45] {
                let mut p = good.clone();
                p[n] = b;
                let _ = parse(&p);
            }
        }
    }
}
