//! The netfilter netlink framing shared by [`conntrack`](crate::conntrack), the packet queue
//! ([`queue`](crate::queue)) and the queue rule ([`queue_rule`](crate::queue_rule)): message
//! headers, attributes, and bounds-checked reads of what the kernel sends. Nothing here
//! panics on a short or malformed buffer.

use std::io;

use socket2::{Domain, Protocol, Socket, Type};

pub(crate) const NETLINK_NETFILTER: i32 = 12;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
/// Message types below this are netlink's own (noop, error, done, overrun).
pub(crate) const NLMSG_MIN_TYPE: u16 = 0x10;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NFGENMSG_LEN: usize = 4;

/// nf_tables' netfilter subsystem, its `inet` family, and the element of a nested list.
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;

/// A raw `NETLINK_NETFILTER` socket in the calling thread's network namespace.
pub(crate) fn socket(what: &str) -> io::Result<Socket> {
    Socket::new(
        Domain::from(nix::libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(NETLINK_NETFILTER)),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("netlink socket ({what}): {e}")))
}

/// A netfilter netlink message being built: `nlmsghdr`, `nfgenmsg`, then attributes. The
/// length is filled in by [`Message::finish`].
pub(crate) struct Message(Vec<u8>);

impl Message {
    /// `ty` is `(subsystem << 8) | message`; `res_id` is big-endian on the wire (a queue
    /// number, or the subsystem for a batch).
    pub(crate) fn new(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&[family, 0]);
        b.extend_from_slice(&res_id.to_be_bytes());
        Message(b)
    }

    pub(crate) fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        attr(&mut self.0, ty, payload);
        self
    }

    /// The message with its length set.
    pub(crate) fn finish(mut self) -> io::Result<Vec<u8>> {
        let len = u32::try_from(self.0.len()).map_err(io::Error::other)?;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        Ok(self.0)
    }
}

/// Appends one netlink attribute, padded to 4 bytes.
pub(crate) fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = (4 + payload.len()) as u16;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Sends one request (a message, or a batch of them) whole; `what` names it in the error.
pub(crate) fn send_whole(socket: &Socket, request: &[u8], what: &str) -> io::Result<()> {
    let sent = socket.send(request)?;
    if sent != request.len() {
        return Err(io::Error::other(format!("{what} request sent in part")));
    }
    Ok(())
}

/// A NUL-terminated string attribute payload (nf_tables names).
pub(crate) fn c_string(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// A nested attribute holding `inner` (already a run of attributes).
pub(crate) fn nested(out: &mut Vec<u8>, ty: u16, inner: &[u8]) {
    attr(out, ty | NLA_F_NESTED, inner);
}

pub(crate) fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink message: {what}"),
    )
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A big-endian `u32` attribute payload.
pub(crate) fn be32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

/// The payload of the first attribute of type `ty` in a run of attributes.
pub(crate) fn find(attrs: &[u8], ty: u16) -> Option<&[u8]> {
    Attrs(attrs).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// The attributes of a run, as `(type, payload)`; stops at the first malformed one.
pub(crate) struct Attrs<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        self.0 = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, &b[4..len]))
    }
}

/// One netlink message of a buffer the kernel sent: its type, flags, sequence number and
/// body (after `nlmsghdr`).
pub(crate) struct Received<'a> {
    pub(crate) ty: u16,
    pub(crate) seq: u32,
    pub(crate) body: &'a [u8],
}

/// The messages of one `recv`, in order; stops at the first malformed header.
pub(crate) struct Messages<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Received<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        let len = u32_at(b, 0)? as usize;
        let ty = u16_at(b, 4)?;
        let seq = u32_at(b, 8)?;
        if len < NLMSG_HDRLEN || len > b.len() {
            self.0 = &[];
            return None;
        }
        self.0 = &b[len.next_multiple_of(4).min(b.len())..];
        Some(Received {
            ty,
            seq,
            body: &b[NLMSG_HDRLEN..len],
        })
    }
}

/// The errno of an `NLMSG_ERROR` body (0 is an acknowledgement).
pub(crate) fn error_code(body: &[u8]) -> io::Result<i32> {
    let errno = u32_at(body, 0).ok_or_else(|| malformed("short error"))? as i32;
    Ok(-errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_stop_at_garbage() {
        let mut b = Vec::new();
        attr(&mut b, 1, &[1, 2, 3]);
        attr(&mut b, 2 | NLA_F_NESTED, &[9; 8]);
        b.extend_from_slice(&[200, 0, 3, 0]);
        let got: Vec<_> = Attrs(&b).collect();
        assert_eq!(got, vec![(1, &[1u8, 2, 3][..]), (2, &[9u8; 8][..])]);
        assert_eq!(find(&b, 2), Some(&[9u8; 8][..]));
        assert_eq!(find(&b, 7), None);
    }

    #[test]
    fn a_message_header_carries_its_length() {
        let mut m = Message::new(0x0302, NLM_F_REQUEST, 7, 0, 100);
        m.attr(1, &[0; 4]);
        let b = m.finish().unwrap();
        assert_eq!(u32_at(&b, 0), Some(b.len() as u32));
        assert_eq!(
            &b[NLMSG_HDRLEN + 2..NLMSG_HDRLEN + 4],
            &100u16.to_be_bytes()
        );
        let msgs: Vec<_> = Messages(&b).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].ty, msgs[0].seq), (0x0302, 7));
    }

    #[test]
    fn truncated_messages_end_the_iteration() {
        let b = Message::new(1, 0, 1, 0, 0).finish().unwrap();
        assert_eq!(Messages(&b[..10]).count(), 0);
        let mut long = b.clone();
        long[0] = 200;
        assert_eq!(Messages(&long).count(), 0);
    }
}
