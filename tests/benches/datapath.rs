//! Data-path benchmarks: the real gateway, on its kernel fast path and on its proxy path,
//! against direct routing, against HAProxy and against the fast path's bare mechanism, in the
//! network-namespace lab, side by side in one run.
//!
//! Run with `bench/datapath.sh` (as root; it installs `haproxy` and `iperf3` and builds the
//! gateway) or `cargo bench -p chokepoint-tests --bench datapath` after
//! `cargo build --release -p chokepoint`. `DATAPATH_REPS=1` makes one repetition instead of
//! three; `DATAPATH_MODES=direct,fast` measures only the set-ups named (`direct`, `fast`,
//! `proxy`, `haproxy`, `queue`, `nft`, `ct`), while working on one.
//!
//! The lab: a node namespace, one pod (`tenant-a/web`, 10.244.1.10) and one outside host
//! (`host-a`, 192.0.2.10); a fresh one for every measurement block, so that nothing one set-up
//! leaves behind affects the next. Seven set-ups of the node, measured `REPS` times,
//! interleaved: every repetition measures all of them, in an order rotated by one each time, so
//! that slow drifts of the machine hit all of them alike and no set-up always follows the same
//! other one:
//!
//! - **direct**: no capture rules; the node just routes the pod's packets;
//! - **fast path**: `chokepoint run` with `capture: {mode: tproxy, l4: kernel}` (the default in
//!   TPROXY mode, stated here): the first packet of each new flow waits in an NFQUEUE queue
//!   for the gateway's verdict; an allowed flow then stays in the kernel (its conntrack mark)
//!   and the gateway holds no socket for it;
//! - **proxy path**: `chokepoint run` with `l4: proxy`: the gateway's user-space proxy accepts
//!   every connection (TPROXY) and relays it over a transparent upstream connection;
//! - **haproxy**: the proxy path's capture rules (`chokepoint_redirect::install` with the spec
//!   the `l4: proxy` settings give) and HAProxy in the node namespace with
//!   `bind :15001 transparent`, `server s 0.0.0.0:0` (to the original destination) and
//!   `source 0.0.0.0 usesrc clientip` (keeps the pod's IP, as the gateway does);
//! - **bare queue**: the fast path's capture rules (the spec the `l4: kernel` settings give)
//!   and, instead of the gateway, a reader process of this binary that lets every queued
//!   packet through at once, allowed at the installed generation ([`bare_queue_main`]). It
//!   has all of the fast path's kernel work and none of the gateway's: what it adds to direct
//!   routing is the mechanism's price on this machine, what the fast path adds to it the
//!   gateway's own (the decision, its records, the caps and their conntrack follower);
//! - **decided in nft**: the fast path's capture rules with the decision already in the
//!   kernel: an nftables set of (pod, destination, protocol, port) that the bench fills with
//!   the host's ports, looked up before the note and the queue, and a hit marked allowed at
//!   the installed generation (with the event mask the gateway's verdict sets). No process
//!   and no queue: the ceiling of deciding a known flow's first packet in the kernel (see
//!   [`decided_in_nft`]); a miss would wait in a queue no one reads, and be dropped;
//! - **conntrack only**: no capture, one nftables rule in the node that makes conntrack track
//!   every packet (see [`CONNTRACK_ONLY`]): what the connection tracking every design with
//!   ct marks needs costs by itself.
//!
//! Each gateway set-up is checked, from the gateway's `/metrics`, to have taken its path: on
//! the fast path every connection of the block got a `kernel` verdict, none went to the proxy
//! and the proxy relayed no byte; on the proxy path no flow was queued and the proxy relayed
//! the bytes (see [`path_taken`]). The first connection is checked before anything is
//! measured, the whole block after it.
//!
//! Measured: bulk TCP throughput with iperf3 (pod → host and host → pod), new connections per
//! second (a pool of client threads in the pod connecting to a server that writes one byte and
//! closes), connect + first-byte latency (sequential), the CPU time and scheduling per
//! connection of the process that handles connections (`/proc/<pid>/task/*/schedstat`: the
//! proxy; on the fast path the gateway, whose queue readers decide each new flow), and the RSS
//! and open files of that process before and after [`IDLE_CONNS`] idle allowed connections
//! (for a proxy fewer when the hard open-file limit cannot hold two sockets per connection in
//! it; the fast path holds none, see [`idle_target`]). The gateway's figures are also split by
//! thread (runtime, queue readers, conntrack follower). Before each measurement the bench
//! waits (bounded) for the machine to be quiet and counts the times it was not.
//!
//! The report gives every figure, the ratios, and each target with met or missed: the fast
//! path's against direct routing, the proxy path's against direct and HAProxy.
//!
//! `DATAPATH_SERVICE=1` puts a Service in front of the host in every set-up: the node gets a
//! kube-proxy-shaped nat table (a `prerouting` chain at priority `dstnat` that translates
//! [`SERVICE_IP`] to the host, as kube-proxy's nftables mode does), and every client connects
//! to the ClusterIP. Conntrack and the Service DNAT are then in every set-up's path, as on a
//! cluster node, and the fast path decides translated flows (it reads the ClusterIP the
//! capture noted for each).
//!
//! Everything runs inside namespaces the lab creates; nothing touches the root namespace. Every
//! loop and wait is bounded; every process started here is stopped on the way out, also when a
//! measurement panics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chokepoint_config::settings::{GatewaySettings, L4Path};
use chokepoint_lab::{HOST_A_IPV4, HostSpec, Lab, LabPod, PodSpec, Topology, netns};
use chokepoint_redirect::{CaptureSpec, InstallMode};
use chokepoint_tests::cpu::CpuTimes;
use chokepoint_tests::{Gateway, GatewayFiles, TempDir, admin_get, start_gateway};

/// Repetitions of every measurement (medians are reported); `DATAPATH_REPS` (1 to 9)
/// overrides it.
const REPS: usize = 3;
/// iperf3: measured seconds, after one omitted warm-up second.
const IPERF_SECS: u32 = 4;
/// New connections per second: how long, and how many client threads.
const CPS_SECS: u64 = 3;
const CPS_CONCURRENCY: usize = 16;
/// Connect + first byte: sequential samples per repetition (after a short warm-up).
const LATENCY_SAMPLES: usize = 1000;
const LATENCY_WARMUP: usize = 50;
/// Before each measurement, wait up to this long for the machine to be quiet: less than this
/// share of all CPUs busy (the proxy, servers and clients are idle then).
const QUIET_WAIT: Duration = Duration::from_secs(30);
const QUIET_BUSY: f64 = 0.10;
/// Idle allowed connections for the memory measurement (see [`idle_target`]).
const IDLE_CONNS: usize = 10_000;
/// File descriptors a process needs besides its sockets for the idle connections (listeners,
/// epoll, logs, admin endpoint, …), with a margin.
const FD_RESERVE: u64 = 100;

/// The ClusterIP of `DATAPATH_SERVICE=1`.
const SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 90);
const IPERF_PORT: u16 = 5201;
/// Writes one byte at once on accept, then closes.
const BYTE_PORT: u16 = 9000;
/// Accepts and holds connections open, silent.
const HOLD_PORT: u16 = 9001;

/// The open-file limit asked for this process and its children (two sockets per idle
/// connection in a proxy). Raising the hard limit needs CAP_SYS_RESOURCE; without it the
/// soft limit is raised to the hard one and the idle test adapts (see [`idle_target`]).
const NOFILE: u64 = 65_536;

/// Targets of the proxy path (the first data-path issue), for the gateway with `l4: proxy`.
const PROXY_VS_DIRECT: f64 = 0.90;
const PROXY_VS_HAPROXY: f64 = 1.0;
const PROXY_CPS_VS_HAPROXY: f64 = 1.2;
const PROXY_ADDED_P50_US: f64 = 50.0;
const PROXY_BYTES_PER_IDLE: f64 = 4096.0;
/// Targets of the kernel fast path, against direct routing.
const FAST_VS_DIRECT: f64 = 0.95;
const FAST_CPS_VS_DIRECT: f64 = 0.8;
const FAST_ADDED_P50_US: f64 = 30.0;
const FAST_ADDED_P99_US: f64 = 100.0;
/// RSS growth of the gateway with [`IDLE_CONNS`] idle allowed fast-path connections.
const FAST_IDLE_GROWTH: u64 = 1 << 20;

const POLICY: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-documentation-net-2}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: tenant-a}}}
  egress:
  - name: no-198-51-100
    action: Deny
    to: [{networks: [198.51.100.0/24]}]
";

/// The gateway's `limits:` for the bench: the per-pod TCP cap (4096 by default) raised above
/// the idle test's connections, which all come from the one pod (fast-path flows take places
/// in the caps too). The total cap keeps its default.
fn limits() -> String {
    format!("limits:\n  tcpConnectionsPerPod: {}\n", 2 * IDLE_CONNS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(HOLD_SERVER_ARG) {
        return hold_server_main(args.get(2).map(String::as_str));
    }
    if args.get(1).map(String::as_str) == Some(BARE_QUEUE_ARG) {
        return bare_queue_main(&args[2..]);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "datapath bench: needs root (it builds network namespaces, installs nftables rules \
             inside them and runs the gateway and HAProxy there); run bench/datapath.sh as root"
        );
        return ExitCode::FAILURE;
    }
    for tool in ["ip", "nft", "iperf3", "haproxy", "ss"] {
        if !tool_exists(tool) {
            eprintln!(
                "datapath bench: `{tool}` is missing; bench/datapath.sh installs what it needs"
            );
            return ExitCode::FAILURE;
        }
    }
    raise_nofile();
    let results = run();
    println!("{}", results.markdown());
    ExitCode::SUCCESS
}

