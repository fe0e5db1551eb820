//! One line of the flow log: a [`FlowRecord`] per key and window, or a window's
//! [`Unitemized`] counts. Field names are those of the audit records (docs/flow-log.md).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use chokepoint_config::{Diagnostic, Severity};

use chokepoint_config::model::Protocol;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditReason, AuditRecord, DecidedBy, ServiceName, Timestamp};
use crate::policy::Decision;

/// The source of the flows a record counts (no port: a record stands for many connections).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowSource {
    pub ip: IpAddr,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

/// Where the flows went: a pod (namespace, pod and its workload labels), names, or an
/// address; the Service when the pod addressed one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowDestination {
    /// The destination address; `null` when the destination is no pod and is known by
    /// `names` (the record then stands for every address of those names).
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// The destination pod's labels without the per-pod ones (see
    /// [`crate::audit::workload_labels`]); absent for a destination that is no pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(with = "crate::audit::protocol_text")]
    pub protocol: Protocol,
    /// The name the connection showed (TLS SNI, HTTP Host) when a `domainNames` rule accepted
    /// it, else the names the source's namespace resolved to the address; sorted.
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<IpAddr>,
}

/// The allowed flows of one key in one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When the window closed.
    pub time: Timestamp,
    pub node: String,
    /// When the window opened.
    pub window_start: Timestamp,
    #[serde(with = "crate::audit::decision_text")]
    pub verdict: Decision,
    pub reason: AuditReason,
    pub source: FlowSource,
    pub destination: FlowDestination,
    pub decided_by: DecidedBy,
    /// Flows (TCP connections, UDP flows, DNS queries) of this key in the window.
    pub count: u64,
}

/// How many flows of a window have no record of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnitemizedCounts {
    /// Flows of keys beyond `flows.maxKeys`.
    pub flows: u64,
    /// Flows the data path could not hand to the flow log (its channel was full).
    pub dropped: u64,
}

/// The line written after a window's records when some of its flows have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unitemized {
    pub time: Timestamp,
    pub node: String,
    pub window_start: Timestamp,
    pub unitemized: UnitemizedCounts,
}

/// A line of the flow log or of the audit log, as `recommend` and `map` read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowLine {
    Flow(Box<FlowRecord>),
    Unitemized(Unitemized),
    Audit(Box<AuditRecord>),
}

impl FlowLine {
    /// Parses one JSON line of either log.
    pub fn parse(line: &str) -> Result<FlowLine, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if value.get("unitemized").is_some() {
            serde_json::from_value(value).map(FlowLine::Unitemized)
        } else if value.get("window_start").is_some() {
            serde_json::from_value(value).map(|r| FlowLine::Flow(Box::new(r)))
        } else {
            serde_json::from_value(value).map(|r| FlowLine::Audit(Box::new(r)))
        }
    }
}

/// The lines of a flow-log or audit file, each parsed, with its 1-based number; a line that
/// is neither kind of record is an error located at it.
pub fn parse_lines<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = (u64, Result<FlowLine, Diagnostic>)> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(move |(i, line)| {
            let n = i as u64 + 1;
            let parsed = FlowLine::parse(line).map_err(|e| Diagnostic {
                severity: Severity::Error,
                file: path.to_owned(),
                line: n,
                column: 1,
                object: None,
                message: format!(
                    "not a flow-log or audit record ({e}); give files the gateway wrote, or remove the line"
                ),
            });
            (n, parsed)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlowRecord {
        FlowRecord {
            time: Timestamp::from_unix_millis(1_700_000_060_000),
            node: "node-1".into(),
            window_start: Timestamp::from_unix_millis(1_700_000_000_000),
            verdict: Decision::Allow,
            reason: AuditReason::RULE,
            source: FlowSource {
                ip: "10.0.1.10".parse().unwrap(),
                namespace: Some("shop".into()),
                pod: Some("web-1".into()),
            },
            destination: FlowDestination {
                ip: None,
                port: 443,
                namespace: None,
                pod: None,
                labels: None,
                protocol: Protocol::Tcp,
                names: vec!["api.example.com".into()],
                service: None,
                cluster_ip: None,
            },
            decided_by: DecidedBy {
                tier: "NetworkPolicy".into(),
                kind: Some("DeveloperNetworkPolicy".into()),
                policy: Some("web-sites".into()),
                namespace: Some("shop".into()),
                priority: None,
                rule: Some("payment-api".into()),
                rule_index: Some(0),
                action: Some("Accept".into()),
            },
            count: 42,
        }
    }

    #[test]
    fn a_record_serializes_in_schema_order_and_parses_back() {
        let r = sample();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"time":"2023-11-14T22:14:20.000Z","node":"node-1","window_start":"2023-11-14T22:13:20.000Z","verdict":"allow","reason":"rule","source":{"ip":"10.0.1.10","namespace":"shop","pod":"web-1"},"destination":{"ip":null,"port":443,"namespace":null,"pod":null,"protocol":"tcp","names":["api.example.com"]},"decided_by":{"tier":"NetworkPolicy","kind":"DeveloperNetworkPolicy","policy":"web-sites","namespace":"shop","priority":null,"rule":"payment-api","rule_index":0,"action":"Accept"},"count":42}"#
        );
        assert_eq!(FlowLine::parse(&json).unwrap(), FlowLine::Flow(Box::new(r)));
    }

    #[test]
    fn both_logs_parse_line_by_line() {
        let u = Unitemized {
            time: Timestamp::from_unix_millis(1_700_000_060_000),
            node: "n".into(),
            window_start: Timestamp::from_unix_millis(1_700_000_000_000),
            unitemized: UnitemizedCounts {
                flows: 7,
                dropped: 1,
            },
        };
        let json = serde_json::to_string(&u).unwrap();
        assert!(
            json.ends_with(r#""unitemized":{"flows":7,"dropped":1}}"#),
            "{json}"
        );
        assert_eq!(FlowLine::parse(&json).unwrap(), FlowLine::Unitemized(u));
        let audit = crate::audit::testing::sample(443);
        assert_eq!(
            FlowLine::parse(&audit.to_json()).unwrap(),
            FlowLine::Audit(Box::new(audit))
        );
        assert!(FlowLine::parse("{\"time\":1}").is_err());
        assert!(FlowLine::parse("not json").is_err());
    }
}
