//! DNS benchmark: the gateway's DNS proxy against two forwarders tuned for the load (dnsmasq
//! and unbound) and against querying the upstream directly, with dnsperf, side by side in one
//! run.
//!
//! Run with `bench/dns.sh` (as root; it installs what it needs and builds the gateway) or
//! `cargo bench -p chokepoint-tests --bench dns` after `cargo build --release -p chokepoint`.
//!
//! The lab: a node namespace, one pod (`tenant-a/client`) running dnsperf, and one outside host
//! (`upstream`, 192.0.2.53) where dnsmasq is authoritative for `NAMES` names (the canonical
//! upstream of every set-up). Four set-ups, measured in turn `REPS` times (interleaved, the
//! order rotating, so that drifts of the machine hit all alike), each on a fresh lab:
//!
//! - **direct**: the pod queries the upstream; the node only routes;
//! - **dnsmasq**: dnsmasq in the node namespace (10.0.0.1:53) forwarding every query to the
//!   upstream: cache off (`cache-size=0`), and its limit of queries in flight
//!   (`dns-forward-max`, 150 by default) raised to `PEER_IN_FLIGHT`, above the load's;
//! - **unbound**: unbound in the node namespace (10.0.0.1:53) forwarding every query to the
//!   upstream (`forward-zone "."`): as many threads as the gateway has workers (one per CPU,
//!   tokio's default), one `SO_REUSEPORT` socket per thread, `UNBOUND_IN_FLIGHT` queries in
//!   flight per thread, the iterator module only (no validation), `test.` served (unbound
//!   answers the special-use zones of RFC 6761 itself, NXDOMAIN, unless told otherwise), and
//!   the cache off as far as unbound allows: `cache-max-ttl: 0` (a message with TTL 0 is not
//!   stored) and both caches sized 0 (unbound keeps at most one entry per slab). Checked by
//!   hand with a logging upstream: every query dnsperf completed reached the upstream;
//! - **gateway**: `chokepoint run` with TPROXY capture; the pod queries 10.96.0.10 (which
//!   nothing owns) and the DNS proxy answers from the upstream, recording every answer in its
//!   name cache first.
//!
//! Measured per set-up: the most queries per second dnsperf completes (`MAX_SECS` seconds,
//! `MAX_CLIENTS` sockets, up to `MAX_OUTSTANDING` queries in flight each), and, at a steady
//! `RATE_QPS` queries per second for `RATE_SECS` seconds, the latency of every query (dnsperf
//! `-v`): p50 and p99. Medians over the repetitions are reported, and every repetition.
//!
//! `DNS_MODES=gateway,unbound` measures only the set-ups named; `DNS_CLIENTS=4` changes the
//! saturation load's sockets. `DNS_PROFILE=FILE` also records a `perf` profile (cpu-clock, call graphs) of the gateway
//! during its first seconds of load into FILE (`perf report -i FILE`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use chokepoint_lab::services::{Dnsmasq, Zone};
use chokepoint_lab::{HostSpec, Lab, NODE_IPV4, PodSpec, Topology, netns};
use chokepoint_tests::cpu::CpuTimes;
use chokepoint_tests::{GatewayFiles, TempDir, start_gateway};

const REPS: usize = 3;
/// Steal above this share in a run is pointed out in the report.
const STEAL_NOTED: f64 = 0.02;
const NAMES: usize = 1000;
const MAX_SECS: u32 = 8;
const MAX_CLIENTS: u32 = 8;

/// Client sockets of the saturation load: `DNS_CLIENTS` (1 to 64) overrides [`MAX_CLIENTS`]
/// (the measurement that opened the DNS issue used 4).
fn max_clients() -> u32 {
    std::env::var("DNS_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(MAX_CLIENTS)
}
const MAX_OUTSTANDING: u32 = 200;
const RATE_QPS: u32 = 10_000;
const RATE_SECS: u32 = 8;
/// dnsmasq's limit of queries in flight (`dns-forward-max`): above the load's
/// `MAX_CLIENTS × MAX_OUTSTANDING`.
const PEER_IN_FLIGHT: u32 = 10_000;
/// unbound's queries in flight per thread (`num-queries-per-thread`), above the whole load's,
/// and its outgoing ports per thread (`outgoing-range`; every thread's ports must fit the open
/// file limit unbound may raise itself to).
const UNBOUND_IN_FLIGHT: u32 = 4096;
const UNBOUND_PORTS: u32 = 8192;

const UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Targets of the issue: queries/s over the better tuned peer, p99 at `RATE_QPS`.
const TARGET_QPS_VS_PEERS: f64 = 1.2;
const TARGET_P99_MS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Dnsmasq,
    Unbound,
    Gateway,
}

