//! The gateway's own settings: the file given to `chokepoint run --config FILE`.
//!
//! Every key is optional and has a documented default; unknown keys and bad values are all
//! reported at once, each at its `file:line:column`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::compile::{Checker, UnknownFields};
use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::load::typed;
use crate::source::{child, parse_documents};

mod metadata;
mod services;
/// Defaults of the `metadata:` section.
pub use metadata::defaults as metadata_defaults;
pub use metadata::{
    MetadataMode, MetadataSettings, PathPattern, PathSegment, RoleSettings, is_path_byte,
};
pub use services::{ServiceResolve, Services};

/// How pod traffic is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// nftables TPROXY + policy routing; TCP and UDP; keeps the pod's source IP upstream.
    Tproxy,
    /// nftables REDIRECT + SO_ORIGINAL_DST; TCP only (UDP is dropped); for hosts where TPROXY
    /// cannot be used.
    Redirect,
}

/// Allow or deny, for the decisions that no policy makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    Allow,
    Deny,
}

/// Where policies and the inventory come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// YAML/JSON files and directories (`paths`, `inventory`), reloaded on change.
    Files,
    /// The Kubernetes API (watched), as in a DaemonSet.
    Kubernetes,
}

/// Where audit records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    Stdout,
    File,
}

/// The validated settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySettings {
    /// This node's name, written into audit records.
    pub node: String,
    pub listen: Listen,
    pub capture: Capture,
    pub policy: PolicySources,
    pub audit: Audit,
    pub timeouts: Timeouts,
    pub dns: Dns,
    pub fqdn: Fqdn,
    pub metadata: MetadataSettings,
    pub services: Services,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listen {
    /// Port of the transparent TCP listener (on every address).
    pub tcp: u16,
    /// Port of the transparent UDP listener.
    pub udp: u16,
    /// Admin HTTP endpoint (`/healthz`, `/readyz`, `/metrics`, `/config_dump`).
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    pub mode: CaptureMode,
    /// Pod-facing interfaces (nftables `iifname` patterns, `*` allowed at the end).
    pub interfaces: Vec<String>,
    /// Pod address ranges.
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
    /// fwmark that routes captured packets and transparent replies to the local table.
    pub capture_mark: u32,
    /// SO_MARK of the gateway's own upstream sockets: never captured.
    pub gateway_mark: u32,
    /// The mark bits Chokepoint owns; both marks lie inside it, other bits are preserved.
    pub mark_mask: u32,
    /// Routing table holding the `local` default routes.
    pub route_table: u32,
    /// Preference of the `fwmark → routeTable` ip rule.
    pub rule_priority: u32,
    /// Install the rules at start (and take over rules an earlier gateway left).
    pub install: bool,
    /// Remove the rules on SIGTERM/SIGINT (default). `false` keeps them, like a crash does:
    /// pod egress stays failed closed until the next gateway takes over — what a DaemonSet
    /// wants, where SIGTERM means an upgrade or an eviction, not "stop filtering". Remove them
    /// for good with `chokepoint redirect --remove`.
    pub remove_on_shutdown: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySources {
    /// Files, or the Kubernetes API.
    pub source: SourceKind,
    /// With `source: kubernetes`.
    pub kubernetes: Kubernetes,
    /// Policy files and directories (resolved against the settings file's directory).
    pub paths: Vec<PathBuf>,
    /// Inventory files and directories.
    pub inventory: Vec<PathBuf>,
    /// The verdict when no tier decides.
    pub default_action: DefaultAction,
    /// The verdict for a source IP that is no known pod.
    pub unknown_source_action: DefaultAction,
    /// Re-check established connections against a new snapshot (and close the denied ones).
    pub recheck_on_reload: bool,
    /// How often the files are checked for changes (SIGHUP reloads at once).
    #[serde(with = "duration_text")]
    pub reload_interval: Duration,
}

/// How the Kubernetes source connects and rebuilds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kubernetes {
    /// A kubeconfig file; unset: in-cluster (the pod's service account), else `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// How long changes gather before the snapshot is rebuilt.
    #[serde(with = "duration_text")]
    pub debounce: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    pub sink: AuditSink,
    /// With `sink: file`.
    pub path: Option<PathBuf>,
    /// A file is rotated when it would grow past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`).
    pub max_files: u32,
    /// Identical denials inside this window collapse into one record with a count.
    #[serde(with = "duration_text")]
    pub dedupe_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    #[serde(with = "duration_text")]
    pub connect: Duration,
    /// A TCP connection with no traffic in either direction for this long is closed.
    #[serde(with = "duration_text")]
    pub idle: Duration,
    /// A UDP flow with no datagram for this long is forgotten.
    #[serde(with = "duration_text")]
    pub udp_idle: Duration,
    /// How long SIGTERM waits for connections to finish before closing them.
    #[serde(with = "duration_text")]
    pub drain: Duration,
}

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
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Lower clamp of an answer's TTL.
    #[serde(with = "duration_text")]
    pub min_ttl: Duration,
    /// Upper clamp of an answer's TTL.
    #[serde(with = "duration_text")]
    pub max_ttl: Duration,
    /// Extra time after the clamped TTL during which new connections are still allowed.
    /// Existing connections are never cut by expiry.
    #[serde(with = "duration_text")]
    pub grace: Duration,
    /// Most `(namespace, name, IP)` observations kept; when full, the entry closest to expiry
    /// is evicted and counted.
    pub max_entries: usize,
    /// Idle timeout of a pod's TCP connection to the proxy.
    #[serde(with = "duration_text")]
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
    fn default() -> Self {
        use defaults::dns as d;
        Dns {
            enabled: true,
            upstream: None,
            listen_port: d::LISTEN_PORT,
            timeout: d::TIMEOUT,
            min_ttl: d::MIN_TTL,
            max_ttl: d::MAX_TTL,
            grace: d::GRACE,
            max_entries: d::MAX_ENTRIES,
            tcp_idle_timeout: d::TCP_IDLE_TIMEOUT,
            max_in_flight: d::MAX_IN_FLIGHT,
            max_tcp_connections: d::MAX_TCP_CONNECTIONS,
            state_file: None,
        }
    }
}

