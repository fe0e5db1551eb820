//! What the flow log costs (`flows.enabled: true`), over the example cluster
//! (`deploy/examples/inventory.yaml`):
//!
//! * `flows/record`: the data path's part per allowed flow — the event (the snapshot's `Arc`,
//!   the addresses, the names) and the queue send. The aggregator drains the queue between
//!   batches, outside the measured time.
//! * aggregator throughput: flows per second the flow log's own task counts (naming pods,
//!   Services and rules from the snapshot), 1,000 keys, end to end from the first send to the
//!   flushed window.
//!
//! Run with `cargo bench -p chokepoint --bench flows`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chokepoint::audit::Sink;
use chokepoint::flows::{FlowEvent, FlowLog, FlowLogMetrics};
use chokepoint::policy::{Flow, Options, Snapshot};
use chokepoint_config::model::Protocol;
use chokepoint_config::settings::Flows;
use criterion::Criterion;

/// Queue room (the flow log's channel holds 16,384).
const BATCH: u64 = 8_192;

fn snapshot() -> Arc<Snapshot> {
    let inventory = include_str!("../../deploy/examples/inventory.yaml");
    let loaded = chokepoint_config::load_str(
        std::path::Path::new("inventory.yaml"),
        inventory,
        chokepoint_config::UnknownFields::Reject,
    );
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    Arc::new(Snapshot::compile(&loaded.world, Options::default()))
}

/// An allowed flow of tenant-a's web pod to the `i`-th outside address, known by `names`
/// (one key per distinct names).
fn event(snapshot: &Arc<Snapshot>, i: u32, names: &[Arc<str>]) -> FlowEvent {
    let src: IpAddr = "10.244.1.10".parse().unwrap();
    let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)), 443);
    let refs: Vec<&str> = names.iter().map(|n| &**n).collect();
    let flow = Flow::to(src, dst, Protocol::Tcp, &refs);
    FlowEvent {
        snapshot: snapshot.clone(),
        verdict: snapshot.evaluate(&flow),
        src,
        dst,
        protocol: Protocol::Tcp,
        addressed: None,
        names: names.to_vec(),
    }
}

fn settings() -> Flows {
    Flows {
        enabled: true,
        window: Duration::from_secs(3600),
        max_keys: 10_000,
        ..Flows::default()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let snapshot = snapshot();
    let names: Vec<Arc<str>> = vec![Arc::from("api.example.com")];
    let metrics = FlowLogMetrics::default();
    let (log, writer) = FlowLog::spawn_with_sink(
        Sink::writer(std::io::sink()),
        &settings(),
        "bench".into(),
        None,
        metrics.clone(),
    );
    let verdict = snapshot.evaluate(&Flow::to(
        "10.244.1.10".parse().unwrap(),
        "198.18.0.1:443".parse().unwrap(),
        Protocol::Tcp,
        &[],
    ));

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("flows/record", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let started = Instant::now();
                for i in 0..n {
                    // What `Context::log_allowed` does per allowed flow.
                    log.record(FlowEvent {
                        snapshot: snapshot.clone(),
                        verdict,
                        src: "10.244.1.10".parse().unwrap(),
                        dst: SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::from(0xC612_0000 + (i as u32 & 1023))),
                            443,
                        ),
                        protocol: Protocol::Tcp,
                        addressed: None,
                        names: black_box(&names).to_vec(),
                    });
                }
                spent += started.elapsed();
                runtime.block_on(log.flush());
                left -= n;
            }
            spent
        })
    });
    assert_eq!(
        metrics.events_dropped.get(),
        0,
        "the queue had room: the sends were measured"
    );
    c.final_summary();

    // Aggregator throughput: 100,000 flows of 1,000 keys, from the first send to the flushed
    // window, in batches the queue can hold.
    let total = 100_000u32;
    let events: Vec<FlowEvent> = (0..total)
        .map(|i| event(&snapshot, i % 1000, &names))
        .collect();
    let started = Instant::now();
    for chunk in events.chunks(BATCH as usize) {
        for e in chunk {
            log.record(FlowEvent {
                snapshot: e.snapshot.clone(),
                names: e.names.clone(),
                ..*e
            });
        }
        runtime.block_on(log.flush());
    }
    let elapsed = started.elapsed();
    let per_second = f64::from(total) / elapsed.as_secs_f64();

    drop(log);
    runtime.block_on(writer.shutdown());

    println!();
    println!("==================== flow log summary ====================");
    println!(
        "aggregator: {total} flows of 1,000 keys in {elapsed:.0?}: {:.0} flows/s",
        per_second
    );
    println!("data path per flow: see flows/record above");
    println!("==========================================================");
}