const MODES: [Mode; 4] = [Mode::Direct, Mode::Dnsmasq, Mode::Unbound, Mode::Gateway];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Dnsmasq => "dnsmasq",
            Mode::Unbound => "unbound",
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
    /// Share of the saturation load's answers that were NOERROR: a set-up that answers
    /// without asking the upstream (an error, say) shows here, not as speed.
    noerror_at_max: f64,
    /// Share of the machine's CPU time the hypervisor took while both loads ran ("steal"):
    /// a run with much of it says less about the set-up than about the neighbours.
    stolen: f64,
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "dns bench: needs root (it builds network namespaces and runs the gateway, dnsmasq, \
             unbound and dnsperf in them); run bench/dns.sh as root"
        );
        return ExitCode::FAILURE;
    }
    for tool in ["ip", "nft", "dnsmasq", "dnsperf", "unbound"] {
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
    // `DNS_MODES=gateway,unbound`: only these set-ups (while working on one of them).
    let only = std::env::var("DNS_MODES").unwrap_or_default();
    let modes: Vec<Mode> = MODES
        .into_iter()
        .filter(|m| only.is_empty() || only.split(',').any(|o| o.trim() == m.name()))
        .collect();
    let load_before = load_average();
    let mut runs: Vec<(usize, Mode, Run)> = Vec::new();
    for rep in 0..reps {
        for i in 0..modes.len() {
            let mode = modes[(i + rep) % modes.len()];
            let run = measure(mode);
            eprintln!("rep {} {:>8}: {run:?}", rep + 1, mode.name());
            runs.push((rep, mode, run));
        }
    }
    print!("{}", report(&runs, reps, &load_before, &load_average()));
    ExitCode::SUCCESS
}

/// The machine's 1/5/15-minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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

