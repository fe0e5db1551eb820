//! The audit log end to end: records built from real verdicts, the writer task's
//! de-duplication with exact counts (on Tokio's paused clock), flush on shutdown, file
//! rotation, dropped-event accounting and the one-object-per-line format.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chokepoint::audit::{
    AuditConfig, AuditMetrics, AuditReason, AuditRecord, AuditSink, AuditWriter, Auditor,
    FlowDetails, Sink, Timestamp,
};
use chokepoint::policy::{Decision, Flow, Options, Snapshot};
use chokepoint_config::model::Protocol;
use chokepoint_config::{UnknownFields, load_str};
use serde_json::Value;

const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Namespace
metadata: {name: locked}
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: web, labels: {app: web}}
spec:
  containers: [{name: c}]
status: {podIPs: [{ip: "10.0.1.10"}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: locked, name: job, labels: {app: job}}
spec:
  containers: [{name: c}]
status: {podIPs: [{ip: "10.0.2.10"}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-docs}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  egress:
  - {name: allow-dns, action: Accept, to: [{networks: ["10.0.4.0/24"]}]}
  - {name: block-docs, action: Deny, to: [{networks: ["192.0.2.0/24"]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: locked, name: isolate}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: []
"#;

const WEB: &str = "10.0.1.10";
const JOB: &str = "10.0.2.10";
const DOCS: &str = "192.0.2.10";
const OTHER: &str = "198.51.100.7";

fn snapshot() -> Snapshot {
    let loaded = load_str(Path::new("world.yaml"), WORLD, UnknownFields::Reject);
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    Snapshot::compile(
        &loaded.world,
        Options {
            default_decision: Decision::Deny,
            ..Options::default()
        },
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The record of a connection `src:src_port → dst:dst_port/tcp`, as the data path builds it.
fn denial(snapshot: &Snapshot, src: &str, src_port: u16, dst: &str, dst_port: u16) -> AuditRecord {
    let names = ["docs.example"];
    let flow = Flow {
        src: ip(src),
        dst: ip(dst),
        protocol: Protocol::Tcp,
        port: dst_port,
        names: &names,
        addressed: None,
    };
    let verdict = snapshot.evaluate(&flow);
    assert_eq!(verdict.decision, Decision::Deny, "{flow:?}");
    AuditRecord::new(
        "node-1",
        snapshot,
        &verdict,
        &FlowDetails::from_flow(&flow, src_port),
    )
}

/// A `Write` the test reads back.
#[derive(Debug, Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Every line, checked to be one JSON object and parsed as a record.
    fn records(&self) -> Vec<AuditRecord> {
        parse_lines(&self.text())
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn parse_lines(text: &str) -> Vec<AuditRecord> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the last line is complete: {text:?}"
    );
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v.is_object(), "{line}");
            serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}: {line}"))
        })
        .collect()
}

fn config(window_ms: u64) -> AuditConfig {
    AuditConfig {
        dedupe_window: Duration::from_millis(window_ms),
        ..AuditConfig::default()
    }
}

fn spawn(config: &AuditConfig) -> (Auditor, AuditWriter, SharedBuf, AuditMetrics) {
    let buf = SharedBuf::default();
    let metrics = AuditMetrics::default();
    let (auditor, writer) =
        Auditor::spawn_with_sink(Sink::writer(buf.clone()), config, "node-1", metrics.clone());
    (auditor, writer, buf, metrics)
}

fn total(records: &[AuditRecord]) -> u64 {
    records.iter().map(|r| r.count).sum()
}

#[test]
fn records_have_every_field() {
    let s = snapshot();
    let names = ["docs.example", "www.docs.example"];
    let flow = Flow {
        src: ip(WEB),
        dst: ip(DOCS),
        protocol: Protocol::Tcp,
        port: 443,
        names: &names,
        addressed: None,
    };
    let verdict = s.evaluate(&flow);
    let details = FlowDetails::from_flow(&flow, 40_123).sni(Some("docs.example"));
    let record = AuditRecord::new("node-1", &s, &verdict, &details);
    let v: Value = serde_json::from_str(&record.to_json()).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&v),
        [
            "count",
            "decided_by",
            "destination",
            "node",
            "reason",
            "source",
            "time",
            "verdict"
        ]
    );
    assert_eq!(keys(&v["source"]), ["ip", "namespace", "pod", "port"]);
    assert_eq!(
        keys(&v["destination"]),
        [
            "host",
            "ip",
            "names",
            "namespace",
            "pod",
            "port",
            "protocol",
            "sni"
        ]
    );
    assert_eq!(
        keys(&v["decided_by"]),
        [
            "action",
            "kind",
            "namespace",
            "policy",
            "priority",
            "rule",
            "rule_index",
            "tier"
        ]
    );
    assert_eq!(v["node"], "node-1");
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["reason"], "rule");
    assert_eq!(v["count"], 1);
    assert_eq!(
        v["source"],
        serde_json::json!({"ip": WEB, "port": 40123, "namespace": "app", "pod": "web"})
    );
    assert_eq!(
        v["destination"],
        serde_json::json!({"ip": DOCS, "port": 443, "namespace": null, "pod": null, "protocol": "tcp", "names": names, "sni": "docs.example", "host": null})
    );
    assert_eq!(
        v["decided_by"],
        serde_json::json!({"tier": "Admin", "kind": "ClusterNetworkPolicy", "policy": "no-docs", "namespace": null,
            "priority": 10, "rule": "block-docs", "rule_index": 1, "action": "Deny"})
    );
    let time = v["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
        "{time}"
    );
    let age = Timestamp::now().unix_millis() - time.parse::<Timestamp>().unwrap().unix_millis();
    assert!((0..60_000).contains(&age), "{time}");
    // Round trip.
    assert_eq!(serde_json::from_value::<AuditRecord>(v).unwrap(), record);
}

