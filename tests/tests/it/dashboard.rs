//! The Grafana dashboard (`deploy/grafana/chokepoint.json`) queries only metrics a real
//! gateway exports: every metric name in its PromQL (panels and template variables) is
//! looked up in the `/metrics` of the binary running in the lab.

use std::collections::BTreeSet;
use std::path::Path;

use chokepoint_tests::{GatewayFiles, admin_get, start_gateway, teardown};
use serde_json::Value;

use crate::data_path::{DENY_HOST_B, lab};
use crate::flows::FLOWS;

const DASHBOARD: &str = "../deploy/grafana/chokepoint.json";

/// Every PromQL expression of the dashboard: panel targets (rows' panels too) and the
/// queries of template variables.
fn expressions(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_owned());
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let q = &v["query"];
        if let Some(q) = q.as_str().or_else(|| q["query"].as_str()) {
            out.push(q.to_owned());
        }
    }
    out
}

/// Words of PromQL that are not metric names.
const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
];

/// PromQL's aggregation operators: a name even when `by (…)` comes before the `(`.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names an expression selects. Skipped: label matchers (`{…}`), ranges
/// (`[…]`), strings, numbers and durations, Grafana variables (`$…`), function and
/// aggregation names (a word before `(`), label lists after `by`/`without`/`on`/`ignoring`/
/// `group_*`, aggregation operators, and the label argument of `label_values(metric, label)`.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_to = |mut i: usize, close: u8| {
        while i < b.len() && b[i] != close {
            if b[i] == b'"' || b[i] == b'\'' {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += usize::from(b[i] == b'\\') + 1;
                }
            }
            i += 1;
        }
        i + 1
    };
    let mut names = Vec::new();
    let mut i = 0;
    let mut label_values = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'{' => i = skip_to(i + 1, b'}'),
            b'[' => i = skip_to(i + 1, b']'),
            b'"' | b'\'' => i = skip_to(i + 1, c),
            b'$' => {
                i += 1;
                while i < b.len() && (word(b[i]) || b[i] == b'{' || b[i] == b'}') {
                    i += 1;
                }
            }
            b',' if label_values => {
                // `label_values(metric, label)`: the rest is a label name.
                i = skip_to(i + 1, b')');
                label_values = false;
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (word(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if word(c) => {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                let w = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let call = j < b.len() && b[j] == b'(';
                if KEYWORDS.contains(&w) {
                    if call {
                        i = skip_to(j + 1, b')');
                    }
                } else if call {
                    label_values = w == "label_values";
                } else if !AGGREGATIONS.contains(&w) {
                    names.push(w.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every sample name a `/metrics` text (OpenMetrics) exposes: each family's samples by its
/// type (a counter is `<name>_total`, a histogram `<name>_bucket`, `_sum`, `_count`), also a
/// family with no sample yet (a labelled counter nothing has counted), and the sample lines.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The dashboard's metric names that `metrics` does not export.
fn missing(expressions: &[String], metrics: &str) -> Vec<String> {
    let exported = exported(metrics);
    let mut missing: Vec<String> = expressions
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|n| !exported.contains(n))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn metric_names_are_read_from_promql_without_functions_labels_or_variables() {
    let names = |e: &str| metric_names(e);
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le) (rate(chokepoint_dns_upstream_latency_seconds_bucket{instance=~"$instance", le!="+Inf"}[$__rate_interval])))"#
        ),
        ["chokepoint_dns_upstream_latency_seconds_bucket"]
    );
    assert_eq!(
        names(
            "sum(rate(a_sum[5m])) / on (instance) group_left (pod) sum(rate(a_count[5m] offset 1h)) > bool 0"
        ),
        ["a_sum", "a_count"]
    );
    assert_eq!(
        names("sum without (tier) (x_total) or vector(0)"),
        ["x_total"]
    );
    assert_eq!(
        names("label_values(chokepoint_snapshot_generation, instance)"),
        ["chokepoint_snapshot_generation"]
    );
}

#[test]
fn a_dashboard_metric_the_gateway_does_not_export_is_reported() {
    let metrics = "# TYPE chokepoint_reloads counter\n\
                   chokepoint_reloads_total 3\n\
                   # TYPE chokepoint_dns_upstream_latency_seconds histogram\n\
                   # TYPE chokepoint_udp_flows gauge\n\
                   chokepoint_udp_flows 0\n\
                   # EOF\n";
    let exprs = [
        "rate(chokepoint_reloads_total[5m])".to_owned(),
        "rate(chokepoint_reloads[5m])".to_owned(),
        "chokepoint_udp_flows + chokepoint_udp_flows_total".to_owned(),
        "rate(chokepoint_dns_upstream_latency_seconds_count[1m])".to_owned(),
        "rate(chokepoint_made_up_total[1m])".to_owned(),
    ];
    assert_eq!(
        missing(&exprs, metrics),
        [
            "chokepoint_made_up_total",
            "chokepoint_reloads",
            "chokepoint_udp_flows_total"
        ]
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_a_running_gateway() {
    let dashboard = dashboard();
    let exprs = expressions(&dashboard);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    // What the dashboard is for: each of these has a panel.
    for wanted in [
        "chokepoint_connections_total",
        "chokepoint_audit_events_dropped_total",
        "chokepoint_dns_queries_total",
        "chokepoint_dns_upstream_latency_seconds_bucket",
        "chokepoint_dns_cache_entries",
        "chokepoint_dns_cache_evictions_total",
        "chokepoint_metadata_requests_total",
        "chokepoint_reloads_total",
        "chokepoint_reload_failures_total",
        "chokepoint_kubernetes_skipped_objects_total",
        "chokepoint_flow_log_flows_itemized_total",
    ] {
        assert!(used.contains(wanted), "no panel queries {wanted}: {used:?}");
    }

    let lab = lab();
    // With the flow log, whose counters exist only when it is on.
    let files = GatewayFiles::new(&lab, &[("deny.yaml", DENY_HOST_B)], "tproxy", FLOWS);
    let gw = start_gateway(&lab, &files);
    let (status, metrics) = admin_get(&lab, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let missing = missing(&exprs, &metrics);
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the gateway does not export: {missing:?}\n/metrics:\n{metrics}"
    );
    drop(gw);
    teardown(lab);
}
