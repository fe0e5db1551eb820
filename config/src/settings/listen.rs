//! `listen:`: the ports of the transparent listeners and the admin endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{defaults, field};
use crate::compile::Checker;

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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawListen {
    tcp: Option<i64>,
    udp: Option<i64>,
    admin: Option<String>,
}

/// The section, and its TCP and UDP ports on their own (other sections must not reuse them,
/// and are checked even when the admin address is wrong).
pub(super) fn validate(c: &mut Checker, raw: RawListen) -> (Option<Listen>, [Option<u16>; 2]) {
    let tcp = field::port(c, "/listen/tcp", raw.tcp, defaults::TCP_PORT);
    let udp = field::port(c, "/listen/udp", raw.udp, defaults::UDP_PORT);
    let admin = match raw
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
    let listen = match (tcp, udp, admin) {
        (Some(tcp), Some(udp), Some(admin)) => Some(Listen { tcp, udp, admin }),
        _ => None,
    };
    (listen, [tcp, udp])
}
