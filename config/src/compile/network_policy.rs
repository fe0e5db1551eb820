//! NetworkPolicy `networking.k8s.io/v1`, egress side, with the API server's validation rules.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::NetworkPolicy;
use crate::model::{
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyPortSpec, NetworkPolicyRule,
    NetworkPolicyRules, Origin, PortRange, Protocol, Selector,
};
use crate::source::child;

use super::{Checker, cidr, port_number, selector};

/// Validates and normalizes a NetworkPolicy.
pub fn network_policy(
    c: &mut Checker,
    obj: &NetworkPolicy,
    origin: Origin,
) -> Option<NetworkPolicyRules> {
    let name = obj.metadata.name.clone().filter(|n| !n.is_empty());
    if name.is_none() {
        c.error("/metadata", "`metadata.name` is required");
    }
    let namespace = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let Some(spec) = &obj.spec else {
        c.error("", "`spec` is required");
        return None;
    };
    let pod_selector = match &spec.pod_selector {
        Some(s) => selector(c, "/spec/podSelector", s),
        None => Some(Selector::everything()),
    };
    let egress_rules = spec.egress.as_deref().unwrap_or_default();
    // Defaulting as the API server does: Ingress always, Egress when egress rules exist.
    let isolates_egress = match &spec.policy_types {
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                if t != "Ingress" && t != "Egress" {
                    c.error(
                        child("/spec/policyTypes", i),
                        format!("unknown policy type `{t}`; use Ingress or Egress"),
                    );
                }
            }
            types.iter().any(|t| t == "Egress")
        }
        None => !egress_rules.is_empty(),
    };
    let mut rules = Vec::with_capacity(egress_rules.len());
    for (i, r) in egress_rules.iter().enumerate() {
        let p = child("/spec/egress", i);
        if c.fails_closed() && c.unknown_under(&p) {
            // Rules only allow: one with a field this build does not know allows nothing.
            continue;
        }
        let peers: Vec<_> =
            r.to.iter()
                .flatten()
                .enumerate()
                .map(|(j, peer)| self::peer(c, &child(&child(&p, "to"), j), peer))
                .collect();
        let ports: Vec<_> = r
            .ports
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, port)| self::port(c, &child(&child(&p, "ports"), j), port))
            .collect();
        if let (Some(peers), Some(ports)) =
            (peers.into_iter().collect(), ports.into_iter().collect())
        {
            rules.push(NetworkPolicyRule { peers, ports });
        }
    }
    if c.has_errors() {
        return None;
    }
    Some(NetworkPolicyRules {
        namespace,
        name: name?,
        pod_selector: pod_selector?,
        egress: isolates_egress.then_some(rules),
        origin,
    })
}

fn peer(
    c: &mut Checker,
    p: &str,
    peer: &k8s_openapi::api::networking::v1::NetworkPolicyPeer,
) -> Option<NetworkPolicyPeer> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            c.error(p, "`ipBlock` cannot be combined with `podSelector` or `namespaceSelector` in one peer; make them separate list items");
            return None;
        }
        let bp = child(p, "ipBlock");
        let net = cidr(c, &child(&bp, "cidr"), &block.cidr)?;
        if net.trunc() != net {
            c.warning(
                child(&bp, "cidr"),
                format!(
                    "`{}` has host bits set; it is read as `{}`",
                    block.cidr,
                    net.trunc()
                ),
            );
        }
        let net = net.trunc();
        let mut except = Vec::new();
        for (k, e) in block.except.iter().flatten().enumerate() {
            let ep = child(&child(&bp, "except"), k);
            let Some(ex) = cidr(c, &ep, e) else { continue };
            let ex = ex.trunc();
            if !(net.contains(&ex) && ex.prefix_len() > net.prefix_len()) {
                c.error(
                    ep,
                    format!("except `{e}` must lie strictly inside cidr `{net}`"),
                );
                continue;
            }
            except.push(ex);
        }
        return Some(NetworkPolicyPeer::IpBlock { cidr: net, except });
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        c.error(p, "a peer must set `podSelector`, `namespaceSelector` (both in one item means AND) or `ipBlock`");
        return None;
    }
    let pods = peer
        .pod_selector
        .as_ref()
        .map(|s| selector(c, &child(p, "podSelector"), s));
    let namespaces = peer
        .namespace_selector
        .as_ref()
        .map(|s| selector(c, &child(p, "namespaceSelector"), s));
    Some(NetworkPolicyPeer::Pods {
        namespaces: namespaces.transpose_opt()?,
        pods: pods.transpose_opt()?,
    })
}

/// `Option<Option<T>>` where the inner `None` is a failed compile: `None` on failure,
/// `Some(None)` when the field was absent.
trait TransposeOpt<T> {
    fn transpose_opt(self) -> Option<Option<T>>;
}

impl<T> TransposeOpt<T> for Option<Option<T>> {
    fn transpose_opt(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(None) => None,
            Some(Some(v)) => Some(Some(v)),
        }
    }
}

fn port(
    c: &mut Checker,
    p: &str,
    port: &k8s_openapi::api::networking::v1::NetworkPolicyPort,
) -> Option<NetworkPolicyPort> {
    let protocol = match port.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(s) => match Protocol::from_k8s(s) {
            Some(proto) => proto,
            None => {
                c.error(
                    child(p, "protocol"),
                    format!("unknown protocol `{s}`; use TCP, UDP or SCTP"),
                );
                return None;
            }
        },
    };
    let spec = match (&port.port, port.end_port) {
        (None, None) => NetworkPolicyPortSpec::Any,
        (None, Some(_)) => {
            c.error(child(p, "endPort"), "`endPort` needs a numeric `port`");
            return None;
        }
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(c, &child(p, "port"), i64::from(*n))?;
            let last = match end {
                None => first,
                Some(e) => {
                    let last = port_number(c, &child(p, "endPort"), i64::from(e))?;
                    if last < first {
                        c.error(
                            child(p, "endPort"),
                            format!("endPort {last} must not be less than port {first}"),
                        );
                        return None;
                    }
                    last
                }
            };
            NetworkPolicyPortSpec::Range(PortRange { first, last })
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                c.error(
                    child(p, "endPort"),
                    "`endPort` cannot be used with a named port",
                );
                return None;
            }
            if let Ok(n) = name.parse::<i64>() {
                return port_number(c, &child(p, "port"), n).map(|n| NetworkPolicyPort {
                    protocol,
                    port: NetworkPolicyPortSpec::Range(PortRange::single(n)),
                });
            }
            if !is_port_name(name) {
                c.error(child(p, "port"), format!("`{name}` is not a valid port name (1-15 lower-case letters, digits and `-`, with at least one letter)"));
                return None;
            }
            NetworkPolicyPortSpec::Named(name.clone())
        }
    };
    Some(NetworkPolicyPort {
        protocol,
        port: spec,
    })
}

/// IANA_SVC_NAME as Kubernetes validates container port names.
fn is_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=15).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}
