//! `limits:`: what the data path holds at once, per source pod and in total, so that pods
//! cannot exhaust the gateway's file descriptors or memory.

use serde::{Deserialize, Serialize};

use super::defaults::limits as d;
use super::field;
use crate::compile::Checker;

/// Caps on concurrent proxied TCP connections and UDP flows (`limits:`). A connection or flow
/// beyond a cap is refused (TCP: reset; UDP: its datagrams dropped) and audited as
/// `connection_limit` or `flow_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// TCP connections one source address holds at once (from accept to close).
    pub tcp_connections_per_pod: usize,
    /// TCP connections at once, all sources together.
    pub tcp_connections: usize,
    /// Allowed UDP flows (sessions) one source address holds at once.
    pub udp_flows_per_pod: usize,
    /// Allowed UDP flows at once, all sources together.
    pub udp_flows: usize,
}

impl Default for Limits {
    /// What a settings file without a `limits:` section gets.
    fn default() -> Self {
        let mut c = Checker::new(Vec::new(), crate::UnknownFields::Reject);
        validate(&mut c, RawLimits::default()).expect("the defaults are valid")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawLimits {
    tcp_connections_per_pod: Option<i64>,
    tcp_connections: Option<i64>,
    udp_flows_per_pod: Option<i64>,
    udp_flows: Option<i64>,
}

pub(super) fn validate(c: &mut Checker, raw: RawLimits) -> Option<Limits> {
    let (tcp_connections_per_pod, tcp_connections) = pair(
        c,
        (
            "tcpConnectionsPerPod",
            raw.tcp_connections_per_pod,
            d::TCP_CONNECTIONS_PER_POD,
        ),
        ("tcpConnections", raw.tcp_connections, d::TCP_CONNECTIONS),
    );
    let (udp_flows_per_pod, udp_flows) = pair(
        c,
        (
            "udpFlowsPerPod",
            raw.udp_flows_per_pod,
            d::UDP_FLOWS_PER_POD,
        ),
        ("udpFlows", raw.udp_flows, d::UDP_FLOWS),
    );
    Some(Limits {
        tcp_connections_per_pod: tcp_connections_per_pod?,
        tcp_connections: tcp_connections?,
        udp_flows_per_pod: udp_flows_per_pod?,
        udp_flows: udp_flows?,
    })
}

/// A per-pod cap and its total, each at least 1; the per-pod one no larger than the total.
fn pair(
    c: &mut Checker,
    (pod_key, pod, pod_default): (&str, Option<i64>, usize),
    (total_key, total, total_default): (&str, Option<i64>, usize),
) -> (Option<usize>, Option<usize>) {
    let pod_pointer = format!("/limits/{pod_key}");
    let per_pod = field::count(c, &pod_pointer, pod, pod_default, 1, "");
    let total = field::count(
        c,
        &format!("/limits/{total_key}"),
        total,
        total_default,
        1,
        "",
    );
    if let (Some(p), Some(t)) = (per_pod, total)
        && p > t
    {
        c.error(
            &pod_pointer,
            format!("{p} is more than {total_key} ({t}); lower {pod_key} or raise {total_key}"),
        );
        return (None, total);
    }
    (per_pod, total)
}
