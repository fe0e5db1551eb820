//! Every default of the settings file, named so that docs and code agree. This is the one
//! place each is written: the section validators fill what a file leaves out from here, the
//! `Default` of a section is the validation of an empty one, and the leaf crates
//! (`chokepoint-redirect`, `chokepoint-dns`) get the values from the gateway.

use std::time::Duration;

use super::{AuditSink, CaptureMode, DefaultAction, SourceKind};

pub const TCP_PORT: u16 = 15001;
pub const UDP_PORT: u16 = 15002;
/// 4 MiB: a burst of about 10,000 small datagrams waits for the reader.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;
pub const ADMIN: &str = "127.0.0.1:15000";

pub const CAPTURE_MODE: CaptureMode = CaptureMode::Tproxy;
/// Allowed flows that need no look at their bytes stay in the kernel (TPROXY mode; REDIRECT
/// mode has only the proxy).
pub const L4_PATH: super::capture::L4Path = super::capture::L4Path::Kernel;
/// The fast path's first NFQUEUE number and how many queues (one reader each).
pub const QUEUE: u16 = 4200;
pub const QUEUES: u16 = 2;
/// Fast-path flow state in the ct mark: 12 bits, 4,093 generations, clear of the capture's
/// marks and of kube-proxy's 0xc000.
pub const FLOW_MARK_MASK: u32 = 0x0fff_0000;
/// The two ct mark bits noting which ends of a fast-path TCP connection closed: the two above
/// the flow state.
pub const CLOSE_MARK_MASK: u32 = 0x3000_0000;
/// The fwmark bits Chokepoint owns. Bits 12 and 13 are used by none of kube-proxy
/// (0x4000, 0x8000), flannel (0x4000), Cilium (0x0f00 and the upper 16 bits), Calico
/// (upper 16 bits) or Istio ambient (within 0x0fff).
pub const MARK_MASK: u32 = 0x3000;
pub const CAPTURE_MARK: u32 = 0x1000;
pub const GATEWAY_MARK: u32 = 0x2000;
/// Chokepoint owns the whole table: removing the rules flushes it.
pub const ROUTE_TABLE: u32 = 1287;
/// Preference of the `fwmark → table` ip rule: after `local` (0), before CNI rules (the AWS
/// VPC CNI's start at 512).
pub const RULE_PRIORITY: u32 = 100;
pub const INSTALL: bool = true;
pub const REMOVE_ON_SHUTDOWN: bool = true;

pub const POLICY_SOURCE: SourceKind = SourceKind::Files;
pub const DEFAULT_ACTION: DefaultAction = DefaultAction::Allow;
pub const UNKNOWN_SOURCE_ACTION: DefaultAction = DefaultAction::Deny;
pub const RECHECK_ON_RELOAD: bool = false;
pub const RELOAD_INTERVAL_MS: u64 = 1000;
pub const KUBERNETES_DEBOUNCE_MS: u64 = 20;
/// Events about policy objects, per gateway: well below the kubelet's own Event limits
/// (`eventRecordQPS` 50, `eventBurst` 100), since every node's gateway reports every change.
pub const EVENTS_PER_SECOND: u32 = 5;
pub const EVENTS_BURST: u32 = 50;
/// Events waiting for the rate limit (one per object at most); further ones are dropped.
pub const EVENTS_QUEUE: usize = 1000;
/// The Lease electing the writer of DeveloperNetworkPolicy conditions; its namespace is the
/// gateway's (`$POD_NAMESPACE`), this one without it.
pub const STATUS_WRITE: bool = true;
pub const LEASE_NAMESPACE: &str = "chokepoint";
pub const LEASE_NAME: &str = "chokepoint-status";
/// As client-go's leader election: a dead writer is replaced within about this long.
pub const LEASE_DURATION_MS: u64 = 15_000;
/// Status writes per second of the elected gateway (after a burst): a backlog (the first
/// writer of a cluster with many DeveloperNetworkPolicies) is paced, never dropped.
pub const STATUS_WRITES_PER_SECOND: u32 = 20;
pub const STATUS_WRITES_BURST: u32 = 100;

pub const AUDIT_SINK: AuditSink = AuditSink::Stdout;
pub const AUDIT_MAX_BYTES: u64 = 100 * 1024 * 1024;
pub const AUDIT_MAX_FILES: u32 = 5;
pub const DEDUPE_WINDOW_MS: u64 = 1000;

pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const IDLE_TIMEOUT_MS: u64 = 3_600_000;
pub const UDP_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DRAIN_TIMEOUT_MS: u64 = 25_000;

