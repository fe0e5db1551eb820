//! Waking both ends of an idle TCP connection the fast path revoked, so that they learn of it
//! now rather than with their next segment.
//!
//! A revoked flow's conntrack mark makes the capture answer its next packet, from either side,
//! with a reset. An idle connection sends none, and the reset needs a sequence number only the
//! ends know. So each end gets a SYN for the connection it holds: a TCP stack answers a SYN on
//! an established connection with a challenge ACK (RFC 5961, section 4) carrying its exact
//! sequence numbers, whatever the SYN's own sequence number was; the capture meets that ACK
//! with `reject with tcp reset`, whose sequence number the ACK gave, and the end closes the
//! connection. The SYN itself changes nothing at either end.
//!
//! Sent from raw sockets in the calling thread's network namespace (needs `CAP_NET_RAW` and
//! `CAP_NET_ADMIN` for the mark), outside conntrack (the capture's `challenge_untracked`
//! chain), with the addresses each end knows: towards the pod from what it addressed (a
//! ClusterIP, for a flow kube-proxy translated), towards the far end from the pod.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const IPPROTO_RAW: i32 = 255;
const TCP: u8 = 6;
const TCP_HEADER: usize = 20;
const SYN: u8 = 0x02;

/// Raw sockets for the challenge SYNs, opened when first needed.
#[derive(Debug)]
pub struct Challenger {
    mark: u32,
    v4: Option<Socket>,
    v6: Option<Socket>,
}

impl Challenger {
    /// `mark`: the packet mark the capture sends out untracked ([`FlowMark::revoked`]).
    ///
    /// [`FlowMark::revoked`]: crate::FlowMark::revoked
    pub fn new(mark: u32) -> Self {
        Challenger {
            mark,
            v4: None,
            v6: None,
        }
    }

    /// Sends a SYN from `from` to `to` for the connection between them (`seq`: any value).
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, seq: u32) -> io::Result<()> {
        let packet = syn(from, to, seq)?;
        let slot = if to.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        if slot.is_none() {
            let domain = if to.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            // IPPROTO_RAW: the packet carries its own IP header (IP_HDRINCL, IPV6_HDRINCL).
            let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
                .map_err(|e| io::Error::new(e.kind(), format!("raw socket: {e}")))?;
            socket
                .set_mark(self.mark)
                .map_err(|e| io::Error::new(e.kind(), format!("SO_MARK on a raw socket: {e}")))?;
            *slot = Some(socket);
        }
        let socket = slot.as_ref().expect("opened above");
        // The port of a raw socket's address is the protocol; 0 keeps the socket's own.
        let sent = socket.send_to(&packet, &SockAddr::from(SocketAddr::new(to.ip(), 0)))?;
        if sent != packet.len() {
            return Err(io::Error::other("challenge SYN sent in part"));
        }
        Ok(())
    }
}

/// The IP packet of a bare SYN (no options) from `from` to `to`.
fn syn(from: SocketAddr, to: SocketAddr, seq: u32) -> io::Result<Vec<u8>> {
    let mut tcp = [0u8; TCP_HEADER];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = (TCP_HEADER as u8 / 4) << 4;
    tcp[13] = SYN;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut packet = Vec::with_capacity(60);
    match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut sum = Checksum::default();
            sum.add(&s.octets());
            sum.add(&d.octets());
            sum.add(&[0, TCP, 0, TCP_HEADER as u8]);
            sum.add(&tcp);
            tcp[16..18].copy_from_slice(&sum.finish().to_be_bytes());
            // The kernel fills in the total length, the identification and the checksum.
            packet.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, TCP, 0, 0]);
            packet.extend_from_slice(&s.octets());
            packet.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut sum = Checksum::default();
            sum.add(&s.octets());
            sum.add(&d.octets());
            sum.add(&(TCP_HEADER as u32).to_be_bytes());
            sum.add(&[0, 0, 0, TCP]);
            sum.add(&tcp);
            tcp[16..18].copy_from_slice(&sum.finish().to_be_bytes());
            packet.extend_from_slice(&[0x60, 0, 0, 0]);
            packet.extend_from_slice(&(TCP_HEADER as u16).to_be_bytes());
            packet.extend_from_slice(&[TCP, 64]);
            packet.extend_from_slice(&s.octets());
            packet.extend_from_slice(&d.octets());
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{from} and {to} are of different families"),
            ));
        }
    }
    packet.extend_from_slice(&tcp);
    Ok(packet)
}

/// The Internet checksum (RFC 1071) over byte runs of even length.
#[derive(Default)]
struct Checksum(u32);

impl Checksum {
    fn add(&mut self, bytes: &[u8]) {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            self.0 += u32::from(word);
        }
    }

    fn finish(self) -> u16 {
        let mut s = self.0;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A checksum over a packet that carries its own is 0 (RFC 1071).
    fn verifies(pseudo_and_segment: &[&[u8]]) -> bool {
        let mut sum = Checksum::default();
        for b in pseudo_and_segment {
            sum.add(b);
        }
        sum.finish() == 0
    }

    #[test]
    fn an_ipv4_syn_carries_the_ports_flags_and_a_valid_checksum() {
        let p = syn(sa("192.0.2.10:8080"), sa("10.244.1.10:40000"), 7).unwrap();
        assert_eq!(p.len(), 40);
        assert_eq!(p[0], 0x45);
        assert_eq!(p[9], TCP);
        assert_eq!(&p[12..16], &[192, 0, 2, 10]);
        assert_eq!(&p[16..20], &[10, 244, 1, 10]);
        let tcp = &p[20..];
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 8080);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 40000);
        assert_eq!(tcp[13], SYN);
        assert!(verifies(&[&p[12..20], &[0, TCP, 0, 20], tcp]));
    }

    #[test]
    fn an_ipv6_syn_has_its_header_and_a_valid_checksum() {
        let p = syn(sa("[fd00:10:244:1::10]:40000"), sa("[2001:db8::10]:443"), 9).unwrap();
        assert_eq!(p.len(), 60);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 20);
        assert_eq!(p[6], TCP);
        let tcp = &p[40..];
        assert!(verifies(&[&p[8..40], &[0, 0, 0, 20, 0, 0, 0, TCP], tcp]));
    }

    #[test]
    fn mixed_families_are_refused() {
        assert!(syn(sa("10.0.0.1:1"), sa("[::1]:2"), 0).is_err());
    }
}