/// Checks of TCP connections that a `domainNames` rule accepted (`fqdn:`): the TLS SNI or the
/// HTTP Host the pod sends must match the rule and be a name the pod's namespace resolved to
/// the destination IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fqdn {
    /// How long to wait for the first bytes (a ClientHello or a request head) before the
    /// connection counts as one without a name.
    #[serde(with = "duration_text")]
    pub peek_timeout: Duration,
    /// A connection that shows no name within `peekTimeout` (raw TCP, a server-first
    /// protocol, TLS without SNI, or Encrypted Client Hello, whose visible name is only the
    /// outer one): `allow` (the destination IP was still resolved by the pod's namespace for
    /// an allowed name, which is all NPEP-133 asks) or `deny` (audited as `no_name`).
    pub without_name: DefaultAction,
}

impl Default for Fqdn {
    fn default() -> Self {
        Fqdn {
            peek_timeout: defaults::PEEK_TIMEOUT,
            without_name: DefaultAction::Allow,
        }
    }
}

/// Defaults, named so that docs and code agree.
pub mod defaults {
    pub const TCP_PORT: u16 = 15001;
    pub const UDP_PORT: u16 = 15002;
    pub const ADMIN: &str = "127.0.0.1:15000";
    /// The fwmark bits Chokepoint owns. Bits 12 and 13 are used by none of kube-proxy
    /// (0x4000, 0x8000), flannel (0x4000), Cilium (0x0f00 and the upper 16 bits), Calico
    /// (upper 16 bits) or Istio ambient (within 0x0fff).
    pub const MARK_MASK: u32 = 0x3000;
    pub const CAPTURE_MARK: u32 = 0x1000;
    pub const GATEWAY_MARK: u32 = 0x2000;
    pub const ROUTE_TABLE: u32 = 1287;
    /// Preference of the `fwmark → table` ip rule: after `local` (0), before CNI rules.
    pub const RULE_PRIORITY: u32 = 100;
    pub const RELOAD_INTERVAL_MS: u64 = 1000;
    pub const KUBERNETES_DEBOUNCE_MS: u64 = 20;
    pub const AUDIT_MAX_BYTES: u64 = 100 * 1024 * 1024;
    pub const AUDIT_MAX_FILES: u32 = 5;
    pub const DEDUPE_WINDOW_MS: u64 = 1000;
    pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
    pub const IDLE_TIMEOUT_MS: u64 = 3_600_000;
    pub const UDP_IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const DRAIN_TIMEOUT_MS: u64 = 25_000;
    /// How long a connection accepted by a `domainNames` rule may take to show its name.
    pub const PEEK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

