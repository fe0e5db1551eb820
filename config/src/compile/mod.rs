//! Validation and normalization: API objects in, [`crate::model`] out.
//!
//! One pass per object both checks it (the upstream CRD rules, plus ours) and builds its
//! normalized form, so the two can never disagree. Every finding is collected with the JSON
//! pointer of the node it is about; the loader turns pointers into `file:line:column`.

mod cluster;
mod developer;
pub(crate) use developer::is_rfc1123_label;
mod network_policy;
mod ports;
mod service_refs;

pub use cluster::{admin_network_policy, cluster_network_policy};
pub use developer::developer_network_policy;
pub use network_policy::network_policy;
pub use service_refs::unresolved_services;

use ipnet::IpNet;

use crate::api::LabelSelector;
use crate::diagnostic::Severity;
use crate::model::{DomainPattern, Requirement, Selector};
use crate::source::child;

/// How fields this build does not know are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    /// An error (files a user wrote: `check`, `explain`, the file source).
    Reject,
    /// A warning, and the peer/protocol/rule that holds the field fails closed (objects read
    /// from a cluster whose CRDs may be newer than this build).
    FailClosed,
}

/// A finding about one node of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub pointer: String,
    pub message: String,
}

/// Collects findings for one object.
#[derive(Debug)]
pub struct Checker {
    pub findings: Vec<Finding>,
    /// Pointers of fields the typed shapes did not know.
    unknown: Vec<String>,
    mode: UnknownFields,
}

impl Checker {
    pub fn new(unknown: Vec<String>, mode: UnknownFields) -> Self {
        Checker {
            findings: Vec::new(),
            unknown,
            mode,
        }
    }

    pub fn error(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Error,
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    pub fn warning(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// True when a field this build does not know sits at or below `pointer`.
    pub fn unknown_under(&self, pointer: &str) -> bool {
        self.unknown.iter().any(|u| {
            u.strip_prefix(pointer)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// True when a field this build does not know sits directly on the node at `pointer`
    /// (not deeper inside one of its children).
    pub fn unknown_at(&self, pointer: &str) -> bool {
        self.unknown.iter().any(|u| {
            u.strip_prefix(pointer)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|field| !field.contains('/'))
        })
    }

    pub fn fails_closed(&self) -> bool {
        self.mode == UnknownFields::FailClosed
    }

    /// Checks a list length against `min..=max`; returns false when out of bounds.
    fn count(&mut self, pointer: &str, field: &str, len: usize, min: usize, max: usize) -> bool {
        if len < min {
            self.error(
                pointer,
                format!("`{field}` must have at least {min} entr{}", plural_y(min)),
            );
            false
        } else if len > max {
            self.error(
                pointer,
                format!("`{field}` has {len} entries; at most {max} are allowed"),
            );
            false
        } else {
            true
        }
    }

    /// Reports a set of mutually exclusive fields of which exactly one must be set.
    /// Returns the index of the one that is set.
    fn exactly_one(&mut self, pointer: &str, what: &str, fields: &[(&str, bool)]) -> Option<usize> {
        let set: Vec<usize> = (0..fields.len()).filter(|&i| fields[i].1).collect();
        let names = fields
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match set.as_slice() {
            [one] => Some(*one),
            [] => {
                if !self.unknown_under(pointer) {
                    self.error(
                        pointer,
                        format!("{what} sets no field; set exactly one of {names}"),
                    );
                }
                None
            }
            many => {
                let got = many
                    .iter()
                    .map(|&i| format!("`{}`", fields[i].0))
                    .collect::<Vec<_>>();
                self.error(
                    pointer,
                    format!(
                        "{what} sets {}; set exactly one of {names}",
                        got.join(" and ")
                    ),
                );
                None
            }
        }
    }
}

fn plural_y(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// Compiles a label selector, checking its operators.
pub(crate) fn selector(c: &mut Checker, pointer: &str, s: &LabelSelector) -> Option<Selector> {
    let mut requirements = Vec::new();
    let mut ok = true;
    for (k, v) in s.match_labels.iter().flatten() {
        requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
    }
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let p = child(&child(pointer, "matchExpressions"), i);
        let values = e.values.clone().unwrap_or_default();
        let r = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                c.error(
                    &p,
                    format!("operator `{}` needs at least one value", e.operator),
                );
                ok = false;
                continue;
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                c.error(&p, format!("operator `{}` takes no values", e.operator));
                ok = false;
                continue;
            }
            "In" => Requirement::In(e.key.clone(), values),
            "NotIn" => Requirement::NotIn(e.key.clone(), values),
            "Exists" => Requirement::Exists(e.key.clone()),
            "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
            other => {
                c.error(
                    child(&p, "operator"),
                    format!("unknown operator `{other}`; use In, NotIn, Exists or DoesNotExist"),
                );
                ok = false;
                continue;
            }
        };
        requirements.push(r);
    }
    ok.then_some(Selector { requirements })
}

/// Parses a CIDR that must be in its masked form (`10.0.0.0/8`, not `10.0.0.5/8`).
pub(crate) fn masked_cidr(c: &mut Checker, pointer: &str, s: &str) -> Option<IpNet> {
    let net = cidr(c, pointer, s)?;
    if net.trunc() != net {
        c.error(
            pointer,
            format!("CIDR `{s}` has host bits set; write `{}`", net.trunc()),
        );
        return None;
    }
    Some(net)
}

pub(crate) fn cidr(c: &mut Checker, pointer: &str, s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(net) => Some(net),
        Err(_) => {
            let hint = if s.parse::<std::net::IpAddr>().is_ok() {
                format!(
                    "; for a single address write `{s}/{}`",
                    if s.contains(':') { 128 } else { 32 }
                )
            } else {
                String::new()
            };
            c.error(
                pointer,
                format!("`{s}` is not a CIDR (address/prefix-length){hint}"),
            );
            None
        }
    }
}

/// Checks a `domainNames` entry against the upstream DomainName pattern (with `A-Z`, not the
/// CRD's `A-z` typo): optional `*.`, then at least two labels, one optional trailing dot.
pub(crate) fn domain_pattern(c: &mut Checker, pointer: &str, s: &str) -> Option<DomainPattern> {
    let body = s.strip_prefix("*.").unwrap_or(s);
    let body = body.strip_suffix('.').unwrap_or(body);
    let labels: Vec<&str> = body.split('.').collect();
    let label_ok = |l: &&str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|ch| ch.is_ascii_alphanumeric() || *ch == b'-' || *ch == b'_')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        let why = if body.contains('*') {
            "`*` may only stand alone as the first label (`*.example.com`)"
        } else if labels.len() < 2 {
            "a pattern needs at least two labels after an optional `*.` (`example.com`, `*.example.com`)"
        } else {
            "labels are letters, digits, `-` and `_`, and start and end with a letter or digit"
        };
        c.error(
            pointer,
            format!("`{s}` is not a valid domain name pattern: {why}"),
        );
        return None;
    }
    Some(DomainPattern::parse(s))
}

