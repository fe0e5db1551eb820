//! The conntrack entries that change and end, as the kernel announces them (ctnetlink's
//! update and destroy multicast groups): how the fast path learns that a flow it counts
//! against a pod's `limits:` is over, without a socket of its own for it.
//!
//! The kernel drops announcements when the socket's buffer is full and says so with
//! `ENOBUFS` on the next read; the caller then reads the whole table again
//! ([`Conntrack::entries`](super::Conntrack::entries)).

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use socket2::Socket;

use super::{Entry, IPCTNL_MSG_CT_NEW, NFNL_SUBSYS_CTNETLINK, parse_entry};
use crate::netlink::{self, Messages};

const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// `NFNLGRP_CONNTRACK_UPDATE` and `NFNLGRP_CONNTRACK_DESTROY`, as `nl_groups` bits.
const GROUPS: u32 = (1 << (2 - 1)) | (1 << (3 - 1));
/// Room for bursts of ending flows (each announcement is about 200 bytes).
const RECEIVE_BUFFER: usize = 8 << 20;

/// One announcement: an entry that changed (its TCP state, say) or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub entry: Entry,
    pub destroyed: bool,
}

/// A non-blocking socket subscribed to the announcements, in the calling thread's network
/// namespace (needs `CAP_NET_ADMIN`).
#[derive(Debug)]
pub struct Events {
    socket: Socket,
    buf: Vec<u8>,
}

impl Events {
    pub fn subscribe() -> io::Result<Self> {
        let socket = netlink::socket("ctnetlink events")?;
        // SO_RCVBUFFORCE passes the system's cap with CAP_NET_ADMIN; the plain size otherwise.
        let forced = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &RECEIVE_BUFFER,
        );
        if forced.is_err() {
            let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
        }
        let addr = nix::sys::socket::NetlinkAddr::new(0, GROUPS);
        nix::sys::socket::bind(socket.as_raw_fd(), &addr).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("subscribing to conntrack events: {e}"),
            )
        })?;
        socket.set_nonblocking(true)?;
        Ok(Events {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Appends the TCP and UDP announcements one read holds to `out`; `Ok(0)` when there are
    /// none now. An error with `ENOBUFS` means some were lost.
    pub fn receive(&mut self, out: &mut Vec<Event>) -> io::Result<usize> {
        let n = match (&self.socket).read(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let before = out.len();
        for m in Messages(&self.buf[..n]) {
            let destroyed = match m.ty {
                t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => false,
                t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE => true,
                _ => continue,
            };
            if let Some(entry) = parse_entry(m.body) {
                out.push(Event { entry, destroyed });
            }
        }
        Ok(out.len() - before)
    }
}

impl AsFd for Events {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
