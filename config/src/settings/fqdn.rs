//! `fqdn:`: the checks of TCP connections that a `domainNames` rule accepted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::fqdn as d;
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
    /// outer one): `allow` (the destination IP was still resolved by the pod's namespace for
    /// an allowed name, which is all NPEP-133 asks) or `deny` (audited as `no_name`).
    pub without_name: DefaultAction,
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
    Some(Fqdn {
        peek_timeout: peek_timeout?,
        without_name: without_name?,
    })
}
