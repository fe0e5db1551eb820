//! `limits:` for fast-path flows. A flow the fast path keeps in the kernel holds no socket,
//! but it holds a conntrack entry, and one pod must not fill the node's table either: so it
//! takes a place in the same caps as a proxied connection or flow (a pod's proxied and
//! fast-path flows count together), and is refused beyond them (TCP reset, UDP dropped,
//! audited with the proxy's reasons).
//!
//! The gateway learns that such a flow is over from conntrack, since no socket closes: a TCP
//! connection gives its place back when the capture has noted both ends' FIN or a RST in its
//! ct mark ([`CloseMarks`]; or conntrack's own state says it closed), a UDP flow when its
//! entry expires ([`watch`]). The capture has such flows announce only that: a TCP
//! connection's close (or its end, if it never closed), any other flow's end. Only entries
//! created while the watcher listens announce anything (with `nf_conntrack_events` at its
//! default, 2), so the flows a new gateway takes over give their places back with the next
//! resync. Conntrack is the truth: at start (a new gateway takes over the flows of the last
//! one), when announcements were lost, and every [`RESYNC_EVERY`] the places are made those of
//! the table's live fast-path entries.
//!
//! Keyed by a keyed hash of the original tuple, to keep the per-flow cost small (about 50
//! bytes): a pod cannot aim collisions at a hash whose key it does not know.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chokepoint_redirect::conntrack::events::{Event, Events};
use chokepoint_redirect::conntrack::{Conntrack, Entry, L4};
use chokepoint_redirect::{CloseMarks, FastPath, FlowMark};

use crate::policy::Snapshot;
use crate::proxy::Context;
use crate::proxy::limits::{self, DataPathLimits, Exceeded, Limiter, Permit};

/// How often the places are checked against the whole conntrack table, whatever the
/// announcements said (they may be switched off: `net.netfilter.nf_conntrack_events`).
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// The follower reads the announcements in batches, this often, rather than waking for each
/// one: a connection's half-dozen announcements would otherwise wake it (and take a CPU) right
/// while the next connections are set up. A place then comes back up to this much later.
const READ_EVERY: Duration = Duration::from_millis(50);

/// The places the fast path's flows hold.
#[derive(Debug, Default)]
pub struct FastPermits {
    hasher: RandomState,
    /// Moves on with each resync; a place taken since the last one began is never released
    /// by it (its entry may have been created after the dump passed).
    epoch: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
}

#[derive(Debug)]
struct Held {
    _permit: Permit,
    epoch: u64,
}

fn limiter(limits: &DataPathLimits, protocol: L4) -> &Arc<Limiter> {
    match protocol {
        L4::Tcp => &limits.tcp,
        L4::Udp => &limits.udp,
    }
}

/// Whose cap a flow from `src` counts against (see [`limits::holder`]).
fn holder(snapshot: &Snapshot, src: SocketAddr) -> IpAddr {
    limits::holder(snapshot, src.ip().to_canonical())
}