/// The `flows:` section's.
pub mod flows {
    use super::Duration;

    /// One record per key and minute: a busy pod's thousands of connections to one
    /// destination become one line a minute.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Keys held between two writes (each a few hundred bytes of names and labels).
    pub const MAX_KEYS: usize = 10_000;
}

/// The `fqdn:` section's.
pub mod fqdn {
    use super::Duration;
    use crate::settings::fqdn::WithoutName;

    /// How long a connection accepted by a `domainNames` rule may take to show its name.
    pub const PEEK_TIMEOUT: Duration = Duration::from_millis(500);
    /// Deny without a name on [`HTTP_PORTS`], allow elsewhere.
    pub const WITHOUT_NAME: WithoutName = WithoutName::ByPort;
    /// HTTP and HTTPS (and their common alternates): clients always show a name there.
    pub const HTTP_PORTS: [u16; 4] = [80, 443, 8080, 8443];
}

/// The `limits:` section's. Each proxied TCP connection and UDP flow holds two file
/// descriptors; the gateway raises its open-file limit to the hard limit at start (a
/// container runtime's is usually 1,048,576), so the totals fit with room to spare.
pub mod limits {
    /// Far above what one well-behaved pod holds, low enough that a few pods cannot take
    /// the node's share.
    pub const TCP_CONNECTIONS_PER_POD: usize = 4096;
    pub const TCP_CONNECTIONS: usize = 100_000;
    pub const UDP_FLOWS_PER_POD: usize = 1024;
    pub const UDP_FLOWS: usize = 50_000;
}

/// The DNS proxy's (`dns:`).
pub mod dns {
    use super::Duration;

    pub const ENABLED: bool = true;
    /// Port of the DNS proxy (UDP and TCP).
    pub const LISTEN_PORT: u16 = 15053;
    /// A query that has no trusted answer after this long is answered SERVFAIL.
    pub const TIMEOUT: Duration = Duration::from_secs(2);
    /// The longest `timeout` accepted: pods must never hang on DNS.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
    /// Answers with a shorter TTL are remembered this long.
    pub const MIN_TTL: Duration = Duration::from_secs(5);
    /// Answers with a longer TTL are remembered only this long.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);
    /// Added to every (clamped) TTL: new connections are still allowed this long after expiry.
    pub const GRACE: Duration = Duration::from_secs(30);
    /// Observations `(namespace, name, IP)` kept at most (about 200 bytes each).
    pub const MAX_ENTRIES: usize = 100_000;
    /// The fewest cache entries a configuration may ask for: NPEP-133 wants at least 100
    /// IPs per name.
    pub const MIN_ENTRIES: usize = 100;
    /// A pod's TCP connection to the proxy with no query in flight is closed after this long.
    pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Queries being forwarded at once.
    pub const MAX_IN_FLIGHT: usize = 4096;
    /// Pod TCP connections to the proxy at once.
    pub const MAX_TCP_CONNECTIONS: usize = 1024;
    /// Most entries one namespace holds (clamped to `maxEntries`): a quarter of the default
    /// cache, so that one tenant cannot evict the others' names.
    pub const MAX_ENTRIES_PER_NAMESPACE: usize = 25_000;
}

/// The `metadata:` section's.
pub mod metadata {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The metadata server's addresses (EC2; GCE and Azure use the same IPv4 one).
    pub const ADDRESS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    pub const ADDRESS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    /// Whether [`PATHS`] are allowed (`defaultPaths`).
    pub const DEFAULT_PATHS: bool = true;
    /// Allowed for every pod unless `defaultPaths: false`: the IMDSv2 token, the credentials
    /// of the pod's role, and where the node runs (what SDKs ask to pick a region).
    pub const PATHS: [&str; 7] = [
        "PUT /*/api/token",
        "GET,HEAD /*/meta-data/iam/security-credentials",
        "GET,HEAD /*/meta-data/iam/security-credentials/*",
        "GET,HEAD /*/meta-data/placement/region",
        "GET,HEAD /*/meta-data/placement/availability-zone",
        "GET,HEAD /*/meta-data/placement/availability-zone-id",
        "GET,HEAD /*/meta-data/services/partition",
    ];
    pub const NAMESPACE_RESTRICTION: bool = true;
    pub const MAX_HEADER_BYTES: usize = 8 * 1024;
    pub const MAX_HEADERS: usize = 32;
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    pub const UPSTREAM_TIMEOUT_MS: u64 = 5_000;
}

/// `services.resolve`: the node's translation where it ran, else the gateway picks a backend.
pub const SERVICES_RESOLVE: super::ServiceResolve = super::ServiceResolve::Auto;
