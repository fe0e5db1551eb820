//! Socket options for transparent proxying (Linux only).
//!
//! Every socket here is non-blocking (ready for `tokio::net::*::from_std`) and close-on-exec.
//! `IP_TRANSPARENT` and `SO_MARK` need `CAP_NET_ADMIN`; the errors say which option failed.
//!
//! IPv6 sockets are IPv6-only (`IPV6_V6ONLY`): serve each family with its own listener on the
//! same port, so addresses are never IPv4-mapped (`::ffff:a.b.c.d`).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, RecvMsg, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmmsg, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// Backlog of [`transparent_tcp_listener`].
pub const LISTEN_BACKLOG: i32 = 1024;

/// Adds what was being done to an error, keeping its kind.
fn context(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn is_v6(domain: Domain) -> io::Result<bool> {
    if domain == Domain::IPV4 {
        Ok(false)
    } else if domain == Domain::IPV6 {
        Ok(true)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{domain:?} is not an IP family"),
        ))
    }
}

fn new_socket(addr: &SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket =
        Socket::new(Domain::for_address(*addr), ty, Some(protocol)).map_err(context("socket"))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(context("IPV6_V6ONLY"))?;
    }
    Ok(socket)
}

fn set_transparent(socket: &Socket, v6: bool) -> io::Result<()> {
    if v6 {
        socket
            .set_ip_transparent_v6(true)
            .map_err(context("IPV6_TRANSPARENT (needs CAP_NET_ADMIN)"))
    } else {
        socket
            .set_ip_transparent_v4(true)
            .map_err(context("IP_TRANSPARENT (needs CAP_NET_ADMIN)"))
    }
}

/// Sets `SO_MARK` on any socket (needs `CAP_NET_ADMIN`).
pub fn set_mark<S: AsFd>(socket: &S, mark: u32) -> io::Result<()> {
    SockRef::from(socket)
        .set_mark(mark)
        .map_err(context("SO_MARK (needs CAP_NET_ADMIN)"))
}

fn bind(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    socket
        .bind(&SockAddr::from(addr))
        .map_err(context(&format!("bind {addr}")))
}

/// The gateway's TCP listener for TPROXY mode: `IP_TRANSPARENT` (v4 or v6), `SO_REUSEADDR`,
/// bound to `addr` (usually `0.0.0.0:port` and `[::]:port`), listening, non-blocking.
///
/// An accepted connection's `local_addr()` is the destination the pod asked for.
pub fn transparent_tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(&addr, Type::STREAM, Protocol::TCP)?;
    socket
        .set_reuse_address(true)
        .map_err(context("SO_REUSEADDR"))?;
    set_transparent(&socket, addr.is_ipv6())?;
    bind(&socket, addr)?;
    socket.listen(LISTEN_BACKLOG).map_err(context("listen"))?;
    socket
        .set_nonblocking(true)
        .map_err(context("O_NONBLOCK"))?;
    Ok(socket.into())
}

/// The gateway's UDP socket for TPROXY mode: `IP_TRANSPARENT`, `SO_REUSEADDR` and
/// `IP_RECVORIGDSTADDR` (or the IPv6 equivalents), bound to `addr`, non-blocking.
/// Read it with [`recv_with_original_dst`].
pub fn transparent_udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    transparent_udp(addr, false)
}

/// [`transparent_udp_socket`] with `SO_REUSEPORT`: each of several such sockets on `addr`
/// gets a share of the flows (the kernel picks one per source by a hash, TPROXY included),
/// so that each can be read by a worker of its own.
pub fn transparent_udp_socket_shared(addr: SocketAddr) -> io::Result<UdpSocket> {
    transparent_udp(addr, true)
}

