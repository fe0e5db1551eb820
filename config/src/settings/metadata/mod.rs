//! The `metadata:` section of the gateway settings: how connections to the cloud metadata
//! server (169.254.169.254) are handled once policy allows them (docs/metadata.md).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::metadata as defaults;
use super::duration;
use super::field::{self, Choice};
use crate::compile::Checker;
use crate::source::child;

mod path;

pub use path::{PathPattern, PathSegment, is_path_byte};

/// What the gateway does with an allowed connection to a metadata address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataMode {
    /// Forward allowed requests to the kube2iam-like `endpoint`.
    Rewrite,
    /// Forward allowed requests to the real metadata service (the original destination).
    Passthrough,
    /// Answer every request `403`.
    Deny,
}

impl Choice for MetadataMode {
    const WHAT: &'static str = "metadata mode";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("rewrite", MetadataMode::Rewrite),
        ("passthrough", MetadataMode::Passthrough),
        ("deny", MetadataMode::Deny),
    ];
}

/// Role checks of the `rewrite` mode (kube2iam's semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleSettings {
    /// A pod's `iam.amazonaws.com/role` must match one of its namespace's
    /// `iam.amazonaws.com/allowed-roles` globs (kube2iam `--namespace-restrictions`).
    pub namespace_restriction: bool,
    /// Prefixed to role names that are not ARNs, in annotations and patterns alike (kube2iam
    /// `--base-role-arn`), e.g. `arn:aws:iam::123456789012:role/`.
    pub base_arn: Option<String>,
}

/// The validated `metadata:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataSettings {
    pub mode: MetadataMode,
    /// The kube2iam-like endpoint of `rewrite` mode.
    pub endpoint: Option<SocketAddr>,
    /// Every address handled as the metadata server (the defaults and the configured ones),
    /// IPv4-mapped IPv6 forms written as IPv4.
    pub addresses: Vec<IpAddr>,
    /// Allowed requests for every pod: the defaults (unless `defaultPaths: false`) and
    /// `allowPaths`.
    pub paths: Vec<PathPattern>,
    /// Further allowed requests for the pods of one namespace.
    pub namespace_paths: BTreeMap<String, Vec<PathPattern>>,
    pub roles: RoleSettings,
    /// Most bytes of a request head (request line and headers); larger ones get `431`.
    pub max_header_bytes: usize,
    /// Most header lines per request; more get `431`.
    pub max_headers: usize,
    /// A request head must arrive within this (also bounds idle keep-alive connections).
    #[serde(with = "duration::text")]
    pub header_read_timeout: Duration,
    /// Connecting upstream and receiving the response head must take no longer.
    #[serde(with = "duration::text")]
    pub upstream_timeout: Duration,
}

impl Default for MetadataSettings {
    /// What a settings file without a `metadata:` section gets.
    fn default() -> Self {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        validate(&mut c, RawMetadata::default()).expect("the defaults are valid")
    }
}