#[test]
fn records_name_developer_network_policies_with_their_rule() {
    let world = format!(
        "{WORLD}---
apiVersion: policy.chokepoint.dev/v1alpha1
kind: DeveloperNetworkPolicy
metadata: {{namespace: app, name: web-egress}}
spec:
  subject: {{podSelector: {{matchLabels: {{app: web}}}}}}
  egress:
  - {{name: docs-by-name, action: Accept, to: [{{domainNames: [docs.example]}}]}}
  - {{name: no-partner, action: Deny, to: [{{networks: [198.51.100.0/24]}}]}}
"
    );
    let loaded = load_str(Path::new("world.yaml"), &world, UnknownFields::Reject);
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let s = Snapshot::compile(&loaded.world, Options::default());
    let record = denial(&s, WEB, 40000, OTHER, 443);
    assert_eq!(record.reason, AuditReason::RULE);
    let v: Value = serde_json::from_str(&record.to_json()).unwrap();
    assert_eq!(
        v["decided_by"],
        serde_json::json!({"tier": "NetworkPolicy", "kind": "DeveloperNetworkPolicy",
            "policy": "web-egress", "namespace": "app", "priority": null,
            "rule": "no-partner", "rule_index": 1, "action": "Deny"})
    );
}

#[test]
fn records_name_network_policies_and_unknown_sources() {
    let s = snapshot();
    let np = denial(&s, JOB, 1, OTHER, 443);
    assert_eq!(np.reason, AuditReason::NETWORK_POLICY_ISOLATION);
    assert_eq!(
        (np.source.namespace.as_deref(), np.source.pod.as_deref()),
        (Some("locked"), Some("job"))
    );
    let d = &np.decided_by;
    assert_eq!(
        (
            d.tier.as_str(),
            d.kind.as_deref(),
            d.policy.as_deref(),
            d.namespace.as_deref()
        ),
        (
            "NetworkPolicy",
            Some("NetworkPolicy"),
            Some("isolate"),
            Some("locked")
        )
    );
    assert_eq!(
        (
            d.priority,
            d.rule.as_deref(),
            d.rule_index,
            d.action.as_deref()
        ),
        (None, None, None, None)
    );

    // An IPv4-mapped source (dual-stack socket) is written, and resolved, as IPv4.
    let unknown = denial(&s, "::ffff:10.9.9.9", 1, OTHER, 80);
    assert_eq!(unknown.reason, AuditReason::UNKNOWN_SOURCE);
    assert_eq!(unknown.source.ip, ip("10.9.9.9"));
    let v: Value = serde_json::from_str(&unknown.to_json()).unwrap();
    assert_eq!(v["source"]["namespace"], Value::Null);
    assert_eq!(v["source"]["pod"], Value::Null);
    assert_eq!(v["decided_by"]["tier"], "Default");
    assert_eq!(v["decided_by"]["policy"], Value::Null);

    let mapped = FlowDetails::new(
        SocketAddr::new(ip("::ffff:10.0.1.10"), 5),
        SocketAddr::new(ip(DOCS), 443),
        Protocol::Tcp,
    );
    let flow = Flow {
        src: ip(WEB),
        dst: ip(DOCS),
        protocol: Protocol::Tcp,
        port: 443,
        names: &[],
        addressed: None,
    };
    let r = AuditRecord::new("n", &s, &s.evaluate(&flow), &mapped);
    assert_eq!(
        (r.source.ip, r.source.pod.as_deref()),
        (ip(WEB), Some("web"))
    );
}

