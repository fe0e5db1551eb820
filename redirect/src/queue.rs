//! The kernel's packet queue (`nfnetlink_queue`): the first packet of each new pod flow waits
//! in a queue until the gateway gives it a verdict and a mark (the fast path, see
//! [`render`](crate::render())).
//!
//! Our own small netlink implementation, like [`conntrack`](crate::conntrack): the crates
//! there are cannot attach a mark to a verdict without also trusting the kernel's framing
//! blindly (`nfq` asserts on short error messages), and rust-netlink's netfilter packets
//! have no queue subsystem. What this needs is four messages: bind, configure, receive a
//! packet, send a verdict.
//!
//! No `fail-open` flag and no `bypass` on the rule: with no reader, or a full queue, the
//! kernel drops the packet, so a stopped gateway lets nothing through undecided.

use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recv, recvmmsg};

use socket2::Socket;

use crate::netlink::{
    self, Attrs, Message, Messages, NFGENMSG_LEN, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_MIN_TYPE, be32, error_code, malformed,
};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
/// Hand GSO packets over as they are: only the headers are read, and a re-decided flow's
/// large segments are common.
const NFQA_CFG_F_GSO: u32 = 0x4;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_PAYLOAD: u16 = 10;

const NF_DROP: u32 = 0;
const NF_REPEAT: u32 = 4;

/// How many bytes of each packet the kernel copies: the IP header (with IPv6 extension
/// headers) and the transport header's ports and flags.
pub const COPY_RANGE: u32 = 128;

/// How long [`PacketQueue::receive_waiting`] waits at most: a reader looks at its stop flag
/// this often.
pub const WAIT: Duration = Duration::from_millis(100);
/// Room for one queued packet's message in a batch receive: far more than it takes (its
/// headers and attributes with [`COPY_RANGE`] bytes of packet come to about 250 bytes), so
/// none is ever cut short.
const SLOT: usize = 4096;

/// A queued packet: what the verdict needs and the headers it is decided on.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Which packet the verdict is for.
    pub id: u32,
    /// The queue it arrived on.
    pub queue: u16,
    /// The packet mark when it was queued.
    pub mark: u32,
    /// The interface it came in on (0 when unknown).
    pub in_interface: u32,
    /// The first [`COPY_RANGE`] bytes of the packet, from its IP header.
    pub headers: Vec<u8>,
}

/// What to do with a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueVerdict {
    /// Drop it.
    Drop,
    /// Run the capture chain again with this packet mark: the chain reads the decision from
    /// the mark (see [`render`](crate::render())).
    Repeat { mark: u32 },
}