// ------------------------------------------------------------------------------------ model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    FastPath,
    ProxyPath,
    Haproxy,
    /// The fast path's capture rules with a reader that decides nothing (every queued
    /// packet allowed at once, see [`bare_queue_main`]): what the queue itself costs.
    BareQueue,
    /// The fast path's capture rules with every flow of the bench already decided in an nft
    /// set (see [`decided_in_nft`]): what the kernel's own work costs without the queue.
    NftDecided,
    /// Direct routing with conntrack tracking every packet (see [`CONNTRACK_ONLY`]).
    Conntrack,
}

impl Mode {
    const ALL: [Mode; 7] = [
        Mode::Direct,
        Mode::FastPath,
        Mode::ProxyPath,
        Mode::Haproxy,
        Mode::BareQueue,
        Mode::NftDecided,
        Mode::Conntrack,
    ];
    /// The columns of the main table.
    const COMPARED: [Mode; 4] = [Mode::Direct, Mode::FastPath, Mode::ProxyPath, Mode::Haproxy];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::FastPath => "fast path",
            Mode::ProxyPath => "proxy path",
            Mode::Haproxy => "haproxy",
            Mode::BareQueue => "bare queue",
            Mode::NftDecided => "decided in nft",
            Mode::Conntrack => "conntrack only",
        }
    }

    /// The name `DATAPATH_MODES` takes.
    fn key(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::FastPath => "fast",
            Mode::ProxyPath => "proxy",
            Mode::Haproxy => "haproxy",
            Mode::BareQueue => "queue",
            Mode::NftDecided => "nft",
            Mode::Conntrack => "ct",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The path the settings give allowed L4 flows: HAProxy (and direct, which installs
    /// nothing) get the proxy path's capture rules, the bare queue the fast path's.
    fn l4(self) -> L4Path {
        match self {
            Mode::FastPath | Mode::BareQueue | Mode::NftDecided => L4Path::Kernel,
            Mode::Direct | Mode::ProxyPath | Mode::Haproxy | Mode::Conntrack => L4Path::Proxy,
        }
    }

    /// The settings' `capture.mode` as [`GatewayFiles::new`] takes it: it writes it after
    /// `mode: `, so the second line is the next key of the `capture:` section. The path is
    /// always stated, so that neither the default nor `CHOKEPOINT_TEST_L4` picks it.
    fn capture(self) -> &'static str {
        match self.l4() {
            L4Path::Kernel => "tproxy\n  l4: kernel",
            L4Path::Proxy => "tproxy\n  l4: proxy",
        }
    }

    /// Whether a proxy process holds two sockets per connection (the idle test's size then
    /// depends on the open-file limit, see [`idle_target`]).
    fn proxies(self) -> bool {
        matches!(self, Mode::ProxyPath | Mode::Haproxy)
    }
}

#[derive(Debug, Default)]
struct PerMode {
    /// Gbit/s per repetition, pod → host (upload) and host → pod (download).
    upload: Vec<f64>,
    download: Vec<f64>,
    /// Connections per second per repetition.
    cps: Vec<f64>,
    cps_errors: u64,
    /// Connect + first byte, every sample of every repetition, in µs.
    latency_us: Vec<f64>,
    /// The source address the server saw (the pod's, if the proxy keeps it).
    peer_seen: Option<IpAddr>,
    /// The idle test, if it ran for this set-up.
    idle: Option<Idle>,
    /// Measurements that started although the machine was not quiet (see [`wait_quiet`]).
    quiet_misses: u32,
    /// The scheduler figures per connection of the process that handles connections, in the
    /// connections/s runs and in the sequential latency runs.
    cps_sched: Vec<Sched>,
    lat_sched: Vec<Sched>,
    /// The same by thread name (see [`schedstat_threads`]).
    cps_threads: Vec<BTreeMap<String, Sched>>,
    lat_threads: Vec<BTreeMap<String, Sched>>,
    /// Per repetition of a gateway set-up: its path counters after the block, the block's
    /// completed connections, and whether they prove the path (see [`path_taken`]).
    path_checks: Vec<(PathCounters, u64, Result<(), String>)>,
}

/// What the idle test saw of the process that handles the connections.
#[derive(Debug, Clone, Copy)]
struct Idle {
    conns: usize,
    rss_before: u64,
    rss_after: u64,
    fds_before: usize,
    fds_after: usize,
}

impl Idle {
    fn growth(&self) -> f64 {
        self.rss_after as f64 - self.rss_before as f64
    }

    fn per_conn(&self) -> f64 {
        self.growth() / self.conns as f64
    }
}

#[derive(Debug, Default)]
struct Results {
    modes: [PerMode; 7],
    pod_ip: Option<IpAddr>,
    haproxy_version: String,
    /// Share of the machine's CPU time the hypervisor took over the whole run ("steal").
    stolen: Option<f64>,
}

// ------------------------------------------------------------------------------------ run

fn run() -> Results {
    let started = CpuTimes::now();
    let mut results = Results {
        haproxy_version: haproxy_version(),
        ..Results::default()
    };
    let reps = reps();
    let modes = modes();
    let n = modes.len();
    for rep in 0..reps {
        for i in 0..n {
            let mode = modes[(rep + i) % n];
            eprintln!("== repetition {}/{reps}: {}", rep + 1, mode.name());
            measure(mode, rep + 1 == reps, &mut results);
        }
    }
    results.stolen = started
        .zip(CpuTimes::now())
        .map(|(before, after)| after.stolen_since(&before));
    results
}

/// One set-up measured in a lab of its own, so that nothing one set-up leaves behind (TIME_WAIT
/// sockets of a proxy's connections in the node, conntrack entries, a server's TIME_WAIT
/// sockets) affects the next: a SYN that matches a TIME_WAIT socket left in the node by a
/// transparent proxy is dropped by the node's forwarding path (early demux finds the socket).
fn measure(mode: Mode, with_idle: bool, results: &mut Results) {
    let lab = Topology::new()
        .namespace("tenant-a", [("tenant", "a")])
        .pod(PodSpec::new("tenant-a", "web").label("app", "web"))
        .host(HostSpec::new("host-a", HOST_A_IPV4))
        .build()
        .expect("build the lab");
    let pod = lab.pod("tenant-a", "web").expect("pod").clone();
    let host_ns = lab.host("host-a").expect("host").netns.clone();
    let host_ip = IpAddr::V4(HOST_A_IPV4);
    results.pod_ip = Some(IpAddr::V4(pod.ipv4));
    let files = GatewayFiles::new(&lab, &[("policy.yaml", POLICY)], mode.capture(), &limits());
    let settings = GatewaySettings::load(&files.settings()).expect("the bench's gateway settings");
    assert_eq!(
        settings.capture.l4,
        mode.l4(),
        "{}: capture.l4",
        mode.name()
    );
    let spec = chokepoint::app::capture_spec(&settings);
    let scratch = TempDir::new("bench-haproxy");
    let byte_to = SocketAddr::new(host_ip, BYTE_PORT);
    let byte_server = ByteServer::start(&host_ns, byte_to);
    let iperf_server = IperfServer::start(&lab, &host_ns, host_ip);

    // What the clients connect to: the host, or the Service in front of it.
    let target_ip = if via_service() {
        install_service(&lab, host_ip);
        IpAddr::V4(SERVICE_IP)
    } else {
        host_ip
    };
    let byte_target = SocketAddr::new(target_ip, BYTE_PORT);
    let setup = Setup::start(mode, &lab, &files, &spec, &scratch, &pod, byte_target);
    let r = &mut results.modes[mode.index()];
    r.peer_seen = byte_server.last_peer();
    // Connections of this block known to have completed (a lower bound), for the path check:
    // the probe, the two of each iperf3 run (control and data), the rest as counted below.
    let mut completed = 1 + 2 * 2;
    measure_throughput(&lab, &pod.netns, target_ip, r);
    let cps = measure_cps(&setup, &pod.netns, byte_target, r);
    completed += cps;
    measure_latency(&setup, &pod.netns, byte_target, r);
    completed += LATENCY_SAMPLES as u64;
    if with_idle
        && !matches!(
            mode,
            Mode::Direct | Mode::BareQueue | Mode::NftDecided | Mode::Conntrack
        )
    {
        let hold = (
            SocketAddr::new(host_ip, HOLD_PORT),
            SocketAddr::new(target_ip, HOLD_PORT),
        );
        let idle = idle_memory(&lab, &pod.netns, &host_ns, hold, setup.pid(), mode);
        completed += idle.conns as u64;
        report_idle(&idle);
        r.idle = Some(idle);
    }
    if let Some(path) = setup.gateway_path() {
        // From the gateway's start: its counters begin at zero.
        let now = path_counters(&lab);
        let check = path_taken(path, PathCounters::default(), now, completed);
        eprintln!(
            "   path check: {} kernel verdicts, {} to the proxy, {} bytes relayed ({} relay errors) for {completed} connections: {}",
            now.kernel,
            now.to_proxy,
            now.relayed,
            now.relay_errors,
            check.as_ref().map_or_else(|e| e.as_str(), |()| "ok")
        );
        r.path_checks.push((now, completed, check));
    }
    setup.stop(&lab);
    byte_server.stop();
    drop(iperf_server);
    let names = lab.netns_names();
    lab.teardown().expect("lab teardown");
    for n in names {
        assert!(!netns::exists(&n), "namespace {n} left behind");
    }
}

/// iperf3 both ways.
fn measure_throughput(lab: &Lab, pod_ns: &str, host_ip: IpAddr, r: &mut PerMode) {
    r.quiet_misses += u32::from(!wait_quiet());
    let up = iperf(lab, pod_ns, host_ip, false);
    r.quiet_misses += u32::from(!wait_quiet());
    let down = iperf(lab, pod_ns, host_ip, true);
    eprintln!("   iperf3 pod→host {up:.2} Gbit/s, host→pod {down:.2} Gbit/s");
    r.upload.push(up);
    r.download.push(down);
}

