//! The capture spec tests start from: the unit tests through `spec.rs`, the integration tests
//! through `tests/specs`. It holds the gateway's default ports, marks, table and priority (the
//! golden files are rendered with them). Test-only: the gateway always passes the values of
//! its own settings.

use super::{CaptureMode, CaptureSpec, IpFamilies};

pub const TCP_PORT: u16 = 15001;
pub const UDP_PORT: u16 = 15002;
pub const DNS_PORT: u16 = 15053;
pub const CAPTURE_MARK: u32 = 0x1000;
pub const GATEWAY_MARK: u32 = 0x2000;
pub const MARK_MASK: u32 = 0x3000;
pub const ROUTE_TABLE: u32 = 1287;
pub const RULE_PRIORITY: u32 = 100;

/// TPROXY, dual stack, DNS captured like other traffic, and no pod interfaces or CIDRs: fill
/// in at least one before rendering.
pub fn base() -> CaptureSpec {
    CaptureSpec {
        mode: CaptureMode::Tproxy,
        families: IpFamilies::Dual,
        pod_interfaces: Vec::new(),
        pod_cidrs: Vec::new(),
        tcp_port: TCP_PORT,
        udp_port: UDP_PORT,
        dns_port: None,
        capture_mark: CAPTURE_MARK,
        gateway_mark: GATEWAY_MARK,
        mark_mask: MARK_MASK,
        route_table: ROUTE_TABLE,
        rule_priority: RULE_PRIORITY,
        fast_path: None,
    }
}

/// The fast path with the gateway's defaults: two queues from 100, state in 0x0fff0000,
/// the ends' close bits in 0x30000000.
pub fn fast_path() -> super::FastPath {
    super::FastPath {
        first_queue: 100,
        queues: 2,
        flow_mask: 0x0fff_0000,
        close_mask: 0x3000_0000,
        generation: 1,
    }
}
