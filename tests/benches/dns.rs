//! DNS benchmark: the gateway's DNS proxy against dnsmasq as a plain forwarder and against
//! querying the upstream directly, with dnsperf, side by side in one run.
//!
//! Run with `bench/dns.sh` (as root; it installs what it needs and builds the gateway) or
//! `cargo bench -p chokepoint-tests --bench dns` after `cargo build --release -p chokepoint`.
//!
//! The lab: a node namespace, one pod (`tenant-a/client`) running dnsperf, and one outside host
//! (`upstream`, 192.0.2.53) where dnsmasq is authoritative for `NAMES` names (the canonical
//! upstream of every set-up). Three set-ups, measured in turn `REPS` times (interleaved, the
//! order rotating, so that drifts of the machine hit all alike), each on a fresh lab:
//!
//! - **direct**: the pod queries the upstream; the node only routes;
//! - **dnsmasq**: dnsmasq in the node namespace (10.0.0.1:53) forwarding every query to the
//!   upstream, its cache off (`cache-size=0`): a plain forwarder, like the proxy;
//! - **gateway**: `chokepoint run` with TPROXY capture; the pod queries 10.96.0.10 (which
//!   nothing owns) and the DNS proxy answers from the upstream, recording every answer in its
//!   name cache first.
//!
//! Measured per set-up: the most queries per second dnsperf completes (`MAX_SECS` seconds,
//! `MAX_CLIENTS` sockets, up to `MAX_OUTSTANDING` queries in flight), and, at a steady
//! `RATE_QPS` queries per second for `RATE_SECS` seconds, the latency of every query (dnsperf
//! `-v`): p50 and p99. Medians over the repetitions are reported.
//!
//! `DNS_PROFILE=FILE` also records a `perf` profile (cpu-clock, call graphs) of the gateway
//! during its first seconds of load into FILE (`perf report -i FILE`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use chokepoint_lab::services::{Dnsmasq, Zone};
use chokepoint_lab::{HostSpec, Lab, NODE_IPV4, PodSpec, Topology, netns};
use chokepoint_tests::{GatewayFiles, TempDir, start_gateway};

const REPS: usize = 3;
const NAMES: usize = 1000;
const MAX_SECS: u32 = 8;
const MAX_CLIENTS: u32 = 8;
const MAX_OUTSTANDING: u32 = 200;
const RATE_QPS: u32 = 10_000;
const RATE_SECS: u32 = 8;

const UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Targets of the issue.
const TARGET_QPS_VS_DNSMASQ: f64 = 1.0;
const TARGET_P99_MS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Dnsmasq,
    Gateway,
}

const MODES: [Mode; 3] = [Mode::Direct, Mode::Dnsmasq, Mode::Gateway];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Dnsmasq => "dnsmasq",
            Mode::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Run {
    max_qps: f64,
    lost_at_max: f64,
    p50_us: f64,
    p99_us: f64,
    rate_qps: f64,
    lost_at_rate: f64,
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "dns bench: needs root (it builds network namespaces and runs the gateway, dnsmasq \
             and dnsperf in them); run bench/dns.sh as root"
        );
        return ExitCode::FAILURE;
    }
    for tool in ["ip", "nft", "dnsmasq", "dnsperf"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            eprintln!("dns bench: `{tool}` is missing; bench/dns.sh installs what it needs");
            return ExitCode::FAILURE;
        }
    }
    let reps = std::env::var("DNS_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=9).contains(n))
        .unwrap_or(REPS);
    let mut runs: Vec<(Mode, Run)> = Vec::new();
    for rep in 0..reps {
        for i in 0..MODES.len() {
            let mode = MODES[(i + rep) % MODES.len()];
            let run = measure(mode);
            eprintln!("rep {} {:>8}: {run:?}", rep + 1, mode.name());
            runs.push((mode, run));
        }
    }
    print!("{}", report(&runs, reps));
    ExitCode::SUCCESS
}

