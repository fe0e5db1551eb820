//! Benchmarks of the verdict engine at the scale its targets are stated at (1,000 namespaces,
//! 50,000 pods, 100 nodes, 10,000 cluster policies, 5,000 NetworkPolicies; see
//! [`world::Params`]).
//!
//! * `policy/evaluate`: one [`Snapshot::evaluate`] per iteration, cycling through a fixed pool
//!   of 4,096 pre-generated, varied flows whose sources are pods anywhere in the cluster (so
//!   consecutive evaluations touch unrelated policies: the cache-hostile case). Target:
//!   median ≤ 1 µs.
//! * `policy/evaluate_node_local`: the same with sources on one node only, which is what one
//!   per-node gateway sees.
//! * `policy/decide_unstaged` and `policy/decide_staged`: what the data path does per flow
//!   (evaluate, then the staged check) over the cluster-wide pool, without staged policies
//!   and with an altered copy of one cluster policy in [`STAGED_EVERY`] staged: the cost of
//!   staging, and that nothing staged costs nothing measurable over `evaluate`.
//! * `compile/world`: [`Snapshot::compile`] of the whole world. Target: ≤ 1 s.
//! * Memory: a counting global allocator measures the bytes that `compile` leaves allocated
//!   (the snapshot's footprint) and the generated world's own size.
//!
//! Run with `cargo bench -p chokepoint --bench policy`; a summary block with all figures is
//! printed at the end.

mod alloc;
mod world;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chokepoint::policy::{Decision, Difference, Flow, Options, Outcome, PolicyRef, Snapshot};
use chokepoint_config::World;
use chokepoint_config::model::{Action, Tier};
use criterion::{Criterion, SamplingMode, Throughput};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// Flows in an evaluate pool (a power of two, so cycling is a mask).
const POOL: usize = 4096;
const FLOW_SEED: u64 = 0x0f10_3500_d00d;
/// The node whose pods source the node-local pool (a dual-stack one).
const LOCAL_NODE: &str = "node-000";
const EVALUATE_TARGET_NS: f64 = 1_000.0;
const COMPILE_TARGET_MS: f64 = 1_000.0;
/// Criterion samples per benchmark; the summary reads back the last this many records.
const EVALUATE_SAMPLES: usize = 100;
const COMPILE_SAMPLES: usize = 10;
/// One cluster policy in this many gets a staged, altered copy in the staged case.
const STAGED_EVERY: usize = 20;

/// What the verdicts of a pool say, and how much work they took.
struct PoolStats {
    allowed: usize,
    denied: usize,
    /// Policies (cluster and NetworkPolicy) consulted per flow, and the maximum.
    consulted: f64,
    max_consulted: usize,
    /// Cluster-policy rules tried per flow.
    rules_tried: f64,
    /// `tier/reason/decision` → flows.
    by_decider: BTreeMap<String, usize>,
}