#[tokio::test(start_paused = true)]
async fn dedupe_collapses_identical_denials_into_exact_counts() {
    let s = snapshot();
    let (auditor, writer, buf, metrics) = spawn(&config(1000));
    let base = 1_700_000_000_000;
    let mut sent = 0u64;
    let mut port = 30_000u16;
    let mut burst = |n: u64, at_ms: i64| {
        for _ in 0..n {
            port += 1; // a new source port per connection: not part of the key
            auditor.record(
                denial(&s, WEB, port, DOCS, 443).at(Timestamp::from_unix_millis(base + at_ms)),
            );
        }
        sent += n;
    };
    let sleep = |ms| tokio::time::sleep(Duration::from_millis(ms));

    burst(1, 0);
    sleep(1).await;
    let first = buf.records();
    assert_eq!(first.len(), 1, "the first denial is written at once");
    assert_eq!(
        (first[0].count, first[0].source.port, first[0].first_seen),
        (1, 30_001, None)
    );

    burst(99, 0);
    sleep(499).await;
    burst(50, 500);
    sleep(499).await; // t = 999 ms: the window is still open
    assert_eq!(buf.records().len(), 1);
    sleep(2).await; // t = 1001 ms: it closed at 1000
    let records = buf.records();
    assert_eq!(records.len(), 2);
    let summary = &records[1];
    assert_eq!(summary.count, 149);
    assert_eq!(
        summary.source.port, 30_150,
        "a summary carries the latest connection"
    );
    assert_eq!(summary.first_seen, Some(Timestamp::from_unix_millis(base)));
    assert_eq!(
        summary.last_seen,
        Some(Timestamp::from_unix_millis(base + 500))
    );
    assert_eq!(summary.time, Timestamp::from_unix_millis(base + 500));

    // The burst goes on: counted in the next window, no record of its own.
    burst(30, 1200);
    sleep(100).await;
    assert_eq!(buf.records().len(), 2);
    sleep(900).await; // t = 2001 ms
    assert_eq!(buf.records().len(), 3);
    assert_eq!(buf.records()[2].count, 30);

    // A quiet window forgets the key: the next denial is written at once again.
    sleep(1000).await; // t = 3001 ms
    burst(10, 3001);
    sleep(1).await;
    assert_eq!(buf.records().len(), 4);
    assert_eq!(buf.records()[3].count, 1);

    writer.shutdown().await;
    let records = buf.records();
    assert_eq!(
        records.iter().map(|r| r.count).collect::<Vec<_>>(),
        [1, 149, 30, 1, 9]
    );
    assert_eq!(total(&records), sent);
    assert_eq!(sent, 190);
    assert_eq!(metrics.records_written.get(), 5);
    assert_eq!(metrics.events_suppressed.get(), 149 + 30 + 9);
    assert_eq!(metrics.events_dropped.get(), 0);
    assert_eq!(metrics.write_errors.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn different_destinations_are_not_merged() {
    let s = snapshot();
    let (auditor, writer, buf, _) = spawn(&config(1000));
    let kinds = [
        (WEB, DOCS, 443),
        (WEB, DOCS, 80),
        (WEB, "192.0.2.11", 443),
        (JOB, OTHER, 443),
        (JOB, DOCS, 443),
    ];
    for round in 0..40u16 {
        for (src, dst, port) in kinds {
            auditor.record(denial(&s, src, 1000 + round, dst, port));
        }
        if round % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    writer.shutdown().await;
    let mut per_flow: BTreeMap<(IpAddr, IpAddr, u16), (u64, usize)> = BTreeMap::new();
    for r in buf.records() {
        let e = per_flow
            .entry((r.source.ip, r.destination.ip, r.destination.port))
            .or_default();
        e.0 += r.count;
        e.1 += 1;
    }
    assert_eq!(per_flow.len(), kinds.len());
    for (flow, (count, records)) in per_flow {
        assert_eq!(count, 40, "{flow:?}");
        assert!(
            records >= 2,
            "{flow:?}: the first denial and at least one summary"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_writes_pending_counts() {
    let s = snapshot();
    let (auditor, writer, buf, metrics) = spawn(&config(60_000));
    for port in 1..=5 {
        auditor.record(denial(&s, WEB, port, DOCS, 443));
    }
    auditor.record(denial(&s, JOB, 9, OTHER, 443));
    writer.shutdown().await;
    let counts: Vec<(IpAddr, u64)> = buf
        .records()
        .iter()
        .map(|r| (r.source.ip, r.count))
        .collect();
    assert_eq!(counts, [(ip(WEB), 1), (ip(JOB), 1), (ip(WEB), 4)]);
    assert_eq!(metrics.events_suppressed.get(), 4);

    // After shutdown nothing is lost silently: the handle counts what it cannot deliver.
    auditor.record(denial(&s, WEB, 6, DOCS, 443));
    assert_eq!(metrics.events_dropped.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_also_writes_pending_counts() {
    let s = snapshot();
    let (auditor, writer, buf, _) = spawn(&config(60_000));
    let clone = auditor.clone();
    for port in 1..=3 {
        auditor.record(denial(&s, WEB, port, DOCS, 443));
        clone.record(denial(&s, WEB, port, DOCS, 443));
    }
    drop((auditor, clone));
    writer.shutdown().await;
    assert_eq!(
        buf.records().iter().map(|r| r.count).collect::<Vec<_>>(),
        [1, 5]
    );
}

#[tokio::test(start_paused = true)]
async fn flush_writes_pending_counts_and_keeps_counting() {
    let s = snapshot();
    let (auditor, writer, buf, _) = spawn(&config(1000));
    for port in 1..=5 {
        auditor.record(denial(&s, WEB, port, DOCS, 443));
    }
    auditor.flush().await;
    assert_eq!(
        buf.records().iter().map(|r| r.count).collect::<Vec<_>>(),
        [1, 4]
    );
    auditor.record(denial(&s, WEB, 6, DOCS, 443));
    auditor.record(denial(&s, WEB, 7, DOCS, 443));
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert_eq!(
        buf.records().iter().map(|r| r.count).collect::<Vec<_>>(),
        [1, 4, 2]
    );
    writer.shutdown().await;
    assert_eq!(total(&buf.records()), 7);
}

#[tokio::test]
async fn a_full_channel_counts_dropped_events() {
    let s = snapshot();
    let config = AuditConfig {
        channel_capacity: 8,
        ..config(1000)
    };
    let (auditor, writer, buf, metrics) = spawn(&config);
    // The writer cannot run in between (single-threaded runtime, no await): 8 fit.
    for port in 1..=20 {
        auditor.record(denial(&s, WEB, port, DOCS, 443));
    }
    assert_eq!(metrics.events_dropped.get(), 12);
    writer.shutdown().await;
    let records = buf.records();
    assert_eq!(total(&records), 8);
    assert_eq!(
        total(&records) + metrics.events_dropped.get(),
        20,
        "every event is accounted for"
    );
}

#[tokio::test]
async fn the_json_is_one_object_per_line() {
    let s = snapshot();
    let (auditor, writer, buf, _) = spawn(&config(0));
    let names = ["a\"quoted\".example", "line\nbreak.example"];
    let flow = Flow {
        src: ip(WEB),
        dst: ip(DOCS),
        protocol: Protocol::Tcp,
        port: 443,
        names: &names,
        addressed: None,
    };
    let verdict = s.evaluate(&flow);
    let details = FlowDetails::from_flow(&flow, 1)
        .sni(Some("evil\r\n{\"x\":1}"))
        .host(Some("h\u{0}st"));
    for _ in 0..3 {
        auditor.record_denial(&s, &verdict, &details);
    }
    // An allowed verdict is not audited.
    let dns = Flow {
        src: ip(WEB),
        dst: ip("10.0.4.10"),
        protocol: Protocol::Udp,
        port: 53,
        names: &[],
        addressed: None,
    };
    let allowed = s.evaluate(&dns);
    assert!(allowed.is_allowed());
    auditor.record_denial(&s, &allowed, &FlowDetails::from_flow(&dns, 2));
    writer.shutdown().await;
    let text = buf.text();
    assert_eq!(text.matches('\n').count(), 3, "{text}");
    let records = parse_lines(&text);
    assert_eq!(records.len(), 3);
    assert_eq!(
        records[0].destination.sni.as_deref(),
        Some("evil\r\n{\"x\":1}")
    );
    assert_eq!(records[0].destination.names, names);
    assert!(records.iter().all(|r| r.count == 1 && r.node == "node-1"));
}

struct Failing;

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn write_errors_are_counted() {
    let s = snapshot();
    let metrics = AuditMetrics::default();
    let (auditor, writer) =
        Auditor::spawn_with_sink(Sink::writer(Failing), &config(1000), "n", metrics.clone());
    for port in [443, 80, 8080] {
        auditor.record(denial(&s, WEB, 1, DOCS, port));
    }
    writer.shutdown().await;
    assert_eq!(
        (metrics.records_written.get(), metrics.write_errors.get()),
        (0, 3)
    );
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "chokepoint-audit-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `path.N` … `path.1`, `path`: the files oldest first, as long as they exist.
fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let rotated = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
    let mut files: Vec<PathBuf> = (1..).map(rotated).take_while(|p| p.exists()).collect();
    files.reverse();
    files.push(path.to_owned());
    files
}

async fn write_numbered(config: &AuditConfig, n: u16) -> AuditMetrics {
    let s = snapshot();
    let metrics = AuditMetrics::default();
    let (auditor, writer) = Auditor::spawn(config, "node-1", metrics.clone()).unwrap();
    for i in 1..=n {
        auditor.record(denial(&s, WEB, 1, DOCS, i));
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    writer.shutdown().await;
    metrics
}

#[tokio::test]
async fn rotation_loses_and_splits_no_line() {
    let dir = TempDir::new("rotate");
    let path = dir.0.join("audit.log");
    let config = AuditConfig {
        sink: AuditSink::File,
        path: Some(path.clone()),
        max_bytes: 4096,
        max_files: 1000,
        ..config(1000)
    };
    let metrics = write_numbered(&config, 600).await;
    assert_eq!(
        (metrics.records_written.get(), metrics.write_errors.get()),
        (600, 0)
    );

    let files = files_oldest_first(&path);
    assert!(files.len() > 10, "{files:?}");
    let mut ports = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.len() as u64 <= config.max_bytes, "{file:?}");
        let records = parse_lines(&text);
        if i + 1 < files.len() {
            // Rotated only when the next line would not have fit.
            let next = &std::fs::read_to_string(&files[i + 1]).unwrap();
            let next_line = next.lines().next().unwrap().len() + 1;
            assert!(
                text.len() + next_line > config.max_bytes as usize,
                "{file:?}"
            );
        }
        ports.extend(records.iter().map(|r| r.destination.port));
    }
    assert_eq!(
        ports,
        (1..=600).collect::<Vec<u16>>(),
        "every line, in order, exactly once"
    );
}

#[tokio::test]
async fn rotation_keeps_max_files() {
    let dir = TempDir::new("rotate-max");
    let path = dir.0.join("audit.log");
    let config = AuditConfig {
        sink: AuditSink::File,
        path: Some(path.clone()),
        max_bytes: 4096,
        max_files: 3,
        ..config(1000)
    };
    write_numbered(&config, 600).await;
    let files = files_oldest_first(&path);
    assert_eq!(files.len(), 4, "{files:?}");
    let ports: Vec<u16> = files
        .iter()
        .flat_map(|f| parse_lines(&std::fs::read_to_string(f).unwrap()))
        .map(|r| r.destination.port)
        .collect();
    // The newest lines, contiguous and complete up to the last one.
    let first = ports[0];
    assert_eq!(ports, (first..=600).collect::<Vec<u16>>());

    // A second writer appends to the live file and keeps rotating.
    write_numbered(&config, 10).await;
    let last = std::fs::read_to_string(&path).unwrap();
    assert!(last.ends_with('\n'));
    assert_eq!(parse_lines(&last).last().unwrap().destination.port, 10);
}

#[tokio::test]
async fn a_file_sink_needs_a_path() {
    let config = AuditConfig {
        sink: AuditSink::File,
        path: None,
        ..AuditConfig::default()
    };
    let err = Auditor::spawn(&config, "n", AuditMetrics::default()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_a_multi_thread_runtime() {
    let dir = TempDir::new("mt");
    let path = dir.0.join("audit.log");
    let config = AuditConfig {
        sink: AuditSink::File,
        path: Some(path.clone()),
        ..config(50)
    };
    let metrics = AuditMetrics::default();
    let (auditor, writer) = Auditor::spawn(&config, "node-1", metrics.clone()).unwrap();
    let s = Arc::new(snapshot());
    let tasks: Vec<_> = (0..8u16)
        .map(|t| {
            let (auditor, s) = (auditor.clone(), s.clone());
            tokio::spawn(async move {
                for i in 0..250u16 {
                    auditor.record(denial(&s, WEB, i, DOCS, 1 + t % 2));
                    if i % 25 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    writer.shutdown().await;
    let records = parse_lines(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(total(&records) + metrics.events_dropped.get(), 2000);
    assert_eq!(
        metrics.events_dropped.get(),
        0,
        "8192 slots are plenty here"
    );
    for port in [1, 2] {
        let n: u64 = records
            .iter()
            .filter(|r| r.destination.port == port)
            .map(|r| r.count)
            .sum();
        assert_eq!(n, 1000);
    }
}

#[test]
fn the_documented_examples_parse() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/audit-log.md"))
            .unwrap();
    let examples: Vec<&str> = doc
        .split("```json\n")
        .skip(1)
        .map(|s| s.split("\n```").next().unwrap())
        .collect();
    assert_eq!(examples.len(), 3);
    let first = parse_lines(&format!("{}\n", examples[0]));
    let summary = parse_lines(&format!("{}\n", examples[1]));
    let service = parse_lines(&format!("{}\n", examples[2]));
    assert_eq!((first.len(), first[0].count), (1, 1));
    assert_eq!((summary.len(), summary[0].count), (1, 149));
    assert_eq!(summary[0].last_seen, Some(summary[0].time));
    // Written exactly as the writer would write them.
    assert_eq!(first[0].to_json(), examples[0]);
    assert_eq!(summary[0].to_json(), examples[1]);
    let via = &service[0].destination;
    assert_eq!(via.service.as_ref().map(|s| s.port), Some(5432));
    assert_eq!(via.cluster_ip, Some("10.96.0.20".parse().unwrap()));
    assert_eq!(service[0].to_json(), examples[2]);
}

/// [`WORLD`] plus a staged Baseline deny of everything (for namespace `app`).
fn staged_snapshot() -> Snapshot {
    let staged = r#"
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: default
  annotations: {policy.chokepoint.dev/mode: staged}
spec:
  tier: Baseline
  priority: 1000
  subject: {namespaces: {}}
  egress:
  - {name: deny-all, action: Deny, to: [{networks: ["0.0.0.0/0"]}]}
"#;
    let text = format!("{WORLD}{staged}");
    let loaded = load_str(Path::new("world.yaml"), &text, UnknownFields::Reject);
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    // Default allow, so that the staged deny is what would change.
    Snapshot::compile(&loaded.world, Options::default())
}

/// `app/web` → `OTHER:443/tcp`: allowed by the default, denied by the staged Baseline.
fn to_other() -> Flow<'static> {
    Flow {
        src: ip(WEB),
        dst: ip(OTHER),
        protocol: Protocol::Tcp,
        port: 443,
        names: &[],
        addressed: None,
    }
}

#[tokio::test]
async fn an_allowed_flow_a_staged_deny_would_break_gets_a_record_with_the_staged_verdict() {
    let s = staged_snapshot();
    let (auditor, writer, buf, _) = spawn(&config(0));
    let flow = to_other();
    let verdict = s.evaluate(&flow);
    assert!(verdict.is_allowed());
    let staged = s.staged_difference(&flow, &verdict);
    assert!(staged.is_some());
    auditor.record_decision(
        &s,
        &verdict,
        staged.as_ref(),
        &FlowDetails::from_flow(&flow, 7),
    );
    // A flow the staged policy decides like the enforced ones (the Admin Accept to DNS, which
    // runs before Baseline): no record, whatever its verdict.
    let dns = Flow {
        dst: ip("10.0.4.10"),
        port: 53,
        protocol: Protocol::Udp,
        ..flow
    };
    let allowed = s.evaluate(&dns);
    assert!(allowed.is_allowed());
    let none = s.staged_difference(&dns, &allowed);
    assert!(none.is_none());
    auditor.record_decision(
        &s,
        &allowed,
        none.as_ref(),
        &FlowDetails::from_flow(&dns, 8),
    );
    writer.shutdown().await;

    let text = buf.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(r#""verdict":"allow","reason":"default","#),
        "the real verdict: {text}"
    );
    assert!(
        text.contains(r#""decided_by":{"tier":"Default","kind":null,"policy":null,"namespace":null,"priority":null,"rule":null,"rule_index":null,"action":null},"staged":{"verdict":"deny","reason":"rule","decided_by":{"tier":"Baseline","kind":"ClusterNetworkPolicy","policy":"default","namespace":null,"priority":1000,"rule":"deny-all","rule_index":0,"action":"Deny"}},"count":1}"#),
        "{text}"
    );
    let records = buf.records();
    assert_eq!(records[0].verdict, Decision::Allow);
    assert_eq!(records[0].staged.as_ref().unwrap().verdict, Decision::Deny);
}

#[tokio::test]
async fn identical_staged_differences_are_counted_like_denials() {
    let s = staged_snapshot();
    let (auditor, writer, buf, _) = spawn(&config(1000));
    let flow = to_other();
    let verdict = s.evaluate(&flow);
    let staged = s.staged_difference(&flow, &verdict);
    for port in 0..5 {
        let details = FlowDetails::from_flow(&flow, 1000 + port);
        auditor.record_decision(&s, &verdict, staged.as_ref(), &details);
    }
    // The same flow without a staged difference is another kind of record (a denial would
    // be; an allowed one is not recorded at all).
    auditor.record_decision(&s, &verdict, None, &FlowDetails::from_flow(&flow, 2000));
    writer.shutdown().await;
    let records = buf.records();
    assert_eq!(total(&records), 5);
    assert!(records.iter().all(|r| r.staged.is_some()));
}
