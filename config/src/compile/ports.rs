//! The ports of egress rules: v1alpha2 `protocols` (shared with DeveloperNetworkPolicy) and
//! v1alpha1 `ports`, and the guard on named ports.

use crate::api::{v1alpha1, v1alpha2};
use crate::model::{Peer, PortMatch, PortRange, Protocol};
use crate::source::child;

use super::cluster::Dialect;
use super::{Checker, all_ok, port_number};

/// v1alpha2 `protocols`.
pub(super) fn protocols(
    c: &mut Checker,
    p: &str,
    list: &[v1alpha2::ProtocolPort],
) -> Option<Vec<PortMatch>> {
    let counted = c.count(p, "protocols", list.len(), 1, 25);
    let mut out = Vec::new();
    for (k, entry) in list.iter().enumerate() {
        let ep = child(p, k);
        if c.fails_closed() && c.unknown_under(&ep) {
            out.push(Some(PortMatch::Unknown));
            continue;
        }
        let fields = [
            ("tcp", entry.tcp.is_some()),
            ("udp", entry.udp.is_some()),
            ("sctp", entry.sctp.is_some()),
            (
                "destinationNamedPort",
                entry.destination_named_port.is_some(),
            ),
        ];
        let m = match c.exactly_one(&ep, "this protocols entry", &fields) {
            Some(3) => named_port(
                c,
                &child(&ep, "destinationNamedPort"),
                entry.destination_named_port.as_deref(),
            ),
            Some(i) => {
                let (protocol, dp) = match i {
                    0 => (Protocol::Tcp, &entry.tcp),
                    1 => (Protocol::Udp, &entry.udp),
                    _ => (Protocol::Sctp, &entry.sctp),
                };
                destination_port(c, &child(&ep, fields[i].0), dp.as_ref().expect("checked"))
                    .map(|ports| PortMatch::Port { protocol, ports })
            }
            None => None,
        };
        out.push(m);
    }
    all_ok(counted, out)
}

fn destination_port(c: &mut Checker, p: &str, dp: &v1alpha2::DestinationPort) -> Option<PortRange> {
    let Some(port) = &dp.destination_port else {
        c.error(p, "`destinationPort` is required; for any port write `destinationPort: {range: {start: 1, end: 65535}}`");
        return None;
    };
    let pp = child(p, "destinationPort");
    match c.exactly_one(
        &pp,
        "`destinationPort`",
        &[
            ("number", port.number.is_some()),
            ("range", port.range.is_some()),
        ],
    )? {
        0 => port_number(c, &child(&pp, "number"), port.number?).map(PortRange::single),
        _ => {
            let r = port.range.as_ref()?;
            let rp = child(&pp, "range");
            let start = required_port(c, &rp, "start", r.start);
            let end = required_port(c, &rp, "end", r.end);
            let (start, end) = (start?, end?);
            if start >= end {
                let hint = if start == end {
                    format!("; for one port write `number: {start}`")
                } else {
                    String::new()
                };
                c.error(
                    &rp,
                    format!("range start {start} must be less than end {end}{hint}"),
                );
                return None;
            }
            Some(PortRange {
                first: start,
                last: end,
            })
        }
    }
}

fn required_port(c: &mut Checker, p: &str, field: &str, v: Option<i64>) -> Option<u16> {
    match v {
        Some(n) => port_number(c, &child(p, field), n),
        None => {
            c.error(p, format!("`{field}` is required"));
            None
        }
    }
}

fn named_port(c: &mut Checker, p: &str, name: Option<&str>) -> Option<PortMatch> {
    match name {
        Some(n) if !n.is_empty() => Some(PortMatch::Named(n.to_owned())),
        _ => {
            c.error(p, "a named port must not be empty");
            None
        }
    }
}

/// v1alpha1 `ports`, mapped onto v1alpha2 protocol matches.
pub(super) fn v1alpha1_ports(
    c: &mut Checker,
    d: &Dialect,
    p: &str,
    list: &[v1alpha1::RulePort],
) -> Option<Vec<PortMatch>> {
    let counted = c.count(p, "ports", list.len(), 1, d.max_ports);
    let mut out = Vec::new();
    for (k, entry) in list.iter().enumerate() {
        let ep = child(p, k);
        if c.fails_closed() && c.unknown_under(&ep) {
            out.push(Some(PortMatch::Unknown));
            continue;
        }
        let fields = [
            ("portNumber", entry.port_number.is_some()),
            ("portRange", entry.port_range.is_some()),
            ("namedPort", entry.named_port.is_some()),
        ];
        let m = match c.exactly_one(&ep, "this ports entry", &fields) {
            Some(0) => {
                let n = entry.port_number.as_ref().expect("checked");
                let np = child(&ep, "portNumber");
                let protocol = v1alpha1_protocol(c, &np, n.protocol.as_deref());
                let port = required_port(c, &np, "port", n.port);
                protocol.zip(port).map(|(protocol, port)| PortMatch::Port {
                    protocol,
                    ports: PortRange::single(port),
                })
            }
            Some(1) => {
                let r = entry.port_range.as_ref().expect("checked");
                let rp = child(&ep, "portRange");
                let protocol = v1alpha1_protocol(c, &rp, r.protocol.as_deref());
                let start = required_port(c, &rp, "start", r.start);
                let end = required_port(c, &rp, "end", r.end);
                match (protocol, start, end) {
                    (Some(protocol), Some(first), Some(last)) if first <= last => {
                        Some(PortMatch::Port {
                            protocol,
                            ports: PortRange { first, last },
                        })
                    }
                    (_, Some(first), Some(last)) if first > last => {
                        c.error(
                            &rp,
                            format!("range start {first} is greater than end {last}"),
                        );
                        None
                    }
                    _ => None,
                }
            }
            Some(_) => named_port(c, &child(&ep, "namedPort"), entry.named_port.as_deref()),
            None => None,
        };
        out.push(m);
    }
    all_ok(counted, out)
}

fn v1alpha1_protocol(c: &mut Checker, p: &str, s: Option<&str>) -> Option<Protocol> {
    match s {
        None => Some(Protocol::Tcp),
        Some(s) => Protocol::from_k8s(s).or_else(|| {
            c.error(
                child(p, "protocol"),
                format!("unknown protocol `{s}`; use TCP, UDP or SCTP"),
            );
            None
        }),
    }
}

/// A named port resolves only against pods; with a networks, nodes or domainNames peer it
/// could never match (the experimental CRD rejects it; we reject it in every channel).
pub(super) fn named_port_guard(
    c: &mut Checker,
    p: &str,
    peers: &[Peer],
    protocols: Option<&[PortMatch]>,
) {
    let named = protocols.is_some_and(|l| l.iter().any(|m| matches!(m, PortMatch::Named(_))));
    let non_pod = peers.iter().any(|peer| {
        matches!(
            peer,
            Peer::Networks(_) | Peer::Nodes(_) | Peer::DomainNames(_)
        )
    });
    if named && non_pod {
        c.error(
            p,
            "a named port cannot be used with `networks`, `nodes` or `domainNames` peers (only pods have named ports); use a port number, or split the rule",
        );
    }
}
