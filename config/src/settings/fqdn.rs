//! `fqdn:`: the checks of TCP connections that a `domainNames` rule accepted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::fqdn as d;
use super::field::Choice;
use super::{DefaultAction, duration, field};
use crate::compile::Checker;

/// Checks of TCP connections that a `domainNames` rule accepted (`fqdn:`): the TLS SNI or the
/// HTTP Host the pod sends must match the rule and be a name the pod's namespace resolved to
/// the destination IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fqdn {
    /// How long to wait for the first bytes (a ClientHello or a request head) before the
    /// connection counts as one without a name.
    #[serde(with = "duration::text")]
    pub peek_timeout: Duration,
    /// A connection that shows no name within `peekTimeout` (raw TCP, a server-first
    /// protocol, TLS without SNI, or Encrypted Client Hello, whose visible name is only the
    /// outer one): see [`WithoutName`].
    pub without_name: WithoutName,
    /// The ports on which `withoutName: byPort` refuses a connection without a name: clients
    /// of HTTP and TLS always send one there.
    pub http_ports: Vec<u16>,
}

impl Fqdn {
    /// What a connection to `port` that shows no name gets.
    pub fn without_name_on(&self, port: u16) -> DefaultAction {
        match self.without_name {
            WithoutName::Allow => DefaultAction::Allow,
            WithoutName::Deny => DefaultAction::Deny,
            WithoutName::ByPort if self.http_ports.contains(&port) => DefaultAction::Deny,
            WithoutName::ByPort => DefaultAction::Allow,
        }
    }
}

/// `fqdn.withoutName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WithoutName {
    /// Deny on `httpPorts` (an HTTP or TLS client always shows a name, so none there means
    /// ECH, garbage or h2c hiding where it goes), allow elsewhere (server-first protocols
    /// such as MySQL, SMTP or SSH show none).
    ByPort,
    /// Allow on every port: the destination IP was still resolved by the pod's namespace for
    /// an allowed name, which is all NPEP-133 asks.
    Allow,
    /// Deny on every port (audited as `no_name`).
    Deny,
}

impl Choice for WithoutName {
    const WHAT: &'static str = "withoutName";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("byPort", WithoutName::ByPort),
        ("allow", WithoutName::Allow),
        ("deny", WithoutName::Deny),
    ];
}

impl Default for Fqdn {
    /// What a settings file without an `fqdn:` section gets.
    fn default() -> Self {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        validate(&mut c, RawFqdn::default()).expect("the defaults are valid")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawFqdn {
    peek_timeout: Option<String>,
    without_name: Option<String>,
    http_ports: Option<Vec<i64>>,
}

pub(super) fn validate(c: &mut Checker, raw: RawFqdn) -> Option<Fqdn> {
    let peek_timeout = duration::setting(
        c,
        "/fqdn/peekTimeout",
        raw.peek_timeout.as_deref(),
        d::PEEK_TIMEOUT,
        false,
    );
    let without_name = field::choice(
        c,
        "/fqdn/withoutName",
        raw.without_name.as_deref(),
        d::WITHOUT_NAME,
    );
    let http_ports = match raw.http_ports {
        None => Some(d::HTTP_PORTS.to_vec()),
        Some(ports) => {
            let checked: Vec<Option<u16>> = ports
                .iter()
                .enumerate()
                .map(|(i, &n)| field::port(c, &format!("/fqdn/httpPorts/{i}"), Some(n), 0))
                .collect();
            checked.into_iter().collect()
        }
    };
    Some(Fqdn {
        peek_timeout: peek_timeout?,
        without_name: without_name?,
        http_ports: http_ports?,
    })
}
