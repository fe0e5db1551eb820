//! [`DnsSettings`]: what the DNS proxy and its cache need. The gateway fills it from the
//! `dns:` section of its settings, which `chokepoint-config` validates (every error located)
//! and where every default is written; this crate does not depend on that one, so it has no
//! defaults of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Where the upstream comes from when none is configured.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The proxy's upstream, timeouts and limits, and the cache's TTL clamps and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The canonical name server every query is forwarded to; `None`: the first `nameserver`
    /// of [`RESOLV_CONF`].
    pub upstream: Option<SocketAddr>,
    /// How long a query may take end to end, TCP fallback included, before SERVFAIL.
    pub timeout: Duration,
    /// Lower clamp of an answer's TTL.
    pub min_ttl: Duration,
    /// Upper clamp of an answer's TTL.
    pub max_ttl: Duration,
    /// Time after the clamped TTL during which an observation still counts.
    pub grace: Duration,
    /// Most `(namespace, name, IP)` observations kept.
    pub max_entries: usize,
    /// Most observations one namespace holds (at most `max_entries`).
    pub max_entries_per_namespace: usize,
    /// Idle timeout of a pod's TCP connection to the proxy.
    pub tcp_idle_timeout: Duration,
    /// Queries forwarded at once.
    pub max_in_flight: usize,
    /// Pod TCP connections to the proxy at once.
    pub max_tcp_connections: usize,
}

/// The upstream to forward to: `settings.upstream` when set, else the first `nameserver` of
/// `/etc/resolv.conf`.
pub fn resolve_upstream(settings: &DnsSettings) -> Result<SocketAddr, Error> {
    match settings.upstream {
        Some(addr) => Ok(addr),
        None => crate::resolv::upstream_from_file(Path::new(RESOLV_CONF)),
    }
}

/// Settings for this crate's tests (the gateway's defaults; the gateway always passes the
/// values of its own settings).
#[cfg(test)]
impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            upstream: None,
            timeout: Duration::from_secs(2),
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
            grace: Duration::from_secs(30),
            max_entries: 100_000,
            max_entries_per_namespace: 25_000,
            tcp_idle_timeout: Duration::from_secs(10),
            max_in_flight: 4096,
            max_tcp_connections: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_upstream_wins_over_resolv_conf() {
        let s = DnsSettings {
            upstream: Some("192.0.2.53:53".parse().unwrap()),
            ..DnsSettings::default()
        };
        assert_eq!(
            resolve_upstream(&s).unwrap(),
            "192.0.2.53:53".parse().unwrap()
        );
    }
}
