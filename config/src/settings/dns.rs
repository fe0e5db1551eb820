//! `dns:`: the DNS proxy and its name cache. The gateway hands what the proxy needs of it to
//! `chokepoint-dns`, which does not depend on this crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::dns as d;
use super::{duration, field};
use crate::compile::Checker;

/// The DNS proxy and its name cache (`dns:`): pod DNS is captured, forwarded to one canonical
/// upstream, and what the answers teach is what `domainNames` rules match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// Capture pod DNS (UDP and TCP port 53, whatever server the pod addressed) and serve it.
    /// Off: port 53 is decided like any other port and `domainNames` rules match nothing.
    pub enabled: bool,
    /// The canonical name server every query is forwarded to (NPEP-133: only its answers are
    /// trusted). `None`: the first `nameserver` of `/etc/resolv.conf`, port 53. A gateway
    /// with `hostNetwork: true` should run with `dnsPolicy: ClusterFirstWithHostNet` (so that
    /// file names the cluster DNS) or set this explicitly.
    pub upstream: Option<SocketAddr>,
    /// Port the proxy listens on, UDP and TCP; the capture rules send pod DNS here.
    pub listen_port: u16,
    /// How long a query may take end to end, TCP fallback included, before the pod gets
    /// SERVFAIL.
    #[serde(with = "duration::text")]
    pub timeout: Duration,
    /// Lower clamp of an answer's TTL.
    #[serde(with = "duration::text")]
    pub min_ttl: Duration,
    /// Upper clamp of an answer's TTL.
    #[serde(with = "duration::text")]
    pub max_ttl: Duration,
    /// Extra time after the clamped TTL during which new connections are still allowed.
    /// Existing connections are never cut by expiry.
    #[serde(with = "duration::text")]
    pub grace: Duration,
    /// Most `(namespace, name, IP)` observations kept; when full, the entry closest to expiry
    /// is evicted and counted.
    pub max_entries: usize,
    /// Most observations one namespace holds (its fair share): at its quota a namespace's new
    /// entry evicts *its own* entry closest to expiry, never another namespace's. At most
    /// `maxEntries`; unset, the default clamped to `maxEntries`.
    pub max_entries_per_namespace: usize,
    /// Idle timeout of a pod's TCP connection to the proxy.
    #[serde(with = "duration::text")]
    pub tcp_idle_timeout: Duration,
    /// Queries forwarded at once. UDP queries beyond it are dropped (the pod retries), TCP
    /// queries wait.
    pub max_in_flight: usize,
    /// Pod TCP connections to the proxy at once; more are closed as soon as accepted.
    pub max_tcp_connections: usize,
    /// Where the name cache is saved (every 10 s and on shutdown) and loaded from at start, so
    /// a restart does not forget what pods resolved. `None`: kept in memory only.
    pub state_file: Option<PathBuf>,
}