fn transparent_udp(addr: SocketAddr, shared: bool) -> io::Result<UdpSocket> {
    let socket = new_socket(&addr, Type::DGRAM, Protocol::UDP)?;
    socket
        .set_reuse_address(true)
        .map_err(context("SO_REUSEADDR"))?;
    if shared {
        socket
            .set_reuse_port(true)
            .map_err(context("SO_REUSEPORT"))?;
    }
    set_transparent(&socket, addr.is_ipv6())?;
    if addr.is_ipv6() {
        setsockopt(&socket, sockopt::Ipv6OrigDstAddr, &true)
            .map_err(|e| context("IPV6_RECVORIGDSTADDR")(e.into()))?;
    } else {
        setsockopt(&socket, sockopt::Ipv4OrigDstAddr, &true)
            .map_err(|e| context("IP_RECVORIGDSTADDR")(e.into()))?;
    }
    // Datagrams the kernel drops for want of buffer space are counted, and the count comes
    // with every datagram read (see `Datagram::overflows`).
    setsockopt(&socket, sockopt::RxqOvfl, &1).map_err(|e| context("SO_RXQ_OVFL")(e.into()))?;
    bind(&socket, addr)?;
    socket
        .set_nonblocking(true)
        .map_err(context("O_NONBLOCK"))?;
    Ok(socket.into())
}

/// An ordinary UDP socket bound to `addr` (IPv6-only for IPv6, so both families can take the
/// same port), non-blocking: for traffic REDIRECT sends to a local port, whose replies
/// conntrack rewrites on the way back.
pub fn plain_udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = new_socket(&addr, Type::DGRAM, Protocol::UDP)?;
    bind(&socket, addr)?;
    socket
        .set_nonblocking(true)
        .map_err(context("O_NONBLOCK"))?;
    Ok(socket.into())
}

fn storage_to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(SocketAddr::from(*v4))
    } else {
        addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
    }
}

/// Receives one datagram and its source, whatever the socket (`recvfrom`), without asking a
/// reactor: for use inside `tokio::net::UdpSocket::async_io`, whose own `try_recv_from` would
/// report `WouldBlock` without receiving when the reactor has seen only an error (an ICMP
/// "port unreachable" on a connected socket), where this returns that error. A datagram
/// larger than `buf` is cut to it.
pub fn recv_from<S: AsFd>(socket: &S, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let (n, source) =
        nix::sys::socket::recvfrom::<SockaddrStorage>(socket.as_fd().as_raw_fd(), buf)?;
    let source = source.as_ref().and_then(storage_to_std).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP source")
    })?;
    Ok((n, source))
}

/// Receives one datagram from a socket made by [`transparent_udp_socket`] and returns
/// `(length, source, original destination)`.
///
/// On a non-blocking socket with nothing queued this fails with `WouldBlock`, so it fits
/// `tokio::net::UdpSocket::try_io(Interest::READABLE, …)`. A datagram larger than `buf` is
/// consumed and reported as `InvalidData` (64 KiB always suffices).
pub fn recv_with_original_dst<S: AsFd>(
    socket: &S,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, SocketAddr)> {
    recv_datagram(socket, buf).map(|d| (d.len, d.source, d.original))
}

/// One datagram read by [`recv_datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub len: usize,
    pub source: SocketAddr,
    pub original: SocketAddr,
    /// The socket's count of datagrams the kernel dropped because its receive buffer was
    /// full (`SO_RXQ_OVFL`, cumulative since the socket was made, wrapping at 2³²), when the
    /// kernel reported it: it does only once the count is not zero.
    pub overflows: Option<u32>,
}

/// A socket's receive-overflow count as last seen (see [`Datagram::overflows`]): turns the
/// kernel's cumulative count into what is new, and paces the warning about it.
#[derive(Debug, Default)]
pub struct ReceiveOverflows {
    seen: u32,
    warned_at: Option<std::time::Instant>,
    unwarned: u64,
}

/// What [`ReceiveOverflows::account`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewOverflows {
    /// Datagrams dropped since the count was last seen.
    pub new: u64,
    /// The socket's count.
    pub total: u32,
    /// When a warning is due (at most one per `warn_every`): the drops since the last one.
    pub warn: Option<u64>,
}