/// Whether `s` is a valid `domainNames` entry (for tools that write policies).
pub fn is_domain_pattern(s: &str) -> bool {
    let mut c = Checker::new(Vec::new(), UnknownFields::Reject);
    domain_pattern(&mut c, "", s).is_some()
}

/// A port number in 1..=65535.
pub(crate) fn port_number(c: &mut Checker, pointer: &str, n: i64) -> Option<u16> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            c.error(
                pointer,
                format!("port {n} is out of range; ports are 1 to 65535"),
            );
            None
        }
    }
}

/// Suggests the fix for an unknown field, where a common mistake is known.
pub fn unknown_field_hint(kind: &str, pointer: &str) -> Option<&'static str> {
    let field = pointer.rsplit('/').next().unwrap_or("");
    let in_rule = pointer.contains("/egress/") || pointer.contains("/ingress/");
    if kind == crate::api::developer::KIND
        && let Some(hint) = developer_hint(pointer, field, in_rule)
    {
        return Some(hint);
    }
    match (kind, field) {
        ("ClusterNetworkPolicy", "ports") if in_rule => Some(
            "v1alpha2 replaced `ports:` with `protocols:`, e.g. `protocols: [{tcp: {destinationPort: {number: 443}}}]`",
        ),
        ("ClusterNetworkPolicy", "protocols") => None,
        ("AdminNetworkPolicy" | "BaselineAdminNetworkPolicy", "protocols") if in_rule => Some(
            "v1alpha1 uses `ports:` (`portNumber`, `portRange`, `namedPort`); `protocols:` is the v1alpha2 ClusterNetworkPolicy field",
        ),
        (_, "from") if pointer.contains("/egress/") => {
            Some("egress rules list their peers under `to:`")
        }
        (_, "to") if pointer.contains("/ingress/") => {
            Some("ingress rules list their peers under `from:`")
        }
        (_, "podSelector") if pointer.ends_with("/subject/podSelector") => {
            Some("select pods with `subject: {pods: {namespaceSelector: ..., podSelector: ...}}`")
        }
        (_, "namespaceSelector") if pointer.ends_with("/subject/namespaceSelector") => {
            Some("select namespaces with `subject: {namespaces: {matchLabels: ...}}`")
        }
        _ => None,
    }
}

