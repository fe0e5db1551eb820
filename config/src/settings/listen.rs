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
    /// Receive buffer of the UDP listener, bytes (`SO_RCVBUFFORCE`; the kernel doubles it
    /// for its bookkeeping). Datagrams that still overflow it are counted, never silent.
    pub udp_receive_buffer: usize,
    /// Admin HTTP endpoint (`/healthz`, `/readyz`, `/metrics`, `/config_dump`).
    pub admin: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawListen {
    tcp: Option<i64>,
    udp: Option<i64>,
    udp_receive_buffer: Option<i64>,
    admin: Option<String>,
}

/// The section, and its TCP and UDP ports on their own (other sections must not reuse them,
/// and are checked even when the admin address is wrong).
pub(super) fn validate(c: &mut Checker, raw: RawListen) -> (Option<Listen>, [Option<u16>; 2]) {
    let tcp = field::port(c, "/listen/tcp", raw.tcp, defaults::TCP_PORT);
    let udp = field::port(c, "/listen/udp", raw.udp, defaults::UDP_PORT);
    let udp_receive_buffer = field::count(
        c,
        "/listen/udpReceiveBuffer",
        raw.udp_receive_buffer,
        defaults::UDP_RECEIVE_BUFFER,
        4096,
        " bytes (a smaller buffer overflows on every burst)",
    );
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
    let listen = match (tcp, udp, udp_receive_buffer, admin) {
        (Some(tcp), Some(udp), Some(udp_receive_buffer), Some(admin)) => Some(Listen {
            tcp,
            udp,
            udp_receive_buffer,
            admin,
        }),
        _ => None,
    };
    (listen, [tcp, udp])
}
