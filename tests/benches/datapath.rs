//! Data-path benchmarks: the real gateway against direct routing and against HAProxy, in the
//! network-namespace lab, side by side in one run.
//!
//! Run with `bench/datapath.sh` (as root; it installs `haproxy` and `iperf3` and builds the
//! gateway) or `cargo bench -p chokepoint-tests --bench datapath` after
//! `cargo build --release -p chokepoint`.
//!
//! The lab: a node namespace, one pod (`tenant-a/web`, 10.244.1.10) and one outside host
//! (`host-a`, 192.0.2.10); a fresh one for every measurement block, so that nothing one set-up
//! leaves behind affects the next. Three set-ups of the node, measured in turn, `REPS` times
//! (interleaved, so that slow drifts of the machine hit all three alike):
//!
//! - **direct**: no capture rules; the node just routes the pod's packets;
//! - **gateway**: `chokepoint run` (TPROXY capture, the rules it installs itself);
//! - **haproxy**: the same capture rules (`chokepoint_redirect::install` with the spec the
//!   gateway's settings give) and HAProxy in the node namespace with
//!   `bind :15001 transparent`, `server s 0.0.0.0:0` (to the original destination) and
//!   `source 0.0.0.0 usesrc clientip` (keeps the pod's IP, as the gateway does).
//!
//! Measured: bulk TCP throughput with iperf3 (pod → host and host → pod), new connections per
//! second (a pool of client threads in the pod connecting to a server that writes one byte and
//! closes), connect + first-byte latency (sequential), the proxy's CPU time and scheduling per
//! connection (`/proc/<pid>/task/*/schedstat`), and the RSS of the proxy process per idle
//! proxied connection at `IDLE_CONNS` connections (fewer when the hard open-file limit cannot
//! hold two sockets per connection in the proxy, see [`idle_target`]). Before each measurement
//! the bench waits (bounded) for the machine to be quiet and counts the times it was not.
//!
//! Everything runs inside namespaces the lab creates; nothing touches the root namespace. Every
//! loop and wait is bounded; every process started here is stopped on the way out, also when a
//! measurement panics.

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

use chokepoint_config::settings::GatewaySettings;
use chokepoint_lab::{HOST_A_IPV4, HostSpec, Lab, PodSpec, Topology, netns};
use chokepoint_redirect::{CaptureSpec, InstallMode};
use chokepoint_tests::{Gateway, GatewayFiles, TempDir, start_gateway};

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
/// Idle proxied connections for the memory measurement (see [`idle_target`]).
const IDLE_CONNS: usize = 10_000;
/// File descriptors a proxy needs besides two per proxied connection (listeners, epoll,
/// logs, admin endpoint, …), with a margin.
const PROXY_FD_RESERVE: u64 = 100;

const IPERF_PORT: u16 = 5201;
/// Writes one byte at once on accept, then closes.
const BYTE_PORT: u16 = 9000;
/// Accepts and holds connections open, silent.
const HOLD_PORT: u16 = 9001;

/// The open-file limit asked for this process and its children (two sockets per idle
/// connection in the proxy). Raising the hard limit needs CAP_SYS_RESOURCE; without it the
/// soft limit is raised to the hard one and the idle test adapts (see [`idle_target`]).
const NOFILE: u64 = 65_536;

/// Targets of the issue.
const TARGET_VS_DIRECT: f64 = 0.90;
const TARGET_VS_HAPROXY: f64 = 1.0;
const TARGET_CPS_VS_HAPROXY: f64 = 1.2;
const TARGET_ADDED_P50_US: f64 = 50.0;
const TARGET_BYTES_PER_IDLE: f64 = 4096.0;

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(HOLD_SERVER_ARG) {
        return hold_server_main(args.get(2).map(String::as_str));
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
    Gateway,
    Haproxy,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Direct, Mode::Gateway, Mode::Haproxy];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Gateway => "gateway",
            Mode::Haproxy => "haproxy",
        }
    }

    fn index(self) -> usize {
        self as usize
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
    /// Idle-connection memory, if measured: (RSS before, RSS after, connections) in bytes.
    idle_rss: Option<(u64, u64, usize)>,
    /// Measurements that started although the machine was not quiet (see [`wait_quiet`]).
    quiet_misses: u32,
    /// The proxy's scheduler figures per connection, in the connections/s runs and in the
    /// sequential latency runs.
    cps_sched: Vec<Sched>,
    lat_sched: Vec<Sched>,
}