fn pool_stats(snapshot: &Snapshot, flows: &[Flow<'_>]) -> PoolStats {
    let mut st = PoolStats {
        allowed: 0,
        denied: 0,
        consulted: 0.0,
        max_consulted: 0,
        rules_tried: 0.0,
        by_decider: BTreeMap::new(),
    };
    let (mut consulted, mut rules_tried) = (0usize, 0usize);
    for f in flows {
        let (v, steps) = snapshot.explain(f);
        assert_eq!(v, snapshot.evaluate(f), "explain and evaluate agree");
        if v.is_allowed() {
            st.allowed += 1;
        } else {
            st.denied += 1;
        }
        let key = format!("{}/{}/{}", v.decided_by.tier, v.reason.as_str(), v.decision);
        *st.by_decider.entry(key).or_default() += 1;
        let policies = steps.iter().filter(|s| s.policy.is_some()).count();
        consulted += policies;
        st.max_consulted = st.max_consulted.max(policies);
        for s in &steps {
            if let Some(PolicyRef::Cluster(i)) = s.policy {
                rules_tried += match (s.outcome, s.rule_index) {
                    (Outcome::Matched(_), Some(r)) => r as usize + 1,
                    _ => snapshot.cluster_policy(i).map_or(0, |p| p.egress.len()),
                };
            }
        }
    }
    st.consulted = consulted as f64 / flows.len() as f64;
    st.rules_tried = rules_tried as f64 / flows.len() as f64;
    st
}

fn print_pool(name: &str, flows: &[Flow<'_>], st: &PoolStats) {
    println!(
        "{name}: {} flows, {} allowed, {} denied",
        flows.len(),
        st.allowed,
        st.denied
    );
    println!(
        "  per flow: {:.1} policies consulted (max {}), {:.1} cluster-policy rules tried",
        st.consulted, st.max_consulted, st.rules_tried
    );
    for (k, n) in &st.by_decider {
        println!("  {k}: {n}");
    }
}

/// One `decide` per iteration, cycling through `flows`; records each sample's time per
/// call into `samples`.
fn bench_per_flow<T>(
    c: &mut Criterion,
    name: &str,
    flows: &[Flow<'_>],
    samples: &RefCell<Vec<f64>>,
    decide: impl Fn(&Flow<'_>) -> T,
) {
    assert!(flows.len().is_power_of_two());
    let mask = flows.len() - 1;
    let mut g = c.benchmark_group("policy");
    g.sample_size(EVALUATE_SAMPLES)
        .throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        let mut i = 0usize;
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                black_box(decide(black_box(&flows[i & mask])));
                i = i.wrapping_add(1);
            }
            let elapsed = started.elapsed();
            samples
                .borrow_mut()
                .push(elapsed.as_nanos() as f64 / iters as f64);
            elapsed
        })
    });
    g.finish();
}

/// What the data path does per flow: the enforced verdict with its rule hits counted, then
/// the staged difference (at once `None` when nothing is staged).
fn decide(snapshot: &Snapshot, flow: &Flow<'_>) -> (Decision, Option<Difference>) {
    let verdict = snapshot.evaluate_counted(flow);
    let staged = snapshot.staged_difference(flow, &verdict);
    (verdict.decision, staged.map(|d| d.difference))
}

/// `world` plus, staged, a copy of every `STAGED_EVERY`th cluster policy, one priority
/// earlier (so that it decides before its original) with Accept and Deny swapped: staged
/// changes that alter real verdicts.
fn with_staged(world: &World) -> World {
    let mut out = world.clone();
    out.staged.cluster_policies = world
        .cluster_policies
        .iter()
        .step_by(STAGED_EVERY)
        .map(|p| {
            let mut p = p.clone();
            p.name.push_str("-staged");
            p.priority = p.priority.saturating_sub(1);
            for r in &mut p.egress {
                r.action = match r.action {
                    Action::Accept => Action::Deny,
                    Action::Deny => Action::Accept,
                    Action::Pass => Action::Pass,
                };
            }
            p
        })
        .collect();
    out
}