/// Hints for the habits a DeveloperNetworkPolicy author brings from NetworkPolicy and
/// ClusterNetworkPolicy.
fn developer_hint(pointer: &str, field: &str, in_rule: bool) -> Option<&'static str> {
    let in_subject = pointer.starts_with("/spec/subject/");
    let in_peer = pointer.contains("/to/");
    Some(match field {
        "namespaces" | "pods" | "namespaceSelector" if in_subject => {
            "a DeveloperNetworkPolicy applies to pods of its own namespace: `subject: {podSelector: {matchLabels: ...}}`"
        }
        "podSelector" if pointer == "/spec/podSelector" => {
            "select the policy's pods with `subject: {podSelector: ...}`"
        }
        "priority" | "tier" if pointer.matches('/').count() == 2 => {
            "a DeveloperNetworkPolicy has no tier or priority: it is decided in the NetworkPolicy tier, and its Deny rules win over its Accept rules whatever their order"
        }
        "ingress" if pointer == "/spec/ingress" => {
            "a DeveloperNetworkPolicy has egress rules only (Chokepoint is an egress gateway); use a NetworkPolicy for ingress"
        }
        "ports" if in_rule && !in_peer => {
            "a DeveloperNetworkPolicy uses `protocols:`, e.g. `protocols: [{tcp: {destinationPort: {number: 443}}}]`"
        }
        "ipBlock" if in_peer => {
            "write addresses as `networks: [192.0.2.0/24, ...]`; to leave some out, add a Deny rule for them (Deny wins over Accept)"
        }
        "podSelector" | "namespaceSelector" if in_peer => {
            "write `pods: {podSelector: ...}` (its `namespaceSelector` is optional and defaults to this policy's namespace) or `namespaces: {matchLabels: ...}`"
        }
        _ => return None,
    })
}

/// `Some(all values)` when the list passed its count check and every entry was valid.
pub(crate) fn all_ok<T>(counted: bool, entries: Vec<Option<T>>) -> Option<Vec<T>> {
    let all: Option<Vec<T>> = entries.into_iter().collect();
    if counted { all } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker() -> Checker {
        Checker::new(Vec::new(), UnknownFields::Reject)
    }

    #[test]
    fn cidr_must_be_masked_and_says_the_masked_form() {
        let mut c = checker();
        assert!(masked_cidr(&mut c, "/x", "10.0.0.0/8").is_some());
        assert!(masked_cidr(&mut c, "/x", "10.0.0.5/8").is_none());
        assert!(
            c.findings[0].message.contains("`10.0.0.0/8`"),
            "{:?}",
            c.findings
        );
        assert!(masked_cidr(&mut c, "/x", "2001:db8::1/32").is_none());
        assert!(c.findings[1].message.contains("`2001:db8::/32`"));
        assert!(masked_cidr(&mut c, "/x", "192.0.2.1").is_none());
        assert!(c.findings[2].message.contains("192.0.2.1/32"));
    }

    #[test]
    fn domain_patterns() {
        let mut c = checker();
        for ok in [
            "example.com",
            "*.example.com",
            "a.b.example.com.",
            "Foo_bar.example.com",
            "x-1.io",
        ] {
            assert!(domain_pattern(&mut c, "/d", ok).is_some(), "{ok}");
        }
        for bad in [
            "*.com",
            "localhost",
            "*",
            "**.example.com",
            "foo*.example.com",
            "-a.example.com",
            "a..com",
            "^a.example.com",
            "",
        ] {
            assert!(domain_pattern(&mut c, "/d", bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn selector_operators_are_checked() {
        let mut c = checker();
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"a": "b"},
            "matchExpressions": [
                {"key": "x", "operator": "In", "values": ["1"]},
                {"key": "y", "operator": "Exists"},
            ]
        }))
        .unwrap();
        assert_eq!(selector(&mut c, "/s", &s).unwrap().requirements.len(), 3);
        let bad: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [
                {"key": "x", "operator": "In"},
                {"key": "y", "operator": "Exists", "values": ["v"]},
                {"key": "z", "operator": "Equals", "values": ["v"]},
            ]
        }))
        .unwrap();
        assert!(selector(&mut c, "/s", &bad).is_none());
        assert_eq!(c.findings.len(), 3);
        assert_eq!(c.findings[2].pointer, "/s/matchExpressions/2/operator");
    }

    #[test]
    fn unknown_under_respects_segment_boundaries() {
        let c = Checker::new(
            vec!["/spec/egress/1/to/0/fqdn".into()],
            UnknownFields::FailClosed,
        );
        assert!(c.unknown_under("/spec/egress/1"));
        assert!(c.unknown_under("/spec/egress/1/to/0"));
        assert!(!c.unknown_under("/spec/egress/10"));
        assert!(!c.unknown_under("/spec/egress/1/to/1"));
    }

    #[test]
    fn unknown_at_is_only_the_node_itself() {
        let c = Checker::new(
            vec![
                "/spec/egress/1/to/0/fqdn".into(),
                "/spec/egress/2/ports".into(),
            ],
            UnknownFields::FailClosed,
        );
        assert!(c.unknown_at("/spec/egress/1/to/0"));
        assert!(!c.unknown_at("/spec/egress/1"));
        assert!(c.unknown_at("/spec/egress/2"));
        assert!(!c.unknown_at("/spec/egress/2/ports"));
        assert!(!c.unknown_at("/spec/egress/"));
    }
}