impl ReceiveOverflows {
    /// Takes the count a datagram carried; `None` when nothing is new.
    pub fn account(
        &mut self,
        reported: Option<u32>,
        warn_every: std::time::Duration,
    ) -> Option<NewOverflows> {
        let total = reported?;
        // The kernel's count wraps at 2³²; the difference does too.
        let new = u64::from(total.wrapping_sub(self.seen));
        self.seen = total;
        if new == 0 {
            return None;
        }
        self.unwarned += new;
        let warn = self
            .warned_at
            .is_none_or(|t| t.elapsed() >= warn_every)
            .then(|| {
                self.warned_at = Some(std::time::Instant::now());
                std::mem::take(&mut self.unwarned)
            });
        Some(NewOverflows { new, total, warn })
    }
}

/// [`recv_with_original_dst`] plus the socket's receive-overflow count (see
/// [`Datagram::overflows`]; [`transparent_udp_socket`] asks for it).
pub fn recv_datagram<S: AsFd>(socket: &S, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::sockaddr_in6, u32);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    datagram(&msg)
}

/// Receives up to `buf.len() / slot` datagrams with one `recvmmsg` (as many as are queued,
/// without waiting for more) from a socket made by [`transparent_udp_socket`]: datagram `i`
/// is in `buf[i * slot..]`, its length in its [`Datagram`] (or why it was dropped: larger
/// than `slot`, no original destination). `out` is cleared first. Fails with `WouldBlock`
/// when nothing is queued, like [`recv_datagram`]; one system call for a burst of queries
/// instead of one each, plus the one that finds the queue empty.
pub fn recv_datagrams<S: AsFd>(
    socket: &S,
    buf: &mut [u8],
    slot: usize,
    out: &mut Vec<io::Result<Datagram>>,
) -> io::Result<()> {
    out.clear();
    let mut slices: Vec<[IoSliceMut<'_>; 1]> = buf
        .chunks_exact_mut(slot.max(1))
        .map(|chunk| [IoSliceMut::new(chunk)])
        .collect();
    if slices.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "receive buffer smaller than one slot",
        ));
    }
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
        slices.len(),
        Some(nix::cmsg_space!(nix::libc::sockaddr_in6, u32)),
    );
    let received = recvmmsg(
        socket.as_fd().as_raw_fd(),
        &mut headers,
        slices.iter_mut(),
        MsgFlags::empty(),
        None,
    )?;
    out.extend(received.map(|msg| datagram(&msg)));
    Ok(())
}

/// What one received message says: its length, source, original destination and overflow
/// count.
fn datagram(msg: &RecvMsg<'_, '_, SockaddrStorage>) -> io::Result<Datagram> {
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram larger than the receive buffer (dropped)",
        ));
    }
    let source = msg
        .address
        .as_ref()
        .and_then(storage_to_std)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP source")
        })?;
    let mut original = None;
    let mut overflows = None;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| context("control message truncated")(e.into()))?
    {
        match cmsg {
            ControlMessageOwned::Ipv4OrigDstAddr(sin) => {
                original = Some(SocketAddr::from(SockaddrIn::from(sin)));
            }
            ControlMessageOwned::Ipv6OrigDstAddr(sin6) => {
                original = Some(SocketAddr::from(SockaddrIn6::from(sin6)));
            }
            ControlMessageOwned::RxqOvfl(n) => overflows = Some(n),
            _ => {}
        }
    }
    let original = original.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no original destination (socket not made by transparent_udp_socket?)",
        )
    })?;
    Ok(Datagram {
        len: msg.bytes,
        source,
        original,
        overflows,
    })
}

/// Sets the receive buffer to `bytes` with `SO_RCVBUFFORCE` (past `net.core.rmem_max`; needs
/// `CAP_NET_ADMIN`), falling back to `SO_RCVBUF` (capped by `rmem_max`) without it. Returns
/// what the kernel reports (about twice `bytes`: it counts its bookkeeping too).
pub fn set_receive_buffer<S: AsFd>(socket: &S, bytes: usize) -> io::Result<usize> {
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        setsockopt(socket, sockopt::RcvBuf, &bytes).map_err(|e| context("SO_RCVBUF")(e.into()))?;
    }
    nix::sys::socket::getsockopt(socket, sockopt::RcvBuf)
        .map_err(|e| context("SO_RCVBUF")(e.into()))
}

