//! `timeouts:` of the data path.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{defaults, duration};
use crate::compile::Checker;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    #[serde(with = "duration::text")]
    pub connect: Duration,
    /// A TCP connection with no traffic in either direction for this long is closed.
    #[serde(with = "duration::text")]
    pub idle: Duration,
    /// A UDP flow with no datagram for this long is forgotten.
    #[serde(with = "duration::text")]
    pub udp_idle: Duration,
    /// How long SIGTERM waits for connections to finish before closing them.
    #[serde(with = "duration::text")]
    pub drain: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawTimeouts {
    connect: Option<String>,
    idle: Option<String>,
    udp_idle: Option<String>,
    drain: Option<String>,
}

pub(super) fn validate(c: &mut Checker, raw: RawTimeouts) -> Option<Timeouts> {
    let mut timeout = |key: &str, v: Option<String>, default_ms: u64| {
        duration::setting(
            c,
            &format!("/timeouts/{key}"),
            v.as_deref(),
            Duration::from_millis(default_ms),
            false,
        )
    };
    let connect = timeout("connect", raw.connect, defaults::CONNECT_TIMEOUT_MS);
    let idle = timeout("idle", raw.idle, defaults::IDLE_TIMEOUT_MS);
    let udp_idle = timeout("udpIdle", raw.udp_idle, defaults::UDP_IDLE_TIMEOUT_MS);
    let drain = timeout("drain", raw.drain, defaults::DRAIN_TIMEOUT_MS);
    Some(Timeouts {
        connect: connect?,
        idle: idle?,
        udp_idle: udp_idle?,
        drain: drain?,
    })
}