#[derive(Debug, Default)]
struct Results {
    modes: [PerMode; 3],
    pod_ip: Option<IpAddr>,
    haproxy_version: String,
}

// ------------------------------------------------------------------------------------ run

fn run() -> Results {
    let mut results = Results {
        haproxy_version: haproxy_version(),
        ..Results::default()
    };
    let reps = reps();
    for rep in 0..reps {
        for mode in Mode::ALL {
            eprintln!("== repetition {}/{reps}: {}", rep + 1, mode.name());
            measure(mode, rep + 1 == reps, &mut results);
        }
    }
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
    let files = GatewayFiles::new(&lab, &[("policy.yaml", POLICY)], "tproxy", "");
    let settings = GatewaySettings::load(&files.settings()).expect("the bench's gateway settings");
    let spec = chokepoint::app::capture_spec(&settings);
    let scratch = TempDir::new("bench-haproxy");
    let byte_to = SocketAddr::new(host_ip, BYTE_PORT);
    let byte_server = ByteServer::start(&host_ns, byte_to);
    let iperf_server = IperfServer::start(&lab, &host_ns, host_ip);

    let setup = Setup::start(mode, &lab, &files, &spec, &scratch, &pod.netns, byte_to);
    let r = &mut results.modes[mode.index()];
    r.peer_seen = byte_server.last_peer();

    r.quiet_misses += u32::from(!wait_quiet());
    let up = iperf(&lab, &pod.netns, host_ip, false);
    r.quiet_misses += u32::from(!wait_quiet());
    let down = iperf(&lab, &pod.netns, host_ip, true);
    eprintln!("   iperf3 pod→host {up:.2} Gbit/s, host→pod {down:.2} Gbit/s");
    r.upload.push(up);
    r.download.push(down);

    r.quiet_misses += u32::from(!wait_quiet());
    let sched0 = setup.proxy_pid().map(schedstat);
    let cps = connections_per_second(&pod.netns, byte_to);
    if let (Some(a), Some(b)) = (sched0, setup.proxy_pid().map(schedstat)) {
        r.cps_sched.push(b.since(&a).per(cps.completed as f64));
    }
    eprintln!(
        "   {:.0} connections/s ({} errors)",
        cps.per_second, cps.failed
    );
    r.cps.push(cps.per_second);
    r.cps_errors += cps.failed;

    r.quiet_misses += u32::from(!wait_quiet());
    let sched0 = setup.proxy_pid().map(schedstat);
    let lat = latencies(&pod.netns, byte_to);
    if let (Some(a), Some(b)) = (sched0, setup.proxy_pid().map(schedstat)) {
        r.lat_sched
            .push(b.since(&a).per((LATENCY_SAMPLES + LATENCY_WARMUP) as f64));
    }
    eprintln!(
        "   connect+first byte p50 {:.1} µs, p99 {:.1} µs",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99)
    );
    r.latency_us.extend(lat);

    if with_idle && mode != Mode::Direct {
        let idle = idle_memory(&lab, &pod.netns, &host_ns, host_ip, setup.pid());
        eprintln!(
            "   RSS {} KiB → {} KiB with {} idle connections: {:.0} B/connection",
            idle.0 / 1024,
            idle.1 / 1024,
            idle.2,
            (idle.1 as f64 - idle.0 as f64) / idle.2 as f64
        );
        r.idle_rss = Some(idle);
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

/// One set-up of the node, live for one repetition.
enum Setup {
    Direct,
    Gateway(Box<Gateway>, u32),
    Haproxy(Box<Haproxy>, CaptureSpec),
}

impl Setup {
    fn start(
        mode: Mode,
        lab: &Lab,
        files: &GatewayFiles,
        spec: &CaptureSpec,
        scratch: &TempDir,
        pod_ns: &str,
        probe: SocketAddr,
    ) -> Setup {
        let node = lab.node_netns();
        let setup = match mode {
            Mode::Direct => {
                assert!(
                    chokepoint_tests::nft_table(node).is_none(),
                    "direct mode must run without capture rules"
                );
                Setup::Direct
            }
            Mode::Gateway => {
                let gw = start_gateway(lab, files);
                let needle = files.settings().display().to_string();
                let pid = find_pid(&needle).expect("the gateway's pid");
                Setup::Gateway(Box::new(gw), pid)
            }
            Mode::Haproxy => {
                netns::run_in(node, || {
                    chokepoint_redirect::install(spec, InstallMode::Fresh)
                })
                .expect("enter the node namespace")
                .expect("install the capture rules for HAProxy");
                let hap = Haproxy::start(lab, scratch.path().to_owned());
                Setup::Haproxy(Box::new(hap), spec.clone())
            }
        };
        // The first connection proves the path works (with capture rules, nothing gets
        // through unless the proxy relays it) and warms it up.
        let mut setup = setup;
        wait_path(pod_ns, probe, &mut setup);
        setup
    }

    fn pid(&self) -> u32 {
        self.proxy_pid().expect("no proxy process in direct mode")
    }

    fn proxy_pid(&self) -> Option<u32> {
        match self {
            Setup::Direct => None,
            Setup::Gateway(_, pid) => Some(*pid),
            Setup::Haproxy(h, _) => Some(h.child.id()),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Setup::Direct => "direct routing",
            Setup::Gateway(..) => "the gateway",
            Setup::Haproxy(..) => "HAProxy",
        }
    }

    fn is_alive(&mut self) -> Result<(), String> {
        match self {
            Setup::Direct | Setup::Gateway(..) => Ok(()),
            Setup::Haproxy(h, _) => match h.child.try_wait() {
                Ok(Some(status)) => Err(format!("haproxy exited ({status}):\n{}", h.log())),
                _ => Ok(()),
            },
        }
    }

    fn stop(self, lab: &Lab) {
        match self {
            Setup::Direct => {}
            Setup::Gateway(gw, _) => {
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
                netns::run_in(lab.node_netns(), || chokepoint_redirect::remove(&spec))
                    .expect("enter the node namespace")
                    .expect("remove the capture rules");
            }
        }
    }
}

fn wait_path(pod_ns: &str, to: SocketAddr, setup: &mut Setup) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = netns::run_in(pod_ns, || one_byte_exchange(to, Duration::from_secs(1)))
            .expect("enter the pod namespace");
        if got.is_ok() {
            return;
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
        .replace("MAXCONN", &(idle_target() + 10).to_string())
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

/// The argument that turns this binary into the hold server (see [`HoldServer`]).
const HOLD_SERVER_ARG: &str = "--hold-server";

/// Accepts connections and holds them open, silent: this very binary with
/// [`HOLD_SERVER_ARG`], run in the host namespace, so that its sockets do not count against
/// this process's open-file limit. It writes one `.` to stdout per accepted connection and
/// exits (closing them all) when its stdin closes, so it never outlives the bench.
struct HoldServer {
    child: Child,
    accepted: Arc<AtomicU64>,
    counter: Option<JoinHandle<()>>,
}

impl HoldServer {
    fn start(lab: &Lab, netns_name: &str, addr: SocketAddr) -> HoldServer {
        let exe = std::env::current_exe().expect("this bench's executable");
        let mut child = lab
            .command(netns_name, exe)
            .arg(HOLD_SERVER_ARG)
            .arg(addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the hold server");
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
        let mut server = HoldServer {
            child,
            accepted,
            counter: Some(counter),
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            server.shutdown();
            panic!("the hold server did not start listening on {addr}");
        }
        server
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::Relaxed) as usize
    }

    /// Closes every held connection and ends the server.
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

impl Drop for HoldServer {
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

/// Opens `IDLE_CONNS` connections from the pod through the proxy `pid` to a server that holds
/// them; returns the proxy's RSS before and after (once every connection reached the server),
/// and the number of connections.
fn idle_memory(
    lab: &Lab,
    pod_ns: &str,
    host_ns: &str,
    host: IpAddr,
    pid: u32,
) -> (u64, u64, usize) {
    let n_conns = idle_target();
    let to = SocketAddr::new(host, HOLD_PORT);
    let hold = HoldServer::start(lab, host_ns, to);
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
            "idle test: {failure}\nproxy fds {}\n--- node:\n{}\n--- host:\n{}",
            open_fds(pid),
            ss(lab.node_netns()),
            ss(host_ns),
        );
    }
    thread::sleep(Duration::from_secs(1));
    let after = rss_bytes(pid);
    let fds_after = open_fds(pid);
    eprintln!("   proxy fds {fds_before} → {fds_after}");
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
    (before, after, n_conns)
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

fn schedstat(pid: u32) -> Sched {
    let mut total = Sched::default();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return total;
    };
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [cpu, wait, slices] = v[..] {
            total.cpu += cpu;
            total.wait += wait;
            total.slices += slices;
        }
    }
    total
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

/// The pid of the process whose command line contains `needle`.
fn find_pid(needle: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == std::process::id() {
            return None;
        }
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains(needle) && cmdline.contains(" run ")).then_some(pid)
    })
}