fn lab() -> Lab {
    Topology::new()
        .namespace("tenant-a", [("tenant", "a")])
        .pod(PodSpec::new("tenant-a", "client"))
        .host(HostSpec::new("upstream", UPSTREAM))
        .build()
        .expect("build lab")
}

fn zone() -> Zone {
    (0..NAMES).fold(Zone::new().quiet(), |z, i| {
        z.host(
            &format!("n{i}.bench.test"),
            &[IpAddr::from([192, 0, 2, (i % 200) as u8 + 1])],
            300,
        )
    })
}

fn measure(mode: Mode) -> Run {
    let lab = lab();
    let dir = TempDir::new("dns-bench");
    let queries = dir.path().join("queries.txt");
    let text: String = (0..NAMES).fold(String::new(), |mut s, i| {
        let _ = writeln!(s, "n{i}.bench.test A");
        s
    });
    std::fs::write(&queries, text).unwrap();
    let upstream_ns = lab.host("upstream").unwrap().netns.clone();
    let _upstream = Dnsmasq::start(&upstream_ns, UPSTREAM.into(), &zone(), 300, dir.path())
        .expect("start the upstream dnsmasq");
    let pod_ns = lab.pod("tenant-a", "client").unwrap().netns.clone();
    let upstream = SocketAddr::new(UPSTREAM.into(), 53);
    let run = match mode {
        Mode::Direct => load(&pod_ns, UPSTREAM.into(), &queries),
        Mode::Dnsmasq => {
            let forwarder_dir = dir.path().join("forwarder");
            std::fs::create_dir_all(&forwarder_dir).unwrap();
            let _forwarder = Dnsmasq::start(
                lab.node_netns(),
                NODE_IPV4.into(),
                &Zone::new().quiet().forward_to(upstream),
                300,
                &forwarder_dir,
            )
            .expect("start the forwarding dnsmasq");
            load(&pod_ns, NODE_IPV4.into(), &queries)
        }
        Mode::Gateway => {
            let files = GatewayFiles::new(
                &lab,
                &[],
                "tproxy",
                &format!("dns:\n  upstream: {UPSTREAM}\n"),
            );
            let gateway = start_gateway(&lab, &files);
            let profile = std::env::var_os("DNS_PROFILE").map(|out| {
                // `perf record` of the gateway while the load runs (cpu-clock: works without
                // hardware counters).
                Command::new("perf")
                    .args(["record", "-e", "cpu-clock", "-g", "-o"])
                    .arg(out)
                    .arg("-p")
                    .arg(gateway.pid().expect("gateway running").to_string())
                    .args(["--", "sleep", "6"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("run perf (apt-get install linux-perf)")
            });
            let run = load(&pod_ns, CLUSTER_DNS.into(), &queries);
            if let Some(mut perf) = profile {
                let _ = perf.wait();
            }
            gateway.stop();
            run
        }
    };
    lab.teardown().expect("teardown");
    run
}

/// Both loads against one server.
fn load(pod_ns: &str, server: IpAddr, queries: &Path) -> Run {
    // Warm-up: fills the gateway's cache, ARP entries, dnsmasq's state.
    dnsperf(pod_ns, server, queries, &["-l", "2", "-c", "2", "-q", "50"]);
    let max = dnsperf(
        pod_ns,
        server,
        queries,
        &[
            "-l",
            &MAX_SECS.to_string(),
            "-c",
            &MAX_CLIENTS.to_string(),
            "-q",
            &MAX_OUTSTANDING.to_string(),
        ],
    );
    let rate = dnsperf(
        pod_ns,
        server,
        queries,
        &[
            "-l",
            &RATE_SECS.to_string(),
            "-Q",
            &RATE_QPS.to_string(),
            "-c",
            "4",
            "-q",
            "500",
            "-v",
        ],
    );
    let mut latencies: Vec<f64> = rate
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize] * 1e6
        }
    };
    Run {
        max_qps: stat(&max, "Queries per second:"),
        lost_at_max: lost_share(&max),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rate_qps: stat(&rate, "Queries per second:"),
        lost_at_rate: lost_share(&rate),
    }
}