impl Default for Dns {
    /// What a settings file without a `dns:` section gets.
    fn default() -> Self {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        validate(&mut c, RawDns::default(), &[], Path::new("")).expect("the defaults are valid")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawDns {
    enabled: Option<bool>,
    upstream: Option<String>,
    listen_port: Option<i64>,
    timeout: Option<String>,
    min_ttl: Option<String>,
    max_ttl: Option<String>,
    grace: Option<String>,
    max_entries: Option<i64>,
    max_entries_per_namespace: Option<i64>,
    tcp_idle_timeout: Option<String>,
    max_in_flight: Option<i64>,
    max_tcp_connections: Option<i64>,
    state_file: Option<String>,
}

/// `ports_in_use`: the listeners' ports, which the proxy must not take; a relative
/// `stateFile` resolves against `base`, the settings file's directory.
pub(super) fn validate(
    c: &mut Checker,
    raw: RawDns,
    ports_in_use: &[Option<u16>],
    base: &Path,
) -> Option<Dns> {
    let upstream = match raw.upstream.as_deref() {
        None => Some(None),
        Some(text) => match parse_upstream(text) {
            Ok(addr) => Some(Some(addr)),
            Err(why) => {
                c.error("/dns/upstream", format!("`{text}` {why}"));
                None
            }
        },
    };
    let listen_port = field::port(c, "/dns/listenPort", raw.listen_port, d::LISTEN_PORT);
    if let Some(port) = listen_port
        && ports_in_use.contains(&Some(port))
    {
        c.error(
            "/dns/listenPort",
            format!("port {port} is already the TCP or UDP listener's; pick another"),
        );
    }
    let timeout = duration::setting(c, "/dns/timeout", raw.timeout.as_deref(), d::TIMEOUT, false);
    if let Some(t) = timeout
        && t > d::MAX_TIMEOUT
    {
        c.error(
            "/dns/timeout",
            format!(
                "{t:?} is longer than {:?}: pods would hang on DNS; use a shorter timeout",
                d::MAX_TIMEOUT
            ),
        );
    }
    let min_ttl = duration::setting(c, "/dns/minTtl", raw.min_ttl.as_deref(), d::MIN_TTL, true);
    let max_ttl = duration::setting(c, "/dns/maxTtl", raw.max_ttl.as_deref(), d::MAX_TTL, false);
    if let (Some(lo), Some(hi)) = (min_ttl, max_ttl)
        && lo > hi
    {
        c.error(
            "/dns/minTtl",
            format!("minTtl ({lo:?}) is longer than maxTtl ({hi:?})"),
        );
    }
    let grace = duration::setting(c, "/dns/grace", raw.grace.as_deref(), d::GRACE, true);
    let max_entries = field::count(
        c,
        "/dns/maxEntries",
        raw.max_entries,
        d::MAX_ENTRIES,
        d::MIN_ENTRIES,
        " (NPEP-133 asks for at least 100 IPs per name)",
    );
    let max_entries_per_namespace = per_namespace(c, raw.max_entries_per_namespace, max_entries);
    let tcp_idle_timeout = duration::setting(
        c,
        "/dns/tcpIdleTimeout",
        raw.tcp_idle_timeout.as_deref(),
        d::TCP_IDLE_TIMEOUT,
        false,
    );
    let max_in_flight = field::count(
        c,
        "/dns/maxInFlight",
        raw.max_in_flight,
        d::MAX_IN_FLIGHT,
        1,
        "",
    );
    let max_tcp_connections = field::count(
        c,
        "/dns/maxTcpConnections",
        raw.max_tcp_connections,
        d::MAX_TCP_CONNECTIONS,
        1,
        "",
    );
    let state_file = match raw.state_file.as_deref() {
        None => Some(None),
        Some("") => {
            c.error(
                "/dns/stateFile",
                "an empty path; leave `stateFile` out to keep the cache in memory only",
            );
            None
        }
        Some(p) => Some(Some(base.join(p))),
    };
    Some(Dns {
        enabled: raw.enabled.unwrap_or(d::ENABLED),
        upstream: upstream?,
        listen_port: listen_port?,
        timeout: timeout?,
        min_ttl: min_ttl?,
        max_ttl: max_ttl?,
        grace: grace?,
        max_entries: max_entries?,
        max_entries_per_namespace: max_entries_per_namespace?,
        tcp_idle_timeout: tcp_idle_timeout?,
        max_in_flight: max_in_flight?,
        max_tcp_connections: max_tcp_connections?,
        state_file: state_file?,
    })
}

/// `maxEntriesPerNamespace`: from 1 up to `maxEntries` (when that is valid); unset, the
/// default clamped to `maxEntries`.
fn per_namespace(c: &mut Checker, v: Option<i64>, max_entries: Option<usize>) -> Option<usize> {
    const P: &str = "/dns/maxEntriesPerNamespace";
    let Some(n) = v else {
        return Some(max_entries.map_or(d::MAX_ENTRIES_PER_NAMESPACE, |m| {
            m.min(d::MAX_ENTRIES_PER_NAMESPACE)
        }));
    };
    let n = field::count(
        c,
        P,
        Some(n),
        0,
        1,
        " (a namespace needs room for its names)",
    )?;
    match max_entries {
        Some(max) if n > max => {
            c.error(
                P,
                format!(
                    "{n} is more than maxEntries ({max}): one namespace could fill the cache \
                     and evict every other's names; use at most {max}, or raise maxEntries"
                ),
            );
            None
        }
        _ => Some(n),
    }
}

/// `ADDRESS:PORT`, `[IPv6]:PORT`, or a bare address (port 53).
fn parse_upstream(text: &str) -> Result<SocketAddr, &'static str> {
    let addr = text
        .parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(
            |_| "is not an address; write e.g. `10.96.0.10`, `10.96.0.10:53` or `[fd00::a]:53`",
        )?;
    if addr.ip().is_unspecified() {
        return Err("is the unspecified address; name the cluster DNS server");
    }
    if addr.port() == 0 {
        return Err("has port 0");
    }
    Ok(addr)
}