/// Worker threads of the gateway's data-path runtime (tokio's default: one per CPU).
fn gateway_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
    let run = match mode {
        Mode::Direct => load(&pod_ns, UPSTREAM.into(), &queries),
        Mode::Dnsmasq | Mode::Unbound => {
            let _peer = Peer::start(mode, lab.node_netns(), dir.path());
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

/// A peer forwarder in the node namespace on `NODE_IPV4:53`, forwarding to the upstream;
/// stopped when dropped.
struct Peer(Child);

impl Peer {
    fn start(mode: Mode, node_ns: &str, dir: &Path) -> Peer {
        let conf = dir.join(format!("{}.conf", mode.name()));
        let (text, mut command) = match mode {
            Mode::Dnsmasq => (
                format!(
                    "no-resolv\nno-hosts\nno-poll\nbind-interfaces\nlisten-address={NODE_IPV4}\n\
                     port=53\nuser=root\ngroup=root\npid-file={pid}\n\
                     server={UPSTREAM}#53\ncache-size=0\ndns-forward-max={PEER_IN_FLIGHT}\n",
                    pid = dir.join("dnsmasq.pid").display(),
                ),
                {
                    let mut c = netns::command(node_ns, "dnsmasq");
                    c.arg("--keep-in-foreground")
                        .arg(format!("--conf-file={}", conf.display()));
                    c
                },
            ),
            Mode::Unbound => (
                format!(
                    "server:\n  interface: {NODE_IPV4}\n  port: 53\n  do-ip6: no\n\
                     \x20 num-threads: {threads}\n  so-reuseport: yes\n\
                     \x20 num-queries-per-thread: {UNBOUND_IN_FLIGHT}\n\
                     \x20 outgoing-range: {UNBOUND_PORTS}\n\
                     \x20 local-zone: \"test.\" nodefault\n\
                     \x20 module-config: \"iterator\"\n\
                     \x20 msg-cache-size: 0\n  rrset-cache-size: 0\n\
                     \x20 cache-max-ttl: 0\n  cache-max-negative-ttl: 0\n\
                     \x20 access-control: 0.0.0.0/0 allow\n\
                     \x20 do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n\
                     \x20 directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n\
                     \x20 use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n\
                     forward-zone:\n  name: \".\"\n  forward-addr: {UPSTREAM}\n",
                    threads = gateway_workers(),
                    dir = dir.display(),
                ),
                {
                    let mut c = netns::command(node_ns, "unbound");
                    c.arg("-d").arg("-c").arg(&conf);
                    c
                },
            ),
            Mode::Direct | Mode::Gateway => unreachable!("not a peer forwarder"),
        };
        std::fs::write(&conf, text).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", mode.name()));
        let peer = Peer(child);
        peer.wait_listening(mode, node_ns);
        peer
    }

    fn wait_listening(&self, mode: Mode, node_ns: &str) {
        let addr = SocketAddr::new(NODE_IPV4.into(), 53);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !netns::run_in(node_ns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .expect("enter the node namespace")
        {
            assert!(
                Instant::now() < deadline,
                "{} not listening on {addr} after 10 s",
                mode.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Both loads against one server.
fn load(pod_ns: &str, server: IpAddr, queries: &Path) -> Run {
    // Warm-up: fills the gateway's cache, ARP entries, the peers' state.
    dnsperf(pod_ns, server, queries, &["-l", "2", "-c", "2", "-q", "50"]);
    let cpu_before = CpuTimes::now();
    let max = dnsperf(
        pod_ns,
        server,
        queries,
        &[
            "-l",
            &MAX_SECS.to_string(),
            "-c",
            &max_clients().to_string(),
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
    let stolen = match (cpu_before, CpuTimes::now()) {
        (Some(before), Some(after)) => after.stolen_since(&before),
        _ => f64::NAN,
    };
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
        noerror_at_max: noerror_share(&max),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        rate_qps: stat(&rate, "Queries per second:"),
        lost_at_rate: lost_share(&rate),
        stolen,
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

/// `Response codes: NOERROR N (x.xx%)[, …]` as a share (0 when no answer was NOERROR).
fn noerror_share(output: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .map_or(f64::NAN, |v| {
            v.split(',')
                .find_map(|code| {
                    let pct = code.trim().strip_prefix("NOERROR ")?;
                    pct.split_once('(')?
                        .1
                        .split_once('%')?
                        .0
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .map_or(0.0, |p| p / 100.0)
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(runs: &[(usize, Mode, Run)], reps: usize, load_before: &str, load_after: &str) -> String {
    let of = |mode: Mode, f: fn(&Run) -> f64| {
        median(
            runs.iter()
                .filter(|(_, m, _)| *m == mode)
                .map(|(_, _, r)| f(r))
                .collect(),
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## DNS: gateway DNS proxy vs dnsmasq and unbound forwarders vs direct (dnsperf, medians of {reps})\n"
    );
    let _ = writeln!(
        out,
        "| set-up | max queries/s | lost at max | NOERROR at max | p50 at {RATE_QPS}/s (µs) | p99 at {RATE_QPS}/s (µs) | achieved /s | lost at {RATE_QPS}/s |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for mode in MODES {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}% | {:.2}% | {:.0} | {:.0} | {:.0} | {:.2}% |",
            mode.name(),
            of(mode, |r| r.max_qps),
            of(mode, |r| r.lost_at_max) * 100.0,
            of(mode, |r| r.noerror_at_max) * 100.0,
            of(mode, |r| r.p50_us),
            of(mode, |r| r.p99_us),
            of(mode, |r| r.rate_qps),
            of(mode, |r| r.lost_at_rate) * 100.0,
        );
    }
    let _ = writeln!(
        out,
        "\nEvery repetition (max queries/s; p50 / p99 µs at {RATE_QPS}/s; CPU time the hypervisor took meanwhile):\n"
    );
    let _ = writeln!(
        out,
        "| repetition | {} |",
        MODES.map(Mode::name).join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "---:|".repeat(MODES.len()));
    for rep in 0..reps {
        let cells: Vec<String> = MODES
            .iter()
            .map(|mode| {
                runs.iter()
                    .find(|(r, m, _)| *r == rep && m == mode)
                    .map_or_else(String::new, |(_, _, r)| {
                        format!(
                            "{:.0}; {:.0} / {:.0}; steal {:.0}%",
                            r.max_qps,
                            r.p50_us,
                            r.p99_us,
                            r.stolen * 100.0
                        )
                    })
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", rep + 1, cells.join(" | "));
    }
    let gateway_qps = of(Mode::Gateway, |r| r.max_qps);
    // The better of the peers measured (`DNS_MODES` may leave one out).
    let (best_peer, best_qps) = [Mode::Dnsmasq, Mode::Unbound]
        .map(|m| (m, of(m, |r| r.max_qps)))
        .into_iter()
        .filter(|(_, qps)| !qps.is_nan())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(("none measured", f64::NAN), |(m, qps)| (m.name(), qps));
    let qps_ratio = gateway_qps / best_qps;
    let added_p50 = of(Mode::Gateway, |r| r.p50_us) - of(Mode::Direct, |r| r.p50_us);
    let added_p99 = of(Mode::Gateway, |r| r.p99_us) - of(Mode::Direct, |r| r.p99_us);
    let gateway_p99_ms = of(Mode::Gateway, |r| r.p99_us) / 1000.0;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let measured = |m: Mode| !of(m, |r| r.max_qps).is_nan();
    let _ = writeln!(out);
    if qps_ratio.is_nan() {
        let _ = writeln!(
            out,
            "- queries/s gateway / the better peer: not judged (the gateway or both peers not measured)"
        );
    } else {
        let _ = writeln!(
            out,
            "- queries/s gateway / the better peer ({}): {qps_ratio:.2}× (target ≥ {TARGET_QPS_VS_PEERS:.1}×: {})",
            best_peer,
            verdict(qps_ratio >= TARGET_QPS_VS_PEERS)
        );
    }
    for peer in [Mode::Dnsmasq, Mode::Unbound] {
        if !(measured(peer) && measured(Mode::Gateway)) {
            continue;
        }
        let _ = writeln!(
            out,
            "- gateway / {}: queries/s {:.2}×, p50 {:.2}×, p99 {:.2}× at {RATE_QPS}/s",
            peer.name(),
            gateway_qps / of(peer, |r| r.max_qps),
            of(Mode::Gateway, |r| r.p50_us) / of(peer, |r| r.p50_us),
            of(Mode::Gateway, |r| r.p99_us) / of(peer, |r| r.p99_us),
        );
    }
    if measured(Mode::Gateway) {
        let _ = writeln!(
            out,
            "- gateway p99 at {RATE_QPS}/s: {gateway_p99_ms:.3} ms (target < {TARGET_P99_MS:.0} ms: {})",
            verdict(gateway_p99_ms < TARGET_P99_MS)
        );
    }
    if measured(Mode::Gateway) && measured(Mode::Direct) {
        let _ = writeln!(
            out,
            "- added over querying the upstream directly: p50 +{added_p50:.0} µs, p99 +{added_p99:.0} µs"
        );
    }
    let _ = writeln!(
        out,
        "- peers: dnsmasq `cache-size=0`, `dns-forward-max={PEER_IN_FLIGHT}`; unbound {} threads, `so-reuseport`, `num-queries-per-thread: {UNBOUND_IN_FLIGHT}`, `outgoing-range: {UNBOUND_PORTS}`, iterator only, caches 0, `cache-max-ttl: 0`",
        gateway_workers()
    );
    let _ = writeln!(
        out,
        "- load: {} sockets, ≤ {MAX_OUTSTANDING} in flight each, {MAX_SECS} s; steady {RATE_QPS}/s for {RATE_SECS} s; {NAMES} names; every process on this machine's {} CPUs; load average {load_before} before, {load_after} after",
        max_clients(),
        gateway_workers()
    );
    let most_stolen = runs.iter().map(|(_, _, r)| r.stolen).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "- CPU time the hypervisor took during the loads (steal): at most {:.1}% in one run{}",
        most_stolen * 100.0,
        if most_stolen > STEAL_NOTED {
            "; runs with much of it measure the neighbours as much as the set-up"
        } else {
            ""
        }
    );
    out
}
