//! What a new flow's place in the `limits:` caps costs the data path: one
//! [`FastPermits::acquire`] (the fast path's per-flow place, which takes one in the TCP
//! [`Limiter`](chokepoint::proxy::limits::Limiter) too) and its release, as a queue reader and
//! the conntrack follower do for every fast-path connection.
//!
//! * `caps/one_thread`: acquire and release, one thread.
//! * `caps/threads_N`: N threads at once, each for flows of its own pods: what readers on
//!   several CPUs pay for sharing the caps (contention on their locks and cache lines).
//!
//! Run with `cargo bench -p chokepoint --bench caps`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chokepoint::proxy::fast::permits::FastPermits;
use chokepoint::proxy::limits::DataPathLimits;
use chokepoint_config::settings::Limits;
use chokepoint_redirect::L4;
use criterion::Criterion;

/// Pods per thread: each flow's source is one of them, so every pod holds a few places.
const PODS: u32 = 64;

fn pod(thread: u32, i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + thread * 256 + i % PODS))
}

/// `n` flows of `thread`'s pods: acquire, then release, each.
fn churn(permits: &FastPermits, limits: &DataPathLimits, thread: u32, n: u64) {
    let dst = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 10), 443));
    for i in 0..n {
        let holder = pod(thread, i as u32);
        let src = SocketAddr::new(holder, 1024 + (i % 60_000) as u16);
        permits
            .acquire(limits, holder, L4::Tcp, src, dst)
            .expect("the caps leave room");
        permits.release(L4::Tcp, src, dst);
    }
}

fn caps(c: &mut Criterion) {
    let limits = Arc::new(DataPathLimits::new(&Limits::default()));
    let permits = Arc::new(FastPermits::default());
    let mut group = c.benchmark_group("caps");
    group.bench_function("one_thread", |b| {
        b.iter_custom(|n| {
            let started = Instant::now();
            churn(&permits, &limits, 0, n);
            started.elapsed()
        })
    });
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2)) as u32;
    group.bench_function(format!("threads_{threads}"), |b| {
        b.iter_custom(|n| {
            // Each thread makes n flows; the time per flow is the wall time over n × threads.
            let start = Arc::new(Barrier::new(threads as usize + 1));
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (permits, limits, start) = (permits.clone(), limits.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        churn(&permits, &limits, t, n);
                    })
                })
                .collect();
            start.wait();
            let started = Instant::now();
            for w in workers {
                w.join().expect("a worker");
            }
            started.elapsed() / threads
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    caps(&mut c);
    c.final_summary();
}