/// New connections per second, and the scheduler figures per connection of the process that
/// handles them; returns how many completed.
fn measure_cps(setup: &Setup, pod_ns: &str, to: SocketAddr, r: &mut PerMode) -> u64 {
    r.quiet_misses += u32::from(!wait_quiet());
    let (cps, threads) = sched_over(
        setup.proxy_pid(),
        || connections_per_second(pod_ns, to),
        |c| c.completed as f64,
    );
    if let Some(threads) = threads {
        r.cps_sched.push(total(&threads));
        r.cps_threads.push(threads);
    }
    eprintln!(
        "   {:.0} connections/s ({} errors)",
        cps.per_second, cps.failed
    );
    r.cps.push(cps.per_second);
    r.cps_errors += cps.failed;
    cps.completed
}

/// Sequential connect + first byte, and the scheduler figures per connection.
fn measure_latency(setup: &Setup, pod_ns: &str, to: SocketAddr, r: &mut PerMode) {
    r.quiet_misses += u32::from(!wait_quiet());
    let (lat, threads) = sched_over(
        setup.proxy_pid(),
        || latencies(pod_ns, to),
        |_| (LATENCY_SAMPLES + LATENCY_WARMUP) as f64,
    );
    if let Some(threads) = threads {
        r.lat_sched.push(total(&threads));
        r.lat_threads.push(threads);
    }
    eprintln!(
        "   connect+first byte p50 {:.1} µs, p99 {:.1} µs",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99)
    );
    r.latency_us.extend(lat);
}

/// Runs `f`; with a process `pid`, also its scheduler figures by thread name over `f`, per
/// connection (`connections` tells how many `f` made).
fn sched_over<T>(
    pid: Option<u32>,
    f: impl FnOnce() -> T,
    connections: impl Fn(&T) -> f64,
) -> (T, Option<BTreeMap<String, Sched>>) {
    let before = pid.map(schedstat_threads);
    let out = f();
    let threads = pid
        .zip(before)
        .map(|(pid, before)| threads_since(&before, &schedstat_threads(pid), connections(&out)));
    (out, threads)
}

fn report_idle(idle: &Idle) {
    eprintln!(
        "   RSS {} KiB → {} KiB with {} idle connections: {:.0} B/connection; fds {} → {}",
        idle.rss_before / 1024,
        idle.rss_after / 1024,
        idle.conns,
        idle.per_conn(),
        idle.fds_before,
        idle.fds_after
    );
}

/// One set-up of the node, live for one repetition.
enum Setup {
    Direct,
    Gateway {
        gw: Box<Gateway>,
        pid: u32,
        path: L4Path,
    },
    Haproxy(Box<Haproxy>, CaptureSpec),
    BareQueue(Box<Helper>, CaptureSpec),
    NftDecided(CaptureSpec),
    Conntrack,
}

impl Setup {
    fn start(
        mode: Mode,
        lab: &Lab,
        files: &GatewayFiles,
        spec: &CaptureSpec,
        scratch: &TempDir,
        pod: &LabPod,
        probe: SocketAddr,
    ) -> Setup {
        let node = lab.node_netns();
        let mut setup = match mode {
            Mode::Direct => {
                assert!(
                    chokepoint_tests::nft_table(node).is_none(),
                    "direct mode must run without capture rules"
                );
                Setup::Direct
            }
            Mode::FastPath | Mode::ProxyPath => {
                let gw = start_gateway(lab, files);
                let pid = gw.pid().expect("the gateway's pid");
                Setup::Gateway {
                    gw: Box::new(gw),
                    pid,
                    path: mode.l4(),
                }
            }
            Mode::Haproxy => {
                assert!(
                    spec.fast_path.is_none(),
                    "HAProxy gets the proxy path's rules"
                );
                netns::run_in(node, || {
                    chokepoint_redirect::install(spec, InstallMode::Fresh)
                })
                .expect("enter the node namespace")
                .expect("install the capture rules for HAProxy");
                let hap = Haproxy::start(lab, scratch.path().to_owned());
                Setup::Haproxy(Box::new(hap), spec.clone())
            }
            Mode::BareQueue => {
                let fast = spec
                    .fast_path
                    .expect("the bare queue gets the fast path's rules");
                netns::run_in(node, || {
                    chokepoint_redirect::install(spec, InstallMode::Fresh)
                })
                .expect("enter the node namespace")
                .expect("install the fast path's capture rules");
                let args = [
                    BARE_QUEUE_ARG.to_owned(),
                    fast.first_queue.to_string(),
                    fast.queues.to_string(),
                    fast.flow_mask.to_string(),
                    fast.generation.to_string(),
                ];
                let reader = Helper::start(lab, node, &args, "the bare queue reader");
                Setup::BareQueue(Box::new(reader), spec.clone())
            }
            Mode::NftDecided => {
                netns::run_in(node, || {
                    chokepoint_redirect::install(spec, InstallMode::Fresh)
                })
                .expect("enter the node namespace")
                .expect("install the fast path's capture rules");
                decided_in_nft(lab, spec, pod.ipv4);
                Setup::NftDecided(spec.clone())
            }
            Mode::Conntrack => {
                node_nft(lab, CONNTRACK_ONLY);
                Setup::Conntrack
            }
        };
        // The first connection proves the path works (with capture rules, nothing gets
        // through unless the proxy relays it or the gateway lets it through) and warms it up.
        wait_path(lab, &pod.netns, probe, &mut setup);
        setup
    }

    fn pid(&self) -> u32 {
        self.proxy_pid()
            .expect("no gateway or proxy process in direct mode")
    }

    /// The process that handles connections: the proxy, or on the fast path the gateway
    /// whose queue readers decide each new flow.
    fn proxy_pid(&self) -> Option<u32> {
        match self {
            Setup::Direct | Setup::NftDecided(_) | Setup::Conntrack => None,
            Setup::Gateway { pid, .. } => Some(*pid),
            Setup::Haproxy(h, _) => Some(h.child.id()),
            Setup::BareQueue(r, _) => Some(r.child.id()),
        }
    }

    fn gateway_path(&self) -> Option<L4Path> {
        match self {
            Setup::Gateway { path, .. } => Some(*path),
            Setup::Direct
            | Setup::Haproxy(..)
            | Setup::BareQueue(..)
            | Setup::NftDecided(_)
            | Setup::Conntrack => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Setup::Direct => "direct routing",
            Setup::Gateway {
                path: L4Path::Kernel,
                ..
            } => "the gateway's fast path",
            Setup::Gateway { .. } => "the gateway's proxy",
            Setup::Haproxy(..) => "HAProxy",
            Setup::BareQueue(..) => "the bare queue",
            Setup::NftDecided(_) => "the decision in nft",
            Setup::Conntrack => "conntrack only",
        }
    }

    fn is_alive(&mut self) -> Result<(), String> {
        match self {
            Setup::Direct | Setup::Gateway { .. } | Setup::NftDecided(_) | Setup::Conntrack => {
                Ok(())
            }
            Setup::Haproxy(h, _) => match h.child.try_wait() {
                Ok(Some(status)) => Err(format!("haproxy exited ({status}):\n{}", h.log())),
                _ => Ok(()),
            },
            Setup::BareQueue(r, _) => match r.child.try_wait() {
                Ok(Some(status)) => Err(format!("the bare queue reader exited ({status})")),
                _ => Ok(()),
            },
        }
    }

    fn stop(self, lab: &Lab) {
        match self {
            Setup::Direct => {}
            Setup::Gateway { gw, .. } => {
                let status = gw.stop();
                assert!(
                    status.success(),
                    "the gateway did not stop cleanly: {status}"
                );
                assert!(
                    chokepoint_tests::nft_table(lab.node_netns()).is_none(),
                    "the gateway's orderly stop must remove its rules"
                );
            }
            Setup::Haproxy(hap, spec) => {
                drop(hap);
                remove_rules(lab, &spec);
            }
            Setup::BareQueue(reader, spec) => {
                reader.stop();
                remove_rules(lab, &spec);
            }
            Setup::NftDecided(spec) => remove_rules(lab, &spec),
            Setup::Conntrack => node_nft(lab, "delete table inet bench-conntrack\n"),
        }
    }
}

/// The conntrack-only set-up's table: one rule with a ct expression, which is what makes
/// the kernel track the namespace's packets; it matches nothing a pod sends here (the bench
/// makes no invalid packets), so nothing else changes.
const CONNTRACK_ONLY: &str = "table inet bench-conntrack {\n\tchain prerouting {\n\t\ttype filter hook prerouting priority 0; policy accept;\n\t\tct state invalid counter\n\t}\n}\n";

/// The decision of every flow the bench makes, already in the kernel: a set of (pod,
/// destination, protocol, port) with the host's TCP ports, looked up first in the chains the
/// capture sends a new pod flow to (the note of a translated flow, then the queue), so that a
/// hit is neither noted nor queued. A hit gets what the gateway's verdict gives an allowed
/// flow: the ct mark "allowed at the installed generation" and the event mask `destroy`; its
/// later packets then pass by that mark, as on the fast path. The destination is the one the
/// capture sees, after the Service's DNAT: the host.
fn decided_in_nft(lab: &Lab, spec: &CaptureSpec, pod: std::net::Ipv4Addr) {
    let fast = spec
        .fast_path
        .expect("the decision in nft gets the fast path's rules");
    let marks = fast.marks();
    let allowed = marks.with(0, marks.allowed(fast.generation));
    let keep = !marks.mask();
    let elements: Vec<String> = [IPERF_PORT, BYTE_PORT, HOLD_PORT]
        .iter()
        .map(|port| format!("{pod} . {HOST_A_IPV4} . tcp . {port}"))
        .collect();
    let hit = format!(
        "ip saddr . ip daddr . meta l4proto . th dport @bench_decided_v4 meta mark set meta mark & {keep:#010x} ct mark set ct mark & {keep:#010x} | {allowed:#010x} ct event set destroy accept"
    );
    let script = format!(
        "add set inet chokepoint bench_decided_v4 {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; elements = {{ {} }}; }}
insert rule inet chokepoint fast_note_v4 {hit}
insert rule inet chokepoint fast_queue {hit}
",
        elements.join(", ")
    );
    node_nft(lab, &script);
}