/// A UDP socket bound to a non-local address: `IP_TRANSPARENT` + `SO_REUSEADDR`, bound to
/// `from`, with `SO_MARK = mark` when given, non-blocking.
///
/// Bound to a flow's original destination it answers the pod *from* the address the pod sent
/// to. What happens to the pod's later datagrams of that flow depends on whether it is
/// connected:
/// - unconnected (send with `send_to(pod)`): they keep arriving at the
///   [`transparent_udp_socket`], because `tproxy` only prefers connected sockets;
/// - connected to the pod (`connect(pod)`): `tproxy` finds it first and delivers the flow's
///   datagrams to it, so read them there; other pods' datagrams never reach it.
///
/// Bound to the pod's address (and connected to the original destination) it is an upstream
/// socket that keeps the pod's source address and port; the capture rules route the replies
/// back to it.
pub fn reply_socket(from: SocketAddr, mark: Option<u32>) -> io::Result<UdpSocket> {
    let socket = new_socket(&from, Type::DGRAM, Protocol::UDP)?;
    socket
        .set_reuse_address(true)
        .map_err(context("SO_REUSEADDR"))?;
    set_transparent(&socket, from.is_ipv6())?;
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    bind(&socket, from)?;
    socket
        .set_nonblocking(true)
        .map_err(context("O_NONBLOCK"))?;
    Ok(socket.into())
}

/// A TCP socket for the gateway's upstream connection, not yet connected: `SO_MARK = mark` when
/// given (use the gateway mark, so the capture rules skip it) and, when `local` is given,
/// `IP_TRANSPARENT` and bound to `local:0`, so the connection keeps the pod's source IP. The
/// capture rules route the replies back to it. Non-blocking: connect with
/// `tokio::net::TcpSocket::from_std_stream(socket.into())` or handle `EINPROGRESS`.
pub fn upstream_socket(
    local: Option<IpAddr>,
    remote_family: Domain,
    mark: Option<u32>,
) -> io::Result<Socket> {
    let v6 = is_v6(remote_family)?;
    let socket =
        Socket::new(remote_family, Type::STREAM, Some(Protocol::TCP)).map_err(context("socket"))?;
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    if let Some(ip) = local {
        if ip.is_ipv6() != v6 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("local address {ip} is not of family {remote_family:?}"),
            ));
        }
        set_transparent(&socket, v6)?;
        bind(&socket, SocketAddr::new(ip, 0))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(context("O_NONBLOCK"))?;
    Ok(socket)
}

/// The destination a REDIRECTed TCP connection was originally sent to (`SO_ORIGINAL_DST` for
/// IPv4, `IP6T_SO_ORIGINAL_DST` for IPv6). On a connection that was not NATed it fails with
/// `ENOENT` ("No such file or directory").
pub fn original_dst<S: AsFd>(stream: &S) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let local = socket.local_addr().map_err(context("getsockname"))?;
    let addr = if local.is_ipv6() {
        socket.original_dst_v6()
    } else {
        socket.original_dst_v4()
    }
    .map_err(context("SO_ORIGINAL_DST"))?;
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST returned a non-IP address",
        )
    })
}