// ------------------------------------------------------------------------------------ helpers

/// The machine's busy share of all CPUs over `window`, from `/proc/stat` (0 to 1).
fn cpu_busy(window: Duration) -> f64 {
    let sample = || -> Option<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        // idle + iowait
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Some((total, idle))
    };
    let (Some((t0, i0)), Some((t1, i1))) = (sample(), {
        thread::sleep(window);
        sample()
    }) else {
        return 0.0;
    };
    let total = t1.saturating_sub(t0).max(1) as f64;
    1.0 - i1.saturating_sub(i0) as f64 / total
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

/// How many idle connections the proxy can hold under the hard open-file limit: two sockets
/// each plus [`PROXY_FD_RESERVE`], at most [`IDLE_CONNS`].
fn idle_target() -> usize {
    let fit = nofile_hard().saturating_sub(PROXY_FD_RESERVE) / 2;
    IDLE_CONNS.min(usize::try_from(fit).unwrap_or(usize::MAX))
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

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

impl Results {
    fn m(&self, mode: Mode) -> &PerMode {
        &self.modes[mode.index()]
    }

    fn markdown(&self) -> String {
        let (d, g, h) = (
            self.m(Mode::Direct),
            self.m(Mode::Gateway),
            self.m(Mode::Haproxy),
        );
        let mut out = String::new();
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
             repetition for latency; {} idle connections for memory (hard open-file limit {}).\n",
            reps(),
            idle_target(),
            nofile_hard()
        );
        let _ = writeln!(
            out,
            "| measure | direct | gateway | HAProxy | gateway / direct | gateway / HAProxy |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for (what, pick) in [
            (
                "TCP throughput pod → host, Gbit/s (median)",
                (|m: &PerMode| median(&m.upload)) as fn(&PerMode) -> f64,
            ),
            (
                "TCP throughput host → pod, Gbit/s (median)",
                |m: &PerMode| median(&m.download),
            ),
            ("new connections/s (median)", |m: &PerMode| median(&m.cps)),
        ] {
            let (dv, gv, hv) = (pick(d), pick(g), pick(h));
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {:.2} | {:.2} |",
                fmt_fig(dv),
                fmt_fig(gv),
                fmt_fig(hv),
                gv / dv,
                gv / hv
            );
        }
        for (what, q) in [
            ("connect + first byte p50, µs", 0.5),
            ("connect + first byte p99, µs", 0.99),
        ] {
            let (dv, gv, hv) = (
                percentile(&d.latency_us, q),
                percentile(&g.latency_us, q),
                percentile(&h.latency_us, q),
            );
            let _ = writeln!(
                out,
                "| {what} | {dv:.0} | {gv:.0} ({:+.0}) | {hv:.0} ({:+.0}) | {:.2} | {:.2} |",
                gv - dv,
                hv - dv,
                gv / dv,
                gv / hv
            );
        }
        let per_conn = |m: &PerMode| m.idle_rss.map(|(b, a, n)| (a as f64 - b as f64) / n as f64);
        let (gp, hp) = (per_conn(g), per_conn(h));
        let fmt_rss = |m: &PerMode| {
            m.idle_rss.map_or("—".to_owned(), |(b, a, n)| {
                format!(
                    "{:.0} B ({} → {} MiB)",
                    (a as f64 - b as f64) / n as f64,
                    b >> 20,
                    a >> 20
                )
            })
        };
        let _ = writeln!(
            out,
            "| RSS growth per idle proxied connection ({}) | — | {} | {} | — | {} |",
            idle_target(),
            fmt_rss(g),
            fmt_rss(h),
            match (gp, hp) {
                (Some(a), Some(b)) => format!("{:.2}", a / b),
                _ => "—".into(),
            }
        );
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
            .filter(|m| self.m(**m).quiet_misses > 0)
            .map(|m| format!("{} {}", m.name(), self.m(*m).quiet_misses))
            .collect();
        if !misses.is_empty() {
            let _ = writeln!(
                out,
                "\nMeasurements started while other work kept the machine busy (≥ {:.0}% CPU for {QUIET_WAIT:?}): {}.",
                QUIET_BUSY * 100.0,
                misses.join(", ")
            );
        }
        let sched = |v: &[Sched], f: fn(&Sched) -> f64| {
            let xs: Vec<f64> = v.iter().map(f).collect();
            if xs.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.1}", median(&xs))
            }
        };
        let _ = writeln!(
            out,
            "\n| the proxy process, per connection (median over repetitions) | gateway | HAProxy |\n|---|---:|---:|"
        );
        for (what, v, f) in [
            (
                "CPU time in the connections/s runs, µs",
                0,
                (|s: &Sched| s.cpu) as fn(&Sched) -> f64,
            ),
            (
                "CPU time in the sequential latency runs, µs",
                1,
                |s: &Sched| s.cpu,
            ),
            (
                "times a proxy thread was scheduled in, sequential runs",
                1,
                |s: &Sched| s.slices,
            ),
            ("run-queue wait, sequential runs, µs", 1, |s: &Sched| {
                s.wait
            }),
        ] {
            let pick = |m: &PerMode| {
                if v == 0 {
                    m.cps_sched.clone()
                } else {
                    m.lat_sched.clone()
                }
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} |",
                sched(&pick(g), f),
                sched(&pick(h), f)
            );
        }
        let pod = self.pod_ip.map(|p| p.to_string()).unwrap_or_default();
        let src = |m: &PerMode| m.peer_seen.map_or("?".to_owned(), |p| p.to_string());
        let _ = writeln!(
            out,
            "\nSource address the server saw (pod is {pod}): direct {}, gateway {}, HAProxy {}.",
            src(d),
            src(g),
            src(h)
        );

        let up = median(&g.upload) / median(&d.upload);
        let down = median(&g.download) / median(&d.download);
        let up_h = median(&g.upload) / median(&h.upload);
        let down_h = median(&g.download) / median(&h.download);
        let cps = median(&g.cps) / median(&h.cps);
        let added = percentile(&g.latency_us, 0.5) - percentile(&d.latency_us, 0.5);
        let _ = writeln!(out, "\n| target | result | |\n|---|---|---|");
        let _ = writeln!(
            out,
            "| throughput ≥ {TARGET_VS_DIRECT:.2} × direct | {up:.2} (pod → host), {down:.2} (host → pod) | {} |",
            met(up >= TARGET_VS_DIRECT && down >= TARGET_VS_DIRECT)
        );
        let _ = writeln!(
            out,
            "| throughput ≥ {TARGET_VS_HAPROXY:.1} × HAProxy | {up_h:.2} (pod → host), {down_h:.2} (host → pod) | {} |",
            met(up_h >= TARGET_VS_HAPROXY && down_h >= TARGET_VS_HAPROXY)
        );
        let _ = writeln!(
            out,
            "| connections/s ≥ {TARGET_CPS_VS_HAPROXY:.1} × HAProxy | {cps:.2} | {} |",
            met(cps >= TARGET_CPS_VS_HAPROXY)
        );
        let _ = writeln!(
            out,
            "| added p50 latency ≤ {TARGET_ADDED_P50_US:.0} µs | {added:.0} µs | {} |",
            met(added <= TARGET_ADDED_P50_US)
        );
        let _ = writeln!(
            out,
            "| ≤ {:.0} KiB per idle connection | {} | {} |",
            TARGET_BYTES_PER_IDLE / 1024.0,
            gp.map_or("not measured".into(), |b| format!("{b:.0} B")),
            met(gp.is_some_and(|b| b <= TARGET_BYTES_PER_IDLE))
        );
        out
    }
}

fn fmt_fig(v: f64) -> String {
    if v >= 100.0 {
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
