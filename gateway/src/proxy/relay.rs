//! Moving bytes between a pod connection and its upstream, with half-close and an idle timeout.
//!
//! Idle connections hold no buffer: a direction waits for readability, reads into a per-thread
//! scratch buffer and writes straight out; only bytes the peer cannot take at once are copied
//! into a per-connection buffer, which is freed as soon as it drains. So the memory of an idle
//! proxied connection is its task and two sockets, not 2 × 64 KiB of buffers.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Scratch space per runtime thread; never held across an await. It is also the most one read
/// takes from a socket, and so the most a direction copies into its pending buffer when the
/// peer is slow. 256 KiB rather than 64 KiB: up to four times the bytes per read/write system
/// call and wake-up on bulk transfers, measured at +9–16 % single-stream throughput in the netns
/// lab (`bench/datapath.sh`, BENCHMARKS.md "Data path"); the cost is 256 KiB per worker thread
/// and at most 256 KiB pending per stalled direction (Envoy's default per-connection buffer
/// limit is 1 MiB).
const SCRATCH: usize = 256 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Bytes moved in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Pod → upstream.
    pub sent: u64,
    /// Upstream → pod.
    pub received: u64,
}

/// Bytes moved so far, counted as they move: a relay that ends with an error, at the idle
/// timeout or because a new snapshot denies it still says what it moved.
#[derive(Debug, Default)]
pub struct Moved {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Moved {
    pub fn get(&self) -> Transferred {
        Transferred {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed their write halves.
    Closed,
    /// No byte moved in either direction for the idle timeout.
    Idle,
}

/// Relays until both directions are closed or the connection is idle for `idle`, counting
/// the bytes into `moved` as they go.
pub async fn relay(
    pod: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    moved: &Moved,
) -> io::Result<RelayEnd> {
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let (mut pod_r, mut pod_w) = pod.split();
    let (mut up_r, mut up_w) = upstream.split();
    let both = async {
        let (a, b) = tokio::join!(
            one_way(&mut pod_r, &mut up_w, &last_activity, &moved.sent, start),
            one_way(
                &mut up_r,
                &mut pod_w,
                &last_activity,
                &moved.received,
                start
            ),
        );
        a.and(b)
    };
    tokio::pin!(both);
    loop {
        let elapsed_idle = start
            .elapsed()
            .saturating_sub(Duration::from_millis(last_activity.load(Ordering::Relaxed)));
        let remaining = idle.saturating_sub(elapsed_idle);
        tokio::select! {
            result = &mut both => return result.map(|()| RelayEnd::Closed),
            _ = tokio::time::sleep(remaining) => {
                let since = start.elapsed().saturating_sub(Duration::from_millis(last_activity.load(Ordering::Relaxed)));
                if since >= idle {
                    return Ok(RelayEnd::Idle);
                }
            }
        }
    }
}

/// Copies one direction until EOF, then half-closes the writer.
async fn one_way(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    last_activity: &AtomicU64,
    moved: &AtomicU64,
    start: Instant,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        from.readable().await?;
        // Read and write without awaiting while the scratch buffer is borrowed.
        let step = SCRATCH_BUF.with(|cell| -> io::Result<Option<usize>> {
            let mut buf = cell.borrow_mut();
            let n = match from.try_read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(0)),
                Err(e) => return Err(e),
            };
            let written = match to.try_write(&buf[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if written < n {
                pending.extend_from_slice(&buf[written..n]);
            }
            Ok(Some(n))
        })?;
        let Some(n) = step else { break };
        if n == 0 {
            continue;
        }
        // Counted when read: what is still pending when a direction fails is counted but lost.
        moved.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !pending.is_empty() {
            // The peer is slow: wait until it has taken everything, then free the buffer.
            to.write_all(&pending).await?;
            pending = Vec::new();
        }
    }
    to.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connected pair of loopback streams.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap());
        let (a, b) = tokio::join!(a, l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn relays_both_ways_byte_exact_with_half_close() {
        let (mut client, mut pod) = pair().await;
        let (mut upstream, mut server) = pair().await;
        let moved = std::sync::Arc::new(Moved::default());
        let counted = moved.clone();
        let relay = tokio::spawn(async move {
            relay(&mut pod, &mut upstream, Duration::from_secs(10), &counted).await
        });
        let data: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let reply: Vec<u8> = data.iter().rev().copied().collect();
        let expected_reply = reply.clone();
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(&reply).await.unwrap();
            server.shutdown().await.unwrap();
            got
        });
        let (mut cr, mut cw) = client.split();
        let send = async {
            cw.write_all(&data).await.unwrap();
            cw.shutdown().await.unwrap();
        };
        let mut received = Vec::new();
        let recv = cr.read_to_end(&mut received);
        let (_, r) = tokio::join!(send, recv);
        r.unwrap();
        assert_eq!(server_task.await.unwrap(), data);
        assert_eq!(received, expected_reply);
        let end = relay.await.unwrap().unwrap();
        assert_eq!(end, RelayEnd::Closed);
        assert_eq!(
            moved.get(),
            Transferred {
                sent: 1 << 20,
                received: 1 << 20
            }
        );
    }

    /// A connection closed by the idle timeout still reports what it moved before.
    #[tokio::test]
    async fn idle_connections_are_closed_with_their_bytes_counted() {
        let (mut client, mut pod) = pair().await;
        let (mut upstream, mut server) = pair().await;
        client.write_all(b"hello").await.unwrap();
        let moved = Moved::default();
        let relaying = relay(&mut pod, &mut upstream, Duration::from_millis(300), &moved);
        let reading = async {
            let mut got = [0u8; 5];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(b"hi").await.unwrap();
            got
        };
        let (end, got) = tokio::join!(relaying, reading);
        assert_eq!(end.unwrap(), RelayEnd::Idle);
        assert_eq!(&got, b"hello");
        assert_eq!(
            moved.get(),
            Transferred {
                sent: 5,
                received: 2
            }
        );
    }

    /// A relay that fails (here: the upstream resets) still reports what it moved.
    #[tokio::test]
    async fn a_failed_relay_reports_the_bytes_it_moved() {
        let (mut client, mut pod) = pair().await;
        let (mut upstream, mut server) = pair().await;
        client.write_all(b"hello").await.unwrap();
        let moved = Moved::default();
        let relaying = relay(&mut pod, &mut upstream, Duration::from_secs(10), &moved);
        let failing = async {
            let mut got = [0u8; 5];
            server.read_exact(&mut got).await.unwrap();
            socket2::SockRef::from(&server)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(server);
            // The pod keeps sending: the relay's write to the reset upstream fails.
            for _ in 0..50 {
                if client.write_all(&[0u8; 4096]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let (end, ()) = tokio::join!(relaying, failing);
        assert!(end.is_err(), "{end:?}");
        assert!(moved.get().sent >= 5, "{:?}", moved.get());
    }
}
