//! The kernel fast path (`capture.l4: kernel`): the first packet of each new pod flow waits in
//! an NFQUEUE queue, a reader thread per queue decides it ([`decide`]) and answers with the
//! decision in the packet mark, which the capture copies into the flow's conntrack mark:
//! allowed flows then never leave the kernel, the rest go to the proxy as before.
//!
//! Generations: the capture accepts without a look only flows allowed at the current
//! generation ([`chokepoint_redirect::set_generation`]). Each new snapshot gets the next
//! one, so each live fast-path flow's next packet is queued once and re-decided against it.
//! The reader reads the generation before the snapshot, and the follower publishes a
//! generation only after its snapshot is in force: a flow is never marked current by an
//! older snapshot's decision.
//!
//! Fail closed: the queue rule has no bypass, so while no reader is bound (a restart, a
//! crash) new flows' packets are dropped by the kernel and retried by the pods' stacks, never
//! let through; flows already allowed keep going in the kernel.

pub mod decide;
pub mod permits;
pub mod recheck;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chokepoint_redirect::addressed::AddressedMaps;
use chokepoint_redirect::conntrack::Conntrack;
use chokepoint_redirect::packet;
use chokepoint_redirect::queue::{self, PacketQueue, QueueVerdict, Queued};
use chokepoint_redirect::{FastPath, FlowMark};

use self::decide::Path;
use self::permits::FastPermits;
use super::Context;
use crate::metrics::{FastVerdictLabel, ToProxyLabel};

/// Packets that may wait in one queue; beyond that the kernel drops (and counts) them.
const QUEUE_MAX_LEN: u32 = 8192;
/// How often the queue statistics are read into the metrics.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// The bound queues, before their readers start (bind first, install the rules after: a
/// new flow then never meets a queue nobody reads because of the gateway's own start).
#[derive(Debug)]
pub struct BoundQueues {
    fast: FastPath,
    queues: Vec<PacketQueue>,
}

/// Binds every queue of `fast` (taking them over from a gateway that is gone).
pub fn bind(fast: &FastPath) -> io::Result<BoundQueues> {
    let queues = (0..fast.queues)
        .map(|i| {
            let n = fast.first_queue + i;
            PacketQueue::bind(n, QUEUE_MAX_LEN).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("binding NFQUEUE {n}: {e} (is another gateway running on this node?)"),
                )
            })
        })
        .collect::<io::Result<_>>()?;
    Ok(BoundQueues {
        fast: *fast,
        queues,
    })
}

/// The running fast path: the reader threads and the generation they mark flows with.
#[derive(Debug)]
pub struct FastPathRunning {
    stop: Arc<AtomicBool>,
    /// The queue readers and the conntrack watcher of the caps.
    readers: Vec<JoinHandle<()>>,
}

impl FastPathRunning {
    /// Stops the readers; their queues are unbound when the sockets close, and the kernel
    /// drops new flows' packets until the next gateway binds them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for r in self.readers {
            let _ = r.join();
        }
    }
}

/// Starts one reader thread per queue and the task that moves the generation on with every
/// snapshot. `generation`: the one the installed rules hold.
pub fn start(
    ctx: Arc<Context>,
    bound: BoundQueues,
    generation: u32,
) -> io::Result<(FastPathRunning, tokio::task::JoinHandle<()>)> {
    let current = Arc::new(AtomicU32::new(generation));
    let stop = Arc::new(AtomicBool::new(false));
    let marks = bound.fast.marks();
    let permits = Arc::new(FastPermits::default());
    let mut readers = Vec::new();
    {
        let (ctx, permits, stop) = (ctx.clone(), permits.clone(), stop.clone());
        let fast = bound.fast;
        readers.push(
            std::thread::Builder::new()
                .name("fast-path-flows".to_string())
                .spawn(move || permits::watch(ctx, permits, fast, stop))?,
        );
    }
    for (i, q) in bound.queues.into_iter().enumerate() {
        let reader = Reader {
            ctx: ctx.clone(),
            queue: q,
            marks,
            current: current.clone(),
            permits: permits.clone(),
            stop: stop.clone(),
            reports_stats: i == 0,
            queues: {
                let first = u32::from(bound.fast.first_queue);
                first..first + u32::from(bound.fast.queues)
            },
            maps: None,
            conntrack: None,
        };
        readers.push(
            std::thread::Builder::new()
                .name(format!("fast-path-{}", reader.queue.number()))
                .spawn(move || reader.run())?,
        );
    }
    let follower = tokio::spawn(follow(ctx, bound.fast, current, permits));
    Ok((FastPathRunning { stop, readers }, follower))
}

