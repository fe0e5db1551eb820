//! DNS interception for Chokepoint.
//!
//! Pod DNS (UDP and TCP port 53, to whatever server the pod addressed) is diverted by the
//! capture rules to this crate's proxy. The proxy forwards each query to one configured
//! canonical upstream (the cluster DNS; by default the first `nameserver` of
//! `/etc/resolv.conf`), trusts only the answer to the query it sent itself, learns from that
//! answer which IPs the queried name (and every CNAME on the way) resolves to, records
//! *(source namespace, name) → IPs* in the observation [`Cache`] and only **then** releases the
//! answer to the pod, so the pod's first connection never races the cache. The gateway
//! matches `domainNames` rules through [`Cache::names_for`] and [`Cache::resolved`].
//!
//! - [`settings`]: [`DnsSettings`] (the gateway fills it from its `dns:` section) and the upstream;
//! - [`resolv`]: the resolv.conf parser for the default upstream;
//! - [`answer`]: what one response teaches ([`Observation`]): the CNAME chain inside the
//!   response to the final A/AAAA records, with the minimum TTL;
//! - [`cache`]: the observation cache (TTL clamped to [min, max] plus grace, per namespace,
//!   bounded, sharded for cheap concurrent reads);
//! - [`proxy`]: the forwarding proxy over UDP and TCP ([`DnsProxy`], with the gateway's
//!   [`Policy`]), with truncation fallback to TCP, EDNS passed through byte for byte,
//!   FORMERR for malformed queries, and SERVFAIL within a timeout when the upstream fails;
//! - [`state`]: the cache saved across restarts (a file, loaded at start);
//! - [`metrics`]: Prometheus metrics with bounded labels;
//! - [`wire`]: small wire-format helpers.
//!
//! DNS itself is never filtered by `domainNames` rules (NPEP-133): any name can be resolved;
//! only connections to the resolved IPs are gated, by the gateway.
//!
//! Typical wiring in the gateway:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::net::{IpAddr, SocketAddr};
//! # struct P;
//! # impl chokepoint_dns::Policy for P {
//! #     fn source_namespace(&self, _: IpAddr) -> Option<Arc<str>> { None }
//! #     fn allow(&self, _: SocketAddr, _: SocketAddr, _: bool) -> bool { true }
//! #     fn names_apply(&self, _: IpAddr) -> bool { false }
//! # }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use chokepoint_dns::{Cache, CacheLimits, DnsProxy, DnsSettings, Metrics, UdpMode};
//! let settings = DnsSettings {
//!     upstream: None, // the first nameserver of /etc/resolv.conf
//!     timeout: Duration::from_secs(2),
//!     min_ttl: Duration::from_secs(5),
//!     max_ttl: Duration::from_secs(3600),
//!     grace: Duration::from_secs(30),
//!     max_entries: 100_000,
//!     max_entries_per_namespace: 25_000,
//!     tcp_idle_timeout: Duration::from_secs(10),
//!     max_in_flight: 4096,
//!     max_tcp_connections: 1024,
//! };
//! let metrics = Metrics::default();
//! let cache = Arc::new(Cache::new(CacheLimits::from_settings(&settings), &metrics));
//! let proxy = Arc::new(
//!     DnsProxy::new(&settings, chokepoint_dns::resolve_upstream(&settings)?, cache.clone(), Arc::new(P), metrics)
//!         .with_mark(Some(0x2000)),
//! );
//! let addr = SocketAddr::from(([0, 0, 0, 0], 15053));
//! let udp = chokepoint_dns::transparent_udp_socket(addr)?;
//! let tcp = chokepoint_dns::transparent_tcp_listener(addr)?;
//! tokio::spawn(proxy.clone().serve_udp(udp, UdpMode::Transparent, std::future::pending()));
//! tokio::spawn(proxy.clone().serve_tcp(tcp, std::future::pending()));
//! tokio::spawn(cache.clone().purge_periodically(std::time::Duration::from_secs(10)));
//! # Ok(()) }
//! ```

pub mod answer;
pub mod cache;
pub mod metrics;
pub mod proxy;
pub mod resolv;
pub mod settings;
pub mod state;
pub mod wire;

use std::path::PathBuf;

pub use answer::{Observation, normalize_text, observe, observe_bytes};
pub use cache::{Cache, CacheLimits, Entry};
pub use metrics::{Metrics, QueryResult, Transport};
pub use proxy::{
    DnsProxy, Policy, UdpMode, UpstreamError, transparent_tcp_listener, transparent_udp_socket,
    transparent_udp_sockets,
};
pub use settings::{DnsSettings, resolve_upstream};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes that are not a DNS message.
    #[error("malformed DNS message: {0}")]
    Malformed(#[source] hickory_proto::serialize::binary::DecodeError),
    /// The resolv.conf could not be read.
    #[error("reading {}: {source}", path.display())]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The resolv.conf has no usable `nameserver` line.
    #[error("{}: no usable nameserver line; set the DNS upstream explicitly", path.display())]
    NoNameserver { path: PathBuf },
    /// The saved cache could not be read or written.
    #[error("DNS cache file {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The saved cache is not a file this build wrote.
    #[error("DNS cache file {}: {message}", path.display())]
    StateFormat { path: PathBuf, message: String },
    /// An exchange with the upstream failed.
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// A socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