impl FastPermits {
    fn key(&self, protocol: L4, src: SocketAddr, dst: SocketAddr) -> u64 {
        self.hasher.hash_one((protocol == L4::Tcp, src, dst))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for the new flow `src → dst` of `holder`, or the cap it would exceed. `dst` is
    /// where the flow goes (the backend, for a flow kube-proxy translated), as conntrack's
    /// [`Entry::reached`] says when the flow ends.
    pub fn acquire(
        &self,
        limits: &DataPathLimits,
        holder: IpAddr,
        protocol: L4,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<(), Exceeded> {
        let permit = limiter(limits, protocol).acquire(holder)?;
        let held = Held {
            _permit: permit,
            epoch: self.epoch.load(Ordering::Acquire),
        };
        // A retransmitted first packet decided twice replaces the place, not adds one.
        self.lock().insert(self.key(protocol, src, dst), held);
        Ok(())
    }

    /// Gives the place of `src → dst` back, if it holds one.
    pub fn release(&self, protocol: L4, src: SocketAddr, dst: SocketAddr) {
        let key = self.key(protocol, src, dst);
        let released = self.lock().remove(&key);
        drop(released);
    }

    /// How many places fast-path flows hold.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the places those of `live` (the live fast-path entries of a dump that began
    /// after [`FastPermits::begin_resync`] returned `epoch`): entries with no place get one,
    /// whatever the caps; places with no entry, taken before the dump, are given back.
    pub fn resync(
        &self,
        limits: &DataPathLimits,
        holder: impl Fn(SocketAddr) -> IpAddr,
        live: &[Entry],
        epoch: u64,
    ) {
        let live: Vec<(u64, &Entry)> = live
            .iter()
            .map(|e| (self.key(e.protocol, e.src, e.reached), e))
            .collect();
        let keys: HashSet<u64> = live.iter().map(|(key, _)| *key).collect();
        let mut held = self.lock();
        held.retain(|key, h| h.epoch > epoch || keys.contains(key));
        for (key, entry) in live {
            held.entry(key).or_insert_with(|| Held {
                _permit: limiter(limits, entry.protocol).hold(holder(entry.src)),
                epoch,
            });
        }
    }

    /// Starts a resync: places taken from now on are kept by it.
    pub fn begin_resync(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel)
    }
}

/// Follows conntrack until `stop`: gives back the places of flows that end, and resyncs at
/// start, after lost announcements and every [`RESYNC_EVERY`].
pub fn watch(ctx: Arc<Context>, permits: Arc<FastPermits>, fast: FastPath, stop: Arc<AtomicBool>) {
    let (marks, closes) = (fast.marks(), fast.closes());
    let _span = tracing::info_span!("fast_path_flows").entered();
    let mut events = match Events::subscribe() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(
                target: "fast_path",
                "no conntrack announcements ({e}): places of ended flows come back only \
                 with the resync every {}s",
                RESYNC_EVERY.as_secs()
            );
            None
        }
    };
    let mut resync_at = Instant::now();
    let mut batch: Vec<Event> = Vec::with_capacity(256);
    while !stop.load(Ordering::Acquire) {
        if Instant::now() >= resync_at {
            if let Err(e) = resync(&ctx, &permits, marks, closes) {
                tracing::warn!(target: "fast_path", "reading conntrack for the caps: {e}");
            }
            resync_at = Instant::now() + RESYNC_EVERY;
        }
        let Some(events) = events.as_mut() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if !readable(events) {
            continue;
        }
        std::thread::sleep(READ_EVERY);
        loop {
            batch.clear();
            match events.receive(&mut batch) {
                Ok(0) => break,
                Ok(_) => {
                    for ev in &batch {
                        if ev.destroyed || over(&ev.entry, closes) {
                            permits.release(ev.entry.protocol, ev.entry.src, ev.entry.reached);
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    tracing::debug!(target: "fast_path", "conntrack announcements lost");
                    resync_at = Instant::now();
                    break;
                }
                Err(e) => {
                    tracing::warn!(target: "fast_path", "conntrack announcements: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
}

fn readable(events: &Events) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        events.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)),
        Ok(n) if n > 0
    )
}

/// Whether a live entry's connection is over: both ends closed, as the capture noted or as
/// conntrack's state says (flows from before the notes, or re-decided meanwhile: a verdict
/// writes the flow's mark anew).
fn over(entry: &Entry, closes: CloseMarks) -> bool {
    entry.closed || (entry.protocol == L4::Tcp && closes.both_closed(entry.mark))
}

fn resync(
    ctx: &Context,
    permits: &FastPermits,
    marks: FlowMark,
    closes: CloseMarks,
) -> io::Result<()> {
    let epoch = permits.begin_resync();
    let live: Vec<Entry> = Conntrack::open()?
        .entries(|mark| marks.allowed_generation(mark).is_some())?
        .into_iter()
        .filter(|e| !over(e, closes))
        .collect();
    let snapshot = ctx.state.snapshot();
    permits.resync(&ctx.limits, |src| holder(&snapshot, src), &live, epoch);
    Ok(())
}

/// A place for a new fast-path flow (see [`FastPermits::acquire`]).
pub fn acquire(
    ctx: &Context,
    snapshot: &Snapshot,
    permits: &FastPermits,
    protocol: L4,
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<(), Exceeded> {
    permits.acquire(&ctx.limits, holder(snapshot, src), protocol, src, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chokepoint_config::settings::Limits;

    fn limits(per_pod: usize) -> DataPathLimits {
        DataPathLimits::new(&Limits {
            tcp_connections_per_pod: per_pod,
            tcp_connections: 100,
            udp_flows_per_pod: per_pod,
            udp_flows: 100,
        })
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn entry(src: &str, dst: &str) -> Entry {
        Entry {
            protocol: L4::Tcp,
            src: sa(src),
            dst: sa(dst),
            reached: sa(dst),
            mark: 0,
            closed: false,
        }
    }

    const POD: &str = "10.244.1.10";

    #[test]
    fn places_are_taken_up_to_the_cap_and_given_back() {
        let (l, p) = (limits(2), FastPermits::default());
        let pod = POD.parse().unwrap();
        let dst = sa("192.0.2.10:80");
        p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:1"), dst)
            .unwrap();
        // The same flow decided twice (a retransmitted SYN) holds one place.
        p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:1"), dst)
            .unwrap();
        p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:2"), dst)
            .unwrap();
        assert_eq!(
            p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:3"), dst),
            Err(Exceeded::Pod)
        );
        // UDP has caps of its own.
        p.acquire(&l, pod, L4::Udp, sa("10.244.1.10:3"), dst)
            .unwrap();
        p.release(L4::Tcp, sa("10.244.1.10:1"), dst);
        assert_eq!(l.tcp.held_by(pod), 1);
        p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:3"), dst)
            .unwrap();
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_resync_makes_the_places_those_of_the_table() {
        let (l, p) = (limits(2), FastPermits::default());
        let pod = POD.parse().unwrap();
        let dst = sa("192.0.2.10:80");
        p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:1"), dst)
            .unwrap();
        p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:2"), dst)
            .unwrap();
        let epoch = p.begin_resync();
        // Taken while the dump runs: kept though the dump does not have it.
        p.release(L4::Tcp, sa("10.244.1.10:2"), dst);
        p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:9"), dst)
            .unwrap();
        // The table: :1 is gone (its end was never announced), three others live (a gateway
        // taking over finds them): they are held whatever the cap.
        let live = [
            entry("10.244.1.10:4", "192.0.2.10:80"),
            entry("10.244.1.10:5", "192.0.2.10:80"),
            entry("10.244.1.10:6", "192.0.2.10:80"),
        ];
        p.resync(&l, |src| src.ip(), &live, epoch);
        assert_eq!(p.len(), 4, ":9 and the three live ones");
        assert_eq!(l.tcp.held_by(pod), 4);
        assert_eq!(
            p.acquire(&l, pod, L4::Tcp, sa("10.244.1.10:7"), dst),
            Err(Exceeded::Pod)
        );
        // The next resync gives back the place of :9 when the table no longer has it.
        let epoch = p.begin_resync();
        p.resync(&l, |src| src.ip(), &live, epoch);
        assert_eq!(l.tcp.held_by(pod), 3);
    }
}