/// Gives each new snapshot the next generation, once the capture holds it; with
/// `recheckOnReload`, then re-decides the live flows at once ([`recheck`]).
async fn follow(
    ctx: Arc<Context>,
    fast: FastPath,
    current: Arc<AtomicU32>,
    permits: Arc<FastPermits>,
) {
    let mut changes = ctx.state.subscribe();
    let marks = fast.marks();
    while changes.changed().await.is_ok() {
        let next = marks.next_generation(current.load(Ordering::Acquire));
        let applied =
            tokio::task::spawn_blocking(move || chokepoint_redirect::set_generation(&fast, next))
                .await;
        match applied {
            Ok(Ok(())) => current.store(next, Ordering::Release),
            // The old generation stays: live flows keep their last decision until the next
            // snapshot's generation is installed.
            Ok(Err(e)) => {
                tracing::warn!(target: "fast_path", "could not install generation {next}: {e}");
                continue;
            }
            Err(e) => {
                tracing::warn!(target: "fast_path", "generation task failed: {e}");
                continue;
            }
        }
        if !ctx.settings.policy.recheck_on_reload {
            continue;
        }
        let (walk_ctx, walk_permits) = (ctx.clone(), permits.clone());
        let walked = tokio::task::spawn_blocking(move || {
            recheck::live_flows(&walk_ctx, &fast, next, &walk_permits)
        })
        .await;
        match walked {
            Ok(Ok(done)) => tracing::info!(
                target: "fast_path",
                generation = next,
                kept = done.kept,
                revoked = done.revoked,
                gone = done.gone,
                "live flows re-decided"
            ),
            // Each flow is still re-decided with its next packet from the pod.
            Ok(Err(e)) => tracing::warn!(target: "fast_path", "re-deciding live flows: {e}"),
            Err(e) => tracing::warn!(target: "fast_path", "re-deciding live flows: {e}"),
        }
    }
}

/// Keeps the calling reader thread to the CPUs whose packets reach its queue (the queue rule
/// fans out by CPU: queue `first + cpu % queues`), among those the process may use: the kernel
/// then wakes it on the CPU the packet is on, with no cross-CPU wake-up on a new flow's path.
/// Where none of those CPUs is allowed (a cpuset), the thread runs anywhere.
fn keep_to_own_cpus(index: u32, queues: u32) {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    let mut own = CpuSet::new();
    let mut any = false;
    for cpu in 0..CpuSet::count() {
        if cpu as u32 % queues.max(1) == index && allowed.is_set(cpu).unwrap_or(false) {
            any |= own.set(cpu).is_ok();
        }
    }
    if any && let Err(e) = sched_setaffinity(Pid::from_raw(0), &own) {
        tracing::debug!(target: "fast_path", "queue reader stays on every CPU: {e}");
    }
}

struct Reader {
    ctx: Arc<Context>,
    queue: PacketQueue,
    marks: FlowMark,
    current: Arc<AtomicU32>,
    permits: Arc<FastPermits>,
    stop: Arc<AtomicBool>,
    reports_stats: bool,
    /// The queue numbers this gateway reads (the statistics of other queues are not ours).
    queues: std::ops::Range<u32>,
    /// Where new translated flows were addressed, as the capture wrote it down (opened by the
    /// reader's thread; without it they go to the proxy, which asks conntrack itself).
    maps: Option<AddressedMaps>,
    /// Where live flows being re-decided were addressed (their entries are confirmed).
    conntrack: Option<Conntrack>,
}