impl MetadataSettings {
    /// Whether `mode` was chosen because no `endpoint` is set (logged at start-up).
    pub fn denies_for_want_of_an_endpoint(&self) -> bool {
        self.mode == MetadataMode::Deny && self.endpoint.is_none()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    mode: Option<String>,
    endpoint: Option<String>,
    addresses: Option<Vec<String>>,
    default_paths: Option<bool>,
    allow_paths: Option<Vec<String>>,
    namespaces: Option<BTreeMap<String, RawNamespace>>,
    #[serde(default)]
    roles: RawRoles,
    max_header_bytes: Option<i64>,
    max_headers: Option<i64>,
    #[serde(default)]
    timeouts: RawTimeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNamespace {
    allow_paths: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoles {
    namespace_restriction: Option<bool>,
    base_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimeouts {
    header_read: Option<String>,
    upstream: Option<String>,
}

const P: &str = "/metadata";

/// Reads and validates the section (`None`: absent), reporting into the settings' checker.
pub(super) fn read(c: &mut Checker, value: Option<&serde_json::Value>) -> Option<MetadataSettings> {
    let Some(value) = value else {
        return validate(c, RawMetadata::default());
    };
    match crate::load::typed::<RawMetadata>("GatewaySettings", value, crate::UnknownFields::Reject)
    {
        Ok((raw, section)) => {
            for mut f in section.findings {
                f.pointer = format!("{P}{}", f.pointer);
                c.findings.push(f);
            }
            validate(c, raw)
        }
        Err((pointer, message)) => {
            c.error(format!("{P}{pointer}"), message);
            None
        }
    }
}

fn validate(c: &mut Checker, raw: RawMetadata) -> Option<MetadataSettings> {
    let endpoint = raw
        .endpoint
        .as_deref()
        .map(|e| parse_endpoint(e).map_err(|m| c.error(format!("{P}/endpoint"), m)));
    let endpoint = match endpoint {
        None => Ok(None),
        Some(Ok(e)) => Ok(Some(e)),
        Some(Err(())) => Err(()),
    };
    // Without an endpoint there is nothing to rewrite to.
    let default_mode = match endpoint {
        Ok(None) => MetadataMode::Deny,
        _ => MetadataMode::Rewrite,
    };
    let mode = field::choice(c, &format!("{P}/mode"), raw.mode.as_deref(), default_mode);
    if mode == Some(MetadataMode::Rewrite) && matches!(endpoint, Ok(None)) {
        c.error(
            format!("{P}/mode"),
            "`mode: rewrite` needs `endpoint`, the kube2iam-like service to forward to, e.g. `endpoint: http://10.0.0.1:8181`",
        );
    }

    let mut addresses = vec![
        IpAddr::V4(defaults::ADDRESS_V4),
        IpAddr::V6(defaults::ADDRESS_V6),
    ];
    let mut addresses_ok = true;
    for (i, a) in raw.addresses.iter().flatten().enumerate() {
        match a.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                if !addresses.contains(&ip) {
                    addresses.push(ip);
                }
            }
            Err(_) => {
                addresses_ok = false;
                c.error(
                    child(&format!("{P}/addresses"), i),
                    format!("`{a}` is not an IP address"),
                );
            }
        }
    }

    let mut paths_ok = true;
    let mut patterns = |c: &mut Checker, pointer: &str, list: &[String]| -> Vec<PathPattern> {
        list.iter()
            .enumerate()
            .filter_map(|(i, text)| match PathPattern::parse(text) {
                Ok(p) => Some(p),
                Err(m) => {
                    paths_ok = false;
                    c.error(child(pointer, i), m);
                    None
                }
            })
            .collect()
    };
    let mut paths: Vec<PathPattern> = Vec::new();
    if raw.default_paths.unwrap_or(defaults::DEFAULT_PATHS) {
        paths.extend(
            defaults::PATHS
                .iter()
                .map(|d| PathPattern::parse(d).expect("the default paths are valid")),
        );
    }
    paths.extend(patterns(
        c,
        &format!("{P}/allowPaths"),
        raw.allow_paths.as_deref().unwrap_or_default(),
    ));
    let mut namespace_paths = BTreeMap::new();
    for (ns, entry) in raw.namespaces.iter().flatten() {
        let pointer = format!("{}/allowPaths", child(&format!("{P}/namespaces"), ns));
        let list = patterns(
            c,
            &pointer,
            entry.allow_paths.as_deref().unwrap_or_default(),
        );
        namespace_paths.insert(ns.clone(), list);
    }

    let base_arn = match raw.roles.base_arn {
        Some(arn) if !(arn.starts_with("arn:") && arn.contains(":role/") && arn.ends_with('/')) => {
            c.error(
                format!("{P}/roles/baseArn"),
                format!(
                    "`{arn}` is not a role ARN prefix; write it as kube2iam's --base-role-arn, e.g. `arn:aws:iam::123456789012:role/`"
                ),
            );
            None
        }
        other => Some(other),
    };

    let bounded = |c: &mut Checker, key: &str, v: Option<i64>, default: usize, min, max| {
        field::bounded(
            c,
            &format!("{P}/{key}"),
            v,
            default as i64,
            min..=max,
            &format!("use {min} to {max}"),
        )
        .map(|n| n as usize)
    };
    let max_header_bytes = bounded(
        c,
        "maxHeaderBytes",
        raw.max_header_bytes,
        defaults::MAX_HEADER_BYTES,
        1024,
        1024 * 1024,
    );
    let max_headers = bounded(
        c,
        "maxHeaders",
        raw.max_headers,
        defaults::MAX_HEADERS,
        4,
        1000,
    );
    let timeout = |c: &mut Checker, key: &str, v: Option<&str>, default_ms: u64| {
        duration::setting(
            c,
            &format!("{P}/timeouts/{key}"),
            v,
            Duration::from_millis(default_ms),
            false,
        )
    };
    let header_read_timeout = timeout(
        c,
        "headerRead",
        raw.timeouts.header_read.as_deref(),
        defaults::HEADER_READ_TIMEOUT_MS,
    );
    let upstream_timeout = timeout(
        c,
        "upstream",
        raw.timeouts.upstream.as_deref(),
        defaults::UPSTREAM_TIMEOUT_MS,
    );

    if !(addresses_ok && paths_ok) {
        return None;
    }
    Some(MetadataSettings {
        mode: mode?,
        endpoint: endpoint.ok()?,
        addresses,
        paths,
        namespace_paths,
        roles: RoleSettings {
            namespace_restriction: raw
                .roles
                .namespace_restriction
                .unwrap_or(defaults::NAMESPACE_RESTRICTION),
            base_arn: base_arn?,
        },
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        header_read_timeout: header_read_timeout?,
        upstream_timeout: upstream_timeout?,
    })
}

/// `http://ADDRESS[:PORT][/]` with an IP address (the gateway connects from the pod's own
/// address and resolves no names on the data path).
fn parse_endpoint(text: &str) -> Result<SocketAddr, String> {
    let addr = parse_endpoint_address(text)?;
    if addr.ip().is_loopback() {
        return Err(format!(
            "`{text}` is a loopback address, which the gateway cannot reach from the pod's own address (the kernel refuses it); run the endpoint on the node's address, e.g. `http://<node IP>:{}`",
            addr.port()
        ));
    }
    Ok(addr)
}

fn parse_endpoint_address(text: &str) -> Result<SocketAddr, String> {
    let hint = "expected `http://ADDRESS:PORT` with an IP address, e.g. `http://10.0.0.1:8181` (names are not resolved)";
    let Some(rest) = text.strip_prefix("http://") else {
        if text.starts_with("https://") {
            return Err(
                "`https` is not supported: the endpoint is spoken to in plain HTTP, as pods speak to the metadata server"
                    .into(),
            );
        }
        return Err(format!("`{text}`: {hint}"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err(format!(
            "`{text}` has a path; the endpoint serves the metadata paths at its root"
        ));
    }
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err(format!("`{text}`: port 0 is not a port")),
            _ => Ok(SocketAddr::new(addr.ip().to_canonical(), addr.port())),
        };
    }
    let bare = authority
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'));
    if let Some(ip) = bare.and_then(|a| a.parse::<Ipv6Addr>().ok()) {
        return Ok(SocketAddr::new(IpAddr::V6(ip).to_canonical(), 80));
    }
    if let Ok(ip) = authority.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::new(IpAddr::V4(ip), 80));
    }
    Err(format!("`{text}`: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = |s: &str| parse_endpoint(s).unwrap().to_string();
        assert_eq!(ok("http://10.0.0.1:8181"), "10.0.0.1:8181");
        assert_eq!(ok("http://10.0.0.1:8181/"), "10.0.0.1:8181");
        assert_eq!(ok("http://10.0.0.1"), "10.0.0.1:80");
        assert_eq!(ok("http://[fd00::1]:8181"), "[fd00::1]:8181");
        assert_eq!(ok("http://[fd00::1]"), "[fd00::1]:80");
        assert_eq!(ok("http://[::ffff:10.0.0.1]:81"), "10.0.0.1:81");
        for bad in [
            "10.0.0.1:8181",
            "https://10.0.0.1",
            "http://kube2iam:8181",
            "http://10.0.0.1:8181/creds",
            "http://10.0.0.1:0",
            "http://",
            "http://127.0.0.1:8181",
            "http://[::1]:8181",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    fn load(text: &str) -> Result<super::super::GatewaySettings, crate::Diagnostics> {
        super::super::GatewaySettings::from_str(
            std::path::Path::new("/etc/chokepoint/gateway.yaml"),
            &format!(
                "capture: {{interfaces: [\"ckp*\"]}}\npolicy: {{paths: [p], inventory: [i]}}\n{text}"
            ),
        )
    }

    #[test]
    fn a_full_section_is_read() {
        let s = load(
            "metadata:
  endpoint: http://192.0.2.50:8181
  addresses: [169.254.170.2, '::ffff:169.254.169.254']
  allowPaths: [GET /latest/meta-data/instance-id]
  namespaces:
    ci: {allowPaths: [/latest/user-data]}
  roles: {namespaceRestriction: false, baseArn: 'arn:aws:iam::123456789012:role/'}
  maxHeaderBytes: 4096
  maxHeaders: 16
  timeouts: {headerRead: 2s, upstream: 1s}
",
        )
        .unwrap();
        let m = &s.metadata;
        assert_eq!(
            m.mode,
            MetadataMode::Rewrite,
            "an endpoint makes rewrite the default"
        );
        assert_eq!(m.endpoint, Some("192.0.2.50:8181".parse().unwrap()));
        assert_eq!(
            m.addresses.len(),
            3,
            "the mapped form is the default address"
        );
        assert_eq!(m.paths.len(), defaults::PATHS.len() + 1);
        assert_eq!(
            m.namespace_paths["ci"][0].to_string(),
            "GET,HEAD /latest/user-data"
        );
        assert!(!m.roles.namespace_restriction);
        assert_eq!(m.max_header_bytes, 4096);
        assert_eq!(m.header_read_timeout, Duration::from_secs(2));
        let dumped = serde_json::to_value(&s).unwrap();
        assert_eq!(dumped["metadata"]["mode"], "rewrite");
        assert_eq!(dumped["metadata"]["paths"][0], "PUT /*/api/token");
    }

    #[test]
    fn every_mistake_in_the_section_is_reported_at_once_with_its_line() {
        let err = load(
            "metadata:
  mode: rewrite
  addresses: [metadata.local]
  allowPaths: [latest/user-data, GET /ok]
  namespaces:
    ci: {allowPaths: ['GET /a/%2e%2e']}
  roles: {baseArn: admin}
  maxHeaders: 1
  timeouts: {upstream: soon}
  bogus: 1
",
        )
        .unwrap_err();
        let lines: Vec<(u64, &str)> = err.errors().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(lines.len(), 8, "{err}");
        for (line, needle) in [
            (12, "unknown field `bogus`"),
            (4, "needs `endpoint`"),
            (5, "metadata.local"),
            (6, "must start with `/`"),
            (8, "no `%`"),
            (9, "base-role-arn"),
            (10, "out of range"),
            (11, "soon"),
        ] {
            crate::settings::assert_error_at(&err, line, needle);
        }
    }

    #[test]
    fn without_an_endpoint_the_default_mode_is_deny() {
        let m = MetadataSettings::default();
        assert_eq!(m.mode, MetadataMode::Deny);
        assert!(m.denies_for_want_of_an_endpoint());
        assert_eq!(m.paths.len(), defaults::PATHS.len());
        assert_eq!(
            m.addresses,
            [
                IpAddr::V4(defaults::ADDRESS_V4),
                IpAddr::V6(defaults::ADDRESS_V6)
            ]
        );
        assert!(m.roles.namespace_restriction);
    }
}