/// Copies what has arrived on a stream socket into `buf` without consuming it, and without
/// waiting (`MSG_PEEK | MSG_DONTWAIT`): `WouldBlock` when nothing has arrived, `Ok(0)` when
/// the peer closed. For reading a connection's first bytes before deciding what to do with it.
pub fn peek_now<S: AsFd>(socket: &S, buf: &mut [u8]) -> io::Result<usize> {
    nix::sys::socket::recv(
        socket.as_fd().as_raw_fd(),
        buf,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Needs `CAP_NET_ADMIN` (`IP_TRANSPARENT`), like the netns suites: run as root.
    #[test]
    fn receive_overflows_are_counted_and_reported_with_a_later_datagram() {
        let rx = transparent_udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(set_receive_buffer(&rx, 4096).unwrap() >= 4096);
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        const SENT: u32 = 500;
        for _ in 0..SENT {
            tx.send_to(b"burst", to).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut read = 0u32;
        let drain = |read: &mut u32, buf: &mut [u8]| -> Option<u32> {
            let mut last = None;
            loop {
                match recv_datagram(&rx, buf) {
                    Ok(d) => {
                        *read += 1;
                        assert_eq!(d.original, to);
                        last = d.overflows.or(last);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return last,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        drain(&mut read, &mut buf);
        assert!(
            read < SENT,
            "a 4 KiB buffer holds fewer than {SENT} datagrams"
        );
        // The kernel stamps its count on each datagram it queues: the next one says it all.
        tx.send_to(b"after", to).unwrap();
        let overflows = drain(&mut read, &mut buf).expect("the overflow count is reported");
        assert_eq!(read + overflows, SENT + 1);
    }

    /// Needs `CAP_NET_ADMIN` (`IP_TRANSPARENT`): run as root.
    #[test]
    fn a_burst_is_received_with_one_call_each_datagram_in_its_slot() {
        let rx = transparent_udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = tx.local_addr().unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4 * 16];
        let err = recv_datagrams(&rx, &mut buf, 16, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let sent: [&[u8]; 6] = [b"one", b"two!", &[7u8; 17], b"", b"five", b"six"];
        for d in sent {
            tx.send_to(d, to).unwrap();
        }
        recv_datagrams(&rx, &mut buf, 16, &mut out).unwrap();
        assert_eq!(out.len(), 4, "as many as there are slots");
        for (slot, (got, want)) in out.iter().zip(sent).enumerate() {
            if want.len() > 16 {
                let e = got.as_ref().unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                continue;
            }
            let d = got.as_ref().unwrap();
            assert_eq!((d.source, d.original), (from, to));
            assert_eq!(&buf[slot * 16..][..d.len], want);
        }
        recv_datagrams(&rx, &mut buf, 16, &mut out).unwrap();
        let rest: Vec<Vec<u8>> = out
            .iter()
            .enumerate()
            .map(|(slot, d)| buf[slot * 16..][..d.as_ref().unwrap().len].to_vec())
            .collect();
        assert_eq!(rest, [b"five".to_vec(), b"six".to_vec()], "what was left");
        let err = recv_datagrams(&rx, &mut buf, 16, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn overflows_are_told_as_what_is_new_and_warned_about_at_a_pace() {
        let mut o = ReceiveOverflows::default();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(o.account(None, hour), None);
        let first = o.account(Some(5), hour).unwrap();
        assert_eq!((first.new, first.total, first.warn), (5, 5, Some(5)));
        assert_eq!(o.account(Some(5), hour), None, "nothing new");
        let second = o.account(Some(7), hour).unwrap();
        assert_eq!(
            (second.new, second.warn),
            (2, None),
            "warned within the hour"
        );
        let mut o = ReceiveOverflows {
            seen: u32::MAX - 1,
            ..ReceiveOverflows::default()
        };
        let wrapped = o.account(Some(3), std::time::Duration::ZERO).unwrap();
        assert_eq!((wrapped.new, wrapped.warn), (5, Some(5)), "across the wrap");
    }

    #[test]
    fn peek_now_leaves_the_bytes_in_place() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let err = peek_now(&server, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"hello").unwrap();
        server.set_nonblocking(false).unwrap();
        let mut first = [0u8; 5];
        server.peek(&mut first).unwrap();
        assert_eq!(peek_now(&server, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        let mut read = [0u8; 5];
        server.read_exact(&mut read).unwrap();
        assert_eq!(&read, b"hello", "peeking consumed nothing");
        drop(client);
        assert_eq!(peek_now(&server, &mut buf).unwrap(), 0);
    }

    #[test]
    fn upstream_socket_rejects_mismatched_families() {
        let err =
            upstream_socket(Some("10.0.0.2".parse().unwrap()), Domain::IPV6, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = upstream_socket(None, Domain::UNIX, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn upstream_socket_without_options_is_plain() {
        let socket = upstream_socket(None, Domain::IPV4, None).unwrap();
        assert!(socket.nonblocking().unwrap());
        assert!(socket.local_addr().unwrap().as_socket().unwrap().port() == 0);
    }

    #[test]
    fn original_dst_of_a_plain_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let err = original_dst(&client).unwrap_err();
        assert!(err.to_string().starts_with("SO_ORIGINAL_DST"), "{err}");
    }
}