/// One bound queue: a netlink socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct PacketQueue {
    socket: Socket,
    queue: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl PacketQueue {
    /// Binds queue `queue` (taking it over from a reader that is gone) with room for
    /// `max_len` waiting packets. Fails when another live process holds it.
    pub fn bind(queue: u16, max_len: u32) -> io::Result<Self> {
        let socket = netlink::socket("nfnetlink_queue")?;
        // Bursts of new flows must not overrun the socket: each waiting packet is ~200 bytes.
        let _ = socket.set_recv_buffer_size(8 << 20);
        let mut q = PacketQueue {
            socket,
            queue,
            seq: 0,
            buf: vec![0; 64 * 1024],
        };
        q.command(NFQNL_CFG_CMD_BIND)?;
        let mut params = COPY_RANGE.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_PACKET);
        q.config(|m| {
            m.attr(NFQA_CFG_PARAMS, &params);
        })?;
        q.config(|m| {
            m.attr(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes());
        })?;
        q.config(|m| {
            m.attr(NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes())
                .attr(NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes());
        })?;
        // Blocking, with a timeout: `receive_waiting` sleeps in the receive itself (no poll
        // before it); `receive` asks not to wait.
        q.socket.set_read_timeout(Some(WAIT))?;
        Ok(q)
    }

    /// The queue number.
    pub fn number(&self) -> u16 {
        self.queue
    }

    fn command(&mut self, command: u8) -> io::Result<()> {
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; __be16 pf; }
        let cmd = [command, 0, 0, 0];
        self.config(|m| {
            m.attr(NFQA_CFG_CMD, &cmd);
        })
    }

    /// Sends one config message and waits for its acknowledgement (blocking: only while
    /// binding, before the socket is non-blocking).
    fn config(&mut self, fill: impl FnOnce(&mut Message)) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let ty = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG;
        let mut m = Message::new(ty, NLM_F_REQUEST | NLM_F_ACK, self.seq, 0, self.queue);
        fill(&mut m);
        self.socket.send(&m.finish()?)?;
        loop {
            let n = (&self.socket).read(&mut self.buf)?;
            for msg in Messages(&self.buf[..n]) {
                if msg.ty == NLMSG_ERROR && msg.seq == self.seq {
                    return match error_code(msg.body)? {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
            }
        }
    }

    /// Reads what one `recv` holds into `out` (appending). `WouldBlock` when nothing is
    /// waiting; malformed messages are skipped, not fatal.
    pub fn receive(&mut self, out: &mut Vec<Queued>) -> io::Result<usize> {
        let n = recv(
            self.socket.as_raw_fd(),
            &mut self.buf,
            MsgFlags::MSG_DONTWAIT,
        )?;
        let before = out.len();
        take_packets(&self.buf[..n], out);
        Ok(out.len() - before)
    }

    /// Waits up to [`WAIT`] for a queued packet and reads it with every other one waiting
    /// (up to 16), in one system call (`recvmmsg`, `MSG_WAITFORONE`), appending to `out`.
    /// `Ok(0)` when none came.
    pub fn receive_waiting(&mut self, out: &mut Vec<Queued>) -> io::Result<usize> {
        let mut lengths = [0usize; 64 * 1024 / SLOT];
        let received = {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
                .buf
                .chunks_exact_mut(SLOT)
                .map(|chunk| [IoSliceMut::new(chunk)])
                .collect();
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
            match recvmmsg(
                self.socket.as_raw_fd(),
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => {
                    let mut n = 0;
                    for (len, msg) in lengths.iter_mut().zip(msgs) {
                        *len = msg.bytes;
                        n += 1;
                    }
                    n
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            }
        };
        let before = out.len();
        for (i, &len) in lengths[..received].iter().enumerate() {
            take_packets(&self.buf[i * SLOT..][..len.min(SLOT)], out);
        }
        Ok(out.len() - before)
    }

    /// Gives packet `id` its verdict.
    pub fn verdict(&mut self, id: u32, verdict: QueueVerdict) -> io::Result<()> {
        self.verdicts(&[(id, verdict)])
    }

    /// Gives each packet its verdict, all in one message batch (one system call).
    pub fn verdicts(&mut self, verdicts: &[(u32, QueueVerdict)]) -> io::Result<()> {
        let ty = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT;
        let mut bytes = Vec::with_capacity(verdicts.len() * 40);
        for &(id, verdict) in verdicts {
            let mut m = Message::new(ty, NLM_F_REQUEST, 0, 0, self.queue);
            let (code, mark) = match verdict {
                QueueVerdict::Drop => (NF_DROP, None),
                QueueVerdict::Repeat { mark } => (NF_REPEAT, Some(mark)),
            };
            // struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
            let mut header = [0u8; 8];
            header[..4].copy_from_slice(&code.to_be_bytes());
            header[4..].copy_from_slice(&id.to_be_bytes());
            m.attr(NFQA_VERDICT_HDR, &header);
            if let Some(mark) = mark {
                m.attr(NFQA_MARK, &mark.to_be_bytes());
            }
            bytes.extend_from_slice(&m.finish()?);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        loop {
            match self.socket.send(&bytes) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases the queue: the kernel drops what arrives for it until someone binds it.
    pub fn unbind(mut self) -> io::Result<()> {
        self.socket.set_nonblocking(false)?;
        self.command(NFQNL_CFG_CMD_UNBIND)
    }
}

impl AsFd for PacketQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for PacketQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The packets of one received datagram, appended to `out`: verdict errors (a packet that
/// was gone) and malformed messages are skipped.
fn take_packets(datagram: &[u8], out: &mut Vec<Queued>) {
    for msg in Messages(datagram) {
        if msg.ty == NLMSG_ERROR {
            // An error about one of our verdicts (the packet was gone): nothing to do.
            continue;
        }
        if msg.ty < NLMSG_MIN_TYPE || msg.ty == NLMSG_DONE {
            continue;
        }
        if msg.ty != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            continue;
        }
        if let Ok(q) = parse_packet(msg.body) {
            out.push(q);
        }
    }
}

/// A `NFQNL_MSG_PACKET` body: `nfgenmsg` (queue number in `res_id`), then attributes.
fn parse_packet(body: &[u8]) -> io::Result<Queued> {
    let queue = body
        .get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| malformed("no nfgenmsg"))?;
    let attrs = body
        .get(NFGENMSG_LEN..)
        .ok_or_else(|| malformed("no nfgenmsg"))?;
    let mut id = None;
    let mut q = Queued {
        id: 0,
        queue,
        mark: 0,
        in_interface: 0,
        headers: Vec::new(),
    };
    for (ty, payload) in Attrs(attrs) {
        match ty {
            // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; u8 hook; }
            NFQA_PACKET_HDR => id = be32(payload),
            NFQA_MARK => q.mark = be32(payload).unwrap_or(0),
            NFQA_IFINDEX_INDEV => q.in_interface = be32(payload).unwrap_or(0),
            NFQA_PAYLOAD => q.headers = payload.to_vec(),
            _ => {}
        }
    }
    q.id = id.ok_or_else(|| malformed("no packet header"))?;
    Ok(q)
}

/// A verdict message for tests of the framing (the kernel's view of it).
#[cfg(test)]
fn verdict_attrs(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    Attrs(&bytes[netlink::NLMSG_HDRLEN + NFGENMSG_LEN..])
        .map(|(t, p)| (t, p.to_vec()))
        .collect()
}

/// What `/proc/net/netfilter/nfnetlink_queue` says about one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: u16,
    /// Packets waiting now.
    pub waiting: u64,
    /// Dropped because the queue was full.
    pub queue_dropped: u64,
    /// Dropped because the reader's socket buffer was full.
    pub user_dropped: u64,
}

/// Parses `/proc/net/netfilter/nfnetlink_queue` (of the calling thread's namespace): one line
/// per bound queue, `queue portid waiting copy_mode copy_range queue_dropped user_dropped
/// id_sequence 1`.
pub fn parse_stats(text: &str) -> Vec<QueueStats> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<u64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some(QueueStats {
                queue: u16::try_from(*f.first()?).ok()?,
                waiting: *f.get(2)?,
                queue_dropped: *f.get(5)?,
                user_dropped: *f.get(6)?,
            })
        })
        .collect()
}

