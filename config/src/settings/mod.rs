//! The gateway's own settings: the file given to `chokepoint run --config FILE`.
//!
//! Every key is optional and has a documented default, written once in [`defaults`]; unknown
//! keys and bad values are all reported at once, each at its `file:line:column`.
//!
//! One module per section, each with its validated type, its raw shape as written (every
//! field optional, so that all mistakes can be reported together) and its validator:
//! `listen`, `capture`, `policy`, `audit`, `flows`, `dns`, `fqdn`, `timeouts`, `metadata`, `services`
//! and `limits`. Values
//! shared by sections are checked in `field` (names from a fixed set, counts, ranges, ports)
//! and `duration`.
//!
//! One type per concept: the capture mode is `chokepoint_redirect`'s [`CaptureMode`] (see
//! `capture`), and [`DefaultAction`] is also what the CLI's `--default-action` parses.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::compile::{Checker, UnknownFields};
use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::load::typed;
use crate::source::parse_documents;

mod audit;
mod capture;
pub mod defaults;
mod dns;
mod duration;
mod field;
mod flows;
mod fqdn;
mod limits;
mod listen;
mod metadata;
mod policy;
mod services;
mod timeouts;

pub use audit::{Audit, AuditSink};
pub use capture::{Capture, CaptureMode, L4Path};
/// Defaults of the `metadata:` section.
pub use defaults::metadata as metadata_defaults;
pub use dns::Dns;
pub use duration::parse_duration;
pub use field::Choice;
pub use flows::{Flows, NamespaceFilter};
pub use fqdn::{Fqdn, WithoutName};
pub use limits::Limits;
pub use listen::Listen;
pub use metadata::{
    MetadataMode, MetadataSettings, PathPattern, PathSegment, RoleSettings, is_path_byte,
};
pub use policy::{DefaultAction, EventLimits, Kubernetes, PolicySources, SourceKind, StatusLease};
pub use services::{ServiceResolve, Services};
pub use timeouts::Timeouts;

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
    /// The log of allowed flows (off by default).
    pub flows: Flows,
    pub timeouts: Timeouts,
    pub dns: Dns,
    pub fqdn: Fqdn,
    pub metadata: MetadataSettings,
    pub services: Services,
    pub limits: Limits,
}

// The file as written: every section optional, so that all mistakes can be reported together.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSettings {
    node: Option<String>,
    #[serde(default)]
    listen: listen::RawListen,
    #[serde(default)]
    capture: capture::RawCapture,
    #[serde(default)]
    policy: policy::RawPolicy,
    #[serde(default)]
    audit: audit::RawAudit,
    #[serde(default)]
    flows: flows::RawFlows,
    #[serde(default)]
    timeouts: timeouts::RawTimeouts,
    #[serde(default)]
    dns: dns::RawDns,
    #[serde(default)]
    fqdn: fqdn::RawFqdn,
    /// Read on its own by [`metadata::read`]: the generic reader leaves `/metadata` alone
    /// (it is an object's metadata in every other document it reads).
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    services: services::RawServices,
    #[serde(default)]
    limits: limits::RawLimits,
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