/// Runs an `nft -f` script in the node namespace.
fn node_nft(lab: &Lab, script: &str) {
    let mut child = lab
        .command(lab.node_netns(), "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writing nft's script");
    assert!(child.wait().expect("nft").success(), "nft -f:\n{script}");
}

fn remove_rules(lab: &Lab, spec: &CaptureSpec) {
    netns::run_in(lab.node_netns(), || chokepoint_redirect::remove(spec))
        .expect("enter the node namespace")
        .expect("remove the capture rules");
}

/// Waits (bounded) until a connection from the pod gets its byte; for a gateway, also until
/// its counters show that the connection took the set-up's path (the proxy counts a
/// connection's bytes when it ends, a moment after the client saw the close).
fn wait_path(lab: &Lab, pod_ns: &str, to: SocketAddr, setup: &mut Setup) {
    let before = setup.gateway_path().map(|_| path_counters(lab));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = netns::run_in(pod_ns, || one_byte_exchange(to, Duration::from_secs(1)))
            .expect("enter the pod namespace");
        if got.is_ok() {
            break;
        }
        if let Err(e) = setup.is_alive() {
            panic!("{e}");
        }
        assert!(
            Instant::now() < deadline,
            "no working path from the pod to {to} through {}: {got:?}",
            setup.describe()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let (Some(path), Some(before)) = (setup.gateway_path(), before) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let check = path_taken(path, before, path_counters(lab), 1);
        match check {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => {
                panic!("the probe did not take {}: {e}", setup.describe())
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

// ------------------------------------------------------------------------------------ path

/// The gateway's counters (`/metrics`) that show which path its connections took.
#[derive(Debug, Clone, Copy, Default)]
struct PathCounters {
    /// New flows its queue readers left in the kernel.
    kernel: f64,
    /// New flows its queue readers sent to the proxy.
    to_proxy: f64,
    /// Bytes its proxy relayed, both directions (counted when a connection ends without an
    /// error).
    relayed: f64,
    /// Proxied connections whose relay ended with an error (their bytes are not counted).
    relay_errors: f64,
}

fn path_counters(lab: &Lab) -> PathCounters {
    let (status, text) = admin_get(lab, "/metrics");
    assert_eq!(status, 200, "GET /metrics:\n{text}");
    // A series not (yet) exported counts as zero: each check below needs one of them to grow,
    // so a renamed metric fails a check rather than passing it.
    let get = |name: &str| metric(&text, name).unwrap_or(0.0);
    PathCounters {
        kernel: get("chokepoint_fast_path_verdicts_total{path=\"kernel\"}"),
        to_proxy: get("chokepoint_fast_path_verdicts_total{path=\"proxy\"}"),
        relayed: get("chokepoint_bytes_total{direction=\"sent\"}")
            + get("chokepoint_bytes_total{direction=\"received\"}"),
        relay_errors: get("chokepoint_errors_total{kind=\"relay\"}"),
    }
}

/// The value of the series `name` (name and labels, as exported) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `connections` that completed between `before` and `now` took `path`. Fast path:
/// at least one `kernel` verdict per connection (a flow can get more, e.g. for a retransmitted
/// first packet), none to the proxy, and no byte relayed. Proxy path: nothing queued, and the
/// proxy relayed bytes.
fn path_taken(
    path: L4Path,
    before: PathCounters,
    now: PathCounters,
    connections: u64,
) -> Result<(), String> {
    let kernel = now.kernel - before.kernel;
    let to_proxy = now.to_proxy - before.to_proxy;
    let relayed = now.relayed - before.relayed;
    let ok = match path {
        L4Path::Kernel => kernel >= connections as f64 && to_proxy == 0.0 && now.relayed == 0.0,
        L4Path::Proxy => now.kernel == 0.0 && now.to_proxy == 0.0 && relayed > 0.0,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{connections} connections: {kernel} kernel verdicts, {to_proxy} to the proxy, \
             {relayed} bytes relayed (total {})",
            now.relayed
        ))
    }
}

// ------------------------------------------------------------------------------------ haproxy

/// HAProxy in transparent mode behind the same TPROXY rules as the gateway: it accepts the
/// diverted connections on 15001, connects to the original destination (`0.0.0.0:0`: the
/// address and port the client connected to) from the pod's own IP (`usesrc clientip`, which
/// sets IP_TRANSPARENT and binds to the client address, as the gateway does). One thread per
/// CPU, as the gateway's runtime has one worker per CPU. No splicing (HAProxy's default): both
/// proxies copy through user space; `DATAPATH_HAPROXY_SPLICE=1` turns kernel splicing on
/// ([`HAPROXY_SPLICE`]) to see what zero-copy relaying would be worth. `MAXCONN`, `NBTHREAD`
/// and the `SPLICE` lines are filled in by [`haproxy_cfg`].
const HAPROXY_CFG: &str = "\
global
    maxconn MAXCONN
    nbthread NBTHREAD
    GLOBAL_SPLICE

defaults
    mode tcp
    SPLICE
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend capture
    bind :15001 transparent
    maxconn MAXCONN
    default_backend original_destination

backend original_destination
    source 0.0.0.0 usesrc clientip
    server s 0.0.0.0:0
";

/// With `DATAPATH_HAPROXY_SPLICE=1`: splice(2) both ways, with few pipes (each pipe is two
/// file descriptors, and the idle test needs the rest of the open-file limit).
const HAPROXY_SPLICE: &str = "    option splice-request\n    option splice-response\n";
const HAPROXY_GLOBAL_SPLICE: &str = "    maxpipes 16\n";

fn haproxy_splice() -> bool {
    std::env::var_os("DATAPATH_HAPROXY_SPLICE").is_some_and(|v| v == "1")
}

struct Haproxy {
    child: Child,
    dir: PathBuf,
}

impl Haproxy {
    fn start(lab: &Lab, dir: PathBuf) -> Haproxy {
        let cfg = dir.join("haproxy.cfg");
        fs::write(&cfg, haproxy_cfg()).expect("write haproxy.cfg");
        let check = lab
            .command(lab.node_netns(), "haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejects the configuration:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
        let child = lab
            .command(lab.node_netns(), "haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let mut hap = Haproxy { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(lab.node_netns(), 15001) {
            if let Ok(Some(status)) = hap.child.try_wait() {
                panic!("haproxy exited ({status}):\n{}", hap.log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy does not listen on 15001:\n{}",
                hap.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        hap
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// [`HAPROXY_CFG`] for this machine: one thread per CPU, and room for the idle test's
/// connections within the open-file limit.
fn haproxy_cfg() -> String {
    HAPROXY_CFG
        .replace("MAXCONN", &(idle_target(Mode::Haproxy) + 10).to_string())
        .replace("NBTHREAD", &nproc().to_string())
        .replace(
            "    GLOBAL_SPLICE\n",
            if haproxy_splice() {
                HAPROXY_GLOBAL_SPLICE
            } else {
                ""
            },
        )
        .replace(
            "    SPLICE\n",
            if haproxy_splice() { HAPROXY_SPLICE } else { "" },
        )
}

/// SIGTERM, then SIGKILL if it is still there after 5 s; always reaped.
fn stop_child(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn haproxy_version() -> String {
    let out = Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .next()
        .unwrap_or("haproxy (unknown version)")
        .trim()
        .to_owned()
}

// ------------------------------------------------------------------------------------ servers

/// `iperf3 -s` in the outside host.
struct IperfServer {
    child: Child,
}

impl IperfServer {
    fn start(lab: &Lab, host_ns: &str, ip: IpAddr) -> IperfServer {
        let child = lab
            .command(host_ns, "iperf3")
            .args(["-s", "-B", &ip.to_string(), "-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s");
        let mut server = IperfServer { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(host_ns, IPERF_PORT) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("iperf3 -s exited ({status})");
            }
            assert!(Instant::now() < deadline, "iperf3 -s does not listen");
            thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A listening TCP socket with a deep accept queue (std's `bind` asks for 128, which a burst
/// of connections from a proxy overflows; an overflowed SYN-cookie handshake is then lost
/// for good on an idle connection).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket,
        sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    nix::sys::socket::listen(&fd, Backlog::new(4096).map_err(io::Error::from)?)?;
    Ok(TcpListener::from(fd))
}

/// Whether something listens on TCP `port` in `netns` (`ss -Hltn`).
fn listening(netns: &str, port: u16) -> bool {
    let out = netns::command(netns, "ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .stderr(Stdio::null())
        .output();
    out.is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// A listener in a lab namespace served by a few accept threads; stopped by shutting the
/// listening socket down, which wakes every blocked `accept`.
struct Acceptors {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Acceptors {
    fn start<F>(netns_name: &str, addr: SocketAddr, threads: usize, on_accept: F) -> Acceptors
    where
        F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
    {
        let listener = netns::run_in(netns_name, || listen(addr))
            .expect("enter the host namespace")
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let on_accept = Arc::new(on_accept);
        let threads = (0..threads)
            .map(|_| {
                let (listener, stop, on_accept) =
                    (listener.clone(), stop.clone(), on_accept.clone());
                thread::spawn(move || {
                    loop {
                        match listener.accept() {
                            Ok((stream, peer)) => on_accept(stream, peer),
                            Err(_) if stop.load(Ordering::SeqCst) => return,
                            // Out of file descriptors and the like: back off, bounded by stop.
                            Err(_) => thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })
            })
            .collect();
        Acceptors {
            listener,
            stop,
            threads,
        }
    }

    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Acceptors {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes one byte at once on accept and closes (so the server closes first and the clients'
/// ports are not held in TIME_WAIT). Remembers the last client address it saw.
struct ByteServer {
    acceptors: Acceptors,
    last_peer: Arc<Mutex<Option<IpAddr>>>,
}

impl ByteServer {
    fn start(netns_name: &str, addr: SocketAddr) -> ByteServer {
        let last_peer = Arc::new(Mutex::new(None));
        let seen = last_peer.clone();
        let acceptors = Acceptors::start(netns_name, addr, 4, move |mut stream, peer| {
            let _ = stream.set_nodelay(true);
            let _ = stream.write_all(b"!");
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer.ip().to_canonical());
        });
        ByteServer {
            acceptors,
            last_peer,
        }
    }

    fn last_peer(&self) -> Option<IpAddr> {
        *self.last_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(self) {
        self.acceptors.stop();
    }
}

/// The argument that turns this binary into the hold server (see [`Helper`]).
const HOLD_SERVER_ARG: &str = "--hold-server";
/// The argument that turns this binary into the bare queue's reader (see [`bare_queue_main`]).
const BARE_QUEUE_ARG: &str = "--bare-queue";

/// This very binary run with one of the arguments above in a namespace of the lab, as a
/// process of its own: the hold server in the host (accepts connections and holds them open,
/// silent, so that its sockets do not count against this process's open-file limit), the
/// bare queue's reader in the node (so that its threads' CPU time is measured like the
/// gateway's). It writes `L` to stdout when it is ready and one `.` per connection it
/// accepted, and exits (closing every connection) when its stdin closes, so it never outlives
/// the bench.
struct Helper {
    child: Child,
    accepted: Arc<AtomicU64>,
    counter: Option<JoinHandle<()>>,
}

impl Helper {
    fn start(lab: &Lab, netns_name: &str, args: &[String], what: &str) -> Helper {
        let exe = std::env::current_exe().expect("this bench's executable");
        let mut child = lab
            .command(netns_name, exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let accepted = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let count = accepted.clone();
        let counter = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut ready = Some(ready_tx);
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        for &b in &buf[..n] {
                            match b {
                                b'.' => {
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                                b'L' => {
                                    if let Some(tx) = ready.take() {
                                        let _ = tx.send(());
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        });
        let mut helper = Helper {
            child,
            accepted,
            counter: Some(counter),
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            helper.shutdown();
            panic!("{what} did not get ready ({args:?})");
        }
        helper
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::Relaxed) as usize
    }

    /// Closes every held connection and ends the process.
    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Closing its stdin tells it to exit; exiting closes every connection.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(t) = self.counter.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.counter.is_some() {
            self.shutdown();
        }
    }
}

/// The hold server's own `main`: bind, print `L`, accept and hold (a `.` per connection),
/// until stdin closes.
fn hold_server_main(addr: Option<&str>) -> ExitCode {
    raise_nofile();
    let Some(addr) = addr.and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("{HOLD_SERVER_ARG} needs ADDR:PORT");
        return ExitCode::FAILURE;
    };
    let listener = match listen(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hold server: bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let held = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
    for _ in 0..2 {
        let listener = listener.try_clone().expect("clone the listener");
        let held = held.clone();
        thread::spawn(move || {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        held.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
                        let _ = io::stdout().lock().write_all(b".");
                        let _ = io::stdout().flush();
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }
    let _ = io::stdout().lock().write_all(b"L");
    let _ = io::stdout().flush();
    // Until the bench closes our stdin (or dies).
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    ExitCode::SUCCESS
}

/// The bare queue's reader, run in the node with the fast path's capture rules installed:
/// one thread per queue, kept to the CPUs whose packets the queue rule sends to it, as the
/// gateway's readers are; each lets every queued packet through at once, allowed at the
/// installed generation, without looking at it. So the fast path's kernel work (the rules,
/// conntrack, the queue's round trip, the reinjection) is all there, and the gateway's
/// decision and bookkeeping are not. Prints `L` once every queue is bound; ends when stdin
/// closes.
fn bare_queue_main(args: &[String]) -> ExitCode {
    use chokepoint_redirect::FlowMark;
    use chokepoint_redirect::queue::{PacketQueue, QueueVerdict};
    let numbers: Option<Vec<u32>> = args.iter().map(|a| a.parse().ok()).collect();
    let Some(&[first, queues, flow_mask, generation]) = numbers.as_deref() else {
        eprintln!("{BARE_QUEUE_ARG} needs FIRST_QUEUE QUEUES FLOW_MASK GENERATION");
        return ExitCode::FAILURE;
    };
    let marks = FlowMark::new(flow_mask);
    let stop = Arc::new(AtomicBool::new(false));
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let readers: Vec<JoinHandle<()>> = (0..queues)
        .map(|index| {
            let (stop, bound) = (stop.clone(), bound_tx.clone());
            thread::Builder::new()
                .name(format!("bare-queue-{index}"))
                .spawn(move || {
                    keep_to_cpus_of_queue(index, queues);
                    let number = u16::try_from(first + index).expect("a queue number");
                    let mut queue = match PacketQueue::bind(number, 8192) {
                        Ok(q) => q,
                        Err(e) => {
                            let _ = bound.send(Err(format!("bind queue {number}: {e}")));
                            return;
                        }
                    };
                    let _ = bound.send(Ok(()));
                    let (mut batch, mut verdicts) = (Vec::new(), Vec::new());
                    while !stop.load(Ordering::Acquire) {
                        batch.clear();
                        if queue.receive_waiting(&mut batch).is_err() {
                            continue;
                        }
                        verdicts.clear();
                        verdicts.extend(batch.iter().map(|q| {
                            let mark = marks.with(q.mark, marks.allowed(generation));
                            (q.id, QueueVerdict::Repeat { mark })
                        }));
                        if let Err(e) = queue.verdicts(&verdicts) {
                            eprintln!("bare queue {number}: verdicts: {e}");
                        }
                    }
                })
                .expect("start a bare queue reader")
        })
        .collect();
    for _ in 0..queues {
        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("bare queue: {e}");
                return ExitCode::FAILURE;
            }
            Err(_) => return ExitCode::FAILURE,
        }
    }
    let _ = io::stdout().lock().write_all(b"L");
    let _ = io::stdout().flush();
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    // Each reader sees the flag within its receive's timeout.
    stop.store(true, Ordering::Release);
    for r in readers {
        let _ = r.join();
    }
    ExitCode::SUCCESS
}

/// The queue rule sends a packet handled on CPU `c` to queue `first + c % queues`: reader
/// `index` keeps to those CPUs (where it may run at all).
fn keep_to_cpus_of_queue(index: u32, queues: u32) {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    let mut own = CpuSet::new();
    let mut any = false;
    let ours =
        |c: &usize| *c as u32 % queues.max(1) == index && allowed.is_set(*c).unwrap_or(false);
    for c in (0..CpuSet::count()).filter(ours) {
        any |= own.set(c).is_ok();
    }
    if any {
        let _ = sched_setaffinity(Pid::from_raw(0), &own);
    }
}

// ------------------------------------------------------------------------------------ clients

/// Connects, reads the server's byte (the time to here is returned), then waits for the
/// server's close so that this side closes second.
fn one_byte_exchange(to: SocketAddr, timeout: Duration) -> io::Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&to, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 16];
    if stream.read(&mut buf)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the first byte",
        ));
    }
    let first_byte = started.elapsed();
    while stream.read(&mut buf)? != 0 {}
    Ok(first_byte)
}

/// What [`connections_per_second`] counted.
#[derive(Debug, Clone, Copy)]
struct Cps {
    per_second: f64,
    completed: u64,
    failed: u64,
}

/// `CPS_CONCURRENCY` client threads in the pod, each opening and closing connections to the
/// byte server for `CPS_SECS`; counts completed exchanges (connect, one byte, the server's
/// close) and failures.
fn connections_per_second(pod_ns: &str, to: SocketAddr) -> Cps {
    netns::run_in(pod_ns, || {
        let ok = AtomicU64::new(0);
        let failed = AtomicU64::new(0);
        let started = Instant::now();
        let end = started + Duration::from_secs(CPS_SECS);
        thread::scope(|s| {
            for _ in 0..CPS_CONCURRENCY {
                // Threads started inside the namespace thread are in the namespace too.
                s.spawn(|| {
                    while Instant::now() < end {
                        match one_byte_exchange(to, Duration::from_secs(2)) {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                });
            }
        });
        let completed = ok.load(Ordering::Relaxed);
        Cps {
            per_second: completed as f64 / started.elapsed().as_secs_f64(),
            completed,
            failed: failed.load(Ordering::Relaxed),
        }
    })
    .expect("enter the pod namespace")
}

/// Sequential connect + first byte, in µs, after a warm-up.
fn latencies(pod_ns: &str, to: SocketAddr) -> Vec<f64> {
    netns::run_in(pod_ns, || {
        for _ in 0..LATENCY_WARMUP {
            let _ = one_byte_exchange(to, Duration::from_secs(2));
        }
        (0..LATENCY_SAMPLES)
            .map(|i| {
                let took = one_byte_exchange(to, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("latency sample {i} to {to} failed: {e}"));
                took.as_secs_f64() * 1e6
            })
            .collect()
    })
    .expect("enter the pod namespace")
}

/// iperf3 from the pod to the host (`reverse`: host to pod), in Gbit/s as the receiver counted.
fn iperf(lab: &Lab, pod_ns: &str, host: IpAddr, reverse: bool) -> f64 {
    let mut last_error = String::new();
    for _attempt in 0..2 {
        let mut cmd = lab.command(pod_ns, "iperf3");
        cmd.args(["-c", &host.to_string(), "-p", &IPERF_PORT.to_string()])
            .args([
                "-t",
                &IPERF_SECS.to_string(),
                "-O",
                "1",
                "-J",
                "--connect-timeout",
                "3000",
            ]);
        if reverse {
            cmd.arg("-R");
        }
        let limit = Duration::from_secs(u64::from(IPERF_SECS) + 30);
        let out = output_within(cmd, limit);
        let json: serde_json::Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(e) => {
                last_error = format!(
                    "unreadable iperf3 output ({e}): {}",
                    String::from_utf8_lossy(&out)
                );
                continue;
            }
        };
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e9;
        }
        last_error = format!("iperf3: {}", json["error"]);
        // A server still busy with an aborted test frees itself within a second or two.
        thread::sleep(Duration::from_secs(2));
    }
    panic!("iperf3 failed twice: {last_error}");
}

/// Runs a command with its stdout captured, killing it after `limit`.
fn output_within(mut cmd: Command, limit: Duration) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    reader.join().unwrap_or_default()
}

// ------------------------------------------------------------------------------------ memory

/// Opens [`idle_target`] connections from the pod through the set-up (the process `pid`
/// handles them) to a server that holds them; returns that process's RSS and open files
/// before and after (once every connection reached the server).
/// `(listen, to)`: where the hold server listens, and what the clients connect to.
fn idle_memory(
    lab: &Lab,
    pod_ns: &str,
    host_ns: &str,
    (listen, to): (SocketAddr, SocketAddr),
    pid: u32,
    mode: Mode,
) -> Idle {
    let n_conns = idle_target(mode);
    let args = [HOLD_SERVER_ARG.to_owned(), listen.to_string()];
    let hold = Helper::start(lab, host_ns, &args, "the hold server");
    thread::sleep(Duration::from_millis(300));
    let before = rss_bytes(pid);
    let fds_before = open_fds(pid);
    let wait_for = |n: usize, within: Duration| -> bool {
        let deadline = Instant::now() + within;
        while hold.count() < n {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    };
    let (clients, failure) = netns::run_in(pod_ns, || {
        let mut clients = Vec::with_capacity(n_conns);
        for i in 0..n_conns {
            match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                Ok(s) => clients.push(s),
                Err(e) => return (clients, Some(format!("idle connection {i}: {e}"))),
            }
            // Let the proxy keep up, so that no SYN overflows its accept queue.
            if i % 500 == 499 && !wait_for(i + 1 - 250, Duration::from_secs(30)) {
                return (
                    clients,
                    Some(format!(
                        "only {} of {} connections reached the server",
                        hold.count(),
                        i + 1 - 250
                    )),
                );
            }
        }
        (clients, None)
    })
    .expect("enter the pod namespace");
    let failure = failure.or_else(|| {
        (!wait_for(n_conns, Duration::from_secs(60))).then(|| {
            format!(
                "only {} of {n_conns} connections reached the server",
                hold.count()
            )
        })
    });
    if let Some(failure) = failure {
        let ss = |ns: &str| {
            let mut text = String::new();
            for script in [
                "ss -s",
                "ss -ltn",
                "nstat -az | grep -Ei 'listen|syncookies|synretrans'",
            ] {
                let out = netns::command(ns, "sh").args(["-c", script]).output();
                text.push_str(&String::from_utf8_lossy(
                    &out.map(|o| o.stdout).unwrap_or_default(),
                ));
            }
            text
        };
        panic!(
            "idle test: {failure}\nfds of pid {pid}: {}\n--- node:\n{}\n--- host:\n{}",
            open_fds(pid),
            ss(lab.node_netns()),
            ss(host_ns),
        );
    }
    thread::sleep(Duration::from_secs(1));
    let after = rss_bytes(pid);
    let fds_after = open_fds(pid);
    // Close from the server side first, then wait for each client to see the end, so that
    // no client port is left in TIME_WAIT.
    hold.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    for mut c in clients {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = c.set_read_timeout(Some(left));
        let mut buf = [0u8; 64];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    }
    Idle {
        conns: n_conns,
        rss_before: before,
        rss_after: after,
        fds_before,
        fds_after,
    }
}

/// Scheduler figures of a process, summed over its threads (`/proc/<pid>/task/*/schedstat`):
/// time on a CPU, time waiting for one, and times it was scheduled in — or, after
/// [`Sched::per`], the same per connection (µs, µs, count).
#[derive(Debug, Clone, Copy, Default)]
struct Sched {
    cpu: f64,
    wait: f64,
    slices: f64,
}

impl Sched {
    fn since(&self, earlier: &Sched) -> Sched {
        Sched {
            cpu: self.cpu - earlier.cpu,
            wait: self.wait - earlier.wait,
            slices: self.slices - earlier.slices,
        }
    }

    /// Per connection, in µs (times) and counts.
    fn per(&self, connections: f64) -> Sched {
        let n = connections.max(1.0);
        Sched {
            cpu: self.cpu / 1e3 / n,
            wait: self.wait / 1e3 / n,
            slices: self.slices / n,
        }
    }
}

/// The sum over a process's threads.
fn total(threads: &BTreeMap<String, Sched>) -> Sched {
    let mut sum = Sched::default();
    for t in threads.values() {
        sum.cpu += t.cpu;
        sum.wait += t.wait;
        sum.slices += t.slices;
    }
    sum
}

/// A process's scheduler figures by thread name (`/proc/<pid>/task/*/comm`; threads of one name summed), to
/// tell which of the gateway's threads does the work: the data-path runtime
/// (`chokepoint-data`), the queue readers (`fast-path-<queue>`) or the conntrack follower
/// (`fast-path-flows`).
fn schedstat_threads(pid: u32) -> BTreeMap<String, Sched> {
    let mut by_name = BTreeMap::<String, Sched>::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let (Ok(text), Ok(name)) = (
            fs::read_to_string(task.path().join("schedstat")),
            fs::read_to_string(task.path().join("comm")),
        ) else {
            continue;
        };
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [cpu, wait, slices] = v[..] {
            let t = by_name.entry(name.trim().to_owned()).or_default();
            t.cpu += cpu;
            t.wait += wait;
            t.slices += slices;
        }
    }
    by_name
}

/// Per connection, by thread name, between two [`schedstat_threads`] samples.
fn threads_since(
    earlier: &BTreeMap<String, Sched>,
    now: &BTreeMap<String, Sched>,
    connections: f64,
) -> BTreeMap<String, Sched> {
    now.iter()
        .map(|(name, s)| {
            let base = earlier.get(name).copied().unwrap_or_default();
            (name.clone(), s.since(&base).per(connections))
        })
        .collect()
}

fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------ helpers

/// The machine's busy share of all CPUs over `window`, from `/proc/stat` (0 to 1).
fn cpu_busy(window: Duration) -> f64 {
    let before = CpuTimes::now();
    thread::sleep(window);
    match (before, CpuTimes::now()) {
        (Some(before), Some(after)) => after.busy_since(&before),
        _ => 0.0,
    }
}

/// Waits (at most `QUIET_WAIT`) until the machine is quiet: less than `QUIET_BUSY` of its
/// CPUs busy over half a second, so that other work (a build, a test run) does not skew a
/// measurement. False when it never got quiet; the measurement runs anyway and the report
/// counts it.
fn wait_quiet() -> bool {
    let deadline = Instant::now() + QUIET_WAIT;
    loop {
        let busy = cpu_busy(Duration::from_millis(500));
        if busy < QUIET_BUSY {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!(
                "   (machine still {:.0}% busy after {QUIET_WAIT:?}; measuring anyway)",
                busy * 100.0
            );
            return false;
        }
    }
}

fn tool_exists(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
}

/// Raises this process's open-file limit (children inherit it): the hard limit to
/// [`NOFILE`] if allowed (CAP_SYS_RESOURCE), the soft limit to the hard one in any case.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if hard < NOFILE && setrlimit(Resource::RLIMIT_NOFILE, NOFILE, NOFILE).is_ok() {
        return;
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The hard open-file limit (what every process started here can reach).
fn nofile_hard() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(_, h)| h)
}

/// How many idle connections the set-up can hold under the hard open-file limit, at most
/// [`IDLE_CONNS`]. A proxy holds two sockets per connection; on the fast path (and direct)
/// the node holds none, and the limit that remains is one socket per connection in this
/// process (the clients) and in the hold server, each a process of its own.
fn idle_target(mode: Mode) -> usize {
    let per_conn = if mode.proxies() { 2 } else { 1 };
    let fit = nofile_hard().saturating_sub(FD_RESERVE) / per_conn;
    IDLE_CONNS.min(usize::try_from(fit).unwrap_or(usize::MAX))
}

/// The set-ups to measure: all of them, or those `DATAPATH_MODES` names (keys of
/// [`Mode::key`], comma-separated), while working on one; the others show as "—".
fn modes() -> Vec<Mode> {
    let only = std::env::var("DATAPATH_MODES").unwrap_or_default();
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| only.is_empty() || only.split(',').any(|o| o.trim() == m.key()))
        // See `write_setup`: HAProxy cannot take this path.
        .filter(|m| !(via_service() && *m == Mode::Haproxy))
        .collect();
    assert!(
        !modes.is_empty(),
        "DATAPATH_MODES={only}: none of direct, fast, proxy, haproxy, queue, nft, ct"
    );
    modes
}

/// Whether the clients go through a Service (`DATAPATH_SERVICE=1`, see the module doc).
fn via_service() -> bool {
    std::env::var("DATAPATH_SERVICE").is_ok_and(|v| v == "1")
}

/// kube-proxy's shape in the node: [`SERVICE_IP`] translated to `backend` before the capture
/// (a nat chain at priority `dstnat`, like kube-proxy's nftables mode), for the bench's ports,
/// and for the node's own connections (its `output` chain: HAProxy connects to the address
/// the client connected to, which it reads with `SO_ORIGINAL_DST`, the ClusterIP).
fn install_service(lab: &Lab, backend: IpAddr) {
    let dnat = format!(
        "ip daddr {SERVICE_IP} tcp dport {{ {IPERF_PORT}, {BYTE_PORT}, {HOLD_PORT} }} dnat to {backend}"
    );
    let script = format!(
        "table ip bench-kube-proxy {{\n\tchain nat-prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\t{dnat}\n\t}}\n\tchain nat-output {{\n\t\ttype nat hook output priority -100; policy accept;\n\t\t{dnat}\n\t}}\n}}\n"
    );
    node_nft(lab, &script);
}

fn reps() -> usize {
    std::env::var("DATAPATH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=9).contains(n))
        .unwrap_or(REPS)
}

fn nproc() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples; NaN when there are none.
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

// ------------------------------------------------------------------------------------ report

/// One figure of a set-up's results, or of its scheduler figures.
type Figure = fn(&PerMode) -> f64;
type SchedFigure = fn(&Sched) -> f64;

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// A ratio of medians, or "—" when either side was not measured.
fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}", a / b)
    } else {
        "—".into()
    }
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| fmt_fig(*x)).collect::<Vec<_>>().join(", ")
}

impl Results {
    fn m(&self, mode: Mode) -> &PerMode {
        &self.modes[mode.index()]
    }

    /// The figure `pick` of each set-up of the main table, in [`Mode::COMPARED`] order.
    fn each(&self, pick: impl Fn(&PerMode) -> f64) -> [f64; 4] {
        Mode::COMPARED.map(|m| pick(self.m(m)))
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        self.write_setup(&mut out);
        self.write_figures(&mut out);
        self.write_repetitions(&mut out);
        self.write_sched(&mut out);
        self.write_threads(&mut out);
        self.write_layers(&mut out);
        self.write_checks(&mut out);
        self.write_targets(&mut out);
        out
    }

    fn write_setup(&self, out: &mut String) {
        if via_service() {
            let _ = writeln!(
                out,
                "Through a Service (DATAPATH_SERVICE=1): every client connects to the ClusterIP \
                 {SERVICE_IP}, which a kube-proxy-shaped nat chain in the node translates to the \
                 host. HAProxy is not measured: with `server 0.0.0.0:0` it connects to the \
                 address `SO_ORIGINAL_DST` gives, the ClusterIP, from the pod's address, and the \
                 replies of that transparent connection come back from the host, so the capture's \
                 socket lookup (before conntrack turns their source back into the ClusterIP) \
                 finds no socket of HAProxy's for them.\n"
            );
        }
        let _ = writeln!(
            out,
            "Machine: {} CPUs, {}, Linux {}; {}; {}.",
            nproc(),
            cpu_model(),
            kernel(),
            self.haproxy_version,
            iperf_version()
        );
        let _ = writeln!(
            out,
            "HAProxy: transparent mode, {} threads, {}; configuration: `HAPROXY_CFG` in \
             tests/benches/datapath.rs.",
            nproc(),
            if haproxy_splice() {
                "kernel splicing on (DATAPATH_HAPROXY_SPLICE=1)"
            } else {
                "no splicing (HAProxy's default)"
            }
        );
        let _ = writeln!(
            out,
            "Repetitions: {}; iperf3 {IPERF_SECS} s (+1 s omitted) per direction; {CPS_CONCURRENCY} \
             clients × {CPS_SECS} s for connections/s; {LATENCY_SAMPLES} sequential samples per \
             repetition for latency; idle connections for memory (last repetition): {} on the \
             fast path, {} through a proxy (hard open-file limit {}).\n",
            reps(),
            idle_target(Mode::FastPath),
            idle_target(Mode::ProxyPath),
            nofile_hard()
        );
    }

    fn write_figures(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| measure | direct | fast path | proxy path | HAProxy | fast / direct | proxy / direct | proxy / HAProxy |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let medians: [(&str, Figure); 3] = [
            ("TCP throughput pod → host, Gbit/s (median)", |m| {
                median(&m.upload)
            }),
            ("TCP throughput host → pod, Gbit/s (median)", |m| {
                median(&m.download)
            }),
            ("new connections/s (median)", |m| median(&m.cps)),
        ];
        for (what, pick) in medians {
            let [d, f, p, h] = self.each(pick);
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {} | {} | {} |",
                fmt_fig(d),
                fmt_fig(f),
                fmt_fig(p),
                fmt_fig(h),
                ratio(f, d),
                ratio(p, d),
                ratio(p, h)
            );
        }
        for (what, q) in [
            ("connect + first byte p50, µs (added)", 0.5),
            ("connect + first byte p99, µs (added)", 0.99),
        ] {
            let [d, f, p, h] = self.each(|m| percentile(&m.latency_us, q));
            // A set-up not measured shows as "—", with or without the difference to direct.
            let added = |x: f64| {
                if x.is_nan() {
                    "—".to_owned()
                } else if d.is_nan() {
                    format!("{x:.0}")
                } else {
                    format!("{x:.0} ({:+.0})", x - d)
                }
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {} | {} | {} |",
                if d.is_nan() {
                    "—".to_owned()
                } else {
                    format!("{d:.0}")
                },
                added(f),
                added(p),
                added(h),
                ratio(f, d),
                ratio(p, d),
                ratio(p, h)
            );
        }
        let idle = |mode: Mode, show: fn(&Idle) -> String| {
            self.m(mode).idle.as_ref().map_or("—".to_owned(), show)
        };
        let rss: fn(&Idle) -> String = |i| {
            format!(
                "{:.0} KiB, {:.0} B/conn. ({} → {} MiB, {})",
                i.growth() / 1024.0,
                i.per_conn(),
                i.rss_before >> 20,
                i.rss_after >> 20,
                i.conns
            )
        };
        let per_conn = |mode: Mode| self.m(mode).idle.map_or(f64::NAN, |i| i.per_conn());
        let _ = writeln!(
            out,
            "| RSS growth, idle allowed connections | — | {} | {} | {} | — | — | {} |",
            idle(Mode::FastPath, rss),
            idle(Mode::ProxyPath, rss),
            idle(Mode::Haproxy, rss),
            ratio(per_conn(Mode::ProxyPath), per_conn(Mode::Haproxy))
        );
        let fds: fn(&Idle) -> String = |i| format!("{} → {}", i.fds_before, i.fds_after);
        let _ = writeln!(
            out,
            "| open files of the gateway / proxy, before → with the idle connections | — | {} | {} | {} | — | — | — |",
            idle(Mode::FastPath, fds),
            idle(Mode::ProxyPath, fds),
            idle(Mode::Haproxy, fds),
        );
    }

    /// Every repetition's figure, so that the spread behind each median is visible.
    fn write_repetitions(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n| per repetition | pod → host, Gbit/s | host → pod, Gbit/s | connections/s |\n|---|---|---|---|"
        );
        for mode in Mode::ALL {
            let m = self.m(mode);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                mode.name(),
                list(&m.upload),
                list(&m.download),
                list(&m.cps)
            );
        }
        let errors: Vec<String> = Mode::ALL
            .iter()
            .filter(|m| self.m(**m).cps_errors > 0)
            .map(|m| format!("{} {}", m.name(), self.m(*m).cps_errors))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(
                out,
                "\nFailed connections during the connections/s runs: {}.",
                errors.join(", ")
            );
        }
        let misses: Vec<String> = Mode::ALL
            .iter()
            .map(|m| format!("{} {}", m.name(), self.m(*m).quiet_misses))
            .collect();
        let _ = writeln!(
            out,
            "\nMeasurements started while other work kept the machine busy (≥ {:.0}% CPU for {QUIET_WAIT:?}): {}.",
            QUIET_BUSY * 100.0,
            misses.join(", ")
        );
        if let Some(stolen) = self.stolen {
            let _ = writeln!(
                out,
                "\nCPU time the hypervisor took during the whole run (steal): {:.1}%.",
                stolen * 100.0
            );
        }
    }

    fn write_sched(&self, out: &mut String) {
        let sched = |v: &[Sched], f: SchedFigure| {
            let xs: Vec<f64> = v.iter().map(f).collect();
            if xs.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.1}", median(&xs))
            }
        };
        let _ = writeln!(
            out,
            "\n| the process that handles connections, per connection (median over repetitions) | fast path (gateway) | proxy path (gateway) | HAProxy | bare queue (its reader) |\n|---|---:|---:|---:|---:|"
        );
        let rows: [(&str, bool, SchedFigure); 4] = [
            ("CPU time in the connections/s runs, µs", false, |s| s.cpu),
            ("CPU time in the sequential latency runs, µs", true, |s| {
                s.cpu
            }),
            (
                "times one of its threads was scheduled in, sequential runs",
                true,
                |s| s.slices,
            ),
            ("run-queue wait, sequential runs, µs", true, |s| s.wait),
        ];
        for (what, sequential, f) in rows {
            let pick = |mode: Mode| {
                let m = self.m(mode);
                sched(
                    if sequential {
                        &m.lat_sched
                    } else {
                        &m.cps_sched
                    },
                    f,
                )
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} |",
                pick(Mode::FastPath),
                pick(Mode::ProxyPath),
                pick(Mode::Haproxy),
                pick(Mode::BareQueue)
            );
        }
    }

    /// Which of the gateway's threads does the per-connection work.
    fn write_threads(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n| the gateway (or the bare queue's reader) by thread, per connection (median over repetitions) | thread | CPU, connections/s runs, µs | CPU, sequential runs, µs | scheduled in, sequential runs | run-queue wait, sequential runs, µs |\n|---|---|---:|---:|---:|---:|"
        );
        for mode in [Mode::FastPath, Mode::ProxyPath, Mode::BareQueue] {
            let m = self.m(mode);
            let names: std::collections::BTreeSet<&String> = m
                .cps_threads
                .iter()
                .chain(&m.lat_threads)
                .flat_map(|t| t.keys())
                .collect();
            for name in names {
                let fig = |runs: &[BTreeMap<String, Sched>], f: SchedFigure| {
                    let xs: Vec<f64> = runs.iter().map(|t| t.get(name).map_or(0.0, f)).collect();
                    format!("{:.1}", median(&xs))
                };
                let _ = writeln!(
                    out,
                    "| {} | `{name}` | {} | {} | {} | {} |",
                    mode.name(),
                    fig(&m.cps_threads, |s| s.cpu),
                    fig(&m.lat_threads, |s| s.cpu),
                    fig(&m.lat_threads, |s| s.slices),
                    fig(&m.lat_threads, |s| s.wait)
                );
            }
        }
    }

    /// Where the fast path's cost is: each layer it needs, measured on its own against direct
    /// routing (conntrack only; the capture with the decision already in nft; the bare queue,
    /// the same rules and queue with a reader that decides nothing), and the fast path against
    /// the bare queue. What the bare queue adds is the mechanism's cost on this machine; what
    /// the fast path adds to it is the gateway's (its decision, its bookkeeping, the caps'
    /// conntrack follower).
    fn write_layers(&self, out: &mut String) {
        const LAYERS: [Mode; 5] = [
            Mode::Direct,
            Mode::Conntrack,
            Mode::NftDecided,
            Mode::BareQueue,
            Mode::FastPath,
        ];
        if [Mode::Conntrack, Mode::NftDecided, Mode::BareQueue]
            .iter()
            .all(|m| self.m(*m).cps.is_empty())
        {
            return;
        }
        let _ = writeln!(
            out,
            "\n| where the cost is (medians) | direct | conntrack only | decided in nft | bare queue | fast path | conntrack only / direct | decided in nft / direct | bare queue / direct | fast path / bare queue |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let rows: [(&str, Figure); 5] = [
            ("TCP throughput pod → host, Gbit/s", |m| median(&m.upload)),
            ("TCP throughput host → pod, Gbit/s", |m| {
                median(&m.download)
            }),
            ("new connections/s", |m| median(&m.cps)),
            ("connect + first byte p50, µs", |m| {
                percentile(&m.latency_us, 0.5)
            }),
            ("connect + first byte p99, µs", |m| {
                percentile(&m.latency_us, 0.99)
            }),
        ];
        for (what, pick) in rows {
            let [d, c, k, b, f] = LAYERS.map(|m| pick(self.m(m)));
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt_fig(d),
                fmt_fig(c),
                fmt_fig(k),
                fmt_fig(b),
                fmt_fig(f),
                ratio(c, d),
                ratio(k, d),
                ratio(b, d),
                ratio(f, b)
            );
        }
        for (what, q) in [("p50", 0.5), ("p99", 0.99)] {
            let [d, c, k, b, f] = LAYERS.map(|m| percentile(&self.m(m).latency_us, q));
            let added: Vec<String> = [
                ("conntrack only", c - d),
                ("decided in nft", k - d),
                ("bare queue", b - d),
                ("fast path", f - d),
            ]
            .iter()
            .filter(|(_, x)| x.is_finite())
            .map(|(who, x)| format!("{who} {x:+.0} µs"))
            .collect();
            if !added.is_empty() {
                let _ = writeln!(
                    out,
                    "\nAdded connect + first byte {what} over direct: {}.",
                    added.join(", ")
                );
            }
        }
    }

    /// The source address the server saw, and the gateway set-ups' path checks.
    fn write_checks(&self, out: &mut String) {
        let pod = self.pod_ip.map(|p| p.to_string()).unwrap_or_default();
        let src: Vec<String> = Mode::ALL
            .iter()
            .map(|m| {
                let seen = self.m(*m).peer_seen;
                format!(
                    "{} {}",
                    m.name(),
                    seen.map_or("?".into(), |p| p.to_string())
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "\nSource address the server saw (pod is {pod}): {}.",
            src.join(", ")
        );
        for mode in [Mode::FastPath, Mode::ProxyPath] {
            let checks: Vec<String> = self
                .m(mode)
                .path_checks
                .iter()
                .map(|(c, n, ok)| {
                    format!(
                        "{} kernel verdicts, {} to the proxy, {} bytes relayed ({} relays ended \
                         with an error) for {n} connections ({})",
                        c.kernel,
                        c.to_proxy,
                        c.relayed,
                        c.relay_errors,
                        ok.as_ref()
                            .map_or_else(|e| format!("**failed**: {e}"), |()| "ok".into())
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "\nPath check, {} (gateway counters after each block): {}.",
                mode.name(),
                checks.join("; ")
            );
        }
    }

    fn write_targets(&self, out: &mut String) {
        let _ = writeln!(out, "\n| set-up | target | result | |\n|---|---|---|---|");
        // A target is judged only when every set-up it compares was measured.
        let measured = |modes: &[Mode]| modes.iter().all(|m| !self.m(*m).cps.is_empty());
        if measured(&[Mode::Direct, Mode::FastPath]) {
            self.write_fast_targets(out);
        } else {
            out.push_str("| fast path | every target | not judged: direct or the fast path was not measured | — |\n");
        }
        if measured(&[Mode::Direct, Mode::ProxyPath, Mode::Haproxy]) {
            self.write_proxy_targets(out);
        } else {
            out.push_str("| proxy path | every target | not judged: direct, the proxy path or HAProxy was not measured | — |\n");
        }
    }

    fn write_fast_targets(&self, out: &mut String) {
        let (d, f) = (self.m(Mode::Direct), self.m(Mode::FastPath));
        let ratio_to_direct = |m: &PerMode| {
            (
                median(&m.upload) / median(&d.upload),
                median(&m.download) / median(&d.download),
                median(&m.cps) / median(&d.cps),
            )
        };
        let (up, down, cps) = ratio_to_direct(f);
        let added = |m: &PerMode, q| percentile(&m.latency_us, q) - percentile(&d.latency_us, q);
        let (p50, p99) = (added(f, 0.5), added(f, 0.99));
        let row = |what: String, result: String, ok: bool| {
            format!("| fast path | {what} | {result} | {} |\n", met(ok))
        };
        // The same figure of the bare queue, when it was measured: what the mechanism alone
        // makes of the target.
        let b = self.m(Mode::BareQueue);
        let bare = |figure: String| {
            if b.cps.is_empty() {
                String::new()
            } else {
                format!("; the bare queue {figure}")
            }
        };
        let (b_up, b_down, b_cps) = ratio_to_direct(b);
        out.push_str(&row(
            format!("throughput ≥ {FAST_VS_DIRECT:.2} × direct"),
            format!(
                "{up:.2} (pod → host), {down:.2} (host → pod){}",
                bare(format!("{b_up:.2}, {b_down:.2}"))
            ),
            up >= FAST_VS_DIRECT && down >= FAST_VS_DIRECT,
        ));
        out.push_str(&row(
            format!("new connections/s ≥ {FAST_CPS_VS_DIRECT:.1} × direct"),
            format!("{cps:.2}{}", bare(format!("{b_cps:.2}"))),
            cps >= FAST_CPS_VS_DIRECT,
        ));
        out.push_str(&row(
            format!("added connect + first byte p50 ≤ {FAST_ADDED_P50_US:.0} µs"),
            format!("{p50:+.0} µs{}", bare(format!("{:+.0} µs", added(b, 0.5)))),
            p50 <= FAST_ADDED_P50_US,
        ));
        out.push_str(&row(
            format!("added connect + first byte p99 ≤ {FAST_ADDED_P99_US:.0} µs"),
            format!("{p99:+.0} µs{}", bare(format!("{:+.0} µs", added(b, 0.99)))),
            p99 <= FAST_ADDED_P99_US,
        ));
        // Met only with the full count: fewer connections would flatter the growth.
        let (result, ok) = f.idle.map_or(("not measured".to_owned(), false), |i| {
            (
                format!(
                    "{:.0} KiB with {} connections",
                    i.growth() / 1024.0,
                    i.conns
                ),
                i.conns == IDLE_CONNS && i.growth() <= FAST_IDLE_GROWTH as f64,
            )
        });
        out.push_str(&row(
            format!(
                "gateway RSS growth with {IDLE_CONNS} idle allowed connections ≤ {} MiB",
                FAST_IDLE_GROWTH >> 20
            ),
            result,
            ok,
        ));
    }

    fn write_proxy_targets(&self, out: &mut String) {
        let (d, p, h) = (
            self.m(Mode::Direct),
            self.m(Mode::ProxyPath),
            self.m(Mode::Haproxy),
        );
        let up = median(&p.upload) / median(&d.upload);
        let down = median(&p.download) / median(&d.download);
        let up_h = median(&p.upload) / median(&h.upload);
        let down_h = median(&p.download) / median(&h.download);
        let cps = median(&p.cps) / median(&h.cps);
        let added = percentile(&p.latency_us, 0.5) - percentile(&d.latency_us, 0.5);
        let per_conn = p.idle.map(|i| i.per_conn());
        let row = |what: String, result: String, ok: bool| {
            format!("| proxy path | {what} | {result} | {} |\n", met(ok))
        };
        out.push_str(&row(
            format!("throughput ≥ {PROXY_VS_DIRECT:.2} × direct"),
            format!("{up:.2} (pod → host), {down:.2} (host → pod)"),
            up >= PROXY_VS_DIRECT && down >= PROXY_VS_DIRECT,
        ));
        out.push_str(&row(
            format!("throughput ≥ {PROXY_VS_HAPROXY:.1} × HAProxy"),
            format!("{up_h:.2} (pod → host), {down_h:.2} (host → pod)"),
            up_h >= PROXY_VS_HAPROXY && down_h >= PROXY_VS_HAPROXY,
        ));
        out.push_str(&row(
            format!("new connections/s ≥ {PROXY_CPS_VS_HAPROXY:.1} × HAProxy"),
            format!("{cps:.2}"),
            cps >= PROXY_CPS_VS_HAPROXY,
        ));
        out.push_str(&row(
            format!("added connect + first byte p50 ≤ {PROXY_ADDED_P50_US:.0} µs"),
            format!("{added:+.0} µs"),
            added <= PROXY_ADDED_P50_US,
        ));
        out.push_str(&row(
            format!(
                "≤ {:.0} KiB per idle connection",
                PROXY_BYTES_PER_IDLE / 1024.0
            ),
            per_conn.map_or("not measured".into(), |b| format!("{b:.0} B")),
            per_conn.is_some_and(|b| b <= PROXY_BYTES_PER_IDLE),
        ));
    }
}

fn fmt_fig(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn iperf_version() -> String {
    let out = Command::new("iperf3")
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("iperf3")
        .trim()
        .to_owned()
}