fn dnsperf(pod_ns: &str, server: IpAddr, queries: &Path, args: &[&str]) -> String {
    let out = netns::command(pod_ns, "dnsperf")
        .arg("-s")
        .arg(server.to_string())
        .arg("-d")
        .arg(queries)
        .args(["-t", "2"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dnsperf");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stat(output: &str, label: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `Queries lost: N (x.xx%)` as a share.
fn lost_share(output: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries lost:"))
        .and_then(|v| {
            let pct = v.split_once('(')?.1.split_once('%')?.0;
            pct.trim().parse::<f64>().ok()
        })
        .map_or(f64::NAN, |p| p / 100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(runs: &[(Mode, Run)], reps: usize) -> String {
    let of = |mode: Mode, f: fn(&Run) -> f64| {
        median(
            runs.iter()
                .filter(|(m, _)| *m == mode)
                .map(|(_, r)| f(r))
                .collect(),
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## DNS: gateway DNS proxy vs dnsmasq forwarder vs direct (dnsperf, medians of {reps})\n"
    );
    let _ = writeln!(
        out,
        "| set-up | max queries/s | lost at max | p50 at {RATE_QPS}/s (µs) | p99 at {RATE_QPS}/s (µs) | achieved /s | lost at {RATE_QPS}/s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for mode in MODES {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}% | {:.0} | {:.0} | {:.0} | {:.2}% |",
            mode.name(),
            of(mode, |r| r.max_qps),
            of(mode, |r| r.lost_at_max) * 100.0,
            of(mode, |r| r.p50_us),
            of(mode, |r| r.p99_us),
            of(mode, |r| r.rate_qps),
            of(mode, |r| r.lost_at_rate) * 100.0,
        );
    }
    let qps_ratio = of(Mode::Gateway, |r| r.max_qps) / of(Mode::Dnsmasq, |r| r.max_qps);
    let p50_ratio = of(Mode::Gateway, |r| r.p50_us) / of(Mode::Dnsmasq, |r| r.p50_us);
    let p99_ratio = of(Mode::Gateway, |r| r.p99_us) / of(Mode::Dnsmasq, |r| r.p99_us);
    let added_p50 = of(Mode::Gateway, |r| r.p50_us) - of(Mode::Direct, |r| r.p50_us);
    let added_p99 = of(Mode::Gateway, |r| r.p99_us) - of(Mode::Direct, |r| r.p99_us);
    let gateway_p99_ms = of(Mode::Gateway, |r| r.p99_us) / 1000.0;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- queries/s gateway / dnsmasq: {qps_ratio:.2}× (target ≥ {TARGET_QPS_VS_DNSMASQ:.1}×: {})",
        verdict(qps_ratio >= TARGET_QPS_VS_DNSMASQ)
    );
    let _ = writeln!(
        out,
        "- latency gateway / dnsmasq at {RATE_QPS}/s: p50 {p50_ratio:.2}×, p99 {p99_ratio:.2}×"
    );
    let _ = writeln!(
        out,
        "- gateway p99 at {RATE_QPS}/s: {gateway_p99_ms:.3} ms (target < {TARGET_P99_MS:.0} ms: {})",
        verdict(gateway_p99_ms < TARGET_P99_MS)
    );
    let _ = writeln!(
        out,
        "- added over querying the upstream directly: p50 +{added_p50:.0} µs, p99 +{added_p99:.0} µs"
    );
    let _ = writeln!(
        out,
        "- load: {MAX_CLIENTS} sockets, ≤ {MAX_OUTSTANDING} in flight, {MAX_SECS} s; steady {RATE_QPS}/s for {RATE_SECS} s; {NAMES} names; every process on this machine's {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out
}