fn main() {
    let params = world::Params::default();

    let before = alloc::live();
    let started = Instant::now();
    let world = world::generate(&params);
    let generated_in = started.elapsed();
    let world_bytes = alloc::live() - before;
    let inv = &world.inventory;
    let host_network = inv.pods.iter().filter(|p| p.host_network).count();
    let dual_stack = inv.pods.iter().filter(|p| p.ips.len() > 1).count();
    let baseline = world
        .cluster_policies
        .iter()
        .filter(|p| p.tier == Tier::Baseline)
        .count();
    let rules: usize = world.cluster_policies.iter().map(|p| p.egress.len()).sum();
    let isolating = world
        .network_policies
        .iter()
        .filter(|n| n.egress.is_some())
        .count();
    println!(
        "world: {} namespaces, {} pods ({} host-network, {} dual-stack), {} nodes, {} cluster policies \
         ({} Baseline, {} rules), {} NetworkPolicies ({} isolating egress); generated in {:.0?}",
        inv.namespaces.len(),
        inv.pods.len(),
        host_network,
        dual_stack,
        inv.nodes.len(),
        world.cluster_policies.len(),
        baseline,
        rules,
        world.network_policies.len(),
        isolating,
        generated_in,
    );

    // The snapshot's footprint: what compile leaves allocated (its temporaries are freed by
    // then), measured while the world is alive, so it counts only the snapshot.
    let before = alloc::live();
    alloc::PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let snapshot = Snapshot::compile(&world, Options::default());
    let first_compile = started.elapsed();
    let snapshot_bytes = alloc::live() - before;
    let compile_peak = alloc::PEAK.load(Ordering::Relaxed) - before;
    println!(
        "snapshot memory: {:.1} MiB (world: {:.1} MiB); compile peak {:.1} MiB; first compile {:.0?}",
        mib(snapshot_bytes),
        mib(world_bytes),
        mib(compile_peak),
        first_compile,
    );

    // The pool the target is about: sources anywhere in the cluster (the cache-hostile case).
    let flows = world::flows(&world, POOL, FLOW_SEED);
    let stats = pool_stats(&snapshot, &flows);
    print_pool("flow pool", &flows, &stats);
    assert!(
        stats.allowed > 0 && stats.denied > 0,
        "the flow pool must exercise both allow and deny ({}/{})",
        stats.allowed,
        stats.denied
    );
    // What one per-node gateway sees: sources are the pods of one node.
    let local_flows = world::flows_from(&world, POOL, FLOW_SEED, |p| {
        !p.host_network && p.node_name.as_deref() == Some(LOCAL_NODE)
    });
    let local_sources = inv
        .pods
        .iter()
        .filter(|p| !p.host_network && p.node_name.as_deref() == Some(LOCAL_NODE))
        .count();
    let local_stats = pool_stats(&snapshot, &local_flows);
    print_pool(
        &format!("node-local flow pool ({local_sources} pods of {LOCAL_NODE})"),
        &local_flows,
        &local_stats,
    );

    // Per-call records, so that the summary can state the same medians criterion computes
    // (criterion keeps its estimates to itself). The last `sample_size` records of each
    // benchmark are its measurement samples; earlier ones are warm-up.
    let evaluate_samples: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    let local_samples: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    let compile_samples: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    let unstaged_samples: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    let staged_samples: RefCell<Vec<f64>> = RefCell::new(Vec::new());

    // The staged case: the same world with altered copies of some policies staged.
    let staged_world = with_staged(&world);
    let before = alloc::live();
    let started = Instant::now();
    let staged_snapshot = Snapshot::compile(&staged_world, Options::default());
    let staged_compile = started.elapsed();
    let staged_bytes = alloc::live() - before;
    let differences = flows
        .iter()
        .filter_map(|f| decide(&staged_snapshot, f).1)
        .fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d.as_str()).or_insert(0usize) += 1;
            m
        });
    assert!(
        flows.iter().all(|f| decide(&snapshot, f).1.is_none()),
        "nothing staged, no difference"
    );
    println!(
        "staged: {} cluster policies staged; snapshot memory {:.1} MiB, compiled in {:.0?}; differences in the flow pool: {differences:?}",
        staged_world.staged.cluster_policies.len(),
        mib(staged_bytes),
        staged_compile,
    );

    let mut c = Criterion::default().configure_from_args();
    bench_per_flow(&mut c, "evaluate", &flows, &evaluate_samples, |f| {
        snapshot.evaluate(f)
    });
    bench_per_flow(
        &mut c,
        "evaluate_node_local",
        &local_flows,
        &local_samples,
        |f| snapshot.evaluate(f),
    );
    // The data path's per-flow work without and with staged policies (same flows, same
    // enforced policies).
    bench_per_flow(&mut c, "decide_unstaged", &flows, &unstaged_samples, |f| {
        decide(&snapshot, f)
    });
    bench_per_flow(&mut c, "decide_staged", &flows, &staged_samples, |f| {
        decide(&staged_snapshot, f)
    });
    {
        // Each sample is one compile: flat sampling, and enough time for ten of them.
        let per_run = first_compile.max(Duration::from_millis(10));
        let mut g = c.benchmark_group("compile");
        g.sample_size(COMPILE_SAMPLES)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(per_run.mul_f64(1.5))
            .measurement_time(per_run.mul_f64(COMPILE_SAMPLES as f64 * 2.0));
        g.bench_function("world", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let s = Snapshot::compile(black_box(&world), Options::default());
                    let elapsed = started.elapsed();
                    // Dropping the snapshot is not part of compiling it.
                    drop(black_box(s));
                    total += elapsed;
                }
                compile_samples
                    .borrow_mut()
                    .push(total.as_secs_f64() * 1e3 / iters as f64);
                total
            })
        });
        g.finish();
    }
    c.final_summary();

    let last = |v: RefCell<Vec<f64>>, n: usize| {
        let v = v.into_inner();
        median(v[v.len().saturating_sub(n)..].to_vec())
    };
    let evaluate_ns = last(evaluate_samples, EVALUATE_SAMPLES);
    let local_ns = last(local_samples, EVALUATE_SAMPLES);
    let compile_ms = last(compile_samples, COMPILE_SAMPLES);
    let unstaged_ns = last(unstaged_samples, EVALUATE_SAMPLES);
    let staged_ns = last(staged_samples, EVALUATE_SAMPLES);
    let verdict = |ok: bool| if ok { "target met" } else { "TARGET MISSED" };

    println!();
    println!("==================== policy engine summary ====================");
    println!(
        "world: {} namespaces, {} pods, {} nodes, {} cluster policies, {} NetworkPolicies",
        inv.namespaces.len(),
        inv.pods.len(),
        inv.nodes.len(),
        world.cluster_policies.len(),
        world.network_policies.len()
    );
    match evaluate_ns {
        Some(ns) => println!(
            "evaluate median: {ns:.0} ns  (sources cluster-wide; target <= {EVALUATE_TARGET_NS:.0} ns: {})",
            verdict(ns <= EVALUATE_TARGET_NS)
        ),
        None => println!("evaluate median: not measured (filtered out)"),
    }
    match compile_ms {
        Some(ms) => println!(
            "compile: {ms:.0} ms  (median of {COMPILE_SAMPLES}; target <= {COMPILE_TARGET_MS:.0} ms: {})",
            verdict(ms <= COMPILE_TARGET_MS)
        ),
        None => println!("compile: not measured (filtered out); first compile {first_compile:.0?}"),
    }
    println!(
        "snapshot memory: {:.1} MiB (world: {:.1} MiB; compile peak {:.1} MiB)",
        mib(snapshot_bytes),
        mib(world_bytes),
        mib(compile_peak)
    );
    if let Some(ns) = local_ns {
        println!(
            "node-local evaluate median: {ns:.0} ns  (sources: the {local_sources} pods of {LOCAL_NODE}, what one per-node gateway sees)"
        );
    }
    println!(
        "flow pool: {} flows: {} allowed, {} denied; {:.1} policies consulted and {:.1} cluster rules tried per flow",
        flows.len(),
        stats.allowed,
        stats.denied,
        stats.consulted,
        stats.rules_tried
    );
    println!(
        "node-local pool: {} flows: {} allowed, {} denied; {:.1} policies consulted and {:.1} cluster rules tried per flow",
        local_flows.len(),
        local_stats.allowed,
        local_stats.denied,
        local_stats.consulted,
        local_stats.rules_tried
    );
    match (unstaged_ns, staged_ns) {
        (Some(u), Some(st)) => println!(
            "per-flow decision (evaluate + staged check): {u:.0} ns with nothing staged, {st:.0} ns with {} policies staged",
            staged_world.staged.cluster_policies.len()
        ),
        _ => {
            println!("per-flow decision with/without staged policies: not measured (filtered out)")
        }
    }
    println!("===============================================================");
    drop(snapshot);
}