    /// The DNS proxy's (`dns:`).
    pub mod dns {
        use std::time::Duration;

        /// Port of the DNS proxy (UDP and TCP).
        pub const LISTEN_PORT: u16 = 15053;
        /// Where the upstream comes from when none is configured.
        pub const RESOLV_CONF: &str = "/etc/resolv.conf";
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
    }
}

// The file as written: every field optional, so that all mistakes can be reported together.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSettings {
    node: Option<String>,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    fqdn: RawFqdn,
    /// Read on its own by [`metadata::read`]: the generic reader leaves `/metadata` alone
    /// (it is an object's metadata in every other document it reads).
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    services: services::RawServices,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawListen {
    tcp: Option<i64>,
    udp: Option<i64>,
    admin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCapture {
    mode: Option<String>,
    interfaces: Option<Vec<String>>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
    capture_mark: Option<i64>,
    gateway_mark: Option<i64>,
    mark_mask: Option<i64>,
    route_table: Option<i64>,
    rule_priority: Option<i64>,
    install: Option<bool>,
    remove_on_shutdown: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    source: Option<String>,
    #[serde(default)]
    kubernetes: RawKubernetes,
    paths: Option<Vec<String>>,
    inventory: Option<Vec<String>>,
    default_action: Option<String>,
    unknown_source_action: Option<String>,
    recheck_on_reload: Option<bool>,
    reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKubernetes {
    kubeconfig: Option<String>,
    debounce: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAudit {
    sink: Option<String>,
    path: Option<String>,
    max_bytes: Option<i64>,
    max_files: Option<i64>,
    dedupe_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimeouts {
    connect: Option<String>,
    idle: Option<String>,
    udp_idle: Option<String>,
    drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDns {
    enabled: Option<bool>,
    upstream: Option<String>,
    listen_port: Option<i64>,
    timeout: Option<String>,
    min_ttl: Option<String>,
    max_ttl: Option<String>,
    grace: Option<String>,
    max_entries: Option<i64>,
    tcp_idle_timeout: Option<String>,
    max_in_flight: Option<i64>,
    max_tcp_connections: Option<i64>,
    state_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFqdn {
    peek_timeout: Option<String>,
    without_name: Option<String>,
}

impl GatewaySettings {
    /// Reads and validates a settings file.
    pub fn load(file: &Path) -> Result<GatewaySettings, Diagnostics> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Diagnostics(vec![Diagnostic {
                severity: Severity::Error,
                file: file.to_owned(),
                line: 0,
                column: 0,
                object: None,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::from_str(file, &text)
    }

    /// Validates settings text as if read from `file` (relative paths resolve against its
    /// directory).
    pub fn from_str(file: &Path, text: &str) -> Result<GatewaySettings, Diagnostics> {
        let located = |line, column, message: String| Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            line,
            column,
            object: None,
            message,
        };
        let docs = parse_documents(text).map_err(|e| {
            Diagnostics(vec![located(
                e.position.line,
                e.position.column,
                format!("not valid YAML: {}", e.message),
            )])
        })?;
        let doc = match docs.as_slice() {
            [] => crate::source::Document::from_value(serde_json::json!({})),
            [one] => one.clone(),
            _ => {
                return Err(Diagnostics(vec![located(
                    0,
                    0,
                    "expected one YAML document".into(),
                )]));
            }
        };
        let (raw, mut c) =
            typed::<RawSettings>("GatewaySettings", &doc.value, UnknownFields::Reject).map_err(
                |(p, m)| {
                    let pos = doc.position(&p);
                    Diagnostics(vec![located(pos.line, pos.column, m)])
                },
            )?;
        let base = file.parent().unwrap_or(Path::new("."));
        let settings = validate(&mut c, raw, base);
        let mut out = Diagnostics::default();
        for f in c.findings {
            let pos = doc.position(&f.pointer);
            out.push(Diagnostic {
                severity: f.severity,
                ..located(pos.line, pos.column, f.message)
            });
        }
        match settings {
            Some(s) if !out.has_errors() => Ok(s),
            _ => Err(out),
        }
    }
}

fn validate(c: &mut Checker, raw: RawSettings, base: &Path) -> Option<GatewaySettings> {
    let node = raw.node.unwrap_or_else(default_node_name);

    let port = |c: &mut Checker, p: &str, v: Option<i64>, default: u16| match v {
        None => Some(default),
        Some(n) => crate::compile::port_number(c, p, n),
    };
    let tcp = port(c, "/listen/tcp", raw.listen.tcp, defaults::TCP_PORT);
    let udp = port(c, "/listen/udp", raw.listen.udp, defaults::UDP_PORT);
    let admin = match raw
        .listen
        .admin
        .as_deref()
        .unwrap_or(defaults::ADMIN)
        .parse::<SocketAddr>()
    {
        Ok(a) => {
            if !a.ip().is_loopback() {
                c.warning("/listen/admin", format!("admin endpoint {a} is not on loopback; it serves /config_dump to anyone who can reach it"));
            }
            Some(a)
        }
        Err(_) => {
            c.error(
                "/listen/admin",
                "expected ADDRESS:PORT, e.g. `127.0.0.1:15000`",
            );
            None
        }
    };

    let mode = match raw.capture.mode.as_deref() {
        None | Some("tproxy") => Some(CaptureMode::Tproxy),
        Some("redirect") => Some(CaptureMode::Redirect),
        Some(other) => {
            c.error(
                "/capture/mode",
                format!("unknown capture mode `{other}`; use tproxy or redirect"),
            );
            None
        }
    };
    let interfaces = raw.capture.interfaces.unwrap_or_default();
    for (i, name) in interfaces.iter().enumerate() {
        let body = name.strip_suffix('*').unwrap_or(name);
        if body.is_empty()
            || body.len() > 15
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            c.error(
                child("/capture/interfaces", i),
                format!(
                    "`{name}` is not an interface name (at most 15 characters, `*` only at the end)"
                ),
            );
        }
    }
    let pod_cidrs: Vec<Option<IpNet>> = raw
        .capture
        .pod_cidrs
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| crate::compile::masked_cidr(c, &child("/capture/podCIDRs", i), s))
        .collect();
    if interfaces.is_empty() && pod_cidrs.is_empty() {
        c.error("/capture", "set `interfaces` (pod-facing interfaces) or `podCIDRs` (pod address ranges), or both: otherwise nothing is captured");
    }
    let mark = |c: &mut Checker, p: &str, v: Option<i64>, default: u32| match v {
        None => Some(default),
        Some(n) => match u32::try_from(n) {
            Ok(m) if m != 0 => Some(m),
            _ => {
                c.error(p, format!("{n} is not a valid mark (1 to 4294967295)"));
                None
            }
        },
    };
    let capture_mark = mark(
        c,
        "/capture/captureMark",
        raw.capture.capture_mark,
        defaults::CAPTURE_MARK,
    );
    let gateway_mark = mark(
        c,
        "/capture/gatewayMark",
        raw.capture.gateway_mark,
        defaults::GATEWAY_MARK,
    );
    let mark_mask = mark(
        c,
        "/capture/markMask",
        raw.capture.mark_mask,
        defaults::MARK_MASK,
    );
    if capture_mark.is_some() && capture_mark == gateway_mark {
        c.error(
            "/capture/gatewayMark",
            "`gatewayMark` must differ from `captureMark`",
        );
    }
    if let Some(mask) = mark_mask {
        for (p, m) in [
            ("/capture/captureMark", capture_mark),
            ("/capture/gatewayMark", gateway_mark),
        ] {
            if let Some(m) = m
                && m & !mask != 0
            {
                c.error(
                    p,
                    format!("mark {m:#x} has bits outside `markMask` {mask:#x}"),
                );
            }
        }
    }
    let rule_priority = match raw.capture.rule_priority {
        None => Some(defaults::RULE_PRIORITY),
        Some(n @ 1..=32765) => Some(n as u32),
        Some(n) => {
            c.error(
                "/capture/rulePriority",
                format!("{n} is out of range; use 1 to 32765 (before the main table's rule)"),
            );
            None
        }
    };
    let route_table = mark(
        c,
        "/capture/routeTable",
        raw.capture.route_table,
        defaults::ROUTE_TABLE,
    );
    if let Some(t) = route_table
        && matches!(t, 253..=255)
    {
        c.error(
            "/capture/routeTable",
            format!("table {t} is a system table (default/main/local); pick another"),
        );
    }

    let source = match raw.policy.source.as_deref() {
        None | Some("files") => Some(SourceKind::Files),
        Some("kubernetes") => Some(SourceKind::Kubernetes),
        Some(other) => {
            c.error(
                "/policy/source",
                format!("unknown policy source `{other}`; use files or kubernetes"),
            );
            None
        }
    };
    let from_files = source != Some(SourceKind::Kubernetes);
    let paths = |c: &mut Checker, p: &str, v: Option<Vec<String>>| -> Vec<PathBuf> {
        let given = v.is_some();
        let v = v.unwrap_or_default();
        if !from_files && given {
            c.error(
                p,
                "files are read with `source: files` only; with `source: kubernetes` policies and the inventory come from the API server",
            );
        } else if from_files && v.is_empty() {
            c.error(
                p,
                format!(
                    "`{}` needs at least one file or directory",
                    p.rsplit('/').next().unwrap_or(p)
                ),
            );
        }
        v.iter().map(|s| base.join(s)).collect()
    };
    let policy_paths = paths(c, "/policy/paths", raw.policy.paths);
    let inventory = paths(c, "/policy/inventory", raw.policy.inventory);
    let action = action_setting;
    let default_action = action(
        c,
        "/policy/defaultAction",
        raw.policy.default_action.as_deref(),
        DefaultAction::Allow,
    );
    let unknown_source_action = action(
        c,
        "/policy/unknownSourceAction",
        raw.policy.unknown_source_action.as_deref(),
        DefaultAction::Deny,
    );
    let duration = |c: &mut Checker, p: &str, v: Option<&str>, default_ms: u64| {
        duration_setting(c, p, v, Duration::from_millis(default_ms), false)
    };
    let reload_interval = duration(
        c,
        "/policy/reloadInterval",
        raw.policy.reload_interval.as_deref(),
        defaults::RELOAD_INTERVAL_MS,
    );
    let debounce = duration(
        c,
        "/policy/kubernetes/debounce",
        raw.policy.kubernetes.debounce.as_deref(),
        defaults::KUBERNETES_DEBOUNCE_MS,
    );

    let sink = match raw.audit.sink.as_deref() {
        None | Some("stdout") => Some(AuditSink::Stdout),
        Some("file") => Some(AuditSink::File),
        Some(other) => {
            c.error(
                "/audit/sink",
                format!("unknown audit sink `{other}`; use stdout or file"),
            );
            None
        }
    };
    let audit_path = raw.audit.path.map(|p| base.join(p));
    if sink == Some(AuditSink::File) && audit_path.is_none() {
        c.error("/audit", "`path` is required with `sink: file`");
    }
    let max_bytes = match raw.audit.max_bytes {
        None => Some(defaults::AUDIT_MAX_BYTES),
        Some(n) if n >= 4096 => Some(n as u64),
        Some(n) => {
            c.error(
                "/audit/maxBytes",
                format!("{n} is too small; use at least 4096"),
            );
            None
        }
    };
    let max_files = match raw.audit.max_files {
        None => Some(defaults::AUDIT_MAX_FILES),
        Some(n @ 1..=1000) => Some(n as u32),
        Some(n) => {
            c.error(
                "/audit/maxFiles",
                format!("{n} is out of range; keep 1 to 1000 rotated files"),
            );
            None
        }
    };
    let dedupe_window = duration(
        c,
        "/audit/dedupeWindow",
        raw.audit.dedupe_window.as_deref(),
        defaults::DEDUPE_WINDOW_MS,
    );

    let dns = validate_dns(c, raw.dns, &[tcp, udp], base);
    let fqdn = validate_fqdn(c, raw.fqdn);

    let t = &raw.timeouts;
    let connect = duration(
        c,
        "/timeouts/connect",
        t.connect.as_deref(),
        defaults::CONNECT_TIMEOUT_MS,
    );
    let idle = duration(
        c,
        "/timeouts/idle",
        t.idle.as_deref(),
        defaults::IDLE_TIMEOUT_MS,
    );
    let udp_idle = duration(
        c,
        "/timeouts/udpIdle",
        t.udp_idle.as_deref(),
        defaults::UDP_IDLE_TIMEOUT_MS,
    );
    let drain = duration(
        c,
        "/timeouts/drain",
        t.drain.as_deref(),
        defaults::DRAIN_TIMEOUT_MS,
    );
    let metadata = metadata::read(c, raw.metadata.as_ref());
    let services = services::validate(c, raw.services, mode);

    Some(GatewaySettings {
        node,
        listen: Listen {
            tcp: tcp?,
            udp: udp?,
            admin: admin?,
        },
        capture: Capture {
            mode: mode?,
            interfaces,
            pod_cidrs: pod_cidrs.into_iter().collect::<Option<Vec<_>>>()?,
            capture_mark: capture_mark?,
            gateway_mark: gateway_mark?,
            mark_mask: mark_mask?,
            route_table: route_table?,
            rule_priority: rule_priority?,
            install: raw.capture.install.unwrap_or(true),
            remove_on_shutdown: raw.capture.remove_on_shutdown.unwrap_or(true),
        },
        policy: PolicySources {
            source: source?,
            kubernetes: Kubernetes {
                kubeconfig: raw.policy.kubernetes.kubeconfig.map(|p| base.join(p)),
                debounce: debounce?,
            },
            paths: policy_paths,
            inventory,
            default_action: default_action?,
            unknown_source_action: unknown_source_action?,
            recheck_on_reload: raw.policy.recheck_on_reload.unwrap_or(false),
            reload_interval: reload_interval?,
        },
        audit: Audit {
            sink: sink?,
            path: audit_path,
            max_bytes: max_bytes?,
            max_files: max_files?,
            dedupe_window: dedupe_window?,
        },
        timeouts: Timeouts {
            connect: connect?,
            idle: idle?,
            udp_idle: udp_idle?,
            drain: drain?,
        },
        dns: dns?,
        fqdn: fqdn?,
        metadata: metadata?,
        services: services?,
    })
}

/// `allow` or `deny`.
fn action_setting(
    c: &mut Checker,
    p: &str,
    v: Option<&str>,
    default: DefaultAction,
) -> Option<DefaultAction> {
    match v {
        None => Some(default),
        Some("allow") => Some(DefaultAction::Allow),
        Some("deny") => Some(DefaultAction::Deny),
        Some(other) => {
            c.error(p, format!("unknown action `{other}`; use allow or deny"));
            None
        }
    }
}

/// A duration written as text; zero only where `zero_ok`.
fn duration_setting(
    c: &mut Checker,
    p: &str,
    v: Option<&str>,
    default: Duration,
    zero_ok: bool,
) -> Option<Duration> {
    match v {
        None => Some(default),
        Some(s) => match parse_duration(s) {
            Some(d) if zero_ok || !d.is_zero() => Some(d),
            Some(_) => {
                c.error(p, format!("`{s}` must be longer than zero"));
                None
            }
            None => {
                c.error(
                    p,
                    format!("`{s}` is not a duration; write e.g. `500ms`, `5s`, `2m` or `1h`"),
                );
                None
            }
        },
    }
}

/// A count from 1 (or `min`) up.
fn count_setting(
    c: &mut Checker,
    p: &str,
    v: Option<i64>,
    default: usize,
    min: usize,
    why: &str,
) -> Option<usize> {
    match v {
        None => Some(default),
        Some(n) => match usize::try_from(n) {
            Ok(n) if n >= min => Some(n),
            _ => {
                c.error(p, format!("{n} is too small; use at least {min}{why}"));
                None
            }
        },
    }
}

fn validate_dns(
    c: &mut Checker,
    raw: RawDns,
    ports_in_use: &[Option<u16>],
    base: &Path,
) -> Option<Dns> {
    use defaults::dns as d;
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
    let listen_port = match raw.listen_port {
        None => Some(d::LISTEN_PORT),
        Some(n) => crate::compile::port_number(c, "/dns/listenPort", n),
    };
    if let Some(port) = listen_port
        && ports_in_use.contains(&Some(port))
    {
        c.error(
            "/dns/listenPort",
            format!("port {port} is already the TCP or UDP listener's; pick another"),
        );
    }
    let timeout = duration_setting(c, "/dns/timeout", raw.timeout.as_deref(), d::TIMEOUT, false);
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
    let min_ttl = duration_setting(c, "/dns/minTtl", raw.min_ttl.as_deref(), d::MIN_TTL, true);
    let max_ttl = duration_setting(c, "/dns/maxTtl", raw.max_ttl.as_deref(), d::MAX_TTL, false);
    if let (Some(lo), Some(hi)) = (min_ttl, max_ttl)
        && lo > hi
    {
        c.error(
            "/dns/minTtl",
            format!("minTtl ({lo:?}) is longer than maxTtl ({hi:?})"),
        );
    }
    let grace = duration_setting(c, "/dns/grace", raw.grace.as_deref(), d::GRACE, true);
    let max_entries = count_setting(
        c,
        "/dns/maxEntries",
        raw.max_entries,
        d::MAX_ENTRIES,
        d::MIN_ENTRIES,
        " (NPEP-133 asks for at least 100 IPs per name)",
    );
    let tcp_idle_timeout = duration_setting(
        c,
        "/dns/tcpIdleTimeout",
        raw.tcp_idle_timeout.as_deref(),
        d::TCP_IDLE_TIMEOUT,
        false,
    );
    let max_in_flight = count_setting(
        c,
        "/dns/maxInFlight",
        raw.max_in_flight,
        d::MAX_IN_FLIGHT,
        1,
        "",
    );
    let max_tcp_connections = count_setting(
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
        enabled: raw.enabled.unwrap_or(true),
        upstream: upstream?,
        listen_port: listen_port?,
        timeout: timeout?,
        min_ttl: min_ttl?,
        max_ttl: max_ttl?,
        grace: grace?,
        max_entries: max_entries?,
        tcp_idle_timeout: tcp_idle_timeout?,
        max_in_flight: max_in_flight?,
        max_tcp_connections: max_tcp_connections?,
        state_file: state_file?,
    })
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

fn validate_fqdn(c: &mut Checker, raw: RawFqdn) -> Option<Fqdn> {
    let peek_timeout = duration_setting(
        c,
        "/fqdn/peekTimeout",
        raw.peek_timeout.as_deref(),
        defaults::PEEK_TIMEOUT,
        false,
    );
    let without_name = action_setting(
        c,
        "/fqdn/withoutName",
        raw.without_name.as_deref(),
        DefaultAction::Allow,
    );
    Some(Fqdn {
        peek_timeout: peek_timeout?,
        without_name: without_name?,
    })
}

/// The node name: `$NODE_NAME` (the downward API in a DaemonSet), else the host name.
fn default_node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `250ms`, `5s`, `2m`, `1h`, or combinations like `1m30s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|ch: char| !ch.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|ch: char| ch.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(unit)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

/// Test helper: `err` has an error at `line` whose message contains `needle`.
#[cfg(test)]
pub(crate) fn assert_error_at(err: &Diagnostics, line: u64, needle: &str) {
    assert!(
        err.errors()
            .any(|d| d.line == line && d.message.contains(needle)),
        "no `{needle}` at line {line}:\n{err}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<GatewaySettings, Diagnostics> {
        GatewaySettings::from_str(Path::new("/etc/chokepoint/gateway.yaml"), text)
    }

    #[test]
    fn defaults_fill_everything_but_sources() {
        let s = load("node: n1\ncapture:\n  interfaces: [\"ckp*\"]\npolicy:\n  paths: [policies]\n  inventory: [inv.yaml]\n").unwrap();
        assert_eq!(s.node, "n1");
        assert_eq!(s.listen.tcp, defaults::TCP_PORT);
        assert_eq!(s.listen.admin.to_string(), defaults::ADMIN);
        assert_eq!(s.capture.mode, CaptureMode::Tproxy);
        assert_eq!(
            s.policy.paths,
            vec![PathBuf::from("/etc/chokepoint/policies")]
        );
        assert_eq!(s.policy.unknown_source_action, DefaultAction::Deny);
        assert_eq!(s.timeouts.connect, Duration::from_secs(5));
        assert_eq!(s.audit.sink, AuditSink::Stdout);
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_its_line() {
        let text = "\
listen:
  tcp: 70000
  admn: 127.0.0.1:1
capture:
  mode: ebpf
  podCIDRs: [10.0.0.1/8]
policy:
  paths: [p]
  inventory: [i]
  defaultAction: maybe
timeouts:
  idle: forever
";
        let err = load(text).unwrap_err();
        let lines: Vec<(u64, &str)> = err.errors().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(lines.len(), 6, "{err}");
        assert!(lines.iter().any(|(l, m)| *l == 2 && m.contains("70000")));
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 3 && m.contains("unknown field `admn`"))
        );
        assert!(lines.iter().any(|(l, m)| *l == 5 && m.contains("ebpf")));
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 6 && m.contains("10.0.0.0/8"))
        );
        assert!(lines.iter().any(|(l, m)| *l == 10 && m.contains("maybe")));
        assert!(lines.iter().any(|(l, m)| *l == 12 && m.contains("forever")));
    }

    #[test]
    fn capture_needs_interfaces_or_cidrs_and_file_sink_needs_a_path() {
        let err = load("policy: {paths: [p], inventory: [i]}\naudit: {sink: file}\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`interfaces`"), "{text}");
        assert!(text.contains("`path` is required"), "{text}");
    }

    #[test]
    fn kubernetes_source_needs_no_files_and_refuses_them() {
        let s = load("node: n1\ncapture: {interfaces: [\"veth*\"]}\npolicy:\n  source: kubernetes\n  kubernetes: {debounce: 50ms}\n").unwrap();
        assert_eq!(s.policy.source, SourceKind::Kubernetes);
        assert_eq!(s.policy.kubernetes.debounce, Duration::from_millis(50));
        assert_eq!(s.policy.kubernetes.kubeconfig, None);
        assert!(s.policy.paths.is_empty());
        let err = load("capture: {interfaces: [\"veth*\"]}\npolicy:\n  source: kubernetes\n  paths: [p]\n  kubernetes: {debounce: soon}\n").unwrap_err();
        let lines: Vec<u64> = err.errors().map(|d| d.line).collect();
        assert_eq!(lines, vec![4, 5], "{err}");
        let err = load("capture: {interfaces: [\"veth*\"]}\npolicy: {source: etcd}\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown policy source `etcd`"),
            "{err}"
        );
    }

    #[test]
    fn dns_and_fqdn_defaults() {
        let s = load("capture: {interfaces: [\"ckp*\"]}\npolicy: {paths: [p], inventory: [i]}\n")
            .unwrap();
        assert_eq!(s.dns, Dns::default());
        assert!(s.dns.enabled);
        assert_eq!(s.dns.upstream, None);
        assert_eq!(s.dns.listen_port, 15053);
        assert_eq!(s.dns.timeout, Duration::from_secs(2));
        assert_eq!(s.fqdn.peek_timeout, Duration::from_millis(500));
        assert_eq!(s.fqdn.without_name, DefaultAction::Allow);
    }

    #[test]
    fn dns_values_are_read_and_every_dns_mistake_is_located() {
        let ok = load(
            "capture: {interfaces: [\"ckp*\"]}\npolicy: {paths: [p], inventory: [i]}\n\
             dns:\n  upstream: 192.0.2.53\n  grace: 0s\n  minTtl: 0s\n  maxEntries: 100\n  stateFile: state/names.json\n\
             fqdn: {withoutName: deny, peekTimeout: 2s}\n",
        )
        .unwrap();
        assert_eq!(ok.dns.upstream, Some("192.0.2.53:53".parse().unwrap()));
        assert_eq!(ok.dns.grace, Duration::ZERO);
        assert_eq!(ok.dns.min_ttl, Duration::ZERO);
        assert_eq!(ok.fqdn.without_name, DefaultAction::Deny);
        assert_eq!(
            ok.dns.state_file,
            Some(PathBuf::from("/etc/chokepoint/state/names.json"))
        );
        assert_eq!(ok.fqdn.peek_timeout, Duration::from_secs(2));

        let text = "\
capture: {interfaces: [\"ckp*\"]}
policy: {paths: [p], inventory: [i]}
dns:
  upstream: 0.0.0.0:53
  listenPort: 15001
  timeout: 5m
  minTtl: 2h
  maxTtl: 1h
  maxEntries: 10
  tcpIdleTimeout: 0s
  maxInFlight: 0
  maxTcpConnections: -1
  upstreams: x
fqdn:
  withoutName: maybe
  peekTimeout: soon
";
        let err = load(text).unwrap_err();
        let lines: Vec<(u64, &str)> = err.errors().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(lines.len(), 11, "{err}");
        for (line, needle) in [
            (4, "unspecified"),
            (5, "already the TCP or UDP listener"),
            (6, "pods would hang"),
            (7, "longer than maxTtl"),
            (9, "NPEP-133"),
            (10, "longer than zero"),
            (11, "at least 1"),
            (12, "at least 1"),
            (13, "unknown field `upstreams`"),
            (15, "maybe"),
            (16, "soon"),
        ] {
            assert_error_at(&err, line, needle);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "5", "s", "5 s", "1d", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