impl Reader {
    fn run(mut self) {
        let _span = tracing::info_span!("fast_path", queue = self.queue.number()).entered();
        let index = u32::from(self.queue.number()).saturating_sub(self.queues.start);
        keep_to_own_cpus(index, self.queues.len() as u32);
        self.maps = AddressedMaps::open()
            .inspect_err(|e| {
                tracing::warn!(
                    target: "fast_path",
                    "no nf_tables socket ({e}): flows kube-proxy translated go to the proxy"
                );
            })
            .ok();
        self.conntrack = Conntrack::open()
            .inspect_err(|e| {
                tracing::warn!(
                    target: "fast_path",
                    "no conntrack socket ({e}): re-decided flows are not named by their Service"
                );
            })
            .ok();
        let mut batch: Vec<Queued> = Vec::with_capacity(64);
        let mut verdicts: Vec<(u32, QueueVerdict)> = Vec::with_capacity(64);
        let mut stats_at = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            // One system call waits for the next packets and takes every one queued, one more
            // answers them all: a new flow's first packet waits for nothing else.
            batch.clear();
            if let Err(e) = self.queue.receive_waiting(&mut batch) {
                // ENOBUFS: the socket overran; the kernel counts the drops (the metrics).
                if e.raw_os_error() != Some(nix::libc::ENOBUFS) {
                    tracing::warn!(target: "fast_path", "reading the queue: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            verdicts.clear();
            for q in &batch {
                let verdict = self.decide(q);
                verdicts.push((q.id, verdict));
            }
            if let Err(e) = self.queue.verdicts(&verdicts) {
                tracing::warn!(target: "fast_path", "verdicts: {e}");
            }
            if self.reports_stats && stats_at.elapsed() >= STATS_EVERY {
                stats_at = Instant::now();
                self.report_stats();
            }
        }
    }

    fn decide(&mut self, q: &Queued) -> QueueVerdict {
        let Ok(tuple) = packet::parse(&q.headers) else {
            self.ctx.metrics.fast_path(FastVerdictLabel::Dropped);
            return QueueVerdict::Drop;
        };
        // Generation first, then the snapshot (see the module doc).
        let generation = self.current.load(Ordering::Acquire);
        let snapshot = self.ctx.state.snapshot();
        let path = if self.marks.is_redecision(q.mark) {
            // Only after a reload, once per live flow: whether it was translated is not
            // flagged for these, so conntrack is asked (an unknown answer decides it on the
            // backend alone, which is the verdict's subject anyway).
            let addressed = self.addressed_live(&tuple).ok().flatten();
            let path = decide::again(&self.ctx, &snapshot, &tuple, addressed);
            if path == Path::Revoked {
                self.permits.release(tuple.protocol, tuple.src, tuple.dst);
            }
            path
        } else if self.marks.is_translated(q.mark) {
            match self.addressed_new(&tuple) {
                // Only the port changed: the capture's own redirect of a Service port without
                // endpoints to the gateway's listener, which the proxy refuses and audits.
                Ok(Some(addressed)) if addressed.ip() != tuple.dst.ip() => {
                    decide::first(&self.ctx, &snapshot, &tuple, Some(addressed), &self.permits)
                }
                // The ClusterIP is unknown: the proxy finds it, or decides without it.
                other => {
                    tracing::debug!(target: "fast_path", src = %tuple.src, dst = %tuple.dst, "translated flow to the proxy: {other:?}");
                    Path::Proxy(ToProxyLabel::NoServiceNote)
                }
            }
        } else {
            decide::first(&self.ctx, &snapshot, &tuple, None, &self.permits)
        };
        let (state, label) = match path {
            Path::Kernel => (self.marks.allowed(generation), FastVerdictLabel::Kernel),
            Path::Proxy(reason) => {
                self.ctx.metrics.fast_path_to_proxy(reason);
                (self.marks.proxy(), FastVerdictLabel::Proxy)
            }
            Path::Revoked => (self.marks.revoked(), FastVerdictLabel::Revoked),
        };
        self.ctx.metrics.fast_path(label);
        QueueVerdict::Repeat {
            mark: self.marks.with(q.mark, state),
        }
    }

    /// The `ClusterIP:port` the new flow of `tuple`, flagged as translated, was addressed
    /// to: one lookup in the capture's map (its conntrack entry is not confirmed yet).
    fn addressed_new(&mut self, tuple: &packet::Tuple) -> io::Result<Option<SocketAddr>> {
        let maps = self
            .maps
            .as_mut()
            .ok_or_else(|| io::Error::other("no nf_tables socket"))?;
        maps.lookup(tuple.protocol, tuple.src, tuple.dst)
    }

    /// The `ClusterIP:port` the live flow of `tuple` was addressed to, when a destination NAT
    /// changed it (`None`: nothing did); one conntrack lookup by the reply tuple.
    fn addressed_live(&mut self, tuple: &packet::Tuple) -> io::Result<Option<SocketAddr>> {
        let conntrack = self
            .conntrack
            .as_mut()
            .ok_or_else(|| io::Error::other("no conntrack socket"))?;
        let original = conntrack.original_destination(tuple.protocol, tuple.src, tuple.dst)?;
        Ok(original.filter(|o| *o != tuple.dst))
    }

    fn report_stats(&self) {
        match queue::stats() {
            Ok(all) => {
                let (mut waiting, mut full, mut overrun) = (0, 0, 0);
                for s in all
                    .iter()
                    .filter(|s| self.queues.contains(&u32::from(s.queue)))
                {
                    waiting += s.waiting;
                    full += s.queue_dropped;
                    overrun += s.user_dropped;
                }
                self.ctx.metrics.fast_path_queues(waiting, full, overrun);
            }
            Err(e) => tracing::debug!(target: "fast_path", "queue statistics: {e}"),
        }
    }
}