/// Every section, in file order, each reporting into `c`.
fn validate(c: &mut Checker, raw: RawSettings, base: &Path) -> Option<GatewaySettings> {
    let node = raw.node.unwrap_or_else(default_node_name);
    let (listen, listener_ports) = listen::validate(c, raw.listen);
    let capture = capture::validate(c, raw.capture);
    let policy = policy::validate(c, raw.policy, base);
    let audit = audit::validate(c, raw.audit, base);
    let flows = flows::validate(c, raw.flows, base);
    let dns = dns::validate(c, raw.dns, &listener_ports, base);
    let fqdn = fqdn::validate(c, raw.fqdn);
    let timeouts = timeouts::validate(c, raw.timeouts);
    let metadata = metadata::read(c, raw.metadata.as_ref());
    let mode = capture.as_ref().map(|c| c.mode);
    let services = services::validate(c, raw.services, mode);
    let limits = limits::validate(c, raw.limits);
    Some(GatewaySettings {
        node,
        listen: listen?,
        capture: capture?,
        policy: policy?,
        audit: audit?,
        flows: flows?,
        timeouts: timeouts?,
        dns: dns?,
        fqdn: fqdn?,
        metadata: metadata?,
        services: services?,
        limits: limits?,
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
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn load(text: &str) -> Result<GatewaySettings, Diagnostics> {
        GatewaySettings::from_str(Path::new("/etc/chokepoint/gateway.yaml"), text)
    }

    #[test]
    fn a_zero_dedupe_window_turns_de_duplication_off() {
        let base = "node: n1\ncapture:\n  interfaces: [\"ckp*\"]\npolicy:\n  paths: [policies]\n  inventory: [inv.yaml]\n";
        let s = load(&format!("{base}audit: {{dedupeWindow: 0s}}\n")).unwrap();
        assert_eq!(s.audit.dedupe_window, Duration::ZERO);
        let err = load(&format!("{base}audit: {{dedupeWindow: soon}}\n")).unwrap_err();
        assert!(
            err.to_string().contains(":7:9: `soon` is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn pod_ranges_of_one_family_without_interfaces_are_refused_with_their_line() {
        let text = "node: n1\ncapture:\n  podCIDRs: [10.244.1.0/24]\npolicy:\n  paths: [p]\n  inventory: [i]\n";
        let err = load(text).unwrap_err();
        let found: Vec<(u64, &str)> = err.errors().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(found.len(), 1, "{err}");
        assert_eq!(found[0].0, 3, "{err}");
        assert!(
            found[0].1.contains("IPv6 from pods would not be captured"),
            "{err}"
        );
        load("node: n1\ncapture:\n  podCIDRs: [10.244.1.0/24, 'fd00::/64']\npolicy:\n  paths: [p]\n  inventory: [i]\n").unwrap();
        load("node: n1\ncapture:\n  interfaces: [cali*]\n  podCIDRs: [10.244.1.0/24]\npolicy:\n  paths: [p]\n  inventory: [i]\n").unwrap();
        let s = load("node: n1\nlisten:\n  udpReceiveBuffer: 65536\ncapture:\n  interfaces: [cali*]\npolicy:\n  paths: [p]\n  inventory: [i]\n").unwrap();
        assert_eq!(s.listen.udp_receive_buffer, 65_536);
        let err = load("node: n1\nlisten:\n  udpReceiveBuffer: 100\ncapture:\n  interfaces: [cali*]\npolicy:\n  paths: [p]\n  inventory: [i]\n").unwrap_err();
        assert!(err.to_string().contains("gateway.yaml:3:"), "{err}");
    }

    #[test]
    fn the_fast_path_is_the_default_with_tproxy_and_refused_with_redirect() {
        use crate::settings::capture::L4Path;
        let with = |capture: &str| {
            load(&format!(
                "node: n1\ncapture:\n  interfaces: [cali*]\n{capture}policy:\n  paths: [p]\n  inventory: [i]\n"
            ))
        };
        assert_eq!(with("").unwrap().capture.l4, L4Path::Kernel);
        assert_eq!(with("  l4: proxy\n").unwrap().capture.l4, L4Path::Proxy);
        assert_eq!(
            with("  mode: redirect\n").unwrap().capture.l4,
            L4Path::Proxy
        );
        let err = with("  mode: redirect\n  l4: kernel\n").unwrap_err();
        assert!(
            err.to_string().contains("gateway.yaml:5:")
                && err.to_string().contains("needs `mode: tproxy`"),
            "{err}"
        );
    }

    #[test]
    fn the_close_mark_bits_are_two_outside_the_other_marks() {
        let with = |capture: &str| {
            load(&format!(
                "node: n1\ncapture:\n  interfaces: [cali*]\n{capture}policy:\n  paths: [p]\n  inventory: [i]\n"
            ))
        };
        assert_eq!(
            with("").unwrap().capture.close_mark_mask,
            defaults::CLOSE_MARK_MASK
        );
        assert_eq!(
            with("  closeMarkMask: 0xc0000000\n")
                .unwrap()
                .capture
                .close_mark_mask,
            0xc000_0000
        );
        for (value, says) in [
            ("0x10000000", "exactly 2 bits"),
            ("0x00003000", "overlaps `markMask`"),
            ("0x00030000", "overlaps `flowMarkMask`"),
        ] {
            let err = with(&format!("  closeMarkMask: {value}\n")).unwrap_err();
            assert!(
                err.to_string().contains("gateway.yaml:4:") && err.to_string().contains(says),
                "{value}: {err}"
            );
        }
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
    fn kubernetes_events_and_status_lease() {
        let base = "node: n1\ncapture: {interfaces: [\"veth*\"]}\npolicy:\n  source: kubernetes\n  kubernetes:\n";
        let s = load(&format!("{base}    events: {{perSecond: 2, burst: 7}}\n    status: {{leaseNamespace: gw, leaseName: writer, leaseDuration: 3s}}\n")).unwrap();
        let k = &s.policy.kubernetes;
        assert_eq!((k.events.per_second, k.events.burst), (2, 7));
        assert_eq!(
            (
                k.status.lease_namespace.as_str(),
                k.status.lease_name.as_str()
            ),
            ("gw", "writer")
        );
        assert_eq!(k.status.lease_duration, Duration::from_secs(3));
        assert!(k.status.write);
        let err = load(&format!("{base}    events: {{perSecond: 0}}\n    status: {{leaseName: Writer_1, leaseDuration: 500ms}}\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("0 is out of range; use 1 to 10000"), "{text}");
        assert!(text.contains("`Writer_1` is no Kubernetes name"), "{text}");
        assert!(text.contains("use at least 1s"), "{text}");
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
        assert_eq!(s.fqdn.without_name, WithoutName::ByPort);
        assert_eq!(s.dns.max_entries_per_namespace, 25_000);
        assert_eq!(s.limits, Limits::default());
    }

    #[test]
    fn connections_without_a_name_are_denied_on_http_ports_unless_one_value_is_written() {
        let base = "capture: {interfaces: [\"ckp*\"]}\npolicy: {paths: [p], inventory: [i]}\n";
        let by_port = load(base).unwrap().fqdn;
        for (port, want) in [
            (80, DefaultAction::Deny),
            (443, DefaultAction::Deny),
            (8080, DefaultAction::Deny),
            (8443, DefaultAction::Deny),
            (3306, DefaultAction::Allow),
            (22, DefaultAction::Allow),
        ] {
            assert_eq!(by_port.without_name_on(port), want, "{port}");
        }
        let allow = load(&format!("{base}fqdn: {{withoutName: allow}}\n"))
            .unwrap()
            .fqdn;
        let deny = load(&format!("{base}fqdn: {{withoutName: deny}}\n"))
            .unwrap()
            .fqdn;
        for port in [443, 3306] {
            assert_eq!(allow.without_name_on(port), DefaultAction::Allow);
            assert_eq!(deny.without_name_on(port), DefaultAction::Deny);
        }
        let own = load(&format!(
            "{base}fqdn:\n  withoutName: byPort\n  httpPorts: [9443]\n"
        ))
        .unwrap()
        .fqdn;
        assert_eq!(own.without_name_on(9443), DefaultAction::Deny);
        assert_eq!(own.without_name_on(443), DefaultAction::Allow);
        let err = load(&format!("{base}fqdn:\n  httpPorts: [443, 0, 70000]\n")).unwrap_err();
        let lines: Vec<u64> = err.errors().map(|d| d.line).collect();
        assert_eq!(lines, [4, 4], "{err}");
        assert!(err.to_string().contains("port 0 is out of range"), "{err}");
        let err = load(&format!("{base}fqdn: {{withoutName: sometimes}}\n")).unwrap_err();
        assert!(
            err.to_string()
                .contains(":3:8: unknown withoutName `sometimes`; use byPort, allow or deny"),
            "{err}"
        );
    }

    #[test]
    fn a_namespace_quota_is_at_least_one_and_at_most_the_cache() {
        let base = "capture: {interfaces: [\"ckp*\"]}\npolicy: {paths: [p], inventory: [i]}\n";
        let small = load(&format!("{base}dns: {{maxEntries: 1000}}\n")).unwrap();
        assert_eq!(small.dns.max_entries_per_namespace, 1000);
        let set = load(&format!(
            "{base}dns: {{maxEntries: 1000, maxEntriesPerNamespace: 10}}\n"
        ))
        .unwrap();
        assert_eq!(set.dns.max_entries_per_namespace, 10);
        let err = load(&format!("{base}dns:\n  maxEntriesPerNamespace: 0\n")).unwrap_err();
        assert_error_at(&err, 4, "0 is too small; use at least 1");
        let err = load(&format!(
            "{base}dns:\n  maxEntries: 1000\n  maxEntriesPerNamespace: 2000\n"
        ))
        .unwrap_err();
        assert_error_at(
            &err,
            5,
            "2000 is more than maxEntries (1000): one namespace could fill the cache",
        );
        assert!(err.to_string().contains("or raise maxEntries"), "{err}");
    }

    #[test]
    fn limits_are_at_least_one_and_per_pod_caps_fit_their_totals() {
        let base = "capture: {interfaces: [\"ckp*\"]}\npolicy: {paths: [p], inventory: [i]}\n";
        let s = load(&format!(
            "{base}limits: {{tcpConnectionsPerPod: 2, tcpConnections: 10, udpFlowsPerPod: 3, udpFlows: 3}}\n"
        ))
        .unwrap();
        assert_eq!(
            s.limits,
            Limits {
                tcp_connections_per_pod: 2,
                tcp_connections: 10,
                udp_flows_per_pod: 3,
                udp_flows: 3,
            }
        );
        let d = Limits::default();
        assert!(d.tcp_connections_per_pod <= d.tcp_connections);
        assert!(d.udp_flows_per_pod <= d.udp_flows);
        let err = load(&format!(
            "{base}limits:\n  tcpConnectionsPerPod: 0\n  udpFlowsPerPod: 20\n  udpFlows: 10\n  tcpconnections: 5\n"
        ))
        .unwrap_err();
        let lines: Vec<u64> = err.errors().map(|d| d.line).collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert_error_at(&err, 4, "0 is too small; use at least 1");
        assert_error_at(
            &err,
            5,
            "20 is more than udpFlows (10); lower udpFlowsPerPod or raise udpFlows",
        );
        assert_error_at(&err, 7, "unknown field `tcpconnections`");
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
        assert_eq!(ok.fqdn.without_name, WithoutName::Deny);
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
}