/// The statistics of the queues bound in this namespace.
pub fn stats() -> io::Result<Vec<QueueStats>> {
    // thread-self: the namespace of this thread, which the lab and the tests enter per thread.
    match std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue") {
        Ok(text) => Ok(parse_stats(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_message(id: u32, mark: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Message::new(NFNL_SUBSYS_QUEUE << 8, 0, 0, 2, 101);
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 0]);
        m.attr(NFQA_PACKET_HDR, &hdr)
            .attr(NFQA_MARK, &mark.to_be_bytes())
            .attr(NFQA_IFINDEX_INDEV, &7u32.to_be_bytes())
            .attr(NFQA_PAYLOAD, payload);
        m.finish().unwrap()
    }

    #[test]
    fn a_packet_message_gives_id_mark_interface_and_headers() {
        let bytes = packet_message(42, 0x1000, &[0x45, 1, 2]);
        let msg = Messages(&bytes).next().unwrap();
        let q = parse_packet(msg.body).unwrap();
        assert_eq!(
            (q.id, q.queue, q.mark, q.in_interface),
            (42, 101, 0x1000, 7)
        );
        assert_eq!(q.headers, vec![0x45, 1, 2]);
    }

    #[test]
    fn a_packet_without_its_header_is_skipped() {
        let mut m = Message::new(NFNL_SUBSYS_QUEUE << 8, 0, 0, 2, 101);
        m.attr(NFQA_PAYLOAD, &[1]);
        let bytes = m.finish().unwrap();
        let msg = Messages(&bytes).next().unwrap();
        assert!(parse_packet(msg.body).is_err());
        assert!(parse_packet(&[0]).is_err());
    }

    #[test]
    fn a_repeat_verdict_carries_the_mark() {
        let ty = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT;
        let mut m = Message::new(ty, NLM_F_REQUEST, 0, 0, 100);
        let mut header = NF_REPEAT.to_be_bytes().to_vec();
        header.extend_from_slice(&9u32.to_be_bytes());
        m.attr(NFQA_VERDICT_HDR, &header);
        m.attr(NFQA_MARK, &0x0005_0000u32.to_be_bytes());
        let attrs = verdict_attrs(&m.finish().unwrap());
        assert_eq!(attrs[0], (NFQA_VERDICT_HDR, vec![0, 0, 0, 4, 0, 0, 0, 9]));
        assert_eq!(attrs[1], (NFQA_MARK, vec![0, 5, 0, 0]));
    }

    #[test]
    fn proc_stats_are_read_per_queue() {
        let text = "  100  12345     0 2   128     3     4       99  1\n  101  12346     5 2   128     0     0       12  1\nnot a line\n";
        let s = parse_stats(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            QueueStats {
                queue: 100,
                waiting: 0,
                queue_dropped: 3,
                user_dropped: 4
            }
        );
        assert_eq!(s[1].waiting, 5);
    }
}
