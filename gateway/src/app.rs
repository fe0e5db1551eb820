//! Wiring the gateway together: `chokepoint run`.
//!
//! Order of start-up: settings → first snapshot → DNS upstream → capture rules → listeners
//! (data path and DNS proxy) → ready. The data path runs on a multi-thread runtime; the admin
//! endpoint on its own single-thread runtime.
//! SIGTERM/SIGINT stop accepting, let connections drain (up to `timeouts.drain`), flush the
//! audit log and remove the capture rules. SIGKILL leaves the rules in place, so pod egress
//! stays failed closed until a gateway runs again (which replaces the leftover rules).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chokepoint_config::Diagnostics;
use chokepoint_config::settings::{self, GatewaySettings, L4Path};
use chokepoint_dns::{Cache, CacheLimits, DnsProxy, DnsSettings, UdpMode};
use chokepoint_redirect::{CaptureSpec, FastPath, InstallMode, IpFamilies};
use prometheus_client::registry::Registry;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::audit::{AuditConfig, AuditMetrics, AuditWriter, Auditor};
use crate::drain;
use crate::flows::{FlowLog, FlowLogMetrics, FlowLogWriter};
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::proxy::dns::DnsFlows;
use crate::proxy::{Context, tcp, udp};
use crate::source::files;
use crate::source::kube::{self, ClusterMetrics};
use crate::state::PolicyState;
use crate::upstream::Connector;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("Kubernetes: {0}")]
    Kubernetes(#[from] chokepoint_config::kube::Error),
    #[error("capture rules: {0}")]
    Capture(#[from] chokepoint_redirect::Error),
    #[error("DNS proxy: {0}")]
    Dns(#[from] chokepoint_dns::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The capture rules the settings ask for.
pub fn capture_spec(s: &GatewaySettings) -> CaptureSpec {
    let c = &s.capture;
    CaptureSpec {
        mode: c.mode,
        families: IpFamilies::Dual,
        pod_interfaces: c.interfaces.clone(),
        pod_cidrs: c.pod_cidrs.clone(),
        tcp_port: s.listen.tcp,
        udp_port: s.listen.udp,
        dns_port: s.dns.enabled.then_some(s.dns.listen_port),
        capture_mark: c.capture_mark,
        gateway_mark: c.gateway_mark,
        mark_mask: c.mark_mask,
        route_table: c.route_table,
        rule_priority: c.rule_priority,
        fast_path: (c.l4 == L4Path::Kernel).then_some(FastPath {
            first_queue: c.queue,
            queues: c.queues,
            flow_mask: c.flow_mark_mask,
            close_mask: c.close_mark_mask,
            generation: 1,
        }),
    }
}

/// What the DNS proxy and its cache get of the `dns:` section (`chokepoint-dns` has its own
/// settings type: it does not depend on the config crate).
pub fn dns_settings(d: &settings::Dns) -> DnsSettings {
    DnsSettings {
        upstream: d.upstream,
        timeout: d.timeout,
        min_ttl: d.min_ttl,
        max_ttl: d.max_ttl,
        grace: d.grace,
        max_entries: d.max_entries,
        max_entries_per_namespace: d.max_entries_per_namespace,
        tcp_idle_timeout: d.tcp_idle_timeout,
        max_in_flight: d.max_in_flight,
        max_tcp_connections: d.max_tcp_connections,
    }
}

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(settings: GatewaySettings) -> Result<(), Error> {
    raise_fd_limit();
    let mut registry = Registry::default();
    let parts = Parts::new(Arc::new(settings), &mut registry)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("chokepoint-data")
        .enable_all()
        .build()
        .map_err(io("data-path runtime"))?;
    let ready = Arc::new(AtomicBool::new(false));
    start_admin(
        &parts.settings,
        registry,
        parts.state.clone(),
        ready.clone(),
    )?;

    runtime.block_on(async {
        let running = start(parts, ready).await?;
        shutdown_signal().await;
        running.shutdown().await
    })
}

/// What the gateway is made of before it serves; built without a runtime.
struct Parts {
    settings: Arc<GatewaySettings>,
    metrics: Metrics,
    audit_metrics: AuditMetrics,
    flow_metrics: FlowLogMetrics,
    dns_metrics: chokepoint_dns::Metrics,
    cluster_metrics: ClusterMetrics,
    /// Where the DNS proxy forwards (`None` with `dns.enabled: false`).
    dns_upstream: Option<SocketAddr>,
    /// What pods resolved (`Some` exactly when there is a DNS upstream).
    cache: Option<Arc<Cache>>,
    metadata: Metadata,
    state: Arc<PolicyState>,
    /// The policy comes from the Kubernetes API (the first snapshot after the initial sync).
    from_cluster: bool,
}

impl Parts {
    /// The metrics (registered in `registry`), the DNS upstream and the name cache, the
    /// metadata handler and, from files, the first snapshot.
    fn new(settings: Arc<GatewaySettings>, registry: &mut Registry) -> Result<Parts, Error> {
        let metrics = Metrics::default();
        let audit_metrics = AuditMetrics::default();
        let dns_metrics = chokepoint_dns::Metrics::default();
        metrics.register(registry);
        audit_metrics.register(registry);
        let flow_metrics = FlowLogMetrics::default();
        if settings.flows.enabled {
            flow_metrics.register(registry);
        }
        let cluster_metrics = ClusterMetrics::default();
        cluster_metrics.register(registry);
        dns_metrics.register(registry);
        // Resolved now: a gateway that would answer every pod query SERVFAIL must not start.
        let dns = dns_settings(&settings.dns);
        let dns_upstream = if settings.dns.enabled {
            let upstream = chokepoint_dns::resolve_upstream(&dns)?;
            tracing::info!(target: "dns", %upstream, "DNS upstream");
            Some(upstream)
        } else {
            None
        };
        let cache = dns_upstream
            .map(|_| Arc::new(Cache::new(CacheLimits::from_settings(&dns), &dns_metrics)));
        if let (Some(cache), Some(path)) = (&cache, &settings.dns.state_file) {
            restore_names(cache, path);
        }
        let metadata = Metadata::new(&settings.metadata);
        metadata.metrics.register(registry);
        if settings.capture.install {
            crate::capture::register(registry);
        }
        metadata.log_start(&settings.metadata);

        let from_cluster = settings.policy.source == settings::SourceKind::Kubernetes;
        let state = Arc::new(if from_cluster {
            // Filled after the initial sync, once the runtime runs the watchers.
            PolicyState::empty(settings.policy.clone(), metrics.clone())
        } else {
            files::load(settings.policy.clone(), metrics.clone()).map_err(Error::Invalid)?
        });
        if !from_cluster {
            let counts = state.snapshot().counts();
            tracing::info!(
                target: "policy",
                cluster = counts.cluster_policies,
                developer = counts.developer_policies,
                network = counts.network_policies,
                staged = counts.staged_policies,
                pods = counts.pods,
                "first snapshot loaded"
            );
        }
        Ok(Parts {
            settings,
            metrics,
            audit_metrics,
            flow_metrics,
            dns_metrics,
            cluster_metrics,
            dns_upstream,
            cache,
            metadata,
            state,
            from_cluster,
        })
    }
}

/// The gateway while it serves: what [`Running::shutdown`] stops, drains and flushes.
struct Running {
    settings: Arc<GatewaySettings>,
    ready: Arc<AtomicBool>,
    ctx: Arc<Context>,
    auditor: Auditor,
    writer: AuditWriter,
    /// The flow log's aggregator, when it is on.
    flow_writer: Option<FlowLogWriter>,
    spec: CaptureSpec,
    trigger: drain::Trigger,
    /// Listeners and the DNS proxy's periodic jobs.
    tasks: Vec<JoinHandle<()>>,
    /// The policy source (file watcher or Kubernetes watchers).
    watcher: JoinHandle<()>,
    /// The fast path's readers (`capture.l4: kernel`).
    fast_path: Option<crate::proxy::fast::FastPathRunning>,
}

/// Follows the policy source, installs the capture rules, binds and serves; then the gateway
/// is ready.
async fn start(parts: Parts, ready: Arc<AtomicBool>) -> Result<Running, Error> {
    let (settings, state) = (parts.settings, parts.state);
    let source = if parts.from_cluster {
        let client = chokepoint_config::kube::connect(&kube::client_source(&settings)).await?;
        Some(kube::start(&state, client, &settings.node, &parts.cluster_metrics).await)
    } else {
        None
    };
    let audit = AuditConfig::from(&settings.audit);
    let (auditor, writer) = Auditor::spawn(&audit, settings.node.clone(), parts.audit_metrics)
        .map_err(io("audit sink"))?;
    let (flows, flow_writer) = FlowLog::spawn(
        &settings.flows,
        settings.node.as_str().into(),
        parts.cache.clone(),
        parts.flow_metrics,
    )
    .map_err(io("flow log sink"))?
    .unzip();
    let mut spec = capture_spec(&settings);
    // The fast path's queues are bound before the rules exist, and its generation continues
    // from the one a gateway before this one left in the kernel: flows that one allowed are
    // re-decided by this one's policies with their next packet.
    let fast_queues = match &mut spec.fast_path {
        Some(fast) => {
            let bound = crate::proxy::fast::bind(fast).map_err(io("fast path queues"))?;
            let marks = fast.marks();
            fast.generation = match chokepoint_redirect::installed_generation(fast) {
                Ok(Some(g)) => marks.next_generation(g),
                _ => 1,
            };
            Some(bound)
        }
        None => None,
    };
    if settings.capture.install {
        install_rules(&spec)?;
        crate::capture::log_start(&spec);
    }
    let ctx = Arc::new(Context {
        state: state.clone(),
        metrics: parts.metrics,
        auditor: auditor.clone(),
        settings: settings.clone(),
        names: parts.cache.clone(),
        metadata: parts.metadata,
        upstream: Connector::new(&settings),
        limits: crate::proxy::limits::DataPathLimits::new(&settings.limits),
        flows,
    });
    let (trigger, watch) = drain::channel();
    let listeners = bind(&settings)?;
    let mut tasks = Vec::new();
    if settings.capture.install {
        tasks.extend(crate::unserved::start(&spec, &state));
    }
    let fast_path = match (fast_queues, &spec.fast_path) {
        (Some(bound), Some(fast)) => {
            if !settings.capture.install {
                chokepoint_redirect::set_generation(fast, fast.generation)?;
            }
            let (running, follower) =
                crate::proxy::fast::start(ctx.clone(), bound, fast.generation)
                    .map_err(io("fast path readers"))?;
            tasks.push(follower);
            Some(running)
        }
        _ => None,
    };
    for l in listeners.tcp {
        tasks.push(tokio::spawn(tcp::serve(ctx.clone(), l, watch.clone())));
    }
    for l in listeners.udp {
        tasks.push(tokio::spawn(udp::serve(ctx.clone(), l, watch.clone())));
    }
    if let (Some(cache), Some(upstream)) = (parts.cache, parts.dns_upstream) {
        let dns = DnsListeners {
            udp: listeners.dns_udp,
            tcp: listeners.dns_tcp,
        };
        tasks.extend(serve_dns(
            &ctx,
            upstream,
            cache,
            parts.dns_metrics,
            dns,
            &watch,
        ));
    }
    drop(watch);
    let watcher = match source {
        Some(source) => tokio::spawn(kube::follow(state.clone(), source, settings.node.clone())),
        None => tokio::spawn(files::watch(state.clone())),
    };
    ready.store(true, Ordering::Release);
    tracing::info!(
        target: "app",
        tcp = settings.listen.tcp,
        udp = settings.listen.udp,
        admin = %settings.listen.admin,
        "ready"
    );
    Ok(Running {
        settings,
        ready,
        ctx,
        auditor,
        writer,
        flow_writer,
        spec,
        trigger,
        tasks,
        watcher,
        fast_path,
    })
}

impl Running {
    /// Stops accepting, drains the connections (up to `timeouts.drain`), saves the name cache,
    /// flushes the audit log and removes the capture rules (unless they are to stay).
    async fn shutdown(self) -> Result<(), Error> {
        let settings = self.settings;
        self.ready.store(false, Ordering::Release);
        tracing::info!(target: "app", "shutting down: draining connections");
        self.watcher.abort();
        if !self.trigger.drain(settings.timeouts.drain).await {
            tracing::warn!(
                target: "app",
                "drain deadline passed; closing the remaining connections"
            );
        }
        for t in self.tasks {
            t.abort();
        }
        // Flows already allowed keep going in the kernel; new ones wait (dropped, retried)
        // until the next gateway reads the queues, or meet no rule if the capture is removed.
        if let Some(fast) = self.fast_path {
            tokio::task::spawn_blocking(move || fast.stop()).await.ok();
        }
        if let (Some(cache), Some(path)) = (&self.ctx.names, &settings.dns.state_file) {
            save_names(cache, path);
        }
        drop(self.ctx);
        drop(self.auditor);
        self.writer.shutdown().await;
        if let Some(flows) = self.flow_writer {
            flows.shutdown().await;
        }
        if settings.capture.install && settings.capture.remove_on_shutdown {
            chokepoint_redirect::remove(&self.spec)?;
            tracing::info!(target: "redirect", "capture rules removed");
        } else if settings.capture.install {
            tracing::info!(
                target: "redirect",
                "capture rules kept (removeOnShutdown: false): \
                 pod egress stays closed until the next gateway"
            );
        }
        Ok(())
    }
}

/// The DNS proxy's sockets (see [`bind_dns`]).
struct DnsListeners {
    udp: Vec<(tokio::net::UdpSocket, UdpMode)>,
    tcp: Vec<tokio::net::TcpListener>,
}

/// Serves DNS on `listeners` and runs the name cache's periodic purge (and save, with
/// `dns.stateFile`).
fn serve_dns(
    ctx: &Arc<Context>,
    upstream: SocketAddr,
    cache: Arc<Cache>,
    metrics: chokepoint_dns::Metrics,
    listeners: DnsListeners,
    watch: &drain::Watch,
) -> Vec<JoinHandle<()>> {
    let settings = &ctx.settings;
    let flows = Arc::new(DnsFlows::new(ctx.clone()));
    let proxy = Arc::new(
        DnsProxy::new(
            &dns_settings(&settings.dns),
            upstream,
            cache.clone(),
            flows,
            metrics,
        )
        .with_mark(Some(settings.capture.gateway_mark)),
    );
    let mut tasks = Vec::new();
    for (socket, mode) in listeners.udp {
        let stop = drained(watch.clone());
        tasks.push(tokio::spawn(proxy.clone().serve_udp(socket, mode, stop)));
    }
    for listener in listeners.tcp {
        let stop = drained(watch.clone());
        tasks.push(tokio::spawn(proxy.clone().serve_tcp(listener, stop)));
    }
    let purge = cache.clone().purge_periodically(CACHE_PURGE_INTERVAL);
    tasks.push(tokio::spawn(purge));
    if let Some(path) = &settings.dns.state_file {
        let save =
            chokepoint_dns::state::save_periodically(cache, path.clone(), CACHE_SAVE_INTERVAL);
        tasks.push(tokio::spawn(save));
    }
    tasks
}

/// What pods resolved before a restart still counts (until it expires).
fn restore_names(cache: &Cache, path: &Path) {
    match chokepoint_dns::state::load(cache, path) {
        Ok(n) => tracing::info!(
            target: "dns",
            entries = n,
            path = %path.display(),
            "name cache restored"
        ),
        Err(e) => tracing::warn!(target: "dns", "starting with an empty name cache: {e}"),
    }
}

fn save_names(cache: &Cache, path: &Path) {
    match chokepoint_dns::state::save(cache, path) {
        Ok(n) => tracing::info!(
            target: "dns",
            entries = n,
            path = %path.display(),
            "name cache saved"
        ),
        Err(e) => tracing::warn!(target: "dns", "the name cache was not saved: {e}"),
    }
}

/// Installs the capture rules. Rules identical to ours are what an earlier gateway left when
/// it was killed (on purpose: egress stays failed closed); they are taken over. Anything else
/// in the way is reported with what was found and how to remove it.
fn install_rules(spec: &CaptureSpec) -> Result<(), Error> {
    match chokepoint_redirect::install(spec, InstallMode::Fresh) {
        Ok(()) => {}
        Err(chokepoint_redirect::Error::Conflict(_))
            if chokepoint_redirect::verify(spec).is_ok() =>
        {
            tracing::warn!(
                target: "redirect",
                "taking over the capture rules an earlier gateway left in place"
            );
            chokepoint_redirect::install(spec, InstallMode::Replace)?;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(target: "redirect", mode = ?spec.mode, "capture rules installed");
    Ok(())
}

/// How often the name cache is saved to `dns.stateFile` (what a crash can lose).
const CACHE_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How often expired name observations are dropped from the cache (memory follows expiry
/// even for namespaces nobody queries from any more).
const CACHE_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves when a drain starts (for servers that take a shutdown future).
async fn drained(mut watch: drain::Watch) {
    watch.signaled().await;
}

struct Listeners {
    tcp: Vec<tokio::net::TcpListener>,
    udp: Vec<tokio::net::UdpSocket>,
    dns_udp: Vec<(tokio::net::UdpSocket, UdpMode)>,
    dns_tcp: Vec<tokio::net::TcpListener>,
}

/// One listener per family: TPROXY looks up IPv4 and IPv6 sockets separately.
fn bind(settings: &GatewaySettings) -> Result<Listeners, Error> {
    let mut out = Listeners {
        tcp: Vec::new(),
        udp: Vec::new(),
        dns_udp: Vec::new(),
        dns_tcp: Vec::new(),
    };
    let any4 = std::net::IpAddr::from([0u8; 4]);
    let any6 = std::net::IpAddr::from([0u16; 8]);
    for (i, ip) in [any4, any6].into_iter().enumerate() {
        let v6 = i == 1;
        let tcp_addr = SocketAddr::new(ip, settings.listen.tcp);
        match tcp::listen(tcp_addr) {
            Ok(l) => out.tcp.push(l),
            // A node without IPv6 still serves IPv4 (the rules drop IPv6 pod traffic then).
            Err(e) if v6 => tracing::warn!(target: "app", "no IPv6 TCP listener: {e}"),
            Err(e) => return Err(io(format!("TCP listener {tcp_addr}"))(e)),
        }
        if settings.capture.mode == settings::CaptureMode::Tproxy {
            let udp_addr = SocketAddr::new(ip, settings.listen.udp);
            match udp::listen(udp_addr, settings.listen.udp_receive_buffer) {
                Ok(l) => out.udp.push(l),
                Err(e) if v6 => tracing::warn!(target: "app", "no IPv6 UDP listener: {e}"),
                Err(e) => return Err(io(format!("UDP listener {udp_addr}"))(e)),
            }
        }
        if settings.dns.enabled {
            bind_dns(
                settings,
                SocketAddr::new(ip, settings.dns.listen_port),
                v6,
                &mut out,
            )?;
        }
    }
    Ok(out)
}

/// The DNS proxy's UDP and TCP listeners on `addr`. TPROXY delivers a query to a transparent
/// socket that reports the server the pod addressed; after REDIRECT, conntrack gives the
/// answer that server's address on its way back, so a plain socket does.
fn bind_dns(
    settings: &GatewaySettings,
    addr: SocketAddr,
    v6: bool,
    out: &mut Listeners,
) -> Result<(), Error> {
    // One TPROXY socket per data-path worker, each with its own receive loop (the runtime
    // has a worker per CPU).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let udp = match settings.capture.mode {
        settings::CaptureMode::Tproxy => chokepoint_dns::transparent_udp_sockets(addr, workers)
            .map(|all| all.into_iter().map(|s| (s, UdpMode::Transparent)).collect()),
        settings::CaptureMode::Redirect => chokepoint_redirect::sockopt::plain_udp_socket(addr)
            .and_then(tokio::net::UdpSocket::from_std)
            .map(|s| vec![(s, UdpMode::Plain)]),
    };
    match udp {
        Ok(s) => out.dns_udp.extend(s),
        Err(e) if v6 => tracing::warn!(target: "dns", "no IPv6 DNS UDP listener: {e}"),
        Err(e) => return Err(io(format!("DNS UDP listener {addr}"))(e)),
    }
    match chokepoint_dns::transparent_tcp_listener(addr) {
        Ok(l) => out.dns_tcp.push(l),
        Err(e) if v6 => tracing::warn!(target: "dns", "no IPv6 DNS TCP listener: {e}"),
        Err(e) => return Err(io(format!("DNS TCP listener {addr}"))(e)),
    }
    Ok(())
}

fn start_admin(
    settings: &GatewaySettings,
    registry: Registry,
    state: Arc<PolicyState>,
    ready: Arc<AtomicBool>,
) -> Result<(), Error> {
    let addr = settings.listen.admin;
    let admin = Arc::new(Admin {
        registry,
        state,
        settings: serde_json::to_value(settings).unwrap_or_default(),
        ready,
    });
    let runtime: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("admin runtime"))?;
    // Bind before returning so that a busy port is a start-up error, not a silent log line.
    let listener = runtime
        .block_on(async { tokio::net::TcpListener::bind(addr).await })
        .map_err(io(format!("admin endpoint {addr}")))?;
    std::thread::Builder::new()
        .name("chokepoint-admin".into())
        .spawn(move || {
            if let Err(e) = runtime.block_on(admin.serve(listener)) {
                tracing::error!(target: "admin", "admin endpoint stopped: {e}");
            }
        })
        .map_err(io("admin thread"))?;
    Ok(())
}

/// Every proxied connection holds two sockets: lift the soft limit on open files to the hard
/// limit (often 1024 → 1048576), as proxies do.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(target: "app", "cannot raise the open-file limit from {soft}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(target: "app", "cannot read the open-file limit: {e}"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers there is no orderly shutdown; run until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;
    use std::time::Instant;

    use chokepoint_dns::{Cache, CacheLimits, Metrics};

    use super::*;

    /// `dns.maxEntriesPerNamespace` reaches the cache: a namespace that overflows its quota
    /// evicts its own entries, never another namespace's.
    #[test]
    fn a_namespace_over_its_configured_quota_evicts_only_its_own_names() {
        let text = "capture: {interfaces: [\"ckp*\"]}\npolicy: {paths: [p], inventory: [i]}\n\
                    dns: {maxEntries: 1000, maxEntriesPerNamespace: 10}\n";
        let settings = GatewaySettings::from_str(Path::new("gateway.yaml"), text).unwrap();
        let limits = CacheLimits::from_settings(&dns_settings(&settings.dns));
        assert_eq!(limits.max_entries_per_namespace, 10);
        let cache = Cache::new(limits, &Metrics::default());
        let now = Instant::now();
        let a = IpAddr::from(Ipv4Addr::new(192, 0, 2, 1));
        cache.insert("tenant-a", "api.example", &[a], 60, now);
        for i in 0..500u32 {
            let ip = IpAddr::from(Ipv4Addr::from(0x0A00_0000 + i));
            cache.insert("tenant-b", &format!("n{i}.example"), &[ip], 60, now);
        }
        assert!(cache.resolved("tenant-a", "api.example", a, now));
        assert_eq!(cache.len(), 11);
    }
}
